//! What the generated kernels move through global memory per valid token, read from the
//! generated text (so it describes the code as emitted, not the plan).
//!
//! Token-level arrays are the ones indexed by the token index (`[i]`, `RLO_TOK(s, t)`); each
//! kernel's body is cut into sweeps at its token loops. The model: the first sweep of a kernel
//! that touches an array reads it from DRAM, a later sweep of the same kernel re-reads it (from
//! L2 when the blocks resident at once hold less than the L2, see `FUSED_THREADS`), and every
//! array a kernel writes is written once. The roofline is every token input the program reads,
//! read once, plus every token root (gradients, token outputs) written once — the figure the
//! benchmark divides by the device's copy bandwidth.

use super::{CudaOptions, Grid, KernelKind, Launch, RootLoc, SelectStep, Slot, SortStep};
use crate::ir::Module;
use crate::types::{DType, Level};

/// One array touched by a sweep, with its bytes per token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArrayUse {
    pub name: String,
    pub bytes: usize,
}

/// The token arrays one sweep (token loop) of a kernel reads and writes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SweepTraffic {
    pub reads: Vec<ArrayUse>,
    pub writes: Vec<ArrayUse>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelTraffic {
    pub kernel: String,
    pub sweeps: Vec<SweepTraffic>,
}

/// Token traffic of a program; all figures in bytes per valid token.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Traffic {
    pub kernels: Vec<KernelTraffic>,
    /// Token inputs read once plus token roots written once.
    pub roofline: usize,
    /// One-block kernels (`Grid::Single`) that touch token-level arrays: one SM walking the
    /// whole batch, which the byte counts above do not show (it is latency, not bandwidth).
    pub one_block_token_kernels: Vec<String>,
}

impl Traffic {
    /// Bytes read from DRAM: each array once per kernel that reads it.
    pub fn dram_read(&self) -> usize {
        self.kernels.iter().map(|k| first_reads(k).0).sum()
    }
    /// Bytes re-read by a later sweep of the kernel that read them first (L2 in the model).
    pub fn reread(&self) -> usize {
        self.kernels.iter().map(|k| first_reads(k).1).sum()
    }
    /// Bytes written: each array once per kernel that writes it.
    pub fn written(&self) -> usize {
        let mut total = 0;
        for k in &self.kernels {
            let mut seen: Vec<&str> = Vec::new();
            for a in k.sweeps.iter().flat_map(|s| &s.writes) {
                if !seen.contains(&a.name.as_str()) {
                    seen.push(&a.name);
                    total += a.bytes;
                }
            }
        }
        total
    }
    /// (DRAM reads + writes) / roofline.
    pub fn ratio(&self) -> f64 {
        (self.dram_read() + self.written()) as f64 / self.roofline.max(1) as f64
    }
    /// Kernels with at least one token loop.
    pub fn token_kernels(&self) -> usize {
        self.kernels.iter().filter(|k| !k.sweeps.is_empty()).count()
    }
    /// One line: `reads 12 B/token from DRAM (+8 re-read), writes 4; roofline 16; 1.00x`.
    pub fn summary(&self) -> String {
        let one_block = if self.one_block_token_kernels.is_empty() {
            String::new()
        } else {
            format!(
                "; ONE BLOCK walks the tokens in {}",
                self.one_block_token_kernels.join(", ")
            )
        };
        format!(
            "reads {} B/token from DRAM (+{} re-read by a later sweep), writes {}; roofline {} (inputs once, token roots once): {:.2}x, {} token kernel(s){one_block}",
            self.dram_read(),
            self.reread(),
            self.written(),
            self.roofline,
            self.ratio(),
            self.token_kernels()
        )
    }
}

/// (bytes read first in this kernel, bytes re-read by later sweeps).
fn first_reads(k: &KernelTraffic) -> (usize, usize) {
    let mut seen: Vec<&str> = Vec::new();
    let (mut first, mut again) = (0, 0);
    for s in &k.sweeps {
        let mut here: Vec<&str> = Vec::new();
        for a in &s.reads {
            if here.contains(&a.name.as_str()) {
                continue;
            }
            here.push(&a.name);
            if seen.contains(&a.name.as_str()) {
                again += a.bytes;
            } else {
                seen.push(&a.name);
                first += a.bytes;
            }
        }
    }
    (first, again)
}

/// Measures the token traffic of `source`'s kernels (`kernels`, in launch order); `bytes` gives
/// the bytes per element of an array name (`in3`, `v12`, `r0`).
pub(crate) fn measure(
    source: &str,
    kernels: &[String],
    bytes: &dyn Fn(&str) -> usize,
    roofline: usize,
) -> Traffic {
    let kernels = kernels
        .iter()
        .map(|name| KernelTraffic {
            kernel: name.clone(),
            sweeps: kernel_body(source, name)
                .map(|b| sweeps(b, bytes))
                .unwrap_or_default(),
        })
        .collect();
    Traffic {
        kernels,
        roofline,
        one_block_token_kernels: Vec::new(),
    }
}

fn kernel_body<'s>(source: &'s str, name: &str) -> Option<&'s str> {
    let start = source.find(&format!(" {name}(const RloCtx ctx) {{"))?;
    let rest = source.get(start..)?;
    let end = rest.find("\n}\n").unwrap_or(rest.len());
    rest.get(..end)
}

/// Token loops start a sweep, and so does a quantile's element lambda over tokens
/// (`rlo_block_quantile` sweeps it from L2 after the first time); the padding loops (`t = len +
/// …`) only zero-fill.
fn is_sweep_start(line: &str) -> bool {
    let l = line.trim_start();
    l.starts_with("for (long long t = threadIdx.x;")
        || l.starts_with("for (long long t = 0;")
        || (l.starts_with("auto each = [&](auto&& f) {") && l.contains("RLO_TOK("))
}

fn sweeps(body: &str, bytes: &dyn Fn(&str) -> usize) -> Vec<SweepTraffic> {
    let mut out: Vec<SweepTraffic> = Vec::new();
    for line in body.lines() {
        if is_sweep_start(line) {
            out.push(SweepTraffic::default());
        }
        let Some(cur) = out.last_mut() else {
            continue;
        };
        let trimmed = line.trim_start();
        for (name, pos) in token_refs(line) {
            let store = pos == line.len() - trimmed.len() && is_assignment(line, pos);
            let list = if store {
                &mut cur.writes
            } else {
                &mut cur.reads
            };
            if !list.iter().any(|a| a.name == name) {
                let b = bytes(&name);
                list.push(ArrayUse { name, bytes: b });
            }
        }
    }
    out
}

/// `ctx.v12[i] = …` (not `==`).
fn is_assignment(line: &str, pos: usize) -> bool {
    let Some(rest) = line.get(pos..) else {
        return false;
    };
    let Some(close) = rest.find(']') else {
        return false;
    };
    let after = rest.get(close + 1..).unwrap_or("").trim_start();
    after.starts_with('=') && !after.starts_with("==")
}

/// Token-indexed references in a line: `ctx.NAME[i]`, `ctx.NAME[RLO_TOK(s, t)]`,
/// `rlo_ld(ctx.NAME, i)`, `rlo_ld(ctx.NAME, RLO_TOK(s, t))`, with their byte offsets.
fn token_refs(line: &str) -> Vec<(String, usize)> {
    let mut v = Vec::new();
    let mut from = 0;
    while let Some(k) = line.get(from..).and_then(|r| r.find("ctx.")) {
        let at = from + k;
        let name_start = at + 4;
        let name: String = line
            .get(name_start..)
            .unwrap_or("")
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let after = line.get(name_start + name.len()..).unwrap_or("");
        let indexed = ["[i]", "[RLO_TOK(s, t)]", ", i)", ", RLO_TOK(s, t))"]
            .iter()
            .any(|p| after.starts_with(p));
        if indexed && !name.is_empty() {
            v.push((name.clone(), at));
        }
        from = name_start + name.len().max(1);
    }
    v
}

/// The token traffic of a generated program: `measure` over its source, and its roofline.
pub(crate) fn of_program<'r>(
    m: &Module,
    opts: &CudaOptions,
    source: &str,
    launches: &[Launch],
    slots: &[Slot],
    roots: impl Iterator<Item = &'r RootLoc>,
    sorts: &[(usize, usize, KernelKind)],
) -> Traffic {
    let input_bytes = |i: usize| match m.inputs.get(i) {
        Some(inp) if inp.ty.level == Level::Tok && inp.ty.dtype == DType::F32 => {
            opts.tok_dtype.bytes()
        }
        Some(_) | None => 4,
    };
    let bytes = |name: &str| -> usize {
        match name
            .strip_prefix("in")
            .and_then(|x| x.parse::<usize>().ok())
        {
            Some(i) => input_bytes(i),
            None => 4,
        }
    };
    let names: Vec<String> = launches.iter().map(|l| l.kernel.clone()).collect();
    let mut t = measure(source, &names, &bytes, 0);
    for l in launches.iter().filter(|l| l.grid == Grid::Single) {
        let touches = kernel_body(source, &l.kernel).is_some_and(|b| {
            b.contains("RLO_TOK(") || b.lines().any(|x| !token_refs(x).is_empty())
        });
        if touches && !t.one_block_token_kernels.contains(&l.kernel) {
            t.one_block_token_kernels.push(l.kernel.clone());
        }
    }
    // the batch-rank sorts' and batch-quantile selects' passes run in `rlo_common.cuh` helpers,
    // not in the generated loops: per token slot, a sort's digit pass reads the keys (hist),
    // then keys and slots (scatter) and writes both; placing the ranks reads the slots and
    // writes the rank; a select's digit pass reads the keys
    let use_ = |name: String| ArrayUse { name, bytes: 4 };
    for (launch, r, step) in sorts {
        let Some(kt) = t.kernels.get_mut(*launch) else {
            continue;
        };
        let ab = |j: &u32| SortStep::buffers(*j);
        let sweep = match step {
            KernelKind::Select(SelectStep::Hist(_)) => SweepTraffic {
                reads: vec![use_(format!("ka{r}"))],
                writes: Vec::new(),
            },
            KernelKind::Sort(SortStep::Hist(j)) => SweepTraffic {
                reads: vec![use_(format!("k{}{r}", ab(j).0))],
                writes: Vec::new(),
            },
            KernelKind::Sort(SortStep::Scatter(j)) => {
                let (a, b) = ab(j);
                SweepTraffic {
                    reads: vec![use_(format!("k{a}{r}")), use_(format!("i{a}{r}"))],
                    writes: vec![use_(format!("k{b}{r}")), use_(format!("i{b}{r}"))],
                }
            }
            KernelKind::Sort(SortStep::Place) => SweepTraffic {
                reads: vec![use_(format!("ia{r}"))],
                writes: vec![use_(format!("v{r}"))],
            },
            KernelKind::Sort(SortStep::Keys | SortStep::Scan(_))
            | KernelKind::Select(SelectStep::Keys | SelectStep::Pick(_) | SelectStep::Value)
            | KernelKind::Pass
            | KernelKind::Fin
            | KernelKind::Small
            | KernelKind::UnitQuantiles => continue,
        };
        kt.sweeps = vec![sweep];
    }
    let mut inputs: Vec<String> = t
        .kernels
        .iter()
        .flat_map(|k| &k.sweeps)
        .flat_map(|s| &s.reads)
        .filter(|a| a.name.starts_with("in"))
        .map(|a| a.name.clone())
        .collect();
    inputs.sort();
    inputs.dedup();
    let mut outs: Vec<usize> = roots
        .filter(|r| r.level == Level::Tok)
        .map(|r| r.slot)
        .collect();
    outs.sort_unstable();
    outs.dedup();
    let root_bytes: usize = outs
        .iter()
        .filter(|&&k| matches!(slots.get(k), Some(Slot::Buffer { .. })))
        .count()
        * 4;
    t.roofline = inputs.iter().map(|n| bytes(n)).sum::<usize>() + root_bytes;
    t
}
