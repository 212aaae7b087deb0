//! Scans along a sequence and the calls of Rust helpers (rank, quantile, per-position group
//! reductions) for the Cranelift backend.

use super::clif::BackendError;
use super::clif_emit::{symbol, Ctx, Fx, R};
use super::clif_plan::{base, ex};
use crate::arena::Handle;
use crate::ir::{Expr, ScanOp};
use crate::types::Level;
use cranelift_codegen::ir::{types, InstBuilder, Value};

type H = Handle<Expr>;

impl Fx<'_, '_, '_> {
    /// A scan over the tokens or turns of sequence `s`.
    pub(crate) fn scan_seq(&mut self, h: H, s: Value, g: Value) -> R<()> {
        let m = self.e.m;
        let Expr::Scan { op, arg, discount } = *ex(m, h) else {
            return Err(BackendError::at(m, h, "not a scan"));
        };
        let level = m.level(h);
        let out = self.node_buf(h)?;
        let (a, e) = self.seq_range(level, s)?;
        let acc = self.b.declare_var(self.e.t);
        let z = self.fconst(0.0);
        self.b.def_var(acc, z);
        // The discount at the previous element (DiscountedCumSum reads d[t−1]).
        let prev_d = self.b.declare_var(self.e.t);
        self.b.def_var(prev_d, z);
        let rev = matches!(
            op,
            ScanOp::RevCumSum | ScanOp::DiscountedRevCumSum | ScanOp::Next
        );
        self.for_range(a, e, rev, &mut |fx, i, first| {
            let mut c = Ctx::at(level, i);
            c.s = Some(s);
            c.g = Some(g);
            let x = fx.value(arg, &mut c)?;
            let prev = fx.b.use_var(acc);
            let v = match (op, discount) {
                (ScanOp::DiscountedRevCumSum, Some(d)) => {
                    let d = fx.value(d, &mut c)?;
                    let dp = fx.b.ins().fmul(d, prev);
                    let sum = fx.b.ins().fadd(x, dp);
                    fx.b.ins().select(first, x, sum)
                }
                (ScanOp::DiscountedCumSum, Some(d)) => {
                    let dprev = fx.b.use_var(prev_d);
                    let dp = fx.b.ins().fmul(dprev, prev);
                    let sum = fx.b.ins().fadd(x, dp);
                    let d = fx.value(d, &mut c)?;
                    fx.b.def_var(prev_d, d);
                    fx.b.ins().select(first, x, sum)
                }
                (ScanOp::DiscountedRevCumSum | ScanOp::DiscountedCumSum, None) => {
                    return Err(BackendError::at(m, h, "discounted scan without discount"))
                }
                (ScanOp::CumSum | ScanOp::RevCumSum, _) => fx.b.ins().fadd(prev, x),
                // the shifts: the element visited before (0 for the first visited), and this
                // element is carried to the next one visited
                (ScanOp::Next | ScanOp::Prev, _) => {
                    fx.b.def_var(acc, x);
                    fx.store_elem(out, i, prev);
                    return Ok(());
                }
            };
            fx.b.def_var(acc, v);
            fx.store_elem(out, i, v);
            Ok(())
        })
    }

    pub(crate) fn helper(&mut self, h: H) -> R<()> {
        let m = self.e.m;
        let out = self.node_buf(h)?;
        self.stored.insert(out);
        let out_p = self.ptr(out);
        let lay = self.lay;
        let counts = self.counts;
        let lvl = |fx: &mut Self, l: Level| fx.b.ins().iconst(types::I32, l as i64);
        match *ex(m, h) {
            Expr::Rank { arg, within } => {
                let a = self.mem(arg)?;
                let al = lvl(self, m.level(arg));
                let wl = lvl(self, within);
                let name = symbol("rank", self.e.f64);
                self.call(&name, &[lay, counts, a, al, wl, out_p], None)?;
            }
            Expr::Quantile { arg, q, to, filter } => {
                let a = self.mem(arg)?;
                let al = lvl(self, m.level(arg));
                let tl = lvl(self, to);
                let fp = match filter {
                    Some(f) => self.mem(f)?,
                    None => self.b.ins().iconst(types::I64, 0),
                };
                let mut c = Ctx::at(Level::Batch, fp);
                let qv = self.value(q, &mut c)?;
                let name = symbol("quantile", self.e.f64);
                self.call(&name, &[lay, counts, a, al, tl, fp, qv, out_p], None)?;
            }
            Expr::PosReduce { op, arg } => {
                let a = self.mem(arg)?;
                let code = self.b.ins().iconst(types::I32, op as i64);
                let name = symbol("posreduce", self.e.f64);
                self.call(&name, &[lay, counts, a, code, out_p], None)?;
            }
            Expr::Const(_)
            | Expr::Bool(_)
            | Expr::Param(_)
            | Expr::Input(_)
            | Expr::Index(_)
            | Expr::Unary { .. }
            | Expr::Binary { .. }
            | Expr::Select { .. }
            | Expr::Broadcast { .. }
            | Expr::Reduce { .. }
            | Expr::Scan { .. }
            | Expr::Detach { .. } => return Err(BackendError::at(m, h, "not a helper node")),
        }
        Ok(())
    }

    /// Pointer to the memory holding `h` at its own level (for helpers).
    pub(crate) fn mem(&mut self, h: H) -> R<Value> {
        let m = self.e.m;
        let plan = self.e.plan;
        let buf = if let Some(&b) = plan.copy.get(&h) {
            b
        } else if let Expr::Input(i) = *ex(m, h) {
            *plan
                .input_buf
                .get(i as usize)
                .ok_or_else(|| BackendError::at(m, h, "unknown input"))?
        } else if base(m, h) == Some(h) {
            self.node_buf(h)?
        } else {
            return Err(BackendError::at(m, h, "helper operand has no memory"));
        };
        Ok(self.ptr(buf))
    }
}
