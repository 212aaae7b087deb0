//! The canonical in-memory batch every backend consumes, and the result every backend returns.
//!
//! Layout is *packed*: token-level values of all sequences back to back (`seq_offsets`), turn-level
//! values likewise (`turn_offsets`), one value per sequence, per group, one per batch. Padding
//! never appears here: the runtime's binding (`rlo_runtime::bind`) turns padded `[B, T]` tensors
//! with a mask, packed tensors with offsets, groups ids in any order, into this form.

use std::collections::BTreeMap;

use crate::types::Level;

#[derive(Clone, Debug, PartialEq)]
pub struct Layout {
    /// `B + 1` non-decreasing offsets: tokens of sequence `i` are `seq_offsets[i]..seq_offsets[i+1]`.
    pub seq_offsets: Vec<usize>,
    /// `B + 1` non-decreasing offsets: turns of sequence `i` are `turn_offsets[i]..turn_offsets[i+1]`.
    /// Without turn data every sequence has exactly one turn.
    pub turn_offsets: Vec<usize>,
    /// For each packed token, its packed turn index: inside its sequence's turn range,
    /// non-decreasing along the sequence.
    pub tok_turn: Vec<u32>,
    /// For each sequence, its group index in `0..n_groups` (groups may differ in size; every group
    /// has at least one sequence).
    pub seq_group: Vec<u32>,
    pub n_groups: usize,
}

impl Layout {
    /// One turn per sequence; `lengths[i]` tokens in sequence `i`.
    pub fn single_turn(lengths: &[usize], seq_group: Vec<u32>) -> Layout {
        let mut seq_offsets = Vec::with_capacity(lengths.len() + 1);
        seq_offsets.push(0);
        let mut tok_turn = Vec::new();
        for (i, &l) in lengths.iter().enumerate() {
            let last = seq_offsets.last().copied().unwrap_or(0);
            seq_offsets.push(last + l);
            tok_turn.extend(std::iter::repeat_n(i as u32, l));
        }
        let turn_offsets = (0..=lengths.len()).collect();
        let n_groups = seq_group.iter().map(|&g| g as usize + 1).max().unwrap_or(0);
        Layout {
            seq_offsets,
            turn_offsets,
            tok_turn,
            seq_group,
            n_groups,
        }
    }

    pub fn n_seqs(&self) -> usize {
        self.seq_offsets.len().saturating_sub(1)
    }

    pub fn n_tokens(&self) -> usize {
        self.seq_offsets.last().copied().unwrap_or(0)
    }

    pub fn n_turns(&self) -> usize {
        self.turn_offsets.last().copied().unwrap_or(0)
    }

    /// Number of elements at a level.
    pub fn count(&self, level: Level) -> usize {
        match level {
            Level::Tok => self.n_tokens(),
            Level::Turn => self.n_turns(),
            Level::Seq => self.n_seqs(),
            Level::Group => self.n_groups,
            Level::Batch => 1,
        }
    }

    /// Checks every invariant stated on the fields; the message names the broken one.
    pub fn validate(&self) -> Result<(), String> {
        let b = self.n_seqs();
        if self.seq_offsets.first() != Some(&0) {
            return Err("seq_offsets must start at 0".into());
        }
        if self.turn_offsets.len() != b + 1 || self.turn_offsets.first() != Some(&0) {
            return Err(format!(
                "turn_offsets must have {} entries starting at 0",
                b + 1
            ));
        }
        let monotone = |v: &[usize]| v.windows(2).all(|w| w.first() <= w.get(1));
        if !monotone(&self.seq_offsets) {
            return Err("seq_offsets must be non-decreasing".into());
        }
        if !monotone(&self.turn_offsets) {
            return Err("turn_offsets must be non-decreasing".into());
        }
        if self.tok_turn.len() != self.n_tokens() {
            return Err(format!("tok_turn must have {} entries", self.n_tokens()));
        }
        if self.seq_group.len() != b {
            return Err(format!("seq_group must have {b} entries"));
        }
        let seqs = self
            .seq_offsets
            .windows(2)
            .zip(self.turn_offsets.windows(2));
        for (s, (toks, turns)) in seqs.enumerate() {
            let (&[t0, t1], &[k0, k1]) = (toks, turns) else {
                continue;
            };
            let mut prev = k0;
            for &k in self.tok_turn.get(t0..t1).unwrap_or(&[]) {
                let k = k as usize;
                if k < prev || k >= k1 {
                    return Err(format!(
                        "sequence {s}: token turn ids must be non-decreasing and inside the sequence's turns"
                    ));
                }
                prev = k;
            }
        }
        let mut seen = vec![false; self.n_groups];
        for &g in &self.seq_group {
            match seen.get_mut(g as usize) {
                Some(x) => *x = true,
                None => return Err(format!("group index {g} out of range 0..{}", self.n_groups)),
            }
        }
        if let Some(g) = seen.iter().position(|s| !s) {
            return Err(format!("group {g} has no sequence"));
        }
        Ok(())
    }
}

/// A bound batch: the layout plus one packed `f64` array per input, by input name (bool as 0/1).
/// `values[name].len() == layout.count(level of the input)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    pub layout: Layout,
    pub values: BTreeMap<String, Vec<f64>>,
}

/// What every backend returns; vectors are aligned with the module's `grads`, `metrics`, `outputs`.
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    pub loss: f64,
    /// `grads[i]` is `d loss / d inputs[module.grads[i].input]`, packed at the input's level.
    pub grads: Vec<Vec<f64>>,
    pub metrics: Vec<f64>,
    /// Packed at each output's level.
    pub outputs: Vec<Vec<f64>>,
}
