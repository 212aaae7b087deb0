//! Micro-batch exactness: one optimizer step's batch evaluated as k micro-batches (or k
//! data-parallel shards), split at sequence boundaries into parts of any sizes, with summed
//! gradients equal to the whole-batch gradient.
//!
//! [`Plan::new`] runs the compiler's split analysis (`rlo_compiler::split`: which values are
//! normalizers computed over the whole step by a pre-pass, whether the rest sums over parts) and
//! builds the modules (`split_plan.rs`);
//! [`Plan::evaluate`] runs the pre-pass, cuts the batch into parts ([`split`]), evaluates each part
//! with the normalizers fixed, and puts the parts' results together ([`merge_into`]). Objectives
//! that are not splittable get [`RuntimeError::NotSplittable`] with the explanation rendered
//! against the source.

use std::ops::Range;

use rlo_compiler::ir::Module;
use rlo_compiler::types::Level;
use rlo_compiler::{Batch, Evaluation, Layout};

use crate::split_plan::{self, Merge};
use crate::{Backend, Objective, RuntimeError};

/// `k` part sizes for `b` sequences, as equal as possible (they differ by at most one).
pub fn even_sizes(b: usize, k: usize) -> Result<Vec<usize>, RuntimeError> {
    if k == 0 || k > b {
        return Err(RuntimeError::Split(format!(
            "cannot cut B = {b} sequences into {k} micro-batches (need 1 ≤ k ≤ B)"
        )));
    }
    Ok((0..k).map(|i| b / k + usize::from(i < b % k)).collect())
}

/// One part of a batch: a run of consecutive sequences.
#[derive(Clone, Debug, PartialEq)]
pub struct Part {
    /// The part as a batch of its own (groups renumbered `0..` in order of their global index).
    pub batch: Batch,
    /// Its sequences in the whole batch.
    pub seqs: Range<usize>,
    /// `groups[g]` is the whole-batch index of the part's group `g`.
    pub groups: Vec<u32>,
}

/// Cuts `batch` into consecutive parts of `sizes` sequences each (sizes must sum to B; a part may
/// not be empty). A group may be cut across parts.
pub fn split(module: &Module, batch: &Batch, sizes: &[usize]) -> Result<Vec<Part>, RuntimeError> {
    let b = batch.layout.n_seqs();
    if sizes.contains(&0) || sizes.iter().sum::<usize>() != b {
        return Err(RuntimeError::Split(format!(
            "micro-batch sizes {sizes:?} must be positive and sum to B = {b}"
        )));
    }
    let mut parts = Vec::with_capacity(sizes.len());
    let mut start = 0;
    for &n in sizes {
        parts.push(part(module, batch, start..start + n)?);
        start += n;
    }
    Ok(parts)
}

fn part(module: &Module, batch: &Batch, seqs: Range<usize>) -> Result<Part, RuntimeError> {
    let l = &batch.layout;
    let (a, e) = (seqs.start, seqs.end);
    let tok = l.seq_offsets[a]..l.seq_offsets[e];
    let turn = l.turn_offsets[a]..l.turn_offsets[e];
    let mut groups: Vec<u32> = l.seq_group[a..e].to_vec();
    groups.sort_unstable();
    groups.dedup();
    let local = |g: u32| groups.binary_search(&g).unwrap_or(0) as u32;
    let layout = Layout {
        seq_offsets: l.seq_offsets[a..=e].iter().map(|o| o - tok.start).collect(),
        turn_offsets: l.turn_offsets[a..=e]
            .iter()
            .map(|o| o - turn.start)
            .collect(),
        tok_turn: l.tok_turn[tok.clone()]
            .iter()
            .map(|&k| k - turn.start as u32)
            .collect(),
        seq_group: l.seq_group[a..e].iter().map(|&g| local(g)).collect(),
        n_groups: groups.len(),
    };
    let mut values = std::collections::BTreeMap::new();
    for input in &module.inputs {
        let Some(v) = batch.values.get(&input.name) else {
            continue;
        };
        let slice: Vec<f64> = match input.ty.level {
            Level::Tok => v[tok.clone()].to_vec(),
            Level::Turn => v[turn.clone()].to_vec(),
            Level::Seq => v[a..e].to_vec(),
            Level::Group => groups
                .iter()
                .map(|&g| v.get(g as usize).copied().unwrap_or(0.0))
                .collect(),
            Level::Batch => v.clone(),
        };
        values.insert(input.name.clone(), slice);
    }
    layout
        .validate()
        .map_err(|m| RuntimeError::Split(format!("part {a}..{e}: {m}")))?;
    Ok(Part {
        batch: Batch { layout, values },
        seqs,
        groups,
    })
}

/// Combines the packed values `v` of a part, at `level`, into the whole-batch vector `acc`:
/// `Place` writes each element (tok/turn/seq in the part's range, group at its global index,
/// batch the scalar), `Sum` adds.
pub fn merge_into(
    acc: &mut [f64],
    v: &[f64],
    level: Level,
    how: Merge,
    whole: &Layout,
    part: &Part,
) -> Result<(), RuntimeError> {
    let (a, e) = (part.seqs.start, part.seqs.end);
    let start = match level {
        Level::Tok => whole.seq_offsets[a],
        Level::Turn => whole.turn_offsets[a],
        Level::Seq => a,
        Level::Group | Level::Batch => 0,
    };
    let want = match level {
        Level::Tok => whole.seq_offsets[e] - start,
        Level::Turn => whole.turn_offsets[e] - start,
        Level::Seq => e - a,
        Level::Group => part.groups.len(),
        Level::Batch => 1,
    };
    if v.len() != want {
        return Err(RuntimeError::ResultShape {
            name: format!("micro-batch {a}..{e} ({level} values)"),
            expected: want,
            got: v.len(),
        });
    }
    for (i, &x) in v.iter().enumerate() {
        let dst = match level {
            Level::Group => part.groups[i] as usize,
            _ => start + i,
        };
        if let Some(slot) = acc.get_mut(dst) {
            match how {
                Merge::Sum => *slot += x,
                Merge::Place | Merge::Whole => *slot = x,
            }
        }
    }
    Ok(())
}

/// A micro-batch plan for one objective: build once, evaluate every step.
pub struct Plan {
    /// Normalizers computed by the pre-pass (the analysis' `prepass` nodes).
    pub frozen: Vec<rlo_compiler::Handle<rlo_compiler::ir::Expr>>,
    /// How each gradient, metric and output combines over parts.
    pub grads: Vec<Merge>,
    pub metrics: Vec<Merge>,
    pub outputs: Vec<Merge>,
    /// Computes the normalizers (as outputs, in `frozen` order) on the whole step.
    prepass: Option<Objective>,
    /// What each part runs (normalizers as `__frozen.<node>` inputs).
    part: Objective,
    /// Forward-only evaluation of the metrics/outputs that do not combine over parts.
    whole: Option<Objective>,
    /// The original module (result layout).
    module: rlo_compiler::ir::Module,
}

impl Plan {
    /// Analyzes `obj`; `Err(NotSplittable)` carries the explanation rendered with source spans.
    pub fn new(obj: &Objective) -> Result<Plan, RuntimeError> {
        let c = &obj.compiled;
        let m = &c.module;
        let sp = rlo_compiler::split::analyze(m);
        if let Some(d) = split_plan::refusal(m, &sp) {
            return Err(RuntimeError::NotSplittable {
                objective: m.name.clone(),
                explanation: d.render(&c.sources, false),
            });
        }
        let frozen = sp.prepass;
        let grads: Vec<Merge> = m
            .grads
            .iter()
            .map(|g| split_plan::grad_merge(split_plan::input_level(m, g.input)))
            .collect();
        let metrics: Vec<Merge> = sp.metrics.into_iter().map(Merge::of).collect();
        let outputs: Vec<Merge> = sp.outputs.into_iter().map(Merge::of).collect();
        let prepass = (!frozen.is_empty()).then(|| {
            let roots = frozen
                .iter()
                .map(|&h| rlo_compiler::ir::Named {
                    name: split_plan::frozen_name(h),
                    value: h,
                    span: m.span(h),
                })
                .collect();
            Objective {
                compiled: split_plan::recompiled(c, split_plan::roots_module(m, roots)),
            }
        });
        let whole_roots: Vec<_> = m
            .metrics
            .iter()
            .zip(&metrics)
            .chain(m.outputs.iter().zip(&outputs))
            .filter(|(_, &how)| how == Merge::Whole)
            .map(|(x, _)| x.clone())
            .collect();
        let whole = (!whole_roots.is_empty()).then(|| Objective {
            compiled: split_plan::recompiled(c, split_plan::roots_module(m, whole_roots)),
        });
        let part = Objective {
            compiled: split_plan::recompiled(c, split_plan::part_module(m, &frozen)),
        };
        Ok(Plan {
            frozen,
            grads,
            metrics,
            outputs,
            prepass,
            part,
            whole,
            module: m.clone(),
        })
    }

    /// Evaluates `batch` as parts of `sizes` consecutive sequences (any sizes summing to B).
    pub fn evaluate(
        &self,
        batch: &Batch,
        params: &[f64],
        backend: Backend,
        sizes: &[usize],
    ) -> Result<Evaluation, RuntimeError> {
        let m = &self.module;
        let layout = &batch.layout;
        let mut augmented = batch.clone();
        if let Some(pre) = &self.prepass {
            // The pre-pass sees only non-diff inputs: diff inputs are zeroed.
            let mut nondiff = batch.clone();
            for input in m.inputs.iter().filter(|i| i.diff) {
                if let Some(v) = nondiff.values.get_mut(&input.name) {
                    v.iter_mut().for_each(|x| *x = 0.0);
                }
            }
            let r = pre.evaluate(&nondiff, params, backend)?;
            for (&h, v) in self.frozen.iter().zip(r.outputs) {
                augmented.values.insert(split_plan::frozen_name(h), v);
            }
        }
        let parts = split(&self.part.compiled.module, &augmented, sizes)?;
        let zeros = |l: Level| vec![0.0; layout.count(l)];
        let mut out = Evaluation {
            loss: 0.0,
            grads: m
                .grads
                .iter()
                .map(|g| zeros(split_plan::input_level(m, g.input)))
                .collect(),
            metrics: vec![0.0; m.metrics.len()],
            outputs: m.outputs.iter().map(|o| zeros(m.level(o.value))).collect(),
        };
        for p in &parts {
            let r = self.part.evaluate(&p.batch, params, backend)?;
            out.loss += r.loss;
            for ((g, acc), (v, &how)) in m
                .grads
                .iter()
                .zip(&mut out.grads)
                .zip(r.grads.iter().zip(&self.grads))
            {
                merge_into(acc, v, split_plan::input_level(m, g.input), how, layout, p)?;
            }
            for (i, &how) in self.metrics.iter().enumerate() {
                let v = r.metrics.get(i).copied().unwrap_or(0.0);
                match how {
                    Merge::Sum => out.metrics[i] += v,
                    Merge::Place => out.metrics[i] = v,
                    Merge::Whole => {}
                }
            }
            for (i, &how) in self.outputs.iter().enumerate() {
                if how != Merge::Whole {
                    let level = m.level(m.outputs[i].value);
                    let v = r.outputs.get(i).map(|v| &v[..]).unwrap_or(&[]);
                    merge_into(&mut out.outputs[i], v, level, how, layout, p)?;
                }
            }
        }
        if let Some(whole) = &self.whole {
            let r = whole.evaluate(batch, params, backend)?;
            let mut it = r.outputs.into_iter();
            for (i, &how) in self.metrics.iter().enumerate() {
                if how == Merge::Whole {
                    out.metrics[i] = it.next().and_then(|v| v.first().copied()).unwrap_or(0.0);
                }
            }
            for (i, &how) in self.outputs.iter().enumerate() {
                if how == Merge::Whole {
                    out.outputs[i] = it.next().unwrap_or_default();
                }
            }
        }
        Ok(out)
    }
}

/// Evaluates `batch` as parts of `sizes` sequences and combines the parts' results
/// (see [`Plan`]; build the plan once when evaluating many steps).
pub fn evaluate(
    obj: &Objective,
    batch: &Batch,
    params: &[f64],
    backend: Backend,
    sizes: &[usize],
) -> Result<Evaluation, RuntimeError> {
    Plan::new(obj)?.evaluate(batch, params, backend, sizes)
}
