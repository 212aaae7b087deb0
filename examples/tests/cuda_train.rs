//! The CUDA path of the training example (feature `cuda`; build with `examples/build_cuda.sh cargo
//! test -p rlo-examples --features cuda --release`).
//!
//! - Everywhere: opening a CUDA device where there is no driver is an error, not a panic; the CUDA
//!   loss refuses a CPU device; NVRTC compiles the programs `CudaLoss` emits (padded and packed
//!   tokens, f32 and bf16) — skipped with a message when NVRTC is not found.
//! - On a GPU (skipped with a message, never passed, where none can be opened): the weight
//!   gradients of the tiny policy through the CUDA op equal those through the interpreter op
//!   (L2 per weight tensor: 1e-5 relative on the same GPU model; 1e-4 against the CPU model,
//!   whose candle forward pass differs slightly from cuBLAS);
//!   the packed path (holes in the mask) and bf16 inputs agree with the interpreter; a few
//!   training steps run with GPU loss timings.
#![cfg(feature = "cuda")]
#![allow(clippy::unwrap_used)]

use candle_core::{DType, Device, Tensor, Var};
use rand::rngs::StdRng;
use rand::SeedableRng;
use rlo_compiler::back::cuda::{emit, CudaOptions, StorageType, TokLayout};
use rlo_runtime::candle::cuda::{cuda_device, CudaLoss};
use rlo_runtime::candle::{rlo_loss, token_logp, token_logp_entropy, Input, TokenLayout};
use rlo_runtime::{Backend, Objective};
use rlo_train::loss::{LossInputs, PolicyLoss, RloObjective};
use rlo_train::rollout::{self, completion_logits, Rollouts};
use rlo_train::task::RewardKind;
use rlo_train::trainer::{snapshot, TrainConfig, Trainer};

/// GRPO with the k3 penalty (as in `smoke.rs`) plus an entropy bonus, so both diff inputs and
/// a metric go through the op.
const GRPO: &str = r#"
fn k3(logp, ref_logp) {
    let d = ref_logp - logp
    exp(d) - d - 1
}

objective grpo(eps: f32 = 0.2, beta: f32 = 0.04, ent: f32 = 0.01) {
    input logp: tok diff
    input entropy: tok diff
    input old_logp: tok
    input ref_logp: tok
    input reward: seq
    let adv = (reward - group_mean(reward)) / (group_std(reward) + 1e-4)
    let ratio = exp(logp - old_logp)
    let surr = min(ratio * adv, clamp(ratio, 1 - eps, 1 + eps) * adv)
    loss batch_mean(seq_mean(-(surr - beta * k3(logp, ref_logp)))) - ent * batch_mean(entropy)
    metric clip_frac = batch_mean(abs(ratio - 1) > eps)
}
"#;

fn gpu(test: &str) -> Option<Device> {
    match cuda_device(0) {
        Ok(d) => Some(d),
        Err(e) => {
            eprintln!("SKIP {test} (needs a GPU): {e}");
            None
        }
    }
}

fn tiny() -> TrainConfig {
    TrainConfig {
        seed: 7,
        digits: 1,
        hidden: 16,
        layers: 1,
        heads: 2,
        sft_steps: 3,
        sft_batch: 8,
        steps: 2,
        prompts_per_step: 3,
        group_size: 4,
        reward: RewardKind::Partial,
        ..TrainConfig::default()
    }
}

fn rel_diff(a: &Tensor, b: &Tensor) -> f64 {
    let a = a
        .to_device(&Device::Cpu)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap();
    let b = b
        .to_device(&Device::Cpu)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap();
    let d = (&a - &b).unwrap().sqr().unwrap().sum_all().unwrap();
    let n = b.sqr().unwrap().sum_all().unwrap();
    let d = d.to_scalar::<f64>().unwrap().sqrt();
    let n = n.to_scalar::<f64>().unwrap().sqrt();
    d / n.max(1e-30)
}

#[test]
fn no_driver_is_an_error_and_a_cpu_device_is_refused() {
    // Where a GPU is present this opens it; elsewhere it must be an error naming CUDA, never a
    // panic (cudarc panics when it cannot dlopen libcuda).
    match cuda_device(0) {
        Ok(d) => assert!(d.is_cuda()),
        Err(e) => assert!(e.to_string().contains("cuda") || e.to_string().contains("CUDA")),
    }
    let obj = Objective::compile("g.rlo", GRPO, &rlo_compiler::Options::default()).unwrap();
    let e = CudaLoss::new(&obj, &Device::Cpu).err().unwrap();
    assert!(e.to_string().contains("CUDA device"), "{e}");
}

#[test]
fn nvrtc_compiles_the_programs_the_cuda_loss_emits() {
    if let Err(e) = rlo_runtime::cuda::nvrtc_probe() {
        eprintln!("SKIP nvrtc_compiles_the_programs_the_cuda_loss_emits: {e}");
        return;
    }
    // embedded: the test binary also runs on a GPU machine without the sources
    let sources = [
        ("grpo_entropy.rlo", GRPO),
        ("stdlib/grpo.rlo", include_str!("../../stdlib/grpo.rlo")),
        ("stdlib/dapo.rlo", include_str!("../../stdlib/dapo.rlo")),
        ("stdlib/gspo.rlo", include_str!("../../stdlib/gspo.rlo")),
    ];
    for (name, text) in sources {
        let obj = Objective::compile(name, text, &rlo_compiler::Options::default()).unwrap();
        let c = &obj.compiled;
        for layout in [TokLayout::Padded, TokLayout::Packed] {
            for tok_dtype in [StorageType::F32, StorageType::Bf16] {
                let opts = CudaOptions {
                    layout,
                    tok_dtype,
                    sources: Some(c.sources.clone()),
                    ..Default::default()
                };
                let p = emit(&c.module, &c.schedule, &opts).unwrap();
                let src = rlo_runtime::cuda::full_source(&p);
                if let Err(e) = rlo_runtime::cuda::compile_cubin(&src, "sm_90", &p.ident) {
                    panic!("{name} {layout:?} {tok_dtype:?}: {e}");
                }
            }
        }
    }
}

/// Rollouts, old/ref log-probs and rewards made on the CPU (every branch of GRPO taken, as in
/// `smoke.rs`), then the same batch on `dev`.
struct Batch {
    r: Rollouts,
    old_logp: Tensor,
    ref_logp: Tensor,
    reward: Vec<f64>,
}

fn batch_on_cpu() -> Batch {
    let tr = Trainer::new(tiny(), None, Device::Cpu).unwrap();
    let mut rng = StdRng::seed_from_u64(3);
    let prompts: Vec<_> = (0..3)
        .map(|_| {
            let p = tr.task.sample(&mut rng);
            tr.task.prompt(&p)
        })
        .collect();
    let sampler = snapshot(&tr.varmap, &tr.model_cfg, &tr.device, false).unwrap();
    let r = rollout::generate(&sampler, &prompts, 4, 3, 1.0, &mut rng).unwrap();
    let ids = r.completion_ids().unwrap();
    let logp = token_logp(&completion_logits(&sampler, &r).unwrap(), &ids, 1.0).unwrap();
    let shifts: Vec<f32> = (0..r.rows() * r.completion_len)
        .map(|i| [0.05, -0.5, -0.05, 0.5][i % 4])
        .collect();
    let shifts = Tensor::from_vec(shifts, logp.dims(), &Device::Cpu).unwrap();
    let old_logp = (&logp + shifts).unwrap();
    let other = Trainer::new(TrainConfig { seed: 8, ..tiny() }, None, Device::Cpu).unwrap();
    let ref_logp = token_logp(&completion_logits(&other.policy, &r).unwrap(), &ids, 1.0).unwrap();
    let reward = vec![1.0, 0.0, 0.5, 0.0, 0.25, 1.0, 1.0, 0.0, 0.0, 0.75, 0.5, 0.5];
    Batch {
        r,
        old_logp,
        ref_logp,
        reward,
    }
}

fn to_device(b: &Batch, dev: &Device) -> Batch {
    Batch {
        r: Rollouts {
            full: b.r.full.to_device(dev).unwrap(),
            ..b.r.clone()
        },
        old_logp: b.old_logp.to_device(dev).unwrap(),
        ref_logp: b.ref_logp.to_device(dev).unwrap(),
        reward: b.reward.clone(),
    }
}

/// Loss value and weight gradients (by name, sorted) of `loss` for the policy of `tr`.
fn weight_grads(
    tr: &Trainer,
    b: &Batch,
    loss: &mut dyn PolicyLoss,
) -> (f64, Vec<(String, Tensor)>) {
    let tokens = TokenLayout::from_lengths(
        &b.r.lengths,
        b.r.completion_len,
        b.r.groups.clone(),
        &tr.device,
    )
    .unwrap();
    let logits = completion_logits(&tr.policy, &b.r).unwrap();
    let (logp, entropy) = token_logp_entropy(&logits, &b.r.completion_ids().unwrap(), 1.0).unwrap();
    let out = loss
        .compute(&LossInputs {
            tokens: &tokens,
            logp: &logp,
            entropy: &entropy,
            old_logp: &b.old_logp,
            ref_logp: &b.ref_logp,
            reward: &b.reward,
            value: None,
            old_value: None,
        })
        .unwrap();
    let grads = out.loss.backward().unwrap();
    let data = tr.varmap.data().lock().unwrap();
    let mut named: Vec<(String, Var)> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let g = named
        .into_iter()
        .map(|(k, v)| {
            let g = grads
                .get(&v)
                .unwrap_or_else(|| panic!("no gradient for {k}"))
                .clone();
            (k, g)
        })
        .collect();
    (out.value, g)
}

#[test]
fn cuda_op_weight_gradients_equal_interpreter_op() {
    let Some(dev) = gpu("cuda_op_weight_gradients_equal_interpreter_op") else {
        return;
    };
    let cpu_batch = batch_on_cpu();
    let gpu_batch = to_device(&cpu_batch, &dev);
    let cpu_tr = Trainer::new(tiny(), None, Device::Cpu).unwrap();
    // The same seed gives the same weights (initialised on the host, then copied).
    let gpu_tr = Trainer::new(tiny(), None, dev.clone()).unwrap();
    let (wc, wg) = (cpu_tr.weights().unwrap(), gpu_tr.weights().unwrap());
    for (name, w) in &wc {
        assert_eq!(rel_diff(&wg[name], w), 0.0, "{name}");
    }
    let obj = |backend| RloObjective::new("grpo_entropy.rlo", GRPO, None, &[], backend).unwrap();

    let (v_cuda, g_cuda) = weight_grads(&gpu_tr, &gpu_batch, &mut obj(Backend::Cuda));
    let (v_int, g_int) = weight_grads(&gpu_tr, &gpu_batch, &mut obj(Backend::Interp));
    let (v_cpu, g_cpu) = weight_grads(&cpu_tr, &cpu_batch, &mut obj(Backend::Interp));
    assert!(
        (v_cuda - v_int).abs() <= 1e-5 * v_int.abs().max(1e-3),
        "{v_cuda} vs {v_int}"
    );
    assert!(
        (v_cuda - v_cpu).abs() <= 1e-4 * v_cpu.abs().max(1e-3),
        "{v_cuda} vs {v_cpu}"
    );
    let (mut worst_same, mut worst_cpu) = (0f64, 0f64);
    for (((name, a), (_, b)), (_, c)) in g_cuda.iter().zip(&g_int).zip(&g_cpu) {
        let (same, cross) = (rel_diff(a, b), rel_diff(a, c));
        assert!(
            same < 1e-5,
            "{name}: CUDA op vs interpreter op on the GPU model: {same:e}"
        );
        // across devices candle's own forward differs too (cuBLAS vs gemm, f32): looser bound
        assert!(
            cross < 1e-4,
            "{name}: CUDA op (GPU) vs interpreter op (CPU): {cross:e}"
        );
        let n = a
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap();
        assert!(n.to_scalar::<f64>().unwrap() > 0.0, "{name}: zero gradient");
        worst_same = worst_same.max(same);
        worst_cpu = worst_cpu.max(cross);
    }
    eprintln!(
        "weight gradients, worst relative L2 difference: CUDA op vs interpreter op {worst_same:e} (same GPU model), vs CPU model {worst_cpu:e}"
    );
}

/// `rlo_loss` through the interpreter and `CudaLoss` on the same device tensors: loss, metric
/// and gradients of `logp` and `entropy`.
fn compare_small(dev: &Device, tokens: &TokenLayout, dtype: DType, tol: f64) {
    let obj = Objective::compile("g.rlo", GRPO, &rlo_compiler::Options::default()).unwrap();
    let params = obj.param_values(&[]).unwrap();
    let (b, t) = tokens.dims();
    let vals = |seed: f32| -> Var {
        let v: Vec<f32> = (0..b * t)
            .map(|i| -0.1 - ((i as f32 * seed).sin() + 1.0) * 0.7)
            .collect();
        let x = Tensor::from_vec(v, (b, t), dev)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        Var::from_tensor(&x).unwrap()
    };
    let (logp, entropy) = (vals(0.37), vals(1.3));
    let old = (logp.as_tensor() + 0.3).unwrap();
    let refl = (logp.as_tensor() - 0.2).unwrap();
    let reward: Vec<f64> = (0..b).map(|i| (i % 3) as f64 * 0.5).collect();
    let inputs = [
        ("logp", Input::Tensor(logp.as_tensor())),
        ("entropy", Input::Tensor(entropy.as_tensor())),
        ("old_logp", Input::Tensor(&old)),
        ("ref_logp", Input::Tensor(&refl)),
        ("reward", Input::Host(&reward)),
    ];
    let want = rlo_loss(&obj, tokens, &inputs, &params, Backend::Interp).unwrap();
    let mut cl = CudaLoss::new(&obj, dev).unwrap();
    for round in 0..2 {
        // the second round reuses the program, layout and workspace
        let got = cl.evaluate(&obj, tokens, &inputs, &params).unwrap();
        assert!(
            (got.value - want.value).abs() <= tol * want.value.abs().max(1e-3),
            "round {round}: {} vs {}",
            got.value,
            want.value
        );
        assert!(got.kernel_ms.is_some_and(|ms| ms > 0.0));
        let gw = want.loss.backward().unwrap();
        let gg = got.loss.backward().unwrap();
        for v in [&logp, &entropy] {
            let d = rel_diff(gg.get(v).unwrap(), gw.get(v).unwrap());
            assert!(d < tol, "round {round}: gradient differs by {d:e}");
        }
        let (mw, mg) = (
            want.metric("clip_frac").unwrap(),
            got.metric("clip_frac").unwrap(),
        );
        assert!((mw - mg).abs() < 1e-6, "clip_frac {mg} vs {mw}");
    }
}

#[test]
fn packed_path_and_bf16_agree_with_the_interpreter() {
    let Some(dev) = gpu("packed_path_and_bf16_agree_with_the_interpreter") else {
        return;
    };
    // Holes and left padding: the packed program (gather/scatter on the device).
    let mask = Tensor::new(
        &[
            [1u8, 0, 1, 1, 0],
            [0, 0, 1, 1, 1],
            [1, 1, 1, 1, 1],
            [0, 1, 0, 0, 0],
        ],
        &dev,
    )
    .unwrap();
    let holes = TokenLayout::from_mask(&mask, vec![0, 0, 1, 1]).unwrap();
    assert!(!holes.is_prefix());
    compare_small(&dev, &holes, DType::F32, 1e-5);
    // Right padding: the padded program, reading candle's [B, T] memory in place.
    let prefix = TokenLayout::from_lengths(&[3, 5, 0, 2], 5, vec![0, 0, 1, 1], &dev).unwrap();
    compare_small(&dev, &prefix, DType::F32, 1e-5);
    // bf16 token inputs (the kernels read bf16, compute in f32); the interpreter reads the
    // same bf16 values, and the gradients are rounded to bf16 on both paths.
    compare_small(&dev, &prefix, DType::BF16, 1e-2);
}

#[test]
fn training_steps_run_on_the_gpu_with_loss_timings() {
    let Some(dev) = gpu("training_steps_run_on_the_gpu_with_loss_timings") else {
        return;
    };
    let mut tr = Trainer::new(tiny(), None, dev).unwrap();
    for _ in 0..3 {
        assert!(tr.sft_step().unwrap().is_finite());
    }
    tr.start_rl().unwrap();
    let mut loss = RloObjective::new("grpo_entropy.rlo", GRPO, None, &[], Backend::Cuda).unwrap();
    for step in 0..3 {
        let log = tr.rl_step(step, &mut loss).unwrap();
        assert!(log.loss.is_finite() && log.kl.is_finite() && log.grad_norm.is_finite());
        let k = log.loss_kernel_s.unwrap();
        assert!(
            k > 0.0 && k < log.step_s,
            "kernel time {k} s of a {} s step",
            log.step_s
        );
        assert!(log.loss_share > 0.0 && log.loss_share < 1.0);
    }
}
