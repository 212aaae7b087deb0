//! Serial ("small") reductions for the Cranelift backend: the generic loop (`small_reduce`), and
//! its fast forms: element counts read from the layout, and token/turn → sequence reductions with
//! the accumulator in a register. Both give the same values as the generic loop (same order of
//! operations).

use super::clif::{BackendError, LAY_SEQ_GROUP};
use super::clif_emit::{Ctx, Fx, R};
use super::clif_plan::ex;
use crate::arena::Handle;
use crate::ir::{Expr, ReduceOp};
use crate::types::Level;
use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{types, InstBuilder, Value};

type H = Handle<Expr>;

/// Whether `h` is the constant 1 broadcast (possibly several times) to some level.
fn is_one(m: &crate::ir::Module, mut h: H) -> bool {
    loop {
        match *ex(m, h) {
            Expr::Broadcast { arg, .. } | Expr::Detach { arg } => h = arg,
            Expr::Const(c) => return c == 1.0,
            Expr::Bool(_)
            | Expr::Param(_)
            | Expr::Input(_)
            | Expr::Index(_)
            | Expr::Unary { .. }
            | Expr::Binary { .. }
            | Expr::Select { .. }
            | Expr::Reduce { .. }
            | Expr::Scan { .. }
            | Expr::Rank { .. }
            | Expr::Quantile { .. }
            | Expr::PosReduce { .. } => return false,
        }
    }
}

impl Fx<'_, '_, '_> {
    /// Emits reduction `h` in a fast form if one applies; `false` leaves it to the generic loop.
    pub(crate) fn fast_reduce(&mut self, h: H) -> R<bool> {
        let m = self.e.m;
        let Expr::Reduce {
            op,
            arg,
            to,
            filter,
        } = *ex(m, h)
        else {
            return Err(BackendError::at(m, h, "not a reduction"));
        };
        let from = m.level(arg);
        if op == ReduceOp::Sum && filter.is_none() && is_one(m, arg) {
            return self.count_reduce(h, from, to);
        }
        if to == Level::Seq && matches!(from, Level::Tok | Level::Turn) {
            self.seq_reduce(h, op, arg, filter, from)?;
            return Ok(true);
        }
        Ok(false)
    }

    /// `X_sum(1)`, the number of `from` elements in each `to` element (the counts the front end
    /// lowers `seq_len`, means and counts to): read from the layout instead of adding ones
    /// serially over every token. Exact (the f32 sum of ones is exact below 2^24 elements, where
    /// this conversion stays exact too).
    fn count_reduce(&mut self, h: H, from: Level, to: Level) -> R<bool> {
        let out = self.node_buf(h)?;
        let cnt = self.e.plan.count.get(&h).copied();
        let put = |fx: &mut Self, i: Value, n: Value| {
            let nf = if fx.e.f64 {
                fx.b.ins().fcvt_from_sint(types::F64, n)
            } else {
                fx.b.ins().fcvt_from_sint(types::F32, n)
            };
            fx.store_elem(out, i, nf);
            if let Some(cb) = cnt {
                fx.store_elem(cb, i, nf);
            }
        };
        match (from, to) {
            (_, Level::Batch) => {
                let n = self.count(from)?;
                let zero = self.b.ins().iconst(types::I64, 0);
                put(self, zero, n);
            }
            (Level::Tok | Level::Turn, Level::Seq) => {
                self.for_level(Level::Seq, &mut |fx, s, _| {
                    let (a, e) = fx.seq_range(from, s)?;
                    let n = fx.b.ins().isub(e, a);
                    put(fx, s, n);
                    Ok(())
                })?;
            }
            (Level::Tok | Level::Turn | Level::Seq | Level::Group | Level::Batch, _) => {
                return Ok(false)
            }
        }
        Ok(true)
    }

    /// A token (or turn) → sequence reduction: per sequence, the accumulator (and the count of
    /// kept elements, for max/min and filters) stays in registers; one store per sequence.
    fn seq_reduce(&mut self, h: H, op: ReduceOp, arg: H, filter: Option<H>, from: Level) -> R<()> {
        let out = self.node_buf(h)?;
        let cnt = self.e.plan.count.get(&h).copied();
        let t = self.e.t;
        self.for_level(Level::Seq, &mut |fx, s, _| {
            let g = fx.load_u32(LAY_SEQ_GROUP, s)?;
            let (a, e) = fx.seq_range(from, s)?;
            let acc = fx.b.declare_var(t);
            let n = fx.b.declare_var(t);
            let init = fx.init_of(op);
            let z = fx.fconst(0.0);
            fx.b.def_var(acc, init);
            fx.b.def_var(n, z);
            fx.for_range(a, e, false, &mut |fx, i, _| {
                let mut c = Ctx::at(from, i);
                c.s = Some(s);
                c.g = Some(g);
                let x = fx.value(arg, &mut c)?;
                let f = match filter {
                    Some(f) => Some(fx.value(f, &mut c)?),
                    None => None,
                };
                let old = fx.b.use_var(acc);
                let new = fx.combine(op, old, x);
                let new = match f {
                    Some(f) => fx.b.ins().select(f, new, old),
                    None => new,
                };
                fx.b.def_var(acc, new);
                if cnt.is_some() {
                    let k = fx.b.use_var(n);
                    let one = match f {
                        Some(f) => fx.bool_to_t(f),
                        None => fx.fconst(1.0),
                    };
                    let k1 = fx.b.ins().fadd(k, one);
                    fx.b.def_var(n, k1);
                }
                Ok(())
            })?;
            let v = fx.b.use_var(acc);
            match cnt {
                Some(cb) => {
                    let k = fx.b.use_var(n);
                    fx.store_elem(cb, s, k);
                    let z = fx.fconst(0.0);
                    let empty = fx.b.ins().fcmp(FloatCC::Equal, k, z);
                    let v = fx.b.ins().select(empty, z, v);
                    fx.store_elem(out, s, v);
                }
                None => fx.store_elem(out, s, v),
            }
            Ok(())
        })
    }
}

impl Fx<'_, '_, '_> {
    /// A reduction as a serial loop over the elements of its argument (or, for `combine`, over
    /// the per-sequence partials of a token pass), in packed order.
    pub(crate) fn small_reduce(&mut self, h: H, combine: bool) -> R<()> {
        let m = self.e.m;
        let Expr::Reduce {
            op,
            arg,
            to,
            filter,
        } = *ex(m, h)
        else {
            return Err(BackendError::at(m, h, "not a reduction"));
        };
        if !combine && self.fast_reduce(h)? {
            return Ok(());
        }
        let out = self.node_buf(h)?;
        let cnt = self.e.plan.count.get(&h).copied();
        let partial = self.e.plan.partial.get(&h).copied();
        self.for_level(to, &mut |fx, i, _| {
            let v = fx.init_of(op);
            fx.store_elem(out, i, v);
            if let Some(cb) = cnt {
                let z = fx.fconst(0.0);
                fx.store_elem(cb, i, z);
            }
            Ok(())
        })?;
        let from = if combine { Level::Seq } else { m.level(arg) };
        self.for_level(from, &mut |fx, i, _| {
            let mut c = Ctx::at(from, i);
            let (x, f) = match (combine, partial) {
                (true, Some((pb, pc))) => {
                    let x = fx.load_elem(pb, i);
                    let f = match pc {
                        Some(pc) => {
                            let n = fx.load_elem(pc, i);
                            let z = fx.fconst(0.0);
                            Some(fx.b.ins().fcmp(FloatCC::GreaterThan, n, z))
                        }
                        None => None,
                    };
                    (x, f)
                }
                (true, None) => return Err(BackendError::at(m, h, "missing partials")),
                (false, _) => {
                    let x = fx.value(arg, &mut c)?;
                    let f = match filter {
                        Some(f) => Some(fx.value(f, &mut c)?),
                        None => None,
                    };
                    (x, f)
                }
            };
            let j = fx.idx(&mut c, to)?;
            let old = fx.load_elem(out, j);
            let new = fx.combine(op, old, x);
            let new = match f {
                Some(f) => fx.b.ins().select(f, new, old),
                None => new,
            };
            fx.store_elem(out, j, new);
            if let Some(cb) = cnt {
                let n = fx.load_elem(cb, j);
                let one = match f {
                    Some(f) => fx.bool_to_t(f),
                    None => fx.fconst(1.0),
                };
                let n1 = fx.b.ins().fadd(n, one);
                fx.store_elem(cb, j, n1);
            }
            Ok(())
        })?;
        if let Some(cb) = cnt {
            self.for_level(to, &mut |fx, i, _| fx.zero_if_empty(out, cb, i))?;
        }
        Ok(())
    }

    /// `out[i] = 0` where `count[i] == 0` (max/min of an empty set).
    pub(crate) fn zero_if_empty(&mut self, out: usize, cb: usize, i: Value) -> R<()> {
        let n = self.load_elem(cb, i);
        let z = self.fconst(0.0);
        let empty = self.b.ins().fcmp(FloatCC::Equal, n, z);
        let v = self.load_elem(out, i);
        let v = self.b.ins().select(empty, z, v);
        self.store_elem(out, i, v);
        Ok(())
    }
}
