//! Reverse-mode autodiff as an IR → IR pass (tinygrad/luminal style).
//!
//! 1. `active` = nodes that depend on a `diff` input through differentiable edges (not through
//!    `Detach`, `Rank`, bool values or `ToF32`) **and** that the loss depends on: only these get
//!    adjoints, so e.g. `d(sum/count)/d count` is never built for a constant count.
//! 2. Walking the arena backwards (arena order is topological), each active node with an adjoint
//!    hands contributions to its active operands through its rule in [`rules::vjp`];
//!    contributions are accumulated with `Add`. New nodes get the span of the forward node they
//!    come from.
//! 3. `Module::grads` gets, for every `diff` input, the sum of the adjoints of its `Input` nodes
//!    (a zero of the input's level when the loss does not depend on it).
//!
//! The result is ordinary IR (hash-consed through [`Builder`]): it goes through the same
//! validator, simplifier, scheduler and backends as the forward part.

pub mod rules;

use crate::arena::Handle;
use crate::ir::{BinaryOp, Expr, Grad, Module};
use crate::passes::builder::Builder;
use crate::types::DType;

/// Nodes through which a gradient flows from some `diff` input.
pub fn diff_dependent(m: &Module) -> Vec<bool> {
    let mut dd: Vec<bool> = Vec::with_capacity(m.exprs.len());
    for (h, e) in m.exprs.iter() {
        let v = m.ty(h).dtype == DType::F32
            && if let Expr::Input(i) = *e {
                m.inputs.get(i as usize).is_some_and(|x| x.diff)
            } else if matches!(e, Expr::Detach { .. } | Expr::Rank { .. }) {
                false
            } else {
                e.operands()
                    .iter()
                    .any(|o| dd.get(o.index()).copied().unwrap_or(false))
            };
        dd.push(v);
    }
    dd
}

/// Appends `d loss / d input` for every `diff` input to `m.grads`.
pub fn differentiate(m: Module) -> Module {
    let n = m.exprs.len();
    let dd = diff_dependent(&m);
    let mut active = vec![false; n];
    if let Some(x) = active.get_mut(m.loss.index()) {
        *x = true;
    }
    for (h, e) in m.exprs.iter().rev() {
        if active.get(h.index()).copied().unwrap_or(false) {
            for o in e.operands() {
                if let Some(x) = active.get_mut(o.index()) {
                    *x = true;
                }
            }
        }
    }
    for (a, d) in active.iter_mut().zip(&dd) {
        *a &= *d;
    }
    let loss = m.loss;
    let mut b = Builder::new(m);
    let mut adj: Vec<Option<Handle<Expr>>> = vec![None; n];
    if active.get(loss.index()).copied().unwrap_or(false) {
        b.span = b.m.span(loss);
        if let Some(x) = adj.get_mut(loss.index()) {
            *x = Some(b.constant(1.0));
        }
    }
    for i in (0..n).rev() {
        let h = Handle::from_index(i);
        let Some(g) = adj.get(i).copied().flatten() else {
            continue;
        };
        if !active.get(i).copied().unwrap_or(false) {
            continue;
        }
        b.span = b.m.span(h);
        for (o, gi) in rules::vjp(&mut b, h, g, &active) {
            if !active.get(o.index()).copied().unwrap_or(false) {
                continue;
            }
            let acc = match adj.get(o.index()).copied().flatten() {
                None => gi,
                Some(p) => b.binary(BinaryOp::Add, p, gi),
            };
            if let Some(x) = adj.get_mut(o.index()) {
                *x = Some(acc);
            }
        }
    }
    let mut grads = Vec::new();
    let inputs = b.m.inputs.clone();
    for (i, inp) in inputs.iter().enumerate() {
        if !inp.diff {
            continue;
        }
        b.span = inp.span;
        let mut total: Option<Handle<Expr>> = None;
        for j in 0..n {
            let h = Handle::from_index(j);
            if b.m.exprs.get(h) != Some(&Expr::Input(i as u32)) {
                continue;
            }
            if let Some(g) = adj.get(j).copied().flatten() {
                total = Some(match total {
                    None => g,
                    Some(t) => b.add(t, g),
                });
            }
        }
        let value = match total {
            Some(t) => t,
            None => b.const_at(0.0, inp.ty.level),
        };
        grads.push(Grad {
            input: i as u32,
            value,
        });
    }
    let mut m = b.finish();
    m.grads = grads;
    m
}
