//! Index maps of a packed [`Layout`]: for every element of a level, the element of a coarser
//! level that contains it.

use crate::data::Layout;
use crate::types::Level;

/// Index of a level in `Level::ALL`.
pub fn rank(l: Level) -> usize {
    match l {
        Level::Tok => 0,
        Level::Turn => 1,
        Level::Seq => 2,
        Level::Group => 3,
        Level::Batch => 4,
    }
}

/// Per-element parent maps between every pair of levels, computed once per batch.
pub struct Maps {
    counts: [usize; 5],
    /// `up[from][to]`: for each element of `from`, its containing element of `to` (`from < to`).
    up: Vec<Vec<Vec<usize>>>,
}

impl Maps {
    /// Requires a layout that passed [`Layout::validate`].
    pub fn new(layout: &Layout) -> Maps {
        let n_tok = layout.n_tokens();
        let n_turn = layout.n_turns();
        let n_seq = layout.n_seqs();
        let mut tok_seq = Vec::with_capacity(n_tok);
        let mut turn_seq = Vec::with_capacity(n_turn);
        for (s, w) in layout.seq_offsets.windows(2).enumerate() {
            if let [a, b] = *w {
                tok_seq.extend(std::iter::repeat_n(s, b.saturating_sub(a)));
            }
        }
        for (s, w) in layout.turn_offsets.windows(2).enumerate() {
            if let [a, b] = *w {
                turn_seq.extend(std::iter::repeat_n(s, b.saturating_sub(a)));
            }
        }
        let tok_turn: Vec<usize> = layout.tok_turn.iter().map(|&k| k as usize).collect();
        let seq_group: Vec<usize> = layout.seq_group.iter().map(|&g| g as usize).collect();
        let compose = |a: &[usize], b: &[usize]| -> Vec<usize> {
            a.iter().map(|&i| b.get(i).copied().unwrap_or(0)).collect()
        };
        let tok_group = compose(&tok_seq, &seq_group);
        let turn_group = compose(&turn_seq, &seq_group);
        let zeros = |n: usize| vec![0usize; n];
        let up = vec![
            vec![
                (0..n_tok).collect(),
                tok_turn,
                tok_seq,
                tok_group,
                zeros(n_tok),
            ],
            vec![
                Vec::new(),
                (0..n_turn).collect(),
                turn_seq,
                turn_group,
                zeros(n_turn),
            ],
            vec![
                Vec::new(),
                Vec::new(),
                (0..n_seq).collect(),
                seq_group,
                zeros(n_seq),
            ],
            vec![
                Vec::new(),
                Vec::new(),
                Vec::new(),
                (0..layout.n_groups).collect(),
                zeros(layout.n_groups),
            ],
            vec![Vec::new(), Vec::new(), Vec::new(), Vec::new(), vec![0]],
        ];
        Maps {
            counts: [n_tok, n_turn, n_seq, layout.n_groups, 1],
            up,
        }
    }

    pub fn count(&self, l: Level) -> usize {
        self.counts.get(rank(l)).copied().unwrap_or(0)
    }

    /// For each element of `from`, the index of its element at `to` (`from <= to`).
    pub fn up(&self, from: Level, to: Level) -> &[usize] {
        self.up
            .get(rank(from))
            .and_then(|v| v.get(rank(to)))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }
}
