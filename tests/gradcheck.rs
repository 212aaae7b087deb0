//! Finite-difference checks of autodiff on the f64 interpreter: every primitive on its own, then
//! random modules (`RLO_GRADCHECK_MODULES`, default 60; the big run uses 600).
//!
//! Central differences with `h = 1e-6·max(1, |x|)`; a coordinate passes when
//! `|ad − fd| ≤ 1e-6·max(|ad|, |fd|) + 1e-8·(1 + |loss|)` (the absolute floor is the rounding
//! error of the differences). A coordinate is skipped as "at a kink" only when the one-sided
//! differences disagree by more than the mismatch itself, which a smooth function cannot do and
//! which every max/min/abs/select/rank/quantile kink within `h` does; skips are counted and
//! bounded.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rlo_compiler::arena::Handle;
use rlo_compiler::back::interp::evaluate;
use rlo_compiler::data::Batch;
use rlo_compiler::ir::{BinaryOp, Expr, IndexKind, Module, ReduceOp, ScanOp, UnaryOp};
use rlo_compiler::passes::builder::Builder;
use rlo_compiler::schedule::Schedule;
use rlo_compiler::types::{DType, Level};
use rlo_tests::*;

#[derive(Default, Debug)]
struct Stats {
    checked: usize,
    /// Coordinates with a nonzero gradient (the checks are not vacuous).
    nonzero: usize,
    kinks: usize,
    /// Batches where the loss itself is not finite (the objective's own domain, e.g. ORPO's
    /// log(1 − e^mean) of an empty sequence): nothing to differentiate.
    nonfinite: usize,
    failures: Vec<String>,
}

fn check(m: &Module, s: &Schedule, batch: &Batch, params: &[f64], st: &mut Stats) {
    let ev = match evaluate(m, s, batch, params) {
        Ok(ev) => ev,
        Err(e) => {
            st.failures.push(format!("evaluate: {e}"));
            return;
        }
    };
    let f0 = ev.loss;
    if !f0.is_finite() {
        st.nonfinite += 1;
        return;
    }
    for (k, g) in m.grads.iter().enumerate() {
        let Some(inp) = m.inputs.get(g.input as usize) else {
            continue;
        };
        let n = batch.values.get(&inp.name).map_or(0, Vec::len);
        for j in 0..n {
            let ad = ev.grads[k][j];
            let x = batch.values[&inp.name][j];
            let h = 1e-6 * x.abs().max(1.0);
            let at = |d: f64| {
                let mut b2 = batch.clone();
                if let Some(v) = b2.values.get_mut(&inp.name) {
                    v[j] = x + d;
                }
                evaluate(m, s, &b2, params)
                    .map(|e| e.loss)
                    .unwrap_or(f64::NAN)
            };
            let (fp, fm) = (at(h), at(-h));
            let fd = (fp - fm) / (2.0 * h);
            let (fwd, bwd) = ((fp - f0) / h, (f0 - fm) / h);
            let err = (ad - fd).abs();
            let tol = 1e-6 * ad.abs().max(fd.abs()) + 1e-8 * (1.0 + f0.abs());
            st.checked += 1;
            st.nonzero += usize::from(ad != 0.0);
            if err <= tol {
                continue;
            }
            if (fwd - bwd).abs() > err || !fd.is_finite() {
                st.kinks += 1;
                continue;
            }
            st.failures.push(format!(
                "d loss/d {}[{j}]: autodiff {ad:e}, finite difference {fd:e} (err {err:e} > {tol:e})",
                inp.name
            ));
        }
    }
}

/// A module whose loss is `batch_sum(w · f(x))` for the primitive `f`, with `x` diff inputs at
/// each level and `w` random weights at the result's level.
/// Builds the node under test from the builder and the input handles.
type Prim<'a> = &'a dyn Fn(&mut Builder, &[Handle<Expr>]) -> Handle<Expr>;

fn prim_module(f: Prim) -> Module {
    let inputs: Vec<(&str, Level, DType, bool)> = vec![
        ("xt", Level::Tok, DType::F32, true),
        ("yt", Level::Tok, DType::F32, true),
        ("xk", Level::Turn, DType::F32, true),
        ("xs", Level::Seq, DType::F32, true),
        ("ys", Level::Seq, DType::F32, true),
        ("xg", Level::Group, DType::F32, true),
        ("mt", Level::Tok, DType::Bool, false),
        ("mk", Level::Turn, DType::Bool, false),
        ("ms", Level::Seq, DType::Bool, false),
        ("wt", Level::Tok, DType::F32, false),
        ("wk", Level::Turn, DType::F32, false),
        ("ws", Level::Seq, DType::F32, false),
        ("wg", Level::Group, DType::F32, false),
    ];
    let mut b = module_with_inputs("prim", &inputs, &[("q", 0.3)]);
    let hs: Vec<Handle<Expr>> = (0..inputs.len() as u32).map(|i| b.input(i)).collect();
    let r = f(&mut b, &hs);
    let lr = b.level(r);
    let w = match lr {
        Level::Tok => Some(hs[9]),
        Level::Turn => Some(hs[10]),
        Level::Seq => Some(hs[11]),
        Level::Group => Some(hs[12]),
        Level::Batch => None,
    };
    let r = match w {
        Some(w) => b.mul(w, r),
        None => r,
    };
    let loss = if lr == Level::Batch {
        r
    } else {
        b.reduce(ReduceOp::Sum, r, Level::Batch, None)
    };
    finish(b, loss, &[], &[])
}

fn run_prim(name: &str, f: Prim) -> Stats {
    let m = prim_module(f);
    let (m, s) = compile_module(m).unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut st = Stats::default();
    for seed in 0..6 {
        let mut rng = StdRng::seed_from_u64(seed);
        let layout = random_layout(&mut rng, LayoutSpec::default());
        let batch = random_batch(&m, &layout, &mut rng);
        check(&m, &s, &batch, &[0.3], &mut st);
    }
    assert!(st.failures.is_empty(), "{name}: {:#?}", st.failures);
    assert!(
        st.kinks * 10 <= st.checked.max(1),
        "{name}: too many kink skips {st:?}"
    );
    st
}

#[test]
fn unary_primitives() {
    use UnaryOp::*;
    for op in [
        Neg, Exp, Log, Log1p, Expm1, Sqrt, Abs, Sigmoid, Softplus, Tanh, Lgamma,
    ] {
        run_prim(&format!("{op:?}"), &|b, x| {
            let a = match op {
                Log | Log1p | Sqrt | Lgamma => {
                    let t = b.mul(x[0], x[0]);
                    let c = b.constant(0.3);
                    b.add(t, c)
                }
                _ => x[0],
            };
            b.unary(op, a)
        });
    }
}

#[test]
fn binary_primitives() {
    use BinaryOp::*;
    for op in [Add, Sub, Mul, Div, Pow, Min, Max] {
        for (i, j) in [(0usize, 1usize), (3, 4), (0, 3), (0, 0)] {
            run_prim(&format!("{op:?}"), &|b, x| {
                let (a, c) = (x[i], x[j]);
                match op {
                    Pow => {
                        let t = b.mul(a, a);
                        let o = b.constant(0.5);
                        let base = b.add(t, o);
                        b.binary(Pow, base, c)
                    }
                    Div => {
                        let t = b.mul(c, c);
                        let o = b.constant(0.5);
                        let d = b.add(t, o);
                        b.div(a, d)
                    }
                    _ => b.binary(op, a, c),
                }
            });
        }
    }
    // Exact ties split evenly: min(x, x) and max(x, x) have derivative 1.
    run_prim("min tie", &|b, x| b.binary(Min, x[0], x[0]));
}

#[test]
fn select_broadcast_detach() {
    run_prim("select", &|b, x| {
        let c = b.binary(BinaryOp::Gt, x[0], x[1]);
        let e = b.unary(UnaryOp::Exp, x[1]);
        b.select(c, x[0], e)
    });
    for (i, to) in [
        (3usize, Level::Tok),
        (3, Level::Turn),
        (5, Level::Tok),
        (5, Level::Seq),
        (2, Level::Tok),
    ] {
        run_prim("broadcast", &|b, x| {
            let y = b.bcast(x[i], to);
            b.mul(y, y)
        });
    }
}

/// `detach` is value-preserving with gradient 0: d(detach(x)·x)/dx = x, not 2x.
#[test]
fn detach_cuts_the_gradient() {
    let mut b = module_with_inputs("d", &[("x", Level::Tok, DType::F32, true)], &[]);
    let x = b.input(0);
    let d = b.detach(x);
    let y = b.mul(d, x);
    let loss = b.reduce(ReduceOp::Sum, y, Level::Batch, None);
    let (m, s) = compile_module(finish(b, loss, &[], &[])).unwrap();
    let mut rng = StdRng::seed_from_u64(3);
    let layout = random_layout(&mut rng, LayoutSpec::default());
    let batch = random_batch(&m, &layout, &mut rng);
    let ev = evaluate(&m, &s, &batch, &[]).unwrap();
    assert_eq!(ev.grads[0], batch.values["x"]);
}

#[test]
fn reductions() {
    let pairs = [
        (0usize, Level::Turn, 6usize),
        (0, Level::Seq, 6),
        (0, Level::Group, 6),
        (0, Level::Batch, 6),
        (2, Level::Seq, 7),
        (2, Level::Batch, 7),
        (3, Level::Group, 8),
        (3, Level::Batch, 8),
        (5, Level::Batch, 8),
    ];
    for op in [ReduceOp::Sum, ReduceOp::Max, ReduceOp::Min] {
        for (i, to, m) in pairs {
            for filtered in [false, true] {
                run_prim(&format!("reduce {op:?} to {to}"), &|b, x| {
                    let filter = (filtered && i != 5).then_some(x[m]);
                    b.reduce(op, x[i], to, filter)
                });
            }
        }
    }
    // Tied maxima share the gradient: max over a broadcast value.
    run_prim("max ties", &|b, x| {
        let y = b.bcast(x[3], Level::Tok);
        b.reduce(ReduceOp::Max, y, Level::Seq, None)
    });
}

#[test]
fn scans_ranks_quantiles_posreduce() {
    for op in [
        ScanOp::CumSum,
        ScanOp::RevCumSum,
        ScanOp::DiscountedRevCumSum,
        ScanOp::DiscountedCumSum,
        ScanOp::Next,
        ScanOp::Prev,
    ] {
        for (i, j) in [(0usize, 1usize), (2, 2)] {
            run_prim(&format!("{op:?}"), &|b, x| {
                let d = matches!(op, ScanOp::DiscountedRevCumSum | ScanOp::DiscountedCumSum)
                    .then(|| b.unary(UnaryOp::Sigmoid, x[j]));
                b.scan(op, x[i], d)
            });
        }
    }
    for (i, within) in [
        (0usize, Level::Seq),
        (0, Level::Batch),
        (3, Level::Group),
        (2, Level::Seq),
    ] {
        run_prim("rank", &|b, x| {
            let r = b.rank(x[i], within);
            b.mul(r, x[i])
        });
    }
    for (i, to, m) in [
        (0usize, Level::Seq, 6usize),
        (0, Level::Batch, 6),
        (3, Level::Group, 8),
        (3, Level::Batch, 8),
        (2, Level::Seq, 7),
    ] {
        for qv in [0.0, 0.3, 0.5, 1.0] {
            for filtered in [false, true] {
                run_prim(&format!("quantile {qv} to {to}"), &|b, x| {
                    let q = b.constant(qv);
                    b.quantile(x[i], q, to, filtered.then_some(x[m]))
                });
            }
        }
    }
    // Ties: every token of a sequence has the same value; the order statistics are tied and the
    // gradient still sums to exactly 1 per (non-empty) sequence.
    for qv in [0.0, 0.4, 1.0] {
        run_prim("quantile ties", &|b, x| {
            let y = b.bcast(x[3], Level::Tok);
            let q = b.constant(qv);
            b.quantile(y, q, Level::Seq, None)
        });
    }
    for op in [ReduceOp::Sum, ReduceOp::Max, ReduceOp::Min] {
        run_prim(&format!("posreduce {op:?}"), &|b, x| b.pos_reduce(op, x[0]));
    }
    run_prim("posreduce ties", &|b, x| {
        let y = b.bcast(x[5], Level::Tok);
        b.pos_reduce(ReduceOp::Max, y)
    });
    run_prim("pos", &|b, x| {
        let p = b.index(IndexKind::Pos);
        let t = b.index(IndexKind::TurnIndex);
        let y = b.mul(p, x[0]);
        let z = b.mul(t, x[2]);
        let zs = b.reduce(ReduceOp::Sum, z, Level::Batch, None);
        let ys = b.reduce(ReduceOp::Sum, y, Level::Batch, None);
        b.add(ys, zs)
    });
}

#[test]
fn random_modules() {
    let count: u64 = std::env::var("RLO_GRADCHECK_MODULES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let mut total = Stats::default();
    for seed in 0..count {
        let mut rng = StdRng::seed_from_u64(1000 + seed);
        let steps = rng.random_range(4..16);
        let m = random_module(
            &mut rng,
            ModuleSpec {
                steps,
                detach: false,
            },
        );
        let (m, s) = compile_module(m).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        let layout = random_layout(&mut rng, LayoutSpec::default());
        let batch = random_batch(&m, &layout, &mut rng);
        let mut st = Stats::default();
        check(&m, &s, &batch, &[0.7], &mut st);
        assert_eq!(
            st.nonfinite, 0,
            "seed {seed}: random modules are finite by construction"
        );
        assert!(
            st.failures.is_empty(),
            "seed {seed}: {:#?}\n{}",
            st.failures,
            rlo_compiler::ir::display_module(&m)
        );
        total.checked += st.checked;
        total.nonzero += st.nonzero;
        total.kinks += st.kinks;
    }
    eprintln!(
        "gradcheck: {count} random modules, {} coordinates checked ({} nonzero), {} skipped at kinks",
        total.checked, total.nonzero, total.kinks
    );
    // Diff inputs that a random loss happens not to read have zero gradients (checked too).
    assert!(
        total.nonzero * 3 >= total.checked,
        "too many zero gradients: {total:?}"
    );
    assert!(total.kinks * 20 <= total.checked.max(1), "{total:?}");
}

/// `simplify` without sum factoring (folding, CSE, DCE, identities, broadcast sinking) never
/// changes a value: the simplified module gives bit-identical results to the unsimplified one on
/// random modules (with `detach`). Factoring reorders sums: `tests/simplify.rs` checks it.
#[test]
fn simplify_preserves_values() {
    use rlo_compiler::{autodiff, passes, schedule::schedule, valid};
    for seed in 0..80u64 {
        let mut rng = StdRng::seed_from_u64(5000 + seed);
        let steps = rng.random_range(4..20);
        let raw = autodiff::differentiate(random_module(
            &mut rng,
            ModuleSpec {
                steps,
                detach: true,
            },
        ));
        valid::validate(&raw).unwrap();
        let simp = passes::simplify_with(raw.clone(), passes::SimplifyOptions::EXACT);
        valid::validate(&simp).unwrap();
        assert!(simp.exprs.len() <= raw.exprs.len());
        let layout = random_layout(&mut rng, LayoutSpec::default());
        let batch = random_batch(&raw, &layout, &mut rng);
        let a = evaluate(&raw, &schedule(&raw), &batch, &[0.7]).unwrap();
        let b = evaluate(&simp, &schedule(&simp), &batch, &[0.7]).unwrap();
        let same = |x: f64, y: f64| x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan());
        assert!(
            same(a.loss, b.loss),
            "seed {seed}: {} vs {}",
            a.loss,
            b.loss
        );
        for (u, v) in a.grads.iter().flatten().zip(b.grads.iter().flatten()) {
            assert!(same(*u, *v), "seed {seed}: grad {u} vs {v}");
        }
        for (u, v) in a.outputs.iter().flatten().zip(b.outputs.iter().flatten()) {
            assert!(same(*u, *v), "seed {seed}: output {u} vs {v}");
        }
    }
}

/// Every objective of the stdlib: autodiff agrees with finite differences on random ragged
/// batches (kinks skipped as above), and the schedule runs.
#[test]
fn stdlib_objectives() {
    let mut compiled = 0;
    let mut total = Stats::default();
    for name in rlo_compiler::stdlib::module_names() {
        let Some(text) = rlo_compiler::stdlib::module_source(name) else {
            continue;
        };
        if !text.contains("objective ") {
            continue;
        }
        let path = format!("stdlib/{name}.rlo");
        let c = match rlo_compiler::compile(&path, text, &rlo_compiler::Options::default()) {
            Ok(c) => c,
            Err(f) => panic!("{path}: {}", f.render(false)),
        };
        compiled += 1;
        // With `detach` the gradient is by design not the derivative of the loss's value
        // (CISPO, GSPO-token, ...): those are covered by `detach_cuts_the_gradient` and the
        // stdlib reference tests, not by finite differences.
        let detached = c
            .forward
            .exprs
            .iter()
            .any(|(_, e)| matches!(e, rlo_compiler::ir::Expr::Detach { .. }));
        if detached {
            eprintln!("{name}: uses detach, not finite-differenced");
            continue;
        }
        let params: Vec<f64> = c.module.params.iter().map(|p| p.default).collect();
        let mut st = Stats::default();
        for seed in 0..6 {
            let mut rng = StdRng::seed_from_u64(seed);
            let layout = random_layout(&mut rng, LayoutSpec::default());
            let batch = random_batch(&c.module, &layout, &mut rng);
            check(&c.module, &c.schedule, &batch, &params, &mut st);
        }
        eprintln!(
            "{name}: {} token pass(es), {} coordinates, {} kinks, {} non-finite losses",
            c.schedule.token_passes(),
            st.checked,
            st.kinks,
            st.nonfinite
        );
        assert!(st.kinks * 5 <= st.checked, "{name}: {st:?}");
        assert!(st.failures.is_empty(), "{path}: {:#?}", st.failures);
        total.checked += st.checked;
        total.kinks += st.kinks;
        total.nonzero += st.nonzero;
        total.nonfinite += st.nonfinite;
    }
    eprintln!("stdlib gradcheck: {compiled} objectives, {total:?}");
    assert!(compiled > 0);
}
