//! The generated CUDA C, run unchanged on the host by a CPU emulator (`cuda_emu/emu.h`: one fiber
//! per CUDA thread, barriers and warp shuffles with GPU semantics, several thread interleavings),
//! against the reference interpreter. No GPU needed; needs g++ (C++20). Without g++ the tests
//! print `SKIP` on a developer machine and fail in CI (`CI=true`).
//!
//! Every run also checks (see `cuda_emu/runner.rs`): barriers reached by all threads, no write
//! outside a buffer, no reliance on a zeroed workspace, no read of padding, zeros written in the
//! padding of token roots, the same bits on a second run over the stale workspace and under
//! ascending, descending and random thread orders.
//!
//! Tolerance as in `parity_cpu.rs` (f32 mode): `|a − b| ≤ 1e-5·max(|a|, |b|) + 1e-5·scale`, with
//! `scale` the largest magnitude of the vector (at least 1); metrics and outputs that depend on
//! a comparison are discontinuous and not compared (f32 rounding may flip `a > b` where the f64
//! interpreter has `a == b`).

#[path = "cuda_emu/runner.rs"]
mod runner;

use rlo_compiler::back::cuda::{emit, CudaOptions, CudaProgram, StorageType, TokLayout};
use rlo_compiler::back::interp;
use rlo_compiler::{Batch, Compiled, DType, Evaluation, Layout, Level, Module, Schedule};
use runner::{EmuLib, Order, RunOpts};
use std::collections::BTreeMap;
use std::path::PathBuf;

fn emulator_or_skip(test: &str) -> bool {
    match runner::unavailable() {
        None => true,
        Some(why) => {
            if runner::required() {
                panic!("{test}: the CUDA emulator needs g++ in CI: {why}");
            }
            eprintln!("SKIP {test}: {why}");
            false
        }
    }
}

fn stdlib_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../stdlib")
}

/// Every stdlib file that defines an objective, sorted.
fn stdlib_objectives() -> Vec<(String, Compiled)> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(stdlib_dir())
        .expect("stdlib dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "rlo"))
        .collect();
    paths.sort();
    let mut v = Vec::new();
    for p in paths {
        let text = std::fs::read_to_string(&p).expect("read");
        if !text.lines().any(|l| l.starts_with("objective")) {
            continue;
        }
        let name = p
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let c = rlo_compiler::compile(
            &format!("stdlib/{name}.rlo"),
            &text,
            &rlo_compiler::Options::default(),
        )
        .unwrap_or_else(|f| panic!("{name}: {}", f.render(false)));
        v.push((name, c));
    }
    v
}

fn opts(layout: TokLayout, tok_dtype: StorageType) -> CudaOptions {
    CudaOptions {
        layout,
        tok_dtype,
        sources: None,
    }
}

/// Compares two evaluations; returns the first disagreement.
fn compare(got: &Evaluation, want: &Evaluation, tol: f64) -> Result<(), String> {
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
                return Err(format!(
                    "{what}[{i}]: emulated cuda {x:e}, interpreter {y:e}"
                ));
            }
        }
        Ok(())
    };
    vec("loss", &[got.loss], &[want.loss])?;
    vec("metrics", &got.metrics, &want.metrics)?;
    if got.grads.len() != want.grads.len() || got.outputs.len() != want.outputs.len() {
        return Err("result counts differ".into());
    }
    for (i, (a, b)) in got.grads.iter().zip(&want.grads).enumerate() {
        vec(&format!("grad {i}"), a, b)?;
    }
    for (i, (a, b)) in got.outputs.iter().zip(&want.outputs).enumerate() {
        vec(&format!("output {i}"), a, b)?;
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
        if let Expr::Binary {
            op:
                BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge | BinaryOp::Eq | BinaryOp::Ne,
            ..
        } = e
        {
            return true;
        }
        stack.extend(e.operands());
    }
    false
}

/// The batch as the kernels will see it: f32 token inputs rounded to the storage type.
fn stored(m: &Module, batch: &Batch, ty: StorageType) -> Batch {
    let mut b = batch.clone();
    for inp in &m.inputs {
        if let Some(v) = b.values.get_mut(&inp.name) {
            let t = if inp.ty.level == Level::Tok && inp.ty.dtype == DType::F32 {
                ty
            } else {
                StorageType::F32
            };
            for x in v.iter_mut() {
                *x = runner::round_to(t, *x);
            }
        }
    }
    b
}

/// Runs program `i` of `lib` under three thread orders (same bits required) and compares with
/// the interpreter.
fn check(
    lib: &EmuLib,
    i: usize,
    p: &CudaProgram,
    m: &Module,
    s: &Schedule,
    batch: &Batch,
    params: &[f64],
    o: RunOpts,
) -> Result<(), String> {
    let batch = stored(m, batch, p.tok_dtype);
    let want = interp::evaluate(m, s, &batch, params).map_err(|e| format!("interpreter: {e}"))?;
    let mut first: Option<Evaluation> = None;
    for order in [Order::Ascending, Order::Descending, Order::Random] {
        let got = runner::run(lib, i, p, m, &batch, params, RunOpts { order, ..o })?;
        match &first {
            None => first = Some(got),
            Some(f) => {
                if runner::bits(f) != runner::bits(&got) {
                    return Err(format!(
                        "{order:?} thread order gives other bits than ascending: a race between barriers"
                    ));
                }
            }
        }
    }
    let mut got = first.ok_or("no run")?;
    for (k, x) in m.metrics.iter().enumerate() {
        if has_comparison(m, x.value) {
            got.metrics[k] = want.metrics[k];
        }
    }
    for (k, x) in m.outputs.iter().enumerate() {
        if has_comparison(m, x.value) {
            got.outputs[k].clone_from(&want.outputs[k]);
        }
    }
    compare(&got, &want, 1e-5)
}

/// A ragged batch with turns (parity_cpu's shape): 1–4 groups of 1–4 sequences, lengths 0–9.
fn small_batch(m: &Module, seed: u64) -> Batch {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let layout = rlo_tests::random_layout(
        &mut rng,
        rlo_tests::LayoutSpec {
            max_groups: 4,
            max_group_size: 4,
            max_len: 9,
            turns: seed % 3 != 0,
        },
    );
    let mut b = rlo_tests::random_batch(m, &layout, &mut rng);
    // positive values for entropies and the like, as parity_cpu does
    for inp in &m.inputs {
        if inp.ty.dtype == DType::F32
            && (inp.ty.level > Level::Turn || inp.name.contains("entropy"))
        {
            if let Some(v) = b.values.get_mut(&inp.name) {
                for x in v.iter_mut() {
                    *x = f64::from((0.1 + rng.random_range(0.0..1.0)) as f32);
                }
            }
        }
    }
    b
}

/// Sequences longer than a block (256) and not a multiple of it, an empty one, one of length 1,
/// a group of one.
fn long_batch(m: &Module, seed: u64) -> Batch {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let lengths = [300usize, 0, 1, 257, 513, 31, 255];
    let groups = vec![0u32, 0, 1, 2, 2, 2, 3];
    let layout = Layout::single_turn(&lengths, groups);
    let mut values = BTreeMap::new();
    for inp in &m.inputs {
        let n = layout.count(inp.ty.level);
        let v = (0..n)
            .map(|_| match inp.ty.dtype {
                DType::Bool => f64::from(u8::from(rng.random_bool(0.5))),
                DType::F32 if inp.ty.level <= Level::Turn && !inp.name.contains("entropy") => {
                    f64::from(rng.random_range(-3.0f64..-0.05) as f32)
                }
                DType::F32 => f64::from(rng.random_range(0.1f64..1.1) as f32),
            })
            .collect();
        values.insert(inp.name.clone(), v);
    }
    Batch { layout, values }
}

fn params_of(m: &Module) -> Vec<f64> {
    m.params.iter().map(|p| p.default).collect()
}

#[test]
fn grpo_runs_and_matches_the_interpreter() {
    if !emulator_or_skip("grpo") {
        return;
    }
    let objs = stdlib_objectives();
    let (_, c) = objs.iter().find(|(n, _)| n == "grpo").expect("grpo");
    let progs: Vec<CudaProgram> = [TokLayout::Packed, TokLayout::Padded]
        .iter()
        .map(|&l| emit(&c.module, &c.schedule, &opts(l, StorageType::F32)).expect("emit"))
        .collect();
    let refs: Vec<&CudaProgram> = progs.iter().collect();
    let lib = EmuLib::build(&refs).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("g++: {:.1} s", lib.compile_s);
    let params = params_of(&c.module);
    for (i, p) in progs.iter().enumerate() {
        for seed in 0..3 {
            let b = small_batch(&c.module, seed);
            check(
                &lib,
                i,
                p,
                &c.module,
                &c.schedule,
                &b,
                &params,
                RunOpts::default(),
            )
            .unwrap_or_else(|e| panic!("grpo {:?} seed {seed}: {e}", p.layout));
        }
        let b = long_batch(&c.module, 7);
        check(
            &lib,
            i,
            p,
            &c.module,
            &c.schedule,
            &b,
            &params,
            RunOpts::default(),
        )
        .unwrap_or_else(|e| panic!("grpo {:?} long: {e}", p.layout));
    }
}

/// The emulator's own checks bite: a removed barrier (a race between barriers), a barrier that
/// one thread skips, an off-by-one write past a buffer and a kernel that reads the padding are
/// each reported.
#[test]
fn emulator_catches_planted_bugs() {
    if !emulator_or_skip("planted bugs") {
        return;
    }
    let objs = stdlib_objectives();
    let (_, c) = objs.iter().find(|(n, _)| n == "grpo").expect("grpo");
    let good = emit(
        &c.module,
        &c.schedule,
        &opts(TokLayout::Padded, StorageType::F32),
    )
    .expect("emit");
    let mutate = |from: &str, to: &str| {
        let mut p = good.clone();
        assert!(
            p.source.contains(from),
            "pattern {from:?} not in grpo's CUDA"
        );
        p.source = p.source.replacen(from, to, 1);
        p
    };
    let cases = [
        (
            "missing barrier",
            mutate(
                "        ctx.v24[g] = e24;\n    }\n    __syncthreads();",
                "        ctx.v24[g] = e24;\n    }\n",
            ),
            "",
        ),
        (
            "skipped barrier",
            mutate(
                "const float p0 = (float)ctx.p[0];",
                "if (threadIdx.x == 5) { return; } const float p0 = (float)ctx.p[0];",
            ),
            "divergent __syncthreads()",
        ),
        (
            "write past the end",
            mutate(
                "t < ctx.tok_stride; t += blockDim.x",
                "t <= ctx.tok_stride; t += blockDim.x",
            ),
            "wrote outside buffer",
        ),
        (
            "read of padding",
            mutate(
                "const long long len = RLO_LEN(s);",
                "const long long len = ctx.tok_stride;",
            ),
            "",
        ),
    ];
    let mut progs = vec![&good];
    progs.extend(cases.iter().map(|c| &c.1));
    let lib = EmuLib::build(&progs).unwrap_or_else(|e| panic!("{e}"));
    let params = params_of(&c.module);
    let b = small_batch(&c.module, 4);
    check(
        &lib,
        0,
        &good,
        &c.module,
        &c.schedule,
        &b,
        &params,
        RunOpts::default(),
    )
    .unwrap_or_else(|e| panic!("unmutated grpo: {e}"));
    for (k, (what, p, msg)) in cases.iter().enumerate() {
        match check(
            &lib,
            k + 1,
            p,
            &c.module,
            &c.schedule,
            &b,
            &params,
            RunOpts::default(),
        ) {
            Ok(()) => panic!("{what}: not detected"),
            Err(e) => {
                eprintln!("{what}: {e}");
                assert!(e.contains(msg), "{what}: unexpected report {e}");
            }
        }
    }
}
