//! The scheduling algorithm (see the module docs of `schedule` for the rules it implements).
//!
//! Positions: small stage `k` is position `2k`, token pass `k` is position `2k + 1`. Every needed
//! node gets the earliest position its operands allow (ASAP, which fixes the number of passes);
//! then, walking the arena backwards, token-pass nodes move to the latest pass their users allow
//! (ALAP) so that fewer values are materialized; small-stage nodes stay at their ASAP position.

use super::{Schedule, Stage, StageKind};
use crate::arena::Handle;
use crate::ir::{Expr, Module};
use crate::types::Level;

/// Nodes reachable from the roots (loss, metrics, outputs, gradients).
pub fn needed(m: &Module) -> Vec<bool> {
    let mut need = vec![false; m.exprs.len()];
    let roots = std::iter::once(m.loss)
        .chain(m.metrics.iter().map(|n| n.value))
        .chain(m.outputs.iter().map(|n| n.value))
        .chain(m.grads.iter().map(|g| g.value));
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

/// Partitions the needed nodes of `m` into the fewest token passes and the small stages between
/// them. Deterministic.
pub fn schedule(m: &Module) -> Schedule {
    let n = m.exprs.len();
    let need = needed(m);
    let structural = structural(m);
    let pass_kind: Vec<bool> = m.exprs.handles().map(|h| is_pass_kind(m, h)).collect();
    let reduce: Vec<bool> = m.exprs.handles().map(|h| is_pass_reduce(m, h)).collect();
    let at = |v: &[bool], h: Handle<Expr>| v.get(h.index()).copied().unwrap_or(false);

    // ASAP positions.
    let mut pos: Vec<i64> = vec![0; n];
    for (h, e) in m.exprs.iter() {
        if !at(&need, h) || at(&structural, h) {
            continue;
        }
        let pk = at(&pass_kind, h);
        let mut r = 0i64;
        for o in e.operands() {
            if at(&structural, o) {
                continue;
            }
            let p = pos.get(o.index()).copied().unwrap_or(0);
            let ready = if at(&reduce, o) || (at(&pass_kind, o) && !pk) {
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
    let last_pass = m
        .exprs
        .handles()
        .filter(|&h| at(&need, h) && at(&pass_kind, h) && !at(&structural, h))
        .filter_map(|h| pos.get(h.index()).copied())
        .max()
        .unwrap_or(-1);
    let n_passes = (last_pass + 1) / 2;

    // ALAP for token-pass nodes: the latest pass before every user.
    let mut bound: Vec<i64> = vec![i64::MAX; n];
    let roots = std::iter::once(m.loss)
        .chain(m.metrics.iter().map(|x| x.value))
        .chain(m.outputs.iter().map(|x| x.value))
        .chain(m.grads.iter().map(|g| g.value));
    for h in roots {
        if let Some(b) = bound.get_mut(h.index()) {
            *b = (*b).min(2 * n_passes - 1);
        }
    }
    for (h, e) in m.exprs.iter().rev() {
        if !at(&need, h) {
            continue;
        }
        let final_pos = if at(&pass_kind, h) && !(at(&structural, h) && at(&reduce, h)) {
            let mut b = bound.get(h.index()).copied().unwrap_or(i64::MAX);
            if b % 2 == 0 {
                b -= 1;
            }
            let asap = pos.get(h.index()).copied().unwrap_or(0);
            if at(&structural, h) {
                if b >= 1 {
                    b
                } else {
                    0
                }
            } else {
                b.max(asap)
            }
        } else {
            pos.get(h.index()).copied().unwrap_or(0)
        };
        if let Some(x) = pos.get_mut(h.index()) {
            *x = final_pos;
        }
        let pk = at(&pass_kind, h) && final_pos % 2 == 1;
        for o in e.operands() {
            let limit = if pk && !at(&reduce, o) {
                final_pos
            } else {
                final_pos - 1
            };
            if let Some(b) = bound.get_mut(o.index()) {
                *b = (*b).min(limit);
            }
        }
    }

    let mut stages = Vec::new();
    for p in 0..=(2 * n_passes) {
        let nodes: Vec<Handle<Expr>> = m
            .exprs
            .handles()
            .filter(|&h| at(&need, h) && pos.get(h.index()).copied() == Some(p))
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
