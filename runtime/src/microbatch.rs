//! Micro-batch exactness: one optimizer step's batch evaluated as k micro-batches (or k
//! data-parallel shards), split at sequence boundaries into parts of any sizes, with summed
//! gradients equal to the whole-batch gradient.
//!
//! This file holds the batch side: cutting a [`Batch`] into parts ([`split`]) and putting the
//! parts' results back together ([`merge_into`]). The exactness itself comes from the compiler's
//! split analysis (see [`evaluate`]).

use std::ops::Range;

use rlo_compiler::ir::Module;
use rlo_compiler::types::Level;
use rlo_compiler::{Batch, Layout};

use crate::RuntimeError;

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

/// Adds the packed values `v` of a part, at `level`, into the whole-batch vector `acc`:
/// `tok`/`turn`/`seq` values land in the part's range, `group` values at their global group,
/// `batch` values are summed.
pub fn merge_into(
    acc: &mut [f64],
    v: &[f64],
    level: Level,
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
            *slot += x;
        }
    }
    Ok(())
}

/// Evaluates `batch` as parts of `sizes` sequences and sums the parts' results.
pub fn evaluate(
    obj: &crate::Objective,
    batch: &Batch,
    params: &[f64],
    backend: crate::Backend,
    sizes: &[usize],
) -> Result<rlo_compiler::Evaluation, RuntimeError> {
    let _ = (obj, batch, params, backend, sizes);
    Err(RuntimeError::Unsupported(
        "micro-batching needs the compiler's split analysis, which has not landed yet".into(),
    ))
}
