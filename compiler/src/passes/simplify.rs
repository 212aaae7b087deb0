//! `simplify`: rebuilds the arena keeping only what the roots need (DCE), hash-consing every node
//! (CSE), folding constants with the interpreter's own scalar semantics, and applying algebraic
//! identities that are exact in IEEE arithmetic for every input, NaN and ±0 included:
//! `x·1`, `1·x`, `x/1`, `x − 0`, `x + (−0)`, `x^1`, `−(−x)`, `!!x`, `x ∧ true`, `x ∨ false`,
//! `c ? a : a`, `true ? a : b`, `detach(detach x)`, `detach(constant)`, broadcast of broadcast.
//! (Not `x·0 = 0`: false for inf and NaN; not `x + 0 = x`: false for x = −0.)

use crate::arena::Handle;
use crate::back::interp::ops;
use crate::ir::{BinaryOp, Expr, Grad, Module, Named, UnaryOp};
use crate::passes::builder::Builder;
use crate::schedule::needed;
use crate::types::{DType, Level};

/// The literal value of a node that is a constant at its level (a literal or its broadcast).
fn literal(m: &Module, h: Handle<Expr>) -> Option<f64> {
    match m.exprs.get(h)? {
        Expr::Const(c) => Some(*c),
        Expr::Bool(x) => Some(if *x { 1.0 } else { 0.0 }),
        Expr::Broadcast { arg, .. } => literal(m, *arg),
        Expr::Param(_)
        | Expr::Input(_)
        | Expr::Index(_)
        | Expr::Unary { .. }
        | Expr::Binary { .. }
        | Expr::Select { .. }
        | Expr::Reduce { .. }
        | Expr::Scan { .. }
        | Expr::Rank { .. }
        | Expr::Quantile { .. }
        | Expr::PosReduce { .. }
        | Expr::Detach { .. } => None,
    }
}

fn lit_at(b: &mut Builder, v: f64, dtype: DType, level: Level) -> Handle<Expr> {
    let c = match dtype {
        DType::F32 => b.constant(v),
        DType::Bool => b.boolean(v != 0.0),
    };
    b.bcast(c, level)
}

/// Same bits, so `-0.0` is not `0.0`.
fn is(v: Option<f64>, want: f64) -> bool {
    v.is_some_and(|v| v.to_bits() == want.to_bits())
}

pub fn simplify(m: Module) -> Module {
    let need = needed(&m);
    let mut out = Module::new(m.name.clone());
    out.doc = m.doc.clone();
    out.params = m.params.clone();
    out.inputs = m.inputs.clone();
    let mut b = Builder::new(out);
    let mut map: Vec<Option<Handle<Expr>>> = vec![None; m.exprs.len()];
    for (h, e) in m.exprs.iter() {
        if !need.get(h.index()).copied().unwrap_or(false) {
            continue;
        }
        b.span = m.span(h);
        let f = |o: Handle<Expr>| map.get(o.index()).copied().flatten().unwrap_or(o);
        let new = rewrite(&mut b, e, m.ty(h).level, &f);
        if let Some(x) = map.get_mut(h.index()) {
            *x = Some(new);
        }
    }
    let f = |o: Handle<Expr>| map.get(o.index()).copied().flatten().unwrap_or(o);
    let mut out = b.finish();
    out.loss = f(m.loss);
    let named = |v: &[Named]| -> Vec<Named> {
        v.iter()
            .map(|n| Named {
                value: f(n.value),
                ..n.clone()
            })
            .collect()
    };
    out.metrics = named(&m.metrics);
    out.outputs = named(&m.outputs);
    out.grads = m
        .grads
        .iter()
        .map(|g| Grad {
            input: g.input,
            value: f(g.value),
        })
        .collect();
    out
}

fn rewrite(
    b: &mut Builder,
    e: &Expr,
    level: Level,
    f: &dyn Fn(Handle<Expr>) -> Handle<Expr>,
) -> Handle<Expr> {
    let lit = |b: &Builder, h: Handle<Expr>| literal(&b.m, h);
    match *e {
        Expr::Const(c) => b.constant(c),
        Expr::Bool(x) => b.boolean(x),
        Expr::Param(i) => b.param(i),
        Expr::Input(i) => b.input(i),
        Expr::Index(k) => b.index(k),
        Expr::Unary { op, arg } => {
            let a = f(arg);
            if let Some(v) = lit(b, a) {
                let dtype = if op == UnaryOp::Not {
                    DType::Bool
                } else {
                    DType::F32
                };
                return lit_at(b, ops::unary(op, v), dtype, level);
            }
            if let (UnaryOp::Neg | UnaryOp::Not, Some(Expr::Unary { op: inner, arg: x })) =
                (op, b.m.exprs.get(a))
            {
                if *inner == op {
                    return *x;
                }
            }
            b.unary(op, a)
        }
        Expr::Binary { op, lhs, rhs } => {
            let (x, y) = (f(lhs), f(rhs));
            let (lx, ly) = (lit(b, x), lit(b, y));
            if let (Some(u), Some(v)) = (lx, ly) {
                let (_, dtype) = crate::valid::binary_types(op);
                return lit_at(b, ops::binary(op, u, v), dtype, level);
            }
            let keep_x = (matches!(
                op,
                BinaryOp::Mul | BinaryOp::Div | BinaryOp::Pow | BinaryOp::And
            ) && is(ly, 1.0))
                || (matches!(op, BinaryOp::Sub | BinaryOp::Or) && is(ly, 0.0))
                || (op == BinaryOp::Add && is(ly, -0.0));
            let keep_y = (matches!(op, BinaryOp::Mul | BinaryOp::And) && is(lx, 1.0))
                || (op == BinaryOp::Or && is(lx, 0.0))
                || (op == BinaryOp::Add && is(lx, -0.0));
            if keep_x {
                x
            } else if keep_y {
                y
            } else {
                b.binary(op, x, y)
            }
        }
        Expr::Select {
            cond,
            on_true,
            on_false,
        } => {
            let (c, t, e) = (f(cond), f(on_true), f(on_false));
            match lit(b, c) {
                Some(v) if v != 0.0 => t,
                Some(_) => e,
                None if t == e => t,
                None => b.select(c, t, e),
            }
        }
        Expr::Broadcast { arg, to } => {
            let a = f(arg);
            let inner = match b.m.exprs.get(a) {
                Some(Expr::Broadcast { arg: x, .. }) => *x,
                _ => a,
            };
            b.bcast(inner, to)
        }
        Expr::Reduce {
            op,
            arg,
            to,
            filter,
        } => {
            let filter = filter.map(f);
            if filter.is_some_and(|fl| is(lit(b, fl), 1.0)) {
                b.reduce(op, f(arg), to, None)
            } else {
                b.reduce(op, f(arg), to, filter)
            }
        }
        Expr::Scan { op, arg, discount } => b.scan(op, f(arg), discount.map(f)),
        Expr::Rank { arg, within } => b.rank(f(arg), within),
        Expr::Quantile { arg, q, to, filter } => b.quantile(f(arg), f(q), to, filter.map(f)),
        Expr::PosReduce { op, arg } => b.pos_reduce(op, f(arg)),
        Expr::Detach { arg } => {
            let a = f(arg);
            match b.m.exprs.get(a) {
                Some(Expr::Detach { .. } | Expr::Const(_) | Expr::Bool(_)) => a,
                _ if lit(b, a).is_some() => a,
                _ => b.detach(a),
            }
        }
    }
}
