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
//! NVRTC compiles for the GPU's real architecture (`sm_90`) and rlo loads the SASS image (cubin):
//! loading PTX would run ptxas again in the driver. Images are keyed by a 64-bit FNV-1a hash of
//! (source, arch, options). Modules loaded into the context are kept in
//! `RwLock<HashMap<hash, Arc<CudaModule>>>`; images are written to `$RLO_CACHE_DIR` (default
//! `$XDG_CACHE_HOME/rlo/cubin` or `~/.cache/rlo/cubin`) as `<hash>.cubin`.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::ffi::CString;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock, RwLock};

use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaStream};
use cudarc::nvrtc::Ptx;
use rlo_compiler::back::cuda::CudaProgram;

use crate::RuntimeError;

#[path = "cuda_exec.rs"]
mod exec;
pub use exec::{evaluate, upload_as, CudaObjective, DeviceLayout, HostLayout, Workspace};

/// The hand-written device helpers, prepended to every generated program.
pub const COMMON_CUH: &str = include_str!("../kernels/rlo_common.cuh");

/// The runtime's own kernel, `rlo_mask_to_len`, compiled apart from the objectives (a kernel in
/// the helpers was compiled into every objective's module).
pub const MASK_CU: &str = include_str!("../kernels/rlo_mask.cu");

/// What NVRTC compiles for [`CudaDevice::mask_to_len`].
pub fn mask_source() -> String {
    format!("{COMMON_CUH}\n#line 1 \"rlo_mask.cu\"\n{MASK_CU}")
}

/// How many NVRTC programs a cold compile splits an objective into, compiled at once on as many
/// threads: one per core, at most 8, never more than the kernels (each program pays NVRTC's
/// fixed cost, ≈ 25 ms). `RLO_NVRTC_THREADS=n` overrides it (1: one program).
pub fn compile_threads() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    std::env::var("RLO_NVRTC_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(cores.min(8))
        .clamp(1, 64)
}

/// The compile units of a program split `parts` ways: each unit's kernel names and its whole
/// source (helpers, preamble, its kernels).
pub fn compile_units(p: &CudaProgram, parts: usize) -> Vec<(Vec<String>, String)> {
    p.partition_kernels(parts)
        .into_iter()
        .map(|which| {
            let names = which
                .iter()
                .filter_map(|&i| p.kernel_text.get(i).map(|k| k.name.clone()))
                .collect();
            let src = format!(
                "{COMMON_CUH}\n#line 1 \"rlo_{}.cu\"\n{}",
                p.ident,
                p.unit_source(&which)
            );
            (names, src)
        })
        .collect()
}

/// Compiles sources at once, one thread each (through the cubin cache with `cached`): each
/// one's cubin and whether it came from the cache, or the first error.
pub fn compile_cubins(
    sources: &[&str],
    arch: &str,
    name: &str,
    cached: bool,
) -> Result<Vec<(Vec<u8>, bool)>, RuntimeError> {
    let one = |src: &str, unit: &str| {
        if cached {
            compile_cubin_cached(src, arch, unit)
        } else {
            compile_cubin(src, arch, unit).map(|c| (c, false))
        }
    };
    if let [src] = sources {
        return Ok(vec![one(src, name)?]);
    }
    std::thread::scope(|scope| {
        let jobs: Vec<_> = sources
            .iter()
            .enumerate()
            .map(|(i, src)| {
                let unit = format!("{name}_{i}");
                scope.spawn(move || one(src, &unit))
            })
            .collect();
        jobs.into_iter()
            .map(|j| {
                j.join()
                    .unwrap_or_else(|e| Err(RuntimeError::CudaUnavailable(panic_text(e.as_ref()))))
            })
            .collect()
    })
}

/// What NVRTC compiles for a program: the helpers, then the generated source (a `#line` directive
/// makes NVRTC's log lines point into the generated file).
pub fn full_source(p: &CudaProgram) -> String {
    format!("{COMMON_CUH}\n#line 1 \"rlo_{}.cu\"\n{}", p.ident, p.source)
}

/// The NVRTC options for a real architecture (`sm_90`, …): the whole list, part of the cache key.
/// With `RLO_NVRTC_FAST_COMPILE=1`, `--Ofast-compile=max` (NVRTC ≥ 12.8): front end and ptxas
/// both run at their fastest (grpo 310 → 156 ms to SASS on the 2-core development machine); what
/// it costs the kernels is for a GPU to measure (`bench/gpu.sh` times both).
pub fn nvrtc_options(arch: &str) -> Vec<String> {
    let mut options = vec![
        format!("--gpu-architecture={arch}"),
        "--fmad=true".to_string(),
        "--std=c++17".to_string(),
        "-default-device".to_string(),
        "--diag-suppress=177,550".to_string(),
    ];
    if fast_compile() {
        options.push("--Ofast-compile=max".to_string());
    }
    options
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
        return Some(PathBuf::from(d).join("rlo/cubin"));
    }
    std::env::var("HOME")
        .ok()
        .map(|h| PathBuf::from(h).join(".cache/rlo/cubin"))
}

/// Compiles CUDA C with NVRTC to a SASS image (cubin) for `arch`, the real architecture of the
/// GPU it will run on, so that loading it is a copy: a PTX image would be compiled by ptxas a
/// second time, inside the driver, when the module is loaded. On a compile error the source is
/// written to a file (in the cache dir, else the temp dir) and the error carries NVRTC's log, the
/// options and the path.
pub fn compile_cubin(source: &str, arch: &str, name: &str) -> Result<Vec<u8>, RuntimeError> {
    compile_cubin_with(source, arch, name, &nvrtc_options(arch))
}

/// [`compile_cubin`] with other NVRTC options (for measurements: the cache key assumes
/// [`nvrtc_options`]).
pub fn compile_cubin_with(
    source: &str,
    arch: &str,
    name: &str,
    options: &[String],
) -> Result<Vec<u8>, RuntimeError> {
    nvrtc_probe()?;
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| nvrtc_run(source, name, options)))
        .map_err(|e| RuntimeError::CudaUnavailable(panic_text(e.as_ref())))?;
    result.map_err(|log| {
        let path = cache_dir().unwrap_or_else(std::env::temp_dir).join(format!(
            "failed_{name}_{:016x}.cu",
            cache_key(source, arch, &[])
        ));
        let written = std::fs::create_dir_all(path.parent().unwrap_or(&path))
            .and_then(|_| std::fs::write(&path, source))
            .is_ok();
        RuntimeError::Nvrtc {
            log,
            source_path: if written {
                path.display().to_string()
            } else {
                "<not written>".to_string()
            },
            options: options.to_vec(),
        }
    })
}

/// One NVRTC program: create, compile, take the cubin, destroy. `Err` is the log (or the failing
/// call).
fn nvrtc_run(source: &str, name: &str, options: &[String]) -> Result<Vec<u8>, String> {
    use cudarc::nvrtc::{result, sys};
    let src = CString::new(source).map_err(|_| "the source contains a NUL byte".to_string())?;
    let file = CString::new(format!("rlo_{name}.cu")).map_err(|_| "bad name".to_string())?;
    let prog = result::create_program(&src, Some(&file)).map_err(|e| format!("{e:?}"))?;
    struct Destroy(sys::nvrtcProgram);
    impl Drop for Destroy {
        fn drop(&mut self) {
            // SAFETY: the program was made by `create_program` and is destroyed once, here.
            let _ = unsafe { result::destroy_program(self.0) };
        }
    }
    let prog = Destroy(prog);
    // SAFETY: `prog.0` is a live program (destroyed only when `prog` drops, after this call).
    if let Err(e) = unsafe { result::compile_program(prog.0, options) } {
        // SAFETY: as above; the log is a NUL-terminated C string of NVRTC's.
        let log = unsafe { result::get_program_log(prog.0) }
            .map(|v| {
                v.iter()
                    .map(|&c| c as u8)
                    .take_while(|&c| c != 0)
                    .collect::<Vec<u8>>()
            })
            .map(|v| String::from_utf8_lossy(&v).into_owned())
            .unwrap_or_default();
        return Err(format!("{e:?}\n{log}"));
    }
    let mut size = 0usize;
    // SAFETY: `prog.0` is live and compiled; `size` is a valid out-pointer.
    unsafe { sys::nvrtcGetCUBINSize(prog.0, &mut size) }
        .result()
        .map_err(|e| format!("nvrtcGetCUBINSize: {e:?}"))?;
    if size == 0 {
        return Err("NVRTC made no cubin (a virtual architecture?)".into());
    }
    let mut cubin = vec![0u8; size];
    // SAFETY: `cubin` has the `size` bytes NVRTC just reported for this program.
    unsafe { sys::nvrtcGetCUBIN(prog.0, cubin.as_mut_ptr().cast()) }
        .result()
        .map_err(|e| format!("nvrtcGetCUBIN: {e:?}"))?;
    Ok(cubin)
}

/// [`compile_cubin`] through the on-disk cache. Returns the cubin and whether it came from the
/// cache.
pub fn compile_cubin_cached(
    source: &str,
    arch: &str,
    name: &str,
) -> Result<(Vec<u8>, bool), RuntimeError> {
    let options = nvrtc_options(arch);
    let key = cache_key(source, arch, &options);
    let path = cache_dir().map(|d| d.join(format!("{key:016x}.cubin")));
    if let Some(p) = &path {
        if let Ok(cubin) = std::fs::read(p) {
            return Ok((cubin, true));
        }
    }
    let cubin = compile_cubin_with(source, arch, name, &options)?;
    if let Some(p) = &path {
        // a cache that cannot be written is not an error: the next run compiles again
        let _ = std::fs::create_dir_all(p.parent().unwrap_or(p)).and_then(|_| {
            let tmp = p.with_extension(format!("tmp{}", std::process::id()));
            std::fs::write(&tmp, &cubin)?;
            std::fs::rename(&tmp, p)
        });
    }
    Ok((cubin, false))
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

    /// The functions of a program's kernels, by name, from modules in memory, else the cubin
    /// cache, else compiled: the kernels in [`compile_threads`] units compiled at once. Returns
    /// them and whether NVRTC had to run.
    pub fn kernels(
        &self,
        p: &CudaProgram,
    ) -> Result<(HashMap<String, CudaFunction>, bool), RuntimeError> {
        let units = compile_units(p, compile_threads());
        let options = nvrtc_options(self.arch);
        let keys: Vec<u64> = units
            .iter()
            .map(|(_, src)| cache_key(src, self.arch, &options))
            .collect();
        let mut modules: Vec<Option<Arc<CudaModule>>> = match self.modules.read() {
            Ok(map) => keys.iter().map(|k| map.get(k).cloned()).collect(),
            Err(_) => vec![None; keys.len()],
        };
        let missing: Vec<usize> = (0..units.len()).filter(|&i| modules[i].is_none()).collect();
        let sources: Vec<&str> = missing.iter().map(|&i| units[i].1.as_str()).collect();
        let cubins = compile_cubins(&sources, self.arch, &p.ident, true)?;
        let mut compiled_now = false;
        for (&i, (cubin, cached)) in missing.iter().zip(cubins) {
            compiled_now |= !cached;
            modules[i] = Some(self.load_cubin(keys[i], cubin, &p.ident)?);
        }
        let mut functions = HashMap::new();
        for ((names, _), module) in units.iter().zip(&modules) {
            let Some(module) = module else { continue };
            for name in names {
                let f = module
                    .load_function(name)
                    .map_err(|e| RuntimeError::Cuda(format!("load function {name}: {e:?}")))?;
                functions.insert(name.clone(), f);
            }
        }
        Ok((functions, compiled_now))
    }

    /// `rlo_mask_to_len(mask, n_seqs, T, len, err)` (`kernels/rlo_mask.cu`, a module of its
    /// own): lengths of a right-padded `[B, T]` f32 mask, `err[0] = 1` if a mask is not a
    /// prefix.
    pub fn mask_to_len(&self) -> Result<CudaFunction, RuntimeError> {
        let (module, _) = self.load_source(&mask_source(), "mask_to_len")?;
        module
            .load_function("rlo_mask_to_len")
            .map_err(|e| RuntimeError::Cuda(format!("load function rlo_mask_to_len: {e:?}")))
    }

    fn load_source(&self, src: &str, name: &str) -> Result<(Arc<CudaModule>, bool), RuntimeError> {
        let key = cache_key(src, self.arch, &nvrtc_options(self.arch));
        if let Ok(map) = self.modules.read() {
            if let Some(m) = map.get(&key) {
                return Ok((m.clone(), false));
            }
        }
        let (cubin, cached) = compile_cubin_cached(src, self.arch, name)?;
        Ok((self.load_cubin(key, cubin, name)?, !cached))
    }

    /// Loads a cubin into the context and keeps the module in memory under `key`.
    fn load_cubin(
        &self,
        key: u64,
        cubin: Vec<u8>,
        name: &str,
    ) -> Result<Arc<CudaModule>, RuntimeError> {
        let module = self
            .ctx
            .load_module(Ptx::from_binary(cubin))
            .map_err(|e| RuntimeError::Cuda(format!("loading the cubin of `{name}`: {e:?}")))?;
        if let Ok(mut map) = self.modules.write() {
            map.insert(key, module.clone());
        }
        Ok(module)
    }

    /// Drops the in-memory modules (the next [`CudaDevice::kernels`] reads the cubin cache).
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
