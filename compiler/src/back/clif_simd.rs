//! SIMD token sweeps (`f32x4`: 4 tokens of a sequence at a time) and the inline `f32` exp.
//!
//! A token sweep whose nodes are all elementwise ops and reductions to `seq` or above (the common
//! case: ratios, clips, KL terms, their gradients, per-sequence sums) runs its tokens
//! `a..a + 4⌊(e − a)/4⌋` four at a time and the remaining 0–3 tokens through the scalar sweep.
//! - Every lane computes exactly what the scalar code computes for its token (same operations
//!   in the same order; selects are `bitselect`s of the same compare; `exp` is the same inline
//!   code), so elementwise results do not depend on a token's position.
//! - Reductions keep one accumulator per lane; after the vector loop the lanes are combined as
//!   `(l0 ∘ l1) ∘ (l2 ∘ l3)` and the scalar tail continues from there. The order of additions is
//!   fixed by the sequence's length alone, so results are the same for any thread count.
//! - Values of `seq` and higher levels are computed as scalars (hoisted by Cranelift out of the
//!   loop: their loads are `can_move`) and splatted; bools are lane masks (all ones = true).
//! - Math without an inline form (log, log1p, expm1, tanh, pow, sigmoid, softplus) calls the
//!   same Rust helpers as the scalar code, one lane at a time.
//! - Sweeps that read `turn` values (a gather per token) stay scalar, as does `f64` mode.
//!
//! # Inline exp (f32)
//! `exp(x)`: clamp `x` to `[−104, 89]` (NaN passes through), `n = round(x·log2 e)` by the
//! `1.5·2²³` trick, Cody–Waite reduction `r = x − n·C1 − n·C2` (`C1 = 0.693359375` exact in 9
//! bits, so `n·C1` is exact), Cephes' degree-7 polynomial `1 + r + r²·P(r)` on
//! `|r| ≤ ln 2 / 2`, and `· 2^⌊n/2⌋ · 2^(n − ⌊n/2⌋)` (two exact scalings, so results that are
//! subnormal are rounded once and `exp(88.7)` does not overflow early). Overflow gives `+inf`,
//! `x < −103.97` gives `+0`, `exp(±0) = 1`, NaN gives NaN. Measured error against the correctly
//! rounded value: see `tests/parity_cpu.rs` (`inline_exp_accuracy`) and spec §7.

use super::clif::BackendError;
use super::clif_emit::{Ctx, Fx, R};
use super::clif_plan::{ex, Loc};
use super::clif_sweep::Acc;
use crate::arena::Handle;
use crate::ir::{BinaryOp, Expr, IndexKind, ReduceOp, UnaryOp};
use crate::types::Level;
use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{types, ConstantData, Endianness, InstBuilder, MemFlagsData, Value};
use cranelift_frontend::Variable;
use std::collections::HashMap;

type H = Handle<Expr>;

const F4: types::Type = types::F32X4;
const I4: types::Type = types::I32X4;

impl Fx<'_, '_, '_> {
    /// Whether every node of a token sweep has a SIMD form (and the code is `f32`).
    pub(crate) fn simd_ok(&self, nodes: &[H]) -> bool {
        let m = self.e.m;
        !self.e.f64
            && nodes.iter().all(|&h| match *ex(m, h) {
                Expr::Reduce {
                    to, arg, filter, ..
                } => {
                    to != Level::Turn && self.lane_ok(arg) && filter.is_none_or(|f| self.lane_ok(f))
                }
                Expr::Unary { arg, .. } => self.lane_ok(arg),
                Expr::Binary { lhs, rhs, .. } => self.lane_ok(lhs) && self.lane_ok(rhs),
                Expr::Select {
                    cond,
                    on_true,
                    on_false,
                } => self.lane_ok(cond) && self.lane_ok(on_true) && self.lane_ok(on_false),
                Expr::Const(_)
                | Expr::Bool(_)
                | Expr::Param(_)
                | Expr::Input(_)
                | Expr::Index(_)
                | Expr::Broadcast { .. }
                | Expr::Detach { .. }
                | Expr::Scan { .. }
                | Expr::Rank { .. }
                | Expr::Quantile { .. }
                | Expr::PosReduce { .. } => false,
            })
    }

    /// Whether an operand can be read for 4 consecutive tokens of one sequence without a gather.
    fn lane_ok(&self, h: H) -> bool {
        let m = self.e.m;
        match m.level(h) {
            Level::Turn => false,
            Level::Tok => match *ex(m, h) {
                Expr::Broadcast { arg, .. } | Expr::Detach { arg } => self.lane_ok(arg),
                Expr::Index(IndexKind::TurnIndex) => false,
                Expr::Const(_)
                | Expr::Bool(_)
                | Expr::Param(_)
                | Expr::Input(_)
                | Expr::Index(IndexKind::Pos)
                | Expr::Unary { .. }
                | Expr::Binary { .. }
                | Expr::Select { .. }
                | Expr::Reduce { .. }
                | Expr::Scan { .. }
                | Expr::Rank { .. }
                | Expr::Quantile { .. }
                | Expr::PosReduce { .. } => true,
            },
            Level::Seq | Level::Group | Level::Batch => true,
        }
    }

    /// The vector part of a token sweep over `a..e`: returns where the scalar tail starts.
    pub(crate) fn sweep_simd(
        &mut self,
        nodes: &[H],
        accs: &HashMap<H, Acc>,
        a: Value,
        e: Value,
        s: Value,
        g: Value,
    ) -> R<Value> {
        let m = self.e.m;
        let n = self.b.ins().isub(e, a);
        let n4 = self.b.ins().band_imm_s(n, -4);
        let ve = self.b.ins().iadd(a, n4);
        // Lane accumulators (and kept-element counts for max/min).
        let mut vaccs: HashMap<H, (Variable, Option<Variable>, ReduceOp)> = HashMap::new();
        for &h in nodes {
            let Expr::Reduce { op, .. } = *ex(m, h) else {
                continue;
            };
            let Some(Acc::Var { cnt, .. }) = accs.get(&h) else {
                return Err(BackendError::at(
                    m,
                    h,
                    "SIMD sweep: reduction without accumulator",
                ));
            };
            let acc = self.b.declare_var(F4);
            let init = self.init_of(op);
            let init = self.b.ins().splat(F4, init);
            self.b.def_var(acc, init);
            let vcnt = cnt.map(|_| {
                let v = self.b.declare_var(I4);
                let z = self.b.ins().iconst(types::I32, 0);
                let z = self.b.ins().splat(I4, z);
                self.b.def_var(v, z);
                v
            });
            vaccs.insert(h, (acc, vcnt, op));
        }
        self.counted_loop(a, ve, 4, &mut |fx, j| {
            let mut c = Ctx::at(Level::Tok, j);
            c.s = Some(s);
            c.g = Some(g);
            fx.vlocal.clear();
            fx.local.clear();
            for &h in nodes {
                if let Expr::Reduce { arg, filter, .. } = *ex(m, h) {
                    let x = fx.vvalue(arg, &mut c)?;
                    let f = match filter {
                        Some(f) => Some(fx.vvalue(f, &mut c)?),
                        None => None,
                    };
                    let &(acc, vcnt, op) = vaccs
                        .get(&h)
                        .ok_or_else(|| BackendError::at(m, h, "SIMD accumulator"))?;
                    let old = fx.b.use_var(acc);
                    let new = fx.combine(op, old, x);
                    let new = match f {
                        Some(f) => fx.vselect(f, new, old),
                        None => new,
                    };
                    fx.b.def_var(acc, new);
                    if let Some(cv) = vcnt {
                        let k = fx.b.use_var(cv);
                        let k1 = match f {
                            // A true lane is all ones (−1): subtracting counts it.
                            Some(f) => fx.b.ins().isub(k, f),
                            None => {
                                let one = fx.b.ins().iconst(types::I32, 1);
                                let one = fx.b.ins().splat(I4, one);
                                fx.b.ins().iadd(k, one)
                            }
                        };
                        fx.b.def_var(cv, k1);
                    }
                } else {
                    let v = fx.vcompute(h, &mut c)?;
                    fx.vlocal.insert(h, v);
                    fx.vstore_node(h, j, v)?;
                }
            }
            fx.vlocal.clear();
            Ok(())
        })?;
        // Fold the lanes into the scalar accumulators: (l0 ∘ l1) ∘ (l2 ∘ l3).
        for &h in nodes {
            let (Some(&(vacc, vcnt, op)), Some(Acc::Var { acc, cnt })) =
                (vaccs.get(&h), accs.get(&h))
            else {
                continue;
            };
            let v = self.b.use_var(vacc);
            let [l0, l1, l2, l3] = [0u8, 1, 2, 3].map(|i| self.b.ins().extractlane(v, i));
            let lo = self.combine(op, l0, l1);
            let hi = self.combine(op, l2, l3);
            let all = self.combine(op, lo, hi);
            self.b.def_var(*acc, all);
            if let (Some(vc), Some(cv)) = (vcnt, cnt) {
                let k = self.b.use_var(vc);
                let [l0, l1, l2, l3] = [0u8, 1, 2, 3].map(|i| self.b.ins().extractlane(k, i));
                let lo = self.b.ins().iadd(l0, l1);
                let hi = self.b.ins().iadd(l2, l3);
                let all = self.b.ins().iadd(lo, hi);
                let all = self.b.ins().sextend(types::I64, all);
                self.b.def_var(*cv, all);
            }
        }
        Ok(ve)
    }

    fn splat_f(&mut self, c: f32) -> Value {
        let k = self.b.ins().f32const(c);
        self.b.ins().splat(F4, k)
    }

    fn splat_i(&mut self, c: i32) -> Value {
        let k = self.b.ins().iconst(types::I32, i64::from(c));
        self.b.ins().splat(I4, k)
    }

    fn lanes(&mut self, ty: types::Type, v: Value) -> Value {
        let fl = MemFlagsData::new().with_endianness(Endianness::Little);
        self.b.ins().bitcast(ty, fl, v)
    }

    /// `mask ? a : b` lane by lane (`mask` an `i32x4` of all ones / zeros).
    fn vselect(&mut self, mask: Value, a: Value, b: Value) -> Value {
        let ty = self.b.func.dfg.value_type(a);
        let mask = if ty == I4 { mask } else { self.lanes(ty, mask) };
        self.b.ins().bitselect(mask, a, b)
    }

    fn vload(&mut self, buf: usize, j: Value) -> Value {
        let a = self.elem_addr(buf, j);
        let base = MemFlagsData::new().with_notrap();
        let fl = if self.movable_for(buf) {
            base.with_readonly().with_can_move()
        } else {
            base
        };
        self.b.ins().load(F4, fl, a, 0)
    }

    fn vstore_node(&mut self, h: H, j: Value, v: Value) -> R<()> {
        if let Some(Loc::Buf(buf)) = self.e.plan.loc.get(h.index()).copied() {
            let v = if self.is_bool(h) {
                self.mask_to_f(v)
            } else {
                v
            };
            self.stored.insert(buf);
            let a = self.elem_addr(buf, j);
            self.b
                .ins()
                .store(MemFlagsData::new().with_notrap(), v, a, 0);
        }
        Ok(())
    }

    fn mask_to_f(&mut self, mask: Value) -> Value {
        let one = self.splat_f(1.0);
        let zero = self.splat_f(0.0);
        self.vselect(mask, one, zero)
    }

    /// The value of `h` at the 4 tokens from the context's token (splatted above `tok`).
    fn vvalue(&mut self, h: H, c: &mut Ctx) -> R<Value> {
        let m = self.e.m;
        if m.level(h) != Level::Tok {
            let v = self.value(h, c)?;
            return Ok(if self.is_bool(h) {
                let i = self.b.ins().bmask(types::I32, v);
                self.b.ins().splat(I4, i)
            } else {
                self.b.ins().splat(F4, v)
            });
        }
        if let Some(&v) = self.vlocal.get(&h) {
            return Ok(v);
        }
        let j =
            c.t.ok_or_else(|| BackendError::at(m, h, "SIMD read outside a token loop"))?;
        let from_buf = |fx: &mut Self, buf: usize| {
            let v = fx.vload(buf, j);
            Ok(if fx.is_bool(h) {
                let z = fx.splat_f(0.0);
                fx.b.ins().fcmp(FloatCC::NotEqual, v, z)
            } else {
                v
            })
        };
        match *ex(m, h) {
            Expr::Broadcast { arg, .. } | Expr::Detach { arg } => self.vvalue(arg, c),
            Expr::Input(i) => {
                let buf = *self
                    .e
                    .plan
                    .input_buf
                    .get(i as usize)
                    .ok_or_else(|| BackendError::at(m, h, "unknown input"))?;
                from_buf(self, buf)
            }
            Expr::Index(IndexKind::Pos) => {
                let s = self.idx(c, Level::Seq)?;
                let start = self.load_u32(super::clif::LAY_SEQ_OFFSETS, s)?;
                let d = self.b.ins().isub(j, start);
                let d = self.b.ins().ireduce(types::I32, d);
                let d = self.b.ins().splat(I4, d);
                let iota = self.iota();
                let p = self.b.ins().iadd(d, iota);
                Ok(self.b.ins().fcvt_from_sint(F4, p))
            }
            Expr::Const(_)
            | Expr::Bool(_)
            | Expr::Param(_)
            | Expr::Index(IndexKind::TurnIndex)
            | Expr::Unary { .. }
            | Expr::Binary { .. }
            | Expr::Select { .. }
            | Expr::Reduce { .. }
            | Expr::Scan { .. }
            | Expr::Rank { .. }
            | Expr::Quantile { .. }
            | Expr::PosReduce { .. } => match self.e.plan.loc.get(h.index()) {
                Some(Loc::Buf(b)) => from_buf(self, *b),
                _ => Err(BackendError::at(
                    m,
                    h,
                    "value read outside the sweep computing it",
                )),
            },
        }
    }

    fn iota(&mut self) -> Value {
        let bytes: Vec<u8> = (0..4i32).flat_map(|i| i.to_le_bytes()).collect();
        let c = self.b.func.dfg.constants.insert(ConstantData::from(bytes));
        self.b.ins().vconst(I4, c)
    }

    /// Elementwise nodes on 4 tokens.
    fn vcompute(&mut self, h: H, c: &mut Ctx) -> R<Value> {
        let m = self.e.m;
        match *ex(m, h) {
            Expr::Unary { op, arg } => {
                let x = self.vvalue(arg, c)?;
                Ok(match op {
                    UnaryOp::Neg => self.b.ins().fneg(x),
                    UnaryOp::Not => self.b.ins().bnot(x),
                    UnaryOp::ToF32 => self.mask_to_f(x),
                    UnaryOp::Exp => self.exp_f32x4(x),
                    UnaryOp::Sqrt => self.b.ins().sqrt(x),
                    UnaryOp::Abs => self.b.ins().fabs(x),
                    UnaryOp::Log => self.per_lane("log", &[x])?,
                    UnaryOp::Log1p => self.per_lane("log1p", &[x])?,
                    UnaryOp::Expm1 => self.per_lane("expm1", &[x])?,
                    UnaryOp::Lgamma => self.per_lane("lgamma", &[x])?,
                    UnaryOp::Digamma => self.per_lane("digamma", &[x])?,
                    UnaryOp::Sigmoid => self.per_lane("sigmoid", &[x])?,
                    UnaryOp::Softplus => self.per_lane("softplus", &[x])?,
                    UnaryOp::Tanh => self.per_lane("tanh", &[x])?,
                    UnaryOp::Floor => self.b.ins().floor(x),
                    UnaryOp::Ceil => self.b.ins().ceil(x),
                    UnaryOp::Round => self.b.ins().nearest(x),
                })
            }
            Expr::Binary { op, lhs, rhs } => {
                let a = self.vvalue(lhs, c)?;
                let b = self.vvalue(rhs, c)?;
                let cmp = |fx: &mut Self, cc| fx.b.ins().fcmp(cc, a, b);
                Ok(match op {
                    BinaryOp::Add => self.b.ins().fadd(a, b),
                    BinaryOp::Sub => self.b.ins().fsub(a, b),
                    BinaryOp::Mul => self.b.ins().fmul(a, b),
                    BinaryOp::Div => self.b.ins().fdiv(a, b),
                    BinaryOp::Pow => self.per_lane("pow", &[a, b])?,
                    BinaryOp::Min => self.b.ins().fmin(a, b),
                    BinaryOp::Max => self.b.ins().fmax(a, b),
                    BinaryOp::Lt => cmp(self, FloatCC::LessThan),
                    BinaryOp::Le => cmp(self, FloatCC::LessThanOrEqual),
                    BinaryOp::Gt => cmp(self, FloatCC::GreaterThan),
                    BinaryOp::Ge => cmp(self, FloatCC::GreaterThanOrEqual),
                    BinaryOp::Eq => cmp(self, FloatCC::Equal),
                    BinaryOp::Ne => cmp(self, FloatCC::NotEqual),
                    BinaryOp::And => self.b.ins().band(a, b),
                    BinaryOp::Or => self.b.ins().bor(a, b),
                })
            }
            Expr::Select {
                cond,
                on_true,
                on_false,
            } => {
                let cv = self.vvalue(cond, c)?;
                let a = self.vvalue(on_true, c)?;
                let b = self.vvalue(on_false, c)?;
                Ok(self.vselect(cv, a, b))
            }
            Expr::Const(_)
            | Expr::Bool(_)
            | Expr::Param(_)
            | Expr::Input(_)
            | Expr::Index(_)
            | Expr::Broadcast { .. }
            | Expr::Reduce { .. }
            | Expr::Scan { .. }
            | Expr::Rank { .. }
            | Expr::Quantile { .. }
            | Expr::PosReduce { .. }
            | Expr::Detach { .. } => self.vvalue(h, c),
        }
    }

    /// A Rust math helper applied to each lane.
    fn per_lane(&mut self, op: &str, args: &[Value]) -> R<Value> {
        let mut out = args.first().copied().ok_or_else(|| {
            BackendError::general("internal: math call without arguments".to_string())
        })?;
        for i in 0..4u8 {
            let xs: Vec<Value> = args
                .iter()
                .map(|&a| self.b.ins().extractlane(a, i))
                .collect();
            let r = self.math(op, &xs)?;
            out = self.b.ins().insertlane(out, r, i);
        }
        Ok(out)
    }

    /// The inline exp of one `f32` (lane 0 of the SIMD code, so scalar and SIMD sweeps agree to
    /// the bit).
    pub(crate) fn exp_f32(&mut self, x: Value) -> Value {
        let v = self.b.ins().scalar_to_vector(F4, x);
        let y = self.exp_f32x4(v);
        self.b.ins().extractlane(y, 0)
    }

    /// The inline exp of 4 `f32`s (algorithm and accuracy: module docs).
    pub(crate) fn exp_f32x4(&mut self, x: Value) -> Value {
        let hi = self.splat_f(89.0);
        let lo = self.splat_f(-104.0);
        let over = self.b.ins().fcmp(FloatCC::GreaterThan, x, hi);
        let x = self.vselect(over, hi, x);
        let under = self.b.ins().fcmp(FloatCC::LessThan, x, lo);
        let x = self.vselect(under, lo, x);
        // n = round(x / ln 2), as a float and as an integer.
        let log2e = self.splat_f(std::f32::consts::LOG2_E);
        let magic = self.splat_f(12_582_912.0); // 1.5 · 2^23
        let t = self.b.ins().fmul(x, log2e);
        let t = self.b.ins().fadd(t, magic);
        let n = self.b.ins().fsub(t, magic);
        let tb = self.lanes(I4, t);
        let magic_bits = self.splat_i(0x4B40_0000);
        let ni = self.b.ins().isub(tb, magic_bits);
        // r = x − n·ln 2 (Cody–Waite).
        let c1 = self.splat_f(355.0 / 512.0);
        let c2 = self.splat_f(-2.121_944_4e-4);
        let nc1 = self.b.ins().fmul(n, c1);
        let r = self.b.ins().fsub(x, nc1);
        let nc2 = self.b.ins().fmul(n, c2);
        let r = self.b.ins().fsub(r, nc2);
        // e^r ≈ 1 + r + r²·P(r) (Cephes expf).
        const P: [f32; 6] = [
            1.987_569_1e-4,
            1.398_199_9e-3,
            8.333_452e-3,
            4.166_579_6e-2,
            1.666_666_5e-1,
            0.5,
        ];
        let mut p = self.splat_f(P[0]);
        for &k in &P[1..] {
            let pr = self.b.ins().fmul(p, r);
            let kv = self.splat_f(k);
            p = self.b.ins().fadd(pr, kv);
        }
        let z = self.b.ins().fmul(r, r);
        let y = self.b.ins().fmul(p, z);
        let y = self.b.ins().fadd(y, r);
        let one = self.splat_f(1.0);
        let y = self.b.ins().fadd(y, one);
        // · 2^n1 · 2^n2 with n1 = ⌊n/2⌋, n2 = n − n1 (each a normal power of two).
        let n1 = self.b.ins().sshr_imm_u(ni, 1);
        let n2 = self.b.ins().isub(ni, n1);
        let bias = self.splat_i(127);
        let mut out = y;
        for k in [n1, n2] {
            let e = self.b.ins().iadd(k, bias);
            let e = self.b.ins().ishl_imm_u(e, 23);
            let s = self.lanes(F4, e);
            out = self.b.ins().fmul(out, s);
        }
        out
    }
}
