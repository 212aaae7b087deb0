//! The front end's lowering of derived builtins, checked by running the lowered IR through the
//! IR pipeline (validator, autodiff, simplify, schedule) and the reference interpreter, against
//! values computed here by hand, including the degenerate cases of spec.md §6.6.

use rand::{rngs::StdRng, SeedableRng};
use rlo_compiler::back::interp;
use rlo_compiler::data::{Batch, Evaluation, Layout};
use rlo_compiler::{front, Options};
use rlo_grammar::SourceMap;
use rlo_tests::{compile_module, random_batch, random_layout, LayoutSpec};
use std::collections::BTreeMap;

fn lower(src: &str) -> rlo_compiler::Module {
    let mut sources = SourceMap::new();
    let id = sources.add("t.rlo", src);
    let ast = rlo_grammar::parse(src, id).expect("parses");
    match front::analyze(&ast, &mut sources, &Options::default()) {
        Ok(c) => c.module,
        Err(d) => panic!(
            "{}",
            rlo_grammar::diagnostic::render_all(&d, &sources, false)
        ),
    }
}

fn eval(
    src: &str,
    layout: &Layout,
    values: &[(&str, Vec<f64>)],
) -> (rlo_compiler::Module, Evaluation) {
    let m = lower(src);
    let (m, s) = compile_module(m).expect("valid IR");
    let values: BTreeMap<String, Vec<f64>> = values
        .iter()
        .map(|(n, v)| (n.to_string(), v.clone()))
        .collect();
    let b = Batch {
        layout: layout.clone(),
        values,
    };
    let params: Vec<f64> = m.params.iter().map(|p| p.default).collect();
    let e = interp::evaluate(&m, &s, &b, &params).expect("evaluates");
    (m, e)
}

fn output(m: &rlo_compiler::Module, e: &Evaluation, name: &str) -> Vec<f64> {
    let i = m
        .outputs
        .iter()
        .position(|o| o.name == name)
        .expect("output");
    e.outputs[i].clone()
}

fn close(a: &[f64], b: &[f64]) {
    assert_eq!(a.len(), b.len(), "{a:?} vs {b:?}");
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= 1e-9 * (1.0 + y.abs()), "{a:?} vs {b:?}");
    }
}

/// Groups: {0, 1, 2}, {3} (a group of one); sequence 4 is alone in group 2 and empty.
fn layout() -> Layout {
    Layout::single_turn(&[2, 3, 1, 2, 0], vec![0, 0, 0, 1, 2])
}

#[test]
fn group_statistics_and_degenerate_groups() {
    let src = "objective o() {
        input x: tok diff
        input r: seq
        loss batch_mean(x)
        output mean = group_mean(r)
        output std = group_std(r)
        output var_b = group_var(r, unbiased: false)
        output n = group_count(r)
        output lse = group_logsumexp(r)
        output q = group_quantile(r, 0.25)
        output mx = group_max(r, where: r < 0)
    }";
    let r = vec![1.0, 2.0, 6.0, 5.0, -1.0];
    let (m, e) = eval(src, &layout(), &[("x", vec![0.0; 8]), ("r", r)]);
    close(&output(&m, &e, "mean"), &[3.0, 5.0, -1.0]);
    // Unbiased std of {1, 2, 6}: var = (4 + 1 + 9) / 2 = 7; a group of one: 0.
    close(&output(&m, &e, "std"), &[7f64.sqrt(), 0.0, 0.0]);
    close(&output(&m, &e, "var_b"), &[14.0 / 3.0, 0.0, 0.0]);
    close(&output(&m, &e, "n"), &[3.0, 1.0, 1.0]);
    let lse0 = (1f64.exp() + 2f64.exp() + 6f64.exp()).ln();
    close(&output(&m, &e, "lse"), &[lse0, 5.0, -1.0]);
    // numpy: quantile([1, 2, 6], 0.25) = 1 + 0.5 * (2 - 1).
    close(&output(&m, &e, "q"), &[1.5, 5.0, -1.0]);
    // Empty filtered sets give 0.
    close(&output(&m, &e, "mx"), &[0.0, 0.0, -1.0]);
}

#[test]
fn empty_sequences_and_filters_never_make_nan() {
    let src = "objective o() {
        input x: tok diff
        input m: tok bool
        loss batch_mean(seq_mean(x, where: m))
        output mean = seq_mean(x, where: m)
        output std = seq_std(x)
        output lse = seq_logsumexp(x)
        output len = seq_len
    }";
    let x = vec![1.0, 3.0, 2.0, 4.0, 6.0, 5.0, 1.0, 1.0];
    let m = vec![1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0];
    let (md, e) = eval(src, &layout(), &[("x", x), ("m", m)]);
    close(&output(&md, &e, "mean"), &[2.0, 0.0, 5.0, 1.0, 0.0]);
    close(&output(&md, &e, "len"), &[2.0, 3.0, 1.0, 2.0, 0.0]);
    close(&output(&md, &e, "std"), &[2f64.sqrt(), 2.0, 0.0, 0.0, 0.0]);
    let lse = output(&md, &e, "lse");
    assert!((lse[0] - (1f64.exp() + 3f64.exp()).ln()).abs() < 1e-12);
    assert_eq!(lse[4], 0.0);
    assert!(e.loss.is_finite());
    // d loss / dx: batch_mean over 5 sequences of the masked means.
    close(&e.grads[0], &[0.1, 0.1, 0.0, 0.0, 0.0, 0.2, 0.2, 0.0]);
}

#[test]
fn clamp_passes_the_gradient_at_its_bounds() {
    let src = "objective o() {
        input x: tok diff
        loss batch_sum(clamp(x, 0.5, 1.5))
    }";
    let l = Layout::single_turn(&[5], vec![0]);
    let (_, e) = eval(src, &l, &[("x", vec![0.0, 0.5, 1.0, 1.5, 2.0])]);
    close(&[e.loss], &[0.5 + 0.5 + 1.0 + 1.5 + 1.5]);
    close(&e.grads[0], &[0.0, 1.0, 1.0, 1.0, 0.0]);
}

#[test]
fn elementwise_derived_builtins() {
    let src = "objective o() {
        input x: tok diff
        loss batch_sum(x)
        output s = sign(x)
        output sq = square(x)
        output ls = log_sigmoid(x)
        output w = where(x > 0, x, -x)
        output f = float(x > 0) + (x > 0)
    }";
    let xs = [-2.0, 0.0, 3.0];
    let l = Layout::single_turn(&[3], vec![0]);
    let (m, e) = eval(src, &l, &[("x", xs.to_vec())]);
    close(&output(&m, &e, "s"), &[-1.0, 0.0, 1.0]);
    close(&output(&m, &e, "sq"), &[4.0, 0.0, 9.0]);
    let ls: Vec<f64> = xs.iter().map(|x: &f64| -(1.0 + (-x).exp()).ln()).collect();
    close(&output(&m, &e, "ls"), &ls);
    close(&output(&m, &e, "w"), &[2.0, 0.0, 3.0]);
    close(&output(&m, &e, "f"), &[0.0, 0.0, 2.0]);
}

/// `floor`, `ceil`, `round` (ties to even, as `torch.round`); no gradient flows through them.
#[test]
fn rounding_builtins() {
    let src = "objective o() {
        input x: tok diff
        loss batch_sum(x * floor(x) + 2 * ceil(x) + round(x) * x)
        output f = floor(x)
        output c = ceil(x)
        output r = round(x)
    }";
    let xs = [-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, -3.75, 3.75, 2.0, 0.001];
    let l = Layout::single_turn(&[xs.len()], vec![0]);
    let (m, e) = eval(src, &l, &[("x", xs.to_vec())]);
    let f = [-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, -4.0, 3.0, 2.0, 0.0];
    let c = [-2.0, -1.0, -0.0, 1.0, 2.0, 3.0, -3.0, 4.0, 2.0, 1.0];
    let r = [-2.0, -2.0, -0.0, 0.0, 2.0, 2.0, -4.0, 4.0, 2.0, 0.0];
    close(&output(&m, &e, "f"), &f);
    close(&output(&m, &e, "c"), &c);
    close(&output(&m, &e, "r"), &r);
    // d/dx = floor(x) + round(x): the rounded factors are constants to the gradient
    let g: Vec<f64> = f.iter().zip(&r).map(|(a, b)| a + b).collect();
    close(&e.grads[0], &g);
}

/// `seq_next` / `seq_prev` on ragged sequences (lengths 3, 0, 1, 4), tokens and turns, and
/// their gradients (each shift's is the other shift of the adjoint).
#[test]
fn shift_builtins() {
    let src = "objective o() {
        input x: tok diff
        input w: tok
        input v: turn
        loss batch_sum(w * seq_next(x) + 3 * seq_prev(x) * x)
        output n = seq_next(x)
        output p = seq_prev(x)
        output tn = seq_next(v)
        output tp = seq_prev(v)
    }";
    let lens = [3usize, 0, 1, 4];
    let mut l = Layout::single_turn(&lens, vec![0, 0, 1, 1]);
    // sequence 3 has two turns (its tokens 0-1 and 2-3): 4 turns in all
    l.turn_offsets = vec![0, 1, 1, 2, 4];
    l.tok_turn = vec![0, 0, 0, 1, 2, 2, 3, 3];
    l.validate().expect("valid layout");
    let x: Vec<f64> = (0..8).map(|i| 1.0 + i as f64).collect();
    let w: Vec<f64> = (0..8).map(|i| 0.5 - 0.25 * i as f64).collect();
    let v = vec![10.0, 20.0, 30.0, 40.0];
    let (m, e) = eval(
        src,
        &l,
        &[("x", x.clone()), ("w", w.clone()), ("v", v.clone())],
    );
    // by hand, from the definitions (spec §6.4), one sequence at a time
    let (mut n, mut p, mut g) = (vec![0.0; 8], vec![0.0; 8], vec![0.0; 8]);
    let offs = [0usize, 3, 3, 4, 8];
    for s in 0..4 {
        let (a, b) = (offs[s], offs[s + 1]);
        for t in a..b {
            n[t] = if t + 1 < b { x[t + 1] } else { 0.0 };
            p[t] = if t > a { x[t - 1] } else { 0.0 };
        }
        // d/dx[u] of Σ_t w[t]·x[t+1] + 3·x[t−1]·x[t]
        for u in a..b {
            let from_next = if u > a { w[u - 1] } else { 0.0 };
            let from_prev = 3.0 * (if u > a { x[u - 1] } else { 0.0 })
                + 3.0 * (if u + 1 < b { x[u + 1] } else { 0.0 });
            g[u] = from_next + from_prev;
        }
    }
    close(&output(&m, &e, "n"), &n);
    close(&output(&m, &e, "p"), &p);
    close(&e.grads[0], &g);
    // turns: sequence 0 has turn 0, sequence 2 turn 1, sequence 3 turns 2 and 3
    close(&output(&m, &e, "tn"), &[0.0, 0.0, 40.0, 0.0]);
    close(&output(&m, &e, "tp"), &[0.0, 0.0, 0.0, 30.0]);
}

#[test]
fn valid_programs_run_on_random_batches_without_nan_losses() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("ui/pass");
    let mut rng = StdRng::seed_from_u64(7);
    let mut n = 0;
    for name in ["grpo", "reductions", "structural", "elementwise"] {
        let src = std::fs::read_to_string(dir.join(format!("{name}.rlo"))).expect("file");
        let m = lower(&src);
        let (m, s) = compile_module(m).unwrap_or_else(|e| panic!("{name}: {e}"));
        for _ in 0..5 {
            let layout = random_layout(&mut rng, LayoutSpec::default());
            let b = random_batch(&m, &layout, &mut rng);
            let params: Vec<f64> = m.params.iter().map(|p| p.default).collect();
            let e = interp::evaluate(&m, &s, &b, &params).expect("evaluates");
            assert!(!e.loss.is_nan(), "{name}: NaN loss");
            assert!(e.metrics.iter().all(|v| !v.is_nan()), "{name}: NaN metric");
            assert!(
                e.grads.iter().flatten().all(|v| !v.is_nan()),
                "{name}: NaN grad"
            );
            n += 1;
        }
    }
    assert_eq!(n, 20);
}

#[test]
fn empty_logsumexp_and_std_have_finite_gradients() {
    let src = "objective o() {
        input x: tok diff
        input m: tok bool
        loss batch_mean(seq_logsumexp(x, where: m) + seq_std(x, where: m) + group_std(seq_mean(x)))
    }";
    // Sequence 1 has tokens but all filtered out; sequence 4 is empty; group 1 has one sequence.
    let x = vec![1.0, 3.0, 2.0, 4.0, 6.0, 5.0, 1.0, 1.0];
    let m = vec![1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0];
    let (_, e) = eval(src, &layout(), &[("x", x), ("m", m)]);
    assert!(e.loss.is_finite(), "loss {}", e.loss);
    let g = &e.grads[0];
    assert!(g.iter().all(|v| v.is_finite()), "{g:?}");
    // Filtered-out tokens get no gradient from the filtered reductions; only group_std of the
    // sequence means reaches them (sequence 1 is in group 0 with 3 sequences).
    assert!(g[5].abs() > 0.0);
}

/// Finite differences through every derived reduction (smooth at random points).
#[test]
fn derived_reductions_match_finite_differences() {
    let src = "objective o() {
        input x: tok diff
        input m: tok bool
        let s = seq_std(x) + seq_var(x, unbiased: false) + seq_logsumexp(x, where: m)
        let g = group_std(seq_mean(x)) + batch_logsumexp(x) + group_quantile(seq_sum(x), 0.3)
        loss batch_mean(s * g + seq_mean(x, where: m) + group_pos_mean(x) * x)
    }";
    let m_src = lower(src);
    let (module, sched) = compile_module(m_src).expect("valid IR");
    let mut rng = StdRng::seed_from_u64(3);
    let mut checked = 0;
    for _ in 0..4 {
        let layout = random_layout(&mut rng, LayoutSpec::default());
        let b = random_batch(&module, &layout, &mut rng);
        let e = interp::evaluate(&module, &sched, &b, &[]).expect("evaluates");
        let x = b.values.get("x").cloned().unwrap_or_default();
        for i in 0..x.len() {
            let h = 1e-6;
            let mut bp = b.clone();
            let mut bm = b.clone();
            bp.values.get_mut("x").expect("x")[i] += h;
            bm.values.get_mut("x").expect("x")[i] -= h;
            let lp = interp::evaluate(&module, &sched, &bp, &[])
                .expect("+h")
                .loss;
            let lm = interp::evaluate(&module, &sched, &bm, &[])
                .expect("-h")
                .loss;
            let fd = (lp - lm) / (2.0 * h);
            let an = e.grads[0][i];
            assert!(
                (fd - an).abs() <= 1e-4 * (1.0 + fd.abs()),
                "token {i}: finite difference {fd} vs autodiff {an}"
            );
            checked += usize::from(an != 0.0);
        }
    }
    assert!(checked > 10, "only {checked} non-zero gradients checked");
}

/// An untaken branch never leaks NaN into the gradient: `log(logp + 1)` at `logp = -1` has an
/// infinite derivative (0/0 in the VJP), `exp(50 * logp)` would overflow, `1 / logp` divides by
/// zero at 0; all sit in branches not taken there, so they contribute exactly 0 (PyTorch: NaN).
#[test]
fn untaken_branches_give_zero_gradient_not_nan() {
    let src = "objective t() {
        input logp: tok diff
        let a = if logp > -1 then log(logp + 1) else 0
        let b = if logp < 1 then logp else exp(50 * logp)
        let c = if logp != 0 then 1 / logp else 0
        loss batch_sum(a + b + c)
    }";
    let layout = Layout::single_turn(&[4], vec![0]);
    let logp = vec![-1.0, 0.0, 0.5, -30.0];
    let (m, e) = eval(src, &layout, &[("logp", logp.clone())]);
    assert_eq!(m.grads.len(), 1);
    let g = &e.grads[0];
    assert!(g.iter().all(|x| x.is_finite()), "gradient {g:?}");
    // token 0 (logp = -1): a untaken, b = logp taken (1), c = 1/logp taken (-1/logp² = -1)
    assert_eq!(g[0], 1.0 - 1.0);
    // token 1 (logp = 0): a = log(1) (1), b (1), c untaken
    assert_eq!(g[1], 2.0);
    // token 2 (logp = 0.5): 1/1.5 + 1 - 1/0.25
    assert!((g[2] - (1.0 / 1.5 + 1.0 - 4.0)).abs() < 1e-12);
    // token 3 (logp = -30): a untaken (log of a negative number), b = logp, c = 1/logp
    assert!((g[3] - (1.0 - 1.0 / 900.0)).abs() < 1e-12);
    assert!(e.loss.is_finite());
}
