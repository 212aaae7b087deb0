//! One vector-Jacobian rule per primitive, each headed by its math. `h = f(operands)` is the
//! forward node, `g` its adjoint (f32, at `level(h)`). A rule returns `(operand, contribution)`
//! pairs, only for operands that are `active` (the others get nothing built). Masks are always
//! `Select`s, never multiplications, so an `inf` or `NaN` in an unchosen branch stays out.

use crate::arena::Handle;
use crate::ir::{BinaryOp, Expr, ReduceOp, ScanOp, UnaryOp};
use crate::passes::builder::Builder;

type Contribs = Vec<(Handle<Expr>, Handle<Expr>)>;

/// The contributions of node `h` with adjoint `g` to its active operands.
pub fn vjp(b: &mut Builder, h: Handle<Expr>, g: Handle<Expr>, active: &[bool]) -> Contribs {
    let on = |o: Handle<Expr>| active.get(o.index()).copied().unwrap_or(false);
    let Some(e) = b.m.exprs.get(h).cloned() else {
        return Vec::new();
    };
    let mut out = Contribs::new();
    match e {
        // Leaves: nothing below them (inputs collect their adjoint in `differentiate`).
        Expr::Const(_) | Expr::Bool(_) | Expr::Param(_) | Expr::Input(_) | Expr::Index(_) => {}
        // Piecewise constant or explicitly cut: no gradient.
        Expr::Rank { .. } | Expr::Detach { .. } => {}
        Expr::Unary { op, arg } if on(arg) => {
            if let Some(d) = unary(b, op, arg, h, g) {
                let d = if op == UnaryOp::Neg {
                    d
                } else {
                    zero_stays_zero(b, g, d)
                };
                out.push((arg, d));
            }
        }
        Expr::Unary { .. } => {}
        Expr::Binary { op, lhs, rhs } => {
            let start = out.len();
            binary(b, op, lhs, rhs, h, g, &on, &mut out);
            if !matches!(op, BinaryOp::Add | BinaryOp::Sub) {
                for c in out.iter_mut().skip(start) {
                    c.1 = zero_stays_zero(b, g, c.1);
                }
            }
        }
        // f = c ? t : e ; dt = c ? g : 0 ; de = c ? 0 : g
        Expr::Select {
            cond,
            on_true,
            on_false,
        } => {
            let z = b.constant(0.0);
            if on(on_true) {
                let d = b.select(cond, g, z);
                out.push((on_true, d));
            }
            if on(on_false) {
                let d = b.select(cond, z, g);
                out.push((on_false, d));
            }
        }
        // f[i] = x[up(i)] ; dx[j] = Σ_{i below j} g[i]  (reduce-sum back to the source level)
        Expr::Broadcast { arg, .. } if on(arg) => {
            let la = b.level(arg);
            let d = b.reduce(ReduceOp::Sum, g, la, None);
            out.push((arg, d));
        }
        Expr::Broadcast { .. } => {}
        Expr::Reduce {
            op,
            arg,
            to: _,
            filter,
        } if on(arg) => {
            let d = reduce(b, op, arg, filter, h, g);
            out.push((arg, d));
        }
        Expr::Reduce { .. } => {}
        Expr::Quantile { arg, q, to, filter } if on(arg) => {
            // f = v[lo] + (v[hi] − v[lo])·frac, pos = clamp(q,0,1)·(n−1), v sorted (filtered).
            // The element of (filtered) rank r gets g·w(r), w(r) = max(0, 1 − |r − pos|):
            // w(lo) = 1 − frac, w(hi) = frac, every other rank 0. Filtered-out elements are
            // ranked last by giving them the key +inf (ties by packed index, as in sorting).
            let la = b.level(arg);
            let key = match filter {
                Some(f) => {
                    let inf = b.constant(f64::INFINITY);
                    b.select(f, arg, inf)
                }
                None => arg,
            };
            let r = b.rank(key, to);
            let n = b.count(la, to, filter);
            let (zero, one) = (b.constant(0.0), b.constant(1.0));
            let qc = b.binary(BinaryOp::Min, q, one);
            let qc = b.binary(BinaryOp::Max, qc, zero);
            let n1 = b.sub(n, one);
            let pos = b.mul(qc, n1);
            let dist = b.sub(r, pos);
            let dist = b.unary(UnaryOp::Abs, dist);
            let w = b.sub(one, dist);
            let mut sel = b.binary(BinaryOp::Gt, w, zero);
            if let Some(f) = filter {
                sel = b.binary(BinaryOp::And, sel, f);
            }
            let gw = b.mul(g, w);
            let d = b.keep(sel, gw);
            out.push((arg, d));
        }
        Expr::Quantile { .. } => {}
        Expr::Scan { op, arg, discount } => scan(b, op, arg, discount, h, g, &on, &mut out),
        Expr::PosReduce { op, arg } if on(arg) => {
            // Every sequence alive at position t in a group sees the same set, so the transpose
            // of the per-position sum is the per-position sum: dx = possum(g).
            let s = b.pos_reduce(ReduceOp::Sum, g);
            let d = match op {
                ReduceOp::Sum => s,
                // max/min: the tied extreme elements share the summed adjoint evenly.
                ReduceOp::Max | ReduceOp::Min => {
                    let tie = b.binary(BinaryOp::Eq, arg, h);
                    let tf = b.unary(UnaryOp::ToF32, tie);
                    let cnt = b.pos_reduce(ReduceOp::Sum, tf);
                    let share = b.div(s, cnt);
                    b.keep(tie, share)
                }
            };
            out.push((arg, d));
        }
        Expr::PosReduce { .. } => {}
    }
    out
}

/// `g ≠ 0 ? d : 0`: a node whose adjoint is exactly 0 (an untaken `if` branch, a filtered-out
/// element, a padded slot) passes exactly 0 to its operands, even where its local derivative is
/// infinite or undefined (`log` at 0, `exp` overflow, `x / 0`): without this, `0 · inf = NaN`
/// would leak from values that do not influence the loss into the gradient (spec.md, "never NaN
/// by accident"). A NaN adjoint still propagates (`NaN ≠ 0`). Add/Sub/Neg need no guard.
fn zero_stays_zero(b: &mut Builder, g: Handle<Expr>, d: Handle<Expr>) -> Handle<Expr> {
    let zero = b.constant(0.0);
    let nz = b.binary(BinaryOp::Ne, g, zero);
    b.keep(nz, d)
}

fn unary(
    b: &mut Builder,
    op: UnaryOp,
    x: Handle<Expr>,
    h: Handle<Expr>,
    g: Handle<Expr>,
) -> Option<Handle<Expr>> {
    let one = b.constant(1.0);
    Some(match op {
        // f = −x ; dx = −g
        UnaryOp::Neg => b.neg(g),
        // bool → bool / bool → f32: no gradient; floor/ceil/round: zero almost everywhere and
        // undefined at the integers, where PyTorch also gives 0
        UnaryOp::Not | UnaryOp::ToF32 | UnaryOp::Floor | UnaryOp::Ceil | UnaryOp::Round => {
            return None
        }
        // ψ appears only in gradients, which are not differentiated again (first order)
        UnaryOp::Digamma => return None,
        // f = log |Γ(x)| ; dx = g·ψ(x)
        UnaryOp::Lgamma => {
            let d = b.unary(UnaryOp::Digamma, x);
            b.mul(g, d)
        }
        // f = exp(x) ; dx = g·f
        UnaryOp::Exp => b.mul(g, h),
        // f = log(x) ; dx = g / x
        UnaryOp::Log => b.div(g, x),
        // f = log(1 + x) ; dx = g / (1 + x)
        UnaryOp::Log1p => {
            let d = b.add(one, x);
            b.div(g, d)
        }
        // f = exp(x) − 1 ; dx = g·(f + 1)
        UnaryOp::Expm1 => {
            let e = b.add(h, one);
            b.mul(g, e)
        }
        // f = √x ; dx = g / (2f), and 0 at x = 0 (not inf)
        UnaryOp::Sqrt => {
            let half = b.scale(0.5, g);
            let d = b.div(half, h);
            let zero = b.constant(0.0);
            let at0 = b.binary(BinaryOp::Eq, x, zero);
            b.select(at0, zero, d)
        }
        // f = |x| ; dx = g·sign(x), 0 at x = 0
        UnaryOp::Abs => {
            let zero = b.constant(0.0);
            let pos = b.binary(BinaryOp::Gt, x, zero);
            let neg = b.binary(BinaryOp::Lt, x, zero);
            let ng = b.neg(g);
            let inner = b.select(neg, ng, zero);
            b.select(pos, g, inner)
        }
        // f = σ(x) ; dx = g·f·(1 − f)
        UnaryOp::Sigmoid => {
            let c = b.sub(one, h);
            let t = b.mul(h, c);
            b.mul(g, t)
        }
        // f = log(1 + eˣ) ; dx = g·σ(x)
        UnaryOp::Softplus => {
            let s = b.unary(UnaryOp::Sigmoid, x);
            b.mul(g, s)
        }
        // f = tanh(x) ; dx = g·(1 − f²)
        UnaryOp::Tanh => {
            let f2 = b.mul(h, h);
            let c = b.sub(one, f2);
            b.mul(g, c)
        }
    })
}

#[allow(clippy::too_many_arguments)]
fn binary(
    b: &mut Builder,
    op: BinaryOp,
    x: Handle<Expr>,
    y: Handle<Expr>,
    h: Handle<Expr>,
    g: Handle<Expr>,
    on: &dyn Fn(Handle<Expr>) -> bool,
    out: &mut Contribs,
) {
    let mut push = |o: Handle<Expr>, d: Option<Handle<Expr>>| {
        if let Some(d) = d {
            out.push((o, d));
        }
    };
    match op {
        // f = x + y ; dx = g ; dy = g
        BinaryOp::Add => {
            push(x, on(x).then_some(g));
            push(y, on(y).then_some(g));
        }
        // f = x − y ; dx = g ; dy = −g
        BinaryOp::Sub => {
            push(x, on(x).then_some(g));
            let d = on(y).then(|| b.neg(g));
            push(y, d);
        }
        // f = x·y ; dx = g·y ; dy = g·x
        BinaryOp::Mul => {
            let dx = on(x).then(|| b.mul(g, y));
            push(x, dx);
            let dy = on(y).then(|| b.mul(g, x));
            push(y, dy);
        }
        // f = x / y ; dx = g / y ; dy = −(g / y)·f
        BinaryOp::Div => {
            let gy = b.div(g, y);
            push(x, on(x).then_some(gy));
            let dy = on(y).then(|| {
                let t = b.mul(gy, h);
                b.neg(t)
            });
            push(y, dy);
        }
        // f = xʸ ; dx = g·y·x^(y−1), 0 where y = 0 (PyTorch) ; dy = g·f·ln x where x > 0, else 0
        BinaryOp::Pow => {
            let (zero, one) = (b.constant(0.0), b.constant(1.0));
            let dx = on(x).then(|| {
                let ym1 = b.sub(y, one);
                let p = b.binary(BinaryOp::Pow, x, ym1);
                let t = b.mul(y, p);
                let d = b.mul(g, t);
                let y0 = b.binary(BinaryOp::Eq, y, zero);
                b.select(y0, zero, d)
            });
            push(x, dx);
            let dy = on(y).then(|| {
                let lx = b.unary(UnaryOp::Log, x);
                let t = b.mul(h, lx);
                let d = b.mul(g, t);
                let xp = b.binary(BinaryOp::Gt, x, zero);
                b.keep(xp, d)
            });
            push(y, dy);
        }
        // f = min(x, y) ; dx = g where x < y, g/2 where x = y, else 0 (max: with >)
        BinaryOp::Min | BinaryOp::Max => {
            let strict = if op == BinaryOp::Min {
                BinaryOp::Lt
            } else {
                BinaryOp::Gt
            };
            let half = b.scale(0.5, g);
            let zero = b.constant(0.0);
            let tie = b.binary(BinaryOp::Eq, x, y);
            let tie_share = b.select(tie, half, zero);
            for (a, c) in [(x, y), (y, x)] {
                if on(a) {
                    let wins = b.binary(strict, a, c);
                    let d = b.select(wins, g, tie_share);
                    push(a, Some(d));
                }
            }
        }
        // comparisons and logic: bool results, no gradient
        BinaryOp::Lt
        | BinaryOp::Le
        | BinaryOp::Gt
        | BinaryOp::Ge
        | BinaryOp::Eq
        | BinaryOp::Ne
        | BinaryOp::And
        | BinaryOp::Or => {}
    }
}

fn reduce(
    b: &mut Builder,
    op: ReduceOp,
    arg: Handle<Expr>,
    filter: Option<Handle<Expr>>,
    h: Handle<Expr>,
    g: Handle<Expr>,
) -> Handle<Expr> {
    let la = b.level(arg);
    match op {
        // f[j] = Σ_{i in j, filter} x[i] ; dx[i] = filter[i] ? g[up(i)] : 0
        ReduceOp::Sum => {
            let gb = b.bcast(g, la);
            match filter {
                Some(f) => b.keep(f, gb),
                None => gb,
            }
        }
        // f[j] = max_{i in j, filter} x[i] ; the tied maxima T share it:
        // dx[i] = (filter[i] ∧ x[i] = f[up(i)]) ? g / |T| : 0, |T| a filtered count
        ReduceOp::Max | ReduceOp::Min => {
            let to = b.level(h);
            let hb = b.bcast(h, la);
            let mut tie = b.binary(BinaryOp::Eq, arg, hb);
            if let Some(f) = filter {
                tie = b.binary(BinaryOp::And, tie, f);
            }
            let cnt = b.count(la, to, Some(tie));
            let share = b.div(g, cnt);
            let sb = b.bcast(share, la);
            b.keep(tie, sb)
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn scan(
    b: &mut Builder,
    op: ScanOp,
    x: Handle<Expr>,
    d: Option<Handle<Expr>>,
    h: Handle<Expr>,
    g: Handle<Expr>,
    on: &dyn Fn(Handle<Expr>) -> bool,
    out: &mut Contribs,
) {
    match (op, d) {
        // f[t] = Σ_{u≤t} x[u] ; dx[t] = Σ_{u≥t} g[u]
        (ScanOp::CumSum, _) => {
            if on(x) {
                let s = b.scan(ScanOp::RevCumSum, g, None);
                out.push((x, s));
            }
        }
        // f[t] = Σ_{u≥t} x[u] ; dx[t] = Σ_{u≤t} g[u]
        (ScanOp::RevCumSum, _) => {
            if on(x) {
                let s = b.scan(ScanOp::CumSum, g, None);
                out.push((x, s));
            }
        }
        // f[t] = x[t] + d[t]·f[t+1] ; a = dx: a[t] = g[t] + d[t−1]·a[t−1] (DiscountedCumSum) ;
        // dd[t] = a[t]·f[t+1] = a[t]·(f[t] − x[t]) / d[t] (taken as 0 where d[t] = 0)
        (ScanOp::DiscountedRevCumSum, Some(d)) => {
            let a = b.scan(ScanOp::DiscountedCumSum, g, Some(d));
            if on(x) {
                out.push((x, a));
            }
            if on(d) {
                let next = b.sub(h, x);
                let dd = discount_grad(b, a, next, d);
                out.push((d, dd));
            }
        }
        // f[t] = x[t] + d[t−1]·f[t−1] ; a = dx: a[t] = g[t] + d[t]·a[t+1] (DiscountedRevCumSum) ;
        // dd[t] = a[t+1]·f[t] = f[t]·(a[t] − g[t]) / d[t] (taken as 0 where d[t] = 0)
        (ScanOp::DiscountedCumSum, Some(d)) => {
            let a = b.scan(ScanOp::DiscountedRevCumSum, g, Some(d));
            if on(x) {
                out.push((x, a));
            }
            if on(d) {
                let next = b.sub(a, g);
                let dd = discount_grad(b, h, next, d);
                out.push((d, dd));
            }
        }
        (ScanOp::DiscountedRevCumSum | ScanOp::DiscountedCumSum, None) => {}
        // f[t] = x[t+1] ; dx[u] = g[u−1] (0 at u = 0): the shifts are each other's transpose
        (ScanOp::Next, _) => {
            if on(x) {
                let s = b.scan(ScanOp::Prev, g, None);
                out.push((x, s));
            }
        }
        (ScanOp::Prev, _) => {
            if on(x) {
                let s = b.scan(ScanOp::Next, g, None);
                out.push((x, s));
            }
        }
    }
}

/// `d ≠ 0 ? u·v / d : 0`.
fn discount_grad(
    b: &mut Builder,
    u: Handle<Expr>,
    v: Handle<Expr>,
    d: Handle<Expr>,
) -> Handle<Expr> {
    let zero = b.constant(0.0);
    let uv = b.mul(u, v);
    let q = b.div(uv, d);
    let nz = b.binary(BinaryOp::Ne, d, zero);
    b.keep(nz, q)
}
