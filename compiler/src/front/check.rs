//! The checker: walks an objective's body, applies every typing rule of spec.md §5 (levels and
//! dtypes) and §6 (builtins), and builds the IR as it goes through [`Builder`].
//!
//! Checking and lowering are one walk: a checked expression *is* an IR handle whose type
//! (`Builder::ty`) is the expression's type. Functions are level-polymorphic, so they are checked
//! per call site by inlining: the body is walked with the parameters bound to the (converted)
//! arguments. Errors inside a body are reported once per distinct instantiation (function +
//! argument types), with a secondary label at the call site that first produced them.
//!
//! Errors never stop the walk (Gleam style): an ill-typed expression yields `None` (the
//! `Invalid` type), and rules never report on an `Invalid` operand, so one mistake gives one error.

use std::collections::{HashMap, HashSet};

use super::builtins::{self, Builtin, Default, Kind};
use super::error::{suggest, FrontError};
use super::lower::{Builder, RedKind};
use super::resolve::{parse_ann, FnId, Program};
use crate::arena::Handle;
use crate::ir::{BinaryOp, Expr, UnaryOp};
use crate::types::{DType, Level, Ty};
use rlo_grammar::{ast, Span};

type H = Handle<Expr>;
/// A checked value: `None` is the `Invalid` type (an error was already reported).
type Val = Option<H>;
type Env = HashMap<String, Val>;

/// Deepest chain of nested function calls expanded.
const MAX_CALL_DEPTH: usize = 64;

/// One reported error, with the call site of the instantiation it came from (if any).
pub struct Reported {
    pub error: FrontError,
    pub call_site: Option<(Span, String)>,
    /// The outermost call (in the objective) that led there, when it differs from `call_site`.
    pub root_site: Option<(Span, String)>,
}

pub struct Checker<'p> {
    prog: &'p Program,
    pub b: Builder,
    pub errors: Vec<Reported>,
    /// Call sites being expanded, innermost last: (span, function name).
    frames: Vec<(Span, String)>,
    /// Module whose scope resolves calls (innermost last).
    modules: Vec<usize>,
    seen: HashSet<(FnId, Vec<Option<Ty>>)>,
    suppress: usize,
}

/// Compile-time value of a constant expression (parameter and argument defaults).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ConstVal {
    F(f64),
    B(bool),
}

/// Evaluates a constant expression: numbers, `true`, `false`, `inf`, `-`, `+ - * / ^`, parens.
pub fn const_eval(e: &ast::Expr) -> Result<ConstVal, Span> {
    match &e.kind {
        ast::ExprKind::Number(v) => Ok(ConstVal::F(*v)),
        ast::ExprKind::Bool(b) => Ok(ConstVal::B(*b)),
        ast::ExprKind::Name(id) if id.name == "inf" => Ok(ConstVal::F(f64::INFINITY)),
        ast::ExprKind::Paren(inner) => const_eval(inner),
        ast::ExprKind::Unary {
            op: ast::UnaryOp::Neg,
            operand,
        } => match const_eval(operand)? {
            ConstVal::F(v) => Ok(ConstVal::F(-v)),
            ConstVal::B(_) => Err(e.span),
        },
        ast::ExprKind::Unary {
            op: ast::UnaryOp::Not,
            operand,
        } => match const_eval(operand)? {
            ConstVal::B(b) => Ok(ConstVal::B(!b)),
            ConstVal::F(_) => Err(e.span),
        },
        ast::ExprKind::Binary { op, lhs, rhs } => {
            let (ConstVal::F(a), ConstVal::F(b)) = (const_eval(lhs)?, const_eval(rhs)?) else {
                return Err(e.span);
            };
            match op {
                ast::BinaryOp::Add => Ok(ConstVal::F(a + b)),
                ast::BinaryOp::Sub => Ok(ConstVal::F(a - b)),
                ast::BinaryOp::Mul => Ok(ConstVal::F(a * b)),
                ast::BinaryOp::Div => Ok(ConstVal::F(a / b)),
                ast::BinaryOp::Pow => Ok(ConstVal::F(a.powf(b))),
                ast::BinaryOp::Lt
                | ast::BinaryOp::Le
                | ast::BinaryOp::Gt
                | ast::BinaryOp::Ge
                | ast::BinaryOp::Eq
                | ast::BinaryOp::Ne
                | ast::BinaryOp::And
                | ast::BinaryOp::Or => Err(e.span),
            }
        }
        ast::ExprKind::Name(_) | ast::ExprKind::Call { .. } | ast::ExprKind::If { .. } => {
            Err(e.span)
        }
    }
}

/// A parameter as the argument matcher sees it.
struct ParamSig<'a> {
    name: &'a str,
    /// The builtin's parameter name (for hints); `None` for user functions.
    static_name: Option<&'static str>,
    required: bool,
    named_only: bool,
}

impl<'p> Checker<'p> {
    pub fn new(prog: &'p Program, name: &str) -> Checker<'p> {
        Checker {
            prog,
            b: Builder::new(name),
            errors: Vec::new(),
            frames: Vec::new(),
            modules: vec![0],
            seen: HashSet::new(),
            suppress: 0,
        }
    }

    pub fn error(&mut self, error: FrontError) {
        if self.suppress > 0 {
            return;
        }
        self.errors.push(Reported {
            error,
            call_site: self.frames.last().cloned(),
            root_site: if self.frames.len() > 1 {
                self.frames.first().cloned()
            } else {
                None
            },
        });
    }

    fn ty(&self, h: H) -> Ty {
        self.b.ty(h)
    }

    /// The value as f32 (bool converts implicitly).
    fn f32(&mut self, v: Val, span: Span) -> Val {
        v.map(|h| self.b.to_f32(h, span))
    }

    /// The value, which must be bool (f32 never converts to bool).
    fn boolean(&mut self, v: Val, span: Span, context: &'static str) -> Val {
        let h = v?;
        if self.ty(h).dtype == DType::Bool {
            Some(h)
        } else {
            self.error(FrontError::ExpectedBool { span, context });
            None
        }
    }

    pub fn expr(&mut self, env: &Env, e: &ast::Expr) -> Val {
        let span = e.span;
        match &e.kind {
            ast::ExprKind::Number(v) => Some(self.b.konst(*v, span)),
            ast::ExprKind::Bool(v) => Some(self.b.boolean(*v, span)),
            ast::ExprKind::Paren(inner) => self.expr(env, inner),
            ast::ExprKind::Name(id) => {
                if let Some(v) = env.get(&id.name) {
                    return *v;
                }
                match builtins::lookup_value(&id.name)? {
                    builtins::Value::Structural(s) => Some(self.b.structural(s, span)),
                    builtins::Value::Inf => Some(self.b.konst(f64::INFINITY, span)),
                }
            }
            ast::ExprKind::Unary { op, operand } => {
                let v = self.expr(env, operand);
                match op {
                    ast::UnaryOp::Neg => {
                        let h = v?;
                        Some(self.b.unary(UnaryOp::Neg, h, span))
                    }
                    ast::UnaryOp::Not => {
                        let h = self.boolean(v, operand.span, "the operand of `!`")?;
                        Some(self.b.unary(UnaryOp::Not, h, span))
                    }
                }
            }
            ast::ExprKind::Binary { op, lhs, rhs } => {
                let a = self.expr(env, lhs);
                let b = self.expr(env, rhs);
                let ir_op = match op {
                    ast::BinaryOp::Add => BinaryOp::Add,
                    ast::BinaryOp::Sub => BinaryOp::Sub,
                    ast::BinaryOp::Mul => BinaryOp::Mul,
                    ast::BinaryOp::Div => BinaryOp::Div,
                    ast::BinaryOp::Pow => BinaryOp::Pow,
                    ast::BinaryOp::Lt => BinaryOp::Lt,
                    ast::BinaryOp::Le => BinaryOp::Le,
                    ast::BinaryOp::Gt => BinaryOp::Gt,
                    ast::BinaryOp::Ge => BinaryOp::Ge,
                    ast::BinaryOp::Eq => BinaryOp::Eq,
                    ast::BinaryOp::Ne => BinaryOp::Ne,
                    ast::BinaryOp::And => BinaryOp::And,
                    ast::BinaryOp::Or => BinaryOp::Or,
                };
                let (a, b) = if matches!(op, ast::BinaryOp::And | ast::BinaryOp::Or) {
                    let ctx = if *op == ast::BinaryOp::And {
                        "an operand of `&&`"
                    } else {
                        "an operand of `||`"
                    };
                    (
                        self.boolean(a, lhs.span, ctx),
                        self.boolean(b, rhs.span, ctx),
                    )
                } else {
                    (a, b)
                };
                Some(self.b.binary(ir_op, a?, b?, span))
            }
            ast::ExprKind::If {
                cond,
                then,
                otherwise,
            } => {
                let c = self.expr(env, cond);
                let t = self.expr(env, then);
                let o = self.expr(env, otherwise);
                let c = self.boolean(c, cond.span, "the condition of `if`");
                self.select(c, t, o, span)
            }
            ast::ExprKind::Call { callee, args } => {
                let vals: Vec<Val> = args.iter().map(|a| self.expr(env, &a.value)).collect();
                if let Some(b) = builtins::lookup(&callee.name) {
                    return self.builtin_call(&b, callee, args, &vals, span);
                }
                let module = self.modules.last().copied().unwrap_or(0);
                let id = *self
                    .prog
                    .modules
                    .get(module)
                    .and_then(|m| m.scope.get(&callee.name))?;
                self.fn_call(id, callee, args, &vals, span)
            }
        }
    }

    fn select(&mut self, c: Val, t: Val, o: Val, span: Span) -> Val {
        let (t, o) = (t?, o?);
        let (tt, ot) = (self.ty(t).dtype, self.ty(o).dtype);
        if tt != ot {
            self.error(FrontError::BranchMismatch {
                span,
                then_ty: tt,
                else_ty: ot,
            });
            return None;
        }
        Some(self.b.select(c?, t, o, span))
    }

    /// Matches call arguments to parameters: returns, per parameter, the index of its argument.
    fn match_args(
        &mut self,
        func: &str,
        params: &[ParamSig],
        args: &[ast::Arg],
        call_span: Span,
    ) -> Option<Vec<Option<usize>>> {
        let mut slots: Vec<Option<usize>> = vec![None; params.len()];
        let mut ok = true;
        let mut first_named: Option<Span> = None;
        let positional: Vec<usize> = params
            .iter()
            .enumerate()
            .filter(|(_, p)| !p.named_only)
            .map(|(i, _)| i)
            .collect();
        let mut next_pos = 0;
        for (ai, arg) in args.iter().enumerate() {
            match &arg.name {
                None => {
                    if let Some(named) = first_named {
                        self.error(FrontError::PositionalAfterNamed {
                            span: arg.span,
                            named,
                        });
                        ok = false;
                        continue;
                    }
                    match positional.get(next_pos) {
                        Some(&pi) => {
                            if let Some(s) = slots.get_mut(pi) {
                                *s = Some(ai);
                            }
                        }
                        None => {
                            self.error(FrontError::TooManyArgs {
                                span: arg.span,
                                func: func.to_string(),
                                max: positional.len(),
                                found: args.iter().filter(|a| a.name.is_none()).count(),
                                named_only: params
                                    .iter()
                                    .find(|p| p.named_only)
                                    .and_then(|p| p.static_name),
                            });
                            ok = false;
                        }
                    }
                    next_pos += 1;
                }
                Some(name) => {
                    first_named.get_or_insert(arg.span);
                    let Some(pi) = params.iter().position(|p| p.name == name.name) else {
                        self.error(FrontError::UnknownNamedArg {
                            span: name.span,
                            func: func.to_string(),
                            name: name.name.clone(),
                            suggestion: suggest(&name.name, params.iter().map(|p| p.name)),
                        });
                        ok = false;
                        continue;
                    };
                    match slots.get(pi).copied().flatten() {
                        Some(prev) => {
                            let first = args.get(prev).map(|a| a.span).unwrap_or_default();
                            self.error(FrontError::DuplicateArg {
                                span: arg.span,
                                name: name.name.clone(),
                                first,
                            });
                            ok = false;
                        }
                        None => {
                            if let Some(s) = slots.get_mut(pi) {
                                *s = Some(ai);
                            }
                        }
                    }
                }
            }
        }
        if ok {
            for (p, s) in params.iter().zip(&slots) {
                if p.required && s.is_none() {
                    self.error(FrontError::MissingArg {
                        span: call_span,
                        func: func.to_string(),
                        param: p.name.to_string(),
                    });
                    ok = false;
                }
            }
        }
        ok.then_some(slots)
    }

    fn builtin_call(
        &mut self,
        b: &Builtin,
        callee: &ast::Ident,
        args: &[ast::Arg],
        vals: &[Val],
        span: Span,
    ) -> Val {
        let sigs: Vec<ParamSig> = b
            .params
            .iter()
            .map(|p| ParamSig {
                name: p.name,
                static_name: Some(p.name),
                required: p.default == Default::Required,
                named_only: p.named_only,
            })
            .collect();
        let slots = self.match_args(b.name, &sigs, args, span)?;
        // Argument `i` of the builtin: (value, span); `None` when omitted.
        let arg = |i: usize| -> Option<(Val, Span)> {
            let ai = slots.get(i).copied().flatten()?;
            Some((
                vals.get(ai).copied().flatten(),
                args.get(ai).map(|a| a.value.span).unwrap_or(span),
            ))
        };
        let (x, xs) = arg(0).unwrap_or((None, span));
        let func = callee.name.clone();
        match b.kind {
            Kind::Unary(op) => Some(self.b.unary(op, x?, span)),
            Kind::LogSigmoid => {
                let n = self.b.unary(UnaryOp::Neg, x?, span);
                let s = self.b.unary(UnaryOp::Softplus, n, span);
                Some(self.b.unary(UnaryOp::Neg, s, span))
            }
            Kind::Sign => Some(self.b.sign(x?, span)),
            Kind::Square => {
                let x = self.f32(x, span)?;
                Some(self.b.binary(BinaryOp::Mul, x, x, span))
            }
            Kind::Binary(op) => {
                let (y, _) = arg(1)?;
                Some(self.b.binary(op, x?, y?, span))
            }
            Kind::Clamp => {
                let (lo, _) = arg(1)?;
                let (hi, _) = arg(2)?;
                Some(self.b.clamp(x?, lo?, hi?, span))
            }
            Kind::Where => {
                let c = self.boolean(x, xs, "the condition of `where`");
                let (t, _) = arg(1)?;
                let (o, _) = arg(2)?;
                self.select(c, t, o, span)
            }
            Kind::Float => self.f32(x, span),
            Kind::Detach => Some(self.b.detach(x?, span)),
            Kind::Reduce(to, kind) => {
                let x = x?;
                let xl = self.b.level(x);
                let filter_slot = if kind == RedKind::Quantile { 2 } else { 1 };
                let filter =
                    arg(filter_slot).map(|(f, fs)| (self.boolean(f, fs, "a `where:` filter"), fs));
                let mut ok = true;
                if xl >= to {
                    self.error(FrontError::ReduceNotUp {
                        span: xs,
                        func: func.clone(),
                        to,
                        found: xl,
                    });
                    ok = false;
                }
                let filter = match filter {
                    None => None,
                    Some((None, _)) => return None,
                    Some((Some(f), fs)) => {
                        let fl = self.b.level(f);
                        if fl < xl {
                            self.error(FrontError::FilterTooFine {
                                span: fs,
                                filter: fl,
                                arg: xl,
                            });
                            ok = false;
                        }
                        Some(f)
                    }
                };
                let extra = match kind {
                    RedKind::Quantile => {
                        let (q, qs) = arg(1)?;
                        let q = self.f32(q, qs)?;
                        let ql = self.b.level(q);
                        if ql != Level::Batch {
                            self.error(FrontError::NotBatch {
                                span: qs,
                                what: "the quantile `q`",
                                found: ql,
                            });
                            ok = false;
                        }
                        Some(q)
                    }
                    RedKind::Std | RedKind::Var => match arg(2) {
                        Some((u, us)) => {
                            let u = self.boolean(u, us, "`unbiased:`")?;
                            let ul = self.b.level(u);
                            if ul != Level::Batch {
                                self.error(FrontError::NotBatch {
                                    span: us,
                                    what: "`unbiased:`",
                                    found: ul,
                                });
                                ok = false;
                            }
                            Some(u)
                        }
                        None => None,
                    },
                    RedKind::Sum
                    | RedKind::Mean
                    | RedKind::Max
                    | RedKind::Min
                    | RedKind::Count
                    | RedKind::LogSumExp => None,
                };
                ok.then(|| self.b.reduce(kind, x, to, filter, extra, span))
            }
            Kind::Rank(within) => {
                let x = x?;
                let xl = self.b.level(x);
                if xl >= within {
                    self.error(FrontError::RankLevel {
                        span: xs,
                        func,
                        found: xl,
                    });
                    return None;
                }
                Some(self.b.rank(x, within, span))
            }
            Kind::Scan(op) => {
                let x = x?;
                let xl = self.b.level(x);
                if xl > Level::Turn {
                    self.error(FrontError::ScanLevel {
                        span: xs,
                        func,
                        found: xl,
                    });
                    return None;
                }
                let discount = match arg(1) {
                    Some((g, gs)) => {
                        let g = self.f32(g, gs)?;
                        let gl = self.b.level(g);
                        if gl < xl {
                            self.error(FrontError::ArgTooFine {
                                span: gs,
                                param: "gamma".into(),
                                expected: xl,
                                found: gl,
                            });
                            return None;
                        }
                        Some(g)
                    }
                    None => None,
                };
                Some(self.b.scan(op, x, discount, span))
            }
            Kind::PosReduce(kind) => Some(self.b.pos_reduce(kind, x?, span)),
        }
    }

    fn fn_call(
        &mut self,
        id: FnId,
        callee: &ast::Ident,
        args: &[ast::Arg],
        vals: &[Val],
        span: Span,
    ) -> Val {
        let prog = self.prog;
        let f = prog.fns.get(id)?;
        let decl = &f.decl;
        let sigs: Vec<ParamSig> = decl
            .params
            .iter()
            .map(|p| ParamSig {
                name: &p.name.name,
                static_name: None,
                required: p.default.is_none(),
                named_only: false,
            })
            .collect();
        let slots = self.match_args(&callee.name, &sigs, args, span)?;
        if f.recursive {
            return None;
        }
        if self.frames.len() >= MAX_CALL_DEPTH {
            self.error(FrontError::TooDeep { span });
            return None;
        }
        let mut env = Env::new();
        let mut key = Vec::new();
        for (p, slot) in decl.params.iter().zip(&slots) {
            let (v, vs) = match slot {
                Some(ai) => (
                    vals.get(*ai).copied().flatten(),
                    args.get(*ai).map(|a| a.value.span).unwrap_or(span),
                ),
                None => {
                    let Some(d) = &p.default else { continue };
                    (self.const_default(d), d.span)
                }
            };
            let v = match (v, &p.ty) {
                (Some(h), Some(ann)) => self.conform(h, ann, &p.name.name, vs),
                (v, _) => v,
            };
            key.push(v.map(|h| self.ty(h)));
            env.entry(p.name.name.clone()).or_insert(v);
        }
        let fresh = self.seen.insert((id, key));
        if !fresh {
            self.suppress += 1;
        }
        self.frames.push((span, callee.name.clone()));
        self.modules.push(f.module);
        for s in &decl.body.stmts {
            if let ast::StmtKind::Let { name, value } = &s.kind {
                let v = self.expr(&env, value);
                env.entry(name.name.clone()).or_insert(v);
            }
        }
        let result = self.expr(&env, &decl.body.result);
        self.modules.pop();
        self.frames.pop();
        if !fresh {
            self.suppress -= 1;
        }
        result
    }

    /// An argument converted to its parameter's annotation (`x: tok`, `m: bool`, `eps: f32`).
    fn conform(&mut self, h: H, ann: &ast::TypeAnn, param: &str, span: Span) -> Val {
        let (level, dtype) = parse_ann(ann, &mut Vec::new());
        let mut h = h;
        match dtype {
            Some(DType::F32) => h = self.b.to_f32(h, span),
            Some(DType::Bool) => h = self.boolean(Some(h), span, "this argument")?,
            None => {}
        }
        if let Some(l) = level {
            let found = self.b.level(h);
            if found < l {
                self.error(FrontError::ArgTooFine {
                    span,
                    param: param.to_string(),
                    expected: l,
                    found,
                });
                return None;
            }
            h = self.b.broadcast(h, l, span);
        }
        Some(h)
    }

    /// A default value: must be a constant expression.
    pub fn const_default(&mut self, d: &ast::Expr) -> Val {
        match const_eval(d) {
            Ok(ConstVal::F(v)) => Some(self.b.konst(v, d.span)),
            Ok(ConstVal::B(v)) => Some(self.b.boolean(v, d.span)),
            Err(span) => {
                self.error(FrontError::NotConstant { span });
                None
            }
        }
    }
}
