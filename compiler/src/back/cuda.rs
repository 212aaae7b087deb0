//! Scheduled IR → CUDA C source (compiled at run time by NVRTC, launched by `rlo_runtime::cuda`).
//!
//! # What is generated
//! For every [`StageKind::TokenPass`] of the schedule one kernel `rlo_<objective>_p<k>` (one block
//! per sequence, a grid-stride loop over sequences, threads striding over the tokens), followed when
//! needed by a one-block kernel `rlo_<objective>_p<k>_fin` that finishes the pass's cross-sequence
//! reductions and computes its `seq`/`group`/`batch` nodes. Every [`StageKind::Small`] stage is one
//! one-block kernel `rlo_<objective>_s<k>`. A last one-block kernel `rlo_<objective>_out` writes the
//! roots (loss, metrics, outputs, gradients) that are not already a stored node. Data stays on the
//! device between kernels: no host round trip.
//!
//! # Invariants
//! - **Deterministic text**: names come from handles (`e12`, `v12`, `in3`, `p0`), kernels from stage
//!   indices; iteration is over arena order and vectors only. User text (objective and input
//!   names, file names) appears only inside comments, sanitized by [`comment_text`].
//! - **Deterministic results**: no atomics. Reductions fold in a fixed order (per-thread strided,
//!   then a fixed tree); cross-sequence reductions go through per-sequence partial buffers and a
//!   fixed-order combine kernel. Repeated runs on one GPU are bit-identical.
//! - Masks are selects (`cond ? a : b`), never multiplies.
//! - All math and accumulation in f32; token inputs may be stored as f32, bf16 or f16.
//!
//! # Kernel argument
//! Every kernel takes one `RloCtx` by value: [`CTX_HEADER_WORDS`] words of layout (counts and
//! pointers), then one pointer per [`Slot`], then the parameters as `double`s. Every field is 8
//! bytes, so the host fills it as an array of `u64` ([`CudaProgram::ctx_words`] of them, at most
//! [`CTX_MAX_WORDS`]). Changing a parameter never recompiles.
//!
//! `turn`-level values: small stages loop over each sequence's turns (`turn_off`); token
//! passes read them through `tok_turn`; token → turn reductions run per turn at the end of the
//! pass (binary search of the turn's token range, then a serial fold: deterministic).
// Indexing here is by handles of the module's own arena and by side tables (`HandleVec`) made
// with the arena's length; the validator has checked every handle before a backend runs.
#![allow(clippy::indexing_slicing)]

use crate::arena::{Handle, HandleVec};
use crate::ir::{Expr, Module, ReduceOp, ScanOp};
use crate::schedule::{Schedule, StageKind};
use crate::types::Level;
use rlo_grammar::SourceMap;

#[path = "cuda_check.rs"]
mod check;
#[path = "cuda_emit.rs"]
mod emit_kernels;
#[path = "cuda_fuse.rs"]
mod fuse;
pub use fuse::REMAT_MAX_NODES;
#[path = "cuda_traffic.rs"]
mod traffic;
pub use traffic::{ArrayUse, KernelTraffic, SweepTraffic, Traffic};

pub use super::BackendError;

/// Words of the `RloCtx` header: n_seqs, n_groups, n_tokens, tok_stride, n_turns, then the
/// pointers seq_off, seq_len, seq_group, group_off, group_seqs, turn_off, tok_turn (all `int32`;
/// `tok_turn` may be null for single-turn data: token `t` of sequence `s` is then in turn `s`).
pub const CTX_HEADER_WORDS: usize = 12;
/// The kernel argument is at most 4 KiB (the portable CUDA limit).
pub const CTX_MAX_WORDS: usize = 512;

/// How token-level data is laid out in device memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum TokLayout {
    /// All sequences' tokens back to back; token `t` of sequence `s` is at `seq_off[s] + t`.
    #[default]
    Packed,
    /// `[B, T]` row-major with `T = tok_stride`; sequence `s` holds its `seq_len[s]` tokens first
    /// (right padding). Token gradients/outputs are written as `[B, T]` with zeros in the padding.
    Padded,
}

/// Storage type of the f32 token-level inputs (bool inputs and coarser inputs are always f32).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum StorageType {
    #[default]
    F32,
    Bf16,
    F16,
}

impl StorageType {
    pub fn c_type(self) -> &'static str {
        match self {
            StorageType::F32 => "float",
            StorageType::Bf16 => "rlo_bf16",
            StorageType::F16 => "rlo_f16",
        }
    }
    pub fn bytes(self) -> usize {
        match self {
            StorageType::F32 => 4,
            StorageType::Bf16 | StorageType::F16 => 2,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct CudaOptions {
    pub layout: TokLayout,
    pub tok_dtype: StorageType,
    /// When given, every computed node gets a `/* e42: file.rlo:12:7 */` comment.
    pub sources: Option<SourceMap>,
    /// Keep every token pass in its own kernel (see `cuda_fuse.rs`; for comparisons).
    pub disable_fusion: bool,
    /// Store every token value a later kernel reads instead of recomputing it, and a scan's
    /// argument instead of recomputing it in the scan's load (for comparisons).
    pub disable_remat: bool,
    /// Rank token values over the batch, and take batch quantiles of them, in one-block kernels
    /// (an O(n²) loop; 64 sweeps) instead of the multi-block radix sort and select (see
    /// `add_sort` in `cuda_fuse.rs`; for comparisons).
    pub disable_sort: bool,
}

/// How many blocks a kernel is launched with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grid {
    /// One block per sequence (the runtime may cap the grid; the kernel loops over sequences).
    PerSequence,
    /// One block.
    Single,
    /// One block per [`SORT_TILE`] token slots (the runtime may cap the grid; the kernels loop
    /// over tiles): the radix sort of batch ranks.
    Tiles,
}

/// Token slots per block of a [`Grid::Tiles`] launch (`RLO_SORT_TILE` in `rlo_common.cuh`).
pub const SORT_TILE: usize = 4096;

/// Threads per block of a token pass.
pub const PASS_THREADS: u32 = 256;
/// Threads per block of fused token passes: fewer, larger blocks resident at once keep the
/// sequences being swept small enough for L2 to serve the second sweep (132 SMs × 2 blocks ×
/// 8192 tokens × 12 bytes ≈ 26 MB, against the H100's 50 MB L2).
pub const FUSED_THREADS: u32 = 1024;
/// Threads of the one-block kernels.
pub const SMALL_THREADS: u32 = 1024;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Launch {
    pub kernel: String,
    pub grid: Grid,
    /// Threads per block (the kernel's `__launch_bounds__`; any smaller multiple of 32 works).
    pub threads: u32,
    /// A second kernel argument (`int`), after the `RloCtx`: the digit of a radix sort or
    /// select pass, whose kernel is launched once per digit.
    pub arg: Option<u32>,
}

/// One pointer of the kernel argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Slot {
    /// `inputs[i]`, stored at its level (token f32 inputs in `tok_dtype`).
    Input(u32),
    /// A device buffer of f32 with one value per element of `level` (token level: `n_tokens`
    /// packed, `B * T` padded), plus `extra` more. `name` is the C field name (`v12`, `q12`,
    /// `c12`, `r3`; `ka12`, `kb12`, `ia12`, `ib12`, `h12` for the sort of a batch rank).
    Buffer {
        name: String,
        level: Level,
        extra: usize,
    },
}

/// Where a root (loss, metric, gradient, output) can be read after the last launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RootLoc {
    /// Index into [`CudaProgram::slots`] (always a `Slot::Buffer`).
    pub slot: usize,
    pub level: Level,
}

/// The generated program and everything the runtime needs to run it.
#[derive(Clone, Debug)]
pub struct CudaProgram {
    /// `[A-Za-z0-9_]` form of the objective name used in kernel names.
    pub ident: String,
    /// CUDA C source; needs `rlo_common.cuh` prepended (the runtime does it).
    pub source: String,
    /// Where each kernel's text is in `source`, in source order. The text before the first is
    /// the preamble every kernel needs (macros, `RloCtx`); kernels need nothing of each other,
    /// so the runtime can compile them in separate NVRTC programs at once
    /// ([`CudaProgram::unit_source`]).
    pub kernel_text: Vec<KernelText>,
    pub layout: TokLayout,
    pub tok_dtype: StorageType,
    pub launches: Vec<Launch>,
    pub slots: Vec<Slot>,
    pub n_params: usize,
    pub loss: RootLoc,
    pub metrics: Vec<RootLoc>,
    pub grads: Vec<RootLoc>,
    pub outputs: Vec<RootLoc>,
    /// Global-memory traffic per valid token of the token loops (also at the end of `source`).
    pub traffic: Traffic,
}

/// One kernel's text in [`CudaProgram::source`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelText {
    pub name: String,
    pub range: std::ops::Range<usize>,
}

impl CudaProgram {
    /// The source of a compile unit holding the kernels `which` (indices into `kernel_text`):
    /// the preamble, then each kernel after a `#line` directive naming its line in `source`,
    /// so NVRTC's log points into the whole generated file (`rlo_<ident>.cu`).
    pub fn unit_source(&self, which: &[usize]) -> String {
        let pre_end = self
            .kernel_text
            .first()
            .map_or(self.source.len(), |k| k.range.start);
        let mut out = self.source[..pre_end].to_string();
        for &i in which {
            let Some(k) = self.kernel_text.get(i) else {
                continue;
            };
            let line = 1 + self.source[..k.range.start].matches('\n').count();
            out.push_str(&format!("#line {line} \"rlo_{}.cu\"\n", self.ident));
            out.push_str(&self.source[k.range.clone()]);
        }
        out
    }

    /// Kernels in `parts` groups of about equal text (largest first onto the lightest group),
    /// each group in source order; fewer groups when there are fewer kernels.
    pub fn partition_kernels(&self, parts: usize) -> Vec<Vec<usize>> {
        let parts = parts.clamp(1, self.kernel_text.len().max(1));
        let mut order: Vec<usize> = (0..self.kernel_text.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(self.kernel_text[i].range.len()));
        let mut groups: Vec<(usize, Vec<usize>)> = vec![(0, Vec::new()); parts];
        for i in order {
            if let Some(g) = groups.iter_mut().min_by_key(|g| g.0) {
                g.0 += self.kernel_text[i].range.len();
                g.1.push(i);
            }
        }
        let mut out: Vec<Vec<usize>> = groups
            .into_iter()
            .map(|(_, mut v)| {
                v.sort_unstable();
                v
            })
            .filter(|v| !v.is_empty())
            .collect();
        out.sort();
        out
    }
    /// Number of `u64` words of the kernel argument.
    pub fn ctx_words(&self) -> usize {
        CTX_HEADER_WORDS + self.slots.len() + self.n_params.max(1)
    }
}

/// Makes user text safe inside a C block comment: printable ASCII only, no `*/`, no newline.
pub fn comment_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let ok = c.is_ascii_alphanumeric() || " _.:,=()[]<>+-@".contains(c);
        out.push(if ok { c } else { '?' });
    }
    out.truncate(120);
    out
}

/// The `[A-Za-z0-9_]` identifier used in kernel names (`obj` when the name has anything else).
fn ident_of(name: &str) -> String {
    let ok = !name.is_empty()
        && name.len() <= 40
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        name.to_string()
    } else {
        "obj".to_string()
    }
}

/// What a kernel of the plan is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KernelKind {
    Pass,
    Fin,
    Small,
    /// One step of the radix sort that ranks token values over the batch (`nodes`: the rank).
    Sort(SortStep),
    /// One step of the radix select of a batch quantile of token values (`nodes`: the quantile).
    Select(SelectStep),
    /// Sequence or group quantiles of token values finished by earlier kernels (`nodes`): one
    /// block per sequence or group (grid-stride), instead of one block for all of them.
    UnitQuantiles,
}

/// The launches of one batch quantile's radix select, in order: keys, then for each 4-bit
/// digit `j` (of 8, most significant first) hist and pick, then value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SelectStep {
    Keys,
    Hist(u32),
    Pick(u32),
    Value,
}

/// The launches of one batch rank's sort, in order: keys, then for each 4-bit digit `j` (of 8)
/// hist, scan, scatter, then place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SortStep {
    Keys,
    Hist(u32),
    Scan(u32),
    Scatter(u32),
    Place,
}

impl KernelKind {
    /// How many blocks its launch has.
    pub(crate) fn grid(self) -> Grid {
        match self {
            KernelKind::Pass
            | KernelKind::UnitQuantiles
            | KernelKind::Sort(SortStep::Keys)
            | KernelKind::Select(SelectStep::Keys) => Grid::PerSequence,
            KernelKind::Fin
            | KernelKind::Small
            | KernelKind::Sort(SortStep::Scan(_))
            | KernelKind::Select(SelectStep::Pick(_) | SelectStep::Value) => Grid::Single,
            KernelKind::Sort(SortStep::Hist(_) | SortStep::Scatter(_) | SortStep::Place)
            | KernelKind::Select(SelectStep::Hist(_)) => Grid::Tiles,
        }
    }

    /// The digit a radix pass's kernel takes as its second argument.
    pub(crate) fn digit(self) -> Option<u32> {
        match self {
            KernelKind::Sort(SortStep::Hist(j) | SortStep::Scatter(j))
            | KernelKind::Select(SelectStep::Hist(j) | SelectStep::Pick(j)) => Some(j),
            KernelKind::Pass
            | KernelKind::Fin
            | KernelKind::Small
            | KernelKind::UnitQuantiles
            | KernelKind::Sort(SortStep::Keys | SortStep::Scan(_) | SortStep::Place)
            | KernelKind::Select(SelectStep::Keys | SelectStep::Value) => None,
        }
    }
}

impl SortStep {
    /// The buffers (`a` or `b`) digit pass `j` reads keys and slots from, and writes them to.
    pub(crate) fn buffers(j: u32) -> (&'static str, &'static str) {
        if j.is_multiple_of(2) {
            ("a", "b")
        } else {
            ("b", "a")
        }
    }
}

/// Where and how a node is computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// Not computed: inline (constant, parameter, input, index) or an alias (broadcast, detach).
    None,
    /// Per token in a pass body, in sweep `sweep`.
    Tok { kernel: usize, sweep: usize },
    /// A reduction of token values accumulated in pass `kernel`, finished there (`to == Seq`) or
    /// in the fin kernel `fin`.
    Acc {
        kernel: usize,
        sweep: usize,
        fin: Option<usize>,
    },
    /// A `seq` value computed by every thread of fused pass `kernel` before sweep `sweep`, from
    /// the sequence's reductions of earlier sweeps (see `cuda_fuse.rs`).
    SeqLocal { kernel: usize, sweep: usize },
    /// A statement of a one-block kernel (fin, small, out).
    Stmt { kernel: usize },
}

pub(crate) struct KernelPlan {
    pub name: String,
    pub kind: KernelKind,
    pub stage: usize,
    /// Nodes of the kernel in arena order (pass: body and accumulators; others: statements).
    pub nodes: Vec<Handle<Expr>>,
    pub sweeps: usize,
    /// The schedule stages whose token passes this kernel runs as its sweeps (≥ 2: fused).
    pub fused: Vec<usize>,
    /// Threads per block.
    pub threads: u32,
    /// Small stages whose statements this one-block kernel runs after its own
    /// ([`fuse::merge_one_block`]).
    pub merged: Vec<usize>,
}

/// The analysis every emitter function reads.
pub(crate) struct Plan<'a> {
    pub m: &'a Module,
    pub opts: &'a CudaOptions,
    pub canon: HandleVec<Expr, Handle<Expr>>,
    pub role: HandleVec<Expr, Role>,
    pub stored: HandleVec<Expr, bool>,
    /// Root canon nodes at token level (their pass zero-fills the padding).
    pub tok_root: HandleVec<Expr, bool>,
    pub kernels: Vec<KernelPlan>,
    /// Coarse nodes recomputed per sequence in a pass (before its sweeps), per kernel.
    pub prologue: Vec<Vec<Handle<Expr>>>,
    /// Token nodes a later kernel or sweep recomputes instead of reading them from a buffer.
    pub remat: HandleVec<Expr, bool>,
    /// `seq` reductions of a fused pass finished right after their sweep (read by a later one).
    pub early: HandleVec<Expr, bool>,
    /// Token scans of a pass that recompute their argument's cone (operands first): a
    /// `seq_next` / `seq_prev` as a gather at the neighbouring token ([`check::gather_cone`]: no scan,
    /// no store, no sweep), another scan in its load at each token ([`check::scan_cone`]: the argument
    /// is neither stored nor needs a sweep first). [`Plan::gather`], [`Plan::scan_inline`].
    pub recompute: HandleVec<Expr, Option<Vec<Handle<Expr>>>>,
}

impl Plan<'_> {
    /// A shift computed as a gather (`recompute` of a `seq_next` / `seq_prev`).
    pub(crate) fn gather(&self, h: Handle<Expr>) -> bool {
        self.recompute[h].is_some() && self.is_shift(h)
    }

    /// A scan whose load recomputes its argument (`recompute` of another scan).
    pub(crate) fn scan_inline(&self, h: Handle<Expr>) -> bool {
        self.recompute[h].is_some() && !self.is_shift(h)
    }

    fn is_shift(&self, h: Handle<Expr>) -> bool {
        matches!(
            self.m.exprs[h],
            Expr::Scan {
                op: ScanOp::Next | ScanOp::Prev,
                ..
            }
        )
    }
}

pub(crate) fn err(m: &Module, h: Handle<Expr>, msg: impl Into<String>) -> BackendError {
    BackendError::at(m, h, msg)
}

/// `Role::None` nodes computed inline wherever they are read.
pub(crate) fn is_inline(e: &Expr) -> bool {
    match e {
        Expr::Const(_) | Expr::Bool(_) | Expr::Param(_) | Expr::Input(_) | Expr::Index(_) => true,
        Expr::Unary { .. }
        | Expr::Binary { .. }
        | Expr::Select { .. }
        | Expr::Broadcast { .. }
        | Expr::Reduce { .. }
        | Expr::Scan { .. }
        | Expr::Rank { .. }
        | Expr::Quantile { .. }
        | Expr::PosReduce { .. }
        | Expr::Detach { .. } => false,
    }
}

/// Generates the CUDA program of a scheduled module.
pub fn emit(m: &Module, s: &Schedule, opts: &CudaOptions) -> Result<CudaProgram, BackendError> {
    // token values computed in a small stage (functions of `pos` and of finished values, their
    // sums, per-position group reductions) would make its one-block kernel walk every token:
    // they run as a per-sequence pass of their own
    match fuse::token_work_passes(m, s) {
        Some(split) => emit_schedule(m, &split, opts),
        None => emit_schedule(m, s, opts),
    }
}

fn emit_schedule(
    m: &Module,
    s: &Schedule,
    opts: &CudaOptions,
) -> Result<CudaProgram, BackendError> {
    let plan = plan(m, s, opts)?;
    let (slots, roots) = slots_and_roots(&plan)?;
    let ctx_words = CTX_HEADER_WORDS + slots.len() + m.params.len().max(1);
    if ctx_words > CTX_MAX_WORDS {
        return Err(BackendError {
            handle: None,
            span: m.span(m.loss),
            message: format!(
                "the kernel argument would need {ctx_words} words (at most {CTX_MAX_WORDS}): too many inputs, parameters and stored values"
            ),
        });
    }
    let ident = ident_of(&m.name);
    let mut out = String::new();
    let kernel_text = emit_kernels::write_program(&plan, &slots, &roots, &ident, &mut out)?;
    let launches = plan
        .kernels
        .iter()
        .map(|k| Launch {
            kernel: k.name.clone(),
            grid: k.kind.grid(),
            threads: k.threads,
            arg: k.kind.digit(),
        })
        .collect::<Vec<_>>();
    let mut launches = launches;
    for (suffix, grid, threads) in [
        ("out_tok", Grid::PerSequence, PASS_THREADS),
        ("out", Grid::Single, SMALL_THREADS),
    ] {
        let kernel = format!("rlo_{ident}_{suffix}");
        if out.contains(&format!(" {kernel}(")) {
            launches.push(Launch {
                kernel,
                grid,
                threads,
                arg: None,
            });
        }
    }
    let mut roots = roots.into_iter();
    let loss = roots.next().ok_or_else(|| err(m, m.loss, "no loss root"))?;
    let metrics = roots.by_ref().take(m.metrics.len()).collect();
    let grads: Vec<RootLoc> = roots.by_ref().take(m.grads.len()).collect();
    let outputs: Vec<RootLoc> = roots.collect();
    // (launch index, node, step) of the sorts' and selects' launches
    let sorts: Vec<(usize, usize, KernelKind)> = plan
        .kernels
        .iter()
        .enumerate()
        .filter(|(_, k)| matches!(k.kind, KernelKind::Sort(_) | KernelKind::Select(_)))
        .filter_map(|(i, k)| Some((i, k.nodes.first()?.index(), k.kind)))
        .collect();
    let traffic = traffic::of_program(
        m,
        opts,
        &out,
        &launches,
        &slots,
        grads.iter().chain(&outputs),
        &sorts,
    );
    out.push_str(&format!("// traffic model: {}\n", traffic.summary()));
    Ok(CudaProgram {
        ident,
        source: out,
        kernel_text,
        layout: opts.layout,
        tok_dtype: opts.tok_dtype,
        launches,
        slots,
        n_params: m.params.len(),
        loss,
        metrics,
        grads,
        outputs,
        traffic,
    })
}

/// Roots in order: loss, metrics, grads, outputs.
pub(crate) fn root_handles(m: &Module) -> Vec<Handle<Expr>> {
    let mut v = vec![m.loss];
    v.extend(m.metrics.iter().map(|x| x.value));
    v.extend(m.grads.iter().map(|x| x.value));
    v.extend(m.outputs.iter().map(|x| x.value));
    v
}

fn plan<'a>(m: &'a Module, s: &Schedule, opts: &'a CudaOptions) -> Result<Plan<'a>, BackendError> {
    let n = m.exprs.len();
    // canon: follow broadcasts and detaches to the node that holds the value
    let mut canon: HandleVec<Expr, Handle<Expr>> = HandleVec::new(n, Handle::from_index(0));
    for (h, e) in m.exprs.iter() {
        canon[h] = match *e {
            Expr::Broadcast { arg, .. } | Expr::Detach { arg } if arg < h => canon[arg],
            Expr::Broadcast { .. } | Expr::Detach { .. } => {
                return Err(err(m, h, "operand after its user"))
            }
            Expr::Const(_)
            | Expr::Bool(_)
            | Expr::Param(_)
            | Expr::Input(_)
            | Expr::Index(_)
            | Expr::Unary { .. }
            | Expr::Binary { .. }
            | Expr::Select { .. }
            | Expr::Reduce { .. }
            | Expr::Scan { .. }
            | Expr::Rank { .. }
            | Expr::Quantile { .. }
            | Expr::PosReduce { .. } => h,
        };
    }
    let mut role: HandleVec<Expr, Role> = HandleVec::new(n, Role::None);
    let mut kernels: Vec<KernelPlan> = Vec::new();
    let ident = ident_of(&m.name);
    let fusions = if opts.disable_fusion {
        Vec::new()
    } else {
        fuse::fusions(m, s, &canon)
    };
    let mut k = 0;
    while k < s.stages.len() {
        if let Some(f) = fusions.iter().find(|f| f.passes.first() == Some(&k)) {
            fuse::add_passes(
                m,
                s,
                &canon,
                f,
                &ident,
                !opts.disable_sort,
                &mut role,
                &mut kernels,
            );
            k = f.passes.last().map_or(k, |&l| l) + 1;
            continue;
        }
        let stage = &s.stages[k];
        let mut computed = fuse::computed(m, &canon, stage);
        if stage.kind == StageKind::Small && !opts.disable_sort {
            computed =
                fuse::add_order_stats(m, &canon, &ident, k, computed, &mut role, &mut kernels);
        }
        match stage.kind {
            StageKind::TokenPass if computed.is_empty() => {}
            StageKind::TokenPass => {
                let f = fuse::Fusion {
                    passes: vec![k],
                    mids: vec![None],
                    seq_local: vec![Vec::new()],
                };
                fuse::add_passes(
                    m,
                    s,
                    &canon,
                    &f,
                    &ident,
                    !opts.disable_sort,
                    &mut role,
                    &mut kernels,
                );
            }
            StageKind::Small => fuse::add_small(&ident, k, computed, &mut role, &mut kernels),
        }
        k += 1;
    }
    fuse::merge_one_block(&mut kernels, &mut role);
    let mut p = Plan {
        m,
        opts,
        canon,
        role,
        stored: HandleVec::new(n, false),
        tok_root: HandleVec::new(n, false),
        prologue: Vec::new(),
        remat: HandleVec::new(n, false),
        early: HandleVec::new(n, false),
        recompute: HandleVec::new(n, None),
        kernels,
    };
    check::check_and_mark(&mut p)?;
    Ok(p)
}

/// The kernel whose completion makes `h`'s value readable by later kernels.
pub(crate) fn ready_kernel(r: Role) -> Option<usize> {
    match r {
        Role::None => None,
        Role::Tok { kernel, .. } | Role::Stmt { kernel } | Role::SeqLocal { kernel, .. } => {
            Some(kernel)
        }
        Role::Acc { kernel, fin, .. } => Some(fin.unwrap_or(kernel)),
    }
}

pub(crate) fn elementwise(e: &Expr) -> bool {
    matches!(
        e,
        Expr::Unary { .. } | Expr::Binary { .. } | Expr::Select { .. }
    )
}

/// Slots: inputs (in module order), then the buffers of stored nodes (arena order: `v<h>`, and
/// `q<h>`/`c<h>` partials of cross-sequence reductions), then `r<k>` buffers for roots that are
/// not a stored node at their own level. Returns the slots and one [`RootLoc`] per root.
fn slots_and_roots(p: &Plan) -> Result<(Vec<Slot>, Vec<RootLoc>), BackendError> {
    let m = p.m;
    let mut slots: Vec<Slot> = (0..m.inputs.len() as u32).map(Slot::Input).collect();
    for h in m.exprs.handles() {
        if !p.stored[h] {
            continue;
        }
        slots.push(Slot::Buffer {
            name: format!("v{}", h.index()),
            level: m.level(h),
            extra: 0,
        });
        if let Role::Acc { fin: Some(_), .. } = p.role[h] {
            slots.push(Slot::Buffer {
                name: format!("q{}", h.index()),
                level: Level::Seq,
                extra: 0,
            });
            if let Expr::Reduce {
                op: ReduceOp::Max | ReduceOp::Min,
                ..
            } = m.exprs[h]
            {
                slots.push(Slot::Buffer {
                    name: format!("c{}", h.index()),
                    level: Level::Seq,
                    extra: 0,
                });
            }
        }
    }
    // the sorts' keys and slots (two of each: the passes alternate) and digit counts (16 per
    // tile of SORT_TILE slots: at most n + 16); the selects' keys, 33 counts per tile and state
    for k in &p.kernels {
        let bufs: &[(&str, Level, usize)] = match k.kind {
            KernelKind::Sort(SortStep::Keys) => &[
                ("ka", Level::Tok, 0),
                ("kb", Level::Tok, 0),
                ("ia", Level::Tok, 0),
                ("ib", Level::Tok, 0),
                ("h", Level::Tok, 16),
            ],
            KernelKind::Select(SelectStep::Keys) => &[
                ("ka", Level::Tok, 0),
                ("h", Level::Tok, 33),
                ("st", Level::Batch, 8),
            ],
            KernelKind::Pass
            | KernelKind::Fin
            | KernelKind::Small
            | KernelKind::UnitQuantiles
            | KernelKind::Sort(_)
            | KernelKind::Select(_) => &[],
        };
        for &h in &k.nodes {
            for &(prefix, level, extra) in bufs {
                slots.push(Slot::Buffer {
                    name: format!("{prefix}{}", h.index()),
                    level,
                    extra,
                });
            }
        }
    }
    let mut roots = Vec::new();
    for (k, r) in root_handles(m).into_iter().enumerate() {
        let c = p.canon[r];
        let name = if p.stored[c] && m.level(c) == m.level(r) {
            format!("v{}", c.index())
        } else {
            let name = format!("r{k}");
            slots.push(Slot::Buffer {
                name: name.clone(),
                level: m.level(r),
                extra: 0,
            });
            name
        };
        let slot = slots
            .iter()
            .position(|s| matches!(s, Slot::Buffer { name: n, .. } if *n == name))
            .ok_or_else(|| err(m, r, "internal: root buffer missing"))?;
        roots.push(RootLoc {
            slot,
            level: m.level(r),
        });
    }
    Ok((slots, roots))
}
