//! Data-parallel evaluation: each rank holds whole groups of the step's batch; the batch-level
//! normalizers (token counts, batch means of rewards, the longest sequence, …) are exchanged as
//! a few numbers through the caller's all-reduce, and every rank then gets exactly its share of
//! the whole-batch loss and exactly the whole-batch gradient of its own tokens.
//!
//! This is the bug class of verl/TRL/Megatron where each rank normalizes by its *own* token
//! count: here the objective's normalizers are found by the compiler, not by hand.
//!
//! # How it works
//! The split analysis (`rlo_compiler::split`, also used for micro-batches) proves the loss is a
//! sum over sequences of values that depend on `diff` inputs only within their sequence (or
//! group), scaled by *known* values (which depend only on non-diff inputs). The known values
//! that cross sequences are group-level (computed locally: groups are whole on a rank) or
//! batch-level reductions — the **leaves**. A leaf's whole-batch value is the all-reduce (sum,
//! or max/min with an element count so that ranks without elements do not count) of the
//! rank-local values. Leaves can nest (a batch std needs the batch mean first): leaves of depth
//! `r` are computed in **round** `r` from the global values of the rounds before.
//! Batch-level quantiles and ranks need the whole batch on one rank and are refused.
//!
//! ```text
//! let plan = ShardPlan::new(&objective)?;
//! let mut global = plan.global();
//! for round in 0..plan.rounds() {
//!     let local = plan.local_stats(round, &shard, &params, backend, &global)?;
//!     let reduced = /* all-reduce: local.sums with SUM, local.maxes with MAX */;
//!     plan.absorb(round, &mut global, &reduced)?;
//! }
//! let ev = plan.evaluate(&shard, &params, backend, &global)?;
//! // ev.loss: this rank's share (Σ over ranks = whole-batch loss); ev.grads: exact for the
//! // shard's elements; metrics with `metric_merge()[i] == RankMerge::Sum`: all-reduce SUM them
//! // (Max/Min: MAX/MIN; Same: every rank has the whole-batch value already).
//! ```
//! The contract a caller keeps: ranks hold disjoint sets of *whole groups* (GRPO's G samples of
//! a prompt on one rank), and run the same rounds with the same parameters.

use crate::split_plan;
use crate::{Backend, Batch, Evaluation, Objective, RuntimeError};
use rlo_compiler::arena::Handle;
use rlo_compiler::ir::{Expr, Module, Named, ReduceOp};
use rlo_compiler::split::Combine;
use rlo_compiler::types::{DType, Level, Ty};
use rlo_grammar::{Diagnostic, Span};

/// How the ranks' values of a metric or output give the whole-batch value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RankMerge {
    /// Add the ranks' values (all-reduce SUM).
    Sum,
    /// Every rank already has the whole-batch value (it depends only on normalizers, or on
    /// batch reductions all-reduced in the rounds for this metric).
    Same,
    /// One value per element of the rank's shard (level ≤ group).
    Place,
    /// The largest of the ranks' values (all-reduce MAX); a rank without elements reports
    /// `-inf`, and `-inf` after the all-reduce means the whole batch had none: the value is 0.
    Max,
    /// The smallest (all-reduce MIN), `+inf` for a rank without elements, likewise.
    Min,
    /// Not computable from the ranks (a batch quantile or rank of policy-dependent values):
    /// NaN. (Other metrics that are not sums or extrema — a batch std of policy values, a
    /// ratio of their sums — are [`RankMerge::Same`]: their batch reductions are all-reduced.)
    Unavailable,
}

type H = Handle<Expr>;

/// A batch-level reduction of known values: all-reduced across ranks.
#[derive(Clone, Debug)]
struct Leaf {
    node: H,
    op: ReduceOp,
}

/// One round: the leaves it computes, as outputs of a forward-only objective.
struct Round {
    /// Indices into `ShardPlan::leaves`.
    leaves: Vec<usize>,
    /// Outputs: each leaf's local value, then (for max/min leaves, in order) its element count.
    obj: Objective,
}

/// A data-parallel plan for one objective (see the module docs).
pub struct ShardPlan {
    leaves: Vec<Leaf>,
    rounds: Vec<Round>,
    /// The objective with every leaf read from a `__frozen.<node>` input, and the element
    /// count of every max/min metric appended to its metrics.
    part: Objective,
    /// Metrics the part module really has (the rest are appended counts).
    n_metrics: usize,
    metric_merge: Vec<RankMerge>,
    output_merge: Vec<RankMerge>,
    /// The original module (result shapes for [`ShardPlan::evaluate_ranks`]).
    module: Module,
}

/// The rank-local statistics of one round, to be all-reduced: `sums` with SUM, `maxes` with MAX
/// (minima are stored negated; a rank without elements contributes `-inf`).
#[derive(Clone, Debug, PartialEq)]
pub struct ShardStats {
    pub sums: Vec<f64>,
    pub maxes: Vec<f64>,
}

impl ShardStats {
    /// The all-reduce of several ranks' statistics (for one process playing every rank, and
    /// for tests; a distributed caller uses its own collective).
    pub fn all_reduce(parts: &[ShardStats]) -> Result<ShardStats, RuntimeError> {
        let first = parts
            .first()
            .ok_or_else(|| RuntimeError::Split("all-reduce of no ranks".into()))?;
        let mut out = first.clone();
        for p in &parts[1..] {
            if p.sums.len() != out.sums.len() || p.maxes.len() != out.maxes.len() {
                return Err(RuntimeError::Split(
                    "ranks sent statistics of different rounds or objectives".into(),
                ));
            }
            out.sums.iter_mut().zip(&p.sums).for_each(|(a, b)| *a += b);
            out.maxes
                .iter_mut()
                .zip(&p.maxes)
                .for_each(|(a, b)| *a = a.max(*b));
        }
        Ok(out)
    }
}

/// The whole-batch values of the leaves known so far (filled round by round).
#[derive(Clone, Debug, PartialEq)]
pub struct Global {
    values: Vec<Option<f64>>,
}

impl ShardPlan {
    /// Analyzes `obj`. Errors: not splittable (the compiler's explanation with source spans),
    /// or a normalizer that needs the whole batch on one rank (a batch quantile or rank).
    pub fn new(obj: &Objective) -> Result<ShardPlan, RuntimeError> {
        let c = &obj.compiled;
        let m = &c.module;
        let sp = rlo_compiler::split::analyze_shards(m);
        let refuse = |span: Span, why: String| RuntimeError::NotShardable {
            objective: m.name.clone(),
            explanation: Diagnostic::error(
                "E0902",
                format!(
                    "objective `{}` cannot be evaluated data-parallel exactly",
                    m.name
                ),
            )
            .with_primary(span, why)
            .with_note(
                "ranks hold whole groups; across groups, values that depend on a `diff` input \
                 may only be summed and scaled by values of non-diff inputs",
            )
            .render(&c.sources, false),
        };
        if let Some((span, why)) = sp.reason.clone().filter(|_| !sp.splittable) {
            return Err(refuse(span, why));
        }
        let mut leaves = Vec::new();
        for &h in &sp.prepass {
            match m.exprs.get(h) {
                Some(&Expr::Reduce {
                    op,
                    to: Level::Batch,
                    ..
                }) => leaves.push(Leaf { node: h, op }),
                Some(Expr::Quantile {
                    to: Level::Batch, ..
                })
                | Some(Expr::Rank {
                    within: Level::Batch,
                    ..
                }) => {
                    return Err(refuse(
                        m.span(h),
                        "a quantile or rank over the whole batch needs every sequence on one \
                         rank (use a group-level statistic, or evaluate on one rank)"
                            .into(),
                    ));
                }
                _ => {}
            }
        }
        // metrics that do not combine over ranks (a std or a ratio of diff-dependent sums, a
        // function of a max, ...): their batch reductions become leaves too, so every rank
        // computes the whole-batch metric from the all-reduced values
        let mut metric_merge_of: Vec<Option<RankMerge>> = vec![None; m.metrics.len()];
        let mut lifted_module = m.clone();
        let lifted = lift_metrics(&mut lifted_module, &sp);
        // from here on, the module whose lifted metrics read copies of their nodes
        let m = &lifted_module;
        for (i, new) in lifted {
            for l in new {
                if !leaves.iter().any(|x| x.node == l.node) {
                    leaves.push(l);
                }
            }
            if let Some(slot) = metric_merge_of.get_mut(i) {
                *slot = Some(RankMerge::Same);
            }
        }
        let depth = leaf_depths(m, &leaves);
        let n_rounds = depth.iter().map(|d| d + 1).max().unwrap_or(0);
        let mut rounds = Vec::new();
        for r in 0..n_rounds {
            let earlier: Vec<H> = leaves
                .iter()
                .zip(&depth)
                .filter(|(_, &d)| d < r)
                .map(|(l, _)| l.node)
                .collect();
            let now: Vec<usize> = (0..leaves.len()).filter(|&i| depth[i] == r).collect();
            let module = round_module(m, &earlier, now.iter().map(|&i| &leaves[i]));
            rounds.push(Round {
                leaves: now,
                obj: Objective {
                    compiled: split_plan::recompiled(c, module),
                },
            });
        }
        let all: Vec<H> = leaves.iter().map(|l| l.node).collect();
        let metric_merge: Vec<RankMerge> = sp
            .metrics
            .iter()
            .zip(&sp.metric_extrema)
            .zip(&metric_merge_of)
            .map(|((&how, ext), lifted)| match (how, ext) {
                _ if lifted.is_some() => RankMerge::Same,
                (Combine::Sum, _) => RankMerge::Sum,
                (Combine::Whole, _) => RankMerge::Same,
                (Combine::PerElement, _) => RankMerge::Place,
                (Combine::Unavailable, Some(ReduceOp::Max)) => RankMerge::Max,
                (Combine::Unavailable, Some(ReduceOp::Min)) => RankMerge::Min,
                (Combine::Unavailable, _) => RankMerge::Unavailable,
            })
            .collect();
        let output_merge = sp
            .outputs
            .iter()
            .map(|&how| match how {
                Combine::Sum => RankMerge::Sum,
                Combine::Whole => RankMerge::Same,
                Combine::PerElement => RankMerge::Place,
                Combine::Unavailable => RankMerge::Unavailable,
            })
            .collect();
        let mut part = split_plan::part_module(m, &all);
        let n_metrics = part.metrics.len();
        for (i, how) in metric_merge.iter().enumerate() {
            if matches!(how, RankMerge::Max | RankMerge::Min) {
                if let Some(n) = count_node(&mut part, m.metrics[i].value) {
                    part.metrics.push(Named {
                        name: format!("__count.{i}"),
                        value: n,
                        span: m.metrics[i].span,
                    });
                }
            }
        }
        Ok(ShardPlan {
            part: Objective {
                compiled: split_plan::recompiled(c, part),
            },
            n_metrics,
            metric_merge,
            output_merge,
            leaves,
            rounds,
            module: m.clone(),
        })
    }

    /// Number of all-reduce rounds a step needs (0 when nothing is batch-level).
    pub fn rounds(&self) -> usize {
        self.rounds.len()
    }

    /// How each metric combines over ranks (see [`RankMerge`]).
    pub fn metric_merge(&self) -> &[RankMerge] {
        &self.metric_merge
    }

    /// How each output combines over ranks.
    pub fn output_merge(&self) -> &[RankMerge] {
        &self.output_merge
    }

    /// The whole-batch metrics from every rank's metrics (what a distributed caller does with
    /// one all-reduce per [`RankMerge`] kind).
    pub fn combine_metrics(&self, per_rank: &[Vec<f64>]) -> Vec<f64> {
        self.metric_merge
            .iter()
            .enumerate()
            .map(|(i, how)| {
                let mut vals = per_rank.iter().filter_map(|v| v.get(i).copied());
                let or_zero = |x: f64| if x.is_infinite() { 0.0 } else { x };
                match how {
                    RankMerge::Sum => vals.sum(),
                    RankMerge::Same | RankMerge::Place => vals.next().unwrap_or(0.0),
                    RankMerge::Max => or_zero(vals.fold(f64::NEG_INFINITY, f64::max)),
                    RankMerge::Min => or_zero(vals.fold(f64::INFINITY, f64::min)),
                    RankMerge::Unavailable => f64::NAN,
                }
            })
            .collect()
    }

    /// Empty global values, before round 0.
    pub fn global(&self) -> Global {
        Global {
            values: vec![None; self.leaves.len()],
        }
    }

    /// This rank's statistics for `round`, from its shard and the global values of the rounds
    /// before.
    pub fn local_stats(
        &self,
        round: usize,
        shard: &Batch,
        params: &[f64],
        backend: Backend,
        global: &Global,
    ) -> Result<ShardStats, RuntimeError> {
        let r = self.round(round)?;
        let batch = self.frozen_for(&r.obj, shard, global)?;
        let ev = r.obj.evaluate(&batch, params, backend)?;
        let value = |k: usize| ev.outputs.get(k).and_then(|v| v.first().copied());
        let mut out = ShardStats {
            sums: Vec::new(),
            maxes: Vec::new(),
        };
        let mut counted = r.leaves.len();
        for (k, &i) in r.leaves.iter().enumerate() {
            let v = value(k).ok_or_else(|| RuntimeError::Split("missing statistic".into()))?;
            match self.leaves[i].op {
                ReduceOp::Sum => out.sums.push(v),
                op @ (ReduceOp::Max | ReduceOp::Min) => {
                    let n = value(counted)
                        .ok_or_else(|| RuntimeError::Split("missing count".into()))?;
                    counted += 1;
                    let v = if op == ReduceOp::Min { -v } else { v };
                    out.maxes.push(if n > 0.0 { v } else { f64::NEG_INFINITY });
                    out.sums.push(n);
                }
            }
        }
        Ok(out)
    }

    /// Records the all-reduced statistics of `round` in `global`.
    pub fn absorb(
        &self,
        round: usize,
        global: &mut Global,
        reduced: &ShardStats,
    ) -> Result<(), RuntimeError> {
        let r = self.round(round)?;
        let (mut s, mut x) = (reduced.sums.iter(), reduced.maxes.iter());
        let short =
            || RuntimeError::Split("all-reduced statistics are shorter than the round's".into());
        for &i in &r.leaves {
            let v = match self.leaves[i].op {
                ReduceOp::Sum => *s.next().ok_or_else(short)?,
                op @ (ReduceOp::Max | ReduceOp::Min) => {
                    let m = *x.next().ok_or_else(short)?;
                    let n = *s.next().ok_or_else(short)?;
                    match (n > 0.0, op) {
                        (false, _) => 0.0, // max/min of an empty set (spec §6.7)
                        (true, ReduceOp::Min) => -m,
                        (true, _) => m,
                    }
                }
            };
            if let Some(slot) = global.values.get_mut(i) {
                *slot = Some(v);
            }
        }
        if s.next().is_some() || x.next().is_some() {
            return Err(RuntimeError::Split(
                "all-reduced statistics are longer than the round's".into(),
            ));
        }
        Ok(())
    }

    /// This rank's loss share, the exact gradients of its elements, its metrics (see
    /// [`ShardPlan::metric_merge`]) and outputs, once every round is absorbed.
    pub fn evaluate(
        &self,
        shard: &Batch,
        params: &[f64],
        backend: Backend,
        global: &Global,
    ) -> Result<Evaluation, RuntimeError> {
        if global.values.iter().any(Option::is_none) {
            return Err(RuntimeError::Split(
                "data-parallel evaluation before every statistics round was absorbed".into(),
            ));
        }
        let batch = self.frozen_for(&self.part, shard, global)?;
        let mut ev = self.part.evaluate(&batch, params, backend)?;
        // Max/min metrics of a rank without elements: the identity of the all-reduce.
        let split = self.n_metrics.min(ev.metrics.len());
        let mut counts = ev.metrics.split_off(split).into_iter();
        for (x, how) in ev.metrics.iter_mut().zip(&self.metric_merge) {
            match how {
                RankMerge::Max | RankMerge::Min => {
                    if counts.next().unwrap_or(0.0) == 0.0 {
                        *x = if *how == RankMerge::Max {
                            f64::NEG_INFINITY
                        } else {
                            f64::INFINITY
                        };
                    }
                }
                RankMerge::Unavailable => *x = f64::NAN,
                RankMerge::Sum | RankMerge::Same | RankMerge::Place => {}
            }
        }
        for (o, how) in ev.outputs.iter_mut().zip(&self.output_merge) {
            if *how == RankMerge::Unavailable {
                o.iter_mut().for_each(|x| *x = f64::NAN);
            }
        }
        Ok(ev)
    }

    /// Every rank of a step in one process (each shard a batch of whole groups): the rounds
    /// with an in-process all-reduce, then each shard's evaluation.
    pub fn evaluate_shards(
        &self,
        shards: &[Batch],
        params: &[f64],
        backend: Backend,
    ) -> Result<Vec<Evaluation>, RuntimeError> {
        let mut global = self.global();
        for r in 0..self.rounds() {
            let local = shards
                .iter()
                .map(|s| self.local_stats(r, s, params, backend, &global))
                .collect::<Result<Vec<_>, _>>()?;
            self.absorb(r, &mut global, &ShardStats::all_reduce(&local)?)?;
        }
        shards
            .iter()
            .map(|s| self.evaluate(s, params, backend, &global))
            .collect()
    }

    /// `k` ranks simulated in one process: group `g` goes to rank `g mod k`; the ranks' results
    /// are gathered into one whole-batch evaluation (equal to the whole-batch evaluation to
    /// float rounding; `rloc run --ranks k` prints it).
    pub fn evaluate_ranks(
        &self,
        batch: &Batch,
        params: &[f64],
        backend: Backend,
        k: usize,
    ) -> Result<Evaluation, RuntimeError> {
        let m = &self.module;
        let l = &batch.layout;
        if k == 0 {
            return Err(RuntimeError::Split("--ranks must be at least 1".into()));
        }
        let subs: Vec<_> = (0..k)
            .map(|r| {
                let seqs: Vec<usize> = (0..l.n_seqs())
                    .filter(|&s| l.seq_group[s] as usize % k == r)
                    .collect();
                rlo_compiler::split::sub_batch(m, batch, &seqs)
            })
            .collect();
        let shards: Vec<Batch> = subs.iter().map(|s| s.batch.clone()).collect();
        let evs = self.evaluate_shards(&shards, params, backend)?;
        let per_rank: Vec<Vec<f64>> = evs.iter().map(|e| e.metrics.clone()).collect();
        let zeros = |level: Level| vec![0.0; l.count(level)];
        let mut out = Evaluation {
            loss: evs.iter().map(|e| e.loss).sum(),
            grads: m
                .grads
                .iter()
                .map(|g| zeros(split_plan::input_level(m, g.input)))
                .collect(),
            metrics: self.combine_metrics(&per_rank),
            outputs: m.outputs.iter().map(|o| zeros(m.level(o.value))).collect(),
        };
        for (sub, ev) in subs.iter().zip(&evs) {
            // Whole-batch index of each element of this rank's shard, per level.
            let index = |level: Level| -> Vec<usize> {
                match level {
                    Level::Tok => sub
                        .seqs
                        .iter()
                        .flat_map(|&s| l.seq_offsets[s]..l.seq_offsets[s + 1])
                        .collect(),
                    Level::Turn => sub
                        .seqs
                        .iter()
                        .flat_map(|&s| l.turn_offsets[s]..l.turn_offsets[s + 1])
                        .collect(),
                    Level::Seq => sub.seqs.clone(),
                    Level::Group => sub.groups.clone(),
                    Level::Batch => vec![0],
                }
            };
            let place = |acc: &mut [f64], v: &[f64], level: Level, add: bool| {
                let idx = index(level);
                if idx.len() != v.len() {
                    return Err(RuntimeError::ResultShape {
                        name: format!("rank result ({level} values)"),
                        expected: idx.len(),
                        got: v.len(),
                    });
                }
                for (&i, &x) in idx.iter().zip(v) {
                    if let Some(slot) = acc.get_mut(i) {
                        *slot = if add { *slot + x } else { x };
                    }
                }
                Ok(())
            };
            for ((g, acc), v) in m.grads.iter().zip(&mut out.grads).zip(&ev.grads) {
                place(acc, v, split_plan::input_level(m, g.input), false)?;
            }
            for (((o, acc), v), how) in m
                .outputs
                .iter()
                .zip(&mut out.outputs)
                .zip(&ev.outputs)
                .zip(&self.output_merge)
            {
                let level = m.level(o.value);
                match how {
                    RankMerge::Place => place(acc, v, level, false)?,
                    RankMerge::Sum => place(acc, v, level, true)?,
                    RankMerge::Same | RankMerge::Max | RankMerge::Min => acc.clone_from(v),
                    RankMerge::Unavailable => acc.iter_mut().for_each(|x| *x = f64::NAN),
                }
            }
        }
        Ok(out)
    }

    fn round(&self, round: usize) -> Result<&Round, RuntimeError> {
        self.rounds.get(round).ok_or_else(|| {
            RuntimeError::Split(format!(
                "statistics round {round} of {} (rounds are numbered from 0)",
                self.rounds.len()
            ))
        })
    }

    /// `shard` with the `__frozen.<leaf>` inputs that `obj` declares, from `global`.
    fn frozen_for(
        &self,
        obj: &Objective,
        shard: &Batch,
        global: &Global,
    ) -> Result<Batch, RuntimeError> {
        let mut b = shard.clone();
        for input in &obj.compiled.module.inputs {
            let Some(i) = self
                .leaves
                .iter()
                .position(|l| split_plan::frozen_name(l.node) == input.name)
            else {
                continue;
            };
            let v = global
                .values
                .get(i)
                .copied()
                .flatten()
                .ok_or_else(|| RuntimeError::Split("a statistics round was skipped".into()))?;
            b.values.insert(input.name.clone(), vec![v]);
        }
        Ok(b)
    }
}

/// The metrics that do not combine over ranks (`Combine::Unavailable`, not a plain max/min)
/// but can be computed on every rank once their batch-level reductions are all-reduced: each
/// such metric's index and its batch reductions, the new leaves. The metric's nodes are first
/// copied (appended to `m`, the metric pointed at the copies), so that freezing them touches
/// no other root: the loss, gradients, outputs and other metrics keep their own nodes (a
/// `batch_std(ratio)` and a summed `batch_mean(ratio)` share `batch_sum(ratio)`). Not when the
/// metric reads a batch quantile or rank (the whole batch on one rank): it stays
/// [`RankMerge::Unavailable`].
fn lift_metrics(
    m: &mut Module,
    sp: &rlo_compiler::split::Splittability,
) -> Vec<(usize, Vec<Leaf>)> {
    let mut out = Vec::new();
    for i in 0..m.metrics.len() {
        let unavailable = sp.metrics.get(i) == Some(&Combine::Unavailable)
            && sp.metric_extrema.get(i).is_some_and(Option::is_none);
        if !unavailable {
            continue;
        }
        let root = m.metrics[i].value;
        let mine = rlo_compiler::schedule::needed_from(m, [root]);
        let whole_batch = m.exprs.iter().any(|(h, e)| {
            mine.get(h.index()).copied().unwrap_or(false)
                && matches!(
                    e,
                    Expr::Quantile {
                        to: Level::Batch,
                        ..
                    } | Expr::Rank {
                        within: Level::Batch,
                        ..
                    }
                )
        });
        if whole_batch {
            continue;
        }
        // copy the metric's cone, operands first
        let n = m.exprs.len();
        let mut copy: Vec<Option<H>> = vec![None; n];
        let mut leaves = Vec::new();
        for j in 0..n {
            if !mine.get(j).copied().unwrap_or(false) {
                continue;
            }
            let h = H::from_index(j);
            let e =
                m.exprs[h].map_operands(|o| copy.get(o.index()).copied().flatten().unwrap_or(o));
            let (ty, span) = (m.ty(h), m.span(h));
            let nh = m.append(e.clone(), ty, span);
            if let Expr::Reduce {
                op,
                to: Level::Batch,
                ..
            } = e
            {
                leaves.push(Leaf { node: nh, op });
            }
            if let Some(slot) = copy.get_mut(j) {
                *slot = Some(nh);
            }
        }
        if let Some(c) = copy.get(root.index()).copied().flatten() {
            m.metrics[i].value = c;
            out.push((i, leaves));
        }
    }
    out
}

/// Round of each leaf: 0 if no other leaf is below it, else one more than the deepest below.
fn leaf_depths(m: &Module, leaves: &[Leaf]) -> Vec<usize> {
    // Per node: the depth of the deepest leaf at or below it, plus one (0 = no leaf below).
    let mut below = vec![0usize; m.exprs.len()];
    let mut out = vec![0; leaves.len()];
    for (h, e) in m.exprs.iter() {
        let mut d = 0;
        e.for_each_operand(|o| d = d.max(below.get(o.index()).copied().unwrap_or(0)));
        if let Some(i) = leaves.iter().position(|l| l.node == h) {
            out[i] = d;
            d += 1;
        }
        below[h.index()] = d;
    }
    out
}

/// Appends to `m` the number of elements the max/min reduction `h` keeps (a filtered count at
/// its argument's level); `None` if `h` is not a reduction.
fn count_node(m: &mut Module, h: H) -> Option<H> {
    let Some(&Expr::Reduce {
        arg, filter, to, ..
    }) = m.exprs.get(h)
    else {
        return None;
    };
    let span = m.span(h);
    let f32_at = |level| Ty::new(level, DType::F32);
    let one = m.append(Expr::Const(1.0), f32_at(Level::Batch), span);
    let level = m.level(arg);
    let ones = if level == Level::Batch {
        one
    } else {
        m.append(
            Expr::Broadcast {
                arg: one,
                to: level,
            },
            f32_at(level),
            span,
        )
    };
    Some(m.append(
        Expr::Reduce {
            op: ReduceOp::Sum,
            arg: ones,
            to,
            filter,
        },
        f32_at(to),
        span,
    ))
}

/// A forward-only module whose outputs are the local values of `leaves`, then the element
/// count of each max/min leaf; the leaves of earlier rounds are `__frozen` inputs.
fn round_module<'a>(m: &Module, earlier: &[H], leaves: impl Iterator<Item = &'a Leaf>) -> Module {
    let base = split_plan::part_module(m, earlier);
    let leaves: Vec<&Leaf> = leaves.collect();
    let mut roots: Vec<Named> = leaves
        .iter()
        .map(|l| Named {
            name: format!("__leaf.{}", l.node.index()),
            value: l.node,
            span: m.span(l.node),
        })
        .collect();
    let mut out = split_plan::roots_module(&base, Vec::new());
    for l in leaves.iter().filter(|l| l.op != ReduceOp::Sum) {
        if let Some(n) = count_node(&mut out, l.node) {
            roots.push(Named {
                name: format!("__count.{}", l.node.index()),
                value: n,
                span: m.span(l.node),
            });
        }
    }
    out.outputs = roots;
    out
}
