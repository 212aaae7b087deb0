//! Global-memory traffic of the generated CUDA per valid token (the model of
//! `compiler/src/back/cuda_traffic.rs`, read from the generated text), for every stdlib objective,
//! with and without seq-local fusion and recomputation. No GPU needed: this is what the token
//! passes move, the quantity a memory-bound kernel's time follows; the GPU benchmark
//! (`bench/gpu.sh`) measures the time.
//!
//! Asserted: fusion and recomputation never add traffic; every stdlib objective except the four
//! listed in [`ABOVE_ROOFLINE`] reads each token input from DRAM once and writes each token root
//! once (model ratio 1.00); the two-pass objectives whose second pass needs only per-sequence
//! values (GSPO, GMPO, …) run as one token kernel. `cargo test -p rlo-tests --test cuda_traffic
//! -- --nocapture` prints the table (BENCHMARKS.md).

use rlo_compiler::back::cuda::{
    emit, CudaOptions, CudaProgram, Grid, StorageType, TokLayout, Traffic,
};
use rlo_compiler::Compiled;

/// Objectives whose schedule needs a batch- or group-level value of token results between
/// passes (PPO and REINFORCE++: batch whitening of token advantages, two passes; clip_cov and
/// kl_cov: the batch covariance of token values, then token ranks in one-block kernels). ROVER's
/// `seq_next(value − old_value)` is a gather at the next token (1.00×; as a scan, with its
/// argument and result stored and re-read: 1.60×).
const ABOVE_ROOFLINE: [&str; 4] = ["clip_cov", "kl_cov", "ppo", "reinforce_pp"];

/// Two-pass objectives whose passes fuse into one token kernel.
const FUSED: [&str; 4] = ["gmpo", "gspo", "gspo_token", "vespo"];

fn compile(name: &str) -> Compiled {
    rlo_tests::compile_stdlib(name).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn program(c: &Compiled, layout: TokLayout, tok_dtype: StorageType, plain: bool) -> CudaProgram {
    let o = CudaOptions {
        layout,
        tok_dtype,
        disable_fusion: plain,
        disable_remat: plain,
        ..Default::default()
    };
    emit(&c.module, &c.schedule, &o).unwrap_or_else(|e| panic!("{}: {e}", c.module.name))
}

fn moved(t: &Traffic) -> usize {
    t.dram_read() + t.written()
}

fn cell(t: &Traffic) -> String {
    format!(
        "{} + {}{} ({} kernels)",
        t.dram_read(),
        t.written(),
        if t.reread() > 0 {
            format!(" [+{} L2]", t.reread())
        } else {
            String::new()
        },
        t.token_kernels()
    )
}

#[test]
fn stdlib_token_traffic() {
    let names = rlo_tests::stdlib_objective_names();
    assert!(names.len() >= 30, "stdlib objectives not found: {names:?}");
    let mut above = Vec::new();
    println!("| objective | roofline B/token | plain: read + written | fused + recomputed | plain / roofline | now / roofline |");
    println!("|---|---|---|---|---|---|");
    for name in &names {
        let c = compile(name);
        for layout in [TokLayout::Packed, TokLayout::Padded] {
            for dtype in [StorageType::F32, StorageType::Bf16] {
                let plain = program(&c, layout, dtype, true).traffic;
                let now = program(&c, layout, dtype, false).traffic;
                assert_eq!(now.roofline, plain.roofline, "{name}");
                assert!(
                    moved(&now) <= moved(&plain),
                    "{name} {layout:?} {dtype:?}: fusion/recomputation adds traffic: {} vs {}",
                    now.summary(),
                    plain.summary()
                );
                assert!(moved(&now) >= now.roofline, "{name}: below the roofline?");
            }
        }
        let plain = program(&c, TokLayout::Padded, StorageType::F32, true).traffic;
        let now = program(&c, TokLayout::Padded, StorageType::F32, false).traffic;
        if moved(&now) > now.roofline {
            above.push(name.clone());
        }
        println!(
            "| {name} | {} | {} | {} | {:.2} | {:.2} |",
            now.roofline,
            cell(&plain),
            cell(&now),
            plain.ratio(),
            now.ratio()
        );
        if FUSED.contains(&name.as_str()) {
            let p = program(&c, TokLayout::Padded, StorageType::F32, false);
            let fused: Vec<&str> = p
                .launches
                .iter()
                .filter(|l| l.threads == rlo_compiler::back::cuda::FUSED_THREADS)
                .filter(|l| l.grid == rlo_compiler::back::cuda::Grid::PerSequence)
                .map(|l| l.kernel.as_str())
                .collect();
            assert_eq!(
                fused.len(),
                1,
                "{name}: expected one fused kernel: {fused:?}"
            );
            assert!(
                plain.token_kernels() > now.token_kernels(),
                "{name}: fusion did not remove a token kernel"
            );
        }
    }
    assert_eq!(
        above, ABOVE_ROOFLINE,
        "the objectives above the traffic roofline changed"
    );
}

/// The scheduler moves a metric's reductions to the pass that reads their inputs anyway (PPO's
/// approx_kl and ratio_mean join the loss pass: 2.17 -> 1.83 of the roofline), and only then:
/// ORPO's NLL sum stays in the pass that reads `logp` (moving it to the gradient pass, which
/// does not, would add a sweep over `logp`).
#[test]
fn metrics_join_the_pass_that_reads_their_inputs() {
    let ratio = |name: &str| {
        let c = compile(name);
        program(&c, TokLayout::Padded, StorageType::F32, false).traffic
    };
    let ppo = ratio("ppo");
    assert!(ppo.ratio() < 1.9, "ppo: {}", ppo.summary());
    for name in ["orpo", "simpo"] {
        let t = ratio(name);
        assert!(
            t.ratio() <= 1.0 && t.reread() == 0,
            "{name}: {}",
            t.summary()
        );
    }
}

/// No stdlib objective has a one-block kernel that walks the batch's tokens (one SM doing a
/// whole pass: the byte counts do not show it). The batch ranks of clip_cov/kl_cov did, before
/// the radix sort: with `disable_sort` the check finds them.
#[test]
fn no_one_block_token_kernels() {
    for name in &rlo_tests::stdlib_objective_names() {
        let c = compile(name);
        for layout in [TokLayout::Packed, TokLayout::Padded] {
            let t = program(&c, layout, StorageType::F32, false).traffic;
            assert!(
                t.one_block_token_kernels.is_empty(),
                "{name} {layout:?}: one block walks the tokens in {:?}",
                t.one_block_token_kernels
            );
        }
    }
    let c = compile("clip_cov");
    let o = CudaOptions {
        layout: TokLayout::Padded,
        disable_sort: true,
        ..Default::default()
    };
    let p = emit(&c.module, &c.schedule, &o).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        !p.traffic.one_block_token_kernels.is_empty(),
        "the O(n²) one-block rank of clip_cov is not detected"
    );
}

/// A normalizer summing a function of `pos` (`batch_sum(position_discount(γ))`) was computed,
/// stored and summed by the one-block prologue kernel; the backend now runs such prologue token
/// work as a per-sequence pass of its own.
#[test]
fn structural_token_sums_run_per_sequence() {
    let text = "use std::agg::position_discount
objective pd() {
    input logp: tok diff
    loss batch_sum(logp * position_discount(0.99)) / batch_sum(position_discount(0.99))
}
";
    let c = rlo_compiler::compile("pd.rlo", text, &rlo_compiler::Options::default())
        .unwrap_or_else(|f| panic!("{}", f.render(false)));
    for layout in [TokLayout::Packed, TokLayout::Padded] {
        let t = program(&c, layout, StorageType::F32, false).traffic;
        assert!(
            t.one_block_token_kernels.is_empty() && t.ratio() <= 1.0,
            "{layout:?}: {}",
            t.summary()
        );
    }
}

/// One-block kernels are latency, not bandwidth: every launch and every barrier between
/// dependent loops costs a global-memory round trip while the GPU idles. Adjacent one-block
/// kernels run as one launch; inside, batch values live in registers and loops of one level
/// run together, so barriers are left only where a loop reads what another thread stored.
#[test]
fn one_block_kernels_are_few_and_short() {
    let (mut launches, mut barriers, mut combines) = (0, 0, 0);
    for name in &rlo_tests::stdlib_objective_names() {
        let c = compile(name);
        let p = program(&c, TokLayout::Packed, StorageType::F32, false);
        let single = |k: &str| {
            p.launches
                .iter()
                .any(|l| l.kernel == k && l.grid == Grid::Single)
        };
        for w in p.launches.windows(2) {
            let small = |k: &str| {
                k.ends_with("_fin") || k.rsplit('_').next().is_some_and(|s| s.starts_with('s'))
            };
            assert!(
                !(single(&w[0].kernel)
                    && single(&w[1].kernel)
                    && small(&w[0].kernel)
                    && small(&w[1].kernel)),
                "{name}: {} and {} are adjacent one-block launches",
                w[0].kernel,
                w[1].kernel
            );
        }
        let mut per_kernel = Vec::new();
        for k in p.kernel_text.iter().filter(|k| single(&k.name)) {
            let text = &p.source[k.range.clone()];
            let n = text.matches("\n    __syncthreads();").count();
            // block-wide combines (each a round of barriers inside the helper)
            let c: usize = [
                "rlo_block_sum(",
                "rlo_block_max(",
                "rlo_block_min(",
                "rlo_block_reduce_n(",
            ]
            .iter()
            .map(|f| text.matches(f).count())
            .sum();
            per_kernel.push(format!("{} {n} ({c} combines)", k.name));
            barriers += n;
            combines += c;
        }
        launches += p.launches.len();
        eprintln!(
            "{name:<14} {:2} launches; barriers: {}",
            p.launches.len(),
            per_kernel.join(", ")
        );
    }
    eprintln!(
        "stdlib: {launches} launches, {barriers} barriers and {combines} block combines in one-block kernels"
    );
    // before one-launch merging and register batch values (aa6c2b7, 31 objectives then, 32
    // with rover now): 213 launches, 695 barriers; before multi-value combines: 236 combines
    assert!(
        launches <= 175 && barriers <= 130 && combines <= 86,
        "{launches} launches, {barriers} barriers, {combines} block combines"
    );
    // grpo's first kernel: group mean → centred reward → group std → normalized advantage
    let p = program(&compile("grpo"), TokLayout::Packed, StorageType::F32, false);
    let s0 = p
        .kernel_text
        .iter()
        .find(|k| k.name == "rlo_grpo_s0")
        .expect("s0");
    let n = p.source[s0.range.clone()]
        .matches("\n    __syncthreads();")
        .count();
    assert!(n <= 3, "grpo's first small kernel has {n} barriers");
}

/// A scan whose argument is an elementwise function of inputs and finished values recomputes it
/// in its load (`Plan::scan_inline`) instead of a sweep storing it first: GAE's δ_t (ppo) and
/// REINFORCE++'s last-token reward are no longer written and read back (4 + 4 B/token).
#[test]
fn scan_arguments_are_recomputed_in_the_load() {
    for (name, want) in [("ppo", 1.6), ("reinforce_pp", 1.8)] {
        let c = compile(name);
        let fused = program(&c, TokLayout::Padded, StorageType::F32, false);
        let plain = program(&c, TokLayout::Padded, StorageType::F32, true);
        let (t, tp) = (&fused.traffic, &plain.traffic);
        assert!(
            t.written() + 4 <= tp.written() && t.ratio() <= want + 1e-9,
            "{name}: {} (plain: {})",
            t.summary(),
            tp.summary()
        );
        assert!(
            fused.source.contains(
                "RLO_LEN(s), [&](long long t) -> float { const long long i = RLO_TOK(s, t); const "
            ),
            "{name}: no scan recomputes its argument"
        );
    }
}

/// Token work left in a small stage (a function of `pos` or of values finished before, a
/// per-position group reduction of an input or of an earlier pass's values) runs as a token
/// pass of its own, as often as a chain of them needs (`fuse::token_work_passes`): a one-block
/// kernel walking the batch's tokens is one SM doing a whole pass. A process-reward objective:
/// returns of per-token rewards, a per-position group baseline, and a metric of a group
/// advantage weighted by position (before: one block walked the tokens twice, 4.00x).
#[test]
fn small_stage_token_work_runs_per_sequence() {
    let text = "use std::adv::grpo_adv
use std::agg::position_discount
objective prm(eps: f32 = 0.2) {
    input logp: tok diff
    input old_logp: tok
    input tok_reward: tok
    input reward: seq
    let ret = seq_revcumsum(tok_reward)
    let adv = ret - group_pos_mean(ret)
    let ratio = exp(logp - old_logp)
    loss batch_mean(-min(ratio * adv, clamp(ratio, 1 - eps, 1 + eps) * adv))
    metric adv_mean = batch_mean(adv)
    metric discounted_outcome = batch_mean(grpo_adv(reward) * position_discount(0.99))
}
";
    let c = rlo_compiler::compile("prm.rlo", text, &rlo_compiler::Options::default())
        .unwrap_or_else(|f| panic!("{}", f.render(false)));
    for layout in [TokLayout::Packed, TokLayout::Padded] {
        let t = program(&c, layout, StorageType::F32, false).traffic;
        assert!(
            t.one_block_token_kernels.is_empty() && t.ratio() <= 2.67 + 1e-9,
            "{layout:?}: {}",
            t.summary()
        );
    }
    // random programs: 1,000 seeds of the generator the emulator uses
    let mut walking = 0;
    for seed in 0..1000u64 {
        let (m, _) = rlo_tests::seeded_module(seed);
        let (m, s) = rlo_tests::compile_module(m).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        let o = CudaOptions {
            layout: TokLayout::Padded,
            ..Default::default()
        };
        let p = emit(&m, &s, &o).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        walking += usize::from(!p.traffic.one_block_token_kernels.is_empty());
    }
    eprintln!("{walking} of 1000 random programs have a one-block kernel walking tokens");
    // 331 before small stages were split beyond the first (chains of them, per-position
    // reductions, token ranks within groups) and order statistics of token values got kernels
    // of their own wherever they are (small stages, fin kernels, between fused passes); what
    // remains: token work reading such a statistic of the same stage
    assert!(
        walking <= 10,
        "{walking} of 1000 random programs walk tokens in one block"
    );
}

/// A group quantile of token values (per-group top-entropy tokens) ran in a one-block kernel
/// looping over the groups, each sweeping its tokens 64 times; now a kernel of its own with one
/// block per group (`rlo_<id>_u<stage>`, `KernelKind::UnitQuantiles`).
#[test]
fn token_quantiles_get_a_block_per_group() {
    let text = "use std::adv::{grpo_adv, per_token}
objective gq(rho: f32 = 0.2) {
    input logp: tok diff
    input old_logp: tok
    input entropy: tok
    input reward: seq
    let keep = entropy >= group_quantile(entropy, 1 - rho)
    let ratio = exp(logp - old_logp)
    loss batch_sum(-ratio * per_token(grpo_adv(reward)), where: keep) / max(batch_count(keep), 1)
}
";
    let c = rlo_compiler::compile("gq.rlo", text, &rlo_compiler::Options::default())
        .unwrap_or_else(|f| panic!("{}", f.render(false)));
    for layout in [TokLayout::Packed, TokLayout::Padded] {
        let p = program(&c, layout, StorageType::F32, false);
        assert!(
            p.traffic.one_block_token_kernels.is_empty() && p.traffic.ratio() <= 1.25 + 1e-9,
            "{layout:?}: {}",
            p.traffic.summary()
        );
        assert!(
            p.launches
                .iter()
                .any(|l| l.kernel.starts_with("rlo_gq_u") && l.grid == Grid::PerSequence),
            "{layout:?}: no per-unit quantile kernel"
        );
    }
}
