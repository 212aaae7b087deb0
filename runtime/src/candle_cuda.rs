//! The CUDA path of the candle op (feature `cuda`): the objective's NVRTC kernels run on candle's
//! own stream, read the policy's tensors where candle keeps them and write the gradients into
//! device memory that becomes candle tensors. The returned loss is the same exact surrogate as on
//! the host path (see the parent module's docs), so `loss.backward()` reaches the weights.
//!
//! # Layouts
//! When every row's valid tokens are a prefix (`TokenLayout::from_lengths`, or a right-padded
//! mask) the program is emitted for padded `[B, T]` tokens (`TokLayout::Padded`): the kernels read
//! candle's `[B, T]` tensors in place (at their start offset) and write `[B, T]` gradients with
//! zeros at the padding. Otherwise (left padding, holes) a packed program is used: candle's
//! `index_select` gathers the valid tokens on the device, and `index_add` scatters the gradients
//! back into `[B, T]`.
//!
//! # What crosses between host and device, per call
//! - to the device: the batch layout (int32 offsets, lengths and group ids, `O(B)`), the
//!   parameters (inside the kernel argument), inputs given as host values ([`Input::Host`]:
//!   rewards, `correct`; `O(B)`), and the loss value as the surrogate's constant (one scalar);
//! - to the host: the loss and each metric (one `f32` each; reading them waits for the work
//!   queued on the stream before, i.e. the policy's forward pass), and the outputs only when
//!   [`CudaLoss::download_outputs`] asked for them;
//! - never: token data (`logp`, `entropy`, `old_logp`, `ref_logp` and their gradients).
//!
//! # Reuse between calls
//! Programs are compiled once per (token layout, storage type) through NVRTC's caches; the
//! [`DeviceLayout`] arrays are overwritten in place while the numbers of sequences and groups
//! repeat; a [`Workspace`] is kept while its buffer sizes repeat (padded tokens: same `B`, `T`
//! and number of groups, whatever the lengths); up to four of each are cached, so minibatches
//! of alternating shapes reuse theirs; buffers of host inputs and the two timing events are
//! reused. What a call still allocates: the gradient tensors handed to candle (candle owns
//! them, like the result of any candle op) and the few candle ops of the surrogate.
#![allow(unsafe_code)]

use std::sync::Arc;
use std::time::Instant;

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{
    sys::CUevent_flags, CudaEvent, CudaSlice, CudaStream, DevicePtr,
};
use candle_core::op::BackpropOp;
use candle_core::{CudaStorage, DType, Device, Storage, Tensor};
use rlo_compiler::back::cuda::{CudaOptions, StorageType, TokLayout};
use rlo_compiler::types::{DType as RloDType, Level};

use super::{surrogate, CandleLossError, Input, Result, RloLoss, TokenLayout};
use crate::cuda::{CudaDevice, CudaObjective, DeviceLayout, Workspace};
use crate::{Evaluation, Objective, RuntimeError};

fn drv(
    what: &'static str,
) -> impl Fn(candle_core::cuda_backend::cudarc::driver::DriverError) -> CandleLossError {
    move |e| CandleLossError::Runtime(RuntimeError::Cuda(format!("{what}: {e:?}")))
}

/// A candle CUDA device, or a clear error where there is no driver or GPU (cudarc, built with
/// `dynamic-loading`, would otherwise panic when it fails to open `libcuda.so`).
pub fn cuda_device(ordinal: usize) -> Result<Device> {
    use candle_core::cuda_backend::cudarc::driver::sys::is_culib_present;
    // SAFETY: only tries to dlopen the candidate library names; calls nothing in them.
    let present = std::panic::catch_unwind(|| unsafe { is_culib_present() }).unwrap_or(false);
    if !present {
        return Err(RuntimeError::CudaUnavailable(
            "no CUDA driver (libcuda.so.1) on this machine: it is opened through the dynamic loader (LD_LIBRARY_PATH)".into(),
        )
        .into());
    }
    match std::panic::catch_unwind(|| Device::new_cuda(ordinal)) {
        Ok(Ok(d)) => Ok(d),
        Ok(Err(e)) => Err(RuntimeError::CudaUnavailable(format!("no usable GPU {ordinal}: {e}")).into()),
        Err(_) => Err(RuntimeError::CudaUnavailable(format!(
            "opening GPU {ordinal} failed while loading a CUDA library (libcuda, libcublas, libcurand on LD_LIBRARY_PATH?)"
        ))
        .into()),
    }
}

/// GPU time of the last call's loss kernels and host time of the whole call.
#[derive(Clone, Copy, Debug, Default)]
pub struct LossTiming {
    /// Between CUDA events recorded just before the first and after the last loss kernel.
    pub kernel_ms: f64,
    /// Wall time of [`CudaLoss::evaluate`], including the wait for work queued before it.
    pub call_ms: f64,
}

type ProgramKey = (TokLayout, StorageType);

/// Layouts and workspaces kept for reuse.
const KEEP: usize = 4;

/// Appends `x`, dropping the oldest entry beyond [`KEEP`]; returns the index of `x`.
fn push_capped<T>(v: &mut Vec<T>, x: T) -> usize {
    if v.len() >= KEEP {
        v.remove(0);
    }
    v.push(x);
    v.len() - 1
}

/// One objective's CUDA kernels on one candle CUDA device, with the buffers reused between calls.
pub struct CudaLoss {
    /// Which objective this was made for: name, then `(input, level, dtype)`.
    signature: (String, Vec<(String, Level, RloDType)>),
    candle: candle_core::CudaDevice,
    dev: CudaDevice,
    programs: Vec<(ProgramKey, CudaObjective)>,
    /// Recently used layouts (at most [`KEEP`]), reused by number of sequences and groups.
    layouts: Vec<DeviceLayout>,
    /// Recently used workspaces (at most [`KEEP`]), reused by program and buffer sizes.
    workspaces: Vec<(ProgramKey, Workspace)>,
    /// Device copies of `Input::Host` values, one slot per module input.
    host_bufs: Vec<Option<CudaSlice<f32>>>,
    /// Packed path: the `[B, T]` positions of the valid tokens and the same as a u32 tensor.
    gather: Option<(Vec<usize>, Tensor)>,
    events: (CudaEvent, CudaEvent),
    outputs: bool,
    /// The last call's timing.
    pub timing: LossTiming,
}

fn signature(objective: &Objective) -> (String, Vec<(String, Level, RloDType)>) {
    let m = &objective.compiled.module;
    let inputs = m
        .inputs
        .iter()
        .map(|i| (i.name.clone(), i.ty.level, i.ty.dtype))
        .collect();
    (m.name.clone(), inputs)
}

fn storage_of(dtype: DType) -> StorageType {
    match dtype {
        DType::BF16 => StorageType::Bf16,
        DType::F16 => StorageType::F16,
        _ => StorageType::F32,
    }
}

fn candle_dtype(s: StorageType) -> DType {
    match s {
        StorageType::F32 => DType::F32,
        StorageType::Bf16 => DType::BF16,
        StorageType::F16 => DType::F16,
    }
}

/// An input as the kernels read it.
enum Prepared {
    /// A contiguous candle tensor on the device (kept alive until the kernels ran).
    Tensor(Tensor),
    /// `host_bufs[k]`.
    Host(usize),
}

impl CudaLoss {
    /// For `objective` on `device` (a candle CUDA device). Nothing is compiled yet: the first
    /// [`CudaLoss::evaluate`] emits and compiles the program its batch needs.
    pub fn new(objective: &Objective, device: &Device) -> Result<CudaLoss> {
        let Device::Cuda(candle) = device else {
            return Err(CandleLossError::Structure(format!(
                "the CUDA loss needs a candle CUDA device, got {device:?}"
            )));
        };
        let dev = CudaDevice::from_stream(candle.cuda_stream())?;
        let timing_event = || {
            dev.ctx
                .new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
                .map_err(drv("event"))
        };
        let events = (timing_event()?, timing_event()?);
        Ok(CudaLoss {
            signature: signature(objective),
            candle: candle.clone(),
            host_bufs: objective
                .compiled
                .module
                .inputs
                .iter()
                .map(|_| None)
                .collect(),
            dev,
            programs: Vec::new(),
            layouts: Vec::new(),
            workspaces: Vec::new(),
            gather: None,
            events,
            outputs: false,
            timing: LossTiming::default(),
        })
    }

    /// Whether [`CudaLoss::evaluate`] copies the objective's outputs to the host (default: no;
    /// `RloLoss::outputs` is then empty).
    pub fn download_outputs(&mut self, yes: bool) {
        self.outputs = yes;
    }

    /// NVRTC ran (no cache hit) for one of the programs loaded so far.
    pub fn compiled_now(&self) -> bool {
        self.programs.iter().any(|(_, p)| p.compiled_now)
    }

    fn program(&mut self, objective: &Objective, key: ProgramKey) -> Result<usize> {
        if let Some(i) = self.programs.iter().position(|(k, _)| *k == key) {
            return Ok(i);
        }
        let c = &objective.compiled;
        let opts = CudaOptions {
            layout: key.0,
            tok_dtype: key.1,
            sources: Some(c.sources.clone()),
            ..Default::default()
        };
        let p = CudaObjective::from_compiled(&self.dev, c, &opts)?;
        self.programs.push((key, p));
        Ok(self.programs.len() - 1)
    }

    /// The u32 `[B, T]` positions of the valid tokens, as a device tensor (packed path).
    fn gather_index(&mut self, tokens: &TokenLayout) -> Result<Tensor> {
        if let Some((index, t)) = &self.gather {
            if index.as_slice() == tokens.index() {
                return Ok(t.clone());
            }
        }
        let idx: Vec<u32> = tokens
            .index()
            .iter()
            .map(|&k| {
                u32::try_from(k).map_err(|_| {
                    CandleLossError::Structure(format!("token position {k} does not fit u32"))
                })
            })
            .collect::<Result<_>>()?;
        let n = idx.len();
        let t = Tensor::from_vec(idx, n, &Device::Cuda(self.candle.clone()))?;
        self.gather = Some((tokens.index().to_vec(), t.clone()));
        Ok(t)
    }

    /// Copies host values into the reused buffer of input `k`.
    fn upload_host(&mut self, k: usize, values: &[f32]) -> Result<()> {
        let stream = self.dev.stream.clone();
        let slot = self
            .host_bufs
            .get_mut(k)
            .ok_or_else(|| CandleLossError::Structure(format!("no buffer for input {k}")))?;
        match slot {
            Some(buf) if buf.len() == values.len().max(1) => {
                if !values.is_empty() {
                    stream
                        .memcpy_htod(values, buf)
                        .map_err(drv("copy to device"))?;
                }
            }
            _ => {
                *slot = Some(if values.is_empty() {
                    stream.alloc_zeros::<f32>(1).map_err(drv("alloc"))?
                } else {
                    stream.clone_htod(values).map_err(drv("copy to device"))?
                });
            }
        }
        Ok(())
    }

    /// Loss, gradients (device tensors) and metrics of `objective` on a batch of tensors on this
    /// CUDA device, with the same contract as [`super::rlo_loss`]. `RloLoss::evaluation.grads`
    /// is empty here (the gradients stay on the device, in `RloLoss::grads`);
    /// `RloLoss::kernel_ms` is the GPU time of the loss kernels.
    pub fn evaluate(
        &mut self,
        objective: &Objective,
        tokens: &TokenLayout,
        inputs: &[(&str, Input<'_>)],
        params: &[f64],
    ) -> Result<RloLoss> {
        let t0 = Instant::now();
        if signature(objective) != self.signature {
            return Err(CandleLossError::Structure(format!(
                "this CUDA loss was made for objective `{}`, not `{}`",
                self.signature.0, objective.compiled.module.name
            )));
        }
        let module = &objective.compiled.module;
        if params.len() != module.params.len() {
            return Err(RuntimeError::ParamCount {
                objective: module.name.clone(),
                expected: module.params.len(),
                got: params.len(),
            }
            .into());
        }
        let device = Device::Cuda(self.candle.clone());
        let (b, t) = tokens.dims();
        let layout = tokens.layout();
        let padded = tokens.is_prefix();
        let find = |name: &str| {
            inputs
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, i)| i)
                .ok_or_else(|| CandleLossError::Input {
                    name: name.to_string(),
                    message: "the objective declares it but it was not given".into(),
                })
        };
        // Token inputs share one storage type: that of the first token tensor given (logp).
        let mut stype = StorageType::F32;
        for decl in &module.inputs {
            if decl.ty.level == Level::Tok && decl.ty.dtype == RloDType::F32 {
                if let Ok(Input::Tensor(x)) = find(&decl.name) {
                    stype = storage_of(x.dtype());
                    break;
                }
            }
        }
        let key = (
            if padded {
                TokLayout::Padded
            } else {
                TokLayout::Packed
            },
            stype,
        );
        let pi = self.program(objective, key)?;
        let gather = if padded {
            None
        } else {
            Some(self.gather_index(tokens)?)
        };

        let mut prepared = Vec::with_capacity(module.inputs.len());
        for (k, decl) in module.inputs.iter().enumerate() {
            let level = decl.ty.level;
            let packed_count = layout.count(level);
            let bad = |message: String| CandleLossError::Input {
                name: decl.name.clone(),
                message,
            };
            let tok_dtype = if level == Level::Tok && decl.ty.dtype == RloDType::F32 {
                candle_dtype(stype)
            } else {
                DType::F32
            };
            match find(&decl.name)? {
                Input::Tensor(x) => {
                    if !x.device().same_device(&device) {
                        return Err(bad(format!(
                            "on {:?}, not on the CUDA device of the loss",
                            x.device()
                        )));
                    }
                    let y = if level == Level::Tok {
                        if x.dims() != [b, t] {
                            return Err(bad(format!(
                                "expected a [{b}, {t}] tensor, got {:?}",
                                x.dims()
                            )));
                        }
                        let y = x.to_dtype(tok_dtype)?;
                        if padded {
                            y.contiguous()?
                        } else {
                            let idx = gather.as_ref().ok_or_else(|| {
                                CandleLossError::Structure("no gather index".into())
                            })?;
                            y.flatten_all()?.index_select(idx, 0)?
                        }
                    } else {
                        let y = x.to_dtype(DType::F32)?.flatten_all()?.contiguous()?;
                        if y.elem_count() != packed_count {
                            return Err(bad(format!(
                                "a {level:?}-level input needs {packed_count} values, got {}",
                                y.elem_count()
                            )));
                        }
                        y
                    };
                    prepared.push(Prepared::Tensor(y));
                }
                Input::Host(v) => {
                    if v.len() != packed_count {
                        return Err(bad(format!(
                            "a {level:?}-level input needs {packed_count} values, got {}",
                            v.len()
                        )));
                    }
                    let vals: Vec<f32> = if level == Level::Tok && padded {
                        let mut full = vec![0f32; b * t];
                        for (&pos, &x) in tokens.index().iter().zip(v.iter()) {
                            if let Some(slot) = full.get_mut(pos) {
                                *slot = x as f32;
                            }
                        }
                        full
                    } else {
                        v.iter().map(|&x| x as f32).collect()
                    };
                    if tok_dtype == DType::F32 {
                        self.upload_host(k, &vals)?;
                        prepared.push(Prepared::Host(k));
                    } else {
                        let n = vals.len();
                        let y = Tensor::from_vec(vals, n, &device)?.to_dtype(tok_dtype)?;
                        prepared.push(Prepared::Tensor(y));
                    }
                }
            }
        }

        // The layout arrays, copied into the buffers of a cached layout with the same numbers of
        // sequences and groups; the workspace, a cached one with the same buffer sizes. A few of
        // each are kept, so minibatches of alternating shapes allocate nothing either.
        let stream = self.dev.stream.clone();
        let lengths: Vec<usize> = layout.seq_offsets.windows(2).map(|w| w[1] - w[0]).collect();
        let stride = if padded { t } else { 0 };
        let li = match self
            .layouts
            .iter()
            .position(|l| l.n_seqs == b && l.n_groups == layout.n_groups)
        {
            Some(i) => {
                if let Some(l) = self.layouts.get_mut(i) {
                    l.update(
                        &stream,
                        &lengths,
                        &layout.seq_group,
                        layout.n_groups,
                        stride,
                    )?;
                }
                i
            }
            None => {
                let l = DeviceLayout::new(
                    &stream,
                    &lengths,
                    &layout.seq_group,
                    layout.n_groups,
                    stride,
                )?;
                push_capped(&mut self.layouts, l)
            }
        };
        let lay = self
            .layouts
            .get(li)
            .ok_or_else(|| CandleLossError::Structure("no device layout".into()))?;
        let (_, obj) = self
            .programs
            .get(pi)
            .ok_or_else(|| CandleLossError::Structure("no program".into()))?;
        let wi = match self
            .workspaces
            .iter()
            .position(|(k, ws)| *k == key && ws.fits(lay))
        {
            Some(i) => i,
            None => {
                let ws = Workspace::new(&stream, &obj.program, lay)?;
                push_capped(&mut self.workspaces, (key, ws))
            }
        };
        let ws = match self.workspaces.get_mut(wi) {
            Some((_, ws)) => ws,
            None => return Err(CandleLossError::Structure("no workspace".into())),
        };

        {
            // Device pointers of the inputs. The storage lock and cudarc's event-tracking guard
            // are released at once (an input given twice would otherwise take the same lock
            // twice): all the work is on candle's one stream, whose order alone puts the kernels
            // after the writes of the inputs and before any later reuse of their memory.
            let mut ptrs = Vec::with_capacity(prepared.len());
            for p in &prepared {
                let ptr =
                    match p {
                        Prepared::Tensor(y) => {
                            let (storage, l) = y.storage_and_layout();
                            tensor_ptr(&storage, l.start_offset(), l.is_contiguous(), &stream)?
                        }
                        Prepared::Host(k) => {
                            let buf = self.host_bufs.get(*k).and_then(|b| b.as_ref()).ok_or_else(
                                || CandleLossError::Structure(format!("no buffer for input {k}")),
                            )?;
                            buf.device_ptr(&stream).0
                        }
                    };
                ptrs.push(ptr);
            }
            self.events.0.record(&stream).map_err(drv("event"))?;
            // SAFETY: `ptrs[i]` points to module input `i` on this stream's device: a contiguous
            // candle tensor (kept alive in `prepared` until this function returns, so its memory
            // is freed, stream-ordered, only after the kernels) or a buffer of `host_bufs`, each with
            // `lay.count(level)` elements at the input's level — `[B, T]` token data for the
            // padded program, packed for the packed one, as checked above — stored as the
            // program's `tok_dtype` for f32 token inputs and as f32 otherwise (the `to_dtype`
            // conversions above). Every launch is on candle's stream, after the work that wrote
            // the inputs.
            unsafe { obj.launch(&stream, lay, &ptrs, ws, params)? };
            self.events.1.record(&stream).map_err(drv("event"))?;
        }

        let program = &obj.program;
        let scalar = |slot: usize| -> Result<f64> {
            let buf = ws.buffer(slot).ok_or_else(|| {
                CandleLossError::Structure(format!("result slot {slot} has no buffer"))
            })?;
            let v = stream
                .clone_dtoh(&buf.slice(0..1))
                .map_err(drv("copy to host"))?;
            Ok(v.first().copied().map(f64::from).unwrap_or(0.0))
        };
        let value = scalar(program.loss.slot)?;
        let mut metric_values = Vec::with_capacity(program.metrics.len());
        for r in &program.metrics {
            metric_values.push(scalar(r.slot)?);
        }
        let kernel_ms = f64::from(
            self.events
                .0
                .elapsed_ms(&self.events.1)
                .map_err(drv("event timing"))?,
        );

        let mut terms = Vec::new();
        let mut grads = Vec::new();
        for (grad, r) in module.grads.iter().zip(&program.grads) {
            let Some(decl) = module.inputs.get(grad.input as usize) else {
                continue;
            };
            let Ok(Input::Tensor(x)) = find(&decl.name) else {
                continue;
            };
            let buf = ws.buffer(r.slot).ok_or_else(|| {
                CandleLossError::Structure(format!("gradient slot {} has no buffer", r.slot))
            })?;
            let n = lay.count(r.level);
            if buf.len() < n {
                return Err(CandleLossError::Structure(format!(
                    "gradient buffer of {} values for {n}",
                    buf.len()
                )));
            }
            let copy = stream
                .clone_dtod(&buf.slice(0..n))
                .map_err(drv("copy gradient"))?;
            let g = Tensor::from_storage(
                Storage::Cuda(CudaStorage::wrap_cuda_slice(copy, self.candle.clone())),
                n,
                BackpropOp::none(),
                false,
            );
            let g = if decl.ty.level != Level::Tok {
                g.reshape(x.shape())?
            } else if padded {
                g.reshape((b, t))?
            } else {
                let idx = gather
                    .as_ref()
                    .ok_or_else(|| CandleLossError::Structure("no gather index".into()))?;
                Tensor::zeros(b * t, DType::F32, &device)?
                    .index_add(idx, &g, 0)?
                    .reshape((b, t))?
            };
            let g = g.to_dtype(x.dtype())?;
            let mask = (decl.ty.level == Level::Tok).then(|| tokens.mask().clone());
            terms.push(((*x).clone(), g.clone(), mask));
            grads.push((decl.name.clone(), g));
        }

        let mut outputs = Vec::new();
        if self.outputs {
            for (o, r) in module.outputs.iter().zip(&program.outputs) {
                let buf = ws.buffer(r.slot).ok_or_else(|| {
                    CandleLossError::Structure(format!("output slot {} has no buffer", r.slot))
                })?;
                let n = lay.count(r.level);
                let v = stream
                    .clone_dtoh(&buf.slice(0..n.min(buf.len())))
                    .map_err(drv("copy to host"))?;
                let v: Vec<f64> = if r.level == Level::Tok && padded {
                    tokens
                        .index()
                        .iter()
                        .map(|&k| v.get(k).copied().map_or(0.0, f64::from))
                        .collect()
                } else {
                    v.into_iter().map(f64::from).collect()
                };
                outputs.push((o.name.clone(), v));
            }
        }

        let loss = surrogate(value, &terms, &device)?;
        drop(prepared);
        let metrics = module
            .metrics
            .iter()
            .zip(&metric_values)
            .map(|(m, v)| (m.name.clone(), *v))
            .collect();
        self.timing = LossTiming {
            kernel_ms,
            call_ms: t0.elapsed().as_secs_f64() * 1e3,
        };
        Ok(RloLoss {
            loss,
            value,
            metrics,
            evaluation: Evaluation {
                loss: value,
                grads: Vec::new(),
                metrics: metric_values,
                outputs: outputs.iter().map(|(_, v)| v.clone()).collect(),
            },
            outputs,
            grads,
            kernel_ms: Some(kernel_ms),
        })
    }
}

/// The device address of element 0 of a contiguous tensor's view of `storage` (f32, bf16 or
/// f16), made ready for reading on `stream` (cudarc waits for recorded writes from elsewhere).
fn tensor_ptr(
    storage: &Storage,
    start_offset: usize,
    contiguous: bool,
    stream: &Arc<CudaStream>,
) -> Result<u64> {
    let Storage::Cuda(cs) = storage else {
        return Err(CandleLossError::Structure(
            "an input is not in CUDA memory".into(),
        ));
    };
    if !contiguous {
        return Err(CandleLossError::Structure(
            "an input is not contiguous".into(),
        ));
    }
    let (base, size) = match cs.dtype() {
        DType::F32 => (cs.as_cuda_slice::<f32>()?.device_ptr(stream).0, 4),
        DType::BF16 => (cs.as_cuda_slice::<half::bf16>()?.device_ptr(stream).0, 2),
        DType::F16 => (cs.as_cuda_slice::<half::f16>()?.device_ptr(stream).0, 2),
        other => {
            return Err(CandleLossError::Structure(format!(
                "inputs are read as f32, bf16 or f16, not {other:?}"
            )))
        }
    };
    Ok(base + (start_offset * size) as u64)
}
