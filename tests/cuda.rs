//! CUDA backend tests.
//!
//! - **Compile-only (no GPU)**: the generated CUDA of hand-built modules covering every primitive,
//!   of every stdlib objective and of random programs is compiled to SASS (cubin) by NVRTC, for packed and
//!   padded layouts and f32/bf16/f16 token inputs. NVRTC is the PyPI package
//!   `nvidia-cuda-nvrtc==13.0.88`; its `nvidia/cu13/lib` must be on `LD_LIBRARY_PATH` or in
//!   `RLO_NVRTC_LIB_DIR`. Without it these tests skip with a message on a developer machine and
//!   **fail in CI** (`CI=true`), so a broken CI install cannot pass silently.
//! - The GPU tests (parity with the interpreter, bit-identical repeats) are in `cuda_gpu.rs`.
//! - Snapshots (insta) of the generated `.cu` for grpo and gspo.

use rlo_compiler::back::cuda::{emit, CudaOptions, CudaProgram, StorageType, TokLayout};
use rlo_compiler::ir::{BinaryOp, Expr, IndexKind, Named, ReduceOp, ScanOp};
use rlo_compiler::schedule::Schedule;
use rlo_compiler::{DType, Level};
use rlo_grammar::Span;
use rlo_runtime::cuda::{compile_cubin, compile_cubin_with, full_source, nvrtc_probe};

#[path = "cuda_support.rs"]
#[allow(dead_code)] // each test crate uses part of it
mod support;
use support::{greedy_schedule, kitchen_sink, B};

/// `true` when NVRTC is usable; skips (dev) or panics (CI) otherwise.
fn nvrtc_or_skip(test: &str) -> bool {
    match nvrtc_probe() {
        Ok(()) => true,
        Err(e) => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{test}: NVRTC is required in CI: {e}");
            }
            eprintln!("SKIP {test}: {e}");
            false
        }
    }
}

const ARCH: &str = "sm_90";

fn nvrtc_compile(p: &CudaProgram) {
    let src = full_source(p);
    match compile_cubin(&src, ARCH, &p.ident) {
        // what the driver loads as is: an ELF image of SASS, not PTX for it to compile again
        Ok(cubin) => assert!(cubin.starts_with(b"\x7fELF"), "`{}`: not a cubin", p.ident),
        Err(e) => panic!(
            "NVRTC rejected the generated CUDA of `{}`:\n{e}\n{}",
            p.ident, p.source
        ),
    }
}

/// Every combination of layout and storage type.
fn all_options() -> Vec<CudaOptions> {
    let mut v = Vec::new();
    for layout in [TokLayout::Packed, TokLayout::Padded] {
        for tok_dtype in [StorageType::F32, StorageType::Bf16, StorageType::F16] {
            v.push(CudaOptions {
                layout,
                tok_dtype,
                sources: None,
                ..Default::default()
            });
        }
    }
    v
}

#[test]
fn kitchen_sink_compiles_with_nvrtc_in_every_layout_and_dtype() {
    let (m, s) = kitchen_sink("logp");
    assert!(s.token_passes() >= 2, "the module needs two token passes");
    let progs: Vec<CudaProgram> = all_options()
        .iter()
        .map(|o| emit(&m, &s, o).unwrap_or_else(|e| panic!("emit: {e}")))
        .collect();
    for p in &progs {
        assert!(
            p.launches.len() >= 3,
            "passes, small stages and fin kernels"
        );
        assert!(!p.source.contains("atomic"), "no atomics: deterministic");
    }
    if !nvrtc_or_skip("kitchen_sink") {
        return;
    }
    for p in &progs {
        nvrtc_compile(p);
    }
}

#[test]
fn emitted_text_is_deterministic() {
    let (m, s) = kitchen_sink("logp");
    let o = CudaOptions::default();
    let a = emit(&m, &s, &o).map(|p| p.source);
    let b = emit(&m, &s, &o).map(|p| p.source);
    assert_eq!(a, b);
}

#[test]
fn hostile_input_names_stay_inside_comments() {
    let evil = "x */ #error broken\n int y; /* \u{202e}";
    let (m, s) = kitchen_sink(evil);
    let p = emit(&m, &s, &CudaOptions::default()).unwrap_or_else(|e| panic!("emit: {e}"));
    assert!(!p.source.contains("#error"), "user text escaped a comment");
    assert!(!p.source.contains("x */"), "user text closed a comment");
    assert!(!p.source.contains('\u{202e}'));
    assert!(p.source.contains("in0;"), "inputs are named in0, in1, ...");
    if nvrtc_or_skip("hostile_input_names") {
        nvrtc_compile(&p);
    }
}

/// The runtime compiles an objective's kernels as several NVRTC programs at once: every split
/// compiles, holds each kernel once, and covers every launch.
#[test]
fn kernels_split_into_compile_units() {
    let have_nvrtc = nvrtc_or_skip("compile units");
    for name in ["grpo", "gspo", "clip_cov", "ppo", "dpo"] {
        let c = rlo_tests::compile_stdlib(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        let p = emit(&c.module, &c.schedule, &CudaOptions::default()).expect("emit");
        let all: Vec<&str> = p.kernel_text.iter().map(|k| k.name.as_str()).collect();
        for l in &p.launches {
            assert!(
                all.contains(&l.kernel.as_str()),
                "{name}: {} has no text",
                l.kernel
            );
        }
        // the kernels' texts follow each other, after the preamble
        for w in p.kernel_text.windows(2) {
            assert!(
                w[0].range.end <= w[1].range.start,
                "{name}: overlapping kernels"
            );
        }
        for parts in [1, 2, 3, 64] {
            let units = rlo_runtime::cuda::compile_units(&p, parts);
            assert_eq!(units.len(), parts.min(all.len()), "{name}: {parts} parts");
            let mut names: Vec<&str> = units
                .iter()
                .flat_map(|u| u.0.iter().map(String::as_str))
                .collect();
            names.sort_unstable();
            let mut want = all.clone();
            want.sort_unstable();
            assert_eq!(names, want, "{name}: {parts} parts");
            for (kernels, src) in &units {
                for k in &all {
                    let here = src.contains(&format!(" {k}(const RloCtx"));
                    assert_eq!(here, kernels.iter().any(|x| x == k), "{name}: {k}");
                }
            }
            if have_nvrtc && parts <= 3 {
                let srcs: Vec<&str> = units.iter().map(|u| u.1.as_str()).collect();
                let cubins = rlo_runtime::cuda::compile_cubins(&srcs, ARCH, &p.ident, false)
                    .unwrap_or_else(|e| panic!("{name}: {parts} parts: {e}"));
                assert!(cubins.iter().all(|(c, _)| c.starts_with(b"\x7fELF")));
            }
        }
    }
}

#[test]
fn the_runtime_mask_kernel_compiles_on_its_own() {
    if !nvrtc_or_skip("mask_kernel") {
        return;
    }
    let cubin = compile_cubin(&rlo_runtime::cuda::mask_source(), ARCH, "mask_to_len");
    assert!(cubin.is_ok_and(|c| c.starts_with(b"\x7fELF")));
    // and the objectives' helpers hold no kernel of their own (each would be compiled into
    // every objective's module)
    assert!(!rlo_runtime::cuda::COMMON_CUH.contains("__global__"));
}

#[test]
fn nvrtc_errors_carry_the_log_and_the_source_file() {
    if !nvrtc_or_skip("nvrtc_errors") {
        return;
    }
    let err = compile_cubin(
        "extern \"C\" __global__ void k() { this is not C; }",
        ARCH,
        "bad",
    )
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(err.contains("error"), "log missing: {err}");
    assert!(err.contains(".cu"), "source path missing: {err}");
}

#[test]
fn turn_level_values_compile() {
    let mut b = B::new("turns");
    let x = b.input("turn_reward", Level::Turn, DType::F32, false);
    let logp = b.input("logp", Level::Tok, DType::F32, true);
    let per_turn = b.red(ReduceOp::Sum, logp, Level::Turn, None);
    let ti = b.f(Expr::Index(IndexKind::TurnIndex), Level::Turn);
    let y = b.bin(BinaryOp::Mul, x, per_turn);
    let y = b.bin(BinaryOp::Add, y, ti);
    let ret = b.f(
        Expr::Scan {
            op: ScanOp::RevCumSum,
            arg: y,
            discount: None,
        },
        Level::Turn,
    );
    let seq = b.red(ReduceOp::Max, ret, Level::Seq, None);
    let grp = b.red(ReduceOp::Sum, ret, Level::Group, None);
    let q = b.c(0.5);
    let qs = b.f(
        Expr::Quantile {
            arg: ret,
            q,
            to: Level::Seq,
            filter: None,
        },
        Level::Seq,
    );
    let w = b.bin(BinaryOp::Mul, logp, ret);
    let w = b.bin(BinaryOp::Add, w, qs);
    let tok_sum = b.red(ReduceOp::Sum, w, Level::Batch, None);
    let s1 = b.red(ReduceOp::Sum, seq, Level::Batch, None);
    let s2 = b.red(ReduceOp::Sum, grp, Level::Batch, None);
    let l = b.bin(BinaryOp::Add, tok_sum, s1);
    let l = b.bin(BinaryOp::Add, l, s2);
    b.m.outputs.push(Named {
        name: "ret".into(),
        value: ret,
        span: Span::default(),
    });
    let (m, sch) = b.finish(l);
    let progs: Vec<CudaProgram> = all_options()
        .iter()
        .map(|o| emit(&m, &sch, o).unwrap_or_else(|e| panic!("emit: {e}")))
        .collect();
    assert!(
        progs[0].source.contains("RLO_TURN("),
        "tokens read turn values"
    );
    if nvrtc_or_skip("turn values") {
        for p in &progs {
            nvrtc_compile(p);
        }
    }
}

/// The schedule of a compiled objective; until the compiler's scheduler lands (empty schedule),
/// the greedy test scheduler stands in.
fn schedule_of(c: &rlo_compiler::Compiled) -> Schedule {
    if c.schedule.stages.is_empty() {
        greedy_schedule(&c.module)
    } else {
        c.schedule.clone()
    }
}

#[test]
fn every_stdlib_objective_compiles_with_nvrtc() {
    let names = rlo_tests::stdlib_objective_names();
    assert!(!names.is_empty(), "no stdlib objectives found");
    let have_nvrtc = nvrtc_or_skip("stdlib objectives");
    let (mut front_failed, mut compiled) = (Vec::new(), Vec::new());
    // parse → IR → schedule, emit, NVRTC → cubin (ms; this test's debug build of the compiler)
    let mut times: Vec<(String, f64, f64, f64)> = Vec::new();
    for name in &names {
        let t0 = std::time::Instant::now();
        let c = match rlo_tests::compile_stdlib(name) {
            Ok(c) => c,
            Err(e) => {
                front_failed.push(format!("{name}: {}", e.lines().next().unwrap_or("")));
                continue;
            }
        };
        let s = schedule_of(&c);
        let opts = CudaOptions {
            sources: Some(c.sources.clone()),
            ..CudaOptions::default()
        };
        let front_ms = t0.elapsed().as_secs_f64() * 1e3;
        let t1 = std::time::Instant::now();
        match emit(&c.module, &s, &opts) {
            Ok(p) => {
                let emit_ms = t1.elapsed().as_secs_f64() * 1e3;
                assert!(p.source.contains(&format!("rlo_{}_", p.ident)));
                if let Ok(dir) = std::env::var("RLO_DUMP_CU") {
                    let _ = std::fs::write(format!("{dir}/{name}.cu"), &p.source);
                }
                if have_nvrtc {
                    let t2 = std::time::Instant::now();
                    nvrtc_compile(&p);
                    let nvrtc_ms = t2.elapsed().as_secs_f64() * 1e3;
                    times.push((name.clone(), front_ms, emit_ms, nvrtc_ms));
                    if ["grpo", "dapo", "gspo"].contains(&name.as_str()) {
                        // the same with --Ofast-compile=max (RLO_NVRTC_FAST_COMPILE=1)
                        let mut o = rlo_runtime::cuda::nvrtc_options(ARCH);
                        o.push("--Ofast-compile=max".into());
                        let t3 = std::time::Instant::now();
                        let fast = compile_cubin_with(&full_source(&p), ARCH, &p.ident, &o);
                        assert!(fast.is_ok(), "{name}: --Ofast-compile=max: {fast:?}");
                        let ms = t3.elapsed().as_secs_f64() * 1e3;
                        times.push((format!("{name} (fast)"), front_ms, emit_ms, ms));
                        // what the runtime does: the kernels split into units compiled at once
                        let n = rlo_runtime::cuda::compile_threads();
                        let units = rlo_runtime::cuda::compile_units(&p, n);
                        let srcs: Vec<&str> = units.iter().map(|u| u.1.as_str()).collect();
                        let t4 = std::time::Instant::now();
                        let r = rlo_runtime::cuda::compile_cubins(&srcs, ARCH, &p.ident, false);
                        assert!(r.is_ok(), "{name}: units: {r:?}");
                        let ms = t4.elapsed().as_secs_f64() * 1e3;
                        let label = format!("{name} ({}‖)", units.len());
                        times.push((label, front_ms, emit_ms, ms));
                    }
                }
                compiled.push(name.clone());
            }
            Err(e) => panic!(
                "{name}: CUDA emit failed at {}: {e}",
                c.sources.location(e.span)
            ),
        }
    }
    for (name, f, e, n) in &times {
        eprintln!(
            "compile {name:<14} front+schedule {f:7.1} ms  emit {e:6.1} ms  NVRTC {n:7.1} ms"
        );
    }
    eprintln!(
        "stdlib: {} objectives compiled to cubins{}: {compiled:?}\nnot compiled by the front end: {front_failed:#?}",
        compiled.len(),
        if have_nvrtc { "" } else { " (emit only, no NVRTC)" }
    );
    for must in ["grpo", "dapo", "gspo"] {
        let front_ok = !front_failed
            .iter()
            .any(|f| f.starts_with(&format!("{must}:")));
        if front_ok {
            assert!(compiled.iter().any(|c| c == must), "{must} did not compile");
        }
    }
}

fn snapshot_source(name: &str) -> Option<String> {
    let c = match rlo_tests::compile_stdlib(name) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("SKIP snapshot {name}: the front end does not compile it yet:\n{e}");
            return None;
        }
    };
    let opts = CudaOptions {
        sources: Some(c.sources.clone()),
        layout: TokLayout::Padded,
        tok_dtype: StorageType::F32,
        ..Default::default()
    };
    let p = emit(&c.module, &schedule_of(&c), &opts).unwrap_or_else(|e| panic!("{name}: {e}"));
    Some(p.source)
}

#[test]
fn grpo_cuda_snapshot() {
    if let Some(src) = snapshot_source("grpo") {
        insta::assert_snapshot!("grpo_padded_f32.cu", src);
    }
}

#[test]
fn gspo_cuda_snapshot() {
    if let Some(src) = snapshot_source("gspo") {
        insta::assert_snapshot!("gspo_padded_f32.cu", src);
    }
}

/// Random well-typed programs (the IR work's generator, every primitive at every level), through
/// autodiff, simplify and the real scheduler, then emit + NVRTC.
#[test]
fn random_programs_compile_with_nvrtc() {
    use rand::SeedableRng;
    let have_nvrtc = nvrtc_or_skip("random programs");
    let mut compiled = 0usize;
    let mut seed = 0u64;
    while seed < 24 {
        seed += 1;
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let m = rlo_tests::random_module(
            &mut rng,
            rlo_tests::ModuleSpec {
                steps: 12,
                detach: true,
            },
        );
        let (m, s) = rlo_tests::compile_module(m).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        let opts = if seed.is_multiple_of(2) {
            CudaOptions::default()
        } else {
            CudaOptions {
                layout: TokLayout::Padded,
                tok_dtype: StorageType::Bf16,
                sources: None,
                ..Default::default()
            }
        };
        match emit(&m, &s, &opts) {
            Ok(p) => {
                if have_nvrtc {
                    nvrtc_compile(&p);
                }
                compiled += 1;
            }
            Err(e) => panic!("seed {seed}: CUDA emit failed: {e}"),
        }
    }
    eprintln!("random programs: {compiled} compiled to cubins");
    assert_eq!(compiled, 24);
}
