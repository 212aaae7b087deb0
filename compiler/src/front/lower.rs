//! The IR builder used by the checker: appends typed nodes to an [`ir::Module`], inserting the
//! explicit `Broadcast`s and `ToF32` conversions the IR requires, hash-consing structurally equal
//! nodes (CSE at construction), and lowering every derived builtin (mean, std, var, logsumexp,
//! clamp, sign, count, structural values, ...) to IR primitives.
//!
//! Every method takes the span of the source expression the node comes from; a node shared by
//! CSE keeps the span of its first occurrence.
//!
//! Invariants kept here (and re-checked by `valid::validate`): operands are appended before
//! users; `Unary`/`Binary`/`Select` operands are at the result's level; `Reduce`/`Quantile` args
//! are f32 and their filters bool at the argument's level.

use std::collections::HashMap;

use crate::arena::Handle;
use crate::ir::{BinaryOp, Expr, IndexKind, Module, NodeKey, ReduceOp, ScanOp, UnaryOp};
use crate::types::{DType, Level, Ty};
use rlo_grammar::Span;

type H = Handle<Expr>;

/// Which statistic a reduction computes (the source-level reductions; lowered to `Reduce`,
/// `Quantile` and arithmetic).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RedKind {
    Sum,
    Mean,
    Max,
    Min,
    Count,
    Std,
    Var,
    LogSumExp,
    Quantile,
}

impl RedKind {
    pub fn name(self) -> &'static str {
        match self {
            RedKind::Sum => "sum",
            RedKind::Mean => "mean",
            RedKind::Max => "max",
            RedKind::Min => "min",
            RedKind::Count => "count",
            RedKind::Std => "std",
            RedKind::Var => "var",
            RedKind::LogSumExp => "logsumexp",
            RedKind::Quantile => "quantile",
        }
    }
}

/// A structural value of the batch (`pos`, `seq_len`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Structural {
    Pos,
    SeqLen,
    TurnIndex,
    TurnLen,
    SeqTurns,
    GroupSize,
    NumSeqs,
    NumTokens,
    NumGroups,
}

pub struct Builder {
    pub m: Module,
    cse: HashMap<NodeKey, H>,
}

fn f32_at(level: Level) -> Ty {
    Ty::new(level, DType::F32)
}

impl Builder {
    pub fn new(name: &str) -> Builder {
        Builder {
            m: Module::new(name),
            cse: HashMap::new(),
        }
    }

    pub fn ty(&self, h: H) -> Ty {
        self.m.ty(h)
    }

    pub fn level(&self, h: H) -> Level {
        self.m.level(h)
    }

    /// Appends `e` unless a structurally equal node of the same type exists (hash-consing on
    /// [`NodeKey`]: operands by handle, literals by their bits).
    fn add(&mut self, e: Expr, ty: Ty, span: Span) -> H {
        let key = NodeKey(e, ty);
        if let Some(&h) = self.cse.get(&key) {
            return h;
        }
        let h = self.m.append(key.0.clone(), ty, span);
        self.cse.insert(key, h);
        h
    }

    pub fn konst(&mut self, v: f64, span: Span) -> H {
        self.add(Expr::Const(v), f32_at(Level::Batch), span)
    }

    pub fn boolean(&mut self, v: bool, span: Span) -> H {
        self.add(Expr::Bool(v), Ty::new(Level::Batch, DType::Bool), span)
    }

    pub fn param(&mut self, i: u32, span: Span) -> H {
        self.add(Expr::Param(i), f32_at(Level::Batch), span)
    }

    pub fn input(&mut self, i: u32, ty: Ty, span: Span) -> H {
        self.add(Expr::Input(i), ty, span)
    }

    fn const_value(&self, h: H) -> Option<f64> {
        match self.m.exprs.get(h) {
            Some(Expr::Const(v)) => Some(*v),
            _ => None,
        }
    }

    fn bool_value(&self, h: H) -> Option<bool> {
        match self.m.exprs.get(h) {
            Some(Expr::Bool(v)) => Some(*v),
            _ => None,
        }
    }

    /// `h` at level `to` (a no-op when already there). `to` must not be coarser than `h`.
    pub fn broadcast(&mut self, h: H, to: Level, span: Span) -> H {
        let ty = self.ty(h);
        if ty.level <= to {
            return h;
        }
        self.add(Expr::Broadcast { arg: h, to }, Ty::new(to, ty.dtype), span)
    }

    /// Implicit bool → f32 conversion (a no-op on f32).
    pub fn to_f32(&mut self, h: H, span: Span) -> H {
        let ty = self.ty(h);
        match ty.dtype {
            DType::F32 => h,
            DType::Bool => {
                if let Some(b) = self.bool_value(h) {
                    return self.konst(if b { 1.0 } else { 0.0 }, span);
                }
                self.add(
                    Expr::Unary {
                        op: UnaryOp::ToF32,
                        arg: h,
                    },
                    f32_at(ty.level),
                    span,
                )
            }
        }
    }

    /// A unary op; f32 ops convert a bool operand first. `Not` expects bool.
    pub fn unary(&mut self, op: UnaryOp, arg: H, span: Span) -> H {
        let arg = if op == UnaryOp::Not {
            arg
        } else {
            self.to_f32(arg, span)
        };
        if op == UnaryOp::Neg {
            if let Some(v) = self.const_value(arg) {
                return self.konst(-v, span);
            }
        }
        let level = self.level(arg);
        let dtype = if op == UnaryOp::Not {
            DType::Bool
        } else {
            DType::F32
        };
        self.add(Expr::Unary { op, arg }, Ty::new(level, dtype), span)
    }

    /// A binary op at the finer level of its operands. Arithmetic and comparisons convert bool
    /// operands to f32; `And`/`Or` expect bool operands.
    pub fn binary(&mut self, op: BinaryOp, lhs: H, rhs: H, span: Span) -> H {
        let logical = matches!(op, BinaryOp::And | BinaryOp::Or);
        let (lhs, rhs) = if logical {
            (lhs, rhs)
        } else {
            (self.to_f32(lhs, span), self.to_f32(rhs, span))
        };
        let level = self.level(lhs).min(self.level(rhs));
        let lhs = self.broadcast(lhs, level, span);
        let rhs = self.broadcast(rhs, level, span);
        let dtype = match op {
            BinaryOp::Add
            | BinaryOp::Sub
            | BinaryOp::Mul
            | BinaryOp::Div
            | BinaryOp::Pow
            | BinaryOp::Min
            | BinaryOp::Max => DType::F32,
            BinaryOp::Lt
            | BinaryOp::Le
            | BinaryOp::Gt
            | BinaryOp::Ge
            | BinaryOp::Eq
            | BinaryOp::Ne
            | BinaryOp::And
            | BinaryOp::Or => DType::Bool,
        };
        self.add(Expr::Binary { op, lhs, rhs }, Ty::new(level, dtype), span)
    }

    /// `cond ? a : b` at the finest level of the three; `a` and `b` must share a dtype.
    pub fn select(&mut self, cond: H, a: H, b: H, span: Span) -> H {
        if let Some(c) = self.bool_value(cond) {
            let (chosen, other) = if c { (a, b) } else { (b, a) };
            let level = self.level(chosen).min(self.level(other));
            return self.broadcast(chosen, level, span);
        }
        let level = self.level(cond).min(self.level(a)).min(self.level(b));
        let dtype = self.ty(a).dtype;
        let cond = self.broadcast(cond, level, span);
        let a = self.broadcast(a, level, span);
        let b = self.broadcast(b, level, span);
        self.add(
            Expr::Select {
                cond,
                on_true: a,
                on_false: b,
            },
            Ty::new(level, dtype),
            span,
        )
    }

    pub fn detach(&mut self, arg: H, span: Span) -> H {
        if matches!(
            self.m.exprs.get(arg),
            Some(Expr::Const(_) | Expr::Bool(_) | Expr::Detach { .. })
        ) {
            return arg;
        }
        let ty = self.ty(arg);
        self.add(Expr::Detach { arg }, ty, span)
    }

    /// The constant 1.0 at `level` (for counts).
    fn ones(&mut self, level: Level, span: Span) -> H {
        let one = self.konst(1.0, span);
        self.broadcast(one, level, span)
    }

    /// A primitive reduction of `arg` (converted to f32) to `to`, with an optional bool filter
    /// (broadcast to the argument's level).
    pub fn reduce_prim(
        &mut self,
        op: ReduceOp,
        arg: H,
        to: Level,
        filter: Option<H>,
        span: Span,
    ) -> H {
        let arg = self.to_f32(arg, span);
        let level = self.level(arg);
        let filter = filter.map(|f| self.broadcast(f, level, span));
        self.add(
            Expr::Reduce {
                op,
                arg,
                to,
                filter,
            },
            f32_at(to),
            span,
        )
    }

    /// Number of elements of `level` inside each element of `to` (filtered).
    pub fn count(&mut self, level: Level, to: Level, filter: Option<H>, span: Span) -> H {
        let ones = self.ones(level, span);
        self.reduce_prim(ReduceOp::Sum, ones, to, filter, span)
    }

    /// `num / max(den, 1)`: exact for counts ≥ 1, and 0 (never NaN) for an empty set, whose sum is 0.
    fn safe_div_count(&mut self, num: H, den: H, span: Span) -> H {
        let one = self.konst(1.0, span);
        let den = self.binary(BinaryOp::Max, den, one, span);
        self.binary(BinaryOp::Div, num, den, span)
    }

    /// Lowers a source-level reduction (see spec.md §builtins for the exact formulas).
    /// `extra` is `q` for quantiles and `unbiased` (batch bool) for std/var.
    pub fn reduce(
        &mut self,
        kind: RedKind,
        arg: H,
        to: Level,
        filter: Option<H>,
        extra: Option<H>,
        span: Span,
    ) -> H {
        let level = self.level(arg);
        match kind {
            RedKind::Sum => self.reduce_prim(ReduceOp::Sum, arg, to, filter, span),
            RedKind::Max => self.reduce_prim(ReduceOp::Max, arg, to, filter, span),
            RedKind::Min => self.reduce_prim(ReduceOp::Min, arg, to, filter, span),
            RedKind::Count => self.count(level, to, filter, span),
            RedKind::Mean => {
                let s = self.reduce_prim(ReduceOp::Sum, arg, to, filter, span);
                let n = self.count(level, to, filter, span);
                self.safe_div_count(s, n, span)
            }
            RedKind::Var | RedKind::Std => {
                let var = self.variance(arg, to, filter, extra, span);
                if kind == RedKind::Std {
                    self.unary(UnaryOp::Sqrt, var, span)
                } else {
                    var
                }
            }
            RedKind::LogSumExp => {
                // m = detach(max x); lse = m + log(sum exp(x - m)); empty set -> 0.
                let mx = self.reduce_prim(ReduceOp::Max, arg, to, filter, span);
                let mx = self.detach(mx, span);
                let mb = self.broadcast(mx, level, span);
                let d = self.binary(BinaryOp::Sub, arg, mb, span);
                let e = self.unary(UnaryOp::Exp, d, span);
                let s = self.reduce_prim(ReduceOp::Sum, e, to, filter, span);
                let l = self.unary(UnaryOp::Log, s, span);
                let lse = self.binary(BinaryOp::Add, mx, l, span);
                let n = self.count(level, to, filter, span);
                let zero = self.konst(0.0, span);
                let nonempty = self.binary(BinaryOp::Gt, n, zero, span);
                self.select(nonempty, lse, zero, span)
            }
            RedKind::Quantile => {
                let arg = self.to_f32(arg, span);
                let q = match extra {
                    Some(q) => self.to_f32(q, span),
                    None => self.konst(0.5, span),
                };
                let filter = filter.map(|f| self.broadcast(f, level, span));
                self.add(Expr::Quantile { arg, q, to, filter }, f32_at(to), span)
            }
        }
    }

    /// Two-pass variance: `sum((x - mean)^2) / max(n - u, 1)` with `u = 1` when unbiased.
    /// A set of one element (unbiased) or none gives 0, never NaN.
    fn variance(
        &mut self,
        arg: H,
        to: Level,
        filter: Option<H>,
        unbiased: Option<H>,
        span: Span,
    ) -> H {
        let arg = self.to_f32(arg, span);
        let level = self.level(arg);
        let mean = self.reduce(RedKind::Mean, arg, to, filter, None, span);
        let mb = self.broadcast(mean, level, span);
        let d = self.binary(BinaryOp::Sub, arg, mb, span);
        let d2 = self.binary(BinaryOp::Mul, d, d, span);
        let ss = self.reduce_prim(ReduceOp::Sum, d2, to, filter, span);
        let n = self.count(level, to, filter, span);
        let u = match unbiased.map(|u| (u, self.bool_value(u))) {
            None | Some((_, Some(true))) => self.konst(1.0, span),
            Some((_, Some(false))) => self.konst(0.0, span),
            Some((u, None)) => {
                let one = self.konst(1.0, span);
                let zero = self.konst(0.0, span);
                self.select(u, one, zero, span)
            }
        };
        let den = self.binary(BinaryOp::Sub, n, u, span);
        self.safe_div_count(ss, den, span)
    }

    /// `rank(x)` within each element of `within`.
    pub fn rank(&mut self, arg: H, within: Level, span: Span) -> H {
        let arg = self.to_f32(arg, span);
        let level = self.level(arg);
        self.add(Expr::Rank { arg, within }, f32_at(level), span)
    }

    pub fn scan(&mut self, op: ScanOp, arg: H, discount: Option<H>, span: Span) -> H {
        let arg = self.to_f32(arg, span);
        let level = self.level(arg);
        let discount = discount.map(|d| {
            let d = self.to_f32(d, span);
            self.broadcast(d, level, span)
        });
        self.add(Expr::Scan { op, arg, discount }, f32_at(level), span)
    }

    /// Per-position group reductions (`group_pos_*`); `arg` is broadcast to `tok`.
    pub fn pos_reduce(&mut self, kind: RedKind, arg: H, span: Span) -> H {
        let arg = self.to_f32(arg, span);
        let arg = self.broadcast(arg, Level::Tok, span);
        let tok = f32_at(Level::Tok);
        match kind {
            RedKind::Max => self.add(
                Expr::PosReduce {
                    op: ReduceOp::Max,
                    arg,
                },
                tok,
                span,
            ),
            RedKind::Min => self.add(
                Expr::PosReduce {
                    op: ReduceOp::Min,
                    arg,
                },
                tok,
                span,
            ),
            RedKind::Count => {
                let ones = self.ones(Level::Tok, span);
                self.add(
                    Expr::PosReduce {
                        op: ReduceOp::Sum,
                        arg: ones,
                    },
                    tok,
                    span,
                )
            }
            RedKind::Mean => {
                let s = self.pos_reduce(RedKind::Sum, arg, span);
                let n = self.pos_reduce(RedKind::Count, arg, span);
                // n >= 1 always (the token's own sequence is alive at its position).
                self.binary(BinaryOp::Div, s, n, span)
            }
            RedKind::Sum | RedKind::Std | RedKind::Var | RedKind::LogSumExp | RedKind::Quantile => {
                self.add(
                    Expr::PosReduce {
                        op: ReduceOp::Sum,
                        arg,
                    },
                    tok,
                    span,
                )
            }
        }
    }

    /// `clamp(x, lo, hi) = x < lo ? lo : (x > hi ? hi : x)`: the gradient passes to `x` at the
    /// bounds (PyTorch), and goes to the bound where it is active.
    pub fn clamp(&mut self, x: H, lo: H, hi: H, span: Span) -> H {
        let x = self.to_f32(x, span);
        let lo = self.to_f32(lo, span);
        let hi = self.to_f32(hi, span);
        let above = self.binary(BinaryOp::Gt, x, hi, span);
        let upper = self.select(above, hi, x, span);
        let below = self.binary(BinaryOp::Lt, x, lo, span);
        self.select(below, lo, upper, span)
    }

    /// `sign(x)`: 1, -1 or 0 (gradient 0).
    pub fn sign(&mut self, x: H, span: Span) -> H {
        let x = self.to_f32(x, span);
        let zero = self.konst(0.0, span);
        let one = self.konst(1.0, span);
        let minus_one = self.konst(-1.0, span);
        let neg = self.binary(BinaryOp::Lt, x, zero, span);
        let inner = self.select(neg, minus_one, zero, span);
        let pos = self.binary(BinaryOp::Gt, x, zero, span);
        self.select(pos, one, inner, span)
    }

    pub fn structural(&mut self, s: Structural, span: Span) -> H {
        match s {
            Structural::Pos => self.add(Expr::Index(IndexKind::Pos), f32_at(Level::Tok), span),
            Structural::TurnIndex => {
                self.add(Expr::Index(IndexKind::TurnIndex), f32_at(Level::Turn), span)
            }
            Structural::SeqLen => self.count(Level::Tok, Level::Seq, None, span),
            Structural::TurnLen => self.count(Level::Tok, Level::Turn, None, span),
            Structural::SeqTurns => self.count(Level::Turn, Level::Seq, None, span),
            Structural::GroupSize => self.count(Level::Seq, Level::Group, None, span),
            Structural::NumSeqs => self.count(Level::Seq, Level::Batch, None, span),
            Structural::NumTokens => self.count(Level::Tok, Level::Batch, None, span),
            Structural::NumGroups => self.count(Level::Group, Level::Batch, None, span),
        }
    }
}
