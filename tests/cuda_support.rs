//! A small greedy scheduler for hand-built test modules (stages alternate token pass / small),
//! so the CUDA emitter can be tested independently of the compiler's scheduler.

use rlo_compiler::arena::Handle;
use rlo_compiler::ir::{Expr, Module};
use rlo_compiler::schedule::{Schedule, Stage, StageKind};
use rlo_compiler::Level;

fn inline(e: &Expr) -> bool {
    matches!(
        e,
        Expr::Const(_) | Expr::Bool(_) | Expr::Param(_) | Expr::Input(_) | Expr::Index(_)
    )
}

/// Even stages are token passes, odd stages small stages.
pub fn greedy_schedule(m: &Module) -> Schedule {
    let n = m.exprs.len();
    let mut canon: Vec<usize> = (0..n).collect();
    let mut stage: Vec<Option<usize>> = vec![None; n];
    let even = |x: usize| if x.is_multiple_of(2) { x } else { x + 1 };
    let odd = |x: usize| if x.is_multiple_of(2) { x + 1 } else { x };
    for (h, e) in m.exprs.iter() {
        let i = h.index();
        if let Expr::Broadcast { arg, .. } | Expr::Detach { arg } = e {
            canon[i] = canon[arg.index()];
            continue;
        }
        if inline(e) {
            continue;
        }
        let ops: Vec<usize> = e.operands().iter().map(|o| canon[o.index()]).collect();
        let tok = |x: usize| m.level(Handle::from_index(x)) == Level::Tok;
        let needs_all = matches!(
            e,
            Expr::Rank { .. } | Expr::PosReduce { .. } | Expr::Quantile { .. }
        );
        let in_pass = m.level(h) == Level::Tok && !needs_all
            || matches!(e, Expr::Reduce { arg, .. } if m.level(*arg) == Level::Tok);
        let mut lb = 0usize;
        for &o in &ops {
            let Some(so) = stage[o] else { continue };
            let b = if in_pass {
                if so.is_multiple_of(2)
                    && tok(o)
                    && !matches!(m.exprs[Handle::from_index(o)], Expr::Reduce { .. })
                {
                    so
                } else {
                    so + 1
                }
            } else if !so.is_multiple_of(2) {
                so
            } else {
                so + 1
            };
            lb = lb.max(b);
        }
        stage[i] = Some(if in_pass { even(lb) } else { odd(lb) });
    }
    let last = stage.iter().flatten().copied().max().unwrap_or(0);
    let mut stages: Vec<Stage> = (0..=last)
        .map(|k| Stage {
            kind: if k.is_multiple_of(2) {
                StageKind::TokenPass
            } else {
                StageKind::Small
            },
            nodes: Vec::new(),
        })
        .collect();
    for (i, s) in stage.iter().enumerate() {
        if let Some(k) = s {
            stages[*k].nodes.push(Handle::from_index(i));
        }
    }
    stages.retain(|s| !s.nodes.is_empty());
    Schedule { stages }
}

/// A seeded random batch for a module: ragged lengths (some 0), odd group sizes, values by level.
pub fn random_batch(m: &Module, seed: u64, n_groups: usize, max_len: usize) -> rlo_compiler::Batch {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut lengths = Vec::new();
    let mut seq_group = Vec::new();
    for g in 0..n_groups {
        let size = 1 + (g * 3 + seed as usize) % 5;
        for _ in 0..size {
            let l = if rng.random_range(0..10) == 0 {
                0
            } else {
                rng.random_range(1..=max_len)
            };
            lengths.push(l);
            seq_group.push(g as u32);
        }
    }
    let layout = rlo_compiler::Layout::single_turn(&lengths, seq_group);
    let mut values = std::collections::BTreeMap::new();
    for inp in &m.inputs {
        let n = layout.count(inp.ty.level);
        let v: Vec<f64> = (0..n)
            .map(|_| match inp.ty.dtype {
                rlo_compiler::DType::Bool => f64::from(u8::from(rng.random_bool(0.5))),
                rlo_compiler::DType::F32 => rng.random_range(-2.0..0.0),
            })
            .collect();
        values.insert(inp.name.clone(), v);
    }
    rlo_compiler::Batch { layout, values }
}
