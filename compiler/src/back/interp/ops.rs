//! Scalar semantics of the elementwise primitives, shared by the interpreter and constant
//! folding (so that folding can never change a result). Booleans are `0.0` / `1.0`.

use crate::ir::{BinaryOp, UnaryOp};

fn b(x: bool) -> f64 {
    if x {
        1.0
    } else {
        0.0
    }
}

/// Numerically stable logistic function: never overflows.
pub fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// `log(1 + exp(x))` as `max(x, 0) + log1p(exp(-|x|))`: never overflows.
pub fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

/// Elementwise minimum; NaN propagates (like `torch.minimum`); at a tie returns `a`.
pub fn min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if b < a {
        b
    } else {
        a
    }
}

/// Elementwise maximum; NaN propagates (like `torch.maximum`); at a tie returns `a`.
pub fn max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if b > a {
        b
    } else {
        a
    }
}

pub fn unary(op: UnaryOp, x: f64) -> f64 {
    match op {
        UnaryOp::Neg => -x,
        UnaryOp::Not => b(x == 0.0),
        UnaryOp::ToF32 => b(x != 0.0),
        UnaryOp::Exp => x.exp(),
        UnaryOp::Log => x.ln(),
        UnaryOp::Log1p => x.ln_1p(),
        UnaryOp::Expm1 => x.exp_m1(),
        UnaryOp::Lgamma => crate::special::lgamma(x),
        UnaryOp::Digamma => crate::special::digamma(x),
        UnaryOp::Sqrt => x.sqrt(),
        UnaryOp::Abs => x.abs(),
        UnaryOp::Sigmoid => sigmoid(x),
        UnaryOp::Softplus => softplus(x),
        UnaryOp::Tanh => x.tanh(),
        UnaryOp::Floor => x.floor(),
        UnaryOp::Ceil => x.ceil(),
        UnaryOp::Round => x.round_ties_even(),
    }
}

pub fn binary(op: BinaryOp, x: f64, y: f64) -> f64 {
    match op {
        BinaryOp::Add => x + y,
        BinaryOp::Sub => x - y,
        BinaryOp::Mul => x * y,
        BinaryOp::Div => x / y,
        BinaryOp::Pow => x.powf(y),
        BinaryOp::Min => min(x, y),
        BinaryOp::Max => max(x, y),
        BinaryOp::Lt => b(x < y),
        BinaryOp::Le => b(x <= y),
        BinaryOp::Gt => b(x > y),
        BinaryOp::Ge => b(x >= y),
        BinaryOp::Eq => b(x == y),
        BinaryOp::Ne => b(x != y),
        BinaryOp::And => b(x != 0.0 && y != 0.0),
        BinaryOp::Or => b(x != 0.0 || y != 0.0),
    }
}

/// The total preorder used by `Rank` and `Quantile`: IEEE order, `-0 == +0`, NaN after every
/// number (all NaNs equal). Ties are then broken by packed index by the callers.
pub fn order(a: f64, b: f64) -> std::cmp::Ordering {
    a.partial_cmp(&b)
        .unwrap_or_else(|| a.is_nan().cmp(&b.is_nan()))
}
