//! The split analysis behind exact micro-batching: which values of an objective must be computed
//! over the whole optimizer step first, and whether the rest adds up over parts of the batch.
//!
//! # The analysis (on the compiled module, gradients included)
//! For every node `h`:
//! - **dyn**: depends on the value of a `diff` input (the policy's output), through any operand
//!   (`detach` included: its value still changes with the policy).
//! - **cross**: its value at an element depends on sequences other than the element's own:
//!   reductions, quantiles, ranks to/within `group` or `batch`, per-position group reductions,
//!   and everything computed from such a value.
//!
//! Nodes that are cross but not dyn (token counts, group means of rewards, batch quantiles of
//! rewards, ranks of rewards, ...) are **normalizers**: a pre-pass over the whole step computes
//! them from the non-diff inputs only, and every part receives their whole-batch values as extra
//! inputs (`__frozen.<node>`). With those fixed, each remaining node of a part is classified:
//! - `L` (local): its value at each element of the part equals its whole-batch value;
//! - `A` (additive): a `group`/`batch` value whose whole-batch value is the sum of the parts'
//!   values: `sum` of local values to group/batch, `A ± A`, `A · L`, `A / L`, `-A`, `detach(A)`,
//!   `if L then A else A` (a constant 0 counts as both);
//! - anything else (a dyn value reduced with max/min/quantile/rank across sequences, a partial sum
//!   broadcast back down or put through a non-linear function, a `group`-level local value summed
//!   to the batch — a group cut across parts would be counted twice) breaks exactness.
//!
//! The objective is **splittable** when the loss is `A` and every gradient is `L` (tok/turn/seq
//! inputs: placed) or `A` (group/batch inputs: summed). Then the summed part losses and the
//! placed/summed part gradients equal the whole-batch ones exactly (up to float summation order).
//! Metrics and outputs that are `A` are summed, `L` ones placed; the others (e.g. a `batch_max` of
//! the ratio) are computed by one forward evaluation on the whole batch.

use rlo_compiler::arena::Handle;
use rlo_compiler::ir::{Expr, Input, Module, Named, ReduceOp};
use rlo_compiler::types::Level;
use rlo_compiler::Compiled;
use rlo_grammar::{Diagnostic, Span};

/// How part results of a root combine into the whole-batch result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Merge {
    /// Each element comes from the one part holding it (same value in every part that has it).
    Place,
    /// Parts' values are added.
    Sum,
    /// Not exact over parts: evaluate on the whole batch.
    Whole,
}

/// The class of a node once normalizers are fixed.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Class {
    Local,
    Additive,
    Bad(Handle<Expr>),
}

/// Why an objective cannot be split: the node at fault and what it does.
#[derive(Clone, Debug)]
pub struct NotSplittable {
    pub root: String,
    pub span: Span,
    pub message: String,
}

impl NotSplittable {
    /// A diagnostic pointing at the source of the node at fault.
    pub fn to_diagnostic(&self, objective: &str) -> Diagnostic {
        Diagnostic::error(
            "E0901",
            format!("objective `{objective}` cannot be split into micro-batches exactly"),
        )
        .with_primary(self.span, self.message.clone())
        .with_note(format!(
            "the {} would differ between the whole batch and the sum over micro-batches",
            self.root
        ))
        .with_help(
            "reductions across sequences of values that depend on a `diff` input must be sums \
             (normalized by counts or other values of non-diff inputs)",
        )
    }
}

/// The result of the analysis.
#[derive(Clone, Debug)]
pub struct Analysis {
    /// Normalizers computed by the pre-pass (arena order).
    pub frozen: Vec<Handle<Expr>>,
    pub loss: Merge,
    pub grads: Vec<Merge>,
    pub metrics: Vec<Merge>,
    pub outputs: Vec<Merge>,
}

fn operands_any(e: &Expr, v: &[bool]) -> bool {
    e.operands()
        .iter()
        .any(|o| v.get(o.index()).copied().unwrap_or(false))
}

/// dyn and cross, per node.
fn dyn_cross(m: &Module) -> (Vec<bool>, Vec<bool>) {
    let n = m.exprs.len();
    let (mut dy, mut cr) = (vec![false; n], vec![false; n]);
    for (h, e) in m.exprs.iter() {
        let i = h.index();
        dy[i] = match e {
            Expr::Input(k) => m.inputs.get(*k as usize).is_some_and(|x| x.diff),
            _ => operands_any(e, &dy),
        };
        let own = match e {
            Expr::Reduce { to, .. } | Expr::Quantile { to, .. } => *to >= Level::Group,
            Expr::Rank { within, .. } => *within >= Level::Group,
            Expr::PosReduce { .. } => true,
            _ => false,
        };
        cr[i] = own || operands_any(e, &cr);
    }
    (dy, cr)
}

fn is_zero(m: &Module, h: Handle<Expr>) -> bool {
    matches!(m.exprs.get(h), Some(Expr::Const(c)) if *c == 0.0)
}

/// Classifies every node, given the frozen set.
fn classify(m: &Module, cross: &[bool], frozen: &[bool]) -> Vec<Class> {
    use rlo_compiler::ir::{BinaryOp as B, UnaryOp as U};
    use Class::{Additive as A, Bad, Local as L};
    let mut c: Vec<Class> = Vec::with_capacity(m.exprs.len());
    for (h, e) in m.exprs.iter() {
        let i = h.index();
        if frozen[i] || !cross[i] {
            c.push(L);
            continue;
        }
        let k = |x: Handle<Expr>| c.get(x.index()).copied().unwrap_or(Bad(x));
        // A value that is zero is both local and additive.
        let add_like = |x: Handle<Expr>| k(x) == A || is_zero(m, x);
        let first_bad = e.operands().into_iter().find_map(|o| match k(o) {
            Bad(b) => Some(b),
            _ => None,
        });
        if let Some(b) = first_bad {
            c.push(Bad(b));
            continue;
        }
        let class = match *e {
            Expr::Reduce {
                op: ReduceOp::Sum,
                arg,
                to,
                filter,
            } if to >= Level::Group && filter.is_none_or(|f| k(f) == L) => {
                let lvl = m.level(arg);
                match k(arg) {
                    L if lvl <= Level::Seq => A,
                    A => A,
                    _ => Bad(h),
                }
            }
            Expr::Binary {
                op: B::Add | B::Sub,
                lhs,
                rhs,
            } if add_like(lhs) && add_like(rhs) => A,
            Expr::Binary {
                op: B::Mul,
                lhs,
                rhs,
            } if (k(lhs) == A && k(rhs) == L) || (k(lhs) == L && k(rhs) == A) => A,
            Expr::Binary {
                op: B::Div,
                lhs,
                rhs,
            } if k(lhs) == A && k(rhs) == L => A,
            Expr::Unary { op: U::Neg, arg } if k(arg) == A => A,
            Expr::Detach { arg } if k(arg) == A => A,
            Expr::Select {
                cond,
                on_true,
                on_false,
            } if k(cond) == L && add_like(on_true) && add_like(on_false) => A,
            _ if e.operands().into_iter().all(|o| k(o) == L) && !own_cross(e) => L,
            _ => Bad(h),
        };
        c.push(class);
    }
    c
}

/// Does this node itself combine several sequences?
fn own_cross(e: &Expr) -> bool {
    match e {
        Expr::Reduce { to, .. } | Expr::Quantile { to, .. } => *to >= Level::Group,
        Expr::Rank { within, .. } => *within >= Level::Group,
        Expr::PosReduce { .. } => true,
        _ => false,
    }
}

fn describe(m: &Module, h: Handle<Expr>) -> String {
    const DEP: &str = "a value that depends on a `diff` input";
    match m.exprs.get(h) {
        Some(Expr::Reduce {
            op: ReduceOp::Sum,
            to,
            ..
        }) => format!(
            "sum over each `{to}` of a per-group {DEP}: a group cut across micro-batches would \
             be counted once per micro-batch"
        ),
        Some(Expr::Reduce { op, to, .. }) => format!(
            "{} over each `{to}` of {DEP}: a micro-batch sees only some of its elements, and \
             a {} does not add up over micro-batches",
            format!("{op:?}").to_lowercase(),
            format!("{op:?}").to_lowercase()
        ),
        Some(Expr::Quantile { to, .. }) => {
            format!("quantile over each `{to}` of {DEP}: it needs every sequence at once")
        }
        Some(Expr::Rank { within, .. }) => {
            format!("rank within each `{within}` of {DEP}: it needs every sequence at once")
        }
        Some(Expr::PosReduce { .. }) => {
            format!("per-position group reduction of {DEP}: it needs the whole group at once")
        }
        Some(Expr::Broadcast { arg, to }) => format!(
            "this per-`{}` sum of {DEP} is used for each `{to}`: a micro-batch sees only its \
             own part of the sum",
            m.level(*arg)
        ),
        _ => format!(
            "non-linear use of a sum over sequences of {DEP}: only sums, scaled by values of \
             non-diff inputs, add up over micro-batches"
        ),
    }
}

/// Runs the analysis. `Err` explains the first root that breaks exactness.
pub fn analyze(m: &Module) -> Result<Analysis, NotSplittable> {
    let (dy, cr) = dyn_cross(m);
    let normalizer: Vec<bool> = (0..m.exprs.len()).map(|i| cr[i] && !dy[i]).collect();
    // Freeze the frontier: normalizers used by a non-normalizer node, or roots themselves.
    let mut frozen = vec![false; m.exprs.len()];
    for (h, e) in m.exprs.iter() {
        if !normalizer[h.index()] {
            for o in e.operands() {
                if normalizer[o.index()] {
                    frozen[o.index()] = true;
                }
            }
        }
    }
    let roots = std::iter::once(m.loss)
        .chain(m.grads.iter().map(|g| g.value))
        .chain(m.metrics.iter().map(|x| x.value))
        .chain(m.outputs.iter().map(|x| x.value));
    for r in roots {
        if normalizer.get(r.index()).copied().unwrap_or(false) {
            frozen[r.index()] = true;
        }
    }
    let class = classify(m, &cr, &frozen);
    let k = |h: Handle<Expr>| class.get(h.index()).copied().unwrap_or(Class::Bad(h));
    let fail = |root: String, b: Handle<Expr>| NotSplittable {
        root,
        span: m.span(b),
        message: describe(m, b),
    };
    let loss = match k(m.loss) {
        Class::Additive => Merge::Sum,
        Class::Local if is_zero(m, m.loss) => Merge::Sum,
        Class::Local => {
            return Err(NotSplittable {
                root: "loss".into(),
                span: m.span(m.loss),
                message: "the loss does not sum over sequences (it does not depend on a `diff` \
                          input through a sum)"
                    .into(),
            })
        }
        Class::Bad(b) => return Err(fail("loss".into(), b)),
    };
    let mut grads = Vec::new();
    for g in &m.grads {
        let name = m
            .inputs
            .get(g.input as usize)
            .map(|i| i.name.clone())
            .unwrap_or_default();
        let level = m.inputs.get(g.input as usize).map(|i| i.ty.level);
        grads.push(match (k(g.value), level) {
            (Class::Local, Some(l)) if l <= Level::Seq => Merge::Place,
            (Class::Additive, Some(l)) if l >= Level::Group => Merge::Sum,
            (_, _) if is_zero(m, g.value) => Merge::Place,
            (Class::Bad(b), _) => return Err(fail(format!("gradient of `{name}`"), b)),
            _ => {
                return Err(fail(format!("gradient of `{name}`"), g.value));
            }
        });
    }
    let merge = |x: &Named| match k(x.value) {
        Class::Local => Merge::Place,
        Class::Additive => Merge::Sum,
        Class::Bad(_) => Merge::Whole,
    };
    Ok(Analysis {
        frozen: m.exprs.handles().filter(|h| frozen[h.index()]).collect(),
        loss,
        grads,
        metrics: m.metrics.iter().map(merge).collect(),
        outputs: m.outputs.iter().map(merge).collect(),
    })
}

/// The name of the extra input carrying frozen node `h`.
pub fn frozen_name(h: Handle<Expr>) -> String {
    format!("__frozen.{}", h.index())
}

/// `e` with every operand mapped through `f`.
fn remap(e: &Expr, f: impl Fn(Handle<Expr>) -> Handle<Expr>) -> Expr {
    match *e {
        Expr::Const(_) | Expr::Bool(_) | Expr::Param(_) | Expr::Input(_) | Expr::Index(_) => {
            e.clone()
        }
        Expr::Unary { op, arg } => Expr::Unary { op, arg: f(arg) },
        Expr::Binary { op, lhs, rhs } => Expr::Binary {
            op,
            lhs: f(lhs),
            rhs: f(rhs),
        },
        Expr::Select {
            cond,
            on_true,
            on_false,
        } => Expr::Select {
            cond: f(cond),
            on_true: f(on_true),
            on_false: f(on_false),
        },
        Expr::Broadcast { arg, to } => Expr::Broadcast { arg: f(arg), to },
        Expr::Reduce {
            op,
            arg,
            to,
            filter,
        } => Expr::Reduce {
            op,
            arg: f(arg),
            to,
            filter: filter.map(&f),
        },
        Expr::Scan { op, arg, discount } => Expr::Scan {
            op,
            arg: f(arg),
            discount: discount.map(&f),
        },
        Expr::Rank { arg, within } => Expr::Rank {
            arg: f(arg),
            within,
        },
        Expr::Quantile { arg, q, to, filter } => Expr::Quantile {
            arg: f(arg),
            q: f(q),
            to,
            filter: filter.map(&f),
        },
        Expr::PosReduce { op, arg } => Expr::PosReduce { op, arg: f(arg) },
        Expr::Detach { arg } => Expr::Detach { arg: f(arg) },
    }
}

/// The module each part runs: frozen nodes replaced by inputs `__frozen.<h>` (non-diff).
pub fn part_module(m: &Module, frozen: &[Handle<Expr>]) -> Module {
    let mut out = Module::new(m.name.clone());
    out.doc = m.doc.clone();
    out.params = m.params.clone();
    out.inputs = m.inputs.clone();
    let mut map: Vec<Handle<Expr>> = Vec::with_capacity(m.exprs.len());
    for (h, e) in m.exprs.iter() {
        let ty = m.ty(h);
        let span = m.span(h);
        let new = if frozen.contains(&h) {
            out.inputs.push(Input {
                name: frozen_name(h),
                ty,
                diff: false,
                span,
            });
            Expr::Input((out.inputs.len() - 1) as u32)
        } else {
            remap(e, |o| map.get(o.index()).copied().unwrap_or(o))
        };
        let nh = out.append(new, ty, span);
        map.push(nh);
    }
    let f = |h: Handle<Expr>| map.get(h.index()).copied().unwrap_or(h);
    out.loss = f(m.loss);
    out.metrics = m
        .metrics
        .iter()
        .map(|x| Named {
            value: f(x.value),
            ..x.clone()
        })
        .collect();
    out.outputs = m
        .outputs
        .iter()
        .map(|x| Named {
            value: f(x.value),
            ..x.clone()
        })
        .collect();
    out.grads = m
        .grads
        .iter()
        .map(|g| rlo_compiler::ir::Grad {
            input: g.input,
            value: f(g.value),
        })
        .collect();
    out
}

/// A forward-only module computing `roots` as outputs (no gradients, loss 0).
pub fn roots_module(m: &Module, roots: Vec<Named>) -> Module {
    let mut out = m.clone();
    out.grads.clear();
    out.metrics.clear();
    out.outputs = roots;
    let zero = out.append(
        Expr::Const(0.0),
        rlo_compiler::types::Ty::new(Level::Batch, rlo_compiler::types::DType::F32),
        m.span(m.loss),
    );
    out.loss = zero;
    out
}

/// A compiled objective running `module` (schedule recomputed; sources kept for diagnostics).
pub fn recompiled(c: &Compiled, module: Module) -> Compiled {
    let schedule = rlo_compiler::schedule::schedule(&module);
    Compiled {
        sources: c.sources.clone(),
        forward: c.forward.clone(),
        module,
        schedule,
        warnings: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rlo_compiler::ir::{BinaryOp, Grad, UnaryOp};
    use rlo_compiler::types::{DType, Ty};

    struct B(Module);
    impl B {
        fn new() -> B {
            let mut m = Module::new("t");
            for (name, level, diff) in [("logp", Level::Tok, true), ("reward", Level::Seq, false)] {
                m.inputs.push(Input {
                    name: name.into(),
                    ty: Ty::new(level, DType::F32),
                    diff,
                    span: Span::default(),
                });
            }
            B(m)
        }
        fn add(&mut self, e: Expr, level: Level) -> Handle<Expr> {
            self.0
                .append(e, Ty::new(level, DType::F32), Span::default())
        }
        fn bin(&mut self, op: BinaryOp, lhs: Handle<Expr>, rhs: Handle<Expr>) -> Handle<Expr> {
            let level = self.0.level(lhs);
            self.add(Expr::Binary { op, lhs, rhs }, level)
        }
        fn sum(&mut self, arg: Handle<Expr>, to: Level) -> Handle<Expr> {
            self.add(
                Expr::Reduce {
                    op: ReduceOp::Sum,
                    arg,
                    to,
                    filter: None,
                },
                to,
            )
        }
        fn bc(&mut self, arg: Handle<Expr>, to: Level) -> Handle<Expr> {
            self.add(Expr::Broadcast { arg, to }, to)
        }
        /// `logp` at tok, `reward` at seq, and `(reward - group_mean(reward))` at tok.
        fn adv_tok(&mut self) -> (Handle<Expr>, Handle<Expr>) {
            let logp = self.add(Expr::Input(0), Level::Tok);
            let reward = self.add(Expr::Input(1), Level::Seq);
            let one = self.add(Expr::Const(1.0), Level::Batch);
            let one_s = self.bc(one, Level::Seq);
            let gs = self.sum(reward, Level::Group);
            let gn = self.sum(one_s, Level::Group);
            let gm = self.bin(BinaryOp::Div, gs, gn);
            let gm_s = self.bc(gm, Level::Seq);
            let adv = self.bin(BinaryOp::Sub, reward, gm_s);
            let adv_t = self.bc(adv, Level::Tok);
            (logp, adv_t)
        }
        fn done(mut self, loss: Handle<Expr>, grad: Handle<Expr>) -> Module {
            self.0.loss = loss;
            self.0.grads.push(Grad {
                input: 0,
                value: grad,
            });
            self.0
        }
    }

    #[test]
    fn grpo_like_objective_splits_with_frozen_normalizers() {
        let mut b = B::new();
        let (logp, adv) = b.adv_tok();
        let r = b.add(
            Expr::Unary {
                op: UnaryOp::Exp,
                arg: logp,
            },
            Level::Tok,
        );
        let pt = b.bin(BinaryOp::Mul, r, adv);
        let ss = b.sum(pt, Level::Seq);
        let tot = b.sum(ss, Level::Batch);
        let one = b.add(Expr::Const(1.0), Level::Batch);
        let one_s = b.bc(one, Level::Seq);
        let n = b.sum(one_s, Level::Batch);
        let loss = b.bin(BinaryOp::Div, tot, n);
        let inv = b.bin(BinaryOp::Div, one, n);
        let inv_t = b.bc(inv, Level::Tok);
        let g = b.bin(BinaryOp::Mul, inv_t, pt);
        let m = b.done(loss, g);
        let a = analyze(&m).expect("splittable");
        assert_eq!(a.loss, Merge::Sum);
        assert_eq!(a.grads, vec![Merge::Place]);
        // The group mean (used by adv) and the sequence count are computed by the pre-pass.
        assert!(a.frozen.contains(&n), "{:?}", a.frozen);
        assert!(a.frozen.len() >= 2, "{:?}", a.frozen);
        let pm = part_module(&m, &a.frozen);
        assert_eq!(pm.inputs.len(), 2 + a.frozen.len());
        assert!(matches!(
            pm.exprs[pm.loss],
            Expr::Binary {
                op: BinaryOp::Div,
                ..
            }
        ));
    }

    #[test]
    fn max_over_the_batch_of_logp_is_not_splittable() {
        let mut b = B::new();
        let (logp, _) = b.adv_tok();
        let mx = b.add(
            Expr::Reduce {
                op: ReduceOp::Max,
                arg: logp,
                to: Level::Batch,
                filter: None,
            },
            Level::Batch,
        );
        let m = b.done(mx, logp);
        let e = analyze(&m).expect_err("not splittable");
        assert_eq!(e.root, "loss");
        assert!(e.message.contains("max over each `batch`"), "{}", e.message);
    }

    #[test]
    fn square_of_a_batch_sum_is_not_splittable() {
        let mut b = B::new();
        let (logp, _) = b.adv_tok();
        let s = b.sum(logp, Level::Batch);
        let sq = b.bin(BinaryOp::Mul, s, s);
        let m = b.done(sq, logp);
        assert!(analyze(&m).is_err());
    }

    #[test]
    fn group_sum_of_logp_broadcast_back_is_not_splittable() {
        let mut b = B::new();
        let (logp, _) = b.adv_tok();
        let ss = b.sum(logp, Level::Seq);
        let gs = b.sum(ss, Level::Group);
        let back = b.bc(gs, Level::Seq);
        let x = b.bin(BinaryOp::Mul, back, ss);
        let loss = b.sum(x, Level::Batch);
        let m = b.done(loss, logp);
        let e = analyze(&m).expect_err("not splittable");
        assert!(e.message.contains("used for each `seq`"), "{}", e.message);
    }

    #[test]
    fn group_sums_of_logp_summed_to_the_batch_split() {
        let mut b = B::new();
        let (logp, _) = b.adv_tok();
        let ss = b.sum(logp, Level::Seq);
        let gs = b.sum(ss, Level::Group);
        // fine: additive at group level, then summed
        let loss_ok = b.sum(gs, Level::Batch);
        let m = b.done(loss_ok, logp);
        assert!(analyze(&m).is_ok());
    }
}
