//! IR validator, run between passes: handles point backwards, every node's type follows its
//! variant's typing rule (see `ir::Expr`; broadcasts are explicit, so elementwise operands share
//! the result's level), roots have the right types (loss `batch f32`, metrics `batch`, gradients
//! `f32` at their input's level, one per input at most, only for `diff` inputs).

use crate::arena::Handle;
use crate::ir::{BinaryOp, Expr, IndexKind, Module, ScanOp, UnaryOp};
use crate::types::{DType, Level, Ty};
use rlo_grammar::{Diagnostic, SourceMap, Span};

#[derive(Debug, thiserror::Error)]
#[error("invalid IR at {node}: {message}")]
pub struct ValidationError {
    pub node: String,
    pub span: Span,
    pub message: String,
}

impl ValidationError {
    pub fn to_diagnostic(&self, pass: &str, _sources: &SourceMap) -> Diagnostic {
        Diagnostic::error(
            "E9001",
            format!("internal compiler error after pass `{pass}`: {}", self),
        )
        .with_primary(self.span, "while compiling this")
        .with_note("this is a bug in rloc; please report it with this file")
    }
}

const F32: DType = DType::F32;
const BOOL: DType = DType::Bool;

/// Checks every invariant of `ir` (module docs there); the error names the first bad node.
pub fn validate(m: &Module) -> Result<(), ValidationError> {
    if m.types.len() != m.exprs.len() {
        return Err(ValidationError {
            node: "module".into(),
            span: Span::default(),
            message: format!("{} types for {} expressions", m.types.len(), m.exprs.len()),
        });
    }
    for (h, e) in m.exprs.iter() {
        check_node(m, h, e).map_err(|message| ValidationError {
            node: h.to_string(),
            span: m.span(h),
            message,
        })?;
    }
    check_roots(m)
}

fn check_roots(m: &Module) -> Result<(), ValidationError> {
    let err = |h: Handle<Expr>, what: &str, message: String| ValidationError {
        node: format!("{what} {h}"),
        span: m.exprs.get(h).map(|_| m.span(h)).unwrap_or_default(),
        message,
    };
    let exists = |h: Handle<Expr>, what: &str| {
        if h.index() < m.exprs.len() {
            Ok(())
        } else {
            Err(err(h, what, "root handle out of range".into()))
        }
    };
    exists(m.loss, "loss")?;
    if m.ty(m.loss) != Ty::new(Level::Batch, F32) {
        return Err(err(
            m.loss,
            "loss",
            format!("loss must be batch f32, is {}", m.ty(m.loss)),
        ));
    }
    for n in &m.metrics {
        exists(n.value, "metric")?;
        if m.level(n.value) != Level::Batch {
            return Err(err(
                n.value,
                "metric",
                format!("metric `{}` must be at batch level", n.name),
            ));
        }
    }
    for n in &m.outputs {
        exists(n.value, "output")?;
    }
    let mut seen = vec![false; m.inputs.len()];
    for g in &m.grads {
        exists(g.value, "grad")?;
        let Some(inp) = m.inputs.get(g.input as usize) else {
            return Err(err(g.value, "grad", format!("no input {}", g.input)));
        };
        if !inp.diff {
            return Err(err(
                g.value,
                "grad",
                format!("gradient for non-diff input `{}`", inp.name),
            ));
        }
        if seen
            .get_mut(g.input as usize)
            .is_some_and(|s| std::mem::replace(s, true))
        {
            return Err(err(
                g.value,
                "grad",
                format!("two gradients for `{}`", inp.name),
            ));
        }
        let want = Ty::new(inp.ty.level, F32);
        if m.ty(g.value) != want {
            return Err(err(
                g.value,
                "grad",
                format!(
                    "gradient of `{}` must be {want}, is {}",
                    inp.name,
                    m.ty(g.value)
                ),
            ));
        }
    }
    Ok(())
}

fn expect(ok: bool, msg: impl FnOnce() -> String) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(msg())
    }
}

fn check_node(m: &Module, h: Handle<Expr>, e: &Expr) -> Result<(), String> {
    for o in e.operands() {
        expect(o < h, || {
            format!("operand {o} does not come before its user")
        })?;
    }
    let ty = m.ty(h);
    let t = |o: Handle<Expr>| m.ty(o);
    let is = |want: Ty| {
        expect(ty == want, || {
            format!("type is {ty}, the rule gives {want}")
        })
    };
    match *e {
        Expr::Const(_) | Expr::Param(_) => {
            if let Expr::Param(i) = *e {
                expect((i as usize) < m.params.len(), || format!("no param {i}"))?;
            }
            is(Ty::new(Level::Batch, F32))
        }
        Expr::Bool(_) => is(Ty::new(Level::Batch, BOOL)),
        Expr::Input(i) => {
            let inp = m.inputs.get(i as usize).ok_or(format!("no input {i}"))?;
            is(inp.ty)
        }
        Expr::Index(IndexKind::Pos) => is(Ty::new(Level::Tok, F32)),
        Expr::Index(IndexKind::TurnIndex) => is(Ty::new(Level::Turn, F32)),
        Expr::Unary { op, arg } => {
            let (from, to) = match op {
                UnaryOp::Not => (BOOL, BOOL),
                UnaryOp::ToF32 => (BOOL, F32),
                UnaryOp::Neg
                | UnaryOp::Exp
                | UnaryOp::Log
                | UnaryOp::Log1p
                | UnaryOp::Expm1
                | UnaryOp::Sqrt
                | UnaryOp::Abs
                | UnaryOp::Sigmoid
                | UnaryOp::Softplus
                | UnaryOp::Tanh
                | UnaryOp::Floor
                | UnaryOp::Ceil
                | UnaryOp::Round
                | UnaryOp::Lgamma
                | UnaryOp::Digamma => (F32, F32),
            };
            expect(t(arg) == Ty::new(ty.level, from), || {
                format!("{op:?} operand is {}, expected {} {from}", t(arg), ty.level)
            })?;
            is(Ty::new(t(arg).level, to))
        }
        Expr::Binary { op, lhs, rhs } => {
            let (from, to) = binary_types(op);
            for o in [lhs, rhs] {
                expect(t(o) == Ty::new(ty.level, from), || {
                    format!(
                        "{op:?} operand {o} is {}, expected {} {from} (broadcasts are explicit)",
                        t(o),
                        ty.level
                    )
                })?;
            }
            is(Ty::new(t(lhs).level, to))
        }
        Expr::Select {
            cond,
            on_true,
            on_false,
        } => {
            expect(t(cond) == Ty::new(ty.level, BOOL), || {
                format!("condition is {}, expected {} bool", t(cond), ty.level)
            })?;
            expect(t(on_true) == ty && t(on_false) == ty, || {
                format!(
                    "branches are {} and {}, result {ty}",
                    t(on_true),
                    t(on_false)
                )
            })
        }
        Expr::Broadcast { arg, to } => {
            expect(to < t(arg).level, || {
                format!("broadcast from {} to {to} does not go down", t(arg).level)
            })?;
            is(Ty::new(to, t(arg).dtype))
        }
        Expr::Reduce {
            arg, to, filter, ..
        }
        | Expr::Quantile {
            arg, to, filter, ..
        } => {
            expect(t(arg).level < to, || {
                format!("reduction from {} to {to} does not go up", t(arg).level)
            })?;
            expect(t(arg).dtype == F32, || "reduced value must be f32".into())?;
            if let Some(f) = filter {
                expect(t(f) == Ty::new(t(arg).level, BOOL), || {
                    format!("filter is {}, expected {} bool", t(f), t(arg).level)
                })?;
            }
            if let Expr::Quantile { q, .. } = *e {
                expect(t(q) == Ty::new(Level::Batch, F32), || {
                    format!("quantile q is {}, expected batch f32", t(q))
                })?;
            }
            is(Ty::new(to, F32))
        }
        Expr::Scan { op, arg, discount } => {
            let l = t(arg).level;
            expect(matches!(l, Level::Tok | Level::Turn), || {
                format!("scan of a {l} value (only tok or turn)")
            })?;
            expect(t(arg).dtype == F32, || "scanned value must be f32".into())?;
            let wants = matches!(op, ScanOp::DiscountedRevCumSum | ScanOp::DiscountedCumSum);
            match discount {
                Some(d) => {
                    expect(wants, || format!("{op:?} takes no discount"))?;
                    expect(t(d) == Ty::new(l, F32), || {
                        format!("discount is {}, expected {l} f32", t(d))
                    })?;
                }
                None => expect(!wants, || format!("{op:?} needs a discount"))?,
            }
            is(Ty::new(l, F32))
        }
        Expr::Rank { arg, within } => {
            expect(t(arg).level < within, || {
                format!("rank of a {} value within {within}", t(arg).level)
            })?;
            expect(t(arg).dtype == F32, || "ranked value must be f32".into())?;
            is(Ty::new(t(arg).level, F32))
        }
        Expr::PosReduce { arg, .. } => {
            expect(t(arg) == Ty::new(Level::Tok, F32), || {
                format!("per-position reduction of {}, expected tok f32", t(arg))
            })?;
            is(Ty::new(Level::Tok, F32))
        }
        Expr::Detach { arg } => is(t(arg)),
    }
}

/// `(operand dtype, result dtype)` of a binary operator.
pub fn binary_types(op: BinaryOp) -> (DType, DType) {
    match op {
        BinaryOp::Add
        | BinaryOp::Sub
        | BinaryOp::Mul
        | BinaryOp::Div
        | BinaryOp::Pow
        | BinaryOp::Min
        | BinaryOp::Max => (F32, F32),
        BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge | BinaryOp::Eq | BinaryOp::Ne => {
            (F32, BOOL)
        }
        BinaryOp::And | BinaryOp::Or => (BOOL, BOOL),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::ir::{Grad, Input, ReduceOp};

    fn base() -> (Module, Handle<Expr>) {
        let mut m = Module::new("t");
        m.inputs.push(Input {
            name: "x".into(),
            ty: Ty::new(Level::Tok, F32),
            diff: true,
            span: Span::default(),
        });
        let x = m.append(
            Expr::Input(0),
            Ty::new(Level::Tok, F32),
            Span::new(rlo_grammar::span::FileId(0), 3, 4),
        );
        let s = m.append(
            Expr::Reduce {
                op: ReduceOp::Sum,
                arg: x,
                to: Level::Batch,
                filter: None,
            },
            Ty::new(Level::Batch, F32),
            Span::new(rlo_grammar::span::FileId(0), 5, 9),
        );
        m.loss = s;
        (m, x)
    }

    #[test]
    fn accepts_well_typed() {
        let (m, _) = base();
        validate(&m).unwrap();
    }

    #[test]
    fn rejects_forward_handles_and_implicit_broadcasts() {
        let (mut m, x) = base();
        let fwd = Handle::from_index(10);
        m.append(
            Expr::Unary {
                op: UnaryOp::Exp,
                arg: fwd,
            },
            Ty::new(Level::Tok, F32),
            Span::new(rlo_grammar::span::FileId(0), 1, 2),
        );
        let e = validate(&m).unwrap_err();
        assert!(e.message.contains("before its user"), "{e}");
        assert_eq!(e.span, Span::new(rlo_grammar::span::FileId(0), 1, 2));

        let (mut m, _) = base();
        let c = m.append(
            Expr::Const(1.0),
            Ty::new(Level::Batch, F32),
            Span::default(),
        );
        m.append(
            Expr::Binary {
                op: BinaryOp::Add,
                lhs: x,
                rhs: c,
            },
            Ty::new(Level::Tok, F32),
            Span::default(),
        );
        let e = validate(&m).unwrap_err();
        assert!(e.message.contains("broadcasts are explicit"), "{e}");
    }

    #[test]
    fn rejects_bad_levels_dtypes_and_roots() {
        let (mut m, x) = base();
        m.append(
            Expr::Broadcast {
                arg: x,
                to: Level::Seq,
            },
            Ty::new(Level::Seq, F32),
            Span::default(),
        );
        assert!(validate(&m)
            .unwrap_err()
            .message
            .contains("does not go down"));

        let (mut m, x) = base();
        m.append(
            Expr::Unary {
                op: UnaryOp::Not,
                arg: x,
            },
            Ty::new(Level::Tok, BOOL),
            Span::default(),
        );
        assert!(validate(&m).is_err());

        let (mut m, x) = base();
        m.loss = x;
        assert!(validate(&m)
            .unwrap_err()
            .message
            .contains("loss must be batch f32"));

        let (mut m, _) = base();
        let l = m.loss;
        m.grads.push(Grad { input: 0, value: l });
        assert!(validate(&m)
            .unwrap_err()
            .message
            .contains("must be tok f32"));

        let (mut m, x) = base();
        m.append(
            Expr::Scan {
                op: ScanOp::DiscountedRevCumSum,
                arg: x,
                discount: None,
            },
            Ty::new(Level::Tok, F32),
            Span::default(),
        );
        assert!(validate(&m)
            .unwrap_err()
            .message
            .contains("needs a discount"));
    }
}
