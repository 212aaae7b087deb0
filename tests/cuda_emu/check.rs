//! Shared pieces of the CUDA emulator tests: comparison with the interpreter (and the f32 CPU
//! backend), batches, parameter sets, library builds, a source run in both layouts, the racy
//! scan mutant.

use crate::runner::{self, EmuLib, Order, RunOpts};
use rlo_compiler::back::cuda::{emit, CudaOptions, CudaProgram, StorageType, TokLayout};
use rlo_compiler::back::interp;
use rlo_compiler::{Batch, DType, Evaluation, Layout, Level, Module, Schedule};
use std::collections::BTreeMap;

pub fn opts(layout: TokLayout, tok_dtype: StorageType) -> CudaOptions {
    CudaOptions {
        layout,
        tok_dtype,
        sources: None,
        ..Default::default()
    }
}

/// Compares two evaluations; returns the first disagreement.
pub fn compare(
    got: &Evaluation,
    want: &Evaluation,
    tol: f64,
    reference: &str,
) -> Result<(), String> {
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
                    "{what}[{i}]: emulated cuda {x:e}, {reference} {y:e}"
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
pub fn has_comparison(m: &Module, h: rlo_compiler::Handle<rlo_compiler::ir::Expr>) -> bool {
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
pub fn stored(m: &Module, batch: &Batch, ty: StorageType) -> Batch {
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
pub struct Prog<'a> {
    pub lib: &'a EmuLib,
    pub i: usize,
    pub p: &'a CudaProgram,
    pub m: &'a Module,
    pub s: &'a Schedule,
}

/// How a check passed.
#[derive(Debug, PartialEq, Eq)]
pub enum Agreement {
    /// Within 1e-5 of the f64 interpreter.
    Interpreter,
    /// Not within 1e-5 of the interpreter, but within 1e-5 of the CPU backend in f32 mode, which
    /// shares nothing with the CUDA emitter but the IR: an ill-conditioned value (whitening of
    /// nearly equal numbers, cancellation in a loss) whose f32 rounding error exceeds the
    /// tolerance on every f32 backend.
    CpuF32,
    /// Continuous values agree with the interpreter; a discontinuous metric or output (one that
    /// depends on a comparison: `clip_frac` = mean of `a > b`) differs where f32 rounding decides
    /// a tie the other way than f64, and agrees with the f32 CPU backend.
    TieFlipped,
}

/// Runs the program under the given thread orders (same bits required) and compares with the
/// interpreter (or, see [`Agreement`], with the f32 CPU backend).
pub fn check(
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
    let got = first.ok_or("no run")?;
    // continuous values against the interpreter, discontinuous ones (see `has_comparison`)
    // against the interpreter or, where f32 rounding decided a tie the other way, the f32 CPU
    // backend
    let cont = compare(&keep(m, &got, &want, false), &want, 1e-5, "interpreter");
    let disc = compare(&keep(m, &got, &want, true), &want, 1e-5, "interpreter");
    if cont.is_ok() && disc.is_ok() {
        return Ok(Agreement::Interpreter);
    }
    use rlo_compiler::back::clif::ClifOptions;
    let e = [&cont, &disc]
        .iter()
        .filter_map(|r| r.as_ref().err().cloned())
        .collect::<Vec<_>>()
        .join("; ");
    let k = rlo_runtime::cpu::CpuKernel::compile(m, s, ClifOptions { f64: false })
        .map_err(|c| format!("{e} (cpu backend: {c})"))?;
    let cpu = k
        .evaluate(m, &batch, params, 1)
        .map_err(|c| format!("{e} (cpu backend: {c})"))?;
    if disc.is_err() {
        compare(&keep(m, &got, &cpu, true), &cpu, 1e-5, "cpu f32")
            .map_err(|c| format!("{e}; and against the f32 cpu backend: {c}"))?;
    }
    if cont.is_err() {
        compare(&keep(m, &got, &cpu, false), &cpu, 1e-5, "cpu f32")
            .map_err(|c| format!("{e}; and against the f32 cpu backend: {c}"))?;
        return Ok(Agreement::CpuF32);
    }
    Ok(Agreement::TieFlipped)
}

/// `got` with the values of `reference` where a metric or output is discontinuous (`disc`
/// false: only continuous values are left to compare) or continuous (`disc` true).
fn keep(m: &Module, got: &Evaluation, reference: &Evaluation, disc: bool) -> Evaluation {
    let mut e = got.clone();
    e.loss = if disc { reference.loss } else { got.loss };
    if disc {
        e.grads.clone_from(&reference.grads);
    }
    for (k, x) in m.metrics.iter().enumerate() {
        if has_comparison(m, x.value) != disc {
            e.metrics[k] = reference.metrics[k];
        }
    }
    for (k, x) in m.outputs.iter().enumerate() {
        if has_comparison(m, x.value) != disc {
            e.outputs[k].clone_from(&reference.outputs[k]);
        }
    }
    e
}

pub const ALL_ORDERS: [Order; 3] = [Order::Ascending, Order::Descending, Order::Random];

/// Blocks of 32 threads: 8 and 32 times cheaper to emulate than the runtime's, and batches of a
/// few dozen sequences or tokens already take several block-stride iterations.
pub fn small_blocks(o: RunOpts) -> RunOpts {
    RunOpts {
        pass_threads: 32,
        small_threads: 32,
        ..o
    }
}

/// A ragged batch with turns (parity_cpu's shape): 1–4 groups of 1–4 sequences, lengths 0–9.
pub fn small_batch(m: &Module, seed: u64) -> Batch {
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

/// Sequences longer than a block (256) and not a multiple of it, exactly 256 and 32 tokens, an
/// empty one, one of length 1, a group of one.
pub fn long_batch(m: &Module, seed: u64) -> Batch {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let lengths = [300usize, 0, 1, 257, 513, 31, 255, 256, 32];
    let groups = vec![0u32, 0, 1, 2, 2, 2, 3, 4, 4];
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

pub fn params_of(m: &Module) -> Vec<f64> {
    m.params.iter().map(|p| p.default).collect()
}

/// Compiles `programs` into libraries of at most `per_lib` programs, two g++ at a time.
/// Returns (library, index in it) per program, and the g++ seconds summed.
pub fn build_all(programs: &[CudaProgram], per_lib: usize) -> (Vec<EmuLib>, f64) {
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
pub fn param_sets(m: &Module) -> Vec<Vec<f64>> {
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
pub fn wide_batch(m: &Module, seed: u64, n: usize, max_len: usize) -> Batch {
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
pub fn resize_values(m: &Module, b: &mut Batch) {
    for inp in &m.inputs {
        let n = b.layout.count(inp.ty.level);
        let old = &b.values[&inp.name];
        let x: Vec<f64> = (0..n)
            .map(|i| old.get(i % old.len().max(1)).copied().unwrap_or(-0.5))
            .collect();
        b.values.insert(inp.name.clone(), x);
    }
}

/// Rounds every f32 input to a multiple of 0.5 with the sign kept (so -0.0 appears): ties for
/// ranks, quantiles and max/min, signed zeros for comparisons.
pub fn coarsen(m: &Module, b: &mut Batch) {
    for inp in &m.inputs {
        if inp.ty.dtype == DType::F32 {
            if let Some(v) = b.values.get_mut(&inp.name) {
                for x in v.iter_mut() {
                    *x = ((*x * 2.0).round() / 2.0).copysign(*x);
                }
            }
        }
    }
}

/// The batches every stdlib objective runs on, with the thread counts: ragged with turns
/// (lengths 0..9, groups of one), single-turn (null `tok_turn`), inputs with ties, 40 sequences
/// (more than a block of the small stages), sequences longer than a block, all sequences empty,
/// no sequences at all, one sequence alone in its group.
pub fn stdlib_batches(m: &Module) -> Vec<(String, Batch, RunOpts)> {
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
    let mut ties = small_batch(m, 6);
    coarsen(m, &mut ties);
    v.push(("ties".into(), ties, small));
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

/// Compiles `text`, emits it packed and padded (f32), and runs both in the emulator on four
/// batches from `batch` with each parameter set of `param_sets`, in every thread order,
/// against the interpreter.
pub fn source_matches_interpreter(name: &str, text: &str, batch: &dyn Fn(&Module, u64) -> Batch) {
    let c = rlo_compiler::compile(name, text, &rlo_compiler::Options::default())
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
            let b = batch(&c.module, seed);
            let o = small_blocks(RunOpts::default());
            for params in param_sets(&c.module) {
                check(&pr, &b, &params, o, &ALL_ORDERS).unwrap_or_else(|e| {
                    panic!("{name} {:?} seed {seed} params {params:?}: {e}", p.layout)
                });
            }
        }
    }
}

/// `rlo_seq_scan` / `rlo_block_scan_affine` of `rlo_common.cuh` with the last `__syncthreads()`
/// of the block scan removed: a warp that has read the block total goes on to the next chunk and
/// overwrites its warp partial while a later warp still has to read it. Cut from the helpers'
/// own text, so the mutant follows any change to them.
pub fn racy_scan() -> String {
    let common = rlo_runtime::cuda::COMMON_CUH;
    let function = |start: &str| -> &str {
        let a = common
            .find(start)
            .unwrap_or_else(|| panic!("{start} not in rlo_common.cuh"));
        let len = common[a..].find("\n}\n").expect("function end") + 3;
        &common[a..a + len]
    };
    let block = function("__device__ __noinline__ rlo_affine rlo_block_scan_affine(");
    let last_barrier = "    __syncthreads();\n    return v;\n}\n";
    assert!(block.ends_with(last_barrier), "block scan changed: {block}");
    let block = format!(
        "{}    return v;\n}}\n",
        &block[..block.len() - last_barrier.len()]
    );
    let seq = function("template <class X, class D, class S>\n__device__ void rlo_seq_scan(");
    format!("{block}{seq}")
        .replace("rlo_block_scan_affine", "rlo_racy_scan_affine")
        .replace("rlo_seq_scan", "rlo_racy_seq_scan")
        + "#define rlo_seq_scan rlo_racy_seq_scan\n"
}

/// Even seeds: a small ragged batch; odd seeds: 48 sequences of up to 400 tokens (several
/// 4,096-slot tiles of the radix sort and select).
pub fn small_or_wide_batch(m: &Module, seed: u64) -> Batch {
    if seed.is_multiple_of(2) {
        small_batch(m, seed)
    } else {
        wide_batch(m, seed, 48, 400)
    }
}
