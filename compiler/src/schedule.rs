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

//! # What the scheduler produces (the algorithm in `schedule/algo.rs`)
//! Stages alternate `Small, TokenPass, Small, TokenPass, …, Small` (empty small stages are
//! dropped). Precisely:
//! - A token pass holds `tok`-level nodes (leaves, elementwise, `Select`, `Broadcast` to `tok`,
//!   `Scan` over tokens, `Detach`) and the `Reduce`s whose argument is `tok` (accumulated by the
//!   pass; their result is readable only from the next stage on).
//! - Everything else is in small stages: `turn` values and turn scans too (O(turns) work, read
//!   by passes like any materialized value), `Rank`, `Quantile`, `PosReduce` (whose results may be
//!   at `tok`: they are materialized for the passes that read them).
//! - **Structural nodes** (those that read no `tok`-level input: counts like `seq_len`,
//!   `num_tokens`, `batch_max(seq_len)`, sums of constants or of `pos`, values from `turn`/`seq`/
//!   `group` inputs) never force a pass. A structural `Reduce` of a `tok` argument, and the
//!   structural `tok` nodes it reads, sit in the first small stage (the *prologue*); backends
//!   compute them by looping over the layout, reading no input data. Other structural `tok`
//!   nodes are computed inside the passes that use them.
//! - Pass depth: a `tok` node that needs a reduction (or rank, quantile, per-position reduction)
//!   of non-structural `tok` values computed in pass `p` runs in pass `p + 1`. Token-pass nodes
//!   are placed as late as possible (fewest materialized values); small-stage nodes as early as
//!   possible, except that one moves as late as its users allow when the token data its
//!   reductions read (inputs, through elementwise nodes) is read by the pass before that stage
//!   anyway — a metric of the ratio is then accumulated by the pass that computes the gradient
//!   from the same inputs, not by an earlier pass that would read them a second time (PPO: 3.00
//!   → 1.83 of the traffic roofline). The result is deterministic (a function of the arena only).
//!
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
                for op in m.exprs.get(h).map(Expr::operands).unwrap_or_default() {
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
        m.exprs
            .handles()
            .filter(|h| need.get(h.index()).copied().unwrap_or(false))
            .collect()
    }
}

mod algo;
pub use algo::{needed, needed_from, schedule, structural};

/// Stable text of a schedule (`rloc emit schedule`, snapshots): one line per stage, then the
/// materialized values.
pub fn display_schedule(m: &Module, s: &Schedule) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "schedule {}: {} token pass(es), {} stage(s)",
        m.name,
        s.token_passes(),
        s.stages.len()
    );
    let mut pass = 0;
    for st in &s.stages {
        let label = match st.kind {
            StageKind::TokenPass => {
                pass += 1;
                format!("pass {}", pass - 1)
            }
            StageKind::Small => "small".to_string(),
        };
        let nodes: Vec<String> = st.nodes.iter().map(|h| h.to_string()).collect();
        let _ = writeln!(out, "  {label:<7} [{}] {}", st.nodes.len(), nodes.join(" "));
    }
    let mat: Vec<String> = s.materialized(m).iter().map(|h| h.to_string()).collect();
    let _ = writeln!(out, "  materialized: {}", mat.join(" "));
    out
}
