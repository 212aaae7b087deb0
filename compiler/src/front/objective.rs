//! Checking and lowering of one objective's statements (spec.md §3, rules R1, R2, R16–R18):
//! parameters, inputs, `let`s, the loss, metrics and outputs, and the W0001 analysis (does any
//! gradient reach a `diff` input?).

use super::check::{const_eval, Checker, ConstVal, Reported};
use super::error::FrontError;
use super::resolve::{parse_ann, Program};
use crate::arena::Handle;
use crate::ir::{self, BinaryOp, Expr, UnaryOp};
use crate::types::{DType, Level, Ty};
use rlo_grammar::{ast, Span};
use std::collections::HashMap;

type H = Handle<Expr>;

/// Checks and lowers one objective. Returns the module (when no error was found in it) and the
/// errors and warnings.
pub fn objective(
    prog: &Program,
    o: &ast::ObjectiveDecl,
) -> (Option<ir::Module>, Vec<Reported>, Vec<FrontError>) {
    let mut c = Checker::new(prog, &o.name.name);
    c.b.m.doc = o.doc.clone();
    let mut env: HashMap<String, Option<H>> = HashMap::new();
    for (i, p) in o.params.iter().enumerate() {
        let (level, dtype) = match &p.ty {
            Some(ann) => parse_ann(ann, &mut Vec::new()),
            None => (None, None),
        };
        if level.is_some() {
            if let Some(ann) = &p.ty {
                c.error(FrontError::ParamLevel { span: ann.span });
            }
        }
        let dtype = dtype.unwrap_or(DType::F32);
        let default = match &p.default {
            None => {
                c.error(FrontError::ParamWithoutDefault {
                    span: p.span,
                    name: p.name.name.clone(),
                });
                None
            }
            Some(d) => match const_eval(d) {
                Ok(ConstVal::F(v)) if dtype == DType::F32 => Some(v),
                Ok(ConstVal::B(b)) => Some(if b { 1.0 } else { 0.0 }),
                Ok(ConstVal::F(_)) => {
                    c.error(FrontError::ParamDefaultType {
                        span: d.span,
                        expected: dtype,
                    });
                    None
                }
                Err(span) => {
                    c.error(FrontError::NotConstant { span });
                    None
                }
            },
        };
        let idx = u32::try_from(i).unwrap_or(u32::MAX);
        c.b.m.params.push(ir::Param {
            name: p.name.name.clone(),
            default: default.unwrap_or(0.0),
            span: p.span,
        });
        let h = c.b.param(idx, p.name.span);
        let v = if dtype == DType::Bool {
            let zero = c.b.konst(0.0, p.name.span);
            c.b.binary(BinaryOp::Ne, h, zero, p.name.span)
        } else {
            h
        };
        env.entry(p.name.name.clone()).or_insert(default.map(|_| v));
    }
    let mut loss: Option<(Span, Option<H>)> = None;
    for s in &o.body {
        match &s.kind {
            ast::StmtKind::Input { name, ty, diff } => {
                let (level, dtype) = parse_ann(ty, &mut Vec::new());
                let dtype = dtype.unwrap_or(DType::F32);
                if let (Some(d), DType::Bool) = (diff, dtype) {
                    c.error(FrontError::DiffNotF32 {
                        span: ty.span,
                        diff: *d,
                    });
                }
                let Some(level) = level else {
                    let has_unknown = ty.level.is_some() || ty.dtype.is_some();
                    if !has_unknown || dtype_only(ty) {
                        c.error(FrontError::InputWithoutLevel {
                            span: ty.span,
                            name: name.name.clone(),
                        });
                    }
                    env.insert(name.name.clone(), None);
                    continue;
                };
                let ty = Ty::new(level, dtype);
                let idx = u32::try_from(c.b.m.inputs.len()).unwrap_or(u32::MAX);
                c.b.m.inputs.push(ir::Input {
                    name: name.name.clone(),
                    ty,
                    diff: diff.is_some() && dtype == DType::F32,
                    span: s.span,
                });
                let h = c.b.input(idx, ty, name.span);
                env.entry(name.name.clone()).or_insert(Some(h));
            }
            ast::StmtKind::Let { name, value } => {
                let v = c.expr(&env, value);
                env.entry(name.name.clone()).or_insert(v);
            }
            ast::StmtKind::Loss { value } => {
                if let Some((first, _)) = loss {
                    c.error(FrontError::DuplicateLoss {
                        span: s.span,
                        first,
                    });
                    c.expr(&env, value);
                    continue;
                }
                let v = c.expr(&env, value);
                let v = v.and_then(|h| {
                    let ty = c.b.ty(h);
                    if ty.level != Level::Batch {
                        c.error(FrontError::LossLevel {
                            span: value.span,
                            found: ty,
                        });
                        return None;
                    }
                    Some(c.b.to_f32(h, value.span))
                });
                loss = Some((s.span, v));
            }
            ast::StmtKind::Metric { name, value } => {
                let v = c.expr(&env, value).and_then(|h| {
                    let ty = c.b.ty(h);
                    if ty.level != Level::Batch {
                        c.error(FrontError::MetricLevel {
                            span: value.span,
                            name: name.name.clone(),
                            found: ty,
                        });
                        return None;
                    }
                    Some(c.b.to_f32(h, value.span))
                });
                if let Some(h) = v {
                    c.b.m.metrics.push(ir::Named {
                        name: name.name.clone(),
                        value: h,
                        span: s.span,
                    });
                }
            }
            ast::StmtKind::Output { name, value } => {
                if let Some(h) = c.expr(&env, value) {
                    let h = c.b.to_f32(h, value.span);
                    c.b.m.outputs.push(ir::Named {
                        name: name.name.clone(),
                        value: h,
                        span: s.span,
                    });
                }
            }
        }
    }
    let mut warnings = Vec::new();
    match loss {
        None => c.error(FrontError::MissingLoss {
            span: o.name.span,
            objective: o.name.name.clone(),
        }),
        Some((span, Some(h))) => {
            c.b.m.loss = h;
            if !depends_on_diff(&c.b.m, h) {
                warnings.push(FrontError::LossNotDifferentiable { span });
            }
        }
        Some((_, None)) => {}
    }
    let module = c.errors.is_empty().then_some(c.b.m);
    (module, c.errors, warnings)
}

/// True when the type annotation names only a dtype (so the level is missing, not misspelt).
fn dtype_only(ty: &ast::TypeAnn) -> bool {
    ty.level
        .iter()
        .chain(ty.dtype.iter())
        .all(|id| id.name == "f32" || id.name == "bool")
}

/// Whether a gradient can flow from `root` to a `diff` input (not through `detach`, a bool, a
/// rank, `floor`/`ceil`/`round`, a filter or a quantile's `q`).
fn depends_on_diff(m: &ir::Module, root: H) -> bool {
    let mut dep = vec![false; m.exprs.len()];
    for (h, e) in m.exprs.iter() {
        let d = |x: &H| dep.get(x.index()).copied().unwrap_or(false);
        let v = match e {
            Expr::Input(i) => m.inputs.get(*i as usize).is_some_and(|i| i.diff),
            Expr::Const(_)
            | Expr::Bool(_)
            | Expr::Param(_)
            | Expr::Index(_)
            | Expr::Detach { .. }
            | Expr::Rank { .. } => false,
            Expr::Unary { op, arg } => {
                !matches!(
                    op,
                    UnaryOp::ToF32 | UnaryOp::Floor | UnaryOp::Ceil | UnaryOp::Round
                ) && d(arg)
            }
            Expr::Binary { lhs, rhs, .. } => d(lhs) || d(rhs),
            Expr::Select {
                on_true, on_false, ..
            } => d(on_true) || d(on_false),
            Expr::Broadcast { arg, .. }
            | Expr::Reduce { arg, .. }
            | Expr::Quantile { arg, .. }
            | Expr::PosReduce { arg, .. } => d(arg),
            Expr::Scan { arg, discount, .. } => d(arg) || discount.as_ref().is_some_and(d),
        };
        let v = v && m.ty(h).dtype == DType::F32;
        if let Some(slot) = dep.get_mut(h.index()) {
            *slot = v;
        }
    }
    dep.get(root.index()).copied().unwrap_or(false)
}
