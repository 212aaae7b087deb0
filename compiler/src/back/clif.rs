//! Scheduled IR → Cranelift IR: the CPU backend's code generator (the JIT lives in
//! `rlo_runtime::cpu`).
//!
//! [`emit`] turns a [`Module`] and its [`Schedule`] into a [`ClifProgram`]: a list of Cranelift
//! functions run in order, the table of buffers they read and write, and the imported Rust
//! functions they call. Nothing here is `unsafe`; the runtime owns the memory and the calls.
//!
//! # ABI (every generated function)
//! ```text
//! extern "C" fn(bufs: *const *mut T, lay: *const *const u32, counts: *const u64,
//!               params: *const T, s0: u64, s1: u64)
//! ```
//! - `T` is `f32` (default) or `f64` ([`ClifOptions::f64`]); all math and accumulation is in `T`.
//! - `bufs[i]` points at buffer `i` of [`ClifProgram::buffers`]: `layout.count(level)` values of
//!   `T`, packed like [`crate::data::Batch`] (bools as 0/1). Inputs are buffers too.
//! - `lay[LAY_*]` are the layout's index arrays as `u32`: seq offsets (B+1), turn offsets (B+1),
//!   token → turn, seq → group, and two derived ones: token → seq, turn → seq.
//! - `counts[level as usize]` is the number of elements at each level (tok, turn, seq, group, 1).
//! - `params[i]` is run-time parameter `i` (changing it never recompiles).
//! - `s0..s1` is the range of sequences a [`FnKind::Token`] function processes; the runtime
//!   splits `0..B` among threads. [`FnKind::Small`] functions ignore it and run once.
//!
//! # Where values live
//! - `tok` nodes computed in a token sweep stay in registers, unless something outside that
//!   sweep reads them (a later sweep of the same sequence, a later stage, a root): then they get
//!   a buffer. Every `turn`, `seq`, `group` and `batch` node gets a buffer.
//! - Views cost nothing: constants, parameters, inputs, `pos`/`turn_index`, `Broadcast` and
//!   `Detach` are read in place by their users.
//! - A token pass keeps one accumulator per reduction in registers while it walks a sequence.
//!   Reductions to `seq` and `turn` are stored when the sequence ends. Reductions to `group` and
//!   `batch` store one *partial* per sequence (plus a count, for max/min); a serial function run
//!   after the pass combines the partials in sequence order. So the bits of every result do not
//!   depend on how the runtime splits sequences among threads.
//!
//! # Semantics and accuracy
//! - `min`/`max` (elementwise and reductions) follow PyTorch: NaN propagates, `-0 < +0`.
//! - Masks (`Select`, reduction filters) are selects, never multiplies.
//! - `exp` in f32 mode is inline code (`clif_simd.rs`): at most 1 ulp from the correctly rounded
//!   result (measured on 50 M arguments, `tests/parity_cpu.rs::inline_exp_accuracy`), the same
//!   bits in a SIMD lane and in scalar code. log, log1p, expm1, tanh, pow, sigmoid, softplus (and
//!   exp in f64 mode) call Rust functions that the runtime registers with the JIT
//!   (`rlo_log_f32`, ...). Measured maximum error in f32 (`tests/parity_cpu.rs::
//!   math_accuracy_table`, 400k arguments each): exp, log, log1p, expm1, softplus, pow ≤ 1 ulp;
//!   tanh, sigmoid ≤ 2 ulp; sqrt, abs, min, max and the arithmetic are single instructions
//!   (correctly rounded).
//! - Token sweeps of elementwise ops and reductions to `seq` or above run 4 tokens at a time
//!   (`f32x4`, see `clif_simd.rs`); a reduction's lanes are combined in a fixed order, so results
//!   still do not depend on the thread count.
//! - `Rank`, `Quantile` and `PosReduce` call Rust helpers (`rlo_rank_f32`, ...) that sort or walk
//!   the groups; they read whole buffers, so their operands are materialized first.

use super::clif_emit::{self, Emitter};
use super::clif_plan::{self, Plan};
use crate::arena::Handle;
use crate::ir::{Expr, Module};
use crate::schedule::Schedule;
use crate::types::Level;
use cranelift_codegen::ir::{Function, Signature};

/// Index of each layout array in the `lay` argument.
pub const LAY_SEQ_OFFSETS: usize = 0;
pub const LAY_TURN_OFFSETS: usize = 1;
pub const LAY_TOK_TURN: usize = 2;
pub const LAY_SEQ_GROUP: usize = 3;
pub const LAY_TOK_SEQ: usize = 4;
pub const LAY_TURN_SEQ: usize = 5;
/// Number of entries of the `lay` argument.
pub const LAY_LEN: usize = 6;

/// Options of the CPU code generator.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ClifOptions {
    /// Compute in `f64` instead of `f32`.
    pub f64: bool,
}

pub use super::BackendError;

/// What a buffer holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BufferKind {
    /// `module.inputs[i]`, filled by the runtime from the batch.
    Input(u32),
    /// The value of a node.
    Node(Handle<Expr>),
    /// Per-sequence partial results of a `group`/`batch` reduction in a token pass.
    Partial(Handle<Expr>),
    /// Element counts of a max/min reduction (empty set → 0).
    Count(Handle<Expr>),
    /// A view (broadcast, constant, ...) copied out because a helper or a root needs memory.
    Copy(Handle<Expr>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufferDesc {
    pub level: Level,
    pub kind: BufferKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FnKind {
    /// Runs once, serially (O(B) work, combines, helpers).
    Small,
    /// Runs over a range of sequences; the runtime may split `0..B` among threads.
    Token,
}

/// One generated function.
#[derive(Clone, Debug)]
pub struct ClifFunction {
    pub name: String,
    pub kind: FnKind,
    /// The schedule stage it implements (`None` for the final copy of roots).
    pub stage: Option<usize>,
    pub func: Function,
}

/// An imported Rust function; `ExternalName::User { namespace: 0, index: i }` in the IR means
/// `imports[i]`, so the JIT must declare the imports first, in this order.
#[derive(Clone, Debug)]
pub struct Import {
    pub symbol: String,
    pub signature: Signature,
}

/// The buffers holding each root, at the root's level.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Roots {
    pub loss: usize,
    pub grads: Vec<usize>,
    pub metrics: Vec<usize>,
    pub outputs: Vec<usize>,
}

/// Everything the JIT needs.
#[derive(Clone, Debug)]
pub struct ClifProgram {
    pub options: ClifOptions,
    pub buffers: Vec<BufferDesc>,
    pub functions: Vec<ClifFunction>,
    pub imports: Vec<Import>,
    pub roots: Roots,
    pub n_params: usize,
}

/// Generates the Cranelift functions of a scheduled module.
pub fn emit(m: &Module, s: &Schedule, opts: &ClifOptions) -> Result<ClifProgram, BackendError> {
    if m.types.len() != m.exprs.len() {
        return Err(BackendError::general(
            "module has a type table of the wrong length",
        ));
    }
    let plan = clif_plan::plan(m, s)?;
    let mut em = Emitter::new(m, &plan, *opts)?;
    let mut functions = Vec::new();
    for f in &plan.functions {
        let func = em.function(f)?;
        functions.push(ClifFunction {
            name: f.name.clone(),
            kind: f.kind(),
            stage: f.stage,
            func,
        });
    }
    let imports = em.into_imports();
    let Plan { buffers, roots, .. } = plan;
    Ok(ClifProgram {
        options: *opts,
        buffers,
        functions,
        imports,
        roots,
        n_params: m.params.len(),
    })
}

/// The textual form (`rloc emit clif`): a header describing buffers, imports and the order of
/// functions, then every function in Cranelift's text format.
pub fn program_text(m: &Module, p: &ClifProgram) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let ty = if p.options.f64 { "f64" } else { "f32" };
    let _ = writeln!(
        out,
        ";; rlo objective `{}` — Cranelift IR, T = {ty}",
        m.name
    );
    let _ = writeln!(
        out,
        ";; ABI: fn(bufs: *const *mut T, lay: *const *const u32, counts: *const u64, params: *const T, s0: u64, s1: u64)"
    );
    let _ = writeln!(out, ";; buffers:");
    for (i, b) in p.buffers.iter().enumerate() {
        let what = match b.kind {
            BufferKind::Input(k) => format!(
                "input {}",
                m.inputs
                    .get(k as usize)
                    .map(|x| x.name.as_str())
                    .unwrap_or("?")
            ),
            BufferKind::Node(h) => format!("node {h}"),
            BufferKind::Partial(h) => format!("per-seq partial of {h}"),
            BufferKind::Count(h) => format!("counts of {h}"),
            BufferKind::Copy(h) => format!("copy of {h}"),
        };
        let _ = writeln!(out, ";;   b{i}: {} × {what}", b.level);
    }
    let _ = writeln!(
        out,
        ";; roots: loss b{}, grads {:?}, metrics {:?}, outputs {:?}",
        p.roots.loss, p.roots.grads, p.roots.metrics, p.roots.outputs
    );
    for (i, imp) in p.imports.iter().enumerate() {
        let _ = writeln!(out, ";; import u0:{i} = {}", imp.symbol);
    }
    for f in &p.functions {
        let kind = match f.kind {
            FnKind::Small => "small (serial)",
            FnKind::Token => "token pass (parallel over s0..s1)",
        };
        let _ = writeln!(out, "\n;; {} — {kind}", f.name);
        let _ = write!(out, "{}", f.func.display());
    }
    out
}

/// Emits the f32 program of a compiled objective as text (for `rloc emit clif`).
pub fn emit_text(c: &crate::Compiled) -> Result<String, BackendError> {
    let p = emit(&c.module, &c.schedule, &ClifOptions::default())?;
    Ok(program_text(&c.module, &p))
}

/// Names of the imported math functions for `T` (used by the runtime to register symbols).
pub fn math_symbol(op: &str, f64: bool) -> String {
    clif_emit::symbol(op, f64)
}

/// Every node a result needs, in arena order, as one token pass. This is a valid schedule for
/// any module: the planner splits it into serial parts and per-sequence sweeps (see
/// `clif_plan.rs`). Used by tests that exercise the backend independently of the scheduler.
pub fn one_pass_schedule(m: &Module) -> Schedule {
    let n = m.exprs.len();
    let mut need = vec![false; n];
    let mut roots: Vec<Handle<Expr>> = vec![m.loss];
    roots.extend(m.grads.iter().map(|g| g.value));
    roots.extend(m.metrics.iter().map(|x| x.value));
    roots.extend(m.outputs.iter().map(|x| x.value));
    for r in roots {
        if let Some(x) = need.get_mut(r.index()) {
            *x = true;
        }
    }
    for (h, e) in m.exprs.iter().rev() {
        if need.get(h.index()).copied().unwrap_or(false) {
            for op in e.operands() {
                if let Some(x) = need.get_mut(op.index()) {
                    *x = true;
                }
            }
        }
    }
    let nodes = m
        .exprs
        .handles()
        .filter(|h| need.get(h.index()).copied().unwrap_or(false))
        .collect();
    Schedule {
        stages: vec![crate::schedule::Stage {
            kind: crate::schedule::StageKind::TokenPass,
            nodes,
        }],
    }
}
