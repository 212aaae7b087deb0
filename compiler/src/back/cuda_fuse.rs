//! Two plan-level choices of the CUDA backend that cut global-memory traffic (the token passes
//! are memory-bound: every byte read or written per token costs time, arithmetic almost none).
//!
//! - **Seq-local fusion** ([`fusions`]): token passes `A`, `B` separated only by per-sequence
//!   work run as one kernel, one block per sequence: sweep 0 is `A`, the block reduces the
//!   sequence's sums, every thread computes the per-sequence values `B` needs (`Role::SeqLocal`),
//!   then sweep 1 is `B`. Sweep 1 reads the same sequence again right after sweep 0, from L2
//!   rather than DRAM, and the values `B` reads from `A` are recomputed instead of stored
//!   (below). A link `A → B` is fused when everything `B` reads from the small stage between
//!   them is elementwise at `seq` level over the sequence's own reductions and earlier values
//!   (GSPO's sequence ratio, GMPO's geometric mean, per-sequence normalizers); a group or batch
//!   reduction of `A`'s results in between (PPO's batch whitening, DPO's pairs) keeps two kernels.
//!   Passes with scans or turn reductions are not fused.
//! - **Rematerialization** ([`resolve_reads`]): a token value computed in one kernel (or sweep)
//!   and read by a later one is recomputed by the reader from the token inputs when its cone is
//!   elementwise (at most [`REMAT_MAX_NODES`] nodes): storing it would cost 4 bytes written and 4
//!   read per token, while the reader usually reads the cone's inputs anyway. Values read by
//!   scans, small stages, or that are roots stay stored.
//!
//! Neither changes what is computed per element (the same f32 operations on the same operands).
//! A fused kernel's blocks have [`FUSED_THREADS`] threads instead of [`PASS_THREADS`], so its
//! per-sequence sums fold in another (fixed) order: fused and plain programs agree to rounding,
//! and each is bit-reproducible run to run.
//! [`add_passes`] builds the kernels of one pass or of a fusion.
// Indexing is by handles of the module's own arena and side tables made with its length.
#![allow(clippy::indexing_slicing)]

use super::{
    elementwise, is_inline, ready_kernel, Grid, KernelKind, KernelPlan, Plan, Role, SelectStep,
    SortStep, FUSED_THREADS, PASS_THREADS, SMALL_THREADS,
};
use crate::arena::{Handle, HandleVec};
use crate::ir::{Expr, Module};
use crate::schedule::{Schedule, Stage, StageKind};
use crate::types::Level;

/// Largest cone a reader recomputes (beyond it the value is stored).
pub const REMAT_MAX_NODES: usize = 64;

/// Token passes run by one kernel: `passes[j]` is sweep `j`; before sweep `j ≥ 1` every thread
/// computes `seq_local[j]` (nodes of the small stage `mids[j]` between passes `j-1` and `j`).
#[derive(Clone, Debug)]
pub(crate) struct Fusion {
    pub passes: Vec<usize>,
    pub mids: Vec<Option<usize>>,
    pub seq_local: Vec<Vec<Handle<Expr>>>,
}

/// The nodes a stage computes (not aliases, not inline leaves), in arena order.
pub(crate) fn computed(
    m: &Module,
    canon: &HandleVec<Expr, Handle<Expr>>,
    stage: &Stage,
) -> Vec<Handle<Expr>> {
    stage
        .nodes
        .iter()
        .copied()
        .filter(|&h| h.index() < m.exprs.len() && canon[h] == h && !is_inline(&m.exprs[h]))
        .collect()
}

/// A pass that can take part in a fusion: token nodes and token → seq/group/batch reductions
/// only (no scans, no turn reductions, nothing finished between passes).
fn fusable_pass(m: &Module, nodes: &[Handle<Expr>]) -> bool {
    nodes.iter().all(|&h| match m.exprs[h] {
        Expr::Scan { .. } => false,
        Expr::Reduce { arg, to, .. } => m.level(arg) == Level::Tok && to > Level::Turn,
        Expr::Const(_)
        | Expr::Bool(_)
        | Expr::Param(_)
        | Expr::Input(_)
        | Expr::Index(_)
        | Expr::Unary { .. }
        | Expr::Binary { .. }
        | Expr::Select { .. }
        | Expr::Broadcast { .. }
        | Expr::Rank { .. }
        | Expr::Quantile { .. }
        | Expr::PosReduce { .. }
        | Expr::Detach { .. } => m.level(h) == Level::Tok,
    })
}

/// The fusions of a schedule (runs of ≥ 2 token passes), in stage order. Deterministic.
pub(crate) fn fusions(
    m: &Module,
    s: &Schedule,
    canon: &HandleVec<Expr, Handle<Expr>>,
) -> Vec<Fusion> {
    let n = m.exprs.len();
    let mut stage_of: HandleVec<Expr, usize> = HandleVec::new(n, usize::MAX);
    for (i, st) in s.stages.iter().enumerate() {
        for &h in &st.nodes {
            if h.index() < n {
                stage_of[h] = i;
            }
        }
    }
    let comp: Vec<Vec<Handle<Expr>>> = s.stages.iter().map(|st| computed(m, canon, st)).collect();
    let kind = |i: usize| s.stages.get(i).map(|st| st.kind);
    // a pass that computes nothing (its values are broadcasts) gets no kernel at all
    let fusable = |i: usize| {
        kind(i) == Some(StageKind::TokenPass) && !comp[i].is_empty() && fusable_pass(m, &comp[i])
    };
    let mut out = Vec::new();
    let mut k = 0;
    while k < s.stages.len() {
        if !fusable(k) {
            k += 1;
            continue;
        }
        let mut f = Fusion {
            passes: vec![k],
            mids: vec![None],
            seq_local: vec![Vec::new()],
        };
        // values every thread of the fused kernel holds per sequence
        let mut local: HandleVec<Expr, bool> = HandleVec::new(n, false);
        mark_seq_accs(m, &comp[k], &mut local);
        let mut last = k;
        loop {
            let (mid, next) = match (kind(last + 1), kind(last + 2)) {
                (Some(StageKind::Small), Some(StageKind::TokenPass)) => (Some(last + 1), last + 2),
                (Some(StageKind::TokenPass), _) => (None, last + 1),
                _ => break,
            };
            if !fusable(next) {
                break;
            }
            let Some(seq_local) = link((m, canon, &stage_of), &f, &local, mid, next, &comp[next])
            else {
                break;
            };
            for &h in &seq_local {
                local[h] = true;
            }
            mark_seq_accs(m, &comp[next], &mut local);
            f.passes.push(next);
            f.mids.push(mid);
            f.seq_local.push(seq_local);
            last = next;
        }
        if f.passes.len() > 1 {
            out.push(f);
        }
        k = last + 1;
    }
    out
}

fn mark_seq_accs(m: &Module, nodes: &[Handle<Expr>], local: &mut HandleVec<Expr, bool>) {
    for &h in nodes {
        if matches!(m.exprs[h], Expr::Reduce { to: Level::Seq, .. }) {
            local[h] = true;
        }
    }
}

/// The nodes of `mid` the next pass needs, computed per sequence in the fused kernel, or `None`
/// when the next pass needs anything that is not available per sequence.
fn link(
    (m, canon, stage_of): (
        &Module,
        &HandleVec<Expr, Handle<Expr>>,
        &HandleVec<Expr, usize>,
    ),
    f: &Fusion,
    local: &HandleVec<Expr, bool>,
    mid: Option<usize>,
    next_stage: usize,
    next: &[Handle<Expr>],
) -> Option<Vec<Handle<Expr>>> {
    let first = *f.passes.first()?;
    let mut want: Vec<Handle<Expr>> = Vec::new();
    // Some(true): fine; Some(false): a node of `mid` to compute per sequence; None: not fusable
    let classify = |o: Handle<Expr>, tok_reader: bool| -> Option<bool> {
        let st = stage_of[o];
        if is_inline(&m.exprs[o]) || st < first || st == next_stage || local[o] {
            Some(true)
        } else if f.passes.contains(&st) {
            (tok_reader && m.level(o) == Level::Tok).then_some(true)
        } else if Some(st) == mid {
            Some(false)
        } else {
            None
        }
    };
    for &h in next {
        // ranks and per-position reductions read other sequences' tokens: not of a sweep of
        // the same kernel (another block's sequence may not be done)
        let own_seq = !matches!(m.exprs[h], Expr::Rank { .. } | Expr::PosReduce { .. });
        for o in m.exprs[h].operands() {
            let o = canon[o];
            if !classify(o, own_seq)? && !want.contains(&o) {
                want.push(o);
            }
        }
    }
    let mut i = 0;
    while let Some(&x) = want.get(i) {
        i += 1;
        if m.level(x) != Level::Seq || !elementwise(&m.exprs[x]) {
            return None;
        }
        for o in m.exprs[x].operands() {
            let o = canon[o];
            if !classify(o, false)? && !want.contains(&o) {
                want.push(o);
            }
        }
    }
    want.sort();
    Some(want)
}

/// For every token value read by a later kernel or sweep than its own (`reads`: the value and
/// the reading kernel), either marks its cone for recomputation by the reader (`p.remat`) or
/// stores it. Runs after every other reason to store a value is known.
pub(crate) fn resolve_reads(p: &mut Plan, reads: &[(Handle<Expr>, usize)]) {
    for &(o, k) in reads {
        if p.stored[o] || p.remat[o] {
            continue;
        }
        match cone(p, o, k).filter(|_| !p.opts.disable_remat) {
            Some((nodes, coarse)) => {
                for x in nodes {
                    p.remat[x] = true;
                }
                for c in coarse {
                    match p.role[c] {
                        Role::Acc { kernel, .. } if kernel == k => p.early[c] = true,
                        Role::SeqLocal { kernel, .. } if kernel == k => {}
                        Role::None
                        | Role::Tok { .. }
                        | Role::Acc { .. }
                        | Role::SeqLocal { .. }
                        | Role::Stmt { .. } => p.stored[c] = true,
                    }
                }
            }
            None => p.stored[o] = true,
        }
    }
}

/// The token nodes to recompute for `o` in kernel `k` and the coarse values they read, or `None`
/// when `o` cannot be recomputed there.
type Cone = (Vec<Handle<Expr>>, Vec<Handle<Expr>>);

fn cone(p: &Plan, o: Handle<Expr>, k: usize) -> Option<Cone> {
    let m = p.m;
    let mut nodes = vec![o];
    let mut coarse = Vec::new();
    let mut i = 0;
    while let Some(&x) = nodes.get(i) {
        i += 1;
        if !elementwise(&m.exprs[x]) || !matches!(p.role[x], Role::Tok { .. }) {
            return None;
        }
        for op in m.exprs[x].operands() {
            let c = p.canon[op];
            if is_inline(&m.exprs[c]) {
                continue;
            }
            if m.level(c) == Level::Tok && !p.stored[c] {
                if !nodes.contains(&c) {
                    nodes.push(c);
                    if nodes.len() > REMAT_MAX_NODES {
                        return None;
                    }
                }
                continue;
            }
            // a stored token value, or a coarse value: read where it is
            let readable = match p.role[c] {
                Role::Tok { kernel, .. } | Role::SeqLocal { kernel, .. } if kernel == k => true,
                Role::Acc { kernel, .. } if kernel == k => m.level(c) == Level::Seq,
                r @ (Role::None
                | Role::Tok { .. }
                | Role::Acc { .. }
                | Role::SeqLocal { .. }
                | Role::Stmt { .. }) => ready_kernel(r).is_some_and(|kc| kc < k),
            };
            if !readable {
                return None;
            }
            if m.level(c) > Level::Tok && !coarse.contains(&c) {
                coarse.push(c);
            }
        }
    }
    Some((nodes, coarse))
}

/// The kernels of one or more fused token passes: the pass kernel (sweep `j` = pass `j`, the
/// per-sequence values of the small stage before it first), with `quantiles` the kernels of
/// the order statistics of token values that need nothing of the fin kernel
/// ([`add_order_stats`]), the fin kernel of its cross-sequence reductions, then the rest of
/// each small stage in between (its order statistics first, likewise).
#[allow(clippy::too_many_arguments)]
pub(crate) fn add_passes(
    m: &Module,
    s: &Schedule,
    canon: &HandleVec<Expr, Handle<Expr>>,
    f: &Fusion,
    ident: &str,
    quantiles: bool,
    role: &mut HandleVec<Expr, Role>,
    kernels: &mut Vec<KernelPlan>,
) {
    let pk = kernels.len();
    let mut body: Vec<(Handle<Expr>, usize)> = Vec::new();
    let mut fin = Vec::new();
    for (j, &st) in f.passes.iter().enumerate() {
        let Some(stage) = s.stages.get(st) else {
            continue;
        };
        for h in computed(m, canon, stage) {
            let tok_acc =
                matches!(m.exprs[h], Expr::Reduce { arg, .. } if m.level(arg) == Level::Tok);
            if m.level(h) == Level::Tok || tok_acc {
                body.push((h, j));
                if tok_acc && m.level(h) > Level::Seq {
                    fin.push(h);
                }
            } else {
                fin.push(h);
            }
        }
        for &h in f.seq_local.get(j).into_iter().flatten() {
            role[h] = Role::SeqLocal {
                kernel: pk,
                sweep: j,
            };
            body.push((h, j));
        }
    }
    body.sort();
    fin.sort();
    // the fin kernel's index is set once the quantiles' kernels are in
    for &(h, sweep) in &body {
        if matches!(role[h], Role::SeqLocal { .. }) {
            continue;
        }
        role[h] = if m.level(h) == Level::Tok {
            Role::Tok { kernel: pk, sweep }
        } else {
            Role::Acc {
                kernel: pk,
                sweep,
                fin: None,
            }
        };
    }
    let crosses: Vec<Handle<Expr>> = body
        .iter()
        .map(|&(h, _)| h)
        .filter(|&h| m.level(h) > Level::Seq && matches!(role[h], Role::Acc { .. }))
        .collect();
    let names: Vec<String> = f.passes.iter().map(|st| format!("p{st}")).collect();
    let first = f.passes.first().copied().unwrap_or(0);
    kernels.push(KernelPlan {
        name: format!("rlo_{ident}_{}", names.join("_")),
        kind: KernelKind::Pass,
        stage: first,
        nodes: body.into_iter().map(|(h, _)| h).collect(),
        sweeps: f.passes.len(),
        fused: if f.passes.len() > 1 {
            f.passes.clone()
        } else {
            Vec::new()
        },
        threads: if f.passes.len() > 1 {
            FUSED_THREADS
        } else {
            PASS_THREADS
        },
        merged: Vec::new(),
    });
    // order statistics of the pass's token values that need nothing of the fin kernel: kernels
    // of their own between the pass and the fin kernel (not its one block)
    if quantiles {
        fin = add_order_stats(m, canon, ident, first, fin, role, kernels);
    }
    let fk = (!fin.is_empty()).then_some(kernels.len());
    for &h in &crosses {
        if let Role::Acc { fin: f, .. } = &mut role[h] {
            *f = fk;
        }
    }
    if let Some(fk) = fk {
        for &h in &fin {
            if !matches!(role[h], Role::Acc { .. }) {
                role[h] = Role::Stmt { kernel: fk };
            }
        }
        kernels.push(KernelPlan {
            name: format!("rlo_{ident}_p{first}_fin"),
            kind: KernelKind::Fin,
            stage: first,
            nodes: fin,
            sweeps: 0,
            fused: Vec::new(),
            threads: SMALL_THREADS,
            merged: Vec::new(),
        });
    }
    for (j, mid) in f.mids.iter().enumerate() {
        let (Some(mid), Some(local)) = (mid, f.seq_local.get(j)) else {
            continue;
        };
        let Some(stage) = s.stages.get(*mid) else {
            continue;
        };
        let mut rest: Vec<Handle<Expr>> = computed(m, canon, stage)
            .into_iter()
            .filter(|h| !local.contains(h))
            .collect();
        if quantiles {
            rest = add_order_stats(m, canon, ident, *mid, rest, role, kernels);
        }
        if !rest.is_empty() {
            add_small(ident, *mid, rest, role, kernels);
        }
    }
}

/// The schedule with each small stage that has token work its one-block kernel would walk every
/// token for split as `[A, P, B]` ([`split_small`]), and `B` again while it has such work (token
/// values that need a token reduction of the pass before: one pass each); `None` when no stage
/// has. A loop, not recursion: a chain of such values may be long.
pub(crate) fn token_work_passes(m: &Module, s: &Schedule) -> Option<Schedule> {
    let mut stages = Vec::new();
    let mut changed = false;
    for st in &s.stages {
        let mut rest = st.clone();
        let mut split = false;
        while let Some([a, p, b]) = split_small(m, &rest) {
            if !a.nodes.is_empty() {
                stages.push(a);
            }
            stages.push(p);
            rest = b;
            split = true;
        }
        if !split || !rest.nodes.is_empty() {
            stages.push(rest);
        }
        changed |= split;
    }
    changed.then_some(Schedule { stages })
}

/// A small stage split as `[A, P, B]` when it has token work its one-block kernel would walk
/// every token for (structural token values — functions of `pos` or of values finished before
/// the stage — their reductions, per-position group reductions and group/sequence ranks of
/// tokens of values finished before; not the closed-form sums of per-sequence constants): `P`
/// a token pass with that work, `A` the small nodes it needs (ranks and quantiles of coarse
/// values included), `B` the rest: what reads a reduction of `P`, per-position reductions and
/// ranks of `P`'s values, quantiles of token values (which stay in a one-block kernel) and what
/// reads them. `None` when there is no such work.
fn split_small(m: &Module, first: &Stage) -> Option<[Stage; 3]> {
    if first.kind != StageKind::Small {
        return None;
    }
    let n = m.exprs.len();
    let mut in_stage = vec![false; n];
    first.nodes.iter().for_each(|h| in_stage[h.index()] = true);
    // the level of the node that holds a value (through broadcasts and detaches)
    let held = |mut h: Handle<Expr>| {
        while let Expr::Broadcast { arg, .. } | Expr::Detach { arg } = m.exprs[h] {
            h = arg;
        }
        m.level(h)
    };
    let alias =
        |h: Handle<Expr>| matches!(m.exprs[h], Expr::Broadcast { .. } | Expr::Detach { .. });
    // token reductions the small kernel cannot do in closed form (see `cuda_small.rs`)
    let tok_acc = |h: Handle<Expr>| {
        matches!(m.exprs[h], Expr::Reduce { arg, to, filter, .. }
            if m.level(arg) == Level::Tok
                && (to == Level::Turn
                    || held(arg) == Level::Tok
                    || filter.is_some_and(|f| held(f) == Level::Tok)))
    };
    let tok_value =
        |h: Handle<Expr>| m.level(h) == Level::Tok && !alias(h) && !is_inline(&m.exprs[h]);
    // 0: A (before the pass), 1: P (the pass), 2: B (after); `late`: readable after the pass only
    let mut part = vec![0u8; n];
    let mut late = vec![false; n];
    for &h in &first.nodes {
        let e = &m.exprs[h];
        // operands of this stage, through broadcasts and detaches a stage does not list
        let ops: Vec<Handle<Expr>> = e
            .operands()
            .into_iter()
            .map(|mut o| {
                while let (false, Expr::Broadcast { arg, .. } | Expr::Detach { arg }) =
                    (in_stage[o.index()], &m.exprs[o])
                {
                    o = *arg;
                }
                o
            })
            .filter(|o| in_stage[o.index()])
            .collect();
        // a per-position reduction reads other sequences' tokens: in the pass only of values
        // finished before it (inputs, earlier stages, A)
        let cross = matches!(e, Expr::PosReduce { .. }) && ops.iter().any(|o| part[o.index()] != 0);
        let before = ops.iter().all(|o| part[o.index()] == 0);
        // ranks and quantiles of coarse values finished before the pass: small work for A
        let coarse_order = matches!(e, Expr::Rank { arg, .. } | Expr::Quantile { arg, .. }
            if held(*arg) > Level::Tok && m.level(h) > Level::Tok)
            && before;
        // a token's rank within its sequence, turn or group (of values finished before): the
        // pass's thread for that token counts, block per sequence (batch ranks are sorted)
        let token_rank = matches!(e, Expr::Rank { within, .. }
            if m.level(h) == Level::Tok && *within != Level::Batch)
            && before;
        let after_pass = ops.iter().any(|&o| late[o.index()]);
        (part[h.index()], late[h.index()]) = if alias(h) {
            ops.first()
                .map_or((0, false), |o| (part[o.index()], late[o.index()]))
        } else if coarse_order {
            (0, false)
        } else if token_rank {
            (1, false)
        } else if matches!(e, Expr::Rank { .. } | Expr::Quantile { .. }) || cross {
            (2, true)
        } else if tok_value(h) || tok_acc(h) {
            if after_pass {
                (2, true)
            } else {
                (1, tok_acc(h))
            }
        } else if after_pass {
            (2, true)
        } else {
            (0, false)
        };
    }
    let pick = |k: u8| -> Vec<Handle<Expr>> {
        first
            .nodes
            .iter()
            .copied()
            .filter(|h| part[h.index()] == k)
            .collect()
    };
    let pass = pick(1);
    if !pass.iter().any(|&h| tok_value(h) || tok_acc(h)) {
        return None;
    }
    Some([
        Stage {
            kind: StageKind::Small,
            nodes: pick(0),
        },
        Stage {
            kind: StageKind::TokenPass,
            nodes: pass,
        },
        Stage {
            kind: StageKind::Small,
            nodes: pick(2),
        },
    ])
}

/// The launches that rank token values over the batch for `rank` (a `Rank { within: Batch }` of
/// a token value an earlier kernel computed): a stable radix sort of (key, slot) pairs over the
/// whole batch, O(n) per digit pass, instead of a one-block kernel comparing every pair. The
/// last launch writes the rank (a stored token value) for the kernels after it.
pub(crate) fn add_sort(
    ident: &str,
    stage: usize,
    rank: Handle<Expr>,
    role: &mut HandleVec<Expr, Role>,
    kernels: &mut Vec<KernelPlan>,
) {
    let mut steps = vec![(SortStep::Keys, "keys")];
    for j in 0..8 {
        steps.extend([
            (SortStep::Hist(j), "hist"),
            (SortStep::Scan(j), "scan"),
            (SortStep::Scatter(j), "scatter"),
        ]);
    }
    steps.push((SortStep::Place, "place"));
    let steps = steps.into_iter().map(|(s, n)| (KernelKind::Sort(s), n));
    add_radix(ident, stage, rank, 'k', steps, role, kernels);
}

/// The launches of a batch quantile of token values (`quantile`: a `Quantile { to: Batch }` of
/// a token value an earlier kernel computed): a multi-block radix select of its two order
/// statistics instead of a one-block kernel sweeping every token 64 times.
pub(crate) fn add_select(
    ident: &str,
    stage: usize,
    quantile: Handle<Expr>,
    role: &mut HandleVec<Expr, Role>,
    kernels: &mut Vec<KernelPlan>,
) {
    let mut steps = vec![(SelectStep::Keys, "keys")];
    for j in 0..8 {
        steps.extend([(SelectStep::Hist(j), "hist"), (SelectStep::Pick(j), "pick")]);
    }
    steps.push((SelectStep::Value, "value"));
    let steps = steps.into_iter().map(|(s, n)| (KernelKind::Select(s), n));
    add_radix(ident, stage, quantile, 'q', steps, role, kernels);
}

/// One kernel plan per step of a radix sort or select of `node` (`rlo_<id>_<prefix><node>_<step>`:
/// one kernel per kind of step; a digit pass is launched once per digit, the digit its argument);
/// the last step writes `node`.
fn add_radix(
    ident: &str,
    stage: usize,
    node: Handle<Expr>,
    prefix: char,
    steps: impl Iterator<Item = (KernelKind, &'static str)>,
    role: &mut HandleVec<Expr, Role>,
    kernels: &mut Vec<KernelPlan>,
) {
    for (kind, suffix) in steps {
        let threads = match kind.grid() {
            Grid::Single => SMALL_THREADS,
            Grid::PerSequence | Grid::Tiles => PASS_THREADS,
        };
        kernels.push(KernelPlan {
            name: format!("rlo_{ident}_{prefix}{}_{suffix}", node.index()),
            kind,
            stage,
            nodes: vec![node],
            sweeps: 0,
            fused: Vec::new(),
            threads,
            merged: Vec::new(),
        });
    }
    role[node] = Role::Stmt {
        kernel: kernels.len() - 1,
    };
}

/// The order statistics of a small stage's `nodes` over token values finished by earlier
/// kernels, as kernels of their own (pushed now, before the stage's small kernel): batch ranks
/// through the radix sort (not O(n²)), batch quantiles through the radix select, turn /
/// sequence / group quantiles with one block per sequence or group. Returns the other nodes.
pub(crate) fn add_order_stats(
    m: &Module,
    canon: &HandleVec<Expr, Handle<Expr>>,
    ident: &str,
    stage: usize,
    nodes: Vec<Handle<Expr>>,
    role: &mut HandleVec<Expr, Role>,
    kernels: &mut Vec<KernelPlan>,
) -> Vec<Handle<Expr>> {
    let here = |x: Handle<Expr>| nodes.contains(&canon[x]);
    let sorted = |h: Handle<Expr>| {
        matches!(m.exprs[h], Expr::Rank { arg, within: Level::Batch }
            if m.level(arg) == Level::Tok && !here(arg))
    };
    // a quantile of token values whose `q` and filter are finished too, and its level
    let quantile = |h: Handle<Expr>| {
        let Expr::Quantile { arg, q, to, filter } = m.exprs[h] else {
            return None;
        };
        (m.level(arg) == Level::Tok && !here(arg) && !here(q) && !filter.is_some_and(here))
            .then_some(to)
    };
    let mut rest = Vec::new();
    let mut units = Vec::new();
    for &h in &nodes {
        if sorted(h) {
            add_sort(ident, stage, h, role, kernels);
        } else if quantile(h) == Some(Level::Batch) {
            add_select(ident, stage, h, role, kernels);
        } else if quantile(h).is_some() {
            units.push(h);
        } else {
            rest.push(h);
        }
    }
    if !units.is_empty() {
        add_unit_quantiles(ident, stage, units, role, kernels);
    }
    rest
}

/// One kernel for the turn/sequence/group quantiles of token values of a stage (`nodes`, their
/// operands finished by earlier kernels): a block per sequence or group, grid-stride.
pub(crate) fn add_unit_quantiles(
    ident: &str,
    stage: usize,
    nodes: Vec<Handle<Expr>>,
    role: &mut HandleVec<Expr, Role>,
    kernels: &mut Vec<KernelPlan>,
) {
    let name = format!("rlo_{ident}_u{stage}");
    add_statements(name, KernelKind::UnitQuantiles, stage, nodes, role, kernels);
}

pub(crate) fn add_small(
    ident: &str,
    stage: usize,
    nodes: Vec<Handle<Expr>>,
    role: &mut HandleVec<Expr, Role>,
    kernels: &mut Vec<KernelPlan>,
) {
    let name = format!("rlo_{ident}_s{stage}");
    add_statements(name, KernelKind::Small, stage, nodes, role, kernels);
}

/// A kernel whose nodes are statements (`Role::Stmt`), of 1024-thread blocks.
fn add_statements(
    name: String,
    kind: KernelKind,
    stage: usize,
    nodes: Vec<Handle<Expr>>,
    role: &mut HandleVec<Expr, Role>,
    kernels: &mut Vec<KernelPlan>,
) {
    let k = kernels.len();
    for &h in &nodes {
        role[h] = Role::Stmt { kernel: k };
    }
    kernels.push(KernelPlan {
        name,
        kind,
        stage,
        nodes,
        sweeps: 0,
        fused: Vec::new(),
        threads: SMALL_THREADS,
        merged: Vec::new(),
    });
}

/// Adjacent one-block kernels (a pass's fin kernel and the small stages after it) run as one
/// kernel, their statements in order with barriers between: each launch costs a few µs of a
/// step whose token work at 1024×4096 is ≈ 30 µs (gspo: 5 → 3 launches, ppo 10 → 7).
/// `merged` records the small stages a kernel took over (its header says so); roles move to
/// the merged kernel's index and every later kernel's index shifts down.
pub(crate) fn merge_one_block(kernels: &mut Vec<KernelPlan>, role: &mut HandleVec<Expr, Role>) {
    let single = |k: &KernelPlan| matches!(k.kind, KernelKind::Fin | KernelKind::Small);
    let mut i = 0;
    while i + 1 < kernels.len() {
        let (a, b) = (&kernels[i], &kernels[i + 1]);
        if !(single(a) && b.kind == KernelKind::Small && a.threads == b.threads) {
            i += 1;
            continue;
        }
        let b = kernels.remove(i + 1);
        kernels[i].nodes.extend(b.nodes);
        kernels[i].merged.push(b.stage);
        // kernel i + 1 is now i; later ones move down by one
        let shift = |k: usize| if k > i { k - 1 } else { k };
        for r in role.values_mut() {
            *r = match *r {
                Role::None => Role::None,
                Role::Tok { kernel, sweep } => Role::Tok {
                    kernel: shift(kernel),
                    sweep,
                },
                Role::Acc { kernel, sweep, fin } => Role::Acc {
                    kernel: shift(kernel),
                    sweep,
                    fin: fin.map(shift),
                },
                Role::SeqLocal { kernel, sweep } => Role::SeqLocal {
                    kernel: shift(kernel),
                    sweep,
                },
                Role::Stmt { kernel } => Role::Stmt {
                    kernel: shift(kernel),
                },
            };
        }
    }
}
