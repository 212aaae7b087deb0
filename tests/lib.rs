//! Shared helpers for the cross-crate tests: random layouts, random batches for any module, random
//! well-typed modules built directly in IR (every primitive, every level, `diff` inputs), and the
//! compile pipeline for hand-built IR. The cpu and cuda parity tests reuse these.
//!
//! Everything takes an explicit `rng` (seed it with `StdRng::seed_from_u64`) so failures replay.

use rand::Rng;
use rlo_compiler::arena::Handle;
use rlo_compiler::data::{Batch, Layout};
use rlo_compiler::ir::{
    BinaryOp, Expr, IndexKind, Input, Module, Named, Param, ReduceOp, ScanOp, UnaryOp,
};
use rlo_compiler::passes::builder::Builder;
use rlo_compiler::schedule::{schedule, Schedule};
use rlo_compiler::types::{DType, Level, Ty};
use std::collections::BTreeMap;

/// Shape limits of [`random_layout`].
#[derive(Clone, Copy, Debug)]
pub struct LayoutSpec {
    pub max_groups: usize,
    pub max_group_size: usize,
    pub max_len: usize,
    /// Split sequences into several turns (some possibly without tokens).
    pub turns: bool,
}

impl Default for LayoutSpec {
    fn default() -> Self {
        LayoutSpec {
            max_groups: 3,
            max_group_size: 3,
            max_len: 5,
            turns: true,
        }
    }
}

/// A ragged layout: 1..=max_groups groups of 1..=max_group_size sequences (groups of one and odd
/// sizes included), sequences interleaved across groups (not sorted by group), lengths in
/// `0..=max_len` with lengths 0 and 1 over-represented, and (with `turns`) 1 to 3 turns per
/// sequence whose token counts may be 0.
pub fn random_layout(rng: &mut impl Rng, spec: LayoutSpec) -> Layout {
    let n_groups = rng.random_range(1..=spec.max_groups.max(1));
    let mut seq_group: Vec<u32> = Vec::new();
    for g in 0..n_groups {
        let size = rng.random_range(1..=spec.max_group_size.max(1));
        seq_group.extend(std::iter::repeat_n(g as u32, size));
    }
    // Interleave: a random permutation of the sequences.
    for i in (1..seq_group.len()).rev() {
        let j = rng.random_range(0..=i);
        seq_group.swap(i, j);
    }
    let mut seq_offsets = vec![0usize];
    let mut turn_offsets = vec![0usize];
    let mut tok_turn = Vec::new();
    for _ in 0..seq_group.len() {
        let len = match rng.random_range(0..6) {
            0 => 0,
            1 => 1,
            _ => rng.random_range(0..=spec.max_len),
        };
        let n_turns = if spec.turns {
            rng.random_range(1..=3usize)
        } else {
            1
        };
        let k0 = turn_offsets.last().copied().unwrap_or(0);
        let mut turn = 0usize;
        for _ in 0..len {
            if turn + 1 < n_turns && rng.random_bool(0.35) {
                turn += 1;
            }
            tok_turn.push((k0 + turn) as u32);
        }
        turn_offsets.push(k0 + n_turns);
        seq_offsets.push(seq_offsets.last().copied().unwrap_or(0) + len);
    }
    Layout {
        seq_offsets,
        turn_offsets,
        tok_turn,
        seq_group,
        n_groups,
    }
}

/// One value per element of every input of `m` (f32 inputs uniform in [-2, 2], rounded to f32 so
/// f32 backends see the same numbers; inputs whose name ends in `logp` are log-probabilities,
/// uniform in [-3, -0.05]; bool inputs 0/1).
pub fn random_batch(m: &Module, layout: &Layout, rng: &mut impl Rng) -> Batch {
    let mut values = BTreeMap::new();
    for inp in &m.inputs {
        let n = layout.count(inp.ty.level);
        let v: Vec<f64> = (0..n)
            .map(|_| match inp.ty.dtype {
                DType::F32 if inp.name.ends_with("logp") => {
                    f64::from(rng.random_range(-3.0f64..-0.05) as f32)
                }
                DType::F32 => f64::from(rng.random_range(-2.0f64..2.0) as f32),
                DType::Bool => f64::from(u8::from(rng.random_bool(0.6))),
            })
            .collect();
        values.insert(inp.name.clone(), v);
    }
    Batch {
        layout: layout.clone(),
        values,
    }
}

/// The middle of the pipeline for hand-built forward IR: validate, differentiate, validate,
/// simplify, validate, schedule.
pub fn compile_module(m: Module) -> Result<(Module, Schedule), String> {
    use rlo_compiler::{autodiff, passes, valid};
    valid::validate(&m).map_err(|e| format!("forward: {e}"))?;
    let m = autodiff::differentiate(m);
    valid::validate(&m).map_err(|e| format!("autodiff: {e}"))?;
    let m = passes::simplify(m);
    valid::validate(&m).map_err(|e| format!("simplify: {e}"))?;
    let s = schedule(&m);
    Ok((m, s))
}

/// A module skeleton with one input per `(name, level, dtype, diff)` and parameters with defaults.
pub fn module_with_inputs(
    name: &str,
    inputs: &[(&str, Level, DType, bool)],
    params: &[(&str, f64)],
) -> Builder {
    let mut m = Module::new(name);
    m.inputs = inputs
        .iter()
        .map(|&(n, level, dtype, diff)| Input {
            name: n.into(),
            ty: Ty::new(level, dtype),
            diff,
            span: Default::default(),
        })
        .collect();
    m.params = params
        .iter()
        .map(|&(n, d)| Param {
            name: n.into(),
            default: d,
            span: Default::default(),
        })
        .collect();
    Builder::new(m)
}

/// Sets the roots of a hand-built module.
pub fn finish(
    mut b: Builder,
    loss: Handle<Expr>,
    metrics: &[(&str, Handle<Expr>)],
    outputs: &[(&str, Handle<Expr>)],
) -> Module {
    let to_f = |b: &mut Builder, h: Handle<Expr>| {
        if b.m.ty(h).dtype == DType::Bool {
            b.unary(UnaryOp::ToF32, h)
        } else {
            h
        }
    };
    let metrics: Vec<Named> = metrics
        .iter()
        .map(|&(n, h)| Named {
            name: n.into(),
            value: to_f(&mut b, h),
            span: Default::default(),
        })
        .collect();
    let mut m = b.finish();
    m.loss = loss;
    m.metrics = metrics;
    m.outputs = outputs
        .iter()
        .map(|&(n, h)| Named {
            name: n.into(),
            value: h,
            span: Default::default(),
        })
        .collect();
    m
}

/// The inputs every random module has: diff inputs at tok, turn and seq; plain inputs at every
/// level; bool masks at tok and seq.
pub const RANDOM_INPUTS: &[(&str, Level, DType, bool)] = &[
    ("logp", Level::Tok, DType::F32, true),
    ("old", Level::Tok, DType::F32, false),
    ("tr", Level::Turn, DType::F32, true),
    ("sv", Level::Seq, DType::F32, true),
    ("reward", Level::Seq, DType::F32, false),
    ("gv", Level::Group, DType::F32, false),
    ("bv", Level::Batch, DType::F32, false),
    ("mask", Level::Tok, DType::Bool, false),
    ("ok", Level::Seq, DType::Bool, false),
];

/// Size and content of [`random_module`].
#[derive(Clone, Copy, Debug)]
pub struct ModuleSpec {
    /// Number of random primitives appended.
    pub steps: usize,
    /// Use `Detach` (its gradient is not the derivative of the value: leave it out of
    /// finite-difference checks, keep it for backend parity).
    pub detach: bool,
}

/// The random module of `seed` the CUDA emulator and traffic tests share (4–15 steps,
/// detaches), and the generator after drawing it (for the batches).
pub fn seeded_module(seed: u64) -> (Module, rand::rngs::StdRng) {
    use rand::SeedableRng;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let spec = ModuleSpec {
        steps: 4 + (seed % 12) as usize,
        detach: true,
    };
    (random_module(&mut rng, spec), rng)
}

/// Grows a random well-typed module: `steps` random primitives (every variant of `Expr` is
/// reachable, at every level) over [`RANDOM_INPUTS`], then a loss summing a few of the newest
/// values to batch level, a metric and an output. Values are kept in safe domains by
/// construction (`log` of `softplus + 0.1`, divisions by `1 + y²`, `exp` of `tanh`), so
/// gradients are finite; kinks (min/max/abs/select/rank/quantile) are left in on purpose.
pub fn random_module(rng: &mut impl Rng, spec: ModuleSpec) -> Module {
    let steps = spec.steps;
    let mut b = module_with_inputs("random", RANDOM_INPUTS, &[("p", 0.7)]);
    let mut pool: Vec<Handle<Expr>> = Vec::new();
    let mut bools: Vec<Handle<Expr>> = Vec::new();
    for i in 0..RANDOM_INPUTS.len() {
        let h = b.input(i as u32);
        if b.m.ty(h).dtype == DType::Bool {
            bools.push(h);
        } else {
            pool.push(h);
        }
    }
    let pos = b.index(IndexKind::Pos);
    let pos = b.scale(0.25, pos);
    pool.push(pos);
    let ti = b.index(IndexKind::TurnIndex);
    pool.push(ti);
    for _ in 0..steps {
        let h = random_step(rng, &mut b, &pool, &mut bools, spec.detach);
        pool.push(h);
    }
    // Loss: a few recent values, each reduced (sum or mean) to batch level.
    let mut loss: Option<Handle<Expr>> = None;
    let k = rng.random_range(1..=3usize).min(pool.len());
    let mut picks: Vec<Handle<Expr>> = pool.iter().rev().take(k).copied().collect();
    picks.push(pool.first().copied().unwrap_or(pos)); // logp itself keeps every module differentiable
    for h in picks {
        let mut v = b.unary(UnaryOp::Tanh, h);
        if b.level(v) < Level::Batch {
            let s = b.reduce(ReduceOp::Sum, v, Level::Batch, None);
            let n = b.count(b.level(v), Level::Batch, None);
            let one = b.constant(1.0);
            let n = b.binary(BinaryOp::Max, n, one);
            v = b.div(s, n);
        }
        loss = Some(match loss {
            None => v,
            Some(l) => b.add(l, v),
        });
    }
    let loss = loss.unwrap_or_else(|| b.constant(0.0));
    let out = pool.last().copied().unwrap_or(pos);
    let metric = b.reduce(ReduceOp::Sum, pos, Level::Batch, None);
    finish(b, loss, &[("m", metric)], &[("o", out)])
}

fn pick(rng: &mut impl Rng, v: &[Handle<Expr>]) -> Handle<Expr> {
    v.get(rng.random_range(0..v.len().max(1)))
        .copied()
        .unwrap_or(Handle::from_index(0))
}

fn coarser(rng: &mut impl Rng, l: Level) -> Option<Level> {
    let up: Vec<Level> = Level::ALL.into_iter().filter(|&x| x > l).collect();
    up.get(rng.random_range(0..up.len().max(1))).copied()
}

fn random_step(
    rng: &mut impl Rng,
    b: &mut Builder,
    pool: &[Handle<Expr>],
    bools: &mut Vec<Handle<Expr>>,
    detach: bool,
) -> Handle<Expr> {
    let x = pick(rng, pool);
    let lx = b.level(x);
    match rng.random_range(0..16) {
        0 => {
            let ops = [
                UnaryOp::Neg,
                UnaryOp::Abs,
                UnaryOp::Sigmoid,
                UnaryOp::Softplus,
                UnaryOp::Tanh,
            ];
            b.unary(ops[rng.random_range(0..ops.len())], x)
        }
        1 => {
            // exp, expm1 of a bounded value; log, log1p, sqrt of a positive one
            let t = b.unary(UnaryOp::Tanh, x);
            let sp = b.unary(UnaryOp::Softplus, x);
            let c = b.constant(0.1);
            let p = b.add(sp, c);
            match rng.random_range(0..6) {
                0 => b.unary(UnaryOp::Exp, t),
                1 => b.unary(UnaryOp::Expm1, t),
                2 => b.unary(UnaryOp::Log, p),
                3 => b.unary(UnaryOp::Log1p, p),
                4 => b.unary(UnaryOp::Lgamma, p),
                _ => b.unary(UnaryOp::Sqrt, p),
            }
        }
        2..=4 => {
            let y = pick(rng, pool);
            match rng.random_range(0..6) {
                0 => b.add(x, y),
                1 => b.sub(x, y),
                2 => b.mul(x, y),
                3 => {
                    let y2 = b.mul(y, y);
                    let one = b.constant(1.0);
                    let d = b.add(y2, one);
                    b.div(x, d)
                }
                4 => b.binary(BinaryOp::Min, x, y),
                _ => b.binary(BinaryOp::Max, x, y),
            }
        }
        5 => {
            let sp = b.unary(UnaryOp::Softplus, x);
            let c = b.constant(0.5);
            let base = b.add(sp, c);
            let y = pick(rng, pool);
            let e = if rng.random_bool(0.5) {
                b.unary(UnaryOp::Tanh, y)
            } else {
                b.constant(2.0)
            };
            b.binary(BinaryOp::Pow, base, e)
        }
        6 => {
            let y = pick(rng, pool);
            let cmp = [
                BinaryOp::Lt,
                BinaryOp::Le,
                BinaryOp::Gt,
                BinaryOp::Ge,
                BinaryOp::Ne,
            ];
            let mut c = b.binary(cmp[rng.random_range(0..cmp.len())], x, y);
            if rng.random_bool(0.3) {
                let other = pick(rng, bools);
                c = if rng.random_bool(0.5) {
                    b.binary(BinaryOp::And, c, other)
                } else {
                    let n = b.unary(UnaryOp::Not, other);
                    b.binary(BinaryOp::Or, c, n)
                };
            }
            bools.push(c);
            let z = pick(rng, pool);
            b.select(c, x, z)
        }
        7 | 8 => {
            let Some(to) = coarser(rng, lx) else {
                return b.unary(UnaryOp::Tanh, x);
            };
            let op = [ReduceOp::Sum, ReduceOp::Max, ReduceOp::Min][rng.random_range(0..3)];
            let filter = filter_at(rng, b, bools, lx);
            b.reduce(op, x, to, filter)
        }
        9 => {
            let x = if lx > Level::Turn {
                let l = if rng.random_bool(0.5) {
                    Level::Tok
                } else {
                    Level::Turn
                };
                b.bcast(x, l)
            } else {
                x
            };
            // often an elementwise argument (a scan's load may recompute it)
            let x = if rng.random_bool(0.5) {
                b.unary(UnaryOp::Tanh, x)
            } else {
                x
            };
            let ops = [
                ScanOp::CumSum,
                ScanOp::RevCumSum,
                ScanOp::DiscountedRevCumSum,
                ScanOp::DiscountedCumSum,
                ScanOp::Next,
                ScanOp::Prev,
            ];
            let op = ops[rng.random_range(0..ops.len())];
            let d = match op {
                ScanOp::DiscountedRevCumSum | ScanOp::DiscountedCumSum => {
                    let mut y = pick(rng, pool);
                    if b.level(y) < b.level(x) {
                        y = b.param(0);
                    }
                    Some(b.unary(UnaryOp::Sigmoid, y))
                }
                ScanOp::CumSum | ScanOp::RevCumSum | ScanOp::Next | ScanOp::Prev => None,
            };
            b.scan(op, x, d)
        }
        10 => {
            let Some(within) = coarser(rng, lx) else {
                return b.unary(UnaryOp::Sigmoid, x);
            };
            let r = b.rank(x, within);
            let r = b.scale(0.1, r);
            let y = pick(rng, pool);
            b.mul(r, y)
        }
        11 => {
            let Some(to) = coarser(rng, lx) else {
                return b.unary(UnaryOp::Neg, x);
            };
            let q = if rng.random_bool(0.5) {
                b.constant([0.0, 0.25, 0.5, 0.8, 1.0, 1.3][rng.random_range(0..6)])
            } else {
                let p = b.param(0);
                b.unary(UnaryOp::Sigmoid, p)
            };
            let filter = filter_at(rng, b, bools, lx);
            b.quantile(x, q, to, filter)
        }
        12 => {
            let x = b.bcast(x, Level::Tok);
            let op = [ReduceOp::Sum, ReduceOp::Max, ReduceOp::Min][rng.random_range(0..3)];
            b.pos_reduce(op, x)
        }
        13 if detach => {
            let d = b.detach(x);
            let y = pick(rng, pool);
            b.mul(d, y)
        }
        14 => {
            let p = b.param(0);
            let c = b.constant(rng.random_range(-1.5..1.5));
            let t = b.mul(x, p);
            b.add(t, c)
        }
        _ => {
            let c = pick(rng, bools);
            let f = b.unary(UnaryOp::ToF32, c);
            b.add(x, f)
        }
    }
}

fn filter_at(
    rng: &mut impl Rng,
    b: &mut Builder,
    bools: &[Handle<Expr>],
    level: Level,
) -> Option<Handle<Expr>> {
    if !rng.random_bool(0.4) {
        return None;
    }
    let cands: Vec<Handle<Expr>> = bools
        .iter()
        .copied()
        .filter(|&h| b.level(h) >= level)
        .collect();
    if cands.is_empty() {
        return None;
    }
    let c = pick(rng, &cands);
    Some(b.bcast(c, level))
}

/// The repository's `stdlib/` folder.
/// `$RLO_STDLIB_DIR`, else the repository's `stdlib/` where this crate was built, else
/// `./stdlib` (a test binary carried to the GPU machine, run from the repository root).
pub fn stdlib_dir() -> std::path::PathBuf {
    if let Some(d) = std::env::var_os("RLO_STDLIB_DIR") {
        return d.into();
    }
    let built = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../stdlib");
    if built.is_dir() {
        return built;
    }
    std::path::PathBuf::from("stdlib")
}

/// The text of `stdlib/<name>.rlo`.
pub fn stdlib_source(name: &str) -> Result<String, String> {
    let path = stdlib_dir().join(format!("{name}.rlo"));
    std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))
}

/// `stdlib/<name>.rlo` compiled (front end, autodiff, schedule), or the rendered diagnostics.
pub fn compile_stdlib(name: &str) -> Result<rlo_compiler::Compiled, String> {
    let text = stdlib_source(name)?;
    rlo_compiler::compile(
        &format!("{name}.rlo"),
        &text,
        &rlo_compiler::Options::default(),
    )
    .map_err(|f| f.render(false))
}

/// The stdlib files that define an objective, by name (`grpo`, …), sorted.
pub fn stdlib_objective_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(stdlib_dir())
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "rlo"))
                .filter(|p| {
                    std::fs::read_to_string(p)
                        .is_ok_and(|t| t.lines().any(|l| l.starts_with("objective")))
                })
                .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}
