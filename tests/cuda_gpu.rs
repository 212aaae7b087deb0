//! CUDA backend tests that need a GPU (they skip with a message where there is none): every
//! stdlib objective and `RLO_GPU_CASES` random programs (default 240) agree with the
//! interpreter, and repeated runs give the same bits. On the GPU machine (no cargo there) they
//! run from the binary `bench/gpu.sh --build` makes: `bench/gpu.sh` runs it first.

#[path = "cuda_support.rs"]
#[allow(dead_code)] // each test crate uses part of it
mod support;
use support::kitchen_sink;

/// `Some(())` when a CUDA device can be opened; otherwise prints why the GPU test is skipped.
fn gpu_or_skip(test: &str) -> bool {
    match rlo_runtime::cuda::CudaDevice::global() {
        Ok(_) => true,
        Err(e) => {
            eprintln!("SKIP {test} (needs a GPU): {e}");
            false
        }
    }
}

/// `a` and `b` within 1e-5 relative, plus 1e-5 of the vector's largest magnitude (values
/// obtained by cancellation, spec §6.8); NaN equals NaN.
fn vec_close(want: &[f64], got: &[f64]) -> Option<String> {
    if want.len() != got.len() {
        return Some(format!("{} values, want {}", got.len(), want.len()));
    }
    let scale = want
        .iter()
        .fold(0f64, |m, x| if x.is_finite() { m.max(x.abs()) } else { m });
    want.iter()
        .zip(got)
        .enumerate()
        .find(|(_, (a, b))| {
            !(a.to_bits() == b.to_bits()
                || (a.is_nan() && b.is_nan())
                || (**a - **b).abs() <= 1e-5 * a.abs().max(b.abs()) + 1e-5 * scale + 1e-6)
        })
        .map(|(i, (a, b))| format!("[{i}] want {a} got {b}"))
}

/// The first difference between two evaluations (loss, metrics, gradients, outputs).
fn differs(want: &rlo_compiler::Evaluation, got: &rlo_compiler::Evaluation) -> Option<String> {
    let mut parts: Vec<(String, &[f64], &[f64])> = vec![
        (
            "loss".into(),
            std::slice::from_ref(&want.loss),
            std::slice::from_ref(&got.loss),
        ),
        ("metrics".into(), &want.metrics, &got.metrics),
    ];
    for (k, (w, g)) in want.grads.iter().zip(&got.grads).enumerate() {
        parts.push((format!("grad {k}"), w, g));
    }
    for (k, (w, g)) in want.outputs.iter().zip(&got.outputs).enumerate() {
        parts.push((format!("output {k}"), w, g));
    }
    parts
        .into_iter()
        .find_map(|(what, w, g)| vec_close(w, g).map(|d| format!("{what}: {d}")))
}

/// Positive values for seq-level and entropy-like inputs (as the emulator's and CPU parity
/// batches have: rewards in (0.1, 1.1), no log of a negative entropy).
fn positive_where_needed(m: &rlo_compiler::ir::Module, b: &mut rlo_compiler::Batch, seed: u64) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x5eed);
    for inp in &m.inputs {
        let positive = inp.ty.dtype == rlo_compiler::DType::F32
            && (inp.ty.level > rlo_compiler::Level::Turn || inp.name.contains("entropy"));
        if let (true, Some(v)) = (positive, b.values.get_mut(&inp.name)) {
            for x in v.iter_mut() {
                *x = f64::from((0.1 + rng.random_range(0.0..1.0)) as f32);
            }
        }
    }
}

/// GPU: every stdlib objective agrees with the interpreter (f64) within 1e-5 relative (+1e-5 of
/// the vector's scale) on ragged batches (empty sequences, groups of one, sequences of 1–783
/// tokens: not a multiple of any block size), or — where f32 rounding decides (whitening of
/// nearly equal values, a tie) — with the f32 CPU backend, as the emulator's check does; and two
/// runs give the same bits.
#[test]
fn gpu_parity_with_interpreter_and_bitwise_repeatable() {
    if !gpu_or_skip("gpu_parity") {
        return;
    }
    use rlo_runtime::{Backend, Objective};
    // every stdlib objective (#6); a missing stdlib (a binary run elsewhere) is a failure
    let names = rlo_tests::stdlib_objective_names();
    assert!(
        names.len() >= 32,
        "stdlib not found at {} (set RLO_STDLIB_DIR)",
        rlo_tests::stdlib_dir().display()
    );
    let (mut runs, mut f32_only, mut failures) = (0usize, Vec::new(), Vec::new());
    for name in &names {
        let text = rlo_tests::stdlib_source(name).unwrap_or_else(|e| panic!("{e}"));
        let obj = match Objective::compile(&format!("{name}.rlo"), &text, &Default::default()) {
            Ok(o) => o,
            Err(f) => panic!("{name}: {}", f.render(false)),
        };
        let params = obj
            .param_values(&[])
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        for (seed, groups, max_len) in [(1, 3, 5), (2, 7, 50), (3, 17, 783)] {
            let mut batch = support::random_batch(&obj.compiled.module, seed, groups, max_len);
            positive_where_needed(&obj.compiled.module, &mut batch, seed);
            let want = obj
                .evaluate(&batch, &params, Backend::Interp)
                .unwrap_or_else(|e| panic!("{name} interp: {e}"));
            let got = obj
                .evaluate(&batch, &params, Backend::Cuda)
                .unwrap_or_else(|e| panic!("{name} cuda: {e}"));
            runs += 1;
            if let Some(d) = differs(&want, &got) {
                let cpu = obj
                    .evaluate(&batch, &params, Backend::Cpu)
                    .unwrap_or_else(|e| panic!("{name} cpu: {e}"));
                match differs(&cpu, &got) {
                    None => f32_only.push(format!("{name} seed {seed}: {d}")),
                    Some(dc) => failures.push(format!("{name} seed {seed}: {d} (f32 cpu: {dc})")),
                }
            }
            let again = obj
                .evaluate(&batch, &params, Backend::Cuda)
                .unwrap_or_else(|e| panic!("{name} cuda: {e}"));
            assert_eq!(
                bits(&got),
                bits(&again),
                "{name} seed {seed}: not repeatable"
            );
        }
    }
    eprintln!(
        "gpu parity: {} objectives, {runs} runs, {} agree with the f32 cpu backend only:\n  {}",
        names.len(),
        f32_only.len(),
        f32_only.join("\n  ")
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// GPU: the kitchen-sink module (scans, ranks, quantiles, per-position reductions, max/min with
/// empty sets) runs on awkward sizes and repeats bit for bit, packed and padded agreeing.
#[test]
fn gpu_kitchen_sink_runs_and_repeats() {
    if !gpu_or_skip("gpu_kitchen_sink") {
        return;
    }
    let (m, s) = kitchen_sink("logp");
    let Ok(mut c) = rlo_tests::compile_stdlib("grpo") else {
        eprintln!("SKIP gpu_kitchen_sink: the front end does not compile grpo");
        return;
    };
    c.module = m;
    c.schedule = s;
    for (seed, groups, max_len) in [(4, 3, 3), (5, 11, 50), (6, 9, 783)] {
        let batch = support::random_batch(&c.module, seed, groups, max_len);
        let a =
            rlo_runtime::cuda::evaluate(&c, &batch, &[0.2]).unwrap_or_else(|e| panic!("cuda: {e}"));
        let b =
            rlo_runtime::cuda::evaluate(&c, &batch, &[0.2]).unwrap_or_else(|e| panic!("cuda: {e}"));
        assert_eq!(bits(&a), bits(&b), "not bit-identical");
        assert_eq!(a.grads.len(), 2);
    }
}

/// Every number of an evaluation as bits (NaN-safe equality).
fn bits(e: &rlo_compiler::Evaluation) -> Vec<u64> {
    let mut v = vec![e.loss.to_bits()];
    v.extend(e.metrics.iter().map(|x| x.to_bits()));
    for g in e.grads.iter().chain(&e.outputs) {
        v.extend(g.iter().map(|x| x.to_bits()));
    }
    v
}

/// GPU: random programs (every primitive, turns included) on random ragged layouts agree with the
/// interpreter within 1e-5 relative (loss, metrics, gradients, outputs). `RLO_GPU_CASES` programs
/// (default 240: #6 asks for at least 200).
#[test]
fn gpu_random_programs_match_the_interpreter() {
    use rand::SeedableRng;
    if !gpu_or_skip("gpu_random_programs") {
        return;
    }
    let Ok(mut c) = rlo_tests::compile_stdlib("grpo") else {
        eprintln!("SKIP gpu_random_programs: the front end does not compile grpo");
        return;
    };
    let n: u64 = std::env::var("RLO_GPU_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(240);
    for seed in 1..=n {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let m = rlo_tests::random_module(
            &mut rng,
            rlo_tests::ModuleSpec {
                steps: 12,
                detach: true,
            },
        );
        let (m, s) = rlo_tests::compile_module(m).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        let layout = rlo_tests::random_layout(&mut rng, rlo_tests::LayoutSpec::default());
        let batch = rlo_tests::random_batch(&m, &layout, &mut rng);
        let params: Vec<f64> = m.params.iter().map(|p| p.default).collect();
        let want = rlo_compiler::back::interp::evaluate(&m, &s, &batch, &params)
            .unwrap_or_else(|e| panic!("seed {seed} interp: {e}"));
        c.module = m;
        c.schedule = s;
        let got = rlo_runtime::cuda::evaluate(&c, &batch, &params)
            .unwrap_or_else(|e| panic!("seed {seed} cuda: {e}"));
        if let Some(d) = differs(&want, &got) {
            // where f32 rounding decides, the f32 CPU backend must agree (as in the emulator)
            let obj = rlo_runtime::Objective {
                compiled: c.clone(),
            };
            let cpu = obj
                .evaluate(&batch, &params, rlo_runtime::Backend::Cpu)
                .unwrap_or_else(|e| panic!("seed {seed} cpu: {e}"));
            if let Some(dc) = differs(&cpu, &got) {
                panic!("seed {seed}: {d} (f32 cpu: {dc})");
            }
            eprintln!("seed {seed}: agrees with the f32 cpu backend only: {d}");
        }
    }
}
