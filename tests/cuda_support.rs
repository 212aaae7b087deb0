//! A small greedy scheduler for hand-built test modules (stages alternate token pass / small),
//! so the CUDA emitter can be tested independently of the compiler's scheduler, and the builder
//! `B` of such modules.

use rlo_compiler::arena::Handle;
use rlo_compiler::ir::{BinaryOp, Expr, Input, Module, Param, ReduceOp, UnaryOp};
use rlo_compiler::schedule::{Schedule, Stage, StageKind};
use rlo_compiler::{DType, Level, Ty};
use rlo_grammar::Span;

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

/// Builder of hand-made test modules (the kitchen-sink module of `cuda.rs`).
pub struct B {
    pub m: Module,
}

impl B {
    pub fn new(name: &str) -> B {
        B {
            m: Module::new(name),
        }
    }
    pub fn add(&mut self, e: Expr, level: Level, dtype: DType) -> Handle<Expr> {
        self.m.append(e, Ty::new(level, dtype), Span::default())
    }
    pub fn f(&mut self, e: Expr, level: Level) -> Handle<Expr> {
        self.add(e, level, DType::F32)
    }
    pub fn input(&mut self, name: &str, level: Level, dtype: DType, diff: bool) -> Handle<Expr> {
        let i = self.m.inputs.len() as u32;
        self.m.inputs.push(Input {
            name: name.into(),
            ty: Ty::new(level, dtype),
            diff,
            span: Span::default(),
        });
        self.add(Expr::Input(i), level, dtype)
    }
    pub fn param(&mut self, name: &str, default: f64) -> Handle<Expr> {
        let i = self.m.params.len() as u32;
        self.m.params.push(Param {
            name: name.into(),
            default,
            span: Span::default(),
        });
        self.f(Expr::Param(i), Level::Batch)
    }
    pub fn c(&mut self, x: f64) -> Handle<Expr> {
        self.f(Expr::Const(x), Level::Batch)
    }
    pub fn bc(&mut self, arg: Handle<Expr>, to: Level) -> Handle<Expr> {
        let ty = self.m.ty(arg);
        if ty.level == to {
            return arg;
        }
        self.add(Expr::Broadcast { arg, to }, to, ty.dtype)
    }
    pub fn bin(&mut self, op: BinaryOp, lhs: Handle<Expr>, rhs: Handle<Expr>) -> Handle<Expr> {
        let level = self.m.level(lhs).min(self.m.level(rhs));
        let (lhs, rhs) = (self.bc(lhs, level), self.bc(rhs, level));
        let dtype = match op {
            BinaryOp::Lt
            | BinaryOp::Le
            | BinaryOp::Gt
            | BinaryOp::Ge
            | BinaryOp::Eq
            | BinaryOp::Ne
            | BinaryOp::And
            | BinaryOp::Or => DType::Bool,
            _ => DType::F32,
        };
        self.add(Expr::Binary { op, lhs, rhs }, level, dtype)
    }
    pub fn un(&mut self, op: UnaryOp, arg: Handle<Expr>) -> Handle<Expr> {
        let level = self.m.level(arg);
        let dtype = match op {
            UnaryOp::Not => DType::Bool,
            _ => DType::F32,
        };
        self.add(Expr::Unary { op, arg }, level, dtype)
    }
    pub fn sel(&mut self, c: Handle<Expr>, a: Handle<Expr>, b: Handle<Expr>) -> Handle<Expr> {
        let level = self.m.level(c).min(self.m.level(a)).min(self.m.level(b));
        let (c, a, b) = (self.bc(c, level), self.bc(a, level), self.bc(b, level));
        let dtype = self.m.ty(a).dtype;
        self.add(
            Expr::Select {
                cond: c,
                on_true: a,
                on_false: b,
            },
            level,
            dtype,
        )
    }
    pub fn red(
        &mut self,
        op: ReduceOp,
        arg: Handle<Expr>,
        to: Level,
        filter: Option<Handle<Expr>>,
    ) -> Handle<Expr> {
        self.f(
            Expr::Reduce {
                op,
                arg,
                to,
                filter,
            },
            to,
        )
    }
    pub fn finish(mut self, loss: Handle<Expr>) -> (Module, Schedule) {
        self.m.loss = loss;
        let s = greedy_schedule(&self.m);
        (self.m, s)
    }
}
