//! Sampling G completions per prompt with a temperature, and the per-token log-probs of a batch
//! of rollouts under a policy.

use candle_core::{DType, Device, Tensor};
use rand::Rng;

use crate::model::{Cache, Model};
use crate::task::{EOS, PAD};
use crate::Result;

/// A batch of rollouts: `B = prompts · group_size` rows, rows of one group adjacent.
#[derive(Clone, Debug)]
pub struct Rollouts {
    /// `[B, Lp + Tc]` u32: prompt then completion (PAD after EOS).
    pub full: Tensor,
    pub prompt_len: usize,
    /// Completion positions `Tc` (the generation budget).
    pub completion_len: usize,
    /// Completion token ids per row, `Tc` each.
    pub completions: Vec<Vec<u32>>,
    /// Valid completion tokens per row: up to and including EOS (`Tc` if EOS never came).
    pub lengths: Vec<usize>,
    /// Group of each row (`row / group_size`).
    pub groups: Vec<u32>,
}

impl Rollouts {
    pub fn rows(&self) -> usize {
        self.lengths.len()
    }

    /// `[B, Tc]` u32 completion ids.
    pub fn completion_ids(&self) -> candle_core::Result<Tensor> {
        self.full.narrow(1, self.prompt_len, self.completion_len)
    }

    /// The rows `r0..r1` (whole groups), groups renumbered from 0.
    pub fn slice(&self, r0: usize, r1: usize) -> candle_core::Result<Rollouts> {
        let g0 = self.groups.get(r0).copied().unwrap_or(0);
        Ok(Rollouts {
            full: self.full.narrow(0, r0, r1 - r0)?,
            prompt_len: self.prompt_len,
            completion_len: self.completion_len,
            completions: self.completions[r0..r1].to_vec(),
            lengths: self.lengths[r0..r1].to_vec(),
            groups: self.groups[r0..r1].iter().map(|g| g - g0).collect(),
        })
    }
}

/// Rollouts from teacher-forced answers (for the supervised warm-up): same shapes as sampling.
pub fn from_answers(
    prompts: &[Vec<u32>],
    answers: &[Vec<u32>],
    completion_len: usize,
    device: &Device,
) -> Result<Rollouts> {
    let prompt_len = prompts.first().map(Vec::len).unwrap_or(0);
    let mut completions = Vec::with_capacity(answers.len());
    let mut lengths = Vec::with_capacity(answers.len());
    for a in answers {
        let mut c: Vec<u32> = a.iter().copied().take(completion_len).collect();
        lengths.push(c.len());
        c.resize(completion_len, PAD);
        completions.push(c);
    }
    let groups = (0..prompts.len() as u32).collect();
    let full = assemble(prompts, &completions, device)?;
    Ok(Rollouts {
        full,
        prompt_len,
        completion_len,
        completions,
        lengths,
        groups,
    })
}

fn assemble(prompts: &[Vec<u32>], completions: &[Vec<u32>], device: &Device) -> Result<Tensor> {
    let rows = prompts.len();
    let width =
        prompts.first().map(Vec::len).unwrap_or(0) + completions.first().map(Vec::len).unwrap_or(0);
    let mut flat = Vec::with_capacity(rows * width);
    for (p, c) in prompts.iter().zip(completions) {
        if p.len() + c.len() != width {
            return Err("prompts (or completions) differ in length".into());
        }
        flat.extend_from_slice(p);
        flat.extend_from_slice(c);
    }
    Ok(Tensor::from_vec(flat, (rows, width), device)?)
}

/// Samples `group_size` completions of at most `max_new` tokens for each prompt (all prompts the
/// same length) from `softmax(logits / temperature)`, with a key/value cache.
pub fn generate(
    model: &Model,
    prompts: &[Vec<u32>],
    group_size: usize,
    max_new: usize,
    temperature: f64,
    rng: &mut impl Rng,
) -> Result<Rollouts> {
    let device = model.device().clone();
    let rows: Vec<Vec<u32>> = prompts
        .iter()
        .flat_map(|p| std::iter::repeat_n(p.clone(), group_size))
        .collect();
    let b = rows.len();
    let prompt_len = rows.first().map(Vec::len).unwrap_or(0);
    let flat: Vec<u32> = rows.iter().flatten().copied().collect();
    let ids = Tensor::from_vec(flat, (b, prompt_len), &device)?;
    let mut cache = Cache::default();
    let mut logits = model
        .forward(&ids, 0, Some(&mut cache))?
        .narrow(1, prompt_len - 1, 1)?;
    let mut completions = vec![Vec::with_capacity(max_new); b];
    let mut done = vec![false; b];
    for step in 0..max_new {
        let rows_logits: Vec<Vec<f32>> = logits.squeeze(1)?.to_dtype(DType::F32)?.to_vec2()?;
        let mut next = Vec::with_capacity(b);
        for (i, l) in rows_logits.iter().enumerate() {
            let tok = if done[i] {
                PAD
            } else {
                sample(l, temperature, rng)
            };
            if tok == EOS {
                done[i] = true;
            }
            completions[i].push(tok);
            next.push(tok);
        }
        if step + 1 == max_new || done.iter().all(|&d| d) {
            break;
        }
        let next = Tensor::from_vec(next, (b, 1), &device)?;
        logits = model.forward(&next, prompt_len + step, Some(&mut cache))?;
    }
    let mut lengths = Vec::with_capacity(b);
    for c in &mut completions {
        lengths.push(c.iter().position(|&t| t == EOS).map_or(c.len(), |e| e + 1));
        c.resize(max_new, PAD);
    }
    let groups = (0..b).map(|i| (i / group_size.max(1)) as u32).collect();
    let full = assemble(&rows, &completions, &device)?;
    Ok(Rollouts {
        full,
        prompt_len,
        completion_len: max_new,
        completions,
        lengths,
        groups,
    })
}

/// One draw from `softmax(logits / temperature)`.
fn sample(logits: &[f32], temperature: f64, rng: &mut impl Rng) -> u32 {
    let t = temperature.max(1e-6);
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let w: Vec<f64> = logits
        .iter()
        .map(|&l| ((l as f64 - max) / t).exp())
        .collect();
    let total: f64 = w.iter().sum();
    let mut u = rng.random::<f64>() * total;
    for (i, &wi) in w.iter().enumerate() {
        if u < wi {
            return i as u32;
        }
        u -= wi;
    }
    (w.len().saturating_sub(1)) as u32
}

/// Logits `[B, Tc, V]` that predict the completion tokens of `r` (one forward over the rows).
pub fn completion_logits(model: &Model, r: &Rollouts) -> Result<Tensor> {
    let width = r.prompt_len + r.completion_len;
    let inputs = r.full.narrow(1, 0, width - 1)?;
    let logits = model.forward(&inputs, 0, None)?;
    Ok(logits.narrow(1, r.prompt_len - 1, r.completion_len)?)
}

/// Mean of `x [B, T]` over the valid positions of `mask [B, T]` (u8).
pub fn masked_mean(x: &Tensor, mask: &Tensor) -> Result<f64> {
    let m = mask.to_dtype(DType::F32)?;
    let x = mask.where_cond(&x.to_dtype(DType::F32)?, &m.zeros_like()?)?;
    let n = m.sum_all()?.to_scalar::<f32>()?;
    if n == 0.0 {
        return Ok(0.0);
    }
    Ok((x.sum_all()?.to_scalar::<f32>()? / n) as f64)
}
