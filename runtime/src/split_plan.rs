//! Executing the compiler's split analysis (`rlo_compiler::split`) on any backend.
//!
//! `split::analyze` says whether an objective's loss adds up over micro-batches and which
//! cross-sequence values of non-diff inputs (token counts, group means of rewards, ...) must be
//! computed once over the whole optimizer step: its `prepass` nodes, the **normalizers**. Here
//! those nodes become extra non-diff inputs `__frozen.<node>` of a *part module*
//! ([`part_module`]): a micro-batch then runs the same gradient IR with the normalizers fixed to
//! their whole-step values, on any backend (interpreter, Cranelift, CUDA), with no backend
//! needing to know about micro-batching. The pre-pass itself is a forward-only module whose
//! outputs are the normalizers ([`roots_module`]).

use rlo_compiler::arena::Handle;
use rlo_compiler::ir::{Expr, Input, Module, Named};
use rlo_compiler::split::{Combine, Splittability};
use rlo_compiler::types::Level;
use rlo_compiler::Compiled;
use rlo_grammar::Diagnostic;

/// How part results of a root combine into the whole-batch result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Merge {
    /// Each element comes from a part holding it (every part holding it has the same value).
    Place,
    /// Parts' values are added.
    Sum,
    /// Not exact over parts: evaluated on the whole batch.
    Whole,
}

impl Merge {
    pub fn of(c: Combine) -> Merge {
        match c {
            Combine::Whole | Combine::PerElement => Merge::Place,
            Combine::Sum => Merge::Sum,
            Combine::Unavailable => Merge::Whole,
        }
    }
}

/// The refusal as a diagnostic pointing at the node at fault (`None` when splittable).
pub fn refusal(m: &Module, sp: &Splittability) -> Option<Diagnostic> {
    if sp.splittable {
        return None;
    }
    let (span, reason) = sp.reason.clone().unwrap_or((
        m.span(m.loss),
        "the loss does not add up over micro-batches".into(),
    ));
    Some(
        Diagnostic::error(
            "E0901",
            format!(
                "objective `{}` cannot be split into micro-batches exactly",
                m.name
            ),
        )
        .with_primary(span, reason)
        .with_note(
            "the loss and its gradient on the whole batch would differ from the sums over \
             micro-batches (or data-parallel shards)",
        )
        .with_help(
            "across sequences, values that depend on a `diff` input may only be summed and \
             scaled by values of non-diff inputs (counts, group statistics of rewards, ...)",
        ),
    )
}

/// The level of input `i` of `m` (batch for an unknown index).
pub fn input_level(m: &Module, i: u32) -> Level {
    m.inputs
        .get(i as usize)
        .map(|x| x.ty.level)
        .unwrap_or(Level::Batch)
}

/// How the gradient of an input combines: per element below `group`, summed above.
pub fn grad_merge(level: Level) -> Merge {
    if level <= Level::Seq {
        Merge::Place
    } else {
        Merge::Sum
    }
}

/// The name of the extra input carrying frozen node `h`.
pub fn frozen_name(h: Handle<Expr>) -> String {
    format!("__frozen.{}", h.index())
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
            e.map_operands(|o| map.get(o.index()).copied().unwrap_or(o))
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
    use rlo_compiler::ir::{BinaryOp, Grad};
    use rlo_compiler::types::{DType, Ty};
    use rlo_grammar::Span;

    #[test]
    fn part_module_turns_frozen_nodes_into_inputs_and_remaps_roots() {
        let mut m = Module::new("t");
        m.inputs.push(Input {
            name: "logp".into(),
            ty: Ty::new(Level::Tok, DType::F32),
            diff: true,
            span: Span::default(),
        });
        let f = |l| Ty::new(l, DType::F32);
        let x = m.append(Expr::Input(0), f(Level::Tok), Span::default());
        let one = m.append(Expr::Const(1.0), f(Level::Batch), Span::default());
        let ones = m.append(
            Expr::Broadcast {
                arg: one,
                to: Level::Tok,
            },
            f(Level::Tok),
            Span::default(),
        );
        let n = m.append(
            Expr::Reduce {
                op: rlo_compiler::ir::ReduceOp::Sum,
                arg: ones,
                to: Level::Batch,
                filter: None,
            },
            f(Level::Batch),
            Span::default(),
        );
        let s = m.append(
            Expr::Reduce {
                op: rlo_compiler::ir::ReduceOp::Sum,
                arg: x,
                to: Level::Batch,
                filter: None,
            },
            f(Level::Batch),
            Span::default(),
        );
        let loss = m.append(
            Expr::Binary {
                op: BinaryOp::Div,
                lhs: s,
                rhs: n,
            },
            f(Level::Batch),
            Span::default(),
        );
        m.loss = loss;
        m.grads.push(Grad {
            input: 0,
            value: ones,
        });
        let p = part_module(&m, &[n]);
        assert_eq!(p.inputs.len(), 2);
        assert_eq!(p.inputs[1].name, frozen_name(n));
        assert!(!p.inputs[1].diff);
        assert_eq!(p.exprs[n], Expr::Input(1));
        assert_eq!(
            p.exprs[p.loss],
            Expr::Binary {
                op: BinaryOp::Div,
                lhs: s,
                rhs: n
            }
        );
        assert_eq!(p.grads[0].value, ones);
        let r = roots_module(
            &m,
            vec![Named {
                name: "n".into(),
                value: n,
                span: Span::default(),
            }],
        );
        assert!(r.grads.is_empty());
        assert_eq!(r.outputs[0].value, n);
        assert_eq!(r.exprs[r.loss], Expr::Const(0.0));
    }
}
