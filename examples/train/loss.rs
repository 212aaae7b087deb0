//! The policy loss of one update, behind a trait: any `.rlo` objective through the rlo op
//! ([`RloObjective`]), or GRPO written directly in candle ops ([`CandleGrpo`], the reference the
//! gradient check compares against).

use candle_core::{DType, Tensor};
use rlo_runtime::candle::{rlo_loss, rlo_loss_with, Input, TokenLayout};
use rlo_runtime::dataparallel::ShardPlan;
use rlo_runtime::{Backend, Objective, RuntimeError};

use crate::Result;

/// Everything an objective may read for one (mini-)batch; `[B, T]` tensors are padded and
/// `tokens` says which positions are valid.
pub struct LossInputs<'a> {
    pub tokens: &'a TokenLayout,
    /// Differentiable in the policy weights.
    pub logp: &'a Tensor,
    /// Differentiable in the policy weights.
    pub entropy: &'a Tensor,
    pub old_logp: &'a Tensor,
    pub ref_logp: &'a Tensor,
    /// One per sequence.
    pub reward: &'a [f64],
    /// `mean_v log π(v | s_t)` under the policy and under the rollout policy (ROVER's uniform
    /// value; no gradient), when the trainer computed them.
    pub value: Option<&'a Tensor>,
    pub old_value: Option<&'a Tensor>,
}

pub struct LossOutput {
    /// Scalar; `backward()` reaches the policy weights.
    pub loss: Tensor,
    pub value: f64,
    pub metrics: Vec<(String, f64)>,
    /// GPU time of the loss kernels (the CUDA path only).
    pub kernel_ms: Option<f64>,
}

pub trait PolicyLoss {
    fn describe(&self) -> String;
    fn compute(&mut self, x: &LossInputs<'_>) -> Result<LossOutput>;
    /// Whether the loss reads input `name` (the trainer computes optional inputs only then).
    fn wants(&self, name: &str) -> bool {
        let _ = name;
        false
    }
}

/// A compiled `.rlo` objective. Inputs it may declare: `logp`, `entropy` (tok, may be `diff`),
/// `old_logp`, `ref_logp`, `value`, `old_value` (tok), `reward` (seq), `correct` (seq bool:
/// reward ≥ 1).
///
/// With `Backend::Cuda` and the policy on a candle CUDA device (feature `cuda`) the loss runs
/// through `rlo_runtime::candle::cuda::CudaLoss` (NVRTC kernels on candle's stream, token data
/// never leaves the GPU, buffers reused between steps); otherwise through `rlo_loss` (host batch).
pub struct RloObjective {
    pub name: String,
    pub objective: Objective,
    pub params: Vec<f64>,
    pub backend: Backend,
    /// Data-parallel ranks simulated in this process (`--ranks`): each step's groups are dealt
    /// to `k` ranks, the normalizers all-reduced between them, and the ranks' exact results
    /// gathered (`rlo_runtime::dataparallel`). `None`: the whole batch at once.
    pub ranks: Option<(usize, ShardPlan)>,
    #[cfg(feature = "cuda")]
    cuda: Option<rlo_runtime::candle::cuda::CudaLoss>,
}

impl RloObjective {
    /// Compiles `text` (the objective named `which`, needed when the file has several);
    /// `overrides` are `--param k=v` pairs.
    pub fn new(
        name: &str,
        text: &str,
        which: Option<String>,
        overrides: &[(String, f64)],
        backend: Backend,
    ) -> Result<RloObjective> {
        let opts = rlo_compiler::Options {
            objective: which,
            ..Default::default()
        };
        let objective = Objective::compile(name, text, &opts).map_err(|f| f.render(false))?;
        let params = objective.param_values(overrides)?;
        Ok(RloObjective {
            name: name.to_string(),
            objective,
            params,
            backend,
            ranks: None,
            #[cfg(feature = "cuda")]
            cuda: None,
        })
    }

    /// Evaluate each step as `k` data-parallel ranks (k ≥ 2; 1 = the whole batch). Errors when
    /// the objective is not exact data-parallel (the explanation points at its source).
    pub fn with_ranks(mut self, k: usize) -> Result<RloObjective> {
        self.ranks = match k {
            0 => return Err("--ranks must be at least 1".into()),
            1 => None,
            k => Some((k, ShardPlan::new(&self.objective)?)),
        };
        Ok(self)
    }

    /// The CUDA path, when the backend is CUDA and the policy is on a CUDA device.
    #[cfg(feature = "cuda")]
    fn compute_cuda(
        &mut self,
        x: &LossInputs<'_>,
        inputs: &[(&str, Input<'_>)],
    ) -> Result<Option<rlo_runtime::candle::RloLoss>> {
        if self.backend != Backend::Cuda || !x.logp.device().is_cuda() {
            return Ok(None);
        }
        let cuda = match &mut self.cuda {
            Some(c) => c,
            None => self.cuda.insert(rlo_runtime::candle::cuda::CudaLoss::new(
                &self.objective,
                x.logp.device(),
            )?),
        };
        Ok(Some(cuda.evaluate(
            &self.objective,
            x.tokens,
            inputs,
            &self.params,
        )?))
    }

    #[cfg(not(feature = "cuda"))]
    fn compute_cuda(
        &mut self,
        _: &LossInputs<'_>,
        _: &[(&str, Input<'_>)],
    ) -> Result<Option<rlo_runtime::candle::RloLoss>> {
        Ok(None)
    }
}

impl PolicyLoss for RloObjective {
    fn describe(&self) -> String {
        let m = &self.objective.compiled.module;
        let params: Vec<String> = m
            .params
            .iter()
            .zip(&self.params)
            .map(|(p, v)| format!("{}={v}", p.name))
            .collect();
        format!(
            "{} (objective `{}`, {}; backend {:?})",
            self.name,
            m.name,
            params.join(", "),
            self.backend
        )
    }

    fn wants(&self, name: &str) -> bool {
        self.objective
            .compiled
            .module
            .inputs
            .iter()
            .any(|i| i.name == name)
    }

    fn compute(&mut self, x: &LossInputs<'_>) -> Result<LossOutput> {
        let correct: Vec<f64> = x
            .reward
            .iter()
            .map(|&r| f64::from(u8::from(r >= 1.0)))
            .collect();
        let mut inputs = vec![
            ("logp", Input::Tensor(x.logp)),
            ("entropy", Input::Tensor(x.entropy)),
            ("old_logp", Input::Tensor(x.old_logp)),
            ("ref_logp", Input::Tensor(x.ref_logp)),
            ("reward", Input::Host(x.reward)),
            ("correct", Input::Host(&correct)),
        ];
        if let (Some(v), Some(ov)) = (x.value, x.old_value) {
            inputs.push(("value", Input::Tensor(v)));
            inputs.push(("old_value", Input::Tensor(ov)));
        }
        if let Some((k, plan)) = &self.ranks {
            let (k, params, backend) = (*k, &self.params, self.backend);
            let out = rlo_loss_with(&self.objective, x.tokens, &inputs, |batch| {
                plan.evaluate_ranks(batch, params, backend, k)
            })?;
            return Ok(LossOutput {
                loss: out.loss,
                value: out.value,
                metrics: out.metrics,
                kernel_ms: out.kernel_ms,
            });
        }
        if let Some(out) = self.compute_cuda(x, &inputs)? {
            return Ok(LossOutput {
                loss: out.loss,
                value: out.value,
                metrics: out.metrics,
                kernel_ms: out.kernel_ms,
            });
        }
        let out = match rlo_loss(
            &self.objective,
            x.tokens,
            &inputs,
            &self.params,
            self.backend,
        ) {
            Err(rlo_runtime::candle::CandleLossError::Runtime(RuntimeError::Unsupported(why)))
                if self.backend == Backend::Cpu =>
            {
                eprintln!("backend cpu unavailable ({why}); falling back to the interpreter");
                self.backend = Backend::Interp;
                rlo_loss(
                    &self.objective,
                    x.tokens,
                    &inputs,
                    &self.params,
                    self.backend,
                )?
            }
            r => r?,
        };
        Ok(LossOutput {
            loss: out.loss,
            value: out.value,
            metrics: out.metrics,
            kernel_ms: out.kernel_ms,
        })
    }
}

/// GRPO with the k3 KL penalty, in plain candle ops (the semantics of the `grpo` objective in
/// `/work/shared/design.md` §2): per-sequence token mean, then mean over sequences.
pub struct CandleGrpo {
    pub eps: f64,
    pub beta: f64,
}

/// `(r − group_mean) / (group_std + 1e-4)` with the unbiased std (0 for a group of one).
pub fn group_advantages(reward: &[f64], groups: &[u32]) -> Vec<f64> {
    let n_groups = groups.iter().map(|&g| g as usize + 1).max().unwrap_or(0);
    let mut sum = vec![0.0; n_groups];
    let mut cnt = vec![0.0; n_groups];
    for (&r, &g) in reward.iter().zip(groups) {
        sum[g as usize] += r;
        cnt[g as usize] += 1.0;
    }
    let mean: Vec<f64> = sum.iter().zip(&cnt).map(|(s, c)| s / c).collect();
    let mut ss = vec![0.0; n_groups];
    for (&r, &g) in reward.iter().zip(groups) {
        ss[g as usize] += (r - mean[g as usize]).powi(2);
    }
    let std: Vec<f64> = ss
        .iter()
        .zip(&cnt)
        .map(|(s, &c)| if c > 1.0 { (s / (c - 1.0)).sqrt() } else { 0.0 })
        .collect();
    reward
        .iter()
        .zip(groups)
        .map(|(&r, &g)| (r - mean[g as usize]) / (std[g as usize] + 1e-4))
        .collect()
}

impl PolicyLoss for CandleGrpo {
    fn describe(&self) -> String {
        format!("GRPO in candle ops (eps={}, beta={})", self.eps, self.beta)
    }

    fn compute(&mut self, x: &LossInputs<'_>) -> Result<LossOutput> {
        let layout = x.tokens.layout();
        let (b, _) = x.tokens.dims();
        let dev = x.logp.device();
        let adv = group_advantages(x.reward, &layout.seq_group);
        let adv = Tensor::from_vec(adv, (b, 1), dev)?.to_dtype(DType::F32)?;
        let mask = x.tokens.mask();
        let logp = x.logp;
        let ratio = (logp - x.old_logp)?.exp()?;
        let (lo, hi) = (1.0 - self.eps, 1.0 + self.eps);
        let lo_t = ratio.ones_like()?.affine(lo, 0.0)?;
        let hi_t = ratio.ones_like()?.affine(hi, 0.0)?;
        // PyTorch clamp: the gradient passes at the bounds (selects, not min/max).
        let clamped = ratio
            .lt(lo)?
            .where_cond(&lo_t, &ratio.gt(hi)?.where_cond(&hi_t, &ratio)?)?;
        let surr = ratio
            .broadcast_mul(&adv)?
            .minimum(&clamped.broadcast_mul(&adv)?)?;
        let d = (x.ref_logp - logp)?;
        let k3 = ((d.exp()? - &d)? - 1.0)?;
        let per_token = (surr - (k3.clone() * self.beta)?)?.neg()?;
        let zeros = per_token.zeros_like()?;
        let per_token = mask.where_cond(&per_token, &zeros)?;
        let lengths: Vec<f32> = layout
            .seq_offsets
            .windows(2)
            .map(|w| (w[1] - w[0]) as f32)
            .collect();
        let inv_len: Vec<f32> = lengths
            .iter()
            .map(|&l| if l > 0.0 { 1.0 / l } else { 0.0 })
            .collect();
        let inv_len = Tensor::from_vec(inv_len, b, dev)?;
        let seq_mean = (per_token.sum(1)? * inv_len)?;
        let loss = (seq_mean.sum_all()? / b.max(1) as f64)?;
        let value = f64::from(loss.to_scalar::<f32>()?);
        let n_tok = layout.n_tokens().max(1) as f64;
        let maskf = mask.to_dtype(DType::F32)?;
        let kl = (mask
            .where_cond(&k3, &zeros)?
            .sum_all()?
            .to_scalar::<f32>()? as f64)
            / n_tok;
        let clipped = (ratio - 1.0)?.abs()?.gt(self.eps)?.to_dtype(DType::F32)?;
        let clip = ((clipped * maskf)?.sum_all()?.to_scalar::<f32>()? as f64) / n_tok;
        Ok(LossOutput {
            loss,
            value,
            metrics: vec![("clip_frac".into(), clip), ("kl".into(), kl)],
            kernel_ms: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advantages_are_normalized_per_group() {
        let a = group_advantages(&[1.0, 0.0, 1.0, 1.0, 0.5], &[0, 0, 1, 1, 2]);
        let s = (0.5f64).sqrt();
        assert!((a[0] - 0.5 / (s + 1e-4)).abs() < 1e-12);
        assert!((a[1] + 0.5 / (s + 1e-4)).abs() < 1e-12);
        assert_eq!(a[2], 0.0);
        assert_eq!(a[3], 0.0);
        assert_eq!(a[4], 0.0);
    }
}
