//! The scheduling algorithm (see the module docs of `schedule` for the rules it implements).
//!
//! Positions: small stage `k` is position `2k`, token pass `k` is position `2k + 1`. Every needed
//! node gets the earliest position its operands allow (ASAP, which fixes the number of passes);
//! then, walking the arena backwards, token-pass nodes move to the latest pass their users allow
//! (ALAP) so that fewer values are materialized; small-stage nodes stay at their ASAP position.
//! A second walk then moves a small-stage node to its latest stage when the token data under
//! it (`cone_reads`) is read by the pass before that stage in the first placement anyway
//! (`pass_reads`), so its reductions join that pass without adding reads.

use super::{Schedule, Stage, StageKind};
use crate::arena::Handle;
use crate::ir::{Expr, Module};
use crate::types::Level;

/// Nodes reachable from the roots (loss, metrics, outputs, gradients).
pub fn needed(m: &Module) -> Vec<bool> {
    let roots = std::iter::once(m.loss)
        .chain(m.metrics.iter().map(|n| n.value))
        .chain(m.outputs.iter().map(|n| n.value))
        .chain(m.grads.iter().map(|g| g.value));
    needed_from(m, roots)
}

/// Nodes reachable from `roots` (themselves included).
pub fn needed_from(m: &Module, roots: impl IntoIterator<Item = Handle<Expr>>) -> Vec<bool> {
    let mut need = vec![false; m.exprs.len()];
    for h in roots {
        if let Some(x) = need.get_mut(h.index()) {
            *x = true;
        }
    }
    for (h, e) in m.exprs.iter().rev() {
        if need.get(h.index()).copied().unwrap_or(false) {
            for o in e.operands() {
                if let Some(x) = need.get_mut(o.index()) {
                    *x = true;
                }
            }
        }
    }
    need
}

/// Nodes that read no `tok`-level input, directly or through their operands: computable from the
/// layout (and turn/seq/group/batch inputs) without a pass over the token data.
pub fn structural(m: &Module) -> Vec<bool> {
    let mut s: Vec<bool> = Vec::with_capacity(m.exprs.len());
    for (_, e) in m.exprs.iter() {
        let own = if let Expr::Input(i) = *e {
            m.inputs
                .get(i as usize)
                .is_none_or(|inp| inp.ty.level != Level::Tok)
        } else {
            true
        };
        let ops = e
            .operands()
            .iter()
            .all(|o| s.get(o.index()).copied().unwrap_or(false));
        s.push(own && ops);
    }
    s
}

/// A `Reduce` of a `tok` argument: accumulated by a pass, readable after it.
fn is_pass_reduce(m: &Module, h: Handle<Expr>) -> bool {
    matches!(m.exprs.get(h), Some(Expr::Reduce { arg, .. }) if m.level(*arg) == Level::Tok)
}

/// Computed inside a token pass (as opposed to a small stage).
fn is_pass_kind(m: &Module, h: Handle<Expr>) -> bool {
    match m.exprs.get(h) {
        Some(Expr::Rank { .. } | Expr::PosReduce { .. } | Expr::Quantile { .. }) | None => false,
        Some(Expr::Reduce { arg, .. }) => m.level(*arg) == Level::Tok,
        Some(_) => m.level(h) == Level::Tok,
    }
}

/// What the placement needs to know of each node.
struct Kinds {
    need: Vec<bool>,
    structural: Vec<bool>,
    pass_kind: Vec<bool>,
    reduce: Vec<bool>,
}

impl Kinds {
    fn new(m: &Module) -> Self {
        Kinds {
            need: needed(m),
            structural: structural(m),
            pass_kind: m.exprs.handles().map(|h| is_pass_kind(m, h)).collect(),
            reduce: m.exprs.handles().map(|h| is_pass_reduce(m, h)).collect(),
        }
    }
}

fn at(v: &[bool], h: Handle<Expr>) -> bool {
    v.get(h.index()).copied().unwrap_or(false)
}

/// Partitions the needed nodes of `m` into the fewest token passes and the small stages between
/// them. Deterministic.
pub fn schedule(m: &Module) -> Schedule {
    let k = Kinds::new(m);
    let asap = asap_positions(m, &k);
    let last_pass = m
        .exprs
        .handles()
        .filter(|&h| at(&k.need, h) && at(&k.pass_kind, h) && !at(&k.structural, h))
        .filter_map(|h| asap.get(h.index()).copied())
        .max()
        .unwrap_or(-1);
    let n_passes = (last_pass + 1) / 2;
    // Token-pass nodes as late as their users allow, small-stage nodes as early as possible.
    let base = place(m, &k, &asap, n_passes, &|_, _| false);
    // Then a small-stage node moves to the latest stage its users allow when the token values
    // its reductions read are read by the pass before that stage anyway: a metric of the
    // policy's ratio is accumulated by the pass that computes the gradient from the same
    // inputs, instead of by an earlier pass that would read them a second time.
    let src = token_sources(m, &k);
    let reads = pass_reads(m, &k, &base, &src);
    let pos = place(m, &k, &asap, n_passes, &|h, b| {
        let empty = Vec::new();
        let there = usize::try_from(b - 1)
            .ok()
            .and_then(|p| reads.get(p))
            .unwrap_or(&empty);
        cone_reads(m, &k, &src, h).iter().all(|x| there.contains(x))
    });

    let mut stages = Vec::new();
    for p in 0..=(2 * n_passes) {
        let nodes: Vec<Handle<Expr>> = m
            .exprs
            .handles()
            .filter(|&h| at(&k.need, h) && pos.get(h.index()).copied() == Some(p))
            .collect();
        if nodes.is_empty() {
            continue;
        }
        let kind = if p % 2 == 1 {
            StageKind::TokenPass
        } else {
            StageKind::Small
        };
        stages.push(Stage { kind, nodes });
    }
    Schedule { stages }
}

/// The earliest position of every needed node (fixes the number of passes).
fn asap_positions(m: &Module, k: &Kinds) -> Vec<i64> {
    let mut pos: Vec<i64> = vec![0; m.exprs.len()];
    for (h, e) in m.exprs.iter() {
        if !at(&k.need, h) || at(&k.structural, h) {
            continue;
        }
        let pk = at(&k.pass_kind, h);
        let mut r = 0i64;
        for o in e.operands() {
            if at(&k.structural, o) {
                continue;
            }
            let p = pos.get(o.index()).copied().unwrap_or(0);
            let ready = if at(&k.reduce, o) || (at(&k.pass_kind, o) && !pk) {
                p + 1
            } else {
                p
            };
            r = r.max(ready);
        }
        let want_odd = pk;
        if (r % 2 == 1) != want_odd {
            r += 1;
        }
        if let Some(x) = pos.get_mut(h.index()) {
            *x = r;
        }
    }
    pos
}

/// Final positions, walking the arena backwards (users first): a token-pass node goes to the
/// latest pass before every user; a small-stage node stays at its ASAP stage unless
/// `sink(node, latest stage)` says it moves to the latest stage before every user.
fn place(
    m: &Module,
    k: &Kinds,
    asap: &[i64],
    n_passes: i64,
    sink: &dyn Fn(Handle<Expr>, i64) -> bool,
) -> Vec<i64> {
    let mut pos = asap.to_vec();
    let mut bound: Vec<i64> = vec![i64::MAX; m.exprs.len()];
    let roots = std::iter::once(m.loss)
        .chain(m.metrics.iter().map(|x| x.value))
        .chain(m.outputs.iter().map(|x| x.value))
        .chain(m.grads.iter().map(|g| g.value));
    for h in roots {
        if let Some(b) = bound.get_mut(h.index()) {
            *b = (*b).min(2 * n_passes);
        }
    }
    for (h, e) in m.exprs.iter().rev() {
        if !at(&k.need, h) {
            continue;
        }
        let early = asap.get(h.index()).copied().unwrap_or(0);
        let mut b = bound.get(h.index()).copied().unwrap_or(i64::MAX);
        let final_pos = if at(&k.pass_kind, h) && !(at(&k.structural, h) && at(&k.reduce, h)) {
            if b % 2 == 0 {
                b -= 1;
            }
            if at(&k.structural, h) {
                if b >= 1 {
                    b
                } else {
                    0
                }
            } else {
                b.max(early)
            }
        } else if at(&k.structural, h) || at(&k.pass_kind, h) {
            early
        } else {
            if b % 2 == 1 {
                b -= 1;
            }
            if b > early && sink(h, b) {
                b
            } else {
                early
            }
        };
        if let Some(x) = pos.get_mut(h.index()) {
            *x = final_pos;
        }
        let pk = at(&k.pass_kind, h) && final_pos % 2 == 1;
        for o in e.operands() {
            let small_o = !at(&k.pass_kind, o) && !at(&k.structural, o);
            let limit = if pk && !at(&k.reduce, o) && !small_o {
                final_pos
            } else if !pk && small_o {
                // a small operand of a small node: the same stage will do (arena order)
                final_pos
            } else {
                final_pos - 1
            };
            if let Some(b) = bound.get_mut(o.index()) {
                *b = (*b).min(limit);
            }
        }
    }
    pos
}

/// The token data an elementwise token node is computed from: `tok` inputs, scan results and
/// `tok` results of small stages (ranks, …), seen through elementwise nodes whatever their pass
/// (a value materialized by an earlier pass stands for its sources: the CUDA backend recomputes
/// such values from them). Reductions and structural nodes contribute nothing.
fn token_sources(m: &Module, k: &Kinds) -> Vec<Vec<Handle<Expr>>> {
    let mut src: Vec<Vec<Handle<Expr>>> = Vec::with_capacity(m.exprs.len());
    for (h, e) in m.exprs.iter() {
        let own = if at(&k.structural, h) || at(&k.reduce, h) || m.level(h) != Level::Tok {
            Vec::new()
        } else if is_tok_input(m, h) || !at(&k.pass_kind, h) || matches!(e, Expr::Scan { .. }) {
            vec![h]
        } else {
            let mut v: Vec<Handle<Expr>> = Vec::new();
            for o in e.operands() {
                for &x in src.get(o.index()).map(Vec::as_slice).unwrap_or(&[]) {
                    if !v.contains(&x) {
                        v.push(x);
                    }
                }
            }
            v
        };
        src.push(own);
    }
    src
}

/// Per position, the token data its pass reads (the sources of its nodes' operands).
fn pass_reads(
    m: &Module,
    k: &Kinds,
    pos: &[i64],
    src: &[Vec<Handle<Expr>>],
) -> Vec<Vec<Handle<Expr>>> {
    let len = pos.iter().copied().max().unwrap_or(0).max(0) as usize + 1;
    let mut reads: Vec<Vec<Handle<Expr>>> = vec![Vec::new(); len];
    for (h, e) in m.exprs.iter() {
        let p = pos.get(h.index()).copied().unwrap_or(0);
        if !at(&k.need, h) || !at(&k.pass_kind, h) || p % 2 == 0 {
            continue;
        }
        let Some(list) = usize::try_from(p).ok().and_then(|p| reads.get_mut(p)) else {
            continue;
        };
        let own = std::iter::once(h).chain(e.operands());
        for x in own.flat_map(|o| src.get(o.index()).map(Vec::as_slice).unwrap_or(&[])) {
            if !list.contains(x) {
                list.push(*x);
            }
        }
    }
    reads
}

/// The token data the reductions and token operands directly under a small-stage node read.
fn cone_reads(
    m: &Module,
    k: &Kinds,
    src: &[Vec<Handle<Expr>>],
    h: Handle<Expr>,
) -> Vec<Handle<Expr>> {
    let mut out: Vec<Handle<Expr>> = Vec::new();
    let ops = m.exprs.get(h).map(|e| e.operands()).unwrap_or_default();
    for o in ops {
        let under: Vec<Handle<Expr>> = if at(&k.reduce, o) {
            m.exprs.get(o).map(|e| e.operands()).unwrap_or_default()
        } else {
            vec![o]
        };
        for x in under
            .iter()
            .flat_map(|u| src.get(u.index()).map(Vec::as_slice).unwrap_or(&[]))
        {
            if !out.contains(x) {
                out.push(*x);
            }
        }
    }
    out
}

fn is_tok_input(m: &Module, h: Handle<Expr>) -> bool {
    matches!(m.exprs.get(h), Some(Expr::Input(i)) if m.inputs.get(*i as usize).is_some_and(|inp| inp.ty.level == Level::Tok))
}
