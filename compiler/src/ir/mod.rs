//! The IR: one [`Module`] per objective, an arena of [`Expr`] with typed handles.
//!
//! # Invariants (checked by `valid::validate` between passes)
//! - Operands come before users: every handle inside `exprs[h]` is `< h`.
//! - `types[h]` is the type of `exprs[h]` as given by the typing rule of each variant below.
//! - **Broadcasts are explicit**: the operands of `Unary`, `Binary`, `Select` have the level of the
//!   result (the lowering inserts `Broadcast`). Reductions are explicit too.
//! - Every node has the span of the source it came from (autodiff gives adjoints the span of the
//!   forward node), so a backend error can always point at `.rlo` source.
//!
//! # Semantics shared by every backend
//! Values exist only at valid positions: the tokens of a sequence, its turns, its sequences, its
//! groups. Padding never reaches the IR. Empty reductions have defined results (below), so no
//! primitive produces NaN except IEEE arithmetic on user values (`0/0`, `log(-1)`, `inf - inf`).

mod display;

use crate::arena::{Arena, Handle};
use crate::types::{DType, Level, Ty};
use rlo_grammar::Span;
use serde::Serialize;

pub use display::display_module;

/// A compiled objective: parameters, inputs, the expression arena and its roots.
#[derive(Clone, Debug, Serialize)]
pub struct Module {
    pub name: String,
    pub doc: Vec<String>,
    /// Run-time scalars (batch level, f32), bound by index; changing one never recompiles.
    pub params: Vec<Param>,
    /// Tensors bound by name from the batch.
    pub inputs: Vec<Input>,
    pub exprs: Arena<Expr>,
    /// `types[h.index()]` is the type of `exprs[h]`.
    pub types: Vec<Ty>,
    /// The loss (batch level, f32).
    pub loss: Handle<Expr>,
    /// `metric NAME = e` (batch level; bool metrics are converted to f32 by lowering).
    pub metrics: Vec<Named>,
    /// `output NAME = e` (any level).
    pub outputs: Vec<Named>,
    /// Filled by autodiff: `d loss / d input` for every `diff` input, at the input's level.
    pub grads: Vec<Grad>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Param {
    pub name: String,
    pub default: f64,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Input {
    pub name: String,
    pub ty: Ty,
    /// Declared `diff`: the runtime returns `d loss / d input`.
    pub diff: bool,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Named {
    pub name: String,
    pub value: Handle<Expr>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Grad {
    /// Index into `Module::inputs`.
    pub input: u32,
    pub value: Handle<Expr>,
}

impl Module {
    /// An empty module; `loss` must be set by the lowering before the module is used.
    pub fn new(name: impl Into<String>) -> Module {
        Module {
            name: name.into(),
            doc: Vec::new(),
            params: Vec::new(),
            inputs: Vec::new(),
            exprs: Arena::new(),
            types: Vec::new(),
            loss: Handle::from_index(0),
            metrics: Vec::new(),
            outputs: Vec::new(),
            grads: Vec::new(),
        }
    }

    /// Appends a node with its type and span. Callers (lowering, autodiff, passes) are responsible
    /// for the typing rules; the validator re-checks them.
    pub fn append(&mut self, expr: Expr, ty: Ty, span: Span) -> Handle<Expr> {
        self.types.push(ty);
        self.exprs.append(expr, span)
    }

    pub fn ty(&self, h: Handle<Expr>) -> Ty {
        self.types
            .get(h.index())
            .copied()
            .unwrap_or(Ty::new(Level::Batch, DType::F32))
    }

    pub fn level(&self, h: Handle<Expr>) -> Level {
        self.ty(h).level
    }

    pub fn span(&self, h: Handle<Expr>) -> Span {
        self.exprs.span(h)
    }
}

/// The closed set of primitives. Everything else (means, std, clip, KL estimators, advantages) is
/// built from these by the lowering or written in `stdlib/`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum Expr {
    /// A literal. Typing: `batch f32`.
    Const(f64),
    /// A boolean literal. Typing: `batch bool`.
    Bool(bool),
    /// Run-time scalar `params[i]`. Typing: `batch f32`.
    Param(u32),
    /// `inputs[i]`. Typing: the input's declared type.
    Input(u32),
    /// A structural value of the batch. Typing: see [`IndexKind`]; always f32.
    Index(IndexKind),
    /// Typing: operand and result at the same level; see [`UnaryOp`] for dtypes.
    Unary { op: UnaryOp, arg: Handle<Expr> },
    /// Typing: both operands and the result at the same level; see [`BinaryOp`] for dtypes.
    Binary {
        op: BinaryOp,
        lhs: Handle<Expr>,
        rhs: Handle<Expr>,
    },
    /// `cond ? on_true : on_false`, elementwise. Typing: all three at the same level; `cond` bool;
    /// branches share a dtype, which is the result's. Gradient goes only to the chosen branch (a
    /// select, never a multiply by a mask: `inf` in the other branch cannot make NaN).
    Select {
        cond: Handle<Expr>,
        on_true: Handle<Expr>,
        on_false: Handle<Expr>,
    },
    /// Copies each value of `arg` to every element below it. Typing: `to < level(arg)`, same dtype.
    Broadcast { arg: Handle<Expr>, to: Level },
    /// Reduces every element of `arg` that lies inside each element of level `to`, keeping only the
    /// elements where `filter` (bool, same level as `arg`) is true. Typing: `level(arg) < to`; `arg`
    /// f32 (lowering converts bool with `ToF32` first); result `to f32`.
    /// Empty set: `Sum` → 0, `Max` → 0, `Min` → 0 (written in spec.md; never ±inf, never NaN).
    /// Gradient: `Sum` broadcasts; `Max`/`Min` split evenly among the tied arg-max elements.
    Reduce {
        op: ReduceOp,
        arg: Handle<Expr>,
        to: Level,
        filter: Option<Handle<Expr>>,
    },
    /// A scan along each sequence, over its tokens (`arg` at `tok`) or over its turns (`arg` at
    /// `turn`). Typing: result at `level(arg)`, f32; `discount` (present exactly for
    /// `DiscountedRevCumSum` and `DiscountedCumSum`) f32 at the level of `arg`.
    Scan {
        op: ScanOp,
        arg: Handle<Expr>,
        discount: Option<Handle<Expr>>,
    },
    /// 0-based ascending rank of each element of `arg` among the elements of the same `within`
    /// unit: the number of strictly smaller elements plus the number of equal elements with a
    /// smaller packed index (ties broken by position, deterministically). Typing: `level(arg) <
    /// within`; result at `level(arg)`, f32. Piecewise constant: gradient 0. Order: IEEE with
    /// `-0 == +0` and NaN after every number (NaNs equal to each other); the same order sorts
    /// `Quantile`.
    Rank { arg: Handle<Expr>, within: Level },
    /// The `q`-quantile of the elements of `arg` inside each element of level `to` (filtered like
    /// `Reduce`), linear interpolation between order statistics (numpy/torch default):
    /// `pos = q·(n−1)`, `v[floor] + (v[ceil] − v[floor])·frac(pos)`; `q` clamped to [0, 1]; empty
    /// set → 0. Typing: `level(arg) < to`; `q` batch f32 (not differentiated); result `to f32`.
    /// Gradient: to the (one or two) order-statistic elements with the interpolation weights; ties
    /// in sorting broken by packed index.
    Quantile {
        arg: Handle<Expr>,
        q: Handle<Expr>,
        to: Level,
        filter: Option<Handle<Expr>>,
    },
    /// Per-position group reduction: at token `t` of sequence `s`, reduces `arg[s', t]` over the
    /// sequences `s'` of `s`'s group that are still alive at position `t` (`len(s') > t`), `s`
    /// included. Typing: `arg` tok f32; result tok f32. Gradient like `Reduce`.
    PosReduce { op: ReduceOp, arg: Handle<Expr> },
    /// The value of `arg`, with gradient 0. Typing: same as `arg`.
    Detach { arg: Handle<Expr> },
}

/// Structural identity of a node, for hash-consing (CSE at construction): equal iff the type,
/// the variant, the operands and the payload are equal, literals compared by their bits (so
/// `0.0` and `-0.0` stay distinct, and a NaN literal equals itself).
#[derive(Clone, Debug)]
pub struct NodeKey(pub Expr, pub Ty);

impl PartialEq for NodeKey {
    fn eq(&self, other: &NodeKey) -> bool {
        self.1 == other.1
            && match (&self.0, &other.0) {
                (Expr::Const(a), Expr::Const(b)) => a.to_bits() == b.to_bits(),
                (a, b) => a == b,
            }
    }
}

impl Eq for NodeKey {}

impl std::hash::Hash for NodeKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.1.hash(state);
        std::mem::discriminant(&self.0).hash(state);
        if let Expr::Const(v) = &self.0 {
            v.to_bits().hash(state);
        }
        self.0.for_each_operand(|o| o.hash(state));
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum IndexKind {
    /// `tok`: 0-based position of the token among the valid tokens of its sequence.
    Pos,
    /// `turn`: 0-based index of the turn in its sequence.
    TurnIndex,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum UnaryOp {
    /// f32 → f32. d = −g
    Neg,
    /// bool → bool.
    Not,
    /// bool → f32 (false → 0, true → 1). No gradient.
    ToF32,
    /// f32 → f32 for all below.
    Exp,
    /// d = g / x
    Log,
    Log1p,
    Expm1,
    /// d = g / (2·sqrt(x)) for x > 0, and 0 at x = 0 (documented deviation from PyTorch's inf,
    /// which would turn the std of a constant group into NaN).
    Sqrt,
    /// d = g·sign(x), 0 at x = 0 (PyTorch).
    Abs,
    /// 1 / (1 + exp(−x)), computed without overflow.
    Sigmoid,
    /// log(1 + exp(x)), computed without overflow: max(x, 0) + log1p(exp(−|x|)).
    Softplus,
    Tanh,
    /// Largest integer ≤ x. Gradient 0 (PyTorch: `floor`, `ceil`, `round` pass no gradient).
    Floor,
    /// Smallest integer ≥ x. Gradient 0.
    Ceil,
    /// Nearest integer, ties to even (`torch.round`). Gradient 0.
    Round,
    /// log |Γ(x)| (`torch.lgamma`); +inf at the poles 0, −1, −2, …. d = g·ψ(x).
    Lgamma,
    /// ψ(x), the derivative of `Lgamma`: made by autodiff only (no builtin), never
    /// differentiated itself (autodiff is first order). NaN at the poles.
    Digamma,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum BinaryOp {
    /// f32 × f32 → f32 for the arithmetic ops.
    Add,
    Sub,
    Mul,
    /// IEEE division (x/0 = ±inf, 0/0 = NaN).
    Div,
    /// a^b. d/da = b·a^(b−1)·g; d/db = a^b·ln(a)·g where a > 0, else 0.
    Pow,
    /// Elementwise min/max; at a tie the gradient is split evenly (PyTorch).
    Min,
    Max,
    /// f32 × f32 → bool.
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
    /// bool × bool → bool.
    And,
    Or,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum ReduceOp {
    Sum,
    Max,
    Min,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum ScanOp {
    /// `out[t] = Σ_{u ≤ t} x[u]` (inclusive prefix sum).
    CumSum,
    /// `out[t] = Σ_{u ≥ t} x[u]` (inclusive suffix sum: reward-to-go).
    RevCumSum,
    /// `out[t] = x[t] + d[t]·out[t+1]`, `out[last] = x[last]` (discounted returns, GAE).
    DiscountedRevCumSum,
    /// `out[0] = x[0]`, `out[t] = x[t] + d[t−1]·out[t−1]`: the transpose of
    /// `DiscountedRevCumSum` with the same discount array (produced by autodiff; also takes a
    /// `discount` operand at the level of `arg`). Added by the IR work (additive).
    DiscountedCumSum,
    /// `out[t] = x[t+1]`, `out[last] = 0` (the next element of the sequence).
    Next,
    /// `out[t] = x[t−1]`, `out[0] = 0`: the transpose of `Next` (autodiff; also a builtin).
    Prev,
}

impl Expr {
    /// The same node with every operand `o` replaced by `f(o)` (in [`Expr::operands`] order).
    pub fn map_operands(&self, f: impl Fn(Handle<Expr>) -> Handle<Expr>) -> Expr {
        match *self {
            Expr::Const(_) | Expr::Bool(_) | Expr::Param(_) | Expr::Input(_) | Expr::Index(_) => {
                self.clone()
            }
            Expr::Unary { op, arg } => Expr::Unary { op, arg: f(arg) },
            Expr::Binary { op, lhs, rhs } => Expr::Binary {
                op,
                lhs: f(lhs),
                rhs: f(rhs),
            },
            Expr::Select {
                cond,
                on_true,
                on_false,
            } => Expr::Select {
                cond: f(cond),
                on_true: f(on_true),
                on_false: f(on_false),
            },
            Expr::Broadcast { arg, to } => Expr::Broadcast { arg: f(arg), to },
            Expr::Reduce {
                op,
                arg,
                to,
                filter,
            } => Expr::Reduce {
                op,
                arg: f(arg),
                to,
                filter: filter.map(&f),
            },
            Expr::Scan { op, arg, discount } => Expr::Scan {
                op,
                arg: f(arg),
                discount: discount.map(&f),
            },
            Expr::Rank { arg, within } => Expr::Rank {
                arg: f(arg),
                within,
            },
            Expr::Quantile { arg, q, to, filter } => Expr::Quantile {
                arg: f(arg),
                q: f(q),
                to,
                filter: filter.map(&f),
            },
            Expr::PosReduce { op, arg } => Expr::PosReduce { op, arg: f(arg) },
            Expr::Detach { arg } => Expr::Detach { arg: f(arg) },
        }
    }

    /// Calls `f` on each operand, in the order of [`Expr::operands`], without allocating.
    pub fn for_each_operand(&self, mut f: impl FnMut(Handle<Expr>)) {
        match *self {
            Expr::Const(_) | Expr::Bool(_) | Expr::Param(_) | Expr::Input(_) | Expr::Index(_) => {}
            Expr::Unary { arg, .. }
            | Expr::Broadcast { arg, .. }
            | Expr::Rank { arg, .. }
            | Expr::PosReduce { arg, .. }
            | Expr::Detach { arg } => f(arg),
            Expr::Binary { lhs, rhs, .. } => {
                f(lhs);
                f(rhs)
            }
            Expr::Select {
                cond,
                on_true,
                on_false,
            } => {
                f(cond);
                f(on_true);
                f(on_false)
            }
            Expr::Reduce { arg, filter, .. } => {
                f(arg);
                filter.into_iter().for_each(f)
            }
            Expr::Scan { arg, discount, .. } => {
                f(arg);
                discount.into_iter().for_each(f)
            }
            Expr::Quantile { arg, q, filter, .. } => {
                f(arg);
                f(q);
                filter.into_iter().for_each(f)
            }
        }
    }

    /// The operands of a node, in a fixed order (used by the validator, DCE, the scheduler).
    pub fn operands(&self) -> Vec<Handle<Expr>> {
        match *self {
            Expr::Const(_) | Expr::Bool(_) | Expr::Param(_) | Expr::Input(_) | Expr::Index(_) => {
                vec![]
            }
            Expr::Unary { arg, .. }
            | Expr::Broadcast { arg, .. }
            | Expr::Rank { arg, .. }
            | Expr::PosReduce { arg, .. }
            | Expr::Detach { arg } => vec![arg],
            Expr::Binary { lhs, rhs, .. } => vec![lhs, rhs],
            Expr::Select {
                cond,
                on_true,
                on_false,
            } => vec![cond, on_true, on_false],
            Expr::Reduce { arg, filter, .. } => {
                let mut v = vec![arg];
                v.extend(filter);
                v
            }
            Expr::Scan { arg, discount, .. } => {
                let mut v = vec![arg];
                v.extend(discount);
                v
            }
            Expr::Quantile { arg, q, filter, .. } => {
                let mut v = vec![arg, q];
                v.extend(filter);
                v
            }
        }
    }
}
