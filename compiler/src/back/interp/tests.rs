//! Semantics of the primitives on hand-made batches (values checked by hand / against numpy).

#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use super::*;
use crate::data::Layout;
use crate::ir::{Input, ReduceOp, ScanOp};
use crate::passes::builder::Builder;
use crate::schedule::schedule;
use crate::types::{DType, Ty};

/// Three sequences of lengths 3, 0, 2; sequences 0 and 2 in group 0, sequence 1 in group 1.
fn batch(x: Vec<f64>) -> Batch {
    let layout = Layout::single_turn(&[3, 0, 2], vec![0, 1, 0]);
    Batch {
        layout,
        values: [("x".to_string(), x)].into_iter().collect(),
    }
}

/// Evaluates `f(x)` (x: tok input) as an output.
fn run(x: Vec<f64>, f: impl Fn(&mut Builder, Handle<Expr>) -> Handle<Expr>) -> Vec<f64> {
    let mut m = Module::new("t");
    m.inputs.push(Input {
        name: "x".into(),
        ty: Ty::new(Level::Tok, DType::F32),
        diff: false,
        span: Default::default(),
    });
    let mut b = Builder::new(m);
    let x_h = b.input(0);
    let out = f(&mut b, x_h);
    let loss = b.constant(0.0);
    let mut m = b.finish();
    m.loss = loss;
    m.outputs.push(crate::ir::Named {
        name: "o".into(),
        value: out,
        span: Default::default(),
    });
    crate::valid::validate(&m).unwrap();
    let s = schedule(&m);
    evaluate(&m, &s, &batch(x), &[]).unwrap().outputs.remove(0)
}

#[test]
fn empty_reductions_are_zero() {
    let x = vec![1.0, -5.0, 3.0, 2.0, 2.0];
    for op in [ReduceOp::Sum, ReduceOp::Max, ReduceOp::Min] {
        let v = run(x.clone(), |b, x| b.reduce(op, x, Level::Seq, None));
        assert_eq!(v[1], 0.0, "{op:?} of the empty sequence");
    }
    let v = run(x.clone(), |b, x| {
        b.reduce(ReduceOp::Max, x, Level::Seq, None)
    });
    assert_eq!(v, vec![3.0, 0.0, 2.0]);
    let v = run(x, |b, x| {
        let z = b.const_at(10.0, Level::Tok);
        let f = b.binary(crate::ir::BinaryOp::Gt, x, z);
        b.reduce(ReduceOp::Min, x, Level::Group, Some(f))
    });
    assert_eq!(v, vec![0.0, 0.0], "all filtered out");
}

#[test]
fn ranks_break_ties_by_position() {
    let v = run(vec![2.0, 1.0, 2.0, 2.0, -0.0], |b, x| {
        b.rank(x, Level::Batch)
    });
    assert_eq!(v, vec![2.0, 1.0, 3.0, 4.0, 0.0]);
    let v = run(vec![f64::NAN, 1.0, 0.0, 5.0, f64::NAN], |b, x| {
        b.rank(x, Level::Seq)
    });
    assert_eq!(v, vec![2.0, 1.0, 0.0, 0.0, 1.0], "NaN ranks last");
}

#[test]
fn quantiles_match_numpy_linear() {
    // np.quantile([0, 1, 2, 3, 4], q): all five tokens at batch level.
    let x = vec![4.0, 1.0, 3.0, 2.0, 0.0];
    for (q, want) in [
        (0.0, 0.0),
        (0.25, 1.0),
        (0.3, 1.2),
        (0.5, 2.0),
        (0.9, 3.6),
        (1.0, 4.0),
        (1.5, 4.0),
    ] {
        let v = run(x.clone(), |b, x| {
            let q = b.constant(q);
            b.quantile(x, q, Level::Batch, None)
        });
        assert!((v[0] - want).abs() < 1e-12, "q={q}: {} vs {want}", v[0]);
    }
    let v = run(x, |b, x| {
        let q = b.constant(0.5);
        b.quantile(x, q, Level::Seq, None)
    });
    assert_eq!(v, vec![3.0, 0.0, 1.0], "per sequence, empty → 0");
}

#[test]
fn scans_and_per_position_reductions() {
    let x = vec![1.0, 2.0, 3.0, 10.0, 20.0];
    assert_eq!(
        run(x.clone(), |b, x| b.scan(ScanOp::CumSum, x, None)),
        vec![1.0, 3.0, 6.0, 10.0, 30.0]
    );
    assert_eq!(
        run(x.clone(), |b, x| b.scan(ScanOp::RevCumSum, x, None)),
        vec![6.0, 5.0, 3.0, 30.0, 20.0]
    );
    let d = |b: &mut Builder| b.constant(0.5);
    assert_eq!(
        run(x.clone(), |b, x| {
            let d = d(b);
            b.scan(ScanOp::DiscountedRevCumSum, x, Some(d))
        }),
        vec![1.0 + 0.5 * (2.0 + 0.5 * 3.0), 2.0 + 1.5, 3.0, 20.0, 20.0]
    );
    assert_eq!(
        run(x.clone(), |b, x| {
            let d = d(b);
            b.scan(ScanOp::DiscountedCumSum, x, Some(d))
        }),
        vec![1.0, 2.5, 3.0 + 1.25, 10.0, 25.0]
    );
    // Group 0 = sequences 0 (len 3) and 2 (len 2): positions 0, 1 have both, position 2 one.
    assert_eq!(
        run(x.clone(), |b, x| b.pos_reduce(ReduceOp::Sum, x)),
        vec![11.0, 22.0, 3.0, 11.0, 22.0]
    );
    assert_eq!(
        run(x, |b, x| b.pos_reduce(ReduceOp::Min, x)),
        vec![1.0, 2.0, 3.0, 1.0, 2.0]
    );
}

#[test]
fn errors_name_the_input() {
    let mut m = Module::new("t");
    m.inputs.push(Input {
        name: "x".into(),
        ty: Ty::new(Level::Tok, DType::F32),
        diff: false,
        span: Default::default(),
    });
    let mut b = Builder::new(m);
    let x = b.input(0);
    let loss = b.reduce(ReduceOp::Sum, x, Level::Batch, None);
    let mut m = b.finish();
    m.loss = loss;
    let s = schedule(&m);
    let mut bad = batch(vec![1.0; 4]);
    let e = evaluate(&m, &s, &bad, &[]).unwrap_err();
    assert!(e.to_string().contains("`x` has 4 values"), "{e}");
    bad.values.clear();
    let e = evaluate(&m, &s, &bad, &[]).unwrap_err();
    assert!(e.to_string().contains("missing input `x`"), "{e}");
    let e = evaluate(&m, &s, &batch(vec![0.0; 5]), &[1.0]).unwrap_err();
    assert!(matches!(e, InterpError::WrongParamCount { .. }));
    // A schedule that reads a reduction inside the pass computing it is refused.
    let mut s2 = s.clone();
    if let Some(st) = s2.stages.iter_mut().find(|st| st.nodes.contains(&loss)) {
        st.nodes.retain(|&h| h != loss);
    }
    let e = evaluate(&m, &s2, &batch(vec![0.0; 5]), &[]).unwrap_err();
    assert!(matches!(e, InterpError::BadSchedule { .. }), "{e}");
}
