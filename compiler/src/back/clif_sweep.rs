//! Token-pass emission: per sequence, its steps (seq blocks, turn and token sweeps, scans) with
//! the reductions' accumulators kept in registers.

use super::clif::BackendError;
use super::clif::LAY_SEQ_GROUP;
use super::clif_emit::{Ctx, Fx, R};
use super::clif_plan::{ex, Step, StepKind};
use crate::arena::Handle;
use crate::ir::{Expr, ReduceOp};
use crate::types::Level;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{types, InstBuilder, Value};
use cranelift_frontend::Variable;
use std::collections::HashMap;

type H = Handle<Expr>;

impl Fx<'_, '_, '_> {
    /// The token function: for each sequence in `s0..s1`, its steps in order.
    pub(crate) fn token(&mut self, steps: &[Step], s0: Value, s1: Value) -> R<()> {
        self.for_range(s0, s1, false, &mut |fx, s, _| {
            let g = fx.load_u32(LAY_SEQ_GROUP, s)?;
            for st in steps {
                fx.step(st, s, g)?;
            }
            Ok(())
        })
    }

    fn step(&mut self, st: &Step, s: Value, g: Value) -> R<()> {
        let m = self.e.m;
        match st.kind {
            StepKind::Seq => {
                for &h in &st.nodes {
                    let mut c = Ctx::at(Level::Seq, s);
                    c.g = Some(g);
                    let v = self.compute(h, &mut c)?;
                    self.store_node(h, s, v)?;
                }
                Ok(())
            }
            StepKind::Scan => {
                for &h in &st.nodes {
                    self.scan_seq(h, s, g)?;
                }
                Ok(())
            }
            StepKind::Tok | StepKind::Turn => {
                let level = if st.kind == StepKind::Tok {
                    Level::Tok
                } else {
                    Level::Turn
                };
                self.sweep(level, &st.nodes, s, g)
            }
        }
        .map_err(|e| match e.handle {
            None => BackendError {
                handle: st.nodes.first().copied(),
                span: st.nodes.first().map(|&h| m.span(h)).unwrap_or_default(),
                message: e.message,
            },
            Some(_) => e,
        })
    }
}

/// Where a reduction accumulates while a sweep walks one sequence.
pub(crate) enum Acc {
    /// Registers (to seq, or a per-sequence partial).
    Var {
        acc: Variable,
        cnt: Option<Variable>,
    },
    /// The turn buffer itself, indexed by the token's turn.
    Turn { out: usize, cnt: Option<usize> },
}

impl Fx<'_, '_, '_> {
    fn sweep(&mut self, level: Level, nodes: &[H], s: Value, g: Value) -> R<()> {
        let (a, e) = self.seq_range(level, s)?;
        let (ta, te) = if level == Level::Tok {
            self.seq_range(Level::Turn, s)?
        } else {
            (a, e)
        };
        let accs = self.sweep_accs(nodes, ta, te)?;
        // Tokens 4 at a time where every node has a SIMD form; the rest one at a time.
        let start = if level == Level::Tok && self.simd_ok(nodes) {
            self.sweep_simd(nodes, &accs, a, e, s, g)?
        } else {
            a
        };
        self.sweep_scalar(level, nodes, &accs, start, e, s, g)?;
        self.sweep_finish(nodes, &accs, s, ta, te)
    }

    /// Prologue: one accumulator per reduction of the sweep, initialized.
    fn sweep_accs(&mut self, nodes: &[H], ta: Value, te: Value) -> R<HashMap<H, Acc>> {
        let m = self.e.m;
        let mut accs: HashMap<H, Acc> = HashMap::new();
        for &h in nodes {
            let Expr::Reduce { op, to, .. } = *ex(m, h) else {
                continue;
            };
            let minmax = op != ReduceOp::Sum;
            if to == Level::Turn {
                let out = self.node_buf(h)?;
                let cnt = self.e.plan.count.get(&h).copied();
                self.for_range(ta, te, false, &mut |fx, k, _| {
                    let v = fx.init_of(op);
                    fx.store_elem(out, k, v);
                    if let Some(cb) = cnt {
                        let z = fx.fconst(0.0);
                        fx.store_elem(cb, k, z);
                    }
                    Ok(())
                })?;
                accs.insert(h, Acc::Turn { out, cnt });
            } else {
                let acc = self.b.declare_var(self.e.t);
                let init = self.init_of(op);
                self.b.def_var(acc, init);
                let cnt = minmax.then(|| {
                    let v = self.b.declare_var(types::I64);
                    let z = self.b.ins().iconst(types::I64, 0);
                    self.b.def_var(v, z);
                    v
                });
                accs.insert(h, Acc::Var { acc, cnt });
            }
        }
        Ok(accs)
    }

    /// The elements `a..e` of the sweep one at a time.
    #[allow(clippy::too_many_arguments)]
    fn sweep_scalar(
        &mut self,
        level: Level,
        nodes: &[H],
        accs: &HashMap<H, Acc>,
        a: Value,
        e: Value,
        s: Value,
        g: Value,
    ) -> R<()> {
        let m = self.e.m;
        self.for_range(a, e, false, &mut |fx, i, _| {
            let mut c = Ctx::at(level, i);
            c.s = Some(s);
            c.g = Some(g);
            fx.local.clear();
            for &h in nodes {
                if let Expr::Reduce {
                    op, arg, filter, ..
                } = *ex(m, h)
                {
                    let x = fx.value(arg, &mut c)?;
                    let f = match filter {
                        Some(f) => Some(fx.value(f, &mut c)?),
                        None => None,
                    };
                    match accs.get(&h) {
                        Some(Acc::Var { acc, cnt }) => {
                            let old = fx.b.use_var(*acc);
                            let new = fx.combine(op, old, x);
                            let new = match f {
                                Some(f) => fx.b.ins().select(f, new, old),
                                None => new,
                            };
                            fx.b.def_var(*acc, new);
                            if let Some(cv) = cnt {
                                let n = fx.b.use_var(*cv);
                                let inc = match f {
                                    Some(f) => fx.b.ins().uextend(types::I64, f),
                                    None => fx.b.ins().iconst(types::I64, 1),
                                };
                                let n1 = fx.b.ins().iadd(n, inc);
                                fx.b.def_var(*cv, n1);
                            }
                        }
                        Some(Acc::Turn { out, cnt }) => {
                            let (out, cnt) = (*out, *cnt);
                            let k = fx.idx(&mut c, Level::Turn)?;
                            let old = fx.load_elem(out, k);
                            let new = fx.combine(op, old, x);
                            let new = match f {
                                Some(f) => fx.b.ins().select(f, new, old),
                                None => new,
                            };
                            fx.store_elem(out, k, new);
                            if let Some(cb) = cnt {
                                let n = fx.load_elem(cb, k);
                                let one = match f {
                                    Some(f) => fx.bool_to_t(f),
                                    None => fx.fconst(1.0),
                                };
                                let n1 = fx.b.ins().fadd(n, one);
                                fx.store_elem(cb, k, n1);
                            }
                        }
                        None => {
                            return Err(BackendError::at(m, h, "reduction without accumulator"))
                        }
                    }
                } else {
                    let v = fx.compute(h, &mut c)?;
                    fx.local.insert(h, v);
                    fx.store_node(h, i, v)?;
                }
            }
            fx.local.clear();
            Ok(())
        })
    }

    /// Epilogue: finish and store the reductions.
    fn sweep_finish(
        &mut self,
        nodes: &[H],
        accs: &HashMap<H, Acc>,
        s: Value,
        ta: Value,
        te: Value,
    ) -> R<()> {
        let m = self.e.m;
        for &h in nodes {
            let Expr::Reduce { to, .. } = *ex(m, h) else {
                continue;
            };
            match accs.get(&h) {
                Some(Acc::Var { acc, cnt }) => {
                    let v = self.b.use_var(*acc);
                    let n = cnt.map(|cv| self.b.use_var(cv));
                    let v = match n {
                        Some(n) => {
                            let z = self.fconst(0.0);
                            let empty = self.b.ins().icmp_imm_s(IntCC::Equal, n, 0);
                            self.b.ins().select(empty, z, v)
                        }
                        None => v,
                    };
                    if to == Level::Seq {
                        let out = self.node_buf(h)?;
                        self.store_elem(out, s, v);
                    } else {
                        let (pb, pc) = self
                            .e
                            .plan
                            .partial
                            .get(&h)
                            .copied()
                            .ok_or_else(|| BackendError::at(m, h, "missing partials"))?;
                        self.store_elem(pb, s, v);
                        if let (Some(pc), Some(n)) = (pc, n) {
                            let nf = self.b.ins().fcvt_from_sint(self.e.t, n);
                            self.store_elem(pc, s, nf);
                        }
                    }
                }
                Some(Acc::Turn { out, cnt: Some(cb) }) => {
                    let (out, cb) = (*out, *cb);
                    self.for_range(ta, te, false, &mut |fx, k, _| fx.zero_if_empty(out, cb, k))?;
                }
                Some(Acc::Turn { cnt: None, .. }) => {}
                None => return Err(BackendError::at(m, h, "reduction without accumulator")),
            }
        }
        Ok(())
    }
}
