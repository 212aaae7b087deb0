//! CPU backend (Cranelift JIT) against the reference interpreter, on every stdlib objective and on
//! random well-typed programs (`rlo_tests::random_module`), in f64 and f32 mode; and the same bits
//! for 1 and several threads.
//!
//! Tolerances: f64 mode `|a − b| ≤ 1e-12·max(|a|, |b|) + 1e-12·scale`; f32 mode
//! `|a − b| ≤ 1e-5·max(|a|, |b|) + 1e-5·scale`, where `scale` is the largest magnitude of the
//! result vector it belongs to (at least 1). The absolute floor is needed in f32: a value
//! obtained by cancellation (a centered reward, a gradient that sums terms of both signs) has a
//! rounding error relative to the terms it came from, not to itself. NaN matches NaN, and
//! infinities must be equal. In f32 mode a metric or output that depends on a comparison
//! (`clip_frac` = mean of `a > b`) is discontinuous: where `a == b` in exact arithmetic (an
//! advantage that is exactly 0 for a group of one) f32 rounding may decide either way, so such a
//! value is only required to agree in f64 mode (where it is checked at 1e-12 like everything else).

use rand::rngs::StdRng;
use rand::SeedableRng;
use rlo_compiler::back::clif::{self, ClifOptions};
use rlo_compiler::back::interp;
use rlo_compiler::{
    compile, Batch, Compiled, DType, Evaluation, Layout, Level, Module, Options, Schedule,
};
use rlo_runtime::cpu::CpuKernel;
use std::collections::BTreeMap;

/// Every stdlib objective (`rlo_tests::stdlib_objective_names`) with its source.
fn objectives() -> Vec<(String, String)> {
    rlo_tests::stdlib_objective_names()
        .into_iter()
        .map(|name| {
            let text = rlo_tests::stdlib_source(&name).unwrap_or_else(|e| panic!("{e}"));
            (name, text)
        })
        .collect()
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn int(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn random_batch(c: &Compiled, seed: u64) -> Batch {
    let mut r = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let n_groups = 1 + r.int(4);
    let mut seq_group = Vec::new();
    let mut lengths = Vec::new();
    for g in 0..n_groups {
        for _ in 0..1 + r.int(4) {
            seq_group.push(g as u32);
            lengths.push(if r.int(6) == 0 { 0 } else { 1 + r.int(9) });
        }
    }
    let mut layout = Layout::single_turn(&lengths, seq_group);
    // Random turns: split each sequence's tokens into 1..3 turns.
    let mut turn_offsets = vec![0];
    let mut tok_turn = Vec::new();
    for &l in &lengths {
        let k = if l == 0 { 1 } else { 1 + r.int(3.min(l)) };
        let base = *turn_offsets.last().unwrap_or(&0);
        for t in 0..l {
            tok_turn.push((base + (t * k / l.max(1))) as u32);
        }
        turn_offsets.push(base + k);
    }
    layout.turn_offsets = turn_offsets;
    layout.tok_turn = tok_turn;
    layout.validate().expect("valid layout");
    let mut values = BTreeMap::new();
    for inp in &c.module.inputs {
        let n = layout.count(inp.ty.level);
        let v = (0..n)
            .map(|_| match inp.ty.dtype {
                DType::Bool => f64::from(r.int(2) == 1),
                DType::F32 if inp.ty.level <= Level::Turn && !inp.name.contains("entropy") => {
                    -0.05 - 2.0 * r.unit()
                }
                DType::F32 => 0.1 + r.unit(),
            })
            .collect();
        values.insert(inp.name.clone(), v);
    }
    Batch { layout, values }
}

/// Compares two evaluations; returns a description of the first disagreement.
fn compare(cpu: &Evaluation, reference: &Evaluation, tol: f64) -> Result<(), String> {
    let close = |a: f64, b: f64, scale: f64| {
        if a.is_nan() || b.is_nan() {
            return a.is_nan() && b.is_nan();
        }
        if a.is_infinite() || b.is_infinite() {
            return a == b;
        }
        (a - b).abs() <= tol * a.abs().max(b.abs()) + tol * scale
    };
    let scale = |v: &[f64]| {
        v.iter()
            .filter(|x| x.is_finite())
            .fold(1f64, |m, x| m.max(x.abs()))
    };
    let vec = |what: &str, a: &[f64], b: &[f64]| -> Result<(), String> {
        if a.len() != b.len() {
            return Err(format!("{what}: {} values vs {}", a.len(), b.len()));
        }
        let s = scale(b);
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            if !close(*x, *y, s) {
                return Err(format!("{what}[{i}]: cpu {x:e}, interpreter {y:e}"));
            }
        }
        Ok(())
    };
    vec("loss", &[cpu.loss], &[reference.loss])?;
    vec("metrics", &cpu.metrics, &reference.metrics)?;
    for (i, (a, b)) in cpu.grads.iter().zip(&reference.grads).enumerate() {
        vec(&format!("grad {i}"), a, b)?;
    }
    for (i, (a, b)) in cpu.outputs.iter().zip(&reference.outputs).enumerate() {
        vec(&format!("output {i}"), a, b)?;
    }
    if cpu.grads.len() != reference.grads.len() || cpu.outputs.len() != reference.outputs.len() {
        return Err("result counts differ".into());
    }
    Ok(())
}

/// Whether `h` depends on a comparison (a discontinuous function of its inputs).
fn has_comparison(m: &Module, h: rlo_compiler::Handle<rlo_compiler::ir::Expr>) -> bool {
    use rlo_compiler::ir::{BinaryOp, Expr};
    let mut stack = vec![h];
    let mut seen = std::collections::HashSet::new();
    while let Some(x) = stack.pop() {
        if !seen.insert(x) {
            continue;
        }
        let Some(e) = m.exprs.get(x) else { continue };
        if let Expr::Binary { op, .. } = e {
            if matches!(
                op,
                BinaryOp::Lt
                    | BinaryOp::Le
                    | BinaryOp::Gt
                    | BinaryOp::Ge
                    | BinaryOp::Eq
                    | BinaryOp::Ne
            ) {
                return true;
            }
        }
        stack.extend(e.operands());
    }
    false
}

/// Runs `m` on `batch` in both modes against the interpreter; checks thread-count invariance.
fn check(m: &Module, s: &Schedule, batch: &Batch, params: &[f64]) -> Result<(), String> {
    let reference =
        interp::evaluate(m, s, batch, params).map_err(|e| format!("interpreter: {e}"))?;
    for (f64, tol) in [(true, 1e-12), (false, 1e-5)] {
        let k =
            CpuKernel::compile(m, s, ClifOptions { f64 }).map_err(|e| format!("compile: {e}"))?;
        let mut one = k
            .evaluate(m, batch, params, 1)
            .map_err(|e| format!("cpu: {e}"))?;
        let three = k
            .evaluate(m, batch, params, 3)
            .map_err(|e| format!("cpu: {e}"))?;
        if format!("{one:?}") != format!("{three:?}") {
            return Err(format!("f64={f64}: 1 and 3 threads give different bits"));
        }
        if !f64 {
            // Discontinuous metrics/outputs: checked in f64 mode only (see the module docs).
            for (i, x) in m.metrics.iter().enumerate() {
                if has_comparison(m, x.value) {
                    if let (Some(a), Some(b)) = (one.metrics.get_mut(i), reference.metrics.get(i)) {
                        *a = *b;
                    }
                }
            }
            for (i, x) in m.outputs.iter().enumerate() {
                if has_comparison(m, x.value) {
                    if let (Some(a), Some(b)) = (one.outputs.get_mut(i), reference.outputs.get(i)) {
                        a.clone_from(b);
                    }
                }
            }
        }
        compare(&one, &reference, tol).map_err(|e| format!("f64={f64}: {e}"))?;
    }
    Ok(())
}

#[test]
fn stdlib_objectives_agree_with_interpreter() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for (name, text) in objectives() {
        let c = compile(&format!("stdlib/{name}.rlo"), &text, &Options::default())
            .unwrap_or_else(|f| panic!("{name}: {}", f.render(false)));
        let params: Vec<f64> = c.module.params.iter().map(|p| p.default).collect();
        for seed in 0..4 {
            let b = random_batch(&c, seed);
            if let Err(e) = check(&c.module, &c.schedule, &b, &params) {
                failures.push(format!("{name} seed {seed}: {e}"));
            }
        }
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} stdlib objectives found");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn random_programs_agree_with_interpreter() {
    let n: u64 = std::env::var("RLO_PARITY_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let mut failures = Vec::new();
    let mut simd = 0;
    for seed in 0..n {
        let mut rng = StdRng::seed_from_u64(seed);
        let steps = 4 + (seed % 12) as usize;
        let m = rlo_tests::random_module(
            &mut rng,
            rlo_tests::ModuleSpec {
                steps,
                detach: true,
            },
        );
        let (m, s) = match rlo_tests::compile_module(m) {
            Ok(x) => x,
            Err(e) => panic!("seed {seed}: random module does not compile: {e}"),
        };
        // Odd seeds: sequences up to 11 tokens (two SIMD iterations of 4 and a scalar tail).
        let spec = rlo_tests::LayoutSpec {
            max_len: if seed % 2 == 1 { 11 } else { 5 },
            ..Default::default()
        };
        let layout = rlo_tests::random_layout(&mut rng, spec);
        let b = rlo_tests::random_batch(&m, &layout, &mut rng);
        let params: Vec<f64> = m.params.iter().map(|p| p.default).collect();
        if let Ok(p) = clif::emit(&m, &s, &ClifOptions::default()) {
            if clif::program_text(&m, &p).contains("f32x4") {
                simd += 1;
            }
        }
        if let Err(e) = check(&m, &s, &b, &params) {
            failures.push(format!("seed {seed}: {e}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {n} programs disagree:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // The SIMD token sweeps must actually be exercised (most random programs have one).
    eprintln!("{simd} of {n} random programs have a SIMD token sweep");
    assert!(
        simd * 3 >= n,
        "only {simd} of {n} random programs use SIMD sweeps"
    );
}

/// The inline f32 `exp` of the CPU backend (SIMD lanes and scalar tail) against the correctly
/// rounded value (`f64::exp` rounded to f32), over the whole range where the result is neither
/// 0 nor inf, plus special values; and the same bits in a SIMD lane and in the scalar tail.
#[test]
fn inline_exp_accuracy() {
    let text = "
objective e() {
    input x: tok diff
    loss batch_sum(x)
    output y = exp(x)
}
";
    let c = compile("exp.rlo", text, &Options::default())
        .unwrap_or_else(|f| panic!("{}", f.render(false)));
    let k = CpuKernel::compile(&c.module, &c.schedule, ClifOptions::default()).expect("compiles");
    let mut r = Rng(12345);
    let mut xs: Vec<f32> = vec![
        0.0,
        -0.0,
        1.0,
        -1.0,
        1e-30,
        -1e-30,
        88.72283,
        88.72284,
        88.7,
        89.0,
        100.0,
        -87.33654,
        -87.3366,
        -103.0,
        -103.97,
        -103.98,
        -104.0,
        -150.0,
        0.5,
        -0.5,
        0.346_573_6,
        -0.346_573_6,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        f32::MAX,
        f32::MIN,
        f32::MIN_POSITIVE,
    ];
    let n = if std::env::var("RLO_EXP_FULL").is_ok() {
        50_000_000
    } else {
        2_000_000
    };
    // Uniform in [-104, 89] and, for small arguments, uniform in log scale.
    for i in 0..n {
        let u = r.unit();
        xs.push(if i % 4 == 3 {
            let m = 10f64.powf(-10.0 * u) * if r.int(2) == 0 { 1.0 } else { -1.0 };
            m as f32
        } else {
            (-104.0 + 193.0 * u) as f32
        });
    }
    // One sequence of 4k + 3 tokens: the first 4k in SIMD lanes, the last 3 in the scalar tail.
    let len = xs.len();
    let layout = Layout::single_turn(&[len], vec![0]);
    let mut values = BTreeMap::new();
    values.insert("x".to_string(), xs.iter().map(|&v| f64::from(v)).collect());
    let b = Batch { layout, values };
    let ev = k.evaluate(&c.module, &b, &[], 1).expect("evaluates");
    let y = &ev.outputs[0];
    let ulps = |a: f32, b: f32| -> u64 {
        if a.is_nan() || b.is_nan() {
            return if a.is_nan() && b.is_nan() {
                0
            } else {
                u64::MAX
            };
        }
        (i64::from(a.to_bits() as i32) - i64::from(b.to_bits() as i32)).unsigned_abs()
    };
    let mut worst = (0u64, 0f32);
    let mut off = 0usize;
    for (&x, &yv) in xs.iter().zip(y) {
        let want = (f64::from(x)).exp() as f32;
        let d = ulps(yv as f32, want);
        if d > worst.0 {
            worst = (d, x);
        }
        off += usize::from(d > 0);
    }
    eprintln!(
        "inline exp: {len} arguments, max error {} ulp (at x = {:e}), {off} not correctly rounded",
        worst.0, worst.1
    );
    assert!(
        worst.0 <= 2,
        "inline exp error {} ulp at x = {:e}",
        worst.0,
        worst.1
    );
    // Specials exactly.
    assert_eq!(y[0], 1.0);
    assert_eq!(y[1], 1.0);
    assert_eq!(y[22], f64::INFINITY);
    assert_eq!(y[23], 0.0);
    assert!(y[24].is_nan());
    // The same bits in SIMD lanes (tokens 0..4) and in the scalar tail (the last 3 tokens).
    let probe = [0.3f32, -7.25, 42.5];
    let mut values = BTreeMap::new();
    let seq: Vec<f64> = [0.3f32, -7.25, 42.5, 1.0, 0.3, -7.25, 42.5]
        .iter()
        .map(|&v| f64::from(v))
        .collect();
    values.insert("x".to_string(), seq);
    let b = Batch {
        layout: Layout::single_turn(&[7], vec![0]),
        values,
    };
    let ev = k.evaluate(&c.module, &b, &[], 1).expect("evaluates");
    for i in 0..probe.len() {
        assert_eq!(ev.outputs[0][i].to_bits(), ev.outputs[0][4 + i].to_bits());
    }
}

#[test]
fn degenerate_batches() {
    // Empty batch of sequences, all-empty sequences, one group of one.
    let text = std::fs::read_to_string(rlo_tests::stdlib_dir().join("grpo.rlo")).expect("grpo");
    let c = compile("stdlib/grpo.rlo", &text, &Options::default()).expect("grpo compiles");
    let params: Vec<f64> = c.module.params.iter().map(|p| p.default).collect();
    for (lengths, groups) in [
        (vec![0, 0, 0], vec![0, 0, 1]),
        (vec![4], vec![0]),
        (vec![], vec![]),
    ] {
        let layout = Layout::single_turn(&lengths, groups);
        let mut values = BTreeMap::new();
        for inp in &c.module.inputs {
            let n = layout.count(inp.ty.level);
            values.insert(inp.name.clone(), (0..n).map(|i| -0.1 * i as f64).collect());
        }
        let b = Batch { layout, values };
        check(&c.module, &c.schedule, &b, &params).unwrap_or_else(|e| panic!("{lengths:?}: {e}"));
    }
}

/// `floor`/`ceil`/`round` (Cranelift `floor`/`ceil`/`nearest`, scalar and f32x4) on ties,
/// signed zeros and large values: the same as the interpreter, in f32 and f64 mode.
#[test]
fn rounding_builtins() {
    let text = "objective o() {
        input x: tok diff
        loss batch_sum(x * floor(x) + 2 * ceil(x) + round(x) * x)
        output f = floor(x)
        output c = ceil(x)
        output r = round(x)
    }";
    let c = compile("rounding.rlo", text, &Options::default()).expect("compiles");
    let xs = [
        -2.5, -1.5, -0.5, -0.0, 0.0, 0.5, 1.5, 2.5, 3.5, -3.75, 3.75, 1.0, -1.0, 123456.5,
        -123456.5, 0.25, 0.001, -0.001, 8388607.5,
    ];
    // 13 tokens (three f32x4 steps and a tail) and 6 (one step and a tail of 2)
    let layout = Layout::single_turn(&[13, 6], vec![0, 0]);
    let values = BTreeMap::from([("x".to_string(), xs.to_vec())]);
    let b = Batch { layout, values };
    check(&c.module, &c.schedule, &b, &[]).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn bad_batches_are_errors_not_panics() {
    let text = std::fs::read_to_string(rlo_tests::stdlib_dir().join("grpo.rlo")).expect("grpo");
    let c = compile("stdlib/grpo.rlo", &text, &Options::default()).expect("grpo compiles");
    let params: Vec<f64> = c.module.params.iter().map(|p| p.default).collect();
    let k = CpuKernel::compile(&c.module, &c.schedule, ClifOptions::default()).expect("compiles");
    let good = random_batch(&c, 1);
    let mut missing = good.clone();
    missing.values.remove("logp");
    assert!(k.evaluate(&c.module, &missing, &params, 1).is_err());
    let mut short = good.clone();
    if let Some(v) = short.values.get_mut("reward") {
        v.pop();
    }
    assert!(k.evaluate(&c.module, &short, &params, 1).is_err());
    let mut bad_layout = good.clone();
    bad_layout.layout.seq_group[0] = 99;
    assert!(k.evaluate(&c.module, &bad_layout, &params, 1).is_err());
    assert!(k.evaluate(&c.module, &good, &params[1..], 1).is_err());
    assert!(k.evaluate(&c.module, &good, &params, 1).is_ok());
}

#[test]
fn serial_reductions_and_counts() {
    // Token/turn → sequence reductions (filtered max/min with empty sets, sums) and element
    // counts that a token pass reads: the backend computes these in a serial stage with
    // register accumulators and layout counts; they must agree with the interpreter, empty
    // sequences and sequences whose filter keeps nothing included.
    let text = "
objective serial_reductions(c: f32 = 0.5) {
    input x: tok diff
    input y: tok
    let hi = seq_max(y, where: y > -1)
    let lo = seq_min(y, where: y < -1)
    let tu = seq_sum(turn_max(y)) + seq_max(turn_sum(y))
    let n = seq_count(y) + float(num_tokens > 3)
    let w = seq_mean(y) * c + hi - lo + tu / (n + 1)
    loss batch_mean(seq_sum(x * w) / (seq_len + 1)) + batch_sum(x) / max(num_tokens, 1)
}
";
    let c = compile("serial.rlo", text, &Options::default())
        .unwrap_or_else(|f| panic!("{}", f.render(false)));
    let params: Vec<f64> = c.module.params.iter().map(|p| p.default).collect();
    for seed in 0..8 {
        let b = random_batch(&c, seed);
        check(&c.module, &c.schedule, &b, &params).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    }
}

/// Measured accuracy of every transcendental function of the CPU backend in f32 mode (inline
/// `exp`, Rust helpers for the others) against the f64 function rounded to f32, on arguments
/// spread over each function's useful range. Prints the table that `spec.md` §6.8 and
/// `compiler/src/back/clif.rs` quote; fails if a bound there no longer holds.
#[test]
fn math_accuracy_table() {
    let text = "
objective m() {
    input x: tok diff
    input p: tok
    loss batch_sum(x)
    output exp = exp(x)
    output log = log(p)
    output log1p = log1p(p - 0.999)
    output expm1 = expm1(x)
    output tanh = tanh(x)
    output sigmoid = sigmoid(x)
    output softplus = softplus(x)
    output sqrt = sqrt(p)
    output pow = pow(p, x / 8)
}
";
    let c = compile("math.rlo", text, &Options::default())
        .unwrap_or_else(|f| panic!("{}", f.render(false)));
    let k = CpuKernel::compile(&c.module, &c.schedule, ClifOptions::default()).expect("compiles");
    let mut r = Rng(777);
    let n = 400_003;
    // x: uniform in [-80, 80] with a quarter of log-uniform small magnitudes; p: log-uniform
    // in [1e-30, 1e30].
    let xs: Vec<f32> = (0..n)
        .map(|i| {
            let u = r.unit();
            if i % 4 == 3 {
                (10f64.powf(-8.0 * u) * if r.int(2) == 0 { 1.0 } else { -1.0 }) as f32
            } else {
                (-80.0 + 160.0 * u) as f32
            }
        })
        .collect();
    let ps: Vec<f32> = (0..n)
        .map(|_| 10f64.powf(-30.0 + 60.0 * r.unit()) as f32)
        .collect();
    let mut values = BTreeMap::new();
    values.insert("x".to_string(), xs.iter().map(|&v| f64::from(v)).collect());
    values.insert("p".to_string(), ps.iter().map(|&v| f64::from(v)).collect());
    let b = Batch {
        layout: Layout::single_turn(&[n], vec![0]),
        values,
    };
    let ev = k.evaluate(&c.module, &b, &[], 1).expect("evaluates");
    let ulps = |a: f32, b: f32| -> u64 {
        if a.is_nan() || b.is_nan() {
            return if a.is_nan() && b.is_nan() {
                0
            } else {
                u64::MAX
            };
        }
        if a == b {
            return 0;
        }
        (i64::from(a.to_bits() as i32) - i64::from(b.to_bits() as i32)).unsigned_abs()
    };
    let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
    let softplus = |x: f64| x.max(0.0) + (-x.abs()).exp().ln_1p();
    // (name, reference, bound in ulp)
    type Ref = Box<dyn Fn(f32, f32) -> f64>;
    let cases: Vec<(&str, Ref, u64)> = vec![
        ("exp", Box::new(|x, _| f64::from(x).exp()), 1),
        ("log", Box::new(|_, p| f64::from(p).ln()), 1),
        ("log1p", Box::new(|_, p| f64::from(p - 0.999).ln_1p()), 1),
        ("expm1", Box::new(|x, _| f64::from(x).exp_m1()), 1),
        ("tanh", Box::new(|x, _| f64::from(x).tanh()), 2),
        ("sigmoid", Box::new(move |x, _| sig(f64::from(x))), 2),
        ("softplus", Box::new(move |x, _| softplus(f64::from(x))), 1),
        ("sqrt", Box::new(|_, p| f64::from(p).sqrt()), 0),
        (
            "pow",
            Box::new(|x, p| f64::from(p).powf(f64::from(x / 8.0))),
            1,
        ),
    ];
    let mut report = Vec::new();
    for (i, (name, f, bound)) in cases.iter().enumerate() {
        let out = &ev.outputs[i];
        let mut worst = (0u64, 0f32, 0f32);
        for ((&x, &p), &y) in xs.iter().zip(&ps).zip(out) {
            let want = f(x, p) as f32;
            let d = ulps(y as f32, want);
            if d > worst.0 {
                worst = (d, x, p);
            }
        }
        eprintln!(
            "{name:>8}: max {} ulp (x = {:e}, p = {:e})",
            worst.0, worst.1, worst.2
        );
        if worst.0 > *bound {
            report.push(format!("{name}: {} ulp > {bound}", worst.0));
        }
    }
    assert!(report.is_empty(), "{}", report.join("; "));
}
