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
//! `scale` the largest magnitude of the vector (at least 1). Where f32 cannot meet that (an
//! ill-conditioned value; a metric or output that depends on a comparison, where f32 rounding
//! may flip `a > b` at an exact tie of the f64 interpreter) the value must agree with the f32
//! CPU backend instead; the tests print those cases and bound their number.

#[path = "cuda_emu/check.rs"]
mod check;
#[path = "cuda_emu/runner.rs"]
mod runner;

use check::*;
use rlo_compiler::back::cuda::{
    emit, CudaOptions, CudaProgram, Grid, StorageType, TokLayout, FUSED_THREADS,
};
use rlo_compiler::{Compiled, Module};
use runner::{EmuLib, Order, RunOpts};

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

/// Every stdlib objective (`rlo_tests::stdlib_objective_names`), compiled.
fn stdlib_objectives() -> Vec<(String, Compiled)> {
    rlo_tests::stdlib_objective_names()
        .into_iter()
        .map(|name| {
            let path = rlo_tests::stdlib_dir().join(format!("{name}.rlo"));
            let text = std::fs::read_to_string(&path).expect("read");
            let c = rlo_compiler::compile(
                &format!("stdlib/{name}.rlo"),
                &text,
                &rlo_compiler::Options::default(),
            )
            .unwrap_or_else(|f| panic!("{name}: {}", f.render(false)));
            (name, c)
        })
        .collect()
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

/// A block sum that also reads a shared array no thread has written (0 × garbage: 0 on most
/// garbage, NaN on the emulator's 0xff fill).
const UNINIT_SHARED: &str = "
__device__ float rlo_uninit_block_sum(float v) {
    __shared__ float junk[4];
    return rlo_block_reduce<rlo_op_sum>(v) + 0.0f * junk[1];
}
#define rlo_block_sum rlo_uninit_block_sum
";

/// The emulator's own checks bite: a removed barrier (a race between barriers), a barrier that
/// one thread skips, an off-by-one write past a buffer, a kernel that reads the padding and one
/// that reads shared memory nobody wrote are each reported.
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
                "        ctx.v30[g] = e30;\n    }\n    __syncthreads();",
                "        ctx.v30[g] = e30;\n    }\n",
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
        (
            "read of shared memory never written",
            {
                let mut p = good.clone();
                p.source = format!("{UNINIT_SHARED}\n{}", p.source);
                p
            },
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
    let (mut runs, mut via_cpu, mut flipped) = (0usize, Vec::new(), Vec::new());
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
                Ok(Agreement::TieFlipped) => flipped.push(format!("{case} params {params:?}")),
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
    eprintln!(
        "{} cases where a discontinuous metric/output decides an f32 tie otherwise than f64 (as the f32 cpu backend does):\n  {}",
        flipped.len(),
        flipped.join("\n  ")
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        (via_cpu.len() + flipped.len()) * 50 <= runs,
        "too many cases settled by the cpu backend: {} + {}",
        via_cpu.len(),
        flipped.len()
    );
}

/// Random well-typed programs (`rlo_tests::random_module`: every primitive at every level, ranks,
/// quantiles, scans, per-position reductions, turns) through autodiff and the real scheduler;
/// packed and padded, f32 and 16-bit token inputs; each on a ragged layout with turns, on one
/// with sequences longer than a block, on up to 80 sequences (more than a 32-thread block) and on
/// inputs with ties and signed zeros, in three thread orders (every tenth program also with the
/// runtime's 256/1024-thread blocks). `RLO_EMU_CASES` sets the number
/// of programs (default 240).
#[test]
fn random_programs_match_the_interpreter() {
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
    let (mut fused, mut recomputed, mut gathered, mut inline) = (0usize, 0usize, 0usize, 0usize);
    // the first `n` seeds, then seeds whose program fuses passes (rare among random programs:
    // ≈ 1.5%) until `n / 6` more are found, so fusion gets as many cases as a stdlib
    let want_fused = n as usize / 6;
    let mut extra = 0usize;
    let mut seed = 0u64;
    while seed < n || (extra < want_fused && seed < n + 200 * n) {
        let (m, rng) = rlo_tests::seeded_module(seed);
        let (m, s) = rlo_tests::compile_module(m).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        let layout = if seed.is_multiple_of(2) {
            TokLayout::Packed
        } else {
            TokLayout::Padded
        };
        let dtype = match seed % 8 {
            3 => StorageType::Bf16,
            6 => StorageType::F16,
            _ => StorageType::F32,
        };
        // every fifth program keeps one kernel per pass and stores what later passes read,
        // so the plain plan stays tested beside fusion and recomputation
        let plain = seed % 5 == 4 && seed < n;
        let o = CudaOptions {
            disable_fusion: plain,
            disable_remat: plain,
            ..opts(layout, dtype)
        };
        let p = emit(&m, &s, &o).unwrap_or_else(|e| panic!("seed {seed}: CUDA emit failed: {e}"));
        let is_fused = p
            .launches
            .iter()
            .any(|l| l.grid == Grid::PerSequence && l.threads == FUSED_THREADS);
        seed += 1;
        if seed > n {
            if !is_fused {
                continue;
            }
            extra += 1;
        }
        fused += usize::from(is_fused);
        recomputed += usize::from(p.source.contains("/* recomputed */"));
        // seq_next / seq_prev computed per token at the neighbour (`gather_expr`)
        gathered += usize::from(p.source.contains("? [&](long long t) -> float {"));
        // scans whose load recomputes the argument (`Plan::scan_inline`)
        inline += usize::from(p.source.contains(
            "RLO_LEN(s), [&](long long t) -> float { const long long i = RLO_TOK(s, t); const ",
        ));
        programs.push(p);
        mods.push((m, s, rng));
    }
    eprintln!(
        "random programs: {} ({fused} with fused passes, searched {seed} seeds), {recomputed} recompute token values, {gathered} gather a shift, {inline} recompute a scan's argument",
        programs.len()
    );
    assert!(
        fused >= want_fused
            && recomputed * 20 >= n as usize
            && gathered * 50 >= n as usize
            && inline * 50 >= n as usize,
        "too few programs exercise fusion ({fused}), recomputation ({recomputed}), shift gathers ({gathered}) or inline scans ({inline})"
    );
    let per_lib = 60;
    let (libs, gpp) = build_all(&programs, per_lib);
    let t_built = t0.elapsed().as_secs_f64();
    let mut failures = Vec::new();
    let (mut via_cpu, mut runs, mut flipped) = (0usize, 0usize, 0usize);
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
        let wide = rlo_tests::random_layout(
            rng,
            rlo_tests::LayoutSpec {
                max_groups: 16,
                max_group_size: 5,
                ..Default::default()
            },
        );
        let ties = ragged.clone();
        let layouts = [
            ("ragged", ragged),
            ("long", long),
            ("wide", wide),
            ("ties", ties),
        ];
        for (what, layout) in layouts {
            let mut b = rlo_tests::random_batch(m, &layout, rng);
            if what == "ties" {
                coarsen(m, &mut b);
            }
            let o = small_blocks(RunOpts {
                seed: j as u64,
                null_tok_turn: j % 3 == 0,
                ..RunOpts::default()
            });
            // every tenth program also with the runtime's block sizes (256 / 1024 threads)
            let full = what == "long" && j % 10 == 0;
            let (o, orders) = if full {
                (
                    RunOpts {
                        order: Order::Ascending,
                        ..RunOpts::default()
                    },
                    &ALL_ORDERS[..2],
                )
            } else {
                (o, &ALL_ORDERS[..])
            };
            runs += orders.len();
            match check(&pr, &b, &params, o, orders) {
                Ok(Agreement::Interpreter) => {}
                Ok(Agreement::CpuF32) => via_cpu += 1,
                Ok(Agreement::TieFlipped) => flipped += 1,
                Err(e) => failures.push(format!(
                    "seed {j} {:?} {:?} {what}: {e}",
                    p.layout, p.tok_dtype
                )),
            }
        }
    }
    eprintln!(
        "cuda emulator: {} random programs, {runs} runs; g++ {gpp:.1} s (cpu), built after {t_built:.1} s, total {:.1} s; {via_cpu} agree with the f32 cpu backend only, {flipped} with a tie decided otherwise in f32",
        programs.len(),
        t0.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{} of {} programs disagree:\n{}",
        failures.len(),
        programs.len(),
        failures.join("\n")
    );
    assert!(
        (via_cpu + flipped) * 20 <= n as usize,
        "{via_cpu} + {flipped} cases settled by the cpu backend"
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
    source_matches_interpreter("turn_weight.rlo", text, &small_batch);
}

/// `floor`, `ceil`, `round` (`floorf`, `ceilf`, `rintf`) on ties, signed zeros and large values.
#[test]
fn rounding_builtins() {
    if !emulator_or_skip("rounding builtins") {
        return;
    }
    let text = "
objective rounding() {
    input x: tok diff
    loss batch_sum(x * floor(x) + 2 * ceil(x) + round(x) * x)
    output f = floor(x)
    output c = ceil(x)
    output r = round(x)
}
";
    let xs = [
        -2.5, -1.5, -0.5, -0.0, 0.0, 0.5, 1.5, 2.5, 3.5, -3.75, 3.75, 1.0, -1.0, 123456.5,
        -123456.5, 0.25, 0.001, -0.001, 8388607.5,
    ];
    let batch = |m: &Module, seed: u64| {
        let mut b = small_batch(m, seed);
        for v in b.values.values_mut() {
            for (i, x) in v.iter_mut().enumerate() {
                *x = xs[(i + seed as usize) % xs.len()];
            }
        }
        b
    };
    source_matches_interpreter("rounding.rlo", text, &batch);
}

/// Batch ranks of token values go through the multi-block radix sort (`Grid::Tiles` launches):
/// heavy ties (rounded values, `-0` and `+0`), batches of one tile and of several (> 4096
/// slots), blocks capped at 64 threads, packed and padded.
#[test]
fn batch_ranks_by_radix_sort() {
    if !emulator_or_skip("batch ranks") {
        return;
    }
    let text = "
objective ranks() {
    input x: tok diff
    input y: tok
    let r = batch_rank(x)
    loss batch_sum(x * r) / max(num_tokens, 1)
    output r = r
    output ties = batch_rank(round(y * 4))
    metric top3 = batch_mean(batch_rank(-x) < 3)
}
";
    let c = rlo_compiler::compile("ranks.rlo", text, &rlo_compiler::Options::default())
        .unwrap_or_else(|f| panic!("{}", f.render(false)));
    let p = emit(
        &c.module,
        &c.schedule,
        &opts(TokLayout::Padded, StorageType::F32),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let tiles = p.launches.iter().filter(|l| l.grid == Grid::Tiles).count();
    assert_eq!(tiles, 3 * 17, "three ranks, 17 tile launches each: {tiles}");
    let batch = |m: &Module, seed: u64| {
        let mut b = small_or_wide_batch(m, seed);
        if let Some(y) = b.values.get_mut("y") {
            for (i, v) in y.iter_mut().enumerate() {
                // about half exact ties, some -0.0 (round(-0.1 * 4)) next to +0.0
                if i % 3 == 0 {
                    *v = -0.1 * (i % 2) as f64;
                }
            }
        }
        b
    };
    source_matches_interpreter("ranks.rlo", text, &batch);
}

/// Batch quantiles of token values go through the multi-block radix select (`Grid::Tiles`):
/// q at 0, 1 and between order statistics, filters (one that keeps nothing: 0), heavy ties,
/// a quantile of a computed token value, one tile and several.
#[test]
fn batch_quantiles_by_radix_select() {
    if !emulator_or_skip("batch quantiles") {
        return;
    }
    let text = "
objective quants(q: f32 = 0.37) {
    input x: tok diff
    input y: tok
    let m = batch_quantile(x, q)
    loss batch_sum(where(x > m, x, 0)) / max(num_tokens, 1)
    metric q0 = batch_quantile(round(y * 4), 0)
    metric q1 = batch_quantile(y, 1)
    metric mid = batch_quantile(exp(y) - x, 0.5, where: y > 0)
    metric none = batch_quantile(x, 0.5, where: y > 100)
    metric ties = batch_quantile(round(y * 4), 0.61)
}
";
    let c = rlo_compiler::compile("quants.rlo", text, &rlo_compiler::Options::default())
        .unwrap_or_else(|f| panic!("{}", f.render(false)));
    let p = emit(
        &c.module,
        &c.schedule,
        &opts(TokLayout::Padded, StorageType::F32),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let tiles = p.launches.iter().filter(|l| l.grid == Grid::Tiles).count();
    assert!(
        tiles >= 6 * 8,
        "six batch quantiles, 8 tile launches each: {tiles}"
    );
    source_matches_interpreter("quants.rlo", text, &small_or_wide_batch);
}

/// Structural token sums (functions of `pos`) in a per-sequence prologue pass of their own.
#[test]
fn structural_token_sums_in_a_prologue_pass() {
    if !emulator_or_skip("prologue pass") {
        return;
    }
    let text = "use std::agg::position_discount
objective pd(gamma: f32 = 0.99) {
    input logp: tok diff
    input r: seq
    let w = position_discount(gamma)
    loss batch_sum(logp * w * r) / batch_sum(w)
    metric mean_pos = batch_sum(pos) / max(num_tokens, 1)
}
";
    source_matches_interpreter("pd.rlo", text, &small_or_wide_batch);
}

/// Token work of later small stages as passes of their own (`fuse::token_work_passes`): a
/// per-position group baseline of returns (a pass after the scan's), a position-weighted
/// metric of a group advantage, a chain (a token value needing a token sum of the pass
/// before), a group rank of sequence values (before the pass) and one of token values (in it),
/// and a filtered group quantile of token values (a kernel with one block per group).
#[test]
fn small_stage_token_work_in_passes() {
    if !emulator_or_skip("small-stage passes") {
        return;
    }
    let text = "use std::adv::{grpo_adv, per_token}
use std::agg::position_discount
objective prm(eps: f32 = 0.2) {
    input logp: tok diff
    input old_logp: tok
    input tok_reward: tok
    input reward: seq
    let ret = seq_revcumsum(tok_reward)
    let adv = ret - group_pos_mean(ret)
    let ratio = exp(logp - old_logp)
    let w = position_discount(0.9) * per_token(grpo_adv(reward))
    let w2 = w - batch_sum(w) / max(num_tokens, 1)
    let rk = group_rank(tok_reward) / max(group_sum(seq_len), 1)
    loss batch_mean(-min(ratio * adv, clamp(ratio, 1 - eps, 1 + eps) * adv) + logp * (w2 + rk))
    metric adv_mean = batch_mean(adv)
    metric ranked = batch_sum(square(w2) * group_rank(reward))
    metric top = batch_mean(float(tok_reward >= group_quantile(tok_reward, 0.7, where: tok_reward > 0)))
}
";
    source_matches_interpreter("prm.rlo", text, &small_or_wide_batch);
}

/// A loop carrying more batch reductions than one `rlo_block_reduce_n` call takes (64 values):
/// 40 max reductions (a value and a count each) and 10 sums of one sequence loop, combined in
/// two calls; groups of one and empty sequences in the batches.
#[test]
fn many_batch_reductions_in_one_loop() {
    if !emulator_or_skip("many batch reductions") {
        return;
    }
    let mut text = String::from("objective many() {\n    input logp: tok diff\n    input r: seq\n");
    text.push_str("    loss batch_sum(logp * r) / max(num_tokens, 1)\n");
    for i in 0..40 {
        text.push_str(&format!(
            "    metric mx{i} = batch_max(r * {i} + seq_len)\n"
        ));
    }
    for i in 0..10 {
        text.push_str(&format!("    metric sm{i} = batch_sum(r - {i})\n"));
    }
    text.push_str("}\n");
    let c = rlo_compiler::compile("many.rlo", &text, &rlo_compiler::Options::default())
        .unwrap_or_else(|f| panic!("{}", f.render(false)));
    let p = emit(
        &c.module,
        &c.schedule,
        &opts(TokLayout::Packed, StorageType::F32),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        p.source.matches("rlo_block_reduce_n(").count() >= 2,
        "expected the 90 values in two or more calls:\n{}",
        p.source
    );
    source_matches_interpreter("many.rlo", &text, &small_or_wide_batch);
}

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
    racy.source = format!("{}\n{}", racy_scan(), good.source);
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

/// `rlo_mask_to_len` (the helpers' own kernel, run by the runtime on padded masks): lengths of
/// right-padded masks and the error flag for a mask that is not a prefix, with rows longer than
/// a block, fewer blocks than rows (grid-stride loop), in three thread orders.
#[test]
fn mask_to_len_kernel() {
    use rand::{Rng, SeedableRng};
    if !emulator_or_skip("mask_to_len") {
        return;
    }
    let lib = EmuLib::build(&[]).unwrap_or_else(|e| panic!("{e}"));
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let mut bad_masks = 0;
    for (b, t, grid, block) in [
        (5, 1, 5, 32),
        (9, 31, 4, 32),
        (7, 300, 7, 256),
        (12, 513, 5, 64),
    ] {
        for bad in [false, true] {
            let lengths: Vec<usize> = (0..b)
                .map(|k| match k % 4 {
                    0 => 0,
                    1 => t,
                    _ => rng.random_range(0..=t),
                })
                .collect();
            let mut mask = vec![0f32; b * t];
            for (s, &l) in lengths.iter().enumerate() {
                for x in &mut mask[s * t..s * t + l] {
                    *x = rng.random_range(0.5f32..2.0);
                }
            }
            let hole = lengths.iter().position(|&l| l >= 2 && l < t);
            if bad {
                let Some(s) = hole else { continue };
                bad_masks += 1;
                mask[s * t + lengths[s] / 2] = 0.0; // a padded token before a valid one
            }
            for order in [Order::Ascending, Order::Descending, Order::Random] {
                let (len, err) = lib
                    .mask_to_len(&mask, b, t, grid, block, order)
                    .unwrap_or_else(|e| panic!("b {b} t {t}: {e}"));
                assert_eq!(err, i32::from(bad), "b {b} t {t} bad {bad}: error flag");
                if !bad {
                    let want: Vec<i32> = lengths.iter().map(|&l| l as i32).collect();
                    assert_eq!(len, want, "b {b} t {t}: lengths");
                }
            }
        }
    }
    assert!(bad_masks >= 3, "only {bad_masks} masks with a hole");
}
