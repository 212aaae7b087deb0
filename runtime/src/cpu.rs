//! The CPU backend: JIT-compiles the Cranelift functions of `rlo_compiler::back::clif` and runs
//! them on a batch.
//!
//! - Compiled code is cached per objective: the key is a hash of the module, the schedule and
//!   the options, so evaluating the same objective again (with other parameters: they are passed
//!   at call time) never recompiles.
//! - Token passes run in parallel over contiguous ranges of sequences (balanced by token count).
//!   Every per-sequence result is written by exactly one thread and every cross-sequence
//!   reduction is combined serially in sequence order, so the results are bit-for-bit the same
//!   for any number of threads.
//! - All `unsafe` of the backend lives here and in `cpu_helpers.rs`.
#![allow(unsafe_code)]

use crate::cpu_helpers::{self, Real};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{Linkage, Module as _};
use rlo_compiler::back::clif::{self, ClifOptions, ClifProgram, FnKind, LAY_LEN};
use rlo_compiler::ir::Module;
use rlo_compiler::{Batch, Evaluation, Level, Schedule};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, OnceLock};

#[derive(Debug, thiserror::Error)]
pub enum CpuError {
    #[error("cranelift backend: {0}")]
    Codegen(#[from] clif::BackendError),
    #[error("cranelift JIT: {0}")]
    Jit(String),
    #[error("batch: {0}")]
    Batch(String),
    #[error("expected {expected} parameter values, got {got}")]
    Params { expected: usize, got: usize },
}

/// Options of a CPU evaluation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuOptions {
    /// Compute in f64 instead of f32.
    pub f64: bool,
    /// Worker threads for token passes (0 = automatic: all available cores, at most one per
    /// 16,384 tokens).
    pub threads: usize,
}

type StageFn =
    unsafe extern "C" fn(*const *mut u8, *const *const u32, *const u64, *const u8, u64, u64);

/// The finalized JIT module, kept alive as long as its functions may be called.
struct JitMemory(Option<JITModule>);

// SAFETY: after `finalize_definitions` the module is never used again except to be freed in
// `drop`; the code it owns is immutable and the function pointers are plain addresses.
unsafe impl Send for JitMemory {}
// SAFETY: as above: no method of the module is called through a shared reference.
unsafe impl Sync for JitMemory {}

impl Drop for JitMemory {
    fn drop(&mut self) {
        if let Some(m) = self.0.take() {
            // SAFETY: the kernel owning this memory is being dropped, so no function pointer
            // into it can be called any more (kernels are only called through `&CpuKernel`).
            unsafe { m.free_memory() };
        }
    }
}

/// A JIT-compiled objective.
pub struct CpuKernel {
    pub program: ClifProgram,
    fns: Vec<(FnKind, StageFn)>,
    /// Time spent in `emit` + Cranelift compilation + finalization.
    pub compile_time: std::time::Duration,
    _mem: JitMemory,
}

fn key(m: &Module, s: &Schedule, opts: ClifOptions) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    format!("{m:?}").hash(&mut h);
    format!("{s:?}").hash(&mut h);
    opts.hash(&mut h);
    h.finish()
}

/// The cached kernel of `(m, s, opts)`, compiled on first use.
pub fn kernel(m: &Module, s: &Schedule, opts: ClifOptions) -> Result<Arc<CpuKernel>, CpuError> {
    static CACHE: OnceLock<Mutex<HashMap<u64, Arc<CpuKernel>>>> = OnceLock::new();
    let k = key(m, s, opts);
    let cache = CACHE.get_or_init(Default::default);
    if let Some(kern) = cache.lock().ok().and_then(|c| c.get(&k).cloned()) {
        return Ok(kern);
    }
    let kern = Arc::new(CpuKernel::compile(m, s, opts)?);
    if let Ok(mut c) = cache.lock() {
        c.insert(k, kern.clone());
    }
    Ok(kern)
}

/// Loss, gradients, metrics and outputs of `batch` on the CPU backend.
pub fn evaluate(
    c: &rlo_compiler::Compiled,
    batch: &Batch,
    params: &[f64],
    opts: CpuOptions,
) -> Result<Evaluation, CpuError> {
    let k = kernel(&c.module, &c.schedule, ClifOptions { f64: opts.f64 })?;
    k.evaluate(&c.module, batch, params, opts.threads)
}

fn jit_err(e: impl std::fmt::Display) -> CpuError {
    CpuError::Jit(e.to_string())
}

impl CpuKernel {
    /// Generates and JIT-compiles the program (uncached; see [`kernel`]).
    pub fn compile(m: &Module, s: &Schedule, opts: ClifOptions) -> Result<CpuKernel, CpuError> {
        let t0 = std::time::Instant::now();
        let program = clif::emit(m, s, &opts)?;
        let mut flags = settings::builder();
        flags.set("opt_level", "speed").map_err(jit_err)?;
        let isa = cranelift_native::builder()
            .map_err(jit_err)?
            .finish(settings::Flags::new(flags))
            .map_err(jit_err)?;
        let mut jb = JITBuilder::with_isa(isa, cranelift_module::default_libcall_names());
        for imp in &program.imports {
            let p = cpu_helpers::lookup(&imp.symbol)
                .ok_or_else(|| CpuError::Jit(format!("no helper `{}`", imp.symbol)))?;
            jb.symbol(imp.symbol.clone(), p);
        }
        let mut module = JITModule::new(jb);
        for (i, imp) in program.imports.iter().enumerate() {
            let id = module
                .declare_function(&imp.symbol, Linkage::Import, &imp.signature)
                .map_err(jit_err)?;
            if id.as_u32() as usize != i {
                return Err(CpuError::Jit("import ids out of order".into()));
            }
        }
        let mut ids = Vec::new();
        let mut ctx = module.make_context();
        for f in &program.functions {
            let id = module
                .declare_function(&f.name, Linkage::Local, &f.func.signature)
                .map_err(jit_err)?;
            ctx.func = f.func.clone();
            // `RLO_CPU_DISASM=1`: print each function's machine code (for performance work).
            let disasm = std::env::var_os("RLO_CPU_DISASM").is_some();
            ctx.set_disasm(disasm);
            module
                .define_function(id, &mut ctx)
                .map_err(|e| CpuError::Jit(format!("{}: {e:?}", f.name)))?;
            if disasm {
                if let Some(cc) = ctx.compiled_code() {
                    eprintln!("== {}\n{}", f.name, cc.vcode.clone().unwrap_or_default());
                }
            }
            module.clear_context(&mut ctx);
            ids.push((f.kind, id));
        }
        module.finalize_definitions().map_err(jit_err)?;
        let fns = ids
            .into_iter()
            .map(|(kind, id)| {
                let p = module.get_finalized_function(id);
                // SAFETY: every generated function has the ABI signature `StageFn` (six 64-bit
                // integer/pointer arguments, no result, the host's C calling convention).
                (kind, unsafe {
                    std::mem::transmute::<*const u8, StageFn>(p)
                })
            })
            .collect();
        Ok(CpuKernel {
            program,
            fns,
            compile_time: t0.elapsed(),
            _mem: JitMemory(Some(module)),
        })
    }

    /// Binds, runs and reads back one batch.
    pub fn evaluate(
        &self,
        m: &Module,
        batch: &Batch,
        params: &[f64],
        threads: usize,
    ) -> Result<Evaluation, CpuError> {
        if self.program.options.f64 {
            let mut b = Bound::<f64>::new(self, m, batch)?;
            self.run(&mut b, params, threads)?;
            Ok(b.read(self))
        } else {
            let mut b = Bound::<f32>::new(self, m, batch)?;
            self.run(&mut b, params, threads)?;
            Ok(b.read(self))
        }
    }

    /// Runs every function on bound buffers (the part the benchmark times).
    pub fn run<T: Real>(
        &self,
        b: &mut Bound<T>,
        params: &[f64],
        threads: usize,
    ) -> Result<(), CpuError> {
        if (std::mem::size_of::<T>() == 8) != self.program.options.f64 {
            return Err(CpuError::Batch(
                "buffers bound for the other float width".into(),
            ));
        }
        if params.len() != self.program.n_params {
            return Err(CpuError::Params {
                expected: self.program.n_params,
                got: params.len(),
            });
        }
        let params: Vec<T> = params.iter().map(|&p| T::from_f64(p)).collect();
        let bufs: Vec<*mut u8> = b.bufs.iter_mut().map(|v| v.as_mut_ptr().cast()).collect();
        let lay: Vec<*const u32> = b.lay.iter().map(|v| v.as_ptr()).collect();
        let args = Args {
            bufs: bufs.as_ptr(),
            lay: lay.as_ptr(),
            counts: b.counts.as_ptr(),
            params: params.as_ptr().cast(),
        };
        let n_seqs = b.counts[Level::Seq as usize];
        // Automatic: every core, but each thread gets at least `MIN_TOKENS_PER_THREAD` tokens
        // (starting one costs tens of µs). Results do not depend on the split (see `chunks`).
        let threads = if threads == 0 {
            let n_tokens = b.counts[Level::Tok as usize] as usize;
            std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(n_tokens / MIN_TOKENS_PER_THREAD)
                .max(1)
        } else {
            threads
        };
        for &(kind, f) in &self.fns {
            match kind {
                FnKind::Small => args.call(f, 0, n_seqs),
                FnKind::Token if threads <= 1 || n_seqs < 2 => args.call(f, 0, n_seqs),
                FnKind::Token => {
                    let chunks = chunks(&b.lay[0], threads);
                    std::thread::scope(|sc| {
                        let (last, rest) = chunks.split_last().unzip();
                        for &(s0, s1) in rest.unwrap_or_default() {
                            let a = &args;
                            sc.spawn(move || a.call(f, s0, s1));
                        }
                        // The calling thread takes the last range.
                        if let Some(&(s0, s1)) = last {
                            args.call(f, s0, s1);
                        }
                    });
                }
            }
        }
        Ok(())
    }
}

/// Fewest tokens worth a thread of their own (about 0.1–0.3 ms of work).
const MIN_TOKENS_PER_THREAD: usize = 16_384;

/// Contiguous ranges of sequences with about the same number of tokens each.
fn chunks(seq_offsets: &[u32], threads: usize) -> Vec<(u64, u64)> {
    let b = seq_offsets.len().saturating_sub(1);
    let total = seq_offsets.last().copied().unwrap_or(0) as usize;
    let mut out = Vec::new();
    let mut start = 0;
    for c in 1..=threads {
        let target = total * c / threads;
        let mut end = start;
        while end < b && (seq_offsets.get(end + 1).copied().unwrap_or(0) as usize) <= target {
            end += 1;
        }
        if c == threads {
            end = b;
        }
        if end > start {
            out.push((start as u64, end as u64));
        }
        start = end;
    }
    out
}

/// The raw ABI arguments of one run.
struct Args {
    bufs: *const *mut u8,
    lay: *const *const u32,
    counts: *const u64,
    params: *const u8,
}

// SAFETY: the pointers stay valid for the whole `run` (they borrow `Bound` and locals that
// outlive the thread scope). Token functions called concurrently on disjoint sequence ranges
// write disjoint elements (the tokens, turns and per-sequence slots of their own sequences:
// see the planning rules in `rlo_compiler::back::clif`), and only read everything else.
unsafe impl Sync for Args {}

impl Args {
    fn call(&self, f: StageFn, s0: u64, s1: u64) {
        // SAFETY: `f` was generated for this program's buffer table, which `Bound::new` laid
        // out (one buffer of `count(level)` elements per entry, layout arrays validated), and
        // `s0..s1` is inside `0..n_seqs`.
        unsafe { f(self.bufs, self.lay, self.counts, self.params, s0, s1) }
    }
}

/// A batch bound to a kernel's buffers (inputs converted to `T`, layout arrays as `u32`).
pub struct Bound<T: Real> {
    bufs: Vec<Vec<T>>,
    lay: [Vec<u32>; LAY_LEN],
    counts: [u64; 5],
}

fn u32s(v: impl IntoIterator<Item = usize>) -> Result<Vec<u32>, CpuError> {
    v.into_iter()
        .map(|x| {
            u32::try_from(x).map_err(|_| CpuError::Batch("batch too large for u32 indices".into()))
        })
        .collect()
}

impl<T: Real> Bound<T> {
    pub fn new(k: &CpuKernel, m: &Module, batch: &Batch) -> Result<Bound<T>, CpuError> {
        let l = &batch.layout;
        l.validate().map_err(CpuError::Batch)?;
        let mut tok_seq = Vec::with_capacity(l.n_tokens());
        let mut turn_seq = Vec::with_capacity(l.n_turns());
        for s in 0..l.n_seqs() {
            let (a, b) = (l.seq_offsets[s], l.seq_offsets[s + 1]);
            tok_seq.extend(std::iter::repeat_n(s, b - a));
            let (a, b) = (l.turn_offsets[s], l.turn_offsets[s + 1]);
            turn_seq.extend(std::iter::repeat_n(s, b - a));
        }
        let lay = [
            u32s(l.seq_offsets.iter().copied())?,
            u32s(l.turn_offsets.iter().copied())?,
            l.tok_turn.clone(),
            l.seq_group.clone(),
            u32s(tok_seq)?,
            u32s(turn_seq)?,
        ];
        let counts = Level::ALL.map(|lv| l.count(lv) as u64);
        let mut bufs = Vec::with_capacity(k.program.buffers.len());
        for d in &k.program.buffers {
            let n = l.count(d.level);
            let v = match d.kind {
                clif::BufferKind::Input(i) => {
                    let inp = m
                        .inputs
                        .get(i as usize)
                        .ok_or_else(|| CpuError::Batch("input index out of range".into()))?;
                    let vals = batch
                        .values
                        .get(&inp.name)
                        .ok_or_else(|| CpuError::Batch(format!("missing input `{}`", inp.name)))?;
                    if vals.len() != n {
                        return Err(CpuError::Batch(format!(
                            "input `{}` ({}) has {} values, expected {n}",
                            inp.name,
                            inp.ty.level,
                            vals.len()
                        )));
                    }
                    vals.iter().map(|&x| T::from_f64(x)).collect()
                }
                clif::BufferKind::Node(_)
                | clif::BufferKind::Partial(_)
                | clif::BufferKind::Count(_)
                | clif::BufferKind::Copy(_) => vec![T::default(); n],
            };
            bufs.push(v);
        }
        Ok(Bound { bufs, lay, counts })
    }

    fn buf(&self, i: usize) -> Vec<f64> {
        self.bufs
            .get(i)
            .map(|v| v.iter().map(|x| x.to_f64()).collect())
            .unwrap_or_default()
    }

    /// Reads the results of the last run.
    pub fn read(&self, k: &CpuKernel) -> Evaluation {
        let r = &k.program.roots;
        Evaluation {
            loss: self.buf(r.loss).first().copied().unwrap_or(0.0),
            grads: r.grads.iter().map(|&i| self.buf(i)).collect(),
            metrics: r
                .metrics
                .iter()
                .map(|&i| self.buf(i).first().copied().unwrap_or(0.0))
                .collect(),
            outputs: r.outputs.iter().map(|&i| self.buf(i)).collect(),
        }
    }
}

#[cfg(test)]
#[path = "cpu_tests.rs"]
mod tests;
