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

/// One program of a library, with its module and schedule.
struct Prog<'a> {
    lib: &'a EmuLib,
    i: usize,
    p: &'a CudaProgram,
    m: &'a Module,
    s: &'a Schedule,
}

/// How a check passed.
#[derive(Debug, PartialEq, Eq)]
enum Agreement {
    /// Within 1e-5 of the f64 interpreter.
    Interpreter,
    /// Not within 1e-5 of the interpreter, but within 1e-5 of the CPU backend in f32 mode, which
    /// shares nothing with the CUDA emitter but the IR: an ill-conditioned value (whitening of
    /// nearly equal numbers, cancellation in a loss) whose f32 rounding error exceeds the
    /// tolerance on every f32 backend.
    CpuF32,
}

/// Runs the program under the given thread orders (same bits required) and compares with the
/// interpreter (or, see [`Agreement::CpuF32`], with the f32 CPU backend).
fn check(
    pr: &Prog,
    batch: &Batch,
    params: &[f64],
    o: RunOpts,
    orders: &[Order],
) -> Result<Agreement, String> {
    let (m, s) = (pr.m, pr.s);
    let batch = stored(m, batch, pr.p.tok_dtype);
    let want = interp::evaluate(m, s, &batch, params).map_err(|e| format!("interpreter: {e}"))?;
    let mut first: Option<Evaluation> = None;
    for &order in orders {
        let got = runner::run(
            pr.lib,
            pr.i,
            pr.p,
            m,
            &batch,
            params,
            RunOpts { order, ..o },
        )?;
        match &first {
            None => first = Some(got),
            Some(f) => {
                if runner::bits(f) != runner::bits(&got) {
                    return Err(format!(
                        "{order:?} thread order gives other bits than {:?}: a race between barriers",
                        orders[0]
                    ));
                }
            }
        }
    }
    let mut got = first.ok_or("no run")?;
    let mut want = want;
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
    let Err(e) = compare(&got, &want, 1e-5) else {
        return Ok(Agreement::Interpreter);
    };
    use rlo_compiler::back::clif::ClifOptions;
    let k = rlo_runtime::cpu::CpuKernel::compile(m, s, ClifOptions { f64: false })
        .map_err(|c| format!("{e} (cpu backend: {c})"))?;
    let cpu = k
        .evaluate(m, &batch, params, 1)
        .map_err(|c| format!("{e} (cpu backend: {c})"))?;
    want = cpu;
    for (k, x) in m.metrics.iter().enumerate() {
        if has_comparison(m, x.value) {
            want.metrics[k] = got.metrics[k];
        }
    }
    for (k, x) in m.outputs.iter().enumerate() {
        if has_comparison(m, x.value) {
            want.outputs[k].clone_from(&got.outputs[k]);
        }
    }
    compare(&got, &want, 1e-5)
        .map(|()| Agreement::CpuF32)
        .map_err(|c| format!("{e}; and against the f32 cpu backend: {c}"))
}

const ALL_ORDERS: [Order; 3] = [Order::Ascending, Order::Descending, Order::Random];

/// Blocks of 32 threads: 8 and 32 times cheaper to emulate than the runtime's, and batches of a
/// few dozen sequences or tokens already take several block-stride iterations.
fn small_blocks(o: RunOpts) -> RunOpts {
    RunOpts {
        pass_threads: 32,
        small_threads: 32,
        ..o
    }
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
            turns: !seed.is_multiple_of(3),
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

/// grpo with the runtime's block sizes on 1100 sequences: more than the 1024 threads of a
/// small stage, so every block-stride loop over sequences and groups takes two iterations.
#[test]
fn grpo_with_more_sequences_than_threads() {
    if !emulator_or_skip("grpo wide") {
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
    let params = params_of(&c.module);
    let b = wide_batch(&c.module, 9, 1100, 3);
    for (i, p) in progs.iter().enumerate() {
        let pr = Prog {
            lib: &lib,
            i,
            p,
            m: &c.module,
            s: &c.schedule,
        };
        check(&pr, &b, &params, RunOpts::default(), &[Order::Descending])
            .unwrap_or_else(|e| panic!("grpo {:?}: {e}", p.layout));
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
    let prog = |i: usize, p| Prog {
        lib: &lib,
        i,
        p,
        m: &c.module,
        s: &c.schedule,
    };
    let o = small_blocks(RunOpts::default());
    check(&prog(0, &good), &b, &params, o, &ALL_ORDERS)
        .unwrap_or_else(|e| panic!("unmutated grpo: {e}"));
    for (k, (what, p, msg)) in cases.iter().enumerate() {
        match check(&prog(k + 1, p), &b, &params, o, &ALL_ORDERS) {
            Ok(_) => panic!("{what}: not detected"),
            Err(e) => {
                eprintln!("{what}: {e}");
                assert!(e.contains(msg), "{what}: unexpected report {e}");
            }
        }
    }
}

/// Compiles `programs` into libraries of at most `per_lib` programs, two g++ at a time.
/// Returns (library, index in it) per program, and the g++ seconds summed.
fn build_all(programs: &[CudaProgram], per_lib: usize) -> (Vec<EmuLib>, f64) {
    let chunks: Vec<Vec<&CudaProgram>> = programs
        .chunks(per_lib.max(1))
        .map(|c| c.iter().collect())
        .collect();
    let mut libs: Vec<Option<EmuLib>> = (0..chunks.len()).map(|_| None).collect();
    for pair in chunks.chunks(2).zip(libs.chunks_mut(2)) {
        std::thread::scope(|sc| {
            for (c, slot) in pair.0.iter().zip(pair.1.iter_mut()) {
                sc.spawn(move || {
                    *slot = Some(EmuLib::build(c).unwrap_or_else(|e| panic!("{e}")));
                });
            }
        });
    }
    let libs: Vec<EmuLib> = libs.into_iter().flatten().collect();
    let secs = libs.iter().map(|l| l.compile_s).sum();
    (libs, secs)
}

/// Parameter sets: the defaults, and every parameter moved (0 ↔ 1, others × 1.5: flips bool
/// switches and mode selectors, widens clip ranges).
fn param_sets(m: &Module) -> Vec<Vec<f64>> {
    let d = params_of(m);
    let alt: Vec<f64> = d
        .iter()
        .map(|&x| match x {
            0.0 => 1.0,
            1.0 => 0.0,
            x => x * 1.5,
        })
        .collect();
    let mut v = vec![d.clone()];
    if alt != d {
        v.push(alt);
    }
    // every aggregation mode of the objectives that have one
    if let Some(k) = m.params.iter().position(|p| p.name == "loss_agg_mode") {
        for mode in [2.0, 3.0] {
            let mut x = d.clone();
            x[k] = mode;
            v.push(x);
        }
    }
    v
}

/// A batch of `n` sequences of 0..=`max_len` tokens in groups of 1..=5, with turns.
fn wide_batch(m: &Module, seed: u64, n: usize, max_len: usize) -> Batch {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut b = small_batch(m, seed);
    let mut seq_group = Vec::new();
    let mut g = 0u32;
    while seq_group.len() < n {
        for _ in 0..rng.random_range(1..=5usize) {
            seq_group.push(g);
        }
        g += 1;
    }
    seq_group.truncate(n);
    let n_groups = seq_group.iter().max().map_or(0, |&x| x as usize + 1);
    let (mut seq_offsets, mut turn_offsets, mut tok_turn) = (vec![0usize], vec![0usize], vec![]);
    for _ in 0..n {
        let len = rng.random_range(0..=max_len);
        let turns = rng.random_range(1..=2usize);
        let k0 = turn_offsets.last().copied().unwrap_or(0);
        for t in 0..len {
            tok_turn.push((k0 + usize::from(turns == 2 && 2 * t >= len)) as u32);
        }
        turn_offsets.push(k0 + turns);
        seq_offsets.push(seq_offsets.last().copied().unwrap_or(0) + len);
    }
    b.layout = Layout {
        seq_offsets,
        turn_offsets,
        tok_turn,
        seq_group,
        n_groups,
    };
    b.layout.validate().expect("valid layout");
    resize_values(m, &mut b);
    b
}

/// Makes every input the right length for the batch's layout (recycling its values).
fn resize_values(m: &Module, b: &mut Batch) {
    for inp in &m.inputs {
        let n = b.layout.count(inp.ty.level);
        let old = &b.values[&inp.name];
        let x: Vec<f64> = (0..n)
            .map(|i| old.get(i % old.len().max(1)).copied().unwrap_or(-0.5))
            .collect();
        b.values.insert(inp.name.clone(), x);
    }
}

/// The batches every stdlib objective runs on, with the thread counts: ragged with turns
/// (lengths 0..9, groups of one), single-turn (null `tok_turn`), 40 sequences (more than a
/// block of the small stages), sequences longer than a block, all sequences empty, no sequences
/// at all, one sequence alone in its group.
fn stdlib_batches(m: &Module) -> Vec<(String, Batch, RunOpts)> {
    let small = small_blocks(RunOpts::default());
    let mut v = Vec::new();
    for seed in 0..3 {
        let o = RunOpts {
            null_tok_turn: seed == 0,
            seed,
            ..small
        };
        v.push((format!("ragged seed {seed}"), small_batch(m, seed), o));
    }
    v.push(("40 sequences".into(), wide_batch(m, 3, 40, 6), small));
    v.push(("long".into(), long_batch(m, 11), small));
    for (what, lengths, groups) in [
        ("all empty", vec![0usize, 0, 0], vec![0u32, 0, 1]),
        ("no sequences", vec![], vec![]),
        ("one sequence", vec![1], vec![0]),
    ] {
        let mut b = small_batch(m, 5);
        b.layout = Layout::single_turn(&lengths, groups);
        resize_values(m, &mut b);
        v.push((what.into(), b, small));
    }
    v
}

/// Every stdlib objective × {packed f32, padded f32, packed bf16, padded f16} against the
/// interpreter: the f32 programs on every batch of [`stdlib_batches`] and parameter set of
/// [`param_sets`] in blocks of 32 threads and three thread orders, and on long sequences with
/// the runtime's block sizes; the 16-bit programs on one batch.
#[test]
fn stdlib_objectives_match_the_interpreter() {
    if !emulator_or_skip("stdlib objectives") {
        return;
    }
    let t0 = std::time::Instant::now();
    let objs = stdlib_objectives();
    assert!(objs.len() >= 20, "only {} stdlib objectives", objs.len());
    let variants = [
        (TokLayout::Packed, StorageType::F32),
        (TokLayout::Padded, StorageType::F32),
        (TokLayout::Packed, StorageType::Bf16),
        (TokLayout::Padded, StorageType::F16),
    ];
    let mut programs = Vec::new();
    let mut owner = Vec::new();
    let mut failures = Vec::new();
    for (k, (name, c)) in objs.iter().enumerate() {
        for &(l, t) in &variants {
            match emit(&c.module, &c.schedule, &opts(l, t)) {
                Ok(p) => {
                    programs.push(p);
                    owner.push(k);
                }
                Err(e) => failures.push(format!("{name} {l:?} {t:?}: emit: {e}")),
            }
        }
    }
    let per_lib = programs.len().div_ceil(2);
    let (libs, gpp) = build_all(&programs, per_lib);
    let t_built = t0.elapsed().as_secs_f64();
    let (mut runs, mut via_cpu) = (0usize, Vec::new());
    for (j, p) in programs.iter().enumerate() {
        let (name, c) = &objs[owner[j]];
        let pr = Prog {
            lib: &libs[j / per_lib],
            i: j % per_lib,
            p,
            m: &c.module,
            s: &c.schedule,
        };
        let f32 = p.tok_dtype == StorageType::F32;
        let sets = param_sets(&c.module);
        let mut cases = Vec::new();
        for (what, b, o) in stdlib_batches(&c.module) {
            if f32 || what == "ragged seed 1" {
                for params in if f32 { &sets[..] } else { &sets[..1] } {
                    cases.push((what.clone(), b.clone(), o, params.clone(), &ALL_ORDERS[..]));
                }
            }
            if f32 && what == "long" {
                // the runtime's block sizes: 256-thread passes, 1024-thread small stages
                let (o, orders) = (RunOpts::default(), &ALL_ORDERS[..2]);
                cases.push((
                    format!("{what}, full blocks"),
                    b,
                    o,
                    sets[0].clone(),
                    orders,
                ));
            }
        }
        for (what, b, o, params, orders) in cases {
            runs += orders.len();
            let case = format!("{name} {:?} {:?} {what}", p.layout, p.tok_dtype);
            match check(&pr, &b, &params, o, orders) {
                Ok(Agreement::Interpreter) => {}
                Ok(Agreement::CpuF32) => via_cpu.push(format!("{case} params {params:?}")),
                Err(e) => failures.push(format!("{case} params {params:?}: {e}")),
            }
        }
    }
    eprintln!(
        "cuda emulator: {} stdlib objectives, {} programs, {runs} runs (each twice on one workspace); g++ {gpp:.1} s (cpu), built after {t_built:.1} s, total {:.1} s",
        objs.len(),
        programs.len(),
        t0.elapsed().as_secs_f64()
    );
    eprintln!(
        "{} cases agree with the f32 cpu backend but not within 1e-5 of the f64 interpreter:\n  {}",
        via_cpu.len(),
        via_cpu.join("\n  ")
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        via_cpu.len() * 50 <= runs,
        "too many ill-conditioned cases: {}",
        via_cpu.len()
    );
}

/// Random well-typed programs (`rlo_tests::random_module`: every primitive at every level, ranks,
/// quantiles, scans, per-position reductions, turns) through autodiff and the real scheduler;
/// packed and padded, f32 and 16-bit token inputs; each on a ragged layout with turns and on one
/// with sequences longer than a block, in three thread orders. `RLO_EMU_CASES` sets the number
/// of programs (default 240).
#[test]
fn random_programs_match_the_interpreter() {
    use rand::SeedableRng;
    if !emulator_or_skip("random programs") {
        return;
    }
    let t0 = std::time::Instant::now();
    let n: u64 = std::env::var("RLO_EMU_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(240);
    let mut mods = Vec::new();
    let mut programs = Vec::new();
    for seed in 0..n {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let m = rlo_tests::random_module(
            &mut rng,
            rlo_tests::ModuleSpec {
                steps: 4 + (seed % 12) as usize,
                detach: true,
            },
        );
        let (m, s) = rlo_tests::compile_module(m).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        let layout = if seed % 2 == 0 {
            TokLayout::Packed
        } else {
            TokLayout::Padded
        };
        let dtype = match seed % 8 {
            3 => StorageType::Bf16,
            6 => StorageType::F16,
            _ => StorageType::F32,
        };
        let p = emit(&m, &s, &opts(layout, dtype))
            .unwrap_or_else(|e| panic!("seed {seed}: CUDA emit failed: {e}"));
        programs.push(p);
        mods.push((m, s, rng));
    }
    let per_lib = 60;
    let (libs, gpp) = build_all(&programs, per_lib);
    let t_built = t0.elapsed().as_secs_f64();
    let mut failures = Vec::new();
    let mut via_cpu = 0usize;
    for (j, (p, (m, s, rng))) in programs.iter().zip(&mut mods).enumerate() {
        let pr = Prog {
            lib: &libs[j / per_lib],
            i: j % per_lib,
            p,
            m,
            s,
        };
        let params = params_of(m);
        let ragged = rlo_tests::random_layout(rng, rlo_tests::LayoutSpec::default());
        let long = rlo_tests::random_layout(
            rng,
            rlo_tests::LayoutSpec {
                max_len: 70,
                ..Default::default()
            },
        );
        for (what, layout) in [("ragged", ragged), ("long", long)] {
            let b = rlo_tests::random_batch(m, &layout, rng);
            let o = small_blocks(RunOpts {
                seed: j as u64,
                null_tok_turn: j % 3 == 0,
                ..RunOpts::default()
            });
            match check(&pr, &b, &params, o, &ALL_ORDERS) {
                Ok(Agreement::Interpreter) => {}
                Ok(Agreement::CpuF32) => via_cpu += 1,
                Err(e) => failures.push(format!(
                    "seed {j} {:?} {:?} {what}: {e}",
                    p.layout, p.tok_dtype
                )),
            }
        }
    }
    eprintln!(
        "cuda emulator: {n} random programs, {} runs; g++ {gpp:.1} s (cpu), built after {t_built:.1} s, total {:.1} s; {via_cpu} agree with the f32 cpu backend only",
        n * 2 * 3,
        t0.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{} of {n} programs disagree:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        via_cpu * 20 <= n as usize,
        "{via_cpu} ill-conditioned cases"
    );
}

/// Regression: the gradient of a `turn` input read at the tokens and weighted per sequence is a
/// `tok → turn` sum of a per-sequence value. The small-stage emitter took it for the closed form
/// of a per-sequence constant (which knows no turn) and failed with "unsupported reduction
/// levels" (found by `random_programs_match_the_interpreter`, seed 136).
#[test]
fn turn_gradient_of_a_per_sequence_weight() {
    if !emulator_or_skip("turn gradient") {
        return;
    }
    let text = "
objective turn_weight() {
    input logp: tok diff
    input tv: turn diff
    input r: seq
    loss batch_sum(seq_sum(tv + logp) * r)
}
";
    let c = rlo_compiler::compile("turn_weight.rlo", text, &rlo_compiler::Options::default())
        .unwrap_or_else(|f| panic!("{}", f.render(false)));
    let progs: Vec<CudaProgram> = [TokLayout::Packed, TokLayout::Padded]
        .iter()
        .map(|&l| {
            emit(&c.module, &c.schedule, &opts(l, StorageType::F32))
                .unwrap_or_else(|e| panic!("{l:?}: {e}"))
        })
        .collect();
    let refs: Vec<&CudaProgram> = progs.iter().collect();
    let lib = EmuLib::build(&refs).unwrap_or_else(|e| panic!("{e}"));
    for (i, p) in progs.iter().enumerate() {
        let pr = Prog {
            lib: &lib,
            i,
            p,
            m: &c.module,
            s: &c.schedule,
        };
        for seed in 0..4 {
            let b = small_batch(&c.module, seed);
            let o = small_blocks(RunOpts::default());
            check(&pr, &b, &[], o, &ALL_ORDERS)
                .unwrap_or_else(|e| panic!("{:?} seed {seed}: {e}", p.layout));
        }
    }
}

/// `rlo_seq_scan` / `rlo_block_scan_affine` of `rlo_common.cuh` with the last `__syncthreads()`
/// of the block scan removed: a warp that has read the block total goes on to the next chunk and
/// overwrites its warp partial while a later warp still has to read it.
const RACY_SCAN: &str = "
__device__ rlo_affine rlo_racy_scan_affine(rlo_affine v, rlo_affine* total) {
    __shared__ rlo_affine part[32];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nwarps = (blockDim.x + 31) >> 5;
    for (int o = 1; o < 32; o <<= 1) {
        rlo_affine u;
        u.a = __shfl_up_sync(0xffffffffu, v.a, o);
        u.b = __shfl_up_sync(0xffffffffu, v.b, o);
        if (lane >= o) { v = rlo_affine_then(u, v); }
    }
    if (lane == 31) { part[warp] = v; }
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int k = 1; k < nwarps; ++k) { part[k] = rlo_affine_then(part[k - 1], part[k]); }
    }
    __syncthreads();
    if (warp > 0) { v = rlo_affine_then(part[warp - 1], v); }
    *total = part[nwarps - 1];
    return v;
}
template <class X, class D, class S>
__device__ void rlo_racy_seq_scan(int kind, long long len, X x, D d, S st) {
    float carry = 0.0f;
    for (long long base = 0; base < len; base += blockDim.x) {
        const long long r = base + threadIdx.x;
        const bool live = r < len;
        const bool fwd = kind == RLO_SCAN_CUMSUM || kind == RLO_SCAN_DISCOUNTED_FWD;
        const long long t = fwd ? r : len - 1 - r;
        rlo_affine e;
        e.a = 1.0f;
        e.b = 0.0f;
        if (live) {
            e.b = x(t);
            if (kind == RLO_SCAN_DISCOUNTED) { e.a = (t == len - 1) ? 0.0f : d(t); }
            if (kind == RLO_SCAN_DISCOUNTED_FWD) { e.a = (t == 0) ? 0.0f : d(t - 1); }
        }
        rlo_affine total;
        const rlo_affine p = rlo_racy_scan_affine(e, &total);
        if (live) { st(t, p.a * carry + p.b); }
        carry = total.a * carry + total.b;
    }
    __syncthreads();
}
#define rlo_seq_scan rlo_racy_seq_scan
";

/// The thread orders catch a race on shared memory inside a helper (which neither the stale
/// workspace nor the canaries can see): reinforce_pp's token returns through a block scan with
/// one barrier removed, in blocks of two warps, on sequences longer than a block.
#[test]
fn emulator_catches_a_shared_memory_race() {
    if !emulator_or_skip("shared-memory race") {
        return;
    }
    let objs = stdlib_objectives();
    let (_, c) = objs
        .iter()
        .find(|(n, _)| n == "reinforce_pp")
        .expect("reinforce_pp");
    let good = emit(
        &c.module,
        &c.schedule,
        &opts(TokLayout::Packed, StorageType::F32),
    )
    .expect("emit");
    assert!(
        good.source.contains("rlo_seq_scan("),
        "reinforce_pp scans tokens"
    );
    let mut racy = good.clone();
    racy.source = format!("{RACY_SCAN}\n{}", good.source);
    let lib = EmuLib::build(&[&good, &racy]).unwrap_or_else(|e| panic!("{e}"));
    let prog = |i: usize, p| Prog {
        lib: &lib,
        i,
        p,
        m: &c.module,
        s: &c.schedule,
    };
    let o = RunOpts {
        pass_threads: 64,
        small_threads: 64,
        ..RunOpts::default()
    };
    let b = long_batch(&c.module, 3);
    let params = params_of(&c.module);
    check(&prog(0, &good), &b, &params, o, &ALL_ORDERS)
        .unwrap_or_else(|e| panic!("unmutated reinforce_pp: {e}"));
    let e = check(&prog(1, &racy), &b, &params, o, &ALL_ORDERS)
        .err()
        .unwrap_or_else(|| panic!("racy scan: not detected"));
    eprintln!("racy scan: {e}");
    assert!(e.contains("thread order gives other bits"), "{e}");
}
