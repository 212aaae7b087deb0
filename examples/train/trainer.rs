//! The training loop: supervised warm-up, then RL steps (sample G completions per prompt, score
//! them, one or more PPO epochs over minibatches of whole groups with any [`PolicyLoss`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use rand::rngs::StdRng;
use rand::SeedableRng;
use rlo_runtime::candle::{token_logp, token_logp_entropy, uniform_value, TokenLayout};
use serde::Serialize;

use crate::loss::{LossInputs, PolicyLoss};
use crate::model::{Config, Model};
use crate::rollout::{self, completion_logits, masked_mean, Rollouts};
use crate::task::{decode, Addition, RewardKind, EOS};
use crate::Result;

/// Hyper-parameters of a run (the CLI fills it; tests build small ones).
#[derive(Clone, Debug, Serialize)]
pub struct TrainConfig {
    pub seed: u64,
    pub digits: u32,
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub sft_steps: usize,
    pub sft_batch: usize,
    pub sft_lr: f64,
    pub steps: usize,
    pub prompts_per_step: usize,
    pub group_size: usize,
    pub temperature: f64,
    pub lr: f64,
    pub weight_decay: f64,
    pub max_grad_norm: f64,
    pub ppo_epochs: usize,
    pub minibatches: usize,
    pub reward: RewardKind,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            seed: 0,
            digits: 2,
            hidden: 64,
            layers: 2,
            heads: 4,
            sft_steps: 1500,
            sft_batch: 64,
            sft_lr: 3e-3,
            steps: 200,
            prompts_per_step: 16,
            group_size: 8,
            temperature: 1.0,
            lr: 3e-4,
            weight_decay: 0.0,
            max_grad_norm: 1.0,
            ppo_epochs: 2,
            minibatches: 1,
            reward: RewardKind::Exact,
        }
    }
}

/// What one RL step measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StepLog {
    pub step: usize,
    pub reward: f64,
    /// Mean per-token k3 estimate of KL(policy ‖ reference), over the step's updates.
    pub kl: f64,
    /// Fraction of tokens with |ratio − 1| > 0.2, over the step's updates.
    pub clip_frac: f64,
    pub entropy: f64,
    pub loss: f64,
    pub grad_norm: f64,
    /// Generated (valid) tokens per second of step wall time.
    pub tokens_per_s: f64,
    pub step_s: f64,
    /// Wall time in the loss calls of the step (`PolicyLoss::compute`, all updates). On a GPU
    /// this includes waiting for the policy's forward pass queued before the loss.
    pub loss_s: f64,
    /// GPU time of the loss kernels of the step (CUDA path only, CUDA events).
    pub loss_kernel_s: Option<f64>,
    /// Share of the step's wall time in the loss: `loss_kernel_s / step_s` on the CUDA path,
    /// `loss_s / step_s` otherwise.
    pub loss_share: f64,
    /// The objective's own metrics, averaged over the step's updates.
    pub metrics: Vec<(String, f64)>,
}

pub struct Trainer {
    pub cfg: TrainConfig,
    pub model_cfg: Config,
    pub varmap: VarMap,
    pub policy: Model,
    pub reference: Model,
    pub task: Addition,
    pub rng: StdRng,
    pub device: Device,
    opt: AdamW,
}

fn adamw(varmap: &VarMap, lr: f64, weight_decay: f64) -> Result<AdamW> {
    Ok(AdamW::new(
        varmap.all_vars(),
        ParamsAdamW {
            lr,
            weight_decay,
            ..Default::default()
        },
    )?)
}

impl Trainer {
    /// A randomly initialised policy (`seed`), or one whose weights come from `weights`
    /// (a checkpoint of this program).
    pub fn new(cfg: TrainConfig, weights: Option<&Path>, device: Device) -> Result<Trainer> {
        if cfg.heads == 0
            || !cfg.hidden.is_multiple_of(cfg.heads)
            || !(cfg.hidden / cfg.heads).is_multiple_of(2)
        {
            return Err(format!(
                "hidden size {} must split into {} heads of an even size",
                cfg.hidden, cfg.heads
            )
            .into());
        }
        let task = Addition::new(cfg.digits);
        let model_cfg = Config::tiny(crate::task::VOCAB, cfg.hidden, cfg.layers, cfg.heads);
        let mut varmap = VarMap::new();
        let policy = Model::new(
            &model_cfg,
            VarBuilder::from_varmap(&varmap, DType::F32, &device),
        )?;
        reinit(&varmap, cfg.seed)?;
        if let Some(w) = weights {
            varmap.load(w)?;
        }
        let reference = snapshot(&varmap, &model_cfg, &device, true)?;
        let opt = adamw(&varmap, cfg.sft_lr, cfg.weight_decay)?;
        Ok(Trainer {
            rng: StdRng::seed_from_u64(cfg.seed),
            cfg,
            model_cfg,
            varmap,
            policy,
            reference,
            task,
            device,
            opt,
        })
    }

    /// One supervised step on fresh problems (teacher forcing on the answer tokens); returns the
    /// mean negative log-likelihood per answer token.
    pub fn sft_step(&mut self) -> Result<f64> {
        let problems: Vec<_> = (0..self.cfg.sft_batch)
            .map(|_| self.task.sample(&mut self.rng))
            .collect();
        let prompts: Vec<_> = problems.iter().map(|p| self.task.prompt(p)).collect();
        let answers: Vec<_> = problems.iter().map(|p| self.task.answer(p)).collect();
        let r =
            rollout::from_answers(&prompts, &answers, self.task.max_answer_len(), &self.device)?;
        let tokens = TokenLayout::from_lengths(
            &r.lengths,
            r.completion_len,
            r.groups.clone(),
            &self.device,
        )?;
        let logits = completion_logits(&self.policy, &r)?;
        let logp = token_logp(&logits, &r.completion_ids()?, 1.0)?;
        let mask = tokens.mask().to_dtype(DType::F32)?;
        let n = mask.sum_all()?.to_scalar::<f32>()?.max(1.0) as f64;
        let loss = ((logp * mask)?.sum_all()?.neg()? / n)?;
        let grads = loss.backward()?;
        self.opt.step(&grads)?;
        Ok(f64::from(loss.to_scalar::<f32>()?))
    }

    /// Ends the warm-up: the reference model becomes a frozen copy of the current policy and the
    /// optimizer restarts with the RL learning rate.
    pub fn start_rl(&mut self) -> Result<()> {
        self.reference = snapshot(&self.varmap, &self.model_cfg, &self.device, true)?;
        self.opt = adamw(&self.varmap, self.cfg.lr, self.cfg.weight_decay)?;
        Ok(())
    }

    /// Fraction of `n` fresh problems solved with greedy decoding.
    pub fn greedy_accuracy(&mut self, n: usize) -> Result<f64> {
        Ok(self.greedy_eval(n)?.0)
    }

    /// Greedy accuracy on `n` fresh problems and the decoded text of every completion.
    pub fn greedy_eval(&mut self, n: usize) -> Result<(f64, Vec<String>)> {
        let sampler = snapshot(&self.varmap, &self.model_cfg, &self.device, false)?;
        let problems: Vec<_> = (0..n).map(|_| self.task.sample(&mut self.rng)).collect();
        let prompts: Vec<_> = problems.iter().map(|p| self.task.prompt(p)).collect();
        let r = rollout::generate(
            &sampler,
            &prompts,
            1,
            self.task.max_answer_len(),
            1e-6,
            &mut self.rng,
        )?;
        let mut solved = 0.0;
        let mut texts = Vec::with_capacity(n);
        for ((p, prompt), c) in problems.iter().zip(&prompts).zip(&r.completions) {
            let ok = self.task.reward(p, c, RewardKind::Exact);
            solved += ok;
            let mark = if ok == 1.0 { "ok" } else { "wrong" };
            let end = c.iter().position(|&t| t == EOS).map_or(c.len(), |e| e + 1);
            texts.push(format!("{} {} ({mark})", decode(prompt), decode(&c[..end])));
        }
        Ok((solved / n.max(1) as f64, texts))
    }

    /// One RL step with `loss`.
    pub fn rl_step(&mut self, step: usize, loss: &mut dyn PolicyLoss) -> Result<StepLog> {
        let t0 = Instant::now();
        let cfg = self.cfg.clone();
        let problems: Vec<_> = (0..cfg.prompts_per_step)
            .map(|_| self.task.sample(&mut self.rng))
            .collect();
        let prompts: Vec<_> = problems.iter().map(|p| self.task.prompt(p)).collect();
        // The sampling policy: the current weights, detached (no graph is recorded).
        let sampler = snapshot(&self.varmap, &self.model_cfg, &self.device, false)?;
        let r = rollout::generate(
            &sampler,
            &prompts,
            cfg.group_size,
            self.task.max_answer_len(),
            cfg.temperature,
            &mut self.rng,
        )?;
        let rewards: Vec<f64> = r
            .completions
            .iter()
            .enumerate()
            .map(|(i, c)| {
                self.task
                    .reward(&problems[i / cfg.group_size], c, cfg.reward)
            })
            .collect();
        let ids = r.completion_ids()?;
        let old_logits = completion_logits(&sampler, &r)?;
        let old_logp = token_logp(&old_logits, &ids, cfg.temperature)?;
        // ROVER's uniform value under the rollout policy (only when the objective reads it)
        let old_value = if loss.wants("old_value") {
            Some(uniform_value(&old_logits, cfg.temperature)?)
        } else {
            None
        };
        drop(old_logits);
        let ref_logp = token_logp(
            &completion_logits(&self.reference, &r)?,
            &ids,
            cfg.temperature,
        )?;

        let mut log = StepLog {
            step,
            reward: rewards.iter().sum::<f64>() / rewards.len().max(1) as f64,
            ..Default::default()
        };
        let groups_per_mb = cfg.prompts_per_step.div_ceil(cfg.minibatches.max(1));
        let mut updates = 0usize;
        for _ in 0..cfg.ppo_epochs.max(1) {
            let mut g0 = 0;
            while g0 < cfg.prompts_per_step {
                let g1 = (g0 + groups_per_mb).min(cfg.prompts_per_step);
                let (r0, r1) = (g0 * cfg.group_size, g1 * cfg.group_size);
                let mb = r.slice(r0, r1)?;
                let old_value = match &old_value {
                    Some(v) => Some(v.narrow(0, r0, r1 - r0)?),
                    None => None,
                };
                let u = self.update(
                    &mb,
                    &old_logp.narrow(0, r0, r1 - r0)?,
                    &ref_logp.narrow(0, r0, r1 - r0)?,
                    old_value.as_ref(),
                    &rewards[r0..r1],
                    loss,
                )?;
                accumulate(&mut log, &u);
                updates += 1;
                g0 = g1;
            }
        }
        let k = updates.max(1) as f64;
        log.kl /= k;
        log.clip_frac /= k;
        log.entropy /= k;
        log.loss /= k;
        log.grad_norm /= k;
        for m in &mut log.metrics {
            m.1 /= k;
        }
        log.step_s = t0.elapsed().as_secs_f64();
        log.loss_share = log.loss_kernel_s.unwrap_or(log.loss_s) / log.step_s.max(1e-12);
        let n_tok: usize = r.lengths.iter().sum();
        log.tokens_per_s = n_tok as f64 / log.step_s.max(1e-9);
        Ok(log)
    }

    fn update(
        &mut self,
        r: &Rollouts,
        old_logp: &Tensor,
        ref_logp: &Tensor,
        old_value: Option<&Tensor>,
        rewards: &[f64],
        loss: &mut dyn PolicyLoss,
    ) -> Result<StepLog> {
        let tokens = TokenLayout::from_lengths(
            &r.lengths,
            r.completion_len,
            r.groups.clone(),
            &self.device,
        )?;
        let logits = completion_logits(&self.policy, r)?;
        let (logp, entropy) =
            token_logp_entropy(&logits, &r.completion_ids()?, self.cfg.temperature)?;
        // no gradient: ROVER reads it under a stop-gradient only
        let value = match old_value {
            Some(_) => Some(uniform_value(&logits, self.cfg.temperature)?.detach()),
            None => None,
        };
        let t_loss = Instant::now();
        let out = loss.compute(&LossInputs {
            tokens: &tokens,
            logp: &logp,
            entropy: &entropy,
            old_logp,
            ref_logp,
            reward: rewards,
            value: value.as_ref(),
            old_value,
        })?;
        let loss_s = t_loss.elapsed().as_secs_f64();
        let mut grads = out.loss.backward()?;
        let grad_norm =
            clip_grad_norm(&self.varmap.all_vars(), &mut grads, self.cfg.max_grad_norm)?;
        self.opt.step(&grads)?;

        let mask = tokens.mask();
        let lp = logp.detach();
        let d = (ref_logp - &lp)?;
        let k3 = ((d.exp()? - &d)? - 1.0)?;
        let ratio = (&lp - old_logp)?.exp()?;
        let clipped = (ratio - 1.0)?.abs()?.gt(0.2)?.to_dtype(DType::F32)?;
        Ok(StepLog {
            kl: masked_mean(&k3, mask)?,
            clip_frac: masked_mean(&clipped, mask)?,
            entropy: masked_mean(&entropy.detach(), mask)?,
            loss: out.value,
            grad_norm,
            metrics: out.metrics,
            loss_s,
            loss_kernel_s: out.kernel_ms.map(|ms| ms / 1e3),
            ..Default::default()
        })
    }

    /// Saves the policy weights (safetensors).
    pub fn save(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        self.varmap.save(path)?;
        Ok(())
    }

    /// The current weights by name (deep copies).
    pub fn weights(&self) -> Result<HashMap<String, Tensor>> {
        let data = self.varmap.data().lock().map_err(|_| "poisoned var map")?;
        let mut out = HashMap::new();
        for (k, v) in data.iter() {
            out.insert(k.clone(), v.as_tensor().copy()?);
        }
        Ok(out)
    }
}

/// Seeded initialisation (candle's CPU rng cannot be seeded): linear weights `U(±1/√fan_in)`, the
/// embedding `U(±√3)` (unit variance), norms 1, biases 0; variables visited in name order.
pub fn reinit(varmap: &VarMap, seed: u64) -> Result<()> {
    use rand::Rng;
    let data = varmap.data().lock().map_err(|_| "poisoned var map")?;
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed_1234_abcd);
    for name in names {
        let var = &data[name];
        let dims = var.dims().to_vec();
        let n: usize = dims.iter().product();
        let values: Vec<f32> = if name.ends_with("bias") {
            vec![0.0; n]
        } else if dims.len() == 1 {
            vec![1.0; n]
        } else {
            let bound = if name.contains("embed_tokens") {
                3f32.sqrt()
            } else {
                1.0 / (dims.last().copied().unwrap_or(1).max(1) as f32).sqrt()
            };
            (0..n).map(|_| rng.random_range(-bound..bound)).collect()
        };
        var.set(&Tensor::from_vec(values, dims, var.device())?)?;
    }
    Ok(())
}

fn accumulate(log: &mut StepLog, u: &StepLog) {
    log.kl += u.kl;
    log.clip_frac += u.clip_frac;
    log.entropy += u.entropy;
    log.loss += u.loss;
    log.grad_norm += u.grad_norm;
    log.loss_s += u.loss_s;
    if let Some(k) = u.loss_kernel_s {
        *log.loss_kernel_s.get_or_insert(0.0) += k;
    }
    for (name, v) in &u.metrics {
        match log.metrics.iter_mut().find(|(n, _)| n == name) {
            Some(m) => m.1 += v,
            None => log.metrics.push((name.clone(), *v)),
        }
    }
}

/// A model over the current weights: deep copies (`frozen`, for the reference model) or detached
/// views (for sampling and old log-probs within one step, before any update).
pub fn snapshot(varmap: &VarMap, cfg: &Config, device: &Device, frozen: bool) -> Result<Model> {
    let data = varmap.data().lock().map_err(|_| "poisoned var map")?;
    let mut tensors = HashMap::new();
    for (k, v) in data.iter() {
        let t = if frozen {
            v.as_tensor().copy()?
        } else {
            v.as_tensor().detach()
        };
        tensors.insert(k.clone(), t);
    }
    Ok(Model::from_tensors(cfg, tensors, device)?)
}

/// Scales the gradients of `vars` so that their global L2 norm is at most `max_norm` (if
/// positive); returns the norm before clipping.
pub fn clip_grad_norm(
    vars: &[Var],
    grads: &mut candle_core::backprop::GradStore,
    max_norm: f64,
) -> Result<f64> {
    let mut sq = 0f64;
    for v in vars {
        if let Some(g) = grads.get(v) {
            sq += f64::from(g.sqr()?.sum_all()?.to_scalar::<f32>()?);
        }
    }
    let norm = sq.sqrt();
    if max_norm > 0.0 && norm > max_norm {
        let scale = max_norm / (norm + 1e-6);
        for v in vars {
            if let Some(g) = grads.get(v) {
                let g = (g * scale)?;
                grads.insert(v, g);
            }
        }
    }
    Ok(norm)
}

/// Where a run writes its files.
pub struct OutPaths {
    pub dir: PathBuf,
}

impl OutPaths {
    pub fn checkpoint(&self) -> PathBuf {
        self.dir.join("policy.safetensors")
    }
    pub fn plot(&self) -> PathBuf {
        self.dir.join("reward_kl.png")
    }
    pub fn log(&self) -> PathBuf {
        self.dir.join("log.jsonl")
    }
}
