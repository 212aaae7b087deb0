//! CI-sized checks of the training example: a few warm-up and RL steps run with finite losses
//! and non-zero weight gradients, checkpoints round-trip, and the weight gradients through the
//! rlo op equal those of the same GRPO loss written directly in candle ops.
#![allow(clippy::unwrap_used)]

use candle_core::{Device, Tensor, Var};
use rand::rngs::StdRng;
use rand::SeedableRng;
use rlo_runtime::candle::{surrogate, token_logp, token_logp_entropy, uniform_value, TokenLayout};
use rlo_runtime::Backend;
use rlo_train::loss::{CandleGrpo, LossInputs, PolicyLoss, RloObjective};
use rlo_train::rollout::{self, completion_logits, Rollouts};
use rlo_train::task::RewardKind;
use rlo_train::trainer::{snapshot, TrainConfig, Trainer};

/// GRPO with the k3 penalty, exactly as `CandleGrpo` computes it.
const GRPO: &str = r#"
fn k3(logp, ref_logp) {
    let d = ref_logp - logp
    exp(d) - d - 1
}

objective grpo(eps: f32 = 0.2, beta: f32 = 0.04) {
    input logp: tok diff
    input old_logp: tok
    input ref_logp: tok
    input reward: seq
    let adv = (reward - group_mean(reward)) / (group_std(reward) + 1e-4)
    let ratio = exp(logp - old_logp)
    let surr = min(ratio * adv, clamp(ratio, 1 - eps, 1 + eps) * adv)
    loss batch_mean(seq_mean(-(surr - beta * k3(logp, ref_logp))))
    metric clip_frac = batch_mean(abs(ratio - 1) > eps)
}
"#;

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

fn max_rel_diff(a: &Tensor, b: &Tensor) -> f64 {
    let d = (a - b).unwrap().sqr().unwrap().sum_all().unwrap();
    let n = b.sqr().unwrap().sum_all().unwrap();
    let d = f64::from(d.to_scalar::<f32>().unwrap()).sqrt();
    let n = f64::from(n.to_scalar::<f32>().unwrap()).sqrt();
    d / n.max(1e-30)
}

#[test]
fn warmup_rl_steps_and_checkpoint_round_trip() {
    let mut tr = Trainer::new(tiny(), None, Device::Cpu).unwrap();
    for _ in 0..3 {
        assert!(tr.sft_step().unwrap().is_finite());
    }
    tr.start_rl().unwrap();
    let mut loss = CandleGrpo {
        eps: 0.2,
        beta: 0.04,
    };
    for step in 0..2 {
        let log = tr.rl_step(step, &mut loss).unwrap();
        assert!(log.loss.is_finite() && log.kl.is_finite() && log.entropy > 0.0);
        assert!((0.0..=1.0).contains(&log.reward));
        assert!(log.grad_norm.is_finite());
    }

    let dir = std::env::temp_dir().join(format!("rlo-smoke-{}", std::process::id()));
    let path = dir.join("policy.safetensors");
    tr.save(&path).unwrap();
    let saved = tr.weights().unwrap();
    let back = Trainer::new(TrainConfig { seed: 99, ..tiny() }, Some(&path), Device::Cpu).unwrap();
    let loaded = back.weights().unwrap();
    assert_eq!(saved.len(), loaded.len());
    for (name, w) in &saved {
        let diff = (w - &loaded[name])
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap();
        assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0, "{name}");
    }
    // A different seed without the checkpoint gives different weights (the test can fail).
    let other = Trainer::new(TrainConfig { seed: 99, ..tiny() }, None, Device::Cpu).unwrap();
    let w = other.weights().unwrap();
    let name = "lm_head.weight";
    let diff = (&saved[name] - &w[name])
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap();
    assert!(diff.to_scalar::<f32>().unwrap() > 0.0);
    std::fs::remove_dir_all(&dir).ok();
}

/// A batch where every branch of GRPO is taken: rewards differ within groups, ratios are inside
/// and outside the clip range (by a margin), and the reference differs from the policy.
struct Fixture {
    tr: Trainer,
    r: Rollouts,
    tokens: TokenLayout,
    old_logp: Tensor,
    ref_logp: Tensor,
    reward: Vec<f64>,
}

fn fixture() -> Fixture {
    let mut tr = Trainer::new(tiny(), None, Device::Cpu).unwrap();
    let mut rng = StdRng::seed_from_u64(3);
    let prompts: Vec<_> = (0..3)
        .map(|_| {
            let p = tr.task.sample(&mut rng);
            tr.task.prompt(&p)
        })
        .collect();
    let sampler = snapshot(&tr.varmap, &tr.model_cfg, &tr.device, false).unwrap();
    let r = rollout::generate(&sampler, &prompts, 4, 3, 1.0, &mut rng).unwrap();
    let tokens =
        TokenLayout::from_lengths(&r.lengths, r.completion_len, r.groups.clone(), &tr.device)
            .unwrap();
    let ids = r.completion_ids().unwrap();
    let logp = token_logp(&completion_logits(&sampler, &r).unwrap(), &ids, 1.0).unwrap();
    // Shifts of ±0.05 keep the ratio inside [0.8, 1.2]; ±0.5 push it outside.
    let shifts: Vec<f32> = (0..r.rows() * r.completion_len)
        .map(|i| [0.05, -0.5, -0.05, 0.5][i % 4])
        .collect();
    let shifts = Tensor::from_vec(shifts, logp.dims(), &tr.device).unwrap();
    let old_logp = (&logp + shifts).unwrap();
    // The reference: another initialisation.
    let other = Trainer::new(TrainConfig { seed: 8, ..tiny() }, None, Device::Cpu).unwrap();
    let ref_logp = token_logp(&completion_logits(&other.policy, &r).unwrap(), &ids, 1.0).unwrap();
    let reward = vec![1.0, 0.0, 0.5, 0.0, 0.25, 1.0, 1.0, 0.0, 0.0, 0.75, 0.5, 0.5];
    tr.start_rl().unwrap();
    Fixture {
        tr,
        r,
        tokens,
        old_logp,
        ref_logp,
        reward,
    }
}

/// Weight gradients of `loss` on the fixture, by variable name.
fn weight_grads(f: &Fixture, loss: &mut dyn PolicyLoss) -> (f64, Vec<(String, Tensor)>) {
    let logits = completion_logits(&f.tr.policy, &f.r).unwrap();
    let (logp, entropy) = token_logp_entropy(&logits, &f.r.completion_ids().unwrap(), 1.0).unwrap();
    // ROVER's uniform values: the policy's, and a rollout policy's 0.1 lower
    let value = uniform_value(&logits, 1.0).unwrap().detach();
    let old_value = value.affine(1.0, -0.1).unwrap();
    let wants = loss.wants("value");
    let out = loss
        .compute(&LossInputs {
            tokens: &f.tokens,
            logp: &logp,
            entropy: &entropy,
            old_logp: &f.old_logp,
            ref_logp: &f.ref_logp,
            reward: &f.reward,
            value: wants.then_some(&value),
            old_value: wants.then_some(&old_value),
        })
        .unwrap();
    let grads = out.loss.backward().unwrap();
    let data = f.tr.varmap.data().lock().unwrap();
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
fn surrogate_chain_matches_direct_backward() {
    // dL/dlogp from candle's own autodiff, fed back through the surrogate, must give the same
    // weight gradients as backpropagating the candle loss directly.
    let f = fixture();
    let (value, direct) = weight_grads(
        &f,
        &mut CandleGrpo {
            eps: 0.2,
            beta: 0.04,
        },
    );
    let logits = completion_logits(&f.tr.policy, &f.r).unwrap();
    let (logp, entropy) = token_logp_entropy(&logits, &f.r.completion_ids().unwrap(), 1.0).unwrap();
    let leaf = Var::from_tensor(&logp.detach()).unwrap();
    let out = CandleGrpo {
        eps: 0.2,
        beta: 0.04,
    }
    .compute(&LossInputs {
        tokens: &f.tokens,
        logp: leaf.as_tensor(),
        entropy: &entropy.detach(),
        old_logp: &f.old_logp,
        ref_logp: &f.ref_logp,
        reward: &f.reward,
        value: None,
        old_value: None,
    })
    .unwrap();
    let g = out.loss.backward().unwrap().get(&leaf).unwrap().clone();
    let s = surrogate(
        value,
        &[(logp, g, Some(f.tokens.mask().clone()))],
        &Device::Cpu,
    )
    .unwrap();
    assert!((f64::from(s.to_scalar::<f32>().unwrap()) - value).abs() < 1e-6);
    let grads = s.backward().unwrap();
    let data = f.tr.varmap.data().lock().unwrap();
    let mut nonzero = 0;
    for (name, want) in &direct {
        let got = grads.get(&data[name]).unwrap();
        let rel = max_rel_diff(got, want);
        assert!(rel <= 1e-6, "{name}: relative difference {rel}");
        if want
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            > 0.0
        {
            nonzero += 1;
        }
    }
    assert!(
        nonzero >= direct.len() - 1,
        "{nonzero} of {} non-zero",
        direct.len()
    );
}

#[test]
fn rlo_op_weight_gradients_equal_candle_grpo() {
    let f = fixture();
    let (v_ref, want) = weight_grads(
        &f,
        &mut CandleGrpo {
            eps: 0.2,
            beta: 0.04,
        },
    );
    let mut rlo = RloObjective::new("grpo_inline.rlo", GRPO, None, &[], Backend::Interp).unwrap();
    let (v_rlo, got) = weight_grads(&f, &mut rlo);
    assert!(
        (v_rlo - v_ref).abs() <= 1e-5 * v_ref.abs().max(1e-3),
        "loss {v_rlo} vs {v_ref}"
    );
    let mut nonzero = 0;
    let mut worst = 0f64;
    for ((name, g), (_, w)) in got.iter().zip(&want) {
        let rel = max_rel_diff(g, w);
        worst = worst.max(rel);
        assert!(rel <= 1e-5, "{name}: relative difference {rel}");
        if w.abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            > 0.0
        {
            nonzero += 1;
        }
    }
    assert!(nonzero >= want.len() - 1);
    eprintln!("rlo vs candle GRPO: largest relative weight-gradient difference {worst:.2e}");
    // Changing a parameter at run time changes the gradient.
    let mut rlo0 = RloObjective::new(
        "grpo_inline.rlo",
        GRPO,
        None,
        &[("beta".into(), 0.0)],
        Backend::Interp,
    )
    .unwrap();
    let (_, got0) = weight_grads(&f, &mut rlo0);
    let rel = max_rel_diff(&got0[0].1, &want[0].1);
    assert!(rel > 1e-4, "beta had no effect ({rel})");
}

#[test]
fn first_update_sees_policy_equal_to_reference_and_sampler() {
    let cfg = TrainConfig {
        ppo_epochs: 1,
        ..tiny()
    };
    let mut tr = Trainer::new(cfg, None, Device::Cpu).unwrap();
    tr.sft_step().unwrap();
    tr.start_rl().unwrap();
    let log = tr
        .rl_step(
            0,
            &mut CandleGrpo {
                eps: 0.2,
                beta: 0.04,
            },
        )
        .unwrap();
    assert!(log.kl.abs() < 1e-6, "kl {}", log.kl);
    assert_eq!(log.clip_frac, 0.0);
}

#[test]
fn stdlib_objectives_give_finite_nonzero_weight_gradients() {
    let f = fixture();
    let files = [
        ("grpo", include_str!("../../stdlib/grpo.rlo")),
        ("dapo", include_str!("../../stdlib/dapo.rlo")),
        ("gspo", include_str!("../../stdlib/gspo.rlo")),
        ("rover", include_str!("../../stdlib/rover.rlo")),
    ];
    for (name, text) in files {
        let mut obj = RloObjective::new(name, text, None, &[], Backend::Interp).unwrap();
        let (value, grads) = weight_grads(&f, &mut obj);
        assert!(value.is_finite(), "{name}: loss {value}");
        let mut norm = 0f64;
        for (w, g) in &grads {
            let s = f64::from(
                g.sqr()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap(),
            );
            assert!(s.is_finite(), "{name}: gradient of {w} is not finite");
            norm += s;
        }
        assert!(norm > 0.0, "{name}: all weight gradients are zero");
    }
}

#[test]
fn cpu_backend_weight_gradients_equal_candle_grpo() {
    // The Cranelift backend (f32) through the same op.
    let f = fixture();
    let (v_ref, want) = weight_grads(
        &f,
        &mut CandleGrpo {
            eps: 0.2,
            beta: 0.04,
        },
    );
    let mut rlo = RloObjective::new("grpo_inline.rlo", GRPO, None, &[], Backend::Cpu).unwrap();
    let (v_cpu, got) = weight_grads(&f, &mut rlo);
    assert!((v_cpu - v_ref).abs() <= 1e-5 * v_ref.abs().max(1e-3));
    let mut worst = 0f64;
    for ((name, g), (_, w)) in got.iter().zip(&want) {
        let rel = max_rel_diff(g, w);
        worst = worst.max(rel);
        assert!(rel <= 1e-5, "{name}: relative difference {rel}");
    }
    eprintln!(
        "cpu backend vs candle GRPO: largest relative weight-gradient difference {worst:.2e}"
    );
}

/// `--ranks k`: the loss evaluated as k data-parallel ranks (groups dealt out, normalizers
/// all-reduced) gives the whole-batch weight gradients; stdlib grpo, f64 interpreter.
#[test]
fn data_parallel_ranks_give_the_whole_batch_weight_gradients() {
    let f = fixture();
    let text = include_str!("../../stdlib/grpo.rlo");
    let mut whole = RloObjective::new("grpo", text, None, &[], Backend::Interp).unwrap();
    let (v1, g1) = weight_grads(&f, &mut whole);
    for k in [2, 3] {
        let mut ranked = RloObjective::new("grpo", text, None, &[], Backend::Interp)
            .unwrap()
            .with_ranks(k)
            .unwrap();
        let (vk, gk) = weight_grads(&f, &mut ranked);
        assert!(
            (vk - v1).abs() <= 1e-6 * v1.abs().max(1e-3),
            "k={k}: loss {vk} vs {v1}"
        );
        for ((name, a), (_, b)) in gk.iter().zip(&g1) {
            let rel = max_rel_diff(a, b);
            assert!(rel <= 1e-5, "k={k} {name}: {rel}");
        }
    }
    assert!(RloObjective::new("grpo", text, None, &[], Backend::Interp)
        .unwrap()
        .with_ranks(0)
        .is_err());
}
