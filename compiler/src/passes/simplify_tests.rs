//! Unit tests of broadcast sinking and sum factoring on hand-built modules (the value-level checks,
//! bit-for-bit on the stdlib and random modules, are in `tests/simplify.rs`).

use super::{simplify_with, Factor, SimplifyOptions};
use crate::arena::Handle;
use crate::ir::{BinaryOp, Expr, Input, Module, Named, Param, ReduceOp, UnaryOp};
use crate::passes::builder::Builder;
use crate::types::{DType, Level, Ty};
use crate::valid::validate;

/// Inputs `x: tok`, `t: turn`, `s: seq`, `ok: seq bool`, `g: group`, `m: tok bool`; param `p`.
fn builder() -> Builder {
    let mut m = Module::new("t");
    let input = |name: &str, level, dtype| Input {
        name: name.into(),
        ty: Ty::new(level, dtype),
        diff: false,
        span: Default::default(),
    };
    m.inputs = vec![
        input("x", Level::Tok, DType::F32),
        input("t", Level::Turn, DType::F32),
        input("s", Level::Seq, DType::F32),
        input("ok", Level::Seq, DType::Bool),
        input("g", Level::Group, DType::F32),
        input("m", Level::Tok, DType::Bool),
    ];
    m.params = vec![Param {
        name: "p".into(),
        default: 0.5,
        span: Default::default(),
    }];
    Builder::new(m)
}

/// Finishes with `loss` and the given outputs, then simplifies with `opts` and validates.
fn run(b: Builder, loss: Handle<Expr>, outputs: &[Handle<Expr>], opts: SimplifyOptions) -> Module {
    let mut m = b.finish();
    m.loss = loss;
    m.outputs = outputs
        .iter()
        .enumerate()
        .map(|(i, &value)| Named {
            name: format!("o{i}"),
            value,
            span: Default::default(),
        })
        .collect();
    validate(&m).expect("input valid");
    let out = simplify_with(m, opts);
    validate(&out).expect("output valid");
    out
}

fn at_level(m: &Module, level: Level) -> Vec<&Expr> {
    m.exprs
        .iter()
        .filter(|(h, _)| m.level(*h) == level)
        .map(|(_, e)| e)
        .collect()
}

fn count(m: &Module, f: impl Fn(&Expr) -> bool) -> usize {
    m.exprs.iter().filter(|(_, e)| f(e)).count()
}

/// The arg of the broadcast `h`, and its level.
fn source(m: &Module, h: Handle<Expr>) -> (Handle<Expr>, Level) {
    match m.exprs.get(h) {
        Some(Expr::Broadcast { arg, .. }) => (*arg, m.level(*arg)),
        other => panic!("{h} is not a broadcast: {other:?}"),
    }
}

/// `x · ((s · p) + 0.5)`: the coefficient is computed per sequence and broadcast once.
#[test]
fn a_chain_of_broadcast_operands_collapses_to_one_broadcast() {
    let mut b = builder();
    let (x, s, p) = (b.input(0), b.input(2), b.param(0));
    let half = b.constant(0.5);
    let sp = b.mul(s, p);
    let c = b.add(sp, half);
    let sx = b.bcast(s, Level::Tok);
    let coeff = b.bcast(c, Level::Tok);
    // Written per token on purpose, as the lowering would after `let a = s` at token level.
    let pt = b.bcast(p, Level::Tok);
    let ht = b.bcast(half, Level::Tok);
    let spt = b.mul(sx, pt);
    let ct = b.add(spt, ht);
    let y = b.mul(ct, x);
    let loss = b.reduce(ReduceOp::Sum, y, Level::Batch, None);
    let basic = run(builder_clone(&b), loss, &[coeff, y], SimplifyOptions::BASIC);
    let exact = run(b, loss, &[coeff, y], SimplifyOptions::EXACT);
    // BASIC: x, s·p·0.5 per token (3 broadcasts, mul, add), y, coeff's broadcast.
    assert_eq!(at_level(&basic, Level::Tok).len(), 8);
    // EXACT: x, one broadcast of the (shared) sequence coefficient, y.
    assert_eq!(at_level(&exact, Level::Tok).len(), 3, "{exact:#?}");
    let Some(&Expr::Binary { lhs, .. }) =
        exact.outputs.get(1).and_then(|o| exact.exprs.get(o.value))
    else {
        panic!("y is not a binary node")
    };
    assert_eq!(source(&exact, lhs).1, Level::Seq);
    assert_eq!(
        exact.outputs[0].value, lhs,
        "coefficient shared with the seq-level one"
    );
}

/// Tests need the same module twice; rebuilding is simplest.
fn builder_clone(b: &Builder) -> Builder {
    Builder::new(b.m.clone())
}

/// Bool values, selects, `ToF32`, `Not` and `Detach` sink with their dtypes.
#[test]
fn bools_selects_and_detach_sink() {
    let mut b = builder();
    let (ok, s, x) = (b.input(3), b.input(2), b.input(0));
    let okt = b.bcast(ok, Level::Tok);
    let st = b.bcast(s, Level::Tok);
    let zero = b.const_at(0.0, Level::Tok);
    let sel = b.select(okt, st, zero);
    let not = b.unary(UnaryOp::Not, okt);
    let f = b.unary(UnaryOp::ToF32, not);
    let d = b.detach(st);
    let sum = b.add(sel, f);
    let sum = b.add(sum, d);
    let y = b.mul(sum, x);
    let loss = b.reduce(ReduceOp::Sum, y, Level::Batch, None);
    let m = run(b, loss, &[not, f, d], SimplifyOptions::EXACT);
    for o in &m.outputs {
        let (_, level) = source(&m, o.value);
        assert_eq!(level, Level::Seq, "{} not sunk", o.name);
    }
    assert_eq!(m.ty(m.outputs[0].value).dtype, DType::Bool);
    // Per token, besides broadcasts (of the outputs and of the coefficient of x): x and y.
    let computed = at_level(&m, Level::Tok)
        .into_iter()
        .filter(|e| !matches!(e, Expr::Broadcast { .. }))
        .count();
    assert_eq!(computed, 2, "{m:#?}");
}

/// Operands from different levels meet at the finest of them (here `turn`).
#[test]
fn mixed_levels_sink_to_the_finest_source() {
    let mut b = builder();
    let (x, t, g) = (b.input(0), b.input(1), b.input(4));
    let tt = b.bcast(t, Level::Tok);
    let gt = b.bcast(g, Level::Tok);
    let d = b.binary(BinaryOp::Sub, gt, tt);
    let y = b.mul(d, x);
    let loss = b.reduce(ReduceOp::Sum, y, Level::Batch, None);
    let m = run(b, loss, &[d], SimplifyOptions::EXACT);
    let (inner, level) = source(&m, m.outputs[0].value);
    assert_eq!(level, Level::Turn);
    let Some(&Expr::Binary { lhs, rhs, .. }) = m.exprs.get(inner) else {
        panic!("not a binary")
    };
    assert_eq!(source(&m, lhs).1, Level::Group);
    assert!(matches!(m.exprs.get(rhs), Some(Expr::Input(1))));
}

/// A select whose literal condition picks a branch coarser than where the select sank: one
/// broadcast, not a broadcast of a broadcast.
#[test]
fn no_broadcast_of_a_broadcast() {
    let mut b = builder();
    let (x, s, p) = (b.input(0), b.input(2), b.param(0));
    let yes = b.boolean(true);
    let c = b.bcast(yes, Level::Tok);
    let pt = b.bcast(p, Level::Tok);
    let st = b.bcast(s, Level::Tok);
    let sel = b.select(c, pt, st);
    let y = b.mul(sel, x);
    let loss = b.reduce(ReduceOp::Sum, y, Level::Batch, None);
    let m = run(b, loss, &[sel], SimplifyOptions::EXACT);
    let (arg, level) = source(&m, m.outputs[0].value);
    assert_eq!(level, Level::Batch);
    assert!(matches!(m.exprs.get(arg), Some(Expr::Param(0))));
}

fn tok_sums(m: &Module) -> usize {
    count(
        m,
        |e| matches!(e, Expr::Reduce { op: ReduceOp::Sum, arg, .. } if m.level(*arg) == Level::Tok),
    )
}

/// `batch_sum(x, where: m)` and `group_sum(x, where: m)` share one filtered per-sequence sum.
#[test]
fn sums_of_the_same_tokens_share_one_accumulator() {
    let mut b = builder();
    let (x, mask) = (b.input(0), b.input(5));
    let bs = b.reduce(ReduceOp::Sum, x, Level::Batch, Some(mask));
    let gs = b.reduce(ReduceOp::Sum, x, Level::Group, Some(mask));
    let gb = b.reduce(ReduceOp::Sum, gs, Level::Batch, None);
    let loss = b.add(bs, gb);
    let off = run(builder_clone(&b), loss, &[], SimplifyOptions::EXACT);
    let on = run(b, loss, &[], SimplifyOptions::default());
    assert_eq!(tok_sums(&off), 2);
    assert_eq!(tok_sums(&on), 1);
    assert!(on.exprs.iter().any(|(_, e)| matches!(
        e,
        Expr::Reduce {
            op: ReduceOp::Sum,
            to: Level::Seq,
            filter: Some(_),
            ..
        }
    )));
}

/// A lone sum is left alone by `Shared` (nothing to share), factored by `Always`; max is never
/// factored (an empty sequence's max is 0, which would enter the outer max).
#[test]
fn lone_sums_and_maxes_stay() {
    let mut b = builder();
    let x = b.input(0);
    let bs = b.reduce(ReduceOp::Sum, x, Level::Batch, None);
    let bm = b.reduce(ReduceOp::Max, x, Level::Batch, None);
    let sm = b.reduce(ReduceOp::Max, x, Level::Seq, None);
    let loss = b.add(bs, bm);
    let shared = run(builder_clone(&b), loss, &[sm], SimplifyOptions::default());
    let always = SimplifyOptions {
        sink: true,
        factor: Factor::Always,
    };
    let always = run(b, loss, &[sm], always);
    let to_seq = |m: &Module| {
        count(m, |e| {
            matches!(
                e,
                Expr::Reduce {
                    op: ReduceOp::Sum,
                    to: Level::Seq,
                    ..
                }
            )
        })
    };
    assert_eq!(to_seq(&shared), 0);
    assert_eq!(to_seq(&always), 1);
    for m in [&shared, &always] {
        let maxes = count(
            m,
            |e| matches!(e, Expr::Reduce { op: ReduceOp::Max, arg, .. } if m.level(*arg) == Level::Tok),
        );
        assert_eq!(maxes, 2);
    }
}
