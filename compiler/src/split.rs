//! Micro-batch splittability: can an optimizer step be split into micro-batches (at sequence
//! boundaries; a group may be split) and give exactly the whole-step loss and gradient?
//!
//! # The rule
//! A node is *value-dependent* when it reads a `diff` input (through anything, `detach`
//! included: a detached value still differs per micro-batch). Every other node is *known*: its
//! value on a micro-batch equals its whole-step value if every **cross-sequence** known node
//! (`Reduce`/`Quantile` to group or batch, `Rank` within group or batch, `PosReduce`) is computed
//! once on the whole step — the **pre-pass** ([`Splittability::prepass`]) — and given to each
//! micro-batch as an override. Value-dependent nodes must then be:
//! - *local* (level ≤ seq, computed within one sequence: elementwise, scans, reductions to turn or
//!   seq, ranks/quantiles within a sequence), or
//! - *additive* (group/batch level): a sum over sequences of local values (`Reduce Sum` to group
//!   or batch), combined only linearly with known values: `a ± b`, `−a`, `k·a`, `a/k`,
//!   `c ? a : 0` with known `c`.
//!
//! The loss must be additive: then loss(step) = Σ loss(micro-batch) and every gradient is the
//! micro-batch's own. Anything else — a `batch_std`, `max` or quantile of value-dependent values,
//! a group mean of them broadcast back to the sequences, a per-position reduction across
//! sequences — is reported with its span. GSPO is fine (its nonlinearity is inside sequences).
//!
//! # How the runtime uses it (`rlo_runtime::microbatch`)
//! ```text
//! let sp = split::analyze(&m);                       // sp.splittable, else report sp.reason
//! let pre = split::prepass(&m, &sp, &whole, &params)?; // reads only non-diff inputs of the step
//! for seqs in micro_batches {                         // any partition of 0..B
//!     let sub = split::sub_batch(&m, &whole, &seqs);      // layout + inputs of those sequences
//!     let ov = split::restrict(&m, &pre, &whole.layout, &sub);
//!     let ev = interp::evaluate_with(&m, &s, &sub.batch, &params, &ov)?;
//!     loss += ev.loss; scatter ev.grads with sub.seqs (per-element values) …
//! }
//! ```
//! Metrics and outputs combine as [`Combine`] says.

use crate::arena::Handle;
use crate::back::interp::{evaluate_nodes, InterpError, Overrides};
use crate::data::{Batch, Layout};
use crate::ir::{BinaryOp, Expr, Module, UnaryOp};
use crate::schedule::needed;
use crate::types::Level;
use rlo_grammar::Span;
use std::collections::BTreeMap;

/// How the per-micro-batch values of a metric or output combine into the whole-step value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Combine {
    /// Every micro-batch computes the whole-step value (it is known).
    Whole,
    /// Sum the micro-batch values (additive).
    Sum,
    /// One value per element: scatter each micro-batch's elements back (local, level ≤ seq).
    PerElement,
    /// Not computable from micro-batches.
    Unavailable,
}

/// The result of [`analyze`].
#[derive(Clone, Debug, PartialEq)]
pub struct Splittability {
    pub splittable: bool,
    /// Known cross-sequence nodes to compute on the whole step (arena order).
    pub prepass: Vec<Handle<Expr>>,
    /// Why the objective is not splittable: the span of the offending node and an explanation.
    pub reason: Option<(Span, String)>,
    /// Aligned with `Module::metrics`.
    pub metrics: Vec<Combine>,
    /// Aligned with `Module::outputs`.
    pub outputs: Vec<Combine>,
    /// Aligned with `Module::metrics`: `Some(op)` where an [`Combine::Unavailable`] metric is
    /// a max/min over the parts of part-local values, so a max/min of the parts' values (each
    /// with its element count) gives it.
    pub metric_extrema: Vec<Option<crate::ir::ReduceOp>>,
}

#[derive(Clone, Debug, PartialEq)]
enum State {
    Known,
    Local,
    Additive,
    Bad(Span, String),
}

/// Whether `e` combines elements of different units of `scope` (sequences for micro-batches,
/// groups for data-parallel shards).
fn crosses(e: &Expr, scope: Level) -> bool {
    match *e {
        Expr::Reduce { to, .. } | Expr::Quantile { to, .. } => to > scope,
        Expr::Rank { within, .. } => within > scope,
        // Per-position reductions run across the sequences of a group.
        Expr::PosReduce { .. } => scope < Level::Group,
        Expr::Const(_)
        | Expr::Bool(_)
        | Expr::Param(_)
        | Expr::Input(_)
        | Expr::Index(_)
        | Expr::Unary { .. }
        | Expr::Binary { .. }
        | Expr::Select { .. }
        | Expr::Broadcast { .. }
        | Expr::Scan { .. }
        | Expr::Detach { .. } => false,
    }
}

#[allow(clippy::wildcard_enum_match_arm)]
fn is_zero(m: &Module, h: Handle<Expr>) -> bool {
    match m.exprs.get(h) {
        Some(Expr::Const(c)) => *c == 0.0,
        Some(Expr::Broadcast { arg, .. }) => is_zero(m, *arg),
        _ => false,
    }
}

/// Classifies `m` for micro-batches: any partition of the sequences (see the module docs).
pub fn analyze(m: &Module) -> Splittability {
    analyze_scope(m, Level::Seq)
}

/// Classifies `m` for data-parallel shards: ranks hold disjoint sets of *whole groups*, so
/// values that depend on `diff` inputs may also be combined within a group (DPO-style pairs,
/// group-normalized sequence scores); only batch-level combinations must be additive.
pub fn analyze_shards(m: &Module) -> Splittability {
    analyze_scope(m, Level::Group)
}

/// The analysis with `scope` (seq or group) as the unit that stays whole on one part.
#[allow(clippy::wildcard_enum_match_arm)]
fn analyze_scope(m: &Module, scope: Level) -> Splittability {
    let need = needed(m);
    let mut st: Vec<State> = Vec::with_capacity(m.exprs.len());
    for (h, e) in m.exprs.iter() {
        let s = state(m, h, e, &st, scope);
        st.push(s);
    }
    let get = |h: Handle<Expr>| st.get(h.index()).cloned().unwrap_or(State::Known);
    let prepass: Vec<Handle<Expr>> = m
        .exprs
        .iter()
        .filter(|(h, e)| {
            need.get(h.index()).copied().unwrap_or(false)
                && get(*h) == State::Known
                && crosses(e, scope)
        })
        .map(|(h, _)| h)
        .collect();
    let reason = match get(m.loss) {
        State::Additive => None,
        State::Bad(span, msg) => Some((span, msg)),
        State::Known | State::Local => Some((
            m.span(m.loss),
            "the loss does not depend on a diff input, so micro-batch (or rank) losses would not add up"
                .to_string(),
        )),
    };
    let combine = |h: Handle<Expr>| match get(h) {
        State::Known if m.level(h) > scope => Combine::Whole,
        State::Known | State::Local => Combine::PerElement,
        State::Additive => Combine::Sum,
        State::Bad(..) => Combine::Unavailable,
    };
    let extremum = |h: Handle<Expr>| match m.exprs.get(h) {
        Some(&Expr::Reduce {
            op: op @ (crate::ir::ReduceOp::Max | crate::ir::ReduceOp::Min),
            arg,
            filter,
            to,
        }) if to > scope
            && matches!(get(arg), State::Known | State::Local)
            && filter.is_none_or(|f| matches!(get(f), State::Known | State::Local)) =>
        {
            Some(op)
        }
        _ => None,
    };
    Splittability {
        splittable: reason.is_none(),
        prepass,
        reason,
        metric_extrema: m.metrics.iter().map(|n| extremum(n.value)).collect(),
        metrics: m.metrics.iter().map(|n| combine(n.value)).collect(),
        outputs: m.outputs.iter().map(|n| combine(n.value)).collect(),
    }
}

// Defaults are the conservative answer (local below seq level, which the level rules make exact).
#[allow(clippy::wildcard_enum_match_arm)]
fn state(m: &Module, h: Handle<Expr>, e: &Expr, st: &[State], scope: Level) -> State {
    let get = |o: Handle<Expr>| st.get(o.index()).cloned().unwrap_or(State::Known);
    let ops = e.operands();
    if let Some(bad) = ops
        .iter()
        .map(|&o| get(o))
        .find(|s| matches!(s, State::Bad(..)))
    {
        return bad;
    }
    let vd = |o: Handle<Expr>| get(o) != State::Known;
    let bad = |msg: &str| State::Bad(m.span(h), msg.to_string());
    let level = m.level(h);
    if let Expr::Input(i) = *e {
        return match m.inputs.get(i as usize) {
            Some(inp) if inp.diff && level <= scope => State::Local,
            Some(inp) if inp.diff => bad("a diff input above seq level cannot be split"),
            _ => State::Known,
        };
    }
    if !ops.iter().any(|&o| vd(o)) {
        return State::Known;
    }
    if level <= scope {
        // Value-dependent at or below seq: local unless it crosses sequences.
        return match *e {
            Expr::Broadcast { arg, .. } if get(arg) == State::Additive => bad(
                "a cross-sequence sum of diff-dependent values is broadcast back to the \
                 sequences: micro-batches (or ranks) would see only their part of it",
            ),
            Expr::Rank { .. } | Expr::PosReduce { .. } if crosses(e, scope) => {
                bad("a rank or per-position reduction across sequences of diff-dependent values")
            }
            _ => State::Local,
        };
    }
    let additive_or_zero = |o: Handle<Expr>| get(o) == State::Additive || is_zero(m, o);
    let known = |o: Handle<Expr>| get(o) == State::Known;
    match *e {
        Expr::Reduce {
            op: crate::ir::ReduceOp::Sum,
            arg,
            filter,
            ..
        } if filter.is_none_or(|f| known(f) || m.level(f) <= scope)
            && matches!(get(arg), State::Local | State::Additive) =>
        {
            State::Additive
        }
        Expr::Reduce { .. } => bad(
            "a max/min over sequences of diff-dependent values: not a sum, so micro-batches \
             (or ranks) cannot be combined",
        ),
        Expr::Quantile { .. } => bad("a quantile over sequences of diff-dependent values"),
        Expr::Unary {
            op: UnaryOp::Neg, ..
        } => State::Additive,
        Expr::Unary { .. } => bad(
            "a nonlinear function of a cross-sequence sum of diff-dependent values (e.g. a \
             std or a ratio of sums): micro-batch (or rank) results would not add up",
        ),
        Expr::Binary { op, lhs, rhs } => match op {
            BinaryOp::Add | BinaryOp::Sub if additive_or_zero(lhs) && additive_or_zero(rhs) => {
                State::Additive
            }
            BinaryOp::Mul if (known(lhs) || known(rhs)) => State::Additive,
            BinaryOp::Div if known(rhs) => State::Additive,
            BinaryOp::Add | BinaryOp::Sub => bad(
                "adds a known value to a cross-sequence sum of diff-dependent values: the \
                 micro-batch (or rank) losses would count it once each",
            ),
            BinaryOp::Mul
            | BinaryOp::Div
            | BinaryOp::Pow
            | BinaryOp::Min
            | BinaryOp::Max
            | BinaryOp::Lt
            | BinaryOp::Le
            | BinaryOp::Gt
            | BinaryOp::Ge
            | BinaryOp::Eq
            | BinaryOp::Ne
            | BinaryOp::And
            | BinaryOp::Or => bad(
                "a nonlinear combination of cross-sequence sums of diff-dependent values: \
                 micro-batch (or rank) results would not add up",
            ),
        },
        Expr::Select {
            cond,
            on_true,
            on_false,
        } if known(cond) && additive_or_zero(on_true) && additive_or_zero(on_false) => {
            State::Additive
        }
        Expr::Select { .. } => bad("a choice that depends on cross-sequence diff-dependent values"),
        Expr::Detach { arg } => get(arg),
        Expr::Const(_)
        | Expr::Bool(_)
        | Expr::Param(_)
        | Expr::Input(_)
        | Expr::Index(_)
        | Expr::Broadcast { .. }
        | Expr::Scan { .. }
        | Expr::Rank { .. }
        | Expr::PosReduce { .. } => bad("unexpected diff-dependent value above seq level"),
    }
}

/// Computes the pre-pass nodes on the whole step. Reads only the non-diff inputs they need (the
/// `diff` inputs may be absent from `whole`).
pub fn prepass(
    m: &Module,
    sp: &Splittability,
    whole: &Batch,
    params: &[f64],
) -> Result<Overrides, InterpError> {
    let vals = evaluate_nodes(m, whole, params, &sp.prepass, &Overrides::default())?;
    Ok(Overrides {
        values: sp.prepass.iter().copied().zip(vals).collect(),
    })
}

/// A micro-batch cut out of a whole step.
#[derive(Clone, Debug, PartialEq)]
pub struct SubBatch {
    pub batch: Batch,
    /// `seqs[i]`: the whole-step index of the micro-batch's sequence `i`.
    pub seqs: Vec<usize>,
    /// `groups[g]`: the whole-step index of the micro-batch's group `g` (numbered by first
    /// appearance in `seqs`).
    pub groups: Vec<usize>,
}

/// The sequences `seqs` of `whole` (in that order) as a batch of their own: the layout and every
/// input of `m` present in `whole` (missing inputs stay missing). Indices out of range are
/// skipped by the caller's validation (`Layout::validate` of the result fails).
pub fn sub_batch(m: &Module, whole: &Batch, seqs: &[usize]) -> SubBatch {
    let l = &whole.layout;
    let mut groups: Vec<usize> = Vec::new();
    let mut gmap: BTreeMap<usize, u32> = BTreeMap::new();
    let mut layout = Layout {
        seq_offsets: vec![0],
        turn_offsets: vec![0],
        tok_turn: Vec::new(),
        seq_group: Vec::new(),
        n_groups: 0,
    };
    for &s in seqs {
        let (t0, t1) = range(&l.seq_offsets, s);
        let (k0, k1) = range(&l.turn_offsets, s);
        let kb = layout.turn_offsets.last().copied().unwrap_or(0);
        for t in t0..t1 {
            let k = l.tok_turn.get(t).copied().unwrap_or(0) as usize;
            layout.tok_turn.push((kb + k.saturating_sub(k0)) as u32);
        }
        let tb = layout.seq_offsets.last().copied().unwrap_or(0);
        layout.seq_offsets.push(tb + (t1 - t0));
        layout.turn_offsets.push(kb + (k1 - k0));
        let g = l.seq_group.get(s).copied().unwrap_or(0) as usize;
        let next = groups.len() as u32;
        let gi = *gmap.entry(g).or_insert_with(|| {
            groups.push(g);
            next
        });
        layout.seq_group.push(gi);
    }
    layout.n_groups = groups.len();
    let mut values = BTreeMap::new();
    for inp in &m.inputs {
        if let Some(v) = whole.values.get(&inp.name) {
            let r = restrict_values(l, inp.ty.level, v, seqs, &groups);
            values.insert(inp.name.clone(), r);
        }
    }
    SubBatch {
        batch: Batch { layout, values },
        seqs: seqs.to_vec(),
        groups,
    }
}

/// The pre-pass values restricted to a micro-batch.
pub fn restrict(m: &Module, ov: &Overrides, whole: &Layout, sub: &SubBatch) -> Overrides {
    Overrides {
        values: ov
            .values
            .iter()
            .map(|(&h, v)| {
                (
                    h,
                    restrict_values(whole, m.level(h), v, &sub.seqs, &sub.groups),
                )
            })
            .collect(),
    }
}

/// The elements of a whole-step array at `level` that belong to `seqs` / `groups`, in micro-batch
/// order.
pub fn restrict_values(
    whole: &Layout,
    level: Level,
    v: &[f64],
    seqs: &[usize],
    groups: &[usize],
) -> Vec<f64> {
    let pick = |r: (usize, usize)| v.get(r.0..r.1).unwrap_or(&[]).to_vec();
    match level {
        Level::Tok => seqs
            .iter()
            .flat_map(|&s| pick(range(&whole.seq_offsets, s)))
            .collect(),
        Level::Turn => seqs
            .iter()
            .flat_map(|&s| pick(range(&whole.turn_offsets, s)))
            .collect(),
        Level::Seq => seqs.iter().filter_map(|&s| v.get(s).copied()).collect(),
        Level::Group => groups.iter().filter_map(|&g| v.get(g).copied()).collect(),
        Level::Batch => v.to_vec(),
    }
}

fn range(offs: &[usize], s: usize) -> (usize, usize) {
    let a = offs.get(s).copied().unwrap_or(0);
    let b = offs.get(s + 1).copied().unwrap_or(a);
    (a, b.max(a))
}
