//! `simplify`: rebuilds the arena keeping only what the roots need (DCE), hash-consing every node
//! (CSE), folding constants with the interpreter's own scalar semantics, and applying algebraic
//! identities that are exact in IEEE arithmetic for every input, NaN and ±0 included:
//! `x·1`, `1·x`, `x/1`, `x − 0`, `x + (−0)`, `x^1`, `−(−x)`, `!!x`, `x ∧ true`, `x ∨ false`,
//! `c ? a : a`, `true ? a : b`, `detach(detach x)`, `detach(constant)`, broadcast of broadcast.
//! (Not `x·0 = 0`: false for inf and NaN; not `x + 0 = x`: false for x = −0.)
//!
//! Two rewrites cut the per-token work of every backend ([`SimplifyOptions`]):
//! - **Broadcast sinking** (exact): an elementwise node (`Unary`, `Binary`, `Select`, `Detach`)
//!   whose operands are all broadcasts `Broadcast(aᵢ, L)` is computed once at the finest level of
//!   the `aᵢ` and broadcast to `L`: `Broadcast(aᵢ, L) ∘ Broadcast(bᵢ, L) → Broadcast(a ∘ b, L)`.
//!   Every element gets the same operands, so the same bits. Bottom-up, so a whole `seq`-level
//!   subexpression that was computed per token becomes one broadcast.
//! - **Sum factoring**: a `Sum` of `tok`/`turn` values to `group`/`batch` becomes the sum of the
//!   per-sequence sums, `Σ_group x = Σ_group (Σ_seq x)` (filter on the inner sum; an empty
//!   sequence sums to 0, so the value is the same up to the order of f64 additions). Only `Sum`:
//!   nesting max/min would be wrong for empty sequences (their 0). Hash-consing then shares one
//!   per-token accumulator between aggregations of the same token values.

use std::collections::HashMap;

use crate::arena::Handle;
use crate::back::interp::ops;
use crate::ir::{BinaryOp, Expr, Grad, Module, Named, ReduceOp, UnaryOp};
use crate::passes::builder::Builder;
use crate::schedule::needed;
use crate::types::{DType, Level};

/// When to factor a `group`/`batch` sum of `tok`/`turn` values through per-sequence sums.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Factor {
    /// Never (sums keep their order of additions).
    Off,
    /// Only when the per-sequence sum is shared: the same values (and filter) are also summed
    /// to another level (`seq`, `group` or `batch`).
    Shared,
    /// Every such sum.
    Always,
}

/// The optional rewrites of [`simplify_with`]; the exact rewrites of the module docs always run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimplifyOptions {
    /// Broadcast sinking (never changes a value).
    pub sink: bool,
    /// Sum factoring (changes the order of f64 additions).
    pub factor: Factor,
}

impl SimplifyOptions {
    /// Only the exact identities, folding, CSE and DCE (the pass before sinking and factoring).
    pub const BASIC: SimplifyOptions = SimplifyOptions {
        sink: false,
        factor: Factor::Off,
    };
    /// Everything that keeps values bit-for-bit: `BASIC` + broadcast sinking.
    pub const EXACT: SimplifyOptions = SimplifyOptions {
        sink: true,
        factor: Factor::Off,
    };
}

impl Default for SimplifyOptions {
    /// What `compile` runs: sinking, and factoring only where it shares. On the 31 stdlib
    /// objectives `Shared` removes exactly the token-pass reductions `Always` removes (104 → 90)
    /// with 76 fewer nodes and fewer reordered sums: factoring a lone sum only trades its token
    /// accumulator for a sequence accumulator plus a small-stage sum
    /// (`cargo test -p rlo-tests --test simplify -- --ignored --nocapture` prints the table).
    fn default() -> Self {
        SimplifyOptions {
            sink: true,
            factor: Factor::Shared,
        }
    }
}

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

/// Simplifies with the options `compile` uses ([`SimplifyOptions::default`]).
pub fn simplify(m: Module) -> Module {
    simplify_with(m, SimplifyOptions::default())
}

/// Simplifies `m`: a first rebuild folds, sinks broadcasts and hash-conses; a second one factors
/// sums (deciding sharing on the canonical module of the first) and drops the nodes the first
/// one left unused.
pub fn simplify_with(m: Module, opts: SimplifyOptions) -> Module {
    let m = rebuild(m, opts.sink, &|_, _| false);
    match opts.factor {
        Factor::Off => rebuild(m, opts.sink, &|_, _| false),
        Factor::Always => rebuild(m, opts.sink, &|_, _| true),
        Factor::Shared => {
            let sums = sum_targets(&m);
            let shared = |arg: Handle<Expr>, filter: Option<Handle<Expr>>| {
                sums.get(&(arg, filter)).copied().unwrap_or(0) >= 2
            };
            rebuild(m, opts.sink, &shared)
        }
    }
}

/// For every needed `Sum` of a `tok`/`turn` argument to `seq`, `group` or `batch`: how many such
/// sums (distinct targets) read the same `(arg, filter)`.
fn sum_targets(m: &Module) -> HashMap<(Handle<Expr>, Option<Handle<Expr>>), usize> {
    let need = needed(m);
    let mut n = HashMap::new();
    for (h, e) in m.exprs.iter() {
        if let Expr::Reduce {
            op: ReduceOp::Sum,
            arg,
            to: Level::Seq | Level::Group | Level::Batch,
            filter,
        } = *e
        {
            if need.get(h.index()).copied().unwrap_or(false) && m.level(arg) <= Level::Turn {
                *n.entry((arg, filter)).or_insert(0) += 1;
            }
        }
    }
    n
}

/// One rebuild of the needed nodes of `m` in arena order. `factor(arg, filter)` (handles of `m`)
/// says whether a `group`/`batch` sum of that `tok`/`turn` argument goes through `seq` sums.
fn rebuild(
    m: Module,
    sink: bool,
    factor: &dyn Fn(Handle<Expr>, Option<Handle<Expr>>) -> bool,
) -> Module {
    let need = needed(&m);
    let mut out = Module::new(m.name.clone());
    out.doc = m.doc.clone();
    out.params = m.params.clone();
    out.inputs = m.inputs.clone();
    let mut s = Simplifier {
        b: Builder::new(out),
        sink,
    };
    let mut map: Vec<Option<Handle<Expr>>> = vec![None; m.exprs.len()];
    for (h, e) in m.exprs.iter() {
        if !need.get(h.index()).copied().unwrap_or(false) {
            continue;
        }
        s.b.span = m.span(h);
        let f = |o: Handle<Expr>| map.get(o.index()).copied().flatten().unwrap_or(o);
        let new = match factored_sum(&m, e, factor) {
            Some((arg, to, filter)) => {
                let inner = Expr::Reduce {
                    op: ReduceOp::Sum,
                    arg: f(arg),
                    to: Level::Seq,
                    filter: filter.map(f),
                };
                let inner = s.fold(inner, Level::Seq);
                let outer = Expr::Reduce {
                    op: ReduceOp::Sum,
                    arg: inner,
                    to,
                    filter: None,
                };
                s.fold(outer, to)
            }
            None => s.fold(e.map_operands(f), m.ty(h).level),
        };
        if let Some(x) = map.get_mut(h.index()) {
            *x = Some(new);
        }
    }
    let f = |o: Handle<Expr>| map.get(o.index()).copied().flatten().unwrap_or(o);
    let mut out = s.b.finish();
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

/// `(arg, to, filter)` when `e` is a `group`/`batch` sum of `tok`/`turn` values that `factor`
/// says to compute through per-sequence sums.
fn factored_sum(
    m: &Module,
    e: &Expr,
    factor: &dyn Fn(Handle<Expr>, Option<Handle<Expr>>) -> bool,
) -> Option<(Handle<Expr>, Level, Option<Handle<Expr>>)> {
    if let Expr::Reduce {
        op: ReduceOp::Sum,
        arg,
        to: to @ (Level::Group | Level::Batch),
        filter,
    } = *e
    {
        if m.level(arg) <= Level::Turn && factor(arg, filter) {
            return Some((arg, to, filter));
        }
    }
    None
}

struct Simplifier {
    b: Builder,
    sink: bool,
}

impl Simplifier {
    /// The simplest node equal to `e` (whose operands are already in the new module) at `level`.
    fn fold(&mut self, e: Expr, level: Level) -> Handle<Expr> {
        if self.sink {
            if let Some(h) = self.sink_broadcasts(&e, level) {
                return h;
            }
        }
        let b = &mut self.b;
        let lit = |b: &Builder, h: Handle<Expr>| literal(&b.m, h);
        match e {
            Expr::Const(c) => b.constant(c),
            Expr::Bool(x) => b.boolean(x),
            Expr::Param(i) => b.param(i),
            Expr::Input(i) => b.input(i),
            Expr::Index(k) => b.index(k),
            Expr::Unary { op, arg: a } => {
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
            Expr::Binary { op, lhs: x, rhs: y } => {
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
                cond: c,
                on_true: t,
                on_false: e,
            } => match lit(b, c) {
                Some(v) if v != 0.0 => t,
                Some(_) => e,
                None if t == e => t,
                None => b.select(c, t, e),
            },
            Expr::Broadcast { arg: a, to } => {
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
                if filter.is_some_and(|fl| is(lit(b, fl), 1.0)) {
                    b.reduce(op, arg, to, None)
                } else {
                    b.reduce(op, arg, to, filter)
                }
            }
            Expr::Scan { op, arg, discount } => b.scan(op, arg, discount),
            Expr::Rank { arg, within } => b.rank(arg, within),
            Expr::Quantile { arg, q, to, filter } => b.quantile(arg, q, to, filter),
            Expr::PosReduce { op, arg } => b.pos_reduce(op, arg),
            Expr::Detach { arg: a } => match b.m.exprs.get(a) {
                Some(Expr::Detach { .. } | Expr::Const(_) | Expr::Bool(_)) => a,
                _ if lit(b, a).is_some() => a,
                _ => b.detach(a),
            },
        }
    }

    /// Broadcast sinking: `e` elementwise at `level` with every operand `Broadcast(aᵢ, level)` is
    /// `Broadcast(e', level)` where `e'` is `e` on the `aᵢ` (each broadcast to the finest of their
    /// levels), itself simplified. `None` when `e` is not of that shape.
    fn sink_broadcasts(&mut self, e: &Expr, level: Level) -> Option<Handle<Expr>> {
        match e {
            Expr::Unary { .. }
            | Expr::Binary { .. }
            | Expr::Select { .. }
            | Expr::Detach { .. } => {}
            Expr::Const(_)
            | Expr::Bool(_)
            | Expr::Param(_)
            | Expr::Input(_)
            | Expr::Index(_)
            | Expr::Broadcast { .. }
            | Expr::Reduce { .. }
            | Expr::Scan { .. }
            | Expr::Rank { .. }
            | Expr::Quantile { .. }
            | Expr::PosReduce { .. } => return None,
        }
        // (broadcast operand, its argument)
        let mut src: Vec<(Handle<Expr>, Handle<Expr>)> = Vec::with_capacity(3);
        let mut all = true;
        e.for_each_operand(|o| match self.b.m.exprs.get(o) {
            Some(Expr::Broadcast { arg, .. }) => src.push((o, *arg)),
            _ => all = false,
        });
        if !all {
            return None;
        }
        let to = src.iter().map(|&(_, a)| self.b.level(a)).min()?;
        if to <= level {
            return None;
        }
        let moved: Vec<(Handle<Expr>, Handle<Expr>)> =
            src.iter().map(|&(o, a)| (o, self.b.bcast(a, to))).collect();
        let inner = e.map_operands(|o| moved.iter().find(|&&(k, _)| k == o).map_or(o, |&(_, v)| v));
        // The folded node may itself be a broadcast (a select with a literal condition picks a
        // branch coarser than `to`): broadcast its argument, never a broadcast of a broadcast.
        let h = self.fold(inner, to);
        let h = match self.b.m.exprs.get(h) {
            Some(Expr::Broadcast { arg, .. }) => *arg,
            _ => h,
        };
        Some(self.b.bcast(h, level))
    }
}

#[cfg(test)]
#[path = "simplify_tests.rs"]
mod tests;
