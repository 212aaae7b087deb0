//! The reference interpreter (f64): the semantic oracle of every backend (llm.c's CPU reference).
//!
//! It executes a [`Schedule`] stage by stage, node by node over whole packed arrays (one `Vec`
//! per node, no per-element allocation), and checks on the way that the schedule only reads
//! values that are available: a node may read a node of an earlier stage, or of its own stage
//! unless that stage is a token pass and the operand is a `Reduce` (reductions accumulated by a
//! pass are only known after it). So every test that runs the interpreter also tests the
//! scheduler.
//!
//! Semantics (written once, here and in `interp/ops.rs`): sums accumulate in packed order; empty
//! reductions give 0; `Max`/`Min` propagate NaN; `Rank` and `Quantile` sort with
//! [`ops::order`] and break ties by packed index; `Quantile` interpolates linearly between order
//! statistics, `v[lo] + (v[hi] − v[lo])·frac` with `pos = clamp(q, 0, 1)·(n − 1)`.

pub mod layout;
pub mod ops;

use std::collections::BTreeMap;

use crate::arena::Handle;
use crate::data::{Batch, Evaluation};
use crate::ir::{Expr, IndexKind, Module, ReduceOp, ScanOp};
use crate::schedule::{Schedule, StageKind};
use crate::types::Level;
use layout::Maps;

/// Why a batch could not be evaluated.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InterpError {
    #[error("missing input `{name}` (expected {level} values)")]
    MissingInput { name: String, level: Level },
    #[error("input `{name}` has {found} values; its level `{level}` has {expected} elements in this batch")]
    WrongLength {
        name: String,
        level: Level,
        expected: usize,
        found: usize,
    },
    #[error("expected {expected} parameter values, got {found}")]
    WrongParamCount { expected: usize, found: usize },
    #[error("invalid batch layout: {0}")]
    BadLayout(String),
    #[error("override for {node} has {found} values, expected {expected}")]
    BadOverride {
        node: Handle<Expr>,
        expected: usize,
        found: usize,
    },
    #[error("schedule error at {node}: {message}")]
    BadSchedule { node: Handle<Expr>, message: String },
    #[error("malformed IR at {node}: {message}")]
    Malformed { node: Handle<Expr>, message: String },
}

/// Precomputed values of some nodes, used instead of computing them (micro-batching: the
/// normalizers of a whole optimizer step, see `crate::split`). Each value is packed at its node's
/// level *in the layout of the batch being evaluated*.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Overrides {
    pub values: BTreeMap<Handle<Expr>, Vec<f64>>,
}

/// Loss, gradients, metrics and outputs of `b` under `params` (bound by index).
pub fn evaluate(
    m: &Module,
    s: &Schedule,
    b: &Batch,
    params: &[f64],
) -> Result<Evaluation, InterpError> {
    evaluate_with(m, s, b, params, &Overrides::default())
}

/// [`evaluate`], with the nodes in `ov` taking the given values instead of being computed.
pub fn evaluate_with(
    m: &Module,
    s: &Schedule,
    b: &Batch,
    params: &[f64],
    ov: &Overrides,
) -> Result<Evaluation, InterpError> {
    let mut mach = Machine::new(m, b, params, ov)?;
    for inp in &m.inputs {
        mach.input_values(inp)?;
    }
    let stage_of = s.stage_of(m);
    for (si, stage) in s.stages.iter().enumerate() {
        for &h in &stage.nodes {
            check_ready(m, &stage_of, si, stage.kind, h, ov)?;
            mach.compute(h)?;
        }
    }
    let loss = mach.get(m.loss)?.first().copied().unwrap_or(0.0);
    let grads = m
        .grads
        .iter()
        .map(|g| mach.get(g.value).map(<[f64]>::to_vec))
        .collect::<Result<_, _>>()?;
    let metrics = m
        .metrics
        .iter()
        .map(|n| mach.get(n.value).map(|v| v.first().copied().unwrap_or(0.0)))
        .collect::<Result<_, _>>()?;
    let outputs = m
        .outputs
        .iter()
        .map(|n| mach.get(n.value).map(<[f64]>::to_vec))
        .collect::<Result<_, _>>()?;
    Ok(Evaluation {
        loss,
        grads,
        metrics,
        outputs,
    })
}

/// Evaluates exactly `nodes` and what they depend on, in arena order, ignoring any schedule.
/// Only the inputs those nodes read must be bound (a micro-batching pre-pass runs without the
/// `diff` inputs). Returns one packed array per requested node.
pub fn evaluate_nodes(
    m: &Module,
    b: &Batch,
    params: &[f64],
    nodes: &[Handle<Expr>],
    ov: &Overrides,
) -> Result<Vec<Vec<f64>>, InterpError> {
    let mut mach = Machine::new(m, b, params, ov)?;
    let mut need = vec![false; m.exprs.len()];
    for h in nodes {
        if let Some(x) = need.get_mut(h.index()) {
            *x = true;
        }
    }
    for h in m.exprs.handles().rev() {
        if need.get(h.index()).copied().unwrap_or(false) && !ov.values.contains_key(&h) {
            for o in m.exprs.get(h).map(Expr::operands).unwrap_or_default() {
                if let Some(x) = need.get_mut(o.index()) {
                    *x = true;
                }
            }
        }
    }
    for h in m.exprs.handles() {
        if need.get(h.index()).copied().unwrap_or(false) {
            mach.compute(h)?;
        }
    }
    nodes
        .iter()
        .map(|&h| mach.get(h).map(<[f64]>::to_vec))
        .collect()
}

fn check_ready(
    m: &Module,
    stage_of: &[Option<usize>],
    si: usize,
    kind: StageKind,
    h: Handle<Expr>,
    ov: &Overrides,
) -> Result<(), InterpError> {
    let bad = |message: String| InterpError::BadSchedule { node: h, message };
    let e = m
        .exprs
        .get(h)
        .ok_or_else(|| bad("not in the arena".into()))?;
    if ov.values.contains_key(&h) {
        return Ok(());
    }
    if kind == StageKind::TokenPass {
        let ok = if let Expr::Reduce { arg, .. } = *e {
            m.level(arg) == Level::Tok
        } else {
            !matches!(
                e,
                Expr::Rank { .. } | Expr::PosReduce { .. } | Expr::Quantile { .. }
            ) && m.level(h) == Level::Tok
        };
        if !ok {
            return Err(bad(format!(
                "a token pass cannot compute this {} node",
                m.level(h)
            )));
        }
    }
    for o in e.operands() {
        let so = stage_of.get(o.index()).copied().flatten();
        let Some(so) = so else {
            if ov.values.contains_key(&o) {
                continue;
            }
            return Err(bad(format!("operand {o} is not scheduled")));
        };
        let reduce_in_pass =
            kind == StageKind::TokenPass && matches!(m.exprs.get(o), Some(Expr::Reduce { .. }));
        if so > si || (so == si && reduce_in_pass) {
            return Err(bad(format!(
                "reads {o} (stage {so}) before it is available (stage {si})"
            )));
        }
    }
    Ok(())
}

/// The state of one evaluation: the batch, its index maps and one array per computed node.
struct Machine<'a> {
    m: &'a Module,
    b: &'a Batch,
    params: &'a [f64],
    ov: &'a Overrides,
    maps: Maps,
    vals: Vec<Option<Vec<f64>>>,
}

impl<'a> Machine<'a> {
    fn new(
        m: &'a Module,
        b: &'a Batch,
        params: &'a [f64],
        ov: &'a Overrides,
    ) -> Result<Machine<'a>, InterpError> {
        b.layout.validate().map_err(InterpError::BadLayout)?;
        if params.len() != m.params.len() {
            return Err(InterpError::WrongParamCount {
                expected: m.params.len(),
                found: params.len(),
            });
        }
        let maps = Maps::new(&b.layout);
        for (&h, v) in &ov.values {
            let expected = maps.count(m.level(h));
            if v.len() != expected {
                return Err(InterpError::BadOverride {
                    node: h,
                    expected,
                    found: v.len(),
                });
            }
        }
        Ok(Machine {
            m,
            b,
            params,
            ov,
            maps,
            vals: vec![None; m.exprs.len()],
        })
    }

    fn get(&self, h: Handle<Expr>) -> Result<&[f64], InterpError> {
        if let Some(v) = self.ov.values.get(&h) {
            return Ok(v);
        }
        self.vals
            .get(h.index())
            .and_then(Option::as_deref)
            .ok_or_else(|| InterpError::BadSchedule {
                node: h,
                message: "value needed but never computed".into(),
            })
    }

    fn input_values(&self, inp: &crate::ir::Input) -> Result<&'a [f64], InterpError> {
        let v = self
            .b
            .values
            .get(&inp.name)
            .ok_or_else(|| InterpError::MissingInput {
                name: inp.name.clone(),
                level: inp.ty.level,
            })?;
        let expected = self.maps.count(inp.ty.level);
        if v.len() != expected {
            return Err(InterpError::WrongLength {
                name: inp.name.clone(),
                level: inp.ty.level,
                expected,
                found: v.len(),
            });
        }
        Ok(v)
    }

    fn compute(&mut self, h: Handle<Expr>) -> Result<(), InterpError> {
        if self.ov.values.contains_key(&h) {
            return Ok(());
        }
        let v = self.eval(h)?;
        let expected = self.maps.count(self.m.level(h));
        if v.len() != expected {
            return Err(InterpError::Malformed {
                node: h,
                message: format!("produced {} values, expected {expected}", v.len()),
            });
        }
        if let Some(slot) = self.vals.get_mut(h.index()) {
            *slot = Some(v);
        }
        Ok(())
    }

    fn eval(&self, h: Handle<Expr>) -> Result<Vec<f64>, InterpError> {
        let m = self.m;
        let level = m.level(h);
        let n = self.maps.count(level);
        let malformed = |message: &str| InterpError::Malformed {
            node: h,
            message: message.into(),
        };
        let e = m
            .exprs
            .get(h)
            .ok_or_else(|| malformed("not in the arena"))?;
        Ok(match *e {
            Expr::Const(c) => vec![c; n],
            Expr::Bool(x) => vec![if x { 1.0 } else { 0.0 }; n],
            Expr::Param(i) => {
                let p = self
                    .params
                    .get(i as usize)
                    .ok_or_else(|| malformed("no such param"))?;
                vec![*p; n]
            }
            Expr::Input(i) => {
                let inp = m
                    .inputs
                    .get(i as usize)
                    .ok_or_else(|| malformed("no such input"))?;
                self.input_values(inp)?.to_vec()
            }
            Expr::Index(kind) => self.index(kind),
            Expr::Unary { op, arg } => self.get(arg)?.iter().map(|&x| ops::unary(op, x)).collect(),
            Expr::Binary { op, lhs, rhs } => {
                let (a, b) = (self.get(lhs)?, self.get(rhs)?);
                a.iter()
                    .zip(b)
                    .map(|(&x, &y)| ops::binary(op, x, y))
                    .collect()
            }
            Expr::Select {
                cond,
                on_true,
                on_false,
            } => {
                let (c, t, f) = (self.get(cond)?, self.get(on_true)?, self.get(on_false)?);
                c.iter()
                    .zip(t.iter().zip(f))
                    .map(|(&c, (&t, &f))| if c != 0.0 { t } else { f })
                    .collect()
            }
            Expr::Broadcast { arg, to } => {
                let a = self.get(arg)?;
                let up = self.maps.up(to, m.level(arg));
                up.iter()
                    .map(|&i| a.get(i).copied().unwrap_or(0.0))
                    .collect()
            }
            Expr::Reduce {
                op,
                arg,
                to,
                filter,
            } => self.reduce(op, arg, to, filter, n)?,
            Expr::Scan { op, arg, discount } => self.scan(op, arg, discount, h)?,
            Expr::Rank { arg, within } => {
                let from = m.level(arg);
                let a = self.get(arg)?;
                let mut out = vec![0.0; a.len()];
                for bucket in self.buckets(from, within, None)? {
                    let mut idx = bucket;
                    sort_by_value(&mut idx, a);
                    for (r, &i) in idx.iter().enumerate() {
                        if let Some(o) = out.get_mut(i) {
                            *o = r as f64;
                        }
                    }
                }
                out
            }
            Expr::Quantile { arg, q, to, filter } => {
                let from = m.level(arg);
                let a = self.get(arg)?;
                let qv = self.get(q)?.first().copied().unwrap_or(0.0);
                let mut out = vec![0.0; n];
                for (j, bucket) in self.buckets(from, to, filter)?.into_iter().enumerate() {
                    let mut idx = bucket;
                    sort_by_value(&mut idx, a);
                    let v: Vec<f64> = idx.iter().filter_map(|&i| a.get(i).copied()).collect();
                    if let Some(o) = out.get_mut(j) {
                        *o = quantile_sorted(&v, qv);
                    }
                }
                out
            }
            Expr::PosReduce { op, arg } => self.pos_reduce(op, arg)?,
            Expr::Detach { arg } => self.get(arg)?.to_vec(),
        })
    }

    fn index(&self, kind: IndexKind) -> Vec<f64> {
        let l = &self.b.layout;
        let (offs, per_seq) = match kind {
            IndexKind::Pos => (&l.seq_offsets, self.maps.up(Level::Tok, Level::Seq)),
            IndexKind::TurnIndex => (&l.turn_offsets, self.maps.up(Level::Turn, Level::Seq)),
        };
        per_seq
            .iter()
            .enumerate()
            .map(|(i, &s)| (i - offs.get(s).copied().unwrap_or(0)) as f64)
            .collect()
    }

    /// The packed indices of `from`-level elements inside each element of `to`, in packed order,
    /// keeping only those where `filter` holds.
    fn buckets(
        &self,
        from: Level,
        to: Level,
        filter: Option<Handle<Expr>>,
    ) -> Result<Vec<Vec<usize>>, InterpError> {
        let f = filter.map(|h| self.get(h)).transpose()?;
        let mut out = vec![Vec::new(); self.maps.count(to)];
        for (i, &p) in self.maps.up(from, to).iter().enumerate() {
            let keep = f.is_none_or(|f| f.get(i).is_some_and(|&c| c != 0.0));
            if keep {
                if let Some(b) = out.get_mut(p) {
                    b.push(i);
                }
            }
        }
        Ok(out)
    }

    fn reduce(
        &self,
        op: ReduceOp,
        arg: Handle<Expr>,
        to: Level,
        filter: Option<Handle<Expr>>,
        n: usize,
    ) -> Result<Vec<f64>, InterpError> {
        let a = self.get(arg)?;
        let f = filter.map(|h| self.get(h)).transpose()?;
        let up = self.maps.up(self.m.level(arg), to);
        let mut acc = vec![0.0; n];
        let mut seen = vec![false; n];
        for (i, (&x, &p)) in a.iter().zip(up).enumerate() {
            if f.is_some_and(|f| f.get(i).is_none_or(|&c| c == 0.0)) {
                continue;
            }
            let (Some(s), Some(seen)) = (acc.get_mut(p), seen.get_mut(p)) else {
                continue;
            };
            *s = match op {
                ReduceOp::Sum => *s + x,
                ReduceOp::Max if *seen => ops::max(*s, x),
                ReduceOp::Min if *seen => ops::min(*s, x),
                ReduceOp::Max | ReduceOp::Min => x,
            };
            *seen = true;
        }
        Ok(acc)
    }

    fn scan(
        &self,
        op: ScanOp,
        arg: Handle<Expr>,
        discount: Option<Handle<Expr>>,
        h: Handle<Expr>,
    ) -> Result<Vec<f64>, InterpError> {
        let a = self.get(arg)?;
        let d = discount.map(|d| self.get(d)).transpose()?;
        let offs = match self.m.level(arg) {
            Level::Tok => &self.b.layout.seq_offsets,
            Level::Turn => &self.b.layout.turn_offsets,
            Level::Seq | Level::Group | Level::Batch => {
                return Err(InterpError::Malformed {
                    node: h,
                    message: "scan of a value above `turn`".into(),
                })
            }
        };
        let disc = |t: usize| d.and_then(|d| d.get(t)).copied().unwrap_or(1.0);
        let mut out = a.to_vec();
        for w in offs.windows(2) {
            let [s, e] = *w else { continue };
            let Some(seg) = out.get_mut(s..e) else {
                continue;
            };
            match op {
                ScanOp::CumSum => {
                    for t in 1..seg.len() {
                        let prev = seg.get(t - 1).copied().unwrap_or(0.0);
                        if let Some(x) = seg.get_mut(t) {
                            *x += prev;
                        }
                    }
                }
                ScanOp::DiscountedCumSum => {
                    for t in 1..seg.len() {
                        let prev = seg.get(t - 1).copied().unwrap_or(0.0) * disc(s + t - 1);
                        if let Some(x) = seg.get_mut(t) {
                            *x += prev;
                        }
                    }
                }
                ScanOp::RevCumSum => {
                    for t in (0..seg.len().saturating_sub(1)).rev() {
                        let next = seg.get(t + 1).copied().unwrap_or(0.0);
                        if let Some(x) = seg.get_mut(t) {
                            *x += next;
                        }
                    }
                }
                ScanOp::DiscountedRevCumSum => {
                    for t in (0..seg.len().saturating_sub(1)).rev() {
                        let next = seg.get(t + 1).copied().unwrap_or(0.0) * disc(s + t);
                        if let Some(x) = seg.get_mut(t) {
                            *x += next;
                        }
                    }
                }
                ScanOp::Next => {
                    seg.rotate_left(seg.len().min(1));
                    if let Some(last) = seg.last_mut() {
                        *last = 0.0;
                    }
                }
                ScanOp::Prev => {
                    seg.rotate_right(seg.len().min(1));
                    if let Some(first) = seg.first_mut() {
                        *first = 0.0;
                    }
                }
            }
        }
        Ok(out)
    }

    /// At token `t` of sequence `s`: reduce `arg` over the sequences of `s`'s group alive at `t`.
    fn pos_reduce(&self, op: ReduceOp, arg: Handle<Expr>) -> Result<Vec<f64>, InterpError> {
        let a = self.get(arg)?;
        let l = &self.b.layout;
        let mut out = vec![0.0; a.len()];
        let mut members: Vec<Vec<usize>> = vec![Vec::new(); l.n_groups];
        for (s, &g) in l.seq_group.iter().enumerate() {
            if let Some(v) = members.get_mut(g as usize) {
                v.push(s);
            }
        }
        let start = |s: usize| l.seq_offsets.get(s).copied().unwrap_or(0);
        let len = |s: usize| l.seq_offsets.get(s + 1).copied().unwrap_or(0) - start(s);
        for seqs in &members {
            let max_len = seqs.iter().map(|&s| len(s)).max().unwrap_or(0);
            for t in 0..max_len {
                let alive = seqs.iter().filter(|&&s| len(s) > t);
                let mut acc: Option<f64> = None;
                for &s in alive.clone() {
                    let x = a.get(start(s) + t).copied().unwrap_or(0.0);
                    acc = Some(match (op, acc) {
                        (_, None) => x,
                        (ReduceOp::Sum, Some(y)) => y + x,
                        (ReduceOp::Max, Some(y)) => ops::max(y, x),
                        (ReduceOp::Min, Some(y)) => ops::min(y, x),
                    });
                }
                for &s in alive {
                    if let Some(o) = out.get_mut(start(s) + t) {
                        *o = acc.unwrap_or(0.0);
                    }
                }
            }
        }
        Ok(out)
    }
}

/// Sorts packed indices by value ([`ops::order`]), ties by index (a stable sort of indices
/// already in packed order).
fn sort_by_value(idx: &mut [usize], a: &[f64]) {
    let v = |i: usize| a.get(i).copied().unwrap_or(0.0);
    idx.sort_by(|&i, &j| ops::order(v(i), v(j)));
}

/// Linear interpolation between order statistics of sorted `v`; empty → 0.
pub fn quantile_sorted(v: &[f64], q: f64) -> f64 {
    let n = v.len();
    if n == 0 {
        return 0.0;
    }
    if q.is_nan() {
        return f64::NAN;
    }
    let pos = q.clamp(0.0, 1.0) * (n - 1) as f64;
    let lo = (pos.floor() as usize).min(n - 1);
    let hi = (lo + 1).min(n - 1);
    let frac = pos - lo as f64;
    let (a, b) = (
        v.get(lo).copied().unwrap_or(0.0),
        v.get(hi).copied().unwrap_or(0.0),
    );
    if frac == 0.0 {
        a
    } else {
        a + (b - a) * frac
    }
}

#[cfg(test)]
mod tests;
