//! Running a [`CudaProgram`]: the device layout arrays, a reusable workspace, the `RloCtx` kernel
//! argument, launches on a caller's stream, and the host-`Batch` convenience path.

use std::sync::Arc;

use cudarc::driver::{
    CudaFunction, CudaSlice, CudaStream, DevicePtr, DeviceRepr, LaunchConfig, PushKernelArg,
};
use rlo_compiler::back::cuda::{
    emit, CudaOptions, CudaProgram, Grid, Slot, StorageType, TokLayout, CTX_HEADER_WORDS,
    CTX_MAX_WORDS, SORT_TILE,
};
use rlo_compiler::{Batch, Compiled, Evaluation, Layout, Level};

use super::CudaDevice;
use crate::RuntimeError;

fn drv(what: &str) -> impl Fn(cudarc::driver::DriverError) -> RuntimeError + '_ {
    move |e| RuntimeError::Cuda(format!("{what}: {e:?}"))
}

/// The kernel argument: `RloCtx` as 8-byte words (see `back::cuda`).
#[repr(C)]
#[derive(Clone, Copy)]
struct CtxArg([u64; CTX_MAX_WORDS]);

// SAFETY: a plain array of u64, passed by value; the kernel reads the first `ctx_words` words
// (the emitter guarantees `ctx_words <= CTX_MAX_WORDS`), every field of `RloCtx` being 8 bytes.
unsafe impl DeviceRepr for CtxArg {}

/// The layout arrays on the device (all `int32`), for packed or padded token data.
pub struct DeviceLayout {
    pub n_seqs: usize,
    pub n_groups: usize,
    pub n_tokens: usize,
    /// `T` for padded `[B, T]` data, 0 for packed.
    pub tok_stride: usize,
    pub n_turns: usize,
    seq_off: CudaSlice<i32>,
    seq_len: CudaSlice<i32>,
    seq_group: CudaSlice<i32>,
    group_off: CudaSlice<i32>,
    group_seqs: CudaSlice<i32>,
    turn_off: CudaSlice<i32>,
    /// Per token (packed, or `[B, T]` padded); `None`: one turn per sequence.
    tok_turn: Option<CudaSlice<i32>>,
}

fn to_i32(v: usize, what: &str) -> Result<i32, RuntimeError> {
    i32::try_from(v).map_err(|_| RuntimeError::Layout {
        message: format!("{what} = {v} does not fit the CUDA backend's 32-bit indices"),
    })
}

fn upload<T: DeviceRepr + cudarc::driver::ValidAsZeroBits>(
    stream: &Arc<CudaStream>,
    v: &[T],
) -> Result<CudaSlice<T>, RuntimeError> {
    if v.is_empty() {
        // a zero-sized allocation is an error for the driver; one element is never read
        return stream.alloc_zeros::<T>(1).map_err(drv("alloc"));
    }
    stream.clone_htod(v).map_err(drv("copy to device"))
}

/// The layout arrays of [`DeviceLayout`], computed and checked on the host (public for the CUDA
/// emulator of the tests, which runs the kernels on exactly these arrays).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostLayout {
    pub n_tokens: usize,
    pub n_turns: usize,
    /// `B + 1` packed token offsets.
    pub seq_off: Vec<i32>,
    pub seq_len: Vec<i32>,
    pub seq_group: Vec<i32>,
    /// `G + 1` offsets into `group_seqs`.
    pub group_off: Vec<i32>,
    /// The sequences of each group, ascending.
    pub group_seqs: Vec<i32>,
    pub turn_off: Vec<i32>,
    /// Per token (packed, or `[B, T]` padded); `None`: one turn per sequence.
    pub tok_turn: Option<Vec<i32>>,
}

impl HostLayout {
    /// See [`DeviceLayout::with_turns`].
    pub fn new(
        lengths: &[usize],
        seq_group: &[u32],
        n_groups: usize,
        tok_stride: usize,
        turn_off: &[usize],
        tok_turn: Option<&[u32]>,
    ) -> Result<HostLayout, RuntimeError> {
        let b = lengths.len();
        let mut off = Vec::with_capacity(b + 1);
        let mut acc = 0usize;
        off.push(0);
        for &l in lengths {
            if tok_stride > 0 && l > tok_stride {
                return Err(RuntimeError::Layout {
                    message: format!("a sequence has {l} tokens, more than T = {tok_stride}"),
                });
            }
            acc += l;
            off.push(to_i32(acc, "number of tokens")?);
        }
        let len: Vec<i32> = lengths
            .iter()
            .map(|&l| to_i32(l, "sequence length"))
            .collect::<Result<_, _>>()?;
        if seq_group.len() != b {
            return Err(RuntimeError::Layout {
                message: format!("{} group ids for {b} sequences", seq_group.len()),
            });
        }
        let mut counts = vec![0usize; n_groups + 1];
        for &g in seq_group {
            match counts.get_mut(g as usize + 1) {
                Some(c) => *c += 1,
                None => {
                    return Err(RuntimeError::Layout {
                        message: format!("group id {g} out of range 0..{n_groups}"),
                    })
                }
            }
        }
        for i in 1..counts.len() {
            let prev = counts.get(i - 1).copied().unwrap_or(0);
            if let Some(c) = counts.get_mut(i) {
                *c += prev;
            }
        }
        let group_off: Vec<i32> = counts
            .iter()
            .map(|&c| to_i32(c, "sequences"))
            .collect::<Result<_, _>>()?;
        let mut fill = counts.clone();
        let mut group_seqs = vec![0i32; b];
        for (s, &g) in seq_group.iter().enumerate() {
            if let Some(slot) = fill.get_mut(g as usize) {
                if let Some(x) = group_seqs.get_mut(*slot) {
                    *x = to_i32(s, "sequences")?;
                }
                *slot += 1;
            }
        }
        let sg: Vec<i32> = seq_group.iter().map(|&g| g as i32).collect();
        if turn_off.len() != b + 1 {
            return Err(RuntimeError::Layout {
                message: format!("{} turn offsets for {b} sequences", turn_off.len()),
            });
        }
        let to: Vec<i32> = turn_off
            .iter()
            .map(|&x| to_i32(x, "turns"))
            .collect::<Result<_, _>>()?;
        let tt = match tok_turn {
            Some(v) => Some(
                v.iter()
                    .map(|&x| to_i32(x as usize, "turns"))
                    .collect::<Result<Vec<i32>, _>>()?,
            ),
            None => None,
        };
        Ok(HostLayout {
            n_tokens: acc,
            n_turns: turn_off.last().copied().unwrap_or(0),
            seq_off: off,
            seq_len: len,
            seq_group: sg,
            group_off,
            group_seqs,
            turn_off: to,
            tok_turn: tt,
        })
    }
}

impl DeviceLayout {
    /// From lengths, group ids (`0..n_groups`, every group non-empty) and the token layout;
    /// one turn per sequence.
    pub fn new(
        stream: &Arc<CudaStream>,
        lengths: &[usize],
        seq_group: &[u32],
        n_groups: usize,
        tok_stride: usize,
    ) -> Result<DeviceLayout, RuntimeError> {
        let turn_off: Vec<usize> = (0..=lengths.len()).collect();
        DeviceLayout::with_turns(
            stream, lengths, seq_group, n_groups, tok_stride, &turn_off, None,
        )
    }

    /// Like [`DeviceLayout::new`] with turn data: `turn_off` (B+1 packed turn offsets) and the
    /// packed turn of every token (laid out like the tokens: packed, or `[B, T]` padded).
    pub fn with_turns(
        stream: &Arc<CudaStream>,
        lengths: &[usize],
        seq_group: &[u32],
        n_groups: usize,
        tok_stride: usize,
        turn_off: &[usize],
        tok_turn: Option<&[u32]>,
    ) -> Result<DeviceLayout, RuntimeError> {
        let h = HostLayout::new(lengths, seq_group, n_groups, tok_stride, turn_off, tok_turn)?;
        Ok(DeviceLayout {
            n_seqs: lengths.len(),
            n_groups,
            n_tokens: h.n_tokens,
            tok_stride,
            n_turns: h.n_turns,
            turn_off: upload(stream, &h.turn_off)?,
            tok_turn: match &h.tok_turn {
                Some(v) => Some(upload(stream, v)?),
                None => None,
            },
            seq_off: upload(stream, &h.seq_off)?,
            seq_len: upload(stream, &h.seq_len)?,
            seq_group: upload(stream, &h.seq_group)?,
            group_off: upload(stream, &h.group_off)?,
            group_seqs: upload(stream, &h.group_seqs)?,
        })
    }

    /// Makes this the single-turn layout of `lengths`/`seq_group` (as [`DeviceLayout::new`]),
    /// copying into the existing device arrays when the numbers of sequences and groups are
    /// unchanged (a training loop whose lengths change every step allocates nothing), else
    /// allocating new ones. Copies are ordered on `stream`, after the work already queued there.
    pub fn update(
        &mut self,
        stream: &Arc<CudaStream>,
        lengths: &[usize],
        seq_group: &[u32],
        n_groups: usize,
        tok_stride: usize,
    ) -> Result<(), RuntimeError> {
        if lengths.len() != self.n_seqs || n_groups != self.n_groups || self.tok_turn.is_some() {
            *self = DeviceLayout::new(stream, lengths, seq_group, n_groups, tok_stride)?;
            return Ok(());
        }
        let turn_off: Vec<usize> = (0..=lengths.len()).collect();
        let h = HostLayout::new(lengths, seq_group, n_groups, tok_stride, &turn_off, None)?;
        let copy = |src: &[i32], dst: &mut CudaSlice<i32>| -> Result<(), RuntimeError> {
            if src.is_empty() {
                return Ok(());
            }
            stream.memcpy_htod(src, dst).map_err(drv("copy to device"))
        };
        copy(&h.seq_off, &mut self.seq_off)?;
        copy(&h.seq_len, &mut self.seq_len)?;
        copy(&h.seq_group, &mut self.seq_group)?;
        copy(&h.group_off, &mut self.group_off)?;
        copy(&h.group_seqs, &mut self.group_seqs)?;
        copy(&h.turn_off, &mut self.turn_off)?;
        self.n_tokens = h.n_tokens;
        self.n_turns = h.n_turns;
        self.tok_stride = tok_stride;
        Ok(())
    }

    /// The packed layout of a bound batch, turns included.
    pub fn packed(stream: &Arc<CudaStream>, l: &Layout) -> Result<DeviceLayout, RuntimeError> {
        let lengths: Vec<usize> = l.seq_offsets.windows(2).map(|w| w[1] - w[0]).collect();
        DeviceLayout::with_turns(
            stream,
            &lengths,
            &l.seq_group,
            l.n_groups,
            0,
            &l.turn_offsets,
            Some(&l.tok_turn),
        )
    }

    /// Elements of a buffer at `level`.
    pub fn count(&self, level: Level) -> usize {
        match level {
            Level::Turn => self.n_turns,
            Level::Tok => {
                if self.tok_stride > 0 {
                    self.n_seqs * self.tok_stride
                } else {
                    self.n_tokens
                }
            }
            Level::Seq => self.n_seqs,
            Level::Group => self.n_groups,
            Level::Batch => 1,
        }
    }
}

/// The device buffers of one program for one batch shape; reused across steps (a training step
/// whose buffers have the same sizes allocates nothing: with padded `[B, T]` tokens that is any
/// batch with the same `B`, `T` and number of groups, whatever the lengths).
pub struct Workspace {
    /// Elements per buffer at the levels tok, turn, seq, group.
    sizes: [usize; 4],
    /// One per slot; `None` for inputs.
    bufs: Vec<Option<CudaSlice<f32>>>,
}

fn level_sizes(lay: &DeviceLayout) -> [usize; 4] {
    [Level::Tok, Level::Turn, Level::Seq, Level::Group].map(|l| lay.count(l))
}

impl Workspace {
    pub fn new(
        stream: &Arc<CudaStream>,
        p: &CudaProgram,
        lay: &DeviceLayout,
    ) -> Result<Workspace, RuntimeError> {
        let mut bufs = Vec::with_capacity(p.slots.len());
        for s in &p.slots {
            bufs.push(match s {
                Slot::Input(_) => None,
                Slot::Buffer { level, extra, .. } => Some(
                    stream
                        .alloc_zeros::<f32>((lay.count(*level) + extra).max(1))
                        .map_err(drv("workspace alloc"))?,
                ),
            });
        }
        Ok(Workspace {
            sizes: level_sizes(lay),
            bufs,
        })
    }

    /// Whether this workspace fits a layout (the same buffer sizes at every level).
    pub fn fits(&self, lay: &DeviceLayout) -> bool {
        self.sizes == level_sizes(lay)
    }

    /// The device buffer of slot `slot` (roots: see `CudaProgram::{loss,grads,..}`).
    pub fn buffer(&self, slot: usize) -> Option<&CudaSlice<f32>> {
        self.bufs.get(slot).and_then(|b| b.as_ref())
    }
}

/// Threads per block of a launch: the program's, or for token passes `RLO_CUDA_PASS_THREADS`
/// when set to a smaller multiple of 32 (for tuning; the kernels read `blockDim`).
fn pass_threads(grid: Grid, threads: u32) -> u32 {
    let env = std::env::var("RLO_CUDA_PASS_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok());
    match (grid, env) {
        (Grid::PerSequence, Some(t)) if t >= 32 && t % 32 == 0 && t <= threads => t,
        _ => threads,
    }
}

/// A program loaded on a device, ready to launch.
pub struct CudaObjective {
    pub program: CudaProgram,
    /// Each launch's function, grid, threads per block and second argument (a radix pass's digit).
    functions: Vec<(CudaFunction, Grid, u32, Option<u32>)>,
    /// NVRTC ran when loading (false: memory or disk cache).
    pub compiled_now: bool,
}

impl CudaObjective {
    pub fn load(dev: &CudaDevice, program: CudaProgram) -> Result<CudaObjective, RuntimeError> {
        let (kernels, compiled_now) = dev.kernels(&program)?;
        let mut functions = Vec::new();
        for l in &program.launches {
            let f = kernels.get(&l.kernel).cloned().ok_or_else(|| {
                RuntimeError::Cuda(format!("kernel {} not in the compiled program", l.kernel))
            })?;
            functions.push((f, l.grid, pass_threads(l.grid, l.threads), l.arg));
        }
        Ok(CudaObjective {
            program,
            functions,
            compiled_now,
        })
    }

    /// Emits and loads the CUDA program of a compiled objective.
    pub fn from_compiled(
        dev: &CudaDevice,
        c: &Compiled,
        opts: &CudaOptions,
    ) -> Result<CudaObjective, RuntimeError> {
        let program =
            emit(&c.module, &c.schedule, opts).map_err(|e| RuntimeError::CudaCodegen {
                location: c.sources.location(e.span),
                message: e.message,
            })?;
        CudaObjective::load(dev, program)
    }

    /// Launches every kernel on `stream`.
    ///
    /// # Safety
    /// `inputs[i]` must be a device pointer (in `stream`'s context) to `inputs[i]` of the module,
    /// stored at its level with `lay.count(level)` elements, as `program.tok_dtype` for f32
    /// token inputs and f32 otherwise, valid until the launches complete.
    pub unsafe fn launch(
        &self,
        stream: &Arc<CudaStream>,
        lay: &DeviceLayout,
        inputs: &[u64],
        ws: &mut Workspace,
        params: &[f64],
    ) -> Result<(), RuntimeError> {
        let p = &self.program;
        if !ws.fits(lay) {
            return Err(RuntimeError::Layout {
                message: "workspace was made for another batch shape".into(),
            });
        }
        if params.len() != p.n_params {
            return Err(RuntimeError::Unsupported(format!(
                "{} parameters given, the program takes {}",
                params.len(),
                p.n_params
            )));
        }
        if (p.layout == TokLayout::Padded) != (lay.tok_stride > 0) {
            return Err(RuntimeError::Layout {
                message: "program and layout disagree on packed vs padded tokens".into(),
            });
        }
        let mut w = [0u64; CTX_MAX_WORDS];
        let mut syncs = Vec::new();
        {
            let mut put = |i: usize, v: u64| {
                if let Some(x) = w.get_mut(i) {
                    *x = v;
                }
            };
            put(0, lay.n_seqs as u64);
            put(1, lay.n_groups as u64);
            put(2, lay.n_tokens as u64);
            put(3, lay.tok_stride as u64);
            put(4, lay.n_turns as u64);
            for (k, a) in [
                Some(&lay.seq_off),
                Some(&lay.seq_len),
                Some(&lay.seq_group),
                Some(&lay.group_off),
                Some(&lay.group_seqs),
                Some(&lay.turn_off),
                lay.tok_turn.as_ref(),
            ]
            .into_iter()
            .enumerate()
            {
                // a null tok_turn means one turn per sequence (see RLO_TURN)
                if let Some(a) = a {
                    let (ptr, sync) = a.device_ptr(stream);
                    syncs.push(sync);
                    put(5 + k, ptr);
                }
            }
            for (k, s) in p.slots.iter().enumerate() {
                let ptr = match s {
                    Slot::Input(i) => *inputs.get(*i as usize).ok_or_else(|| {
                        RuntimeError::Unsupported(format!("device input {i} missing"))
                    })?,
                    Slot::Buffer { .. } => match ws.bufs.get(k).and_then(|b| b.as_ref()) {
                        Some(b) => {
                            let (ptr, sync) = b.device_ptr(stream);
                            syncs.push(sync);
                            ptr
                        }
                        None => return Err(RuntimeError::Cuda("workspace slot missing".into())),
                    },
                };
                put(CTX_HEADER_WORDS + k, ptr);
            }
            for (k, v) in params.iter().enumerate() {
                put(CTX_HEADER_WORDS + p.slots.len() + k, v.to_bits());
            }
        }
        let ctx = CtxArg(w);
        let seq_blocks = lay.n_seqs.clamp(1, 1 << 20) as u32;
        let tile_blocks = lay.count(Level::Tok).div_ceil(SORT_TILE).clamp(1, 1 << 20) as u32;
        for (f, grid, threads, arg) in &self.functions {
            let cfg = LaunchConfig {
                grid_dim: match grid {
                    Grid::PerSequence => (seq_blocks, 1, 1),
                    Grid::Single => (1, 1, 1),
                    Grid::Tiles => (tile_blocks, 1, 1),
                },
                block_dim: (*threads, 1, 1),
                shared_mem_bytes: 0,
            };
            let mut b = stream.launch_builder(f);
            b.arg(&ctx);
            let digit = arg.map(|d| d as i32);
            if let Some(d) = &digit {
                b.arg(d);
            }
            // SAFETY: the kernel's parameters are `RloCtx` (and, for a radix pass, its `int` digit,
            // pushed above); the context's words were filled above from
            // live device allocations (layout, workspace) and the caller's input pointers (see
            // this function's contract); launch dimensions match `__launch_bounds__`.
            unsafe { b.launch(cfg) }.map_err(drv("kernel launch"))?;
        }
        drop(syncs);
        Ok(())
    }
}

fn download(
    stream: &Arc<CudaStream>,
    ws: &Workspace,
    slot: usize,
) -> Result<Vec<f64>, RuntimeError> {
    let b = ws
        .buffer(slot)
        .ok_or_else(|| RuntimeError::Cuda(format!("result slot {slot} has no buffer")))?;
    let v = stream.clone_dtoh(b).map_err(drv("copy to host"))?;
    Ok(v.into_iter().map(f64::from).collect())
}

/// `Backend::Cuda` on a host batch: packed layout, f32 inputs; results copied back as f64.
pub fn evaluate(c: &Compiled, batch: &Batch, params: &[f64]) -> Result<Evaluation, RuntimeError> {
    let dev = CudaDevice::global()?;
    let opts = CudaOptions {
        layout: TokLayout::Packed,
        tok_dtype: StorageType::F32,
        sources: Some(c.sources.clone()),
        ..Default::default()
    };
    let obj = CudaObjective::from_compiled(dev, c, &opts)?;
    let stream = &dev.stream;
    let lay = DeviceLayout::packed(stream, &batch.layout)?;
    let mut inputs = Vec::new();
    for inp in &c.module.inputs {
        let v = batch
            .values
            .get(&inp.name)
            .ok_or_else(|| RuntimeError::MissingTensor {
                name: inp.name.clone(),
                expected: format!("{} values", batch.layout.count(inp.ty.level)),
            })?;
        let f: Vec<f32> = v.iter().map(|&x| x as f32).collect();
        inputs.push(upload(stream, &f)?);
    }
    let mut syncs = Vec::new();
    let mut ptrs = Vec::new();
    for d in &inputs {
        let (p, s) = d.device_ptr(stream);
        ptrs.push(p);
        syncs.push(s);
    }
    let mut ws = Workspace::new(stream, &obj.program, &lay)?;
    // SAFETY: `ptrs` point to the buffers uploaded above, one per module input with
    // `layout.count(level)` f32 values (packed layout, f32 storage as requested in `opts`); they
    // live until the synchronize below.
    unsafe { obj.launch(stream, &lay, &ptrs, &mut ws, params)? };
    stream.synchronize().map_err(drv("synchronize"))?;
    drop(syncs);
    let p = &obj.program;
    let loss = download(stream, &ws, p.loss.slot)?
        .first()
        .copied()
        .unwrap_or(0.0);
    let mut metrics = Vec::new();
    for r in &p.metrics {
        metrics.push(
            download(stream, &ws, r.slot)?
                .first()
                .copied()
                .unwrap_or(0.0),
        );
    }
    let mut grads = Vec::new();
    for r in &p.grads {
        let mut v = download(stream, &ws, r.slot)?;
        v.truncate(lay.count(r.level));
        grads.push(v);
    }
    let mut outputs = Vec::new();
    for r in &p.outputs {
        let mut v = download(stream, &ws, r.slot)?;
        v.truncate(lay.count(r.level));
        outputs.push(v);
    }
    Ok(Evaluation {
        loss,
        grads,
        metrics,
        outputs,
    })
}

/// Uploads f64 values as the storage type of a token input (used by the benchmark).
pub fn upload_as(
    stream: &Arc<CudaStream>,
    v: &[f32],
    ty: StorageType,
) -> Result<(CudaSlice<u8>, usize), RuntimeError> {
    let bytes: Vec<u8> = match ty {
        StorageType::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        StorageType::Bf16 => v
            .iter()
            .flat_map(|x| half::bf16::from_f32(*x).to_bits().to_le_bytes())
            .collect(),
        StorageType::F16 => v
            .iter()
            .flat_map(|x| half::f16::from_f32(*x).to_bits().to_le_bytes())
            .collect(),
    };
    let n = bytes.len();
    Ok((upload(stream, &bytes)?, n))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::HostLayout;

    #[test]
    fn host_layout_arrays() {
        // groups given out of order: group 1 = sequences 0 and 2, group 0 = sequence 1
        let h = HostLayout::new(&[2, 0, 3], &[1, 0, 1], 2, 4, &[0, 1, 2, 3], None).unwrap();
        assert_eq!((h.n_tokens, h.n_turns), (5, 3));
        assert_eq!(h.seq_off, vec![0, 2, 2, 5]);
        assert_eq!(h.seq_len, vec![2, 0, 3]);
        assert_eq!(h.seq_group, vec![1, 0, 1]);
        assert_eq!(h.group_off, vec![0, 1, 3]);
        assert_eq!(h.group_seqs, vec![1, 0, 2]);
        assert_eq!(h.turn_off, vec![0, 1, 2, 3]);
        assert!(h.tok_turn.is_none());
        // errors, not panics: a row longer than T, a group id out of range, counts that disagree
        assert!(HostLayout::new(&[5], &[0], 1, 4, &[0, 1], None).is_err());
        assert!(HostLayout::new(&[1], &[3], 1, 0, &[0, 1], None).is_err());
        assert!(HostLayout::new(&[1, 1], &[0], 1, 0, &[0, 1, 2], None).is_err());
        assert!(HostLayout::new(&[1], &[0], 1, 0, &[0], None).is_err());
    }
}
