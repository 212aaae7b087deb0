//! The schedule: forward + backward grouped into the fewest passes over the token data.
//! (Data types fixed here; the algorithm is owned by the IR/scheduler work.)
//!
//! A [`Schedule`] is a list of [`Stage`]s run in order:
//! - [`StageKind::TokenPass`]: one sweep over the token (and turn) data, parallel over sequences.
//!   It evaluates its `tok`/`turn`-level nodes for every element, in arena order within a sequence
//!   (scans may need their own sub-sweep of the sequence; that stays inside the pass), and
//!   accumulates every `Reduce` listed in it whose argument is `tok`/`turn` level. One pass = one
//!   CUDA kernel = one CPU loop nest.
//! - [`StageKind::Small`]: `seq`/`group`/`batch`-level nodes between passes (O(B) work):
//!   elementwise math per sequence/group, reductions seq → group → batch, `Rank`, `Quantile`,
//!   `PosReduce` (which read values materialized by an earlier pass).
//!
//! Every node of the module that is needed (by the loss, a metric, an output or a gradient)
//! appears in exactly one stage, after all of its operands. A `tok`/`turn` node used by a later
//! stage is *materialized* (stored per element by the pass that computes it); backends find these
//! with [`Schedule::materialized`].

use crate::arena::Handle;
use crate::ir::{Expr, Module};
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum StageKind {
    TokenPass,
    Small,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Stage {
    pub kind: StageKind,
    /// The nodes this stage computes, in arena order.
    pub nodes: Vec<Handle<Expr>>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Schedule {
    pub stages: Vec<Stage>,
}

impl Schedule {
    /// Number of passes over the token data.
    pub fn token_passes(&self) -> usize {
        self.stages
            .iter()
            .filter(|s| s.kind == StageKind::TokenPass)
            .count()
    }

    /// Index of the stage computing each node (`None` for nodes not needed).
    pub fn stage_of(&self, m: &Module) -> Vec<Option<usize>> {
        let mut v = vec![None; m.exprs.len()];
        for (i, s) in self.stages.iter().enumerate() {
            for h in &s.nodes {
                if let Some(x) = v.get_mut(h.index()) {
                    *x = Some(i);
                }
            }
        }
        v
    }

    /// `tok`/`turn`-level nodes read by a stage later than the one computing them, or that are
    /// roots (gradients, outputs): they must be stored per element.
    pub fn materialized(&self, m: &Module) -> Vec<Handle<Expr>> {
        let stage = self.stage_of(m);
        let fine = |h: Handle<Expr>| m.level(h) <= crate::types::Level::Turn;
        let mut need = vec![false; m.exprs.len()];
        for (i, s) in self.stages.iter().enumerate() {
            for &h in &s.nodes {
                for op in m.exprs[h].operands() {
                    let later = stage
                        .get(op.index())
                        .copied()
                        .flatten()
                        .is_some_and(|j| j < i);
                    if later && fine(op) {
                        if let Some(x) = need.get_mut(op.index()) {
                            *x = true;
                        }
                    }
                }
            }
        }
        for h in m
            .grads
            .iter()
            .map(|g| g.value)
            .chain(m.outputs.iter().map(|o| o.value))
        {
            if fine(h) {
                if let Some(x) = need.get_mut(h.index()) {
                    *x = true;
                }
            }
        }
        m.exprs.handles().filter(|h| need[h.index()]).collect()
    }
}

/// Partitions the needed nodes of `m` into stages. (Stub until the scheduler lands.)
pub fn schedule(m: &Module) -> Schedule {
    let _ = m;
    Schedule { stages: Vec::new() }
}
