//! A decoder-only transformer with the Llama / Qwen2 architecture and Hugging Face weight names
//! (`model.embed_tokens`, `model.layers.N.self_attn.q_proj`, …, `lm_head`), so a local Qwen2 or
//! Llama checkpoint (`config.json` + `*.safetensors`) loads into it.
//!
//! Why not `candle_transformers::models::{llama, qwen2}` directly: their fused ops
//! (`candle_nn::ops::rms_norm`, `softmax_last_dim`, `rotary_emb::rope`) are `CustomOp`s without a
//! backward in candle 0.11, so gradients cannot reach the weights. This file computes the same
//! function from differentiable primitives (RMSNorm, rotate-half RoPE, softmax, SwiGLU, GQA).

use std::collections::HashMap;

use candle_core::{DType, Device, Module, Result, Tensor, D};
use candle_nn::{Embedding, Linear, VarBuilder};
use serde::{Deserialize, Serialize};

/// The subset of a Hugging Face Llama / Qwen2 `config.json` this model reads.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Biases on q/k/v (Qwen2 has them; Llama does not). Defaults to `model_type == "qwen2"`.
    #[serde(default)]
    pub attention_bias: Option<bool>,
    #[serde(default)]
    pub model_type: Option<String>,
}

fn default_max_pos() -> usize {
    4096
}
fn default_theta() -> f64 {
    10_000.0
}
fn default_eps() -> f64 {
    1e-6
}

impl Config {
    /// A tiny model for the toy tasks (about 0.1 M parameters at the defaults of `train`).
    pub fn tiny(vocab_size: usize, hidden: usize, layers: usize, heads: usize) -> Config {
        Config {
            vocab_size,
            hidden_size: hidden,
            intermediate_size: hidden * 3,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            num_key_value_heads: heads,
            max_position_embeddings: 256,
            rope_theta: 10_000.0,
            rms_norm_eps: 1e-6,
            tie_word_embeddings: false,
            attention_bias: Some(false),
            model_type: Some("llama".into()),
        }
    }

    fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    fn qkv_bias(&self) -> bool {
        self.attention_bias
            .unwrap_or(self.model_type.as_deref() == Some("qwen2"))
    }
}

struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    fn new(size: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get_with_hints(size, "weight", candle_nn::Init::Const(1.0))?;
        Ok(RmsNorm { weight, eps })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
        let x = x.broadcast_div(&(ms + self.eps)?.sqrt()?)?;
        x.broadcast_mul(&self.weight)
    }
}

struct Rotary {
    cos: Tensor,
    sin: Tensor,
}

impl Rotary {
    fn new(cfg: &Config, dev: &Device) -> Result<Self> {
        let dim = cfg.head_dim();
        let inv: Vec<f32> = (0..dim)
            .step_by(2)
            .map(|i| 1.0 / cfg.rope_theta.powf(i as f64 / dim as f64) as f32)
            .collect();
        let n = inv.len();
        let inv = Tensor::from_vec(inv, (1, n), dev)?;
        let t = Tensor::arange(0u32, cfg.max_position_embeddings as u32, dev)?
            .to_dtype(DType::F32)?
            .reshape((cfg.max_position_embeddings, 1))?;
        let freqs = t.matmul(&inv)?;
        let freqs = Tensor::cat(&[&freqs, &freqs], D::Minus1)?;
        Ok(Rotary {
            cos: freqs.cos()?,
            sin: freqs.sin()?,
        })
    }

    /// `x [B, H, T, hd]` at positions `offset..offset+T` (rotate-half convention of HF).
    fn apply(&self, x: &Tensor, offset: usize) -> Result<Tensor> {
        let (_, _, t, hd) = x.dims4()?;
        let cos = self.cos.narrow(0, offset, t)?;
        let sin = self.sin.narrow(0, offset, t)?;
        let x1 = x.narrow(D::Minus1, 0, hd / 2)?;
        let x2 = x.narrow(D::Minus1, hd / 2, hd / 2)?;
        let rot = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
        x.broadcast_mul(&cos)? + rot.broadcast_mul(&sin)?
    }
}

struct Layer {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    gate: Linear,
    up: Linear,
    down: Linear,
    ln1: RmsNorm,
    ln2: RmsNorm,
}

/// Per-layer key/value cache for incremental decoding.
#[derive(Default)]
pub struct Cache {
    kv: Vec<Option<(Tensor, Tensor)>>,
}

pub struct Model {
    pub cfg: Config,
    embed: Embedding,
    layers: Vec<Layer>,
    norm: RmsNorm,
    lm_head: Linear,
    rotary: Rotary,
    device: Device,
}

impl Model {
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Model> {
        let vm = vb.pp("model");
        let h = cfg.hidden_size;
        let hd = cfg.head_dim();
        let embed = candle_nn::embedding(cfg.vocab_size, h, vm.pp("embed_tokens"))?;
        let bias = cfg.qkv_bias();
        let lin = |i, o, b: bool, vb: VarBuilder| {
            if b {
                candle_nn::linear(i, o, vb)
            } else {
                candle_nn::linear_no_bias(i, o, vb)
            }
        };
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for l in 0..cfg.num_hidden_layers {
            let vl = vm.pp(format!("layers.{l}"));
            let va = vl.pp("self_attn");
            let vmlp = vl.pp("mlp");
            let kv = cfg.num_key_value_heads * hd;
            layers.push(Layer {
                q: lin(h, cfg.num_attention_heads * hd, bias, va.pp("q_proj"))?,
                k: lin(h, kv, bias, va.pp("k_proj"))?,
                v: lin(h, kv, bias, va.pp("v_proj"))?,
                o: lin(cfg.num_attention_heads * hd, h, false, va.pp("o_proj"))?,
                gate: lin(h, cfg.intermediate_size, false, vmlp.pp("gate_proj"))?,
                up: lin(h, cfg.intermediate_size, false, vmlp.pp("up_proj"))?,
                down: lin(cfg.intermediate_size, h, false, vmlp.pp("down_proj"))?,
                ln1: RmsNorm::new(h, cfg.rms_norm_eps, vl.pp("input_layernorm"))?,
                ln2: RmsNorm::new(h, cfg.rms_norm_eps, vl.pp("post_attention_layernorm"))?,
            });
        }
        let norm = RmsNorm::new(h, cfg.rms_norm_eps, vm.pp("norm"))?;
        let lm_head = if cfg.tie_word_embeddings {
            Linear::new(embed.embeddings().clone(), None)
        } else {
            candle_nn::linear_no_bias(h, cfg.vocab_size, vb.pp("lm_head"))?
        };
        let rotary = Rotary::new(cfg, vb.device())?;
        Ok(Model {
            cfg: cfg.clone(),
            embed,
            layers,
            norm,
            lm_head,
            rotary,
            device: vb.device().clone(),
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// A model over fixed tensors (detached or deep-copied weights: no gradient tracking).
    pub fn from_tensors(
        cfg: &Config,
        tensors: HashMap<String, Tensor>,
        dev: &Device,
    ) -> Result<Model> {
        Model::new(cfg, VarBuilder::from_tensors(tensors, DType::F32, dev))
    }

    /// Logits `[B, T, V]` of `ids [B, T]` at positions `offset..offset+T`. With a cache, keys and
    /// values of earlier calls are reused and this call's are appended. Causal attention: padding
    /// must come after the valid tokens of a row.
    pub fn forward(
        &self,
        ids: &Tensor,
        offset: usize,
        mut cache: Option<&mut Cache>,
    ) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let cfg = &self.cfg;
        let (nh, nkv, hd) = (
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.head_dim(),
        );
        let total = offset + t;
        let mask = if t > 1 {
            let m: Vec<f32> = (0..t)
                .flat_map(|i| {
                    (0..total).map(move |j| {
                        if j > i + offset {
                            f32::NEG_INFINITY
                        } else {
                            0.0
                        }
                    })
                })
                .collect();
            Some(Tensor::from_vec(m, (t, total), ids.device())?)
        } else {
            None
        };
        if let Some(c) = cache.as_deref_mut() {
            c.kv.resize(self.layers.len(), None);
        }
        let mut x = self.embed.forward(ids)?;
        for (li, layer) in self.layers.iter().enumerate() {
            let h = layer.ln1.forward(&x)?;
            let q = layer
                .q
                .forward(&h)?
                .reshape((b, t, nh, hd))?
                .transpose(1, 2)?;
            let k = layer
                .k
                .forward(&h)?
                .reshape((b, t, nkv, hd))?
                .transpose(1, 2)?;
            let v = layer
                .v
                .forward(&h)?
                .reshape((b, t, nkv, hd))?
                .transpose(1, 2)?;
            let q = self.rotary.apply(&q.contiguous()?, offset)?;
            let mut k = self.rotary.apply(&k.contiguous()?, offset)?;
            let mut v = v.contiguous()?;
            if let Some(c) = cache.as_deref_mut() {
                if let Some(Some((pk, pv))) = c.kv.get(li) {
                    k = Tensor::cat(&[pk, &k], 2)?;
                    v = Tensor::cat(&[pv, &v], 2)?;
                }
                if let Some(slot) = c.kv.get_mut(li) {
                    *slot = Some((k.clone(), v.clone()));
                }
            }
            let (k, v) = (repeat_kv(k, nh / nkv)?, repeat_kv(v, nh / nkv)?);
            let att = (q.matmul(&k.t()?)? / (hd as f64).sqrt())?;
            let att = match &mask {
                Some(m) => att.broadcast_add(m)?,
                None => att,
            };
            let att = candle_nn::ops::softmax(&att, D::Minus1)?;
            let y = att.matmul(&v)?.transpose(1, 2)?.reshape((b, t, nh * hd))?;
            x = (x + layer.o.forward(&y)?)?;
            let h = layer.ln2.forward(&x)?;
            let mlp = (candle_nn::ops::silu(&layer.gate.forward(&h)?)? * layer.up.forward(&h)?)?;
            x = (x + layer.down.forward(&mlp)?)?;
        }
        self.lm_head.forward(&self.norm.forward(&x)?)
    }
}

fn repeat_kv(x: Tensor, n: usize) -> Result<Tensor> {
    if n == 1 {
        return Ok(x);
    }
    let (b, h, t, d) = x.dims4()?;
    x.unsqueeze(2)?
        .expand((b, h, n, t, d))?
        .reshape((b, h * n, t, d))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use candle_nn::VarMap;

    #[test]
    fn cached_decoding_matches_full_forward() {
        let dev = Device::Cpu;
        let vm = VarMap::new();
        let mut cfg = Config::tiny(11, 16, 2, 4);
        cfg.num_key_value_heads = 2;
        let m = Model::new(&cfg, VarBuilder::from_varmap(&vm, DType::F32, &dev)).unwrap();
        let ids = Tensor::new(&[[1u32, 5, 3, 7, 2], [4, 4, 9, 0, 1]], &dev).unwrap();
        let full = m.forward(&ids, 0, None).unwrap();
        let mut cache = Cache::default();
        let a = m
            .forward(&ids.narrow(1, 0, 3).unwrap(), 0, Some(&mut cache))
            .unwrap();
        let b = m
            .forward(&ids.narrow(1, 3, 1).unwrap(), 3, Some(&mut cache))
            .unwrap();
        let c = m
            .forward(&ids.narrow(1, 4, 1).unwrap(), 4, Some(&mut cache))
            .unwrap();
        let inc = Tensor::cat(&[&a, &b, &c], 1).unwrap();
        let diff = (full - inc).unwrap().abs().unwrap().max_all().unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() < 1e-5);
    }
}
