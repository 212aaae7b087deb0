//! Host side of the CUDA emulator: builds one shared library from several generated programs
//! (`emu.h` + `rlo_common.cuh` + each program in its own namespace), then runs a program the way
//! `rlo_runtime::cuda::CudaObjective::launch` does: the same layout arrays
//! ([`HostLayout`], shared with `DeviceLayout`), one f32 buffer per `Slot::Buffer`, the
//! `RloCtx` words (header, pointers, params as f64 bits), the same grids and block sizes.
//!
//! Checks made on every run besides the results: every kernel's barriers and shuffles are reached
//! by all threads (`emu.h`), no buffer is written outside its bounds (canaries around every
//! buffer, checked after each kernel), the workspace starts as NaN garbage (a reused workspace
//! holds the last step's values, so nothing may rely on zeros), padded token inputs hold NaN in
//! the padding, and token roots of the padded layout are exactly 0 there.
#![allow(unsafe_code)]

use std::path::PathBuf;
use std::process::Command;

use rlo_compiler::back::cuda::{
    CudaProgram, Grid, RootLoc, Slot, StorageType, TokLayout, CTX_HEADER_WORDS, CTX_MAX_WORDS,
    SORT_TILE,
};
use rlo_compiler::{Batch, DType, Evaluation, Level, Module};
use rlo_runtime::cuda::{HostLayout, COMMON_CUH, MASK_CU};

const EMU_H: &str = include_str!("emu.h");

/// Elements of canary on each side of every buffer.
const GUARD: usize = 16;
const CANARY: u32 = 0x7fa5_a5a5;
/// Initial workspace content: a NaN with a recognizable payload.
const POISON: u32 = 0x7fc0_dead;

/// `Some(reason)` when the emulator cannot run here (no g++).
pub fn unavailable() -> Option<String> {
    match Command::new("g++").arg("--version").output() {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!(
            "g++ --version failed: {}",
            String::from_utf8_lossy(&o.stderr)
        )),
        Err(e) => Some(format!("g++ not found ({e}); install g++ (C++20)")),
    }
}

/// Whether the CUDA emulator tests must run (CI) rather than skip.
pub fn required() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

fn fnv(text: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in text.as_bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

const FLAGS: &[&str] = &[
    "-std=c++20",
    "-O1",
    "-shared",
    "-fPIC",
    "-pthread",
    "-ffp-contract=off",
    "-fno-fast-math",
    // `__shared__` is `static`: in a template (rlo_block_reduce) GCC would make it a GNU unique
    // symbol, one object for every library of the process, shared by concurrent tests
    "-fno-gnu-unique",
    "-w",
];

/// The C++ translation unit for `programs` (program `i` exports `rlo_emu_p<i>`).
pub fn translation_unit(programs: &[&CudaProgram]) -> String {
    // the one PTX instruction of the helpers: f16 → f32
    let f16_asm = r#"asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(p[i].x));"#;
    assert!(
        COMMON_CUH.contains(f16_asm),
        "rlo_common.cuh changed its f16 load: update the emulator"
    );
    let common = COMMON_CUH.replace(f16_asm, "f = rlo_emu_h2f(p[i].x);");
    let mut out = format!(
        "{EMU_H}\n#line 1 \"rlo_common.cuh\"\n{common}\n#line 1 \"rlo_mask.cu\"\n{MASK_CU}\n"
    );
    // the helpers' own kernel: lengths of right-padded masks
    out.push_str(MASK_TO_LEN_WRAPPER);
    for (i, p) in programs.iter().enumerate() {
        // C++ linkage inside the namespace, so two programs may have the same kernel names
        let src = p.source.replace("extern \"C\" __global__", "__global__");
        out.push_str(&format!(
            "namespace rlo_emu_ns{i} {{\n#line 1 \"p{i}_{}.cu\"\n{src}\n",
            p.ident
        ));
        for (k, l) in p.launches.iter().enumerate() {
            let digit = l.arg.map(|d| format!(", {d}")).unwrap_or_default();
            out.push_str(&format!(
                "static void k{k}(void* a) {{ {}(*(const RloCtx*)a{digit}); }}\n",
                l.kernel
            ));
        }
        out.push_str("}\n");
        for line in p.source.lines() {
            if let Some(rest) = line.trim_start().strip_prefix("#define ") {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                out.push_str(&format!("#undef {name}\n"));
            }
        }
        out.push_str(&format!(
            "extern \"C\" unsigned long long rlo_emu_p{i}_ctx_bytes() {{ return sizeof(rlo_emu_ns{i}::RloCtx); }}\n\
             extern \"C\" int rlo_emu_p{i}(int k, const unsigned long long* words, unsigned grid, unsigned block, int order, unsigned long long seed, char* err, unsigned long long errlen) {{\n\
             \x20   rlo_emu_ns{i}::RloCtx ctx;\n\
             \x20   memcpy(&ctx, words, sizeof ctx);\n\
             \x20   void (*f)(void*) = nullptr;\n\
             \x20   switch (k) {{\n"
        ));
        for k in 0..p.launches.len() {
            out.push_str(&format!("    case {k}: f = rlo_emu_ns{i}::k{k}; break;\n"));
        }
        out.push_str(
            "    default: snprintf(err, errlen, \"no kernel %d\", k); return 1;\n    }\n    return rlo_emu_launch(f, &ctx, grid, block, order, seed, err, errlen);\n}\n",
        );
    }
    out
}

const MASK_TO_LEN_WRAPPER: &str = r#"
#line 1 "rlo_emu_mask_to_len"
struct rlo_emu_mask_args { const float* mask; long long n, stride; int* len; int* err; };
static void rlo_emu_mask_body(void* a) {
    const rlo_emu_mask_args* x = (const rlo_emu_mask_args*)a;
    rlo_mask_to_len(x->mask, x->n, x->stride, x->len, x->err);
}
extern "C" int rlo_emu_mask_to_len(const float* mask, long long n, long long stride, int* len,
                                   int* err, unsigned grid, unsigned block, int order,
                                   unsigned long long seed, char* e, unsigned long long elen) {
    rlo_emu_mask_args a = {mask, n, stride, len, err};
    return rlo_emu_launch(rlo_emu_mask_body, &a, grid, block, order, seed, e, elen);
}
"#;

fn cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cuda_emu")
}

type LaunchFn = unsafe extern "C" fn(i32, *const u64, u32, u32, i32, u64, *mut u8, u64) -> i32;
type BytesFn = unsafe extern "C" fn() -> u64;

/// A compiled library of programs.
pub struct EmuLib {
    lib: libloading::Library,
    /// Seconds g++ took (0 when the library was cached).
    pub compile_s: f64,
}

impl EmuLib {
    /// Compiles (or reuses, by hash of the text and flags) the library of `programs`.
    pub fn build(programs: &[&CudaProgram]) -> Result<EmuLib, String> {
        let text = translation_unit(programs);
        // extra g++ flags, e.g. `-DRLO_EMU_UCONTEXT` (the portable fiber switch on x86-64)
        let extra: Vec<String> = std::env::var("RLO_EMU_CXXFLAGS")
            .map(|v| v.split_whitespace().map(String::from).collect())
            .unwrap_or_default();
        let key = fnv(&format!("{text}\n{FLAGS:?}{extra:?}"));
        let dir = cache_dir();
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let cpp = dir.join(format!("{key:016x}.cpp"));
        let so = dir.join(format!("{key:016x}.so"));
        let mut compile_s = 0.0;
        if !so.exists() {
            std::fs::write(&cpp, &text).map_err(|e| format!("{}: {e}", cpp.display()))?;
            let tmp = dir.join(format!("{key:016x}.{}.tmp", std::process::id()));
            let t0 = std::time::Instant::now();
            let out = Command::new("g++")
                .args(FLAGS)
                .args(&extra)
                .arg("-o")
                .arg(&tmp)
                .arg(&cpp)
                .output()
                .map_err(|e| format!("g++: {e}"))?;
            compile_s = t0.elapsed().as_secs_f64();
            if !out.status.success() {
                let log = dir.join(format!("{key:016x}.log"));
                let _ = std::fs::write(&log, &out.stderr);
                let stderr = String::from_utf8_lossy(&out.stderr);
                let head: String = stderr.lines().take(30).collect::<Vec<_>>().join("\n");
                return Err(format!(
                    "g++ rejected {} (log: {}):\n{head}",
                    cpp.display(),
                    log.display()
                ));
            }
            std::fs::rename(&tmp, &so).map_err(|e| format!("{}: {e}", so.display()))?;
        }
        // SAFETY: the library was just built from emu.h, rlo_common.cuh and generated kernels;
        // its only initializers are those of libstdc++ objects (a mutex).
        let lib = unsafe { libloading::Library::new(&so) }.map_err(|e| format!("dlopen: {e}"))?;
        Ok(EmuLib { lib, compile_s })
    }

    fn launch_fn(&self, i: usize) -> Result<(LaunchFn, u64), String> {
        // SAFETY: the symbols are the `extern "C"` functions written by `translation_unit`, with
        // exactly these signatures.
        unsafe {
            let f = self
                .lib
                .get::<LaunchFn>(format!("rlo_emu_p{i}").as_bytes())
                .map_err(|e| e.to_string())?;
            let b = self
                .lib
                .get::<BytesFn>(format!("rlo_emu_p{i}_ctx_bytes").as_bytes())
                .map_err(|e| e.to_string())?;
            Ok((*f, b()))
        }
    }
}

type MaskFn = unsafe extern "C" fn(
    *const f32,
    i64,
    i64,
    *mut i32,
    *mut i32,
    u32,
    u32,
    i32,
    u64,
    *mut u8,
    u64,
) -> i32;

impl EmuLib {
    /// Runs `rlo_mask_to_len` of `rlo_mask.cu` on a `[b, t]` mask with `grid` blocks of
    /// `block` threads: the lengths and the error flag (1: a mask is not a prefix).
    pub fn mask_to_len(
        &self,
        mask: &[f32],
        b: usize,
        t: usize,
        grid: u32,
        block: u32,
        order: Order,
    ) -> Result<(Vec<i32>, i32), String> {
        assert_eq!(mask.len(), b * t, "mask shape");
        let mut m = Guarded::new("mask".into(), mask.iter().map(|x| x.to_bits()));
        let mut len = Guarded::new("len".into(), std::iter::repeat_n(POISON, b));
        let mut err = Guarded::new("err".into(), [0u32]);
        let mut msg = vec![0u8; 1024];
        // SAFETY: the symbol is the wrapper of MASK_TO_LEN_WRAPPER with this signature; the
        // pointers are to `b * t` floats, `b` ints and one int, alive until the call returns.
        let rc = unsafe {
            let f = self
                .lib
                .get::<MaskFn>(b"rlo_emu_mask_to_len")
                .map_err(|e| e.to_string())?;
            f(
                m.ptr() as *const f32,
                b as i64,
                t as i64,
                len.ptr() as *mut i32,
                err.ptr() as *mut i32,
                grid,
                block,
                order as i32,
                1,
                msg.as_mut_ptr(),
                msg.len() as u64,
            )
        };
        if rc != 0 {
            let n = msg.iter().position(|&c| c == 0).unwrap_or(msg.len());
            return Err(String::from_utf8_lossy(&msg[..n]).into_owned());
        }
        for g in [&m, &len, &err] {
            g.check("rlo_mask_to_len")?;
        }
        Ok((
            (0..b).map(|k| len.get(k) as i32).collect(),
            err.get(0) as i32,
        ))
    }
}

/// A host buffer with canaries on both sides; the "device pointer" is the first real element.
struct Guarded {
    words: Vec<u32>,
    what: String,
}

impl Guarded {
    fn new(what: String, data: impl IntoIterator<Item = u32>) -> Guarded {
        let mut words = vec![CANARY; GUARD];
        words.extend(data);
        if words.len() == GUARD {
            words.push(0); // a zero-length buffer still has one (never read) element
        }
        words.extend(std::iter::repeat_n(CANARY, GUARD));
        Guarded { words, what }
    }
    fn ptr(&mut self) -> u64 {
        self.words[GUARD..].as_mut_ptr() as u64
    }
    fn len(&self) -> usize {
        self.words.len() - 2 * GUARD
    }
    fn get(&self, i: usize) -> u32 {
        self.words[GUARD + i]
    }
    fn check(&self, kernel: &str) -> Result<(), String> {
        let n = self.words.len();
        let bad = (0..GUARD)
            .chain(n - GUARD..n)
            .find(|&k| self.words[k] != CANARY);
        match bad {
            Some(k) => Err(format!(
                "{kernel}: wrote outside {} (element {})",
                self.what,
                k as i64 - GUARD as i64
            )),
            None => Ok(()),
        }
    }
}

/// How the emulated threads of a block are interleaved between barriers (see `emu.h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    Ascending = 0,
    Descending = 1,
    Random = 2,
}

/// One run's settings.
#[derive(Clone, Copy, Debug)]
pub struct RunOpts {
    pub order: Order,
    pub seed: u64,
    /// Passes a null `tok_turn` when the layout has one turn per sequence (as `DeviceLayout::new`).
    pub null_tok_turn: bool,
    /// Padded layout: `T` = longest sequence + this.
    pub extra_pad: usize,
    /// At most this many threads per block of `Grid::PerSequence` and `Grid::Single` launches
    /// (default: no cap, each launch's own `threads`, as the runtime). A multiple of 32: the
    /// kernels read `blockDim`; small blocks run faster here and exercise the block-stride loops
    /// with small batches.
    pub pass_threads: u32,
    pub small_threads: u32,
}

impl Default for RunOpts {
    fn default() -> Self {
        RunOpts {
            order: Order::Ascending,
            seed: 1,
            null_tok_turn: false,
            extra_pad: 3,
            pass_threads: u32::MAX,
            small_threads: u32::MAX,
        }
    }
}

fn f32_bits(x: f64) -> u32 {
    (x as f32).to_bits()
}

/// Rounds `x` to the storage type (what the kernel will read back), as f64.
pub fn round_to(ty: StorageType, x: f64) -> f64 {
    match ty {
        StorageType::F32 => f64::from(x as f32),
        StorageType::Bf16 => f64::from(half::bf16::from_f64(x).to_f32()),
        StorageType::F16 => f64::from(half::f16::from_f64(x).to_f32()),
    }
}

fn is_single_turn(b: &Batch) -> bool {
    let l = &b.layout;
    let n = l.seq_offsets.len().saturating_sub(1);
    l.turn_offsets.iter().copied().eq(0..=n)
        && (0..n).all(|s| {
            l.tok_turn[l.seq_offsets[s]..l.seq_offsets[s + 1]]
                .iter()
                .all(|&t| t as usize == s)
        })
}

/// Runs program `i` of `lib` on `batch`: every kernel in launch order, then again on the same
/// (now stale) workspace; the two results must be bit-identical. Returns the first result.
pub fn run(
    lib: &EmuLib,
    i: usize,
    p: &CudaProgram,
    m: &Module,
    batch: &Batch,
    params: &[f64],
    o: RunOpts,
) -> Result<Evaluation, String> {
    let (launch, ctx_bytes) = lib.launch_fn(i)?;
    if ctx_bytes != 8 * p.ctx_words() as u64 {
        return Err(format!(
            "sizeof(RloCtx) = {ctx_bytes}, the program says {} words",
            p.ctx_words()
        ));
    }
    if params.len() != p.n_params {
        return Err("parameter count".into());
    }
    let l = &batch.layout;
    let b = l.seq_offsets.len().saturating_sub(1);
    let lengths: Vec<usize> = l.seq_offsets.windows(2).map(|w| w[1] - w[0]).collect();
    let padded = p.layout == TokLayout::Padded;
    let t = if padded {
        lengths.iter().copied().max().unwrap_or(0) + o.extra_pad
    } else {
        0
    };
    // token index (packed) → element of a token buffer
    let tok_at: Vec<usize> = (0..b)
        .flat_map(|s| {
            let (lo, n) = (l.seq_offsets[s], lengths[s]);
            (0..n).map(move |k| if padded { s * t + k } else { lo + k })
        })
        .collect();
    let n_tok_elems = if padded { b * t } else { l.seq_offsets[b] };
    let tok_turn: Option<Vec<u32>> = if o.null_tok_turn && is_single_turn(batch) {
        None
    } else if padded {
        let mut v = vec![0u32; n_tok_elems];
        for (k, &at) in tok_at.iter().enumerate() {
            v[at] = l.tok_turn[k];
        }
        Some(v)
    } else {
        Some(l.tok_turn.clone())
    };
    let mut arrays = HostLayout::new(
        &lengths,
        &l.seq_group,
        l.n_groups,
        t,
        &l.turn_offsets,
        tok_turn.as_deref(),
    )
    .map_err(|e| format!("layout: {e}"))?;
    if let Some(tt) = &mut arrays.tok_turn {
        if padded {
            // no kernel may read the turn of a padding token
            let real: std::collections::HashSet<usize> = tok_at.iter().copied().collect();
            for (k, x) in tt.iter_mut().enumerate() {
                if !real.contains(&k) {
                    *x = i32::MIN / 2;
                }
            }
        }
    }
    let count = |level: Level| match level {
        Level::Tok => n_tok_elems,
        Level::Turn => arrays.n_turns,
        Level::Seq => b,
        Level::Group => l.n_groups,
        Level::Batch => 1,
    };
    let i32s = |name: &str, v: &[i32]| Guarded::new(name.into(), v.iter().map(|&x| x as u32));
    let mut lay = [
        i32s("seq_off", &arrays.seq_off),
        i32s("seq_len", &arrays.seq_len),
        i32s("seq_group", &arrays.seq_group),
        i32s("group_off", &arrays.group_off),
        i32s("group_seqs", &arrays.group_seqs),
        i32s("turn_off", &arrays.turn_off),
    ];
    let mut tok_turn_buf = arrays.tok_turn.as_ref().map(|v| i32s("tok_turn", v));
    let mut bufs: Vec<Guarded> = Vec::new();
    for s in &p.slots {
        bufs.push(match s {
            Slot::Input(k) => {
                let inp = &m.inputs[*k as usize];
                let v = batch
                    .values
                    .get(&inp.name)
                    .ok_or_else(|| format!("input {} missing", inp.name))?;
                let tok = inp.ty.level == Level::Tok;
                let ty = if tok && inp.ty.dtype == DType::F32 {
                    p.tok_dtype
                } else {
                    StorageType::F32
                };
                if tok {
                    let mut e = vec![f64::NAN; n_tok_elems];
                    for (k, &at) in tok_at.iter().enumerate() {
                        e[at] = v[k];
                    }
                    Guarded::new(format!("input {}", inp.name), pack(ty, &e))
                } else {
                    Guarded::new(format!("input {}", inp.name), pack(ty, v))
                }
            }
            Slot::Buffer { name, level, extra } => Guarded::new(
                format!("buffer {name}"),
                std::iter::repeat_n(POISON, count(*level) + extra),
            ),
        });
    }
    let mut w = vec![0u64; CTX_MAX_WORDS];
    w[0] = b as u64;
    w[1] = l.n_groups as u64;
    w[2] = arrays.n_tokens as u64;
    w[3] = t as u64;
    w[4] = arrays.n_turns as u64;
    for (k, g) in lay.iter_mut().enumerate() {
        w[5 + k] = g.ptr();
    }
    w[11] = tok_turn_buf.as_mut().map_or(0, |g| g.ptr());
    for (k, g) in bufs.iter_mut().enumerate() {
        w[CTX_HEADER_WORDS + k] = g.ptr();
    }
    for (k, v) in params.iter().enumerate() {
        w[CTX_HEADER_WORDS + p.slots.len() + k] = v.to_bits();
    }
    let mut runs = Vec::new();
    for _ in 0..2 {
        for (k, ln) in p.launches.iter().enumerate() {
            let (grid, block) = match ln.grid {
                Grid::PerSequence => (b.clamp(1, 1 << 20) as u32, ln.threads.min(o.pass_threads)),
                Grid::Single => (1, ln.threads.min(o.small_threads)),
                Grid::Tiles => (
                    count(Level::Tok).div_ceil(SORT_TILE).clamp(1, 1 << 20) as u32,
                    ln.threads.min(o.pass_threads),
                ),
            };
            let mut err = vec![0u8; 1024];
            // SAFETY: `w` holds the RloCtx of this program (size checked above): pointers into
            // `lay`, `tok_turn_buf` and `bufs`, which live (and are not moved) until the end of
            // this function, each holding `count(level)` elements as the kernels expect.
            let rc = unsafe {
                launch(
                    k as i32,
                    w.as_ptr(),
                    grid,
                    block,
                    o.order as i32,
                    o.seed,
                    err.as_mut_ptr(),
                    err.len() as u64,
                )
            };
            if rc != 0 {
                let n = err.iter().position(|&c| c == 0).unwrap_or(err.len());
                return Err(format!(
                    "{}: {}",
                    ln.kernel,
                    String::from_utf8_lossy(&err[..n])
                ));
            }
            for g in lay.iter().chain(&tok_turn_buf).chain(&bufs) {
                g.check(&ln.kernel)?;
            }
        }
        runs.push(read_roots(p, &bufs, &tok_at, padded, &count)?);
    }
    if bits(&runs[0]) != bits(&runs[1]) {
        return Err("a second run on the same (stale) workspace gives other bits".into());
    }
    Ok(runs.swap_remove(0))
}

fn pack(ty: StorageType, v: &[f64]) -> Vec<u32> {
    match ty {
        StorageType::F32 => v.iter().map(|&x| f32_bits(x)).collect(),
        // two 16-bit values per word, little-endian
        StorageType::Bf16 | StorageType::F16 => {
            let h: Vec<u16> = v
                .iter()
                .map(|&x| match ty {
                    StorageType::Bf16 => half::bf16::from_f64(x).to_bits(),
                    _ => half::f16::from_f64(x).to_bits(),
                })
                .collect();
            h.chunks(2)
                .map(|c| u32::from(c[0]) | (u32::from(c.get(1).copied().unwrap_or(0)) << 16))
                .collect()
        }
    }
}

fn read_roots(
    p: &CudaProgram,
    bufs: &[Guarded],
    tok_at: &[usize],
    padded: bool,
    count: &dyn Fn(Level) -> usize,
) -> Result<Evaluation, String> {
    let read = |r: &RootLoc| -> Result<Vec<f64>, String> {
        let g = &bufs[r.slot];
        if g.len() < count(r.level) {
            return Err(format!("{}: too short for its level", g.what));
        }
        let all: Vec<f64> = (0..count(r.level))
            .map(|k| f64::from(f32::from_bits(g.get(k))))
            .collect();
        if r.level != Level::Tok {
            return Ok(all);
        }
        if padded {
            let mut real = vec![false; all.len()];
            for &at in tok_at {
                real[at] = true;
            }
            if let Some(k) = (0..all.len()).find(|&k| !real[k] && all[k].to_bits() != 0) {
                return Err(format!(
                    "{}: padding element {k} is {:e}, not 0",
                    g.what, all[k]
                ));
            }
        }
        Ok(tok_at.iter().map(|&at| all[at]).collect())
    };
    let loss = read(&p.loss)?.first().copied().unwrap_or(0.0);
    let metrics = p
        .metrics
        .iter()
        .map(|r| read(r).map(|v| v.first().copied().unwrap_or(0.0)))
        .collect::<Result<_, _>>()?;
    let grads = p.grads.iter().map(read).collect::<Result<_, _>>()?;
    let outputs = p.outputs.iter().map(read).collect::<Result<_, _>>()?;
    Ok(Evaluation {
        loss,
        grads,
        metrics,
        outputs,
    })
}

/// Every number of an evaluation as bits.
pub fn bits(e: &Evaluation) -> Vec<u64> {
    let mut v = vec![e.loss.to_bits()];
    v.extend(e.metrics.iter().map(|x| x.to_bits()));
    for g in e.grads.iter().chain(&e.outputs) {
        v.extend(g.iter().map(|x| x.to_bits()));
    }
    v
}
