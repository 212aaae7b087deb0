//! A compiled objective as a differentiable loss of candle tensors (feature `candle`).
//!
//! A policy computes `logp` (and `entropy`) as `[B, T]` candle tensors that depend on its weights.
//! [`rlo_loss`] packs them, with every other input the objective declares, into a [`Batch`],
//! evaluates the objective (loss, gradients and metrics in one call, on any [`Backend`]) and
//! returns a scalar tensor whose value is the loss and whose gradient with respect to every `diff`
//! input is the gradient the backend computed, so `loss.backward()` reaches the policy weights.
//!
//! # Why the surrogate is exact
//! With `g_i = dL/dx_i` computed by the backend (constants to candle), the returned tensor is
//!
//! ```text
//! S = Σ_i sum(select(mask_i, x_i, 0) · g_i)
//! loss = (S − detach(S)) + L
//! ```
//!
//! Its value is `L` (for finite `S`, `S − S` is exactly `0` in IEEE arithmetic; `L` is rounded to
//! the dtype of the inputs). Backward sends `1` to `S` (the detached copy and the constant `L` get
//! nothing), `1 · g_i = g_i` through the product — multiplying by one is exact — and `select`
//! passes it to `x_i` at valid positions only. So `dloss/dx_i` is the backend's `g_i` (rounded
//! once to the dtype of `x_i`) to the bit, and padded positions get exactly `0`; the `select` also
//! keeps an `inf` in a padded slot from turning the sum into `NaN`. This needs no `CustomOp`
//! backward and works unchanged on every candle device.
//!
//! # Devices
//! [`rlo_loss`] takes a host [`Batch`] on every backend: the inputs are copied to the host
//! (`B·T` values per token input) and the gradients copied back to the device of each input.
//! With the policy on a candle CUDA device (feature `cuda`, which needs nvcc at build time: see
//! `examples/build_cuda.sh`), `cuda::CudaLoss` instead runs the objective's NVRTC kernels on
//! candle's own stream, reading the tensors in candle's device memory and writing the gradients
//! into device memory that becomes candle tensors: no token data crosses to the host (what does
//! cross is listed in `candle_cuda.rs`). Both return the same surrogate.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor, D};
use rlo_compiler::types::Level;

use crate::{Backend, Batch, Evaluation, Layout, Objective, RuntimeError};

#[cfg(feature = "cuda")]
#[path = "candle_cuda.rs"]
pub mod cuda;

/// What can go wrong when an objective meets candle tensors.
#[derive(Debug, thiserror::Error)]
pub enum CandleLossError {
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// An input is missing or has the wrong shape; `name` is the objective's input name.
    #[error("input `{name}`: {message}")]
    Input { name: String, message: String },
    /// The token mask or the groups are inconsistent.
    #[error("batch structure: {0}")]
    Structure(String),
}

type Result<T> = std::result::Result<T, CandleLossError>;

/// Where the valid tokens of a padded `[B, T]` batch are, and which group each sequence is in.
///
/// Valid tokens may sit anywhere in a row (left padding, holes for tool tokens); they are packed
/// in row order. Each sequence is one turn.
#[derive(Clone, Debug)]
pub struct TokenLayout {
    b: usize,
    t: usize,
    /// Row-major index into `[B, T]` of each packed token.
    index: Vec<usize>,
    layout: Layout,
    /// `[B, T]` u8, 1 at valid tokens, on the device of the tensors it was made from.
    mask: Tensor,
    /// Every row's valid tokens are a prefix of it (right padding).
    prefix: bool,
}

impl TokenLayout {
    /// From a `[B, T]` mask (any dtype; non-zero = valid token) and the group of each sequence.
    pub fn from_mask(mask: &Tensor, seq_group: Vec<u32>) -> Result<TokenLayout> {
        let (b, t) = mask.dims2()?;
        let rows: Vec<Vec<f32>> = mask.to_dtype(DType::F32)?.to_vec2()?;
        let mut index = Vec::new();
        let mut lengths = Vec::with_capacity(b);
        for (i, row) in rows.iter().enumerate() {
            let before = index.len();
            index.extend(
                row.iter()
                    .enumerate()
                    .filter(|(_, &m)| m != 0.0)
                    .map(|(j, _)| i * t + j),
            );
            lengths.push(index.len() - before);
        }
        Self::build(b, t, index, lengths, seq_group, mask.device())
    }

    /// Each sequence's valid tokens are a prefix of its row: `lengths[i] ≤ t`.
    pub fn from_lengths(
        lengths: &[usize],
        t: usize,
        seq_group: Vec<u32>,
        device: &Device,
    ) -> Result<TokenLayout> {
        if let Some(l) = lengths.iter().find(|&&l| l > t) {
            return Err(CandleLossError::Structure(format!(
                "a sequence has {l} tokens but rows have {t} positions"
            )));
        }
        let index = lengths
            .iter()
            .enumerate()
            .flat_map(|(i, &l)| (0..l).map(move |j| i * t + j))
            .collect();
        Self::build(lengths.len(), t, index, lengths.to_vec(), seq_group, device)
    }

    fn build(
        b: usize,
        t: usize,
        index: Vec<usize>,
        lengths: Vec<usize>,
        seq_group: Vec<u32>,
        device: &Device,
    ) -> Result<TokenLayout> {
        if seq_group.len() != b {
            return Err(CandleLossError::Structure(format!(
                "{} group ids for {b} sequences",
                seq_group.len()
            )));
        }
        let layout = Layout::single_turn(&lengths, seq_group);
        layout.validate().map_err(CandleLossError::Structure)?;
        let mut m = vec![0u8; b * t];
        for &k in &index {
            m[k] = 1;
        }
        let mask = Tensor::from_vec(m, (b, t), device)?;
        let prefix = index.iter().enumerate().all(|(k, &pos)| {
            let row = pos / t.max(1);
            layout
                .seq_offsets
                .get(row)
                .is_some_and(|&start| pos == row * t + (k - start))
        });
        Ok(TokenLayout {
            b,
            t,
            index,
            layout,
            mask,
            prefix,
        })
    }

    /// The packed layout the backends consume.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// `[B, T]` u8 mask of valid tokens.
    pub fn mask(&self) -> &Tensor {
        &self.mask
    }

    pub fn dims(&self) -> (usize, usize) {
        (self.b, self.t)
    }

    /// Row-major index into `[B, T]` of each packed token.
    pub fn index(&self) -> &[usize] {
        &self.index
    }

    /// Whether every row's valid tokens are a prefix of the row (right padding, no holes): the
    /// layout the CUDA kernels can read in place.
    pub fn is_prefix(&self) -> bool {
        self.prefix
    }

    /// The valid tokens of a `[B, T]` tensor, packed, as f64.
    pub fn pack(&self, x: &Tensor) -> Result<Vec<f64>> {
        let flat: Vec<f64> = x.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
        if flat.len() != self.b * self.t {
            return Err(CandleLossError::Structure(format!(
                "expected a [{}, {}] tensor, got {:?}",
                self.b,
                self.t,
                x.dims()
            )));
        }
        Ok(self.index.iter().map(|&k| flat[k]).collect())
    }

    /// A packed token array as a `[B, T]` tensor, zero at padded positions.
    pub fn unpack(&self, packed: &[f64], dtype: DType, device: &Device) -> Result<Tensor> {
        if packed.len() != self.index.len() {
            return Err(CandleLossError::Structure(format!(
                "{} packed values for {} tokens",
                packed.len(),
                self.index.len()
            )));
        }
        let mut full = vec![0f64; self.b * self.t];
        for (&k, &v) in self.index.iter().zip(packed) {
            full[k] = v;
        }
        Ok(Tensor::from_vec(full, (self.b, self.t), device)?.to_dtype(dtype)?)
    }
}

/// One input of the objective, by value.
#[derive(Clone, Debug)]
pub enum Input<'a> {
    /// A candle tensor shaped by the input's level: `tok` → `[B, T]` (padded, packed through the
    /// [`TokenLayout`]); `turn`, `seq` → `[B]`; `group` → `[n_groups]`; `batch` → `[]` or `[1]`.
    /// If the input is `diff`, the loss is differentiable with respect to this tensor.
    Tensor(&'a Tensor),
    /// Already packed host values at the input's level (never differentiated through candle).
    Host(&'a [f64]),
}

/// The loss as a candle scalar plus everything else the evaluation returned.
#[derive(Clone, Debug)]
pub struct RloLoss {
    /// Scalar (f32 unless the diff inputs are f64); value = the loss; backward = the backend's
    /// gradients.
    pub loss: Tensor,
    /// The loss as the backend computed it (f64).
    pub value: f64,
    /// `(name, value)` of every metric, in declaration order.
    pub metrics: Vec<(String, f64)>,
    /// `(name, packed values)` of every output.
    pub outputs: Vec<(String, Vec<f64>)>,
    /// `(input name, gradient)`: each diff input's gradient, `[B, T]` for `tok` inputs (0 at
    /// padding), at the input's level otherwise.
    pub grads: Vec<(String, Tensor)>,
    /// The raw evaluation, aligned with `objective.compiled.module.grads/metrics/outputs`.
    pub evaluation: Evaluation,
    /// GPU time of the loss kernels (the CUDA path, `cuda::CudaLoss`); `None` on the host path.
    pub kernel_ms: Option<f64>,
}

impl RloLoss {
    pub fn metric(&self, name: &str) -> Option<f64> {
        self.metrics
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
    }
}

/// Names and levels of the inputs an objective declares, in declaration order.
pub fn declared_inputs(objective: &Objective) -> Vec<(String, Level, bool)> {
    objective
        .compiled
        .module
        .inputs
        .iter()
        .map(|i| (i.name.clone(), i.ty.level, i.diff))
        .collect()
}

/// Evaluates `objective` on a batch of candle tensors and returns a differentiable loss.
///
/// `inputs` are looked up by name; inputs the objective does not declare are ignored (a training
/// loop can always pass `logp, old_logp, ref_logp, entropy, reward`), a declared input that is
/// missing is an error.
pub fn rlo_loss(
    objective: &Objective,
    tokens: &TokenLayout,
    inputs: &[(&str, Input<'_>)],
    params: &[f64],
    backend: Backend,
) -> Result<RloLoss> {
    rlo_loss_with(objective, tokens, inputs, |batch| {
        objective.evaluate(batch, params, backend)
    })
}

/// [`rlo_loss`] with the evaluation of the packed batch done by `evaluate` (e.g. data-parallel
/// ranks through `dataparallel::ShardPlan::evaluate_ranks`, or micro-batches); it must return
/// the whole-batch loss, gradients, metrics and outputs of `objective`.
pub fn rlo_loss_with(
    objective: &Objective,
    tokens: &TokenLayout,
    inputs: &[(&str, Input<'_>)],
    evaluate: impl FnOnce(&Batch) -> std::result::Result<Evaluation, RuntimeError>,
) -> Result<RloLoss> {
    let module = &objective.compiled.module;
    let layout = tokens.layout();
    let mut values = BTreeMap::new();
    for decl in &module.inputs {
        let Some((_, input)) = inputs.iter().find(|(n, _)| *n == decl.name) else {
            return Err(CandleLossError::Input {
                name: decl.name.clone(),
                message: "the objective declares it but it was not given".into(),
            });
        };
        let want = layout.count(decl.ty.level);
        let packed = match (input, decl.ty.level) {
            (Input::Host(v), _) => v.to_vec(),
            (Input::Tensor(t), Level::Tok) => tokens.pack(t).map_err(|e| input_err(decl, e))?,
            (Input::Tensor(t), _) => t
                .to_dtype(DType::F64)
                .and_then(|t| t.flatten_all())
                .and_then(|t| t.to_vec1::<f64>())
                .map_err(|e| input_err(decl, e.into()))?,
        };
        if packed.len() != want {
            return Err(CandleLossError::Input {
                name: decl.name.clone(),
                message: format!(
                    "a {:?}-level input needs {want} values, got {}",
                    decl.ty.level,
                    packed.len()
                ),
            });
        }
        values.insert(decl.name.clone(), packed);
    }
    let batch = Batch {
        layout: layout.clone(),
        values,
    };
    let evaluation = evaluate(&batch)?;

    let mut terms = Vec::new();
    let mut grads = Vec::new();
    for (grad, g) in module.grads.iter().zip(&evaluation.grads) {
        let Some(decl) = module.inputs.get(grad.input as usize) else {
            continue;
        };
        let Some((_, input)) = inputs.iter().find(|(n, _)| *n == decl.name) else {
            continue;
        };
        let Input::Tensor(x) = input else { continue };
        let g = if decl.ty.level == Level::Tok {
            tokens.unpack(g, x.dtype(), x.device())?
        } else {
            Tensor::from_slice(g, g.len(), x.device())?
                .to_dtype(x.dtype())?
                .reshape(x.shape())?
        };
        let mask = (decl.ty.level == Level::Tok).then(|| tokens.mask());
        terms.push(((*x).clone(), g.clone(), mask.cloned()));
        grads.push((decl.name.clone(), g));
    }
    let device = inputs
        .iter()
        .find_map(|(_, i)| match i {
            Input::Tensor(t) => Some(t.device().clone()),
            Input::Host(_) => None,
        })
        .unwrap_or(Device::Cpu);
    let loss = surrogate(evaluation.loss, &terms, &device)?;
    let metrics = module
        .metrics
        .iter()
        .zip(&evaluation.metrics)
        .map(|(m, v)| (m.name.clone(), *v))
        .collect();
    let outputs = module
        .outputs
        .iter()
        .zip(&evaluation.outputs)
        .map(|(o, v)| (o.name.clone(), v.clone()))
        .collect();
    Ok(RloLoss {
        loss,
        value: evaluation.loss,
        metrics,
        outputs,
        grads,
        evaluation,
        kernel_ms: None,
    })
}

fn input_err(decl: &rlo_compiler::ir::Input, e: CandleLossError) -> CandleLossError {
    CandleLossError::Input {
        name: decl.name.clone(),
        message: e.to_string(),
    }
}

/// `(S − detach(S)) + value` with `S = Σ sum(select(mask, x, 0) · g)`: value `value`, gradient
/// `g` with respect to each `x` (see the module docs for why this is exact). `terms` are
/// `(x, g, mask)` with `g` and the optional mask shaped like `x`.
pub fn surrogate(
    value: f64,
    terms: &[(Tensor, Tensor, Option<Tensor>)],
    device: &Device,
) -> Result<Tensor> {
    let dtype = terms
        .first()
        .map(|(x, _, _)| x.dtype())
        .unwrap_or(DType::F32);
    let mut s: Option<Tensor> = None;
    for (x, g, mask) in terms {
        let x = match mask {
            Some(m) => m.where_cond(x, &x.zeros_like()?)?,
            None => x.clone(),
        };
        let term = (x * g)?.sum_all()?.to_dtype(dtype)?;
        s = Some(match s {
            Some(s) => (s + term)?,
            None => term,
        });
    }
    let value = Tensor::new(value, device)?.to_dtype(dtype)?;
    Ok(match s {
        Some(s) => ((&s - s.detach())? + value)?,
        None => value,
    })
}

/// Log-probabilities of the sampled tokens under `softmax(logits / temperature)`:
/// `logits [B, T, V]`, `ids [B, T]` (u32) → `[B, T]` f32, differentiable in `logits`.
pub fn token_logp(logits: &Tensor, ids: &Tensor, temperature: f64) -> Result<Tensor> {
    let lsm = log_softmax_t(logits, temperature)?;
    Ok(lsm
        .gather(&ids.contiguous()?.unsqueeze(D::Minus1)?, D::Minus1)?
        .squeeze(D::Minus1)?)
}

/// `V_t = mean_v log π(v | s_t)` of the tempered distribution at every position (`[B, T]`):
/// the value of the uniform policy that ROVER bootstraps from (stdlib `rover`'s `value` and
/// `old_value` inputs).
pub fn uniform_value(logits: &Tensor, temperature: f64) -> Result<Tensor> {
    Ok(log_softmax_t(logits, temperature)?.mean(D::Minus1)?)
}

/// [`token_logp`] and the entropy `−Σ_v p_v log p_v` of the same tempered distribution at every
/// position, both `[B, T]` and differentiable in `logits`.
pub fn token_logp_entropy(
    logits: &Tensor,
    ids: &Tensor,
    temperature: f64,
) -> Result<(Tensor, Tensor)> {
    let lsm = log_softmax_t(logits, temperature)?;
    let logp = lsm
        .gather(&ids.contiguous()?.unsqueeze(D::Minus1)?, D::Minus1)?
        .squeeze(D::Minus1)?;
    let entropy = (lsm.exp()? * &lsm)?.sum(D::Minus1)?.neg()?;
    Ok((logp, entropy))
}

fn log_softmax_t(logits: &Tensor, temperature: f64) -> Result<Tensor> {
    if !(temperature > 0.0 && temperature.is_finite()) {
        return Err(CandleLossError::Structure(format!(
            "temperature must be positive and finite, got {temperature}"
        )));
    }
    let logits = logits.to_dtype(DType::F32)?;
    let scaled = if temperature == 1.0 {
        logits
    } else {
        (logits / temperature)?
    };
    Ok(log_softmax_last(&scaled)?)
}

/// `x − logsumexp(x)` along the last dimension, from differentiable primitives only (candle-core
/// has no fused log-softmax with a backward).
fn log_softmax_last(x: &Tensor) -> candle_core::Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let shifted = x.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    shifted.broadcast_sub(&lse)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use candle_core::Var;

    #[test]
    fn pack_unpack_round_trip_with_holes() {
        let dev = Device::Cpu;
        let mask = Tensor::new(&[[1u8, 0, 1, 1], [0, 0, 0, 0], [0, 1, 1, 0]], &dev).unwrap();
        let tl = TokenLayout::from_mask(&mask, vec![0, 0, 1]).unwrap();
        assert_eq!(tl.layout().seq_offsets, vec![0, 3, 3, 5]);
        assert_eq!(tl.layout().n_groups, 2);
        let x = Tensor::arange(0f32, 12., &dev)
            .unwrap()
            .reshape((3, 4))
            .unwrap();
        let p = tl.pack(&x).unwrap();
        assert_eq!(p, vec![0., 2., 3., 9., 10.]);
        let back: Vec<Vec<f32>> = tl.unpack(&p, DType::F32, &dev).unwrap().to_vec2().unwrap();
        assert_eq!(
            back,
            vec![vec![0., 0., 2., 3.], vec![0.; 4], vec![0., 9., 10., 0.]]
        );
        assert!(tl.unpack(&p[..4], DType::F32, &dev).is_err());
        assert!(!tl.is_prefix());
        let right = Tensor::new(&[[1u8, 1, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]], &dev).unwrap();
        assert!(TokenLayout::from_mask(&right, vec![0, 0, 1])
            .unwrap()
            .is_prefix());
        let left = Tensor::new(&[[0u8, 1, 1, 1]], &dev).unwrap();
        assert!(!TokenLayout::from_mask(&left, vec![0]).unwrap().is_prefix());
        assert!(
            TokenLayout::from_lengths(&[2, 0, 4], 4, vec![0, 0, 1], &dev)
                .unwrap()
                .is_prefix()
        );
        assert!(TokenLayout::from_mask(&mask, vec![0, 0]).is_err());
        assert!(TokenLayout::from_lengths(&[5], 4, vec![0], &dev).is_err());
    }

    #[test]
    fn surrogate_value_and_gradient_are_exact() {
        let dev = Device::Cpu;
        let x = Var::new(&[[0.3f32, -1.7, f32::NEG_INFINITY], [2.0, 0.5, 1.25]], &dev).unwrap();
        let g = Tensor::new(&[[0.1f32, -3.0, 0.0], [1e-7, 7.5, -0.25]], &dev).unwrap();
        let mask = Tensor::new(&[[1u8, 1, 0], [1, 1, 1]], &dev).unwrap();
        let y = Var::new(&[4.0f32, -2.0], &dev).unwrap();
        let gy = Tensor::new(&[0.5f32, 0.125], &dev).unwrap();
        let terms = vec![
            (x.as_tensor().clone(), g.clone(), Some(mask)),
            (y.as_tensor().clone(), gy.clone(), None),
        ];
        let loss = surrogate(1.2345, &terms, &dev).unwrap();
        assert_eq!(loss.to_scalar::<f32>().unwrap(), 1.2345f32);
        let grads = loss.backward().unwrap();
        let gx: Vec<Vec<f32>> = grads.get(&x).unwrap().to_vec2().unwrap();
        assert_eq!(gx, g.to_vec2::<f32>().unwrap());
        let gyv: Vec<f32> = grads.get(&y).unwrap().to_vec1().unwrap();
        assert_eq!(gyv, vec![0.5, 0.125]);
    }

    #[test]
    fn logp_and_entropy_from_logits() {
        let dev = Device::Cpu;
        let logits = Var::new(&[[[1.0f32, 2.0, 3.0], [0.0, 0.0, 0.0]]], &dev).unwrap();
        let ids = Tensor::new(&[[2u32, 1]], &dev).unwrap();
        let (lp, ent) = token_logp_entropy(&logits, &ids, 1.0).unwrap();
        let lp: Vec<Vec<f32>> = lp.to_vec2().unwrap();
        let z = (1f32.exp() + 2f32.exp() + 3f32.exp()).ln();
        assert!((lp[0][0] - (3.0 - z)).abs() < 1e-6);
        assert!((lp[0][1] + 3f32.ln()).abs() < 1e-6);
        let ent: Vec<Vec<f32>> = ent.to_vec2().unwrap();
        assert!((ent[0][1] - 3f32.ln()).abs() < 1e-6);
        // Temperature 2 halves the logits.
        let lp2 = token_logp(&logits, &ids, 2.0)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let z2 = (0.5f32.exp() + 1f32.exp() + 1.5f32.exp()).ln();
        assert!((lp2[0][0] - (1.5 - z2)).abs() < 1e-6);
        assert!(token_logp(&logits, &ids, 0.0).is_err());
        // d logp(sampled) / d logits = onehot − softmax.
        let g = token_logp(&logits, &ids, 1.0)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let gl: Vec<Vec<Vec<f32>>> = g.get(&logits).unwrap().to_vec3().unwrap();
        let p2 = 3f32.exp() / (1f32.exp() + 2f32.exp() + 3f32.exp());
        assert!((gl[0][0][2] - (1.0 - p2)).abs() < 1e-6);
        assert!((gl[0][1][0] + 1.0 / 3.0).abs() < 1e-6);
    }

    const OBJ: &str = "objective t(beta: f32 = 0.5) {
        input logp: tok diff
        input entropy: tok diff
        input reward: seq
        loss batch_mean(seq_mean(-logp * reward)) - beta * batch_mean(entropy)
        metric total = batch_sum(reward)
        output adv = reward * 2
    }";

    #[test]
    fn rlo_loss_backward_reaches_tensors_through_the_interpreter() {
        let dev = Device::Cpu;
        let obj = Objective::compile("t.rlo", OBJ, &rlo_compiler::Options::default()).unwrap();
        let tl = TokenLayout::from_lengths(&[2, 3], 3, vec![0, 0], &dev).unwrap();
        // An inf in a padded slot must not leak into the loss or the gradients.
        let logp = Var::new(
            &[[-0.5f32, -1.0, f32::NEG_INFINITY], [-2.0, -0.25, -1.5]],
            &dev,
        )
        .unwrap();
        let ent = Var::new(&[[1.0f32, 2.0, 9.0], [0.5, 0.5, 1.0]], &dev).unwrap();
        let reward = [1.0, 2.0];
        let params = obj.param_values(&[]).unwrap();
        let inputs = [
            ("logp", Input::Tensor(logp.as_tensor())),
            ("entropy", Input::Tensor(ent.as_tensor())),
            ("reward", Input::Host(&reward)),
            ("unused", Input::Host(&[])),
        ];
        let out = rlo_loss(&obj, &tl, &inputs, &params, Backend::Interp).unwrap();
        let want = 0.5 * (1.5 / 2.0 + 2.0 * 3.75 / 3.0) - 0.5 * 5.0 / 5.0;
        assert!((out.value - want).abs() < 1e-6, "{} vs {want}", out.value);
        assert!((f64::from(out.loss.to_scalar::<f32>().unwrap()) - want).abs() < 1e-6);
        assert_eq!(out.metric("total"), Some(3.0));
        assert_eq!(out.outputs[0].1, vec![2.0, 4.0]);
        let g = out.loss.backward().unwrap();
        let gl: Vec<Vec<f32>> = g.get(&logp).unwrap().to_vec2().unwrap();
        let (a, b) = (-1.0 / 4.0, -2.0 / 6.0);
        assert_eq!(gl, vec![vec![a, a, 0.0], vec![b, b, b]]);
        let ge: Vec<Vec<f32>> = g.get(&ent).unwrap().to_vec2().unwrap();
        assert_eq!(ge, vec![vec![-0.1, -0.1, 0.0], vec![-0.1, -0.1, -0.1]]);

        // A missing input, and an input of the wrong size, are errors that name it.
        let e = rlo_loss(&obj, &tl, &inputs[..2], &params, Backend::Interp).unwrap_err();
        assert!(e.to_string().contains("`reward`"), "{e}");
        let short = Tensor::new(&[1f32], &dev).unwrap();
        let bad = [
            ("logp", Input::Tensor(logp.as_tensor())),
            ("entropy", Input::Tensor(ent.as_tensor())),
            ("reward", Input::Tensor(&short)),
        ];
        let e = rlo_loss(&obj, &tl, &bad, &params, Backend::Interp).unwrap_err();
        assert!(e.to_string().contains("`reward`"), "{e}");
        let wide = Tensor::zeros((2, 4), DType::F32, &dev).unwrap();
        let bad = [
            ("logp", Input::Tensor(&wide)),
            ("entropy", Input::Tensor(ent.as_tensor())),
            ("reward", Input::Host(&reward)),
        ];
        let e = rlo_loss(&obj, &tl, &bad, &params, Backend::Interp).unwrap_err();
        assert!(e.to_string().contains("`logp`"), "{e}");
    }
}
