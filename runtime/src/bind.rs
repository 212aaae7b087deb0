//! Batch binding: a set of named tensors (a safetensors file) → the packed [`Batch`] of a
//! [`Module`], and back (results, see `write.rs`). The only place tensor layouts are decided.
//!
//! # Layout tensors (reserved names; an `input` may not use them)
//! - **Tokens**, exactly one of:
//!   - `mask` `[B, T]` (bool, any integer or float dtype; every value must be 0 or 1): the valid
//!     tokens of sequence `b` are the positions `t` with `mask[b, t] = 1`, **in order**. A mask
//!     with holes is allowed: the masked positions are packed together (`pos` counts valid tokens
//!     only), which is what a multi-turn rollout with tool tokens masked out needs.
//!     Token-level inputs are `[B, T]`.
//!   - `lengths` `[B]` (integer): the valid tokens of sequence `b` are `0..lengths[b]`
//!     (`0 ≤ lengths[b] ≤ T`). Token-level inputs are `[B, T]`.
//!   - `seq_offsets` `[B + 1]` (integer; starts at 0, non-decreasing): packed tokens, sequence
//!     `b` is `seq_offsets[b]..seq_offsets[b+1]`. Token-level inputs are `[N]`, `N = seq_offsets[B]`.
//!   - none of them: allowed only when the objective has no `tok`/`turn` input; every sequence
//!     then has 0 tokens, and B comes from `group` or the first `seq` input.
//! - **Groups**, one of: `group` `[B]` (integer ids, any values, any order, groups of any size;
//!   group index `g` is the `g`-th smallest distinct id, so ids `0..G` map to themselves and a
//!   group-level tensor `[G]` is indexed by the sorted ids), or [`BindOptions::group_size`]
//!   (consecutive sequences; B must be divisible). With neither, each sequence is its own group
//!   if the objective uses no group-level value; otherwise it is an error.
//! - **Turns** (optional): `turn` with the shape of the token inputs (integer ids ≥ 0,
//!   non-decreasing along each sequence over its valid tokens, `< T` resp. `< N`). Sequence `b`
//!   has `K_b = 1 + (largest id among its valid tokens)` turns (0 if it has no valid token); ids
//!   may skip, which makes empty turns. Without `turn`, each sequence is one turn.
//!   Turn-level inputs are `[B, K]` (`K ≥ max K_b`; only `k < K_b` is read) or packed
//!   `[Σ K_b]`.
//!
//! # Inputs
//! `seq` inputs are `[B]`, `group` inputs `[G]`, `batch` inputs `[]` or `[1]`. `f32` inputs accept
//! f64/f32/bf16/f16 and integer dtypes, and must be finite at every valid position (padding may
//! hold anything, `inf` and NaN included). `bool` inputs accept bool and integer dtypes holding 0
//! or 1. Tensors that are neither inputs nor layout tensors are ignored.

use std::collections::BTreeMap;

use rlo_compiler::ir::{Expr, Module};
use rlo_compiler::types::{DType, Level};
use rlo_compiler::{Batch, Layout};
use safetensors::Dtype;

use crate::tensor::{dtype_name, is_float, is_int, Tensor, Tensors, Values};
use crate::RuntimeError;

/// Layout tensor names; inputs may not be called like this.
pub const LAYOUT_TENSORS: [&str; 5] = ["mask", "lengths", "seq_offsets", "group", "turn"];

/// Options of [`bind`] not carried by the file.
#[derive(Clone, Debug, Default)]
pub struct BindOptions {
    /// Groups are runs of this many consecutive sequences (instead of a `group` tensor).
    pub group_size: Option<usize>,
}

/// How token-level values sit in the file.
#[derive(Clone, Debug, PartialEq)]
pub enum TokShape {
    /// `[B, T]`; `src[i]` is the flat index `b·T + t` of packed token `i`.
    Padded { t: usize, src: Vec<usize> },
    /// `[N]`, already packed.
    Packed { n: usize },
}

/// Everything needed to put packed results back in the file's shapes.
#[derive(Clone, Debug, PartialEq)]
pub struct Shapes {
    pub tok: TokShape,
    /// `K` of turn-level results written as `[B, K]`.
    pub turn_k: usize,
    /// The shape each input was given in.
    pub inputs: BTreeMap<String, Vec<usize>>,
}

/// A bound batch and the shapes it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Bound {
    pub batch: Batch,
    pub shapes: Shapes,
}

/// Binds `tensors` to the inputs of `module` (see the module docs for the accepted layouts).
pub fn bind(tensors: &Tensors, module: &Module, opts: &BindOptions) -> Result<Bound, RuntimeError> {
    for input in &module.inputs {
        if LAYOUT_TENSORS.contains(&input.name.as_str()) {
            return Err(RuntimeError::ReservedName {
                name: input.name.clone(),
            });
        }
    }
    let toks = token_layout(tensors, module)?;
    let b = toks.lengths.len();
    let (turn_offsets, tok_turn) = turns(tensors, &toks)?;
    let (seq_group, n_groups) = groups(tensors, module, opts, b)?;

    let mut seq_offsets = Vec::with_capacity(b + 1);
    seq_offsets.push(0);
    for l in &toks.lengths {
        seq_offsets.push(seq_offsets.last().copied().unwrap_or(0) + l);
    }
    let layout = Layout {
        seq_offsets,
        turn_offsets,
        tok_turn,
        seq_group,
        n_groups,
    };
    layout
        .validate()
        .map_err(|message| RuntimeError::Layout { message })?;

    let max_turns = (0..b)
        .map(|s| layout.turn_offsets[s + 1] - layout.turn_offsets[s])
        .max()
        .unwrap_or(0);
    let mut values = BTreeMap::new();
    let mut shapes = BTreeMap::new();
    let mut turn_k = max_turns.max(1);
    for input in &module.inputs {
        let name = &input.name;
        let level = input.ty.level;
        let t = tensors
            .get(name)
            .ok_or_else(|| RuntimeError::MissingTensor {
                name: name.clone(),
                expected: format!(
                    "the `{}` input, shape {}",
                    input.ty,
                    expected_shape(level, &toks, b, n_groups, max_turns)
                ),
            })?;
        let v = decode_input(name, t, input.ty.dtype)?;
        let idx: Vec<usize> = match level {
            Level::Tok => {
                check_shape(name, t, &toks.file_shape, || toks.shape_text.clone())?;
                toks.src.clone()
            }
            Level::Turn => {
                if t.shape.len() == 2 && t.shape[0] == b && t.shape[1] >= max_turns {
                    let k = t.shape[1];
                    turn_k = k;
                    (0..b)
                        .flat_map(|s| {
                            let n = layout.turn_offsets[s + 1] - layout.turn_offsets[s];
                            (0..n).map(move |j| s * k + j)
                        })
                        .collect()
                } else if t.shape.len() == 1 && t.shape[0] == layout.n_turns() {
                    (0..layout.n_turns()).collect()
                } else {
                    return Err(RuntimeError::Shape {
                        name: name.clone(),
                        expected: format!(
                            "[B, K] = [{b}, K] with K ≥ {max_turns} (turns), or packed [{}]",
                            layout.n_turns()
                        ),
                        got: t.shape.clone(),
                    });
                }
            }
            Level::Seq => {
                check_shape(name, t, &[b], || format!("[B] = [{b}]"))?;
                (0..b).collect()
            }
            Level::Group => {
                check_shape(name, t, &[n_groups], || {
                    format!("[G] = [{n_groups}] (groups)")
                })?;
                (0..n_groups).collect()
            }
            Level::Batch => {
                if t.numel() != 1 || t.shape.len() > 1 {
                    return Err(RuntimeError::Shape {
                        name: name.clone(),
                        expected: "[] or [1] (a scalar)".into(),
                        got: t.shape.clone(),
                    });
                }
                vec![0]
            }
        };
        let mut packed = Vec::with_capacity(idx.len());
        for &i in &idx {
            let x = v.get(i).copied().unwrap_or(0.0);
            if !x.is_finite() {
                return Err(RuntimeError::NonFinite {
                    name: name.clone(),
                    index: index_text(i, &t.shape),
                    value: x,
                });
            }
            packed.push(x);
        }
        values.insert(name.clone(), packed);
        shapes.insert(name.clone(), t.shape.clone());
    }
    Ok(Bound {
        batch: Batch { layout, values },
        shapes: Shapes {
            tok: toks.tok_shape,
            turn_k,
            inputs: shapes,
        },
    })
}

/// Binds a safetensors file.
pub fn bind_file(
    path: &std::path::Path,
    module: &Module,
    opts: &BindOptions,
) -> Result<Bound, RuntimeError> {
    bind(&crate::tensor::read_file(path)?, module, opts)
}

/// `[b, t]` for a flat index into `shape`.
pub fn index_text(flat: usize, shape: &[usize]) -> String {
    let mut idx = vec![0; shape.len()];
    let mut r = flat;
    for (d, &n) in shape.iter().enumerate().rev() {
        if n > 0 {
            idx[d] = r % n;
            r /= n;
        }
    }
    let parts: Vec<String> = idx.iter().map(|i| i.to_string()).collect();
    format!("[{}]", parts.join(", "))
}

/// What the token layout tensors say.
struct Toks {
    /// Valid tokens per sequence.
    lengths: Vec<usize>,
    /// Flat index in a token tensor of each packed token.
    src: Vec<usize>,
    /// Shape every token-level tensor must have.
    file_shape: Vec<usize>,
    shape_text: String,
    tok_shape: TokShape,
}

fn expected_shape(level: Level, toks: &Toks, b: usize, g: usize, k: usize) -> String {
    match level {
        Level::Tok => toks.shape_text.clone(),
        Level::Turn => format!("[B, K] = [{b}, {k}]"),
        Level::Seq => format!("[B] = [{b}]"),
        Level::Group => format!("[G] = [{g}]"),
        Level::Batch => "[]".into(),
    }
}

fn check_shape(
    name: &str,
    t: &Tensor,
    want: &[usize],
    text: impl Fn() -> String,
) -> Result<(), RuntimeError> {
    if t.shape != want {
        return Err(RuntimeError::Shape {
            name: name.into(),
            expected: text(),
            got: t.shape.clone(),
        });
    }
    Ok(())
}

/// Decodes an input's values to f64, checking the dtype against the declared one.
fn decode_input(name: &str, t: &Tensor, dtype: DType) -> Result<Vec<f64>, RuntimeError> {
    let bad = |expected: &str| RuntimeError::DType {
        name: name.into(),
        expected: expected.into(),
        got: dtype_name(t.dtype),
    };
    match (dtype, t.values()) {
        (DType::F32, Some(Values::Float(v))) => Ok(v),
        (DType::F32, Some(Values::Int(v))) => Ok(v.into_iter().map(|x| x as f64).collect()),
        (DType::F32, _) => Err(bad("a float (f64, f32, bf16, f16) or integer dtype")),
        (DType::Bool, Some(Values::Bool(v))) => {
            Ok(v.into_iter().map(|x| f64::from(u8::from(x))).collect())
        }
        (DType::Bool, Some(Values::Int(v))) => {
            if let Some(i) = v.iter().position(|&x| x != 0 && x != 1) {
                return Err(RuntimeError::BadValue {
                    name: name.into(),
                    index: index_text(i, &t.shape),
                    message: format!("bool input holds {}, expected 0 or 1", v[i]),
                });
            }
            Ok(v.into_iter().map(|x| x as f64).collect())
        }
        (DType::Bool, _) => Err(bad("bool, u8 or another integer dtype holding 0/1")),
    }
}

/// Integer values of a layout tensor (ids, lengths, offsets).
fn ints(name: &str, t: &Tensor) -> Result<Vec<i128>, RuntimeError> {
    match t.values() {
        Some(Values::Int(v)) => Ok(v),
        _ => Err(RuntimeError::DType {
            name: name.into(),
            expected: "an integer dtype (i64, i32, u8, ...)".into(),
            got: dtype_name(t.dtype),
        }),
    }
}

fn rank1(name: &str, t: &Tensor, what: &str) -> Result<usize, RuntimeError> {
    match t.shape[..] {
        [n] => Ok(n),
        _ => Err(RuntimeError::Shape {
            name: name.into(),
            expected: what.into(),
            got: t.shape.clone(),
        }),
    }
}

fn nonempty(name: &str, b: usize) -> Result<usize, RuntimeError> {
    if b == 0 {
        return Err(RuntimeError::EmptyBatch { name: name.into() });
    }
    Ok(b)
}

/// Reads `mask` / `lengths` / `seq_offsets` (or finds B without token data).
fn token_layout(tensors: &Tensors, module: &Module) -> Result<Toks, RuntimeError> {
    let present: Vec<&str> = ["mask", "lengths", "seq_offsets"]
        .into_iter()
        .filter(|n| tensors.contains_key(*n))
        .collect();
    if present.len() > 1 {
        return Err(RuntimeError::Layout {
            message: format!(
                "tensors {} both describe the token layout; give exactly one of `mask`, `lengths`, `seq_offsets`",
                present.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(" and ")
            ),
        });
    }
    // The first token-level input present, to learn T in `lengths` mode.
    let first_tok = module
        .inputs
        .iter()
        .filter(|i| i.ty.level == Level::Tok)
        .find_map(|i| tensors.get(&i.name).map(|t| (i.name.as_str(), t)))
        .or_else(|| tensors.get("turn").map(|t| ("turn", t)));
    match present.first().copied() {
        Some("mask") => {
            let t = &tensors["mask"];
            let (b, tt) = match t.shape[..] {
                [b, tt] => (b, tt),
                _ => {
                    return Err(RuntimeError::Shape {
                        name: "mask".into(),
                        expected: "[B, T] (rank 2)".into(),
                        got: t.shape.clone(),
                    })
                }
            };
            nonempty("mask", b)?;
            let v: Vec<bool> = match t.values() {
                Some(Values::Bool(v)) => v,
                Some(Values::Int(v)) => {
                    if let Some(i) = v.iter().position(|&x| x != 0 && x != 1) {
                        return Err(mask_value("mask", i, &t.shape, v[i] as f64));
                    }
                    v.into_iter().map(|x| x == 1).collect()
                }
                Some(Values::Float(v)) => {
                    if let Some(i) = v.iter().position(|&x| x != 0.0 && x != 1.0) {
                        return Err(mask_value("mask", i, &t.shape, v[i]));
                    }
                    v.into_iter().map(|x| x == 1.0).collect()
                }
                None => {
                    return Err(RuntimeError::DType {
                        name: "mask".into(),
                        expected: "bool, an integer or a float dtype holding 0/1".into(),
                        got: dtype_name(t.dtype),
                    })
                }
            };
            let src: Vec<usize> = (0..b * tt).filter(|&i| v[i]).collect();
            let lengths = (0..b)
                .map(|s| v[s * tt..(s + 1) * tt].iter().filter(|&&x| x).count())
                .collect();
            Ok(padded(lengths, src, b, tt, "`mask`"))
        }
        Some("lengths") => {
            let t = &tensors["lengths"];
            let b = rank1("lengths", t, "[B] (one length per sequence)")?;
            nonempty("lengths", b)?;
            let v = ints("lengths", t)?;
            let tt = match first_tok {
                Some((name, ft)) => match ft.shape[..] {
                    [fb, tt] if fb == b => tt,
                    _ => {
                        return Err(RuntimeError::Shape {
                            name: name.into(),
                            expected: format!("[B, T] = [{b}, T] (padded; B from `lengths`)"),
                            got: ft.shape.clone(),
                        })
                    }
                },
                None => {
                    too_many_tokens("lengths", v.iter().map(|&l| l.max(0)).sum())?;
                    v.iter().copied().max().unwrap_or(0).max(0) as usize
                }
            };
            let mut lengths = Vec::with_capacity(b);
            let mut src = Vec::new();
            for (s, &l) in v.iter().enumerate() {
                if l < 0 || l > tt as i128 {
                    return Err(RuntimeError::BadValue {
                        name: "lengths".into(),
                        index: format!("[{s}]"),
                        message: format!("length {l} is outside 0..=T (T = {tt})"),
                    });
                }
                lengths.push(l as usize);
                src.extend(s * tt..s * tt + l as usize);
            }
            Ok(padded(lengths, src, b, tt, "`lengths`"))
        }
        Some(_) => {
            let t = &tensors["seq_offsets"];
            let n1 = rank1(
                "seq_offsets",
                t,
                "[B + 1] (sequence offsets into packed tokens)",
            )?;
            nonempty("seq_offsets", n1.saturating_sub(1))?;
            let v = ints("seq_offsets", t)?;
            if v[0] != 0 {
                return Err(RuntimeError::BadValue {
                    name: "seq_offsets".into(),
                    index: "[0]".into(),
                    message: format!("offsets must start at 0, got {}", v[0]),
                });
            }
            if let Some(i) = (1..v.len()).find(|&i| v[i] < v[i - 1]) {
                return Err(RuntimeError::BadValue {
                    name: "seq_offsets".into(),
                    index: format!("[{i}]"),
                    message: format!(
                        "offsets must be non-decreasing, got {} after {}",
                        v[i],
                        v[i - 1]
                    ),
                });
            }
            if first_tok.is_none() {
                too_many_tokens("seq_offsets", v[n1 - 1])?;
            }
            let n = v[n1 - 1] as usize;
            let lengths = v.windows(2).map(|w| (w[1] - w[0]) as usize).collect();
            if let Some((name, ft)) = first_tok {
                if ft.shape != [n] {
                    return Err(RuntimeError::Shape {
                        name: name.into(),
                        expected: format!("[N] = [{n}] (packed; N = last of `seq_offsets`)"),
                        got: ft.shape.clone(),
                    });
                }
            }
            Ok(Toks {
                lengths,
                src: (0..n).collect(),
                file_shape: vec![n],
                shape_text: format!("[N] = [{n}] (packed tokens, N from `seq_offsets`)"),
                tok_shape: TokShape::Packed { n },
            })
        }
        None => {
            if let Some(i) = module
                .inputs
                .iter()
                .find(|i| i.ty.level <= Level::Turn)
                .map(|i| i.name.as_str())
                .or(tensors.contains_key("turn").then_some("turn"))
            {
                return Err(RuntimeError::MissingTensor {
                    name: "mask".into(),
                    expected: format!(
                        "a token layout for `{i}`: `mask` [B, T], `lengths` [B] or `seq_offsets` [B + 1]"
                    ),
                });
            }
            let seq_in = module
                .inputs
                .iter()
                .find(|i| i.ty.level == Level::Seq && tensors.contains_key(&i.name));
            let (name, t) = match (tensors.get("group"), seq_in) {
                (Some(t), _) => ("group", t),
                (None, Some(i)) => (i.name.as_str(), &tensors[&i.name]),
                (None, None) => {
                    return Err(RuntimeError::MissingTensor {
                        name: "lengths".into(),
                        expected: "a way to know the number of sequences B: `lengths`, `mask`, `seq_offsets`, `group` or a seq-level input".into(),
                    })
                }
            };
            let b = rank1(name, t, "[B]")?;
            nonempty(name, b)?;
            Ok(Toks {
                lengths: vec![0; b],
                src: Vec::new(),
                file_shape: vec![0],
                shape_text: "[0] (no token layout given)".into(),
                tok_shape: TokShape::Packed { n: 0 },
            })
        }
    }
}

/// Without any token tensor, nothing bounds the token count of `lengths`/`seq_offsets`: refuse
/// absurd counts instead of allocating them.
fn too_many_tokens(name: &str, n: i128) -> Result<(), RuntimeError> {
    const LIMIT: i128 = 1 << 28;
    if n > LIMIT {
        return Err(RuntimeError::BadValue {
            name: name.into(),
            index: "[..]".into(),
            message: format!(
                "{n} tokens in all, more than the {LIMIT} allowed without token tensors"
            ),
        });
    }
    Ok(())
}

fn mask_value(name: &str, i: usize, shape: &[usize], x: f64) -> RuntimeError {
    RuntimeError::BadValue {
        name: name.into(),
        index: index_text(i, shape),
        message: format!("mask value {x}, expected 0 or 1"),
    }
}

fn padded(lengths: Vec<usize>, src: Vec<usize>, b: usize, tt: usize, from: &str) -> Toks {
    Toks {
        lengths,
        src,
        file_shape: vec![b, tt],
        shape_text: format!("[B, T] = [{b}, {tt}] (padded; from {from})"),
        tok_shape: TokShape::Padded { t: tt, src: vec![] },
    }
    .with_src()
}

impl Toks {
    fn with_src(mut self) -> Toks {
        if let TokShape::Padded { src, .. } = &mut self.tok_shape {
            src.clone_from(&self.src);
        }
        self
    }
}

/// `turn_offsets` and `tok_turn` from the optional `turn` tensor.
fn turns(tensors: &Tensors, toks: &Toks) -> Result<(Vec<usize>, Vec<u32>), RuntimeError> {
    let b = toks.lengths.len();
    let Some(t) = tensors.get("turn") else {
        let mut tok_turn = Vec::with_capacity(toks.src.len());
        for (s, &l) in toks.lengths.iter().enumerate() {
            tok_turn.extend(std::iter::repeat_n(s as u32, l));
        }
        return Ok(((0..=b).collect(), tok_turn));
    };
    if t.shape != toks.file_shape {
        return Err(RuntimeError::Shape {
            name: "turn".into(),
            expected: format!("the token shape {}", toks.shape_text),
            got: t.shape.clone(),
        });
    }
    let v = ints("turn", t)?;
    let limit = toks.file_shape.last().copied().unwrap_or(0).max(1) as i128;
    let mut turn_offsets = Vec::with_capacity(b + 1);
    turn_offsets.push(0usize);
    let mut tok_turn = Vec::with_capacity(toks.src.len());
    let mut i = 0;
    for &l in &toks.lengths {
        let base = turn_offsets.last().copied().unwrap_or(0);
        let mut prev: i128 = 0;
        for &flat in &toks.src[i..i + l] {
            let id = v[flat];
            if id < 0 || id >= limit {
                return Err(RuntimeError::BadValue {
                    name: "turn".into(),
                    index: index_text(flat, &t.shape),
                    message: format!("turn id {id} is outside 0..{limit}"),
                });
            }
            if id < prev {
                return Err(RuntimeError::BadValue {
                    name: "turn".into(),
                    index: index_text(flat, &t.shape),
                    message: format!(
                        "turn ids must be non-decreasing along a sequence; got {id} after {prev}"
                    ),
                });
            }
            prev = id;
            tok_turn.push((base + id as usize) as u32);
        }
        let k = if l == 0 { 0 } else { prev as usize + 1 };
        turn_offsets.push(base + k);
        i += l;
    }
    Ok((turn_offsets, tok_turn))
}

/// Does the module compute anything per group (so that groups must be given)?
pub fn uses_groups(m: &Module) -> bool {
    m.types.iter().any(|t| t.level == Level::Group)
        || m.exprs.iter().any(|(_, e)| {
            matches!(
                e,
                Expr::Rank {
                    within: Level::Group,
                    ..
                } | Expr::PosReduce { .. }
            )
        })
}

/// `seq_group` and `n_groups` from `group`, the group-size option, or one group per sequence.
fn groups(
    tensors: &Tensors,
    module: &Module,
    opts: &BindOptions,
    b: usize,
) -> Result<(Vec<u32>, usize), RuntimeError> {
    match (tensors.get("group"), opts.group_size) {
        (Some(_), Some(_)) => Err(RuntimeError::Layout {
            message: "both a `group` tensor and a group size were given; use one".into(),
        }),
        (Some(t), None) => {
            if t.shape != [b] {
                return Err(RuntimeError::Shape {
                    name: "group".into(),
                    expected: format!("[B] = [{b}] (one group id per sequence)"),
                    got: t.shape.clone(),
                });
            }
            let v = ints("group", t)?;
            let mut ids = v.clone();
            ids.sort_unstable();
            ids.dedup();
            let seq_group = v
                .iter()
                .map(|x| ids.binary_search(x).unwrap_or(0) as u32)
                .collect();
            Ok((seq_group, ids.len()))
        }
        (None, Some(size)) => {
            if size == 0 {
                return Err(RuntimeError::GroupSize {
                    size,
                    message: "must be at least 1".into(),
                });
            }
            if !b.is_multiple_of(size) {
                return Err(RuntimeError::GroupSize {
                    size,
                    message: format!("the batch has B = {b} sequences, not a multiple of {size}"),
                });
            }
            Ok(((0..b).map(|s| (s / size) as u32).collect(), b / size))
        }
        (None, None) => {
            if uses_groups(module) {
                return Err(RuntimeError::MissingTensor {
                    name: "group".into(),
                    expected: format!(
                        "group ids [B] = [{b}] (or --group-size): objective `{}` computes per-group values",
                        module.name
                    ),
                });
            }
            Ok(((0..b as u32).collect(), b))
        }
    }
}

/// Is `d` a dtype [`bind`] can read at all? (Used for error messages and tests.)
pub fn readable(d: Dtype) -> bool {
    is_float(d) || is_int(d) || d == Dtype::BOOL
}
