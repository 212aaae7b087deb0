//! Unit tests of the CPU backend on a hand-built module: every primitive kind, three different
//! schedules of the same module (all in one token pass, all serial, one stage per node) must
//! agree, thread counts must not change any bit, and a few values are checked against direct
//! Rust computations.

use super::*;
use rlo_compiler::ir::{BinaryOp, Expr, Grad, Input, Named, ReduceOp, ScanOp, UnaryOp};
use rlo_compiler::schedule::{Stage, StageKind};
use rlo_compiler::{DType, Handle, Layout, Ty};
use std::collections::BTreeMap;

type H = Handle<Expr>;

struct Mb(Module);

impl Mb {
    fn add(&mut self, e: Expr, level: Level, dtype: DType) -> H {
        self.0.append(e, Ty::new(level, dtype), Default::default())
    }
    fn f(&mut self, e: Expr, level: Level) -> H {
        self.add(e, level, DType::F32)
    }
}

fn input(name: &str, level: Level, dtype: DType) -> Input {
    Input {
        name: name.into(),
        ty: Ty::new(level, dtype),
        diff: false,
        span: Default::default(),
    }
}

fn named(name: &str, value: H) -> Named {
    Named {
        name: name.into(),
        value,
        span: Default::default(),
    }
}

/// A module touching every primitive; returns it with its output names.
fn module() -> Module {
    use Level::*;
    let mut b = Mb(Module::new("t"));
    b.0.inputs = vec![
        input("logp", Tok, DType::F32),
        input("old", Tok, DType::F32),
        input("reward", Seq, DType::F32),
        input("mask", Tok, DType::Bool),
    ];
    let lp = b.f(Expr::Input(0), Tok);
    let old = b.f(Expr::Input(1), Tok);
    let r = b.f(Expr::Input(2), Seq);
    let mask = b.add(Expr::Input(3), Tok, DType::Bool);
    let d = b.f(
        Expr::Binary {
            op: BinaryOp::Sub,
            lhs: lp,
            rhs: old,
        },
        Tok,
    );
    let ratio = b.f(
        Expr::Unary {
            op: UnaryOp::Exp,
            arg: d,
        },
        Tok,
    );
    let rb = b.f(Expr::Broadcast { arg: r, to: Tok }, Tok);
    let surr = b.f(
        Expr::Binary {
            op: BinaryOp::Mul,
            lhs: ratio,
            rhs: rb,
        },
        Tok,
    );
    let sum_seq = b.f(
        Expr::Reduce {
            op: ReduceOp::Sum,
            arg: surr,
            to: Seq,
            filter: Some(mask),
        },
        Seq,
    );
    let one = b.f(Expr::Const(1.0), Batch);
    let one_t = b.f(Expr::Broadcast { arg: one, to: Tok }, Tok);
    let cnt = b.f(
        Expr::Reduce {
            op: ReduceOp::Sum,
            arg: one_t,
            to: Seq,
            filter: None,
        },
        Seq,
    );
    let one_s = b.f(Expr::Broadcast { arg: one, to: Seq }, Seq);
    let cnt1 = b.f(
        Expr::Binary {
            op: BinaryOp::Max,
            lhs: cnt,
            rhs: one_s,
        },
        Seq,
    );
    let mean = b.f(
        Expr::Binary {
            op: BinaryOp::Div,
            lhs: sum_seq,
            rhs: cnt1,
        },
        Seq,
    );
    let loss = b.f(
        Expr::Reduce {
            op: ReduceOp::Sum,
            arg: mean,
            to: Batch,
            filter: None,
        },
        Batch,
    );
    let dmax = b.f(
        Expr::Reduce {
            op: ReduceOp::Max,
            arg: d,
            to: Batch,
            filter: None,
        },
        Batch,
    );
    let gmin = b.f(
        Expr::Reduce {
            op: ReduceOp::Min,
            arg: d,
            to: Group,
            filter: Some(mask),
        },
        Group,
    );
    let tsum = b.f(
        Expr::Reduce {
            op: ReduceOp::Sum,
            arg: ratio,
            to: Turn,
            filter: None,
        },
        Turn,
    );
    let tmax = b.f(
        Expr::Reduce {
            op: ReduceOp::Max,
            arg: d,
            to: Turn,
            filter: Some(mask),
        },
        Turn,
    );
    let cums = b.f(
        Expr::Scan {
            op: ScanOp::RevCumSum,
            arg: d,
            discount: None,
        },
        Tok,
    );
    let gam = b.f(Expr::Const(0.9), Batch);
    let gam_t = b.f(Expr::Broadcast { arg: gam, to: Tok }, Tok);
    let disc = b.f(
        Expr::Scan {
            op: ScanOp::DiscountedRevCumSum,
            arg: d,
            discount: Some(gam_t),
        },
        Tok,
    );
    let fwd = b.f(
        Expr::Scan {
            op: ScanOp::CumSum,
            arg: tsum,
            discount: None,
        },
        Turn,
    );
    let rank = b.f(
        Expr::Rank {
            arg: r,
            within: Group,
        },
        Seq,
    );
    let q = b.f(Expr::Const(0.3), Batch);
    let quant = b.f(
        Expr::Quantile {
            arg: d,
            q,
            to: Group,
            filter: Some(mask),
        },
        Group,
    );
    let pr = b.f(
        Expr::PosReduce {
            op: ReduceOp::Max,
            arg: d,
        },
        Tok,
    );
    let mean_t = b.f(Expr::Broadcast { arg: mean, to: Tok }, Tok);
    let cen = b.f(
        Expr::Binary {
            op: BinaryOp::Sub,
            lhs: d,
            rhs: mean_t,
        },
        Tok,
    );
    let big = b.add(
        Expr::Binary {
            op: BinaryOp::Gt,
            lhs: cen,
            rhs: d,
        },
        Tok,
        DType::Bool,
    );
    let sel = b.f(
        Expr::Select {
            cond: big,
            on_true: cen,
            on_false: pr,
        },
        Tok,
    );
    let sp = b.f(
        Expr::Unary {
            op: UnaryOp::Softplus,
            arg: sel,
        },
        Tok,
    );
    let gsum = b.f(
        Expr::Reduce {
            op: ReduceOp::Sum,
            arg: sp,
            to: Group,
            filter: None,
        },
        Group,
    );
    let gsum_s = b.f(Expr::Broadcast { arg: gsum, to: Seq }, Seq);
    let late = b.f(
        Expr::Binary {
            op: BinaryOp::Pow,
            lhs: gsum_s,
            rhs: rank,
        },
        Seq,
    );
    let grad = b.f(Expr::Detach { arg: surr }, Tok);
    let m = &mut b.0;
    m.loss = loss;
    m.metrics = vec![named("dmax", dmax)];
    m.outputs = vec![
        named("gmin", gmin),
        named("tsum", tsum),
        named("tmax", tmax),
        named("cums", cums),
        named("disc", disc),
        named("fwd", fwd),
        named("rank", rank),
        named("quant", quant),
        named("pr", pr),
        named("sel", sel),
        named("late", late),
        named("mask", mask),
    ];
    m.grads = vec![Grad {
        input: 0,
        value: grad,
    }];
    b.0
}

fn all_nodes(m: &Module) -> Vec<H> {
    m.exprs.handles().collect()
}

fn schedules(m: &Module) -> Vec<Schedule> {
    let one = |kind| Schedule {
        stages: vec![Stage {
            kind,
            nodes: all_nodes(m),
        }],
    };
    let each = Schedule {
        stages: all_nodes(m)
            .into_iter()
            .enumerate()
            .map(|(i, h)| Stage {
                kind: if i % 2 == 0 {
                    StageKind::TokenPass
                } else {
                    StageKind::Small
                },
                nodes: vec![h],
            })
            .collect(),
    };
    vec![one(StageKind::TokenPass), one(StageKind::Small), each]
}

fn batch(lengths: &[usize], groups: Vec<u32>) -> Batch {
    let mut layout = Layout::single_turn(lengths, groups);
    // Split sequence 0 (when long enough) into two turns.
    if lengths.first().copied().unwrap_or(0) >= 2 {
        let b = lengths.len();
        layout.turn_offsets = std::iter::once(0).chain((0..b).map(|i| i + 2)).collect();
        let mut tt = Vec::new();
        for (s, &l) in lengths.iter().enumerate() {
            for t in 0..l {
                tt.push(if s == 0 {
                    u32::from(t >= 1)
                } else {
                    s as u32 + 1
                });
            }
        }
        layout.tok_turn = tt;
    }
    let n = layout.n_tokens();
    let mut values = BTreeMap::new();
    let f = |i: usize, a: f64| ((i as f64 * a).sin() * 1.3).round() / 4.0;
    values.insert("logp".into(), (0..n).map(|i| f(i, 1.7) - 1.0).collect());
    values.insert("old".into(), (0..n).map(|i| f(i, 0.3) - 1.0).collect());
    values.insert(
        "mask".into(),
        (0..n).map(|i| f64::from(i % 3 != 1)).collect(),
    );
    values.insert(
        "reward".into(),
        (0..lengths.len()).map(|i| f(i, 2.1)).collect(),
    );
    layout.validate().expect("valid layout");
    Batch { layout, values }
}

fn close(a: &Evaluation, b: &Evaluation, tol: f64) {
    let ok = |x: f64, y: f64| {
        (x - y).abs() <= tol * (1.0 + x.abs().max(y.abs())) || (x.is_nan() && y.is_nan())
    };
    assert!(ok(a.loss, b.loss), "loss {} vs {}", a.loss, b.loss);
    for (u, v) in a.metrics.iter().zip(&b.metrics) {
        assert!(ok(*u, *v), "metric {u} vs {v}");
    }
    for (k, (u, v)) in a
        .outputs
        .iter()
        .zip(&b.outputs)
        .chain(a.grads.iter().zip(&b.grads))
        .enumerate()
    {
        assert_eq!(u.len(), v.len());
        for (x, y) in u.iter().zip(v) {
            assert!(ok(*x, *y), "result {k}: {u:?} vs {v:?}");
        }
    }
}

#[test]
fn schedules_agree_and_threads_do_not_change_bits() {
    let m = module();
    let batches = [
        batch(&[3, 0, 5, 1, 4, 2, 7], vec![0, 0, 1, 1, 1, 2, 3]),
        batch(&[1], vec![0]),
        batch(&[0, 0], vec![0, 1]),
    ];
    for f64 in [true, false] {
        let opts = ClifOptions { f64 };
        for bt in &batches {
            let mut results = Vec::new();
            for s in schedules(&m) {
                let k = CpuKernel::compile(&m, &s, opts).expect("compiles");
                let e1 = k.evaluate(&m, bt, &[], 1).expect("runs");
                let e3 = k.evaluate(&m, bt, &[], 3).expect("runs");
                assert_eq!(format!("{e1:?}"), format!("{e3:?}"), "threads changed bits");
                results.push(e1);
            }
            let tol = if f64 { 1e-12 } else { 1e-5 };
            close(&results[0], &results[1], tol);
            close(&results[0], &results[2], tol);
        }
    }
}

#[test]
fn values_match_direct_computation() {
    let m = module();
    let bt = batch(&[3, 0, 5, 1, 4, 2, 7], vec![0, 0, 1, 1, 1, 2, 3]);
    let s = &schedules(&m)[0];
    let k = CpuKernel::compile(&m, s, ClifOptions { f64: true }).expect("compiles");
    let e = k.evaluate(&m, &bt, &[], 2).expect("runs");
    let l = &bt.layout;
    let v = |n: &str| bt.values[n].clone();
    let (lp, old, rw, mask) = (v("logp"), v("old"), v("reward"), v("mask"));
    let d: Vec<f64> = lp.iter().zip(&old).map(|(a, b)| a - b).collect();
    let mut loss = 0.0;
    for (s, r) in rw.iter().enumerate() {
        let (a, b) = (l.seq_offsets[s], l.seq_offsets[s + 1]);
        let sum: f64 = (a..b)
            .filter(|&t| mask[t] != 0.0)
            .map(|t| d[t].exp() * r)
            .sum();
        loss += sum / ((b - a) as f64).max(1.0);
    }
    assert!(
        (e.loss - loss).abs() < 1e-12 * (1.0 + loss.abs()),
        "{} vs {loss}",
        e.loss
    );
    let dmax = d.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    assert_eq!(e.metrics[0], dmax);
    // rank of reward within groups: group 1 = seqs 2,3,4.
    let rank = &e.outputs[6];
    let mut g1: Vec<(f64, usize)> = (2..5).map(|s| (rw[s], s)).collect();
    g1.sort_by(|a, b| a.0.partial_cmp(&b.0).expect("finite").then(a.1.cmp(&b.1)));
    for (r, &(_, s)) in g1.iter().enumerate() {
        assert_eq!(rank[s], r as f64);
    }
    // reverse cumsum of d over sequence 2.
    let (a, b) = (l.seq_offsets[2], l.seq_offsets[3]);
    let mut acc = 0.0;
    for t in (a..b).rev() {
        acc += d[t];
        assert!((e.outputs[3][t] - acc).abs() < 1e-12);
    }
    // min over a group's masked tokens; group 2 has one sequence.
    let (a, b) = (l.seq_offsets[5], l.seq_offsets[6]);
    let gmin = (a..b)
        .filter(|&t| mask[t] != 0.0)
        .map(|t| d[t])
        .fold(f64::INFINITY, f64::min);
    assert_eq!(e.outputs[0][2], if gmin.is_finite() { gmin } else { 0.0 });
    // bool output comes back as 0/1.
    assert_eq!(e.outputs[11], mask);
}

#[test]
fn kernel_cache_and_parameter_changes() {
    let mut m = module();
    m.params.push(rlo_compiler::ir::Param {
        name: "eps".into(),
        default: 0.2,
        span: Default::default(),
    });
    let p = m.append(
        Expr::Param(0),
        Ty::new(Level::Batch, DType::F32),
        Default::default(),
    );
    let loss = m.loss;
    let l2 = m.append(
        Expr::Binary {
            op: BinaryOp::Mul,
            lhs: loss,
            rhs: p,
        },
        Ty::new(Level::Batch, DType::F32),
        Default::default(),
    );
    m.loss = l2;
    let s = schedules(&m).swap_remove(0);
    let k1 = kernel(&m, &s, ClifOptions::default()).expect("compiles");
    let k2 = kernel(&m, &s, ClifOptions::default()).expect("cached");
    assert!(Arc::ptr_eq(&k1, &k2));
    let bt = batch(&[3, 2], vec![0, 0]);
    let a = k1.evaluate(&m, &bt, &[1.0], 1).expect("runs");
    let b = k1.evaluate(&m, &bt, &[2.0], 1).expect("runs");
    assert_eq!(b.loss, 2.0 * a.loss);
    assert!(k1.evaluate(&m, &bt, &[], 1).is_err());
}
