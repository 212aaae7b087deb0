//! A small greedy scheduler for hand-built test modules (stages alternate token pass / small),
//! so the CUDA emitter can be tested independently of the compiler's scheduler, and the builder
//! `B` of such modules.

use rlo_compiler::arena::Handle;
use rlo_compiler::ir::{
    BinaryOp, Expr, IndexKind, Input, Module, Named, Param, ReduceOp, ScanOp, UnaryOp,
};
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

/// A module touching every primitive and every reduction level pair.
pub fn kitchen_sink(input_name: &str) -> (Module, Schedule) {
    use Level::*;
    let mut b = B::new("kitchen_sink");
    let eps = b.param("eps", 0.2);
    let logp = b.input(input_name, Tok, DType::F32, true);
    let old = b.input("old_logp", Tok, DType::F32, false);
    let reward = b.input("reward", Seq, DType::F32, false);
    let ok = b.input("correct", Seq, DType::Bool, false);
    let one = b.c(1.0);
    // group-normalised advantage
    let gsum = b.red(ReduceOp::Sum, reward, Group, None);
    let ones = b.bc(one, Seq);
    let gcnt = b.red(ReduceOp::Sum, ones, Group, Some(ok));
    let gmean = b.bin(BinaryOp::Div, gsum, gcnt);
    let gmax = b.red(ReduceOp::Max, reward, Group, None);
    let q = b.c(0.75);
    let gq = b.f(
        Expr::Quantile {
            arg: reward,
            q,
            to: Group,
            filter: None,
        },
        Group,
    );
    let adv0 = b.bin(BinaryOp::Sub, reward, gmean);
    let adv1 = b.bin(BinaryOp::Add, adv0, gq);
    let adv = b.bin(BinaryOp::Sub, adv1, gmax);
    let rank = b.f(
        Expr::Rank {
            arg: reward,
            within: Group,
        },
        Seq,
    );
    let brank = b.f(
        Expr::Rank {
            arg: reward,
            within: Batch,
        },
        Seq,
    );
    // token math
    let d = b.bin(BinaryOp::Sub, logp, old);
    let ratio = b.un(UnaryOp::Exp, d);
    let lo = b.bin(BinaryOp::Sub, one, eps);
    let hi = b.bin(BinaryOp::Add, one, eps);
    let below = b.bin(BinaryOp::Lt, ratio, lo);
    let above = b.bin(BinaryOp::Gt, ratio, hi);
    let c1 = b.sel(below, lo, ratio);
    let clipped = b.sel(above, hi, c1);
    let s1 = b.bin(BinaryOp::Mul, ratio, adv);
    let s2 = b.bin(BinaryOp::Mul, clipped, adv);
    let surr = b.bin(BinaryOp::Min, s1, s2);
    let neg = b.un(UnaryOp::Neg, surr);
    let pos = b.f(Expr::Index(IndexKind::Pos), Tok);
    let w = b.un(UnaryOp::Sigmoid, pos);
    let w2 = b.un(UnaryOp::Softplus, w);
    let w3 = b.un(UnaryOp::Tanh, w2);
    let w4 = b.un(UnaryOp::Log1p, w3);
    let w5 = b.un(UnaryOp::Expm1, w4);
    let w6 = b.un(UnaryOp::Abs, w5);
    let w7 = b.un(UnaryOp::Sqrt, w6);
    let w8 = b.bin(BinaryOp::Pow, w7, one);
    let w9 = b.un(UnaryOp::Log, w8);
    let w10 = b.un(UnaryOp::Floor, w9);
    let w11 = b.un(UnaryOp::Ceil, w10);
    let w12 = b.un(UnaryOp::Round, w11);
    let w9 = b.bin(BinaryOp::Add, w9, w12);
    let w13 = b.bin(BinaryOp::Add, w7, one);
    let lg = b.un(UnaryOp::Lgamma, w13);
    let dg = b.un(UnaryOp::Digamma, w13);
    let w9 = b.bin(BinaryOp::Add, w9, lg);
    let w9 = b.bin(BinaryOp::Add, w9, dg);
    let per_tok = b.bin(BinaryOp::Add, neg, w9);
    let rk = b.bin(BinaryOp::Mul, rank, brank);
    let per_tok = b.bin(BinaryOp::Add, per_tok, rk);
    let seq_sum = b.red(ReduceOp::Sum, per_tok, Seq, None);
    let ones_t = b.bc(one, Tok);
    let len = b.red(ReduceOp::Sum, ones_t, Seq, None);
    let seq_mean = b.bin(BinaryOp::Div, seq_sum, len);
    let loss = b.red(ReduceOp::Sum, seq_mean, Batch, None);
    // metrics: filtered token reductions to every level, max/min
    let dev = b.un(UnaryOp::Abs, d);
    let clipped_b = b.bin(BinaryOp::Gt, dev, eps);
    let nclip = b.bin(BinaryOp::Or, below, above);
    let notc = b.un(UnaryOp::Not, nclip);
    let both = b.bin(BinaryOp::And, notc, clipped_b);
    let frac = b.un(UnaryOp::ToF32, both);
    let m1 = b.red(ReduceOp::Sum, frac, Batch, None);
    let m2 = b.red(ReduceOp::Max, ratio, Batch, Some(below));
    let m3g = b.red(ReduceOp::Min, ratio, Group, Some(above));
    let m3 = b.red(ReduceOp::Sum, m3g, Batch, None);
    let tq = b.f(
        Expr::Quantile {
            arg: ratio,
            q,
            to: Batch,
            filter: Some(below),
        },
        Batch,
    );
    // second pass: scans and per-position group reductions of first-pass values
    let cs = b.f(
        Expr::Scan {
            op: ScanOp::CumSum,
            arg: per_tok,
            discount: None,
        },
        Tok,
    );
    let rcs = b.f(
        Expr::Scan {
            op: ScanOp::RevCumSum,
            arg: cs,
            discount: None,
        },
        Tok,
    );
    let gamma = b.bc(eps, Tok);
    let drc = b.f(
        Expr::Scan {
            op: ScanOp::DiscountedRevCumSum,
            arg: ratio,
            discount: Some(gamma),
        },
        Tok,
    );
    let dfc = b.f(
        Expr::Scan {
            op: ScanOp::DiscountedCumSum,
            arg: drc,
            discount: Some(gamma),
        },
        Tok,
    );
    let nx = b.f(
        Expr::Scan {
            op: ScanOp::Next,
            arg: dfc,
            discount: None,
        },
        Tok,
    );
    let pv = b.f(
        Expr::Scan {
            op: ScanOp::Prev,
            arg: nx,
            discount: None,
        },
        Tok,
    );
    let pr = b.f(
        Expr::PosReduce {
            op: ReduceOp::Max,
            arg: ratio,
        },
        Tok,
    );
    let tr = b.f(
        Expr::Rank {
            arg: ratio,
            within: Seq,
        },
        Tok,
    );
    let mean_b = b.red(ReduceOp::Sum, seq_mean, Batch, None);
    let g0 = b.bin(BinaryOp::Mul, rcs, pv);
    let g1 = b.bin(BinaryOp::Add, g0, pr);
    let g2 = b.bin(BinaryOp::Add, g1, tr);
    let g3 = b.bin(BinaryOp::Div, g2, mean_b);
    let det = b.add(Expr::Detach { arg: g3 }, Tok, DType::F32);
    let grad = b.bin(BinaryOp::Mul, det, ratio);
    b.m.grads.push(rlo_compiler::ir::Grad {
        input: 0,
        value: grad,
    });
    let zero_tok = b.c(0.0);
    let zero_tok = b.bc(zero_tok, Tok);
    b.m.grads.push(rlo_compiler::ir::Grad {
        input: 0,
        value: zero_tok,
    });
    for (name, v) in [
        ("frac", m1),
        ("max_below", m2),
        ("min_above", m3),
        ("q", tq),
    ] {
        b.m.metrics.push(Named {
            name: name.into(),
            value: v,
            span: Span::default(),
        });
    }
    let eps_seq = b.bc(eps, Seq);
    for (name, v) in [("adv", adv), ("eps_seq", eps_seq), ("below", below)] {
        b.m.outputs.push(Named {
            name: name.into(),
            value: v,
            span: Span::default(),
        });
    }
    b.finish(loss)
}
