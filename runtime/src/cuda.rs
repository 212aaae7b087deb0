//! The CUDA backend's runtime: NVRTC compilation with in-memory and on-disk caches, the device
//! (context + stream), and evaluation of compiled objectives (`cuda_exec.rs`).
//!
//! # Loading CUDA without panicking
//! cudarc is built with `dynamic-loading`: `libcuda.so` and `libnvrtc.so.13` are opened on first
//! use, and cudarc *panics* when a library or a symbol is missing. Every entry point here first
//! probes with cudarc's own `is_culib_present()` (it tries the same library names cudarc will
//! load) and then runs the first real call inside `std::panic::catch_unwind`, so a machine without
//! a driver, a GPU or NVRTC gets a [`RuntimeError::CudaUnavailable`] naming what is missing.
//!
//! NVRTC is found through the dynamic loader (`LD_LIBRARY_PATH`, e.g. the `nvidia/cu13/lib` folder
//! of the PyPI package `nvidia-cuda-nvrtc==13.0.88`), or by setting `RLO_NVRTC_LIB_DIR` to the
//! folder holding `libnvrtc.so.13`: it is then opened by full path before cudarc looks it up (the
//! loader matches an already-open library by its soname).
//!
//! # Caches
//! PTX is keyed by a 64-bit FNV-1a hash of (source, arch, options). Modules loaded into the
//! context are kept in `RwLock<HashMap<hash, Arc<CudaModule>>>`; PTX text is written to
//! `$RLO_CACHE_DIR` (default `$XDG_CACHE_HOME/rlo/ptx` or `~/.cache/rlo/ptx`) as `<hash>.ptx`.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock, RwLock};

use cudarc::driver::{CudaContext, CudaModule, CudaStream};
use cudarc::nvrtc::{CompileError, CompileOptions, Ptx};
use rlo_compiler::back::cuda::CudaProgram;

use crate::RuntimeError;

#[path = "cuda_exec.rs"]
mod exec;
pub use exec::{evaluate, upload_as, CudaObjective, DeviceLayout, HostLayout, Workspace};

/// The hand-written device helpers, prepended to every generated program.
pub const COMMON_CUH: &str = include_str!("../kernels/rlo_common.cuh");

/// What NVRTC compiles for a program: the helpers, then the generated source (a `#line` directive
/// makes NVRTC's log lines point into the generated file).
pub fn full_source(p: &CudaProgram) -> String {
    format!("{COMMON_CUH}\n#line 1 \"rlo_{}.cu\"\n{}", p.ident, p.source)
}

/// Options passed to NVRTC besides the architecture (part of the cache key). With
/// `RLO_NVRTC_FAST_COMPILE=1`, `--Ofast-compile=max` (NVRTC ≥ 12.8): about 3× faster to PTX
/// (grpo 575 → 161 ms on the 2-core development machine); what it costs the kernels is for a
/// GPU to measure (`bench/gpu.sh` times both).
pub fn nvrtc_options(arch: &'static str) -> CompileOptions {
    let mut options = vec![
        "--std=c++17".to_string(),
        "-default-device".to_string(),
        "--diag-suppress=177,550".to_string(),
    ];
    if fast_compile() {
        options.push("--Ofast-compile=max".to_string());
    }
    CompileOptions {
        arch: Some(arch),
        options,
        fmad: Some(true),
        ..Default::default()
    }
}

/// `RLO_NVRTC_FAST_COMPILE` is set to something other than `0` or empty.
pub fn fast_compile() -> bool {
    std::env::var("RLO_NVRTC_FAST_COMPILE").is_ok_and(|v| !v.is_empty() && v != "0")
}

fn panic_text(e: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = e.downcast_ref::<String>() {
        s.clone()
    } else if let Some(s) = e.downcast_ref::<&str>() {
        (*s).to_string()
    } else {
        "panic while loading a CUDA library".to_string()
    }
}

/// Checks that NVRTC can be loaded. `Err` says where it was looked for.
pub fn nvrtc_probe() -> Result<(), RuntimeError> {
    static PRELOADED: OnceLock<Option<Vec<libloading::Library>>> = OnceLock::new();
    if let Ok(dir) = std::env::var("RLO_NVRTC_LIB_DIR") {
        let lib = PRELOADED.get_or_init(|| {
            // the builtins first: NVRTC opens them by soname, which then matches the open one
            ["libnvrtc-builtins.so.13.0", "libnvrtc.so.13"]
                .iter()
                .map(|name| {
                    let path = PathBuf::from(&dir).join(name);
                    // SAFETY: opening NVRTC runs its (trusted, NVIDIA-provided) initializers
                    // only; the handles are kept for the whole process (never unloaded).
                    unsafe { libloading::Library::new(path) }.ok()
                })
                .collect()
        });
        if lib.is_none() {
            return Err(RuntimeError::CudaUnavailable(format!(
                "RLO_NVRTC_LIB_DIR={dir} but {dir}/libnvrtc.so.13 or libnvrtc-builtins.so.13.0 could not be opened"
            )));
        }
    }
    // SAFETY: only tries to dlopen the candidate library names; calls nothing in them.
    let present = std::panic::catch_unwind(|| unsafe { cudarc::nvrtc::sys::is_culib_present() })
        .unwrap_or(false);
    if present {
        Ok(())
    } else {
        Err(RuntimeError::CudaUnavailable(
            "NVRTC (libnvrtc.so.13) not found: install `pip install nvidia-cuda-nvrtc==13.0.88` and put its nvidia/cu13/lib on LD_LIBRARY_PATH or set RLO_NVRTC_LIB_DIR to it".into(),
        ))
    }
}

/// FNV-1a over the parts, with separators (deterministic across runs and platforms).
pub fn cache_key(source: &str, arch: &str, options: &[String]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |b: &[u8]| {
        for &x in b {
            h ^= u64::from(x);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    };
    eat(source.as_bytes());
    eat(arch.as_bytes());
    for o in options {
        eat(o.as_bytes());
    }
    h
}

fn cache_dir() -> Option<PathBuf> {
    if let Ok(d) = std::env::var("RLO_CACHE_DIR") {
        return Some(PathBuf::from(d));
    }
    if let Ok(d) = std::env::var("XDG_CACHE_HOME") {
        return Some(PathBuf::from(d).join("rlo/ptx"));
    }
    std::env::var("HOME")
        .ok()
        .map(|h| PathBuf::from(h).join(".cache/rlo/ptx"))
}

fn option_strings(opts: &CompileOptions) -> Vec<String> {
    let mut v = vec![
        format!("arch={:?}", opts.arch),
        format!("fmad={:?}", opts.fmad),
    ];
    v.extend(opts.options.iter().cloned());
    v
}

/// Compiles CUDA C to PTX with NVRTC. On a compile error the source is written to a file (in
/// the cache dir, else the temp dir) and the error carries NVRTC's log, the options and the path.
pub fn compile_ptx(source: &str, arch: &'static str, name: &str) -> Result<String, RuntimeError> {
    compile_ptx_with(source, arch, name, nvrtc_options(arch))
}

/// [`compile_ptx`] with other NVRTC options (for measurements: the cache key assumes
/// [`nvrtc_options`]).
pub fn compile_ptx_with(
    source: &str,
    arch: &'static str,
    name: &str,
    opts: CompileOptions,
) -> Result<String, RuntimeError> {
    nvrtc_probe()?;
    let shown = option_strings(&opts);
    let src = source.to_string();
    let result = std::panic::catch_unwind(AssertUnwindSafe(move || {
        cudarc::nvrtc::compile_ptx_with_opts(src, opts)
    }))
    .map_err(|e| RuntimeError::CudaUnavailable(panic_text(e.as_ref())))?;
    match result {
        Ok(ptx) => Ok(ptx.to_src()),
        Err(e) => {
            let path = cache_dir().unwrap_or_else(std::env::temp_dir).join(format!(
                "failed_{name}_{:016x}.cu",
                cache_key(source, arch, &[])
            ));
            let written = std::fs::create_dir_all(path.parent().unwrap_or(&path))
                .and_then(|_| std::fs::write(&path, source))
                .is_ok();
            let source_path = if written {
                path.display().to_string()
            } else {
                "<not written>".to_string()
            };
            let (log, options) = match e {
                CompileError::CompileError { log, options, .. } => {
                    (log.to_string_lossy().into_owned(), options)
                }
                other => (format!("{other:?}"), shown),
            };
            Err(RuntimeError::Nvrtc {
                log,
                source_path,
                options,
            })
        }
    }
}

/// [`compile_ptx`] through the on-disk cache. Returns the PTX and whether it came from the cache.
pub fn compile_ptx_cached(
    source: &str,
    arch: &'static str,
    name: &str,
) -> Result<(String, bool), RuntimeError> {
    let key = cache_key(source, arch, &option_strings(&nvrtc_options(arch)));
    let path = cache_dir().map(|d| d.join(format!("{key:016x}.ptx")));
    if let Some(p) = &path {
        if let Ok(ptx) = std::fs::read_to_string(p) {
            return Ok((ptx, true));
        }
    }
    let ptx = compile_ptx(source, arch, name)?;
    if let Some(p) = &path {
        // a cache that cannot be written is not an error: the next run compiles again
        let _ = std::fs::create_dir_all(p.parent().unwrap_or(p)).and_then(|_| {
            let tmp = p.with_extension(format!("tmp{}", std::process::id()));
            std::fs::write(&tmp, &ptx)?;
            std::fs::rename(&tmp, p)
        });
    }
    Ok((ptx, false))
}

fn arch_name(major: i32, minor: i32) -> &'static str {
    match (major, minor) {
        (7, 0) => "sm_70",
        (7, 5) => "sm_75",
        (8, 0) => "sm_80",
        (8, 6) => "sm_86",
        (8, 7) => "sm_87",
        (8, 9) => "sm_89",
        (9, 0) => "sm_90",
        (10, 0) => "sm_100",
        (10, 3) => "sm_103",
        (12, 0) => "sm_120",
        (12, 1) => "sm_121",
        (ma, mi) => Box::leak(format!("sm_{ma}{mi}").into_boxed_str()),
    }
}

/// One GPU: its context, the stream rlo launches on, the architecture, the loaded modules.
pub struct CudaDevice {
    pub ctx: Arc<CudaContext>,
    pub stream: Arc<CudaStream>,
    pub arch: &'static str,
    modules: RwLock<HashMap<u64, Arc<CudaModule>>>,
}

impl CudaDevice {
    /// Opens GPU `ordinal`. A missing driver or GPU is an error, never a panic.
    pub fn open(ordinal: usize) -> Result<CudaDevice, RuntimeError> {
        // SAFETY: only tries to dlopen the candidate library names; calls nothing in them.
        let present =
            std::panic::catch_unwind(|| unsafe { cudarc::driver::sys::is_culib_present() })
                .unwrap_or(false);
        if !present {
            return Err(RuntimeError::CudaUnavailable(
                "no CUDA driver (libcuda.so) on this machine".into(),
            ));
        }
        let ctx = std::panic::catch_unwind(|| CudaContext::new(ordinal))
            .map_err(|e| RuntimeError::CudaUnavailable(panic_text(e.as_ref())))?
            .map_err(|e| {
                RuntimeError::CudaUnavailable(format!("no usable GPU {ordinal}: {e:?}"))
            })?;
        let (major, minor) = ctx
            .compute_capability()
            .map_err(|e| RuntimeError::Cuda(format!("compute capability: {e:?}")))?;
        let stream = ctx.default_stream();
        Ok(CudaDevice {
            ctx,
            stream,
            arch: arch_name(major, minor),
            modules: RwLock::new(HashMap::new()),
        })
    }

    /// The device of a stream someone else made (candle's own, for the candle op): rlo's kernels
    /// then launch on that stream, ordered with the owner's work, in the owner's context.
    pub fn from_stream(stream: Arc<CudaStream>) -> Result<CudaDevice, RuntimeError> {
        let ctx = stream.context().clone();
        let (major, minor) = ctx
            .compute_capability()
            .map_err(|e| RuntimeError::Cuda(format!("compute capability: {e:?}")))?;
        Ok(CudaDevice {
            ctx,
            stream,
            arch: arch_name(major, minor),
            modules: RwLock::new(HashMap::new()),
        })
    }

    /// GPU 0, opened once per process.
    pub fn global() -> Result<&'static CudaDevice, RuntimeError> {
        static DEV: OnceLock<Result<CudaDevice, String>> = OnceLock::new();
        let dev = DEV.get_or_init(|| {
            CudaDevice::open(0).map_err(|e| match e {
                RuntimeError::CudaUnavailable(s) => s,
                other => other.to_string(),
            })
        });
        match dev {
            Ok(d) => Ok(d),
            Err(e) => Err(RuntimeError::CudaUnavailable(e.clone())),
        }
    }

    /// The loaded module of a program: from memory, else from the PTX cache, else compiled.
    /// Returns it and whether NVRTC had to run.
    pub fn module(&self, p: &CudaProgram) -> Result<(Arc<CudaModule>, bool), RuntimeError> {
        let src = full_source(p);
        let key = cache_key(&src, self.arch, &option_strings(&nvrtc_options(self.arch)));
        if let Ok(map) = self.modules.read() {
            if let Some(m) = map.get(&key) {
                return Ok((m.clone(), false));
            }
        }
        let (ptx, cached) = compile_ptx_cached(&src, self.arch, &p.ident)?;
        let module = self
            .ctx
            .load_module(Ptx::from_src(ptx))
            .map_err(|e| RuntimeError::Cuda(format!("loading PTX of `{}`: {e:?}", p.ident)))?;
        if let Ok(mut map) = self.modules.write() {
            map.insert(key, module.clone());
        }
        Ok((module, !cached))
    }

    /// Drops the in-memory modules (the next [`CudaDevice::module`] reads the PTX cache).
    pub fn clear_modules(&self) {
        if let Ok(mut map) = self.modules.write() {
            map.clear();
        }
    }
}

/// The generated CUDA of a compiled objective as `rloc emit cuda` shows it (packed layout, f32
/// inputs, span comments; without the prepended `rlo_common.cuh`).
pub fn emit_text(c: &rlo_compiler::Compiled) -> Result<String, RuntimeError> {
    let opts = rlo_compiler::back::cuda::CudaOptions {
        sources: Some(c.sources.clone()),
        ..Default::default()
    };
    rlo_compiler::back::cuda::emit(&c.module, &c.schedule, &opts)
        .map(|p| p.source)
        .map_err(|e| RuntimeError::CudaCodegen {
            location: c.sources.location(e.span),
            message: e.message,
        })
}
