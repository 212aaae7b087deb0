//! The plan's consistency pass (`check_and_mark`): every operand is available in the kernel
//! (and sweep) that reads it, sweeps are numbered, and the nodes that must be stored per element,
//! recomputed, or computed in a pass's per-sequence prologue are marked. Split from `cuda.rs`.
// Indexing is by handles of the module's own arena and side tables made with its length.
#![allow(clippy::indexing_slicing)]

use super::{
    elementwise, err, fuse, is_inline, ready_kernel, root_handles, KernelKind, Plan, Role,
    REMAT_MAX_NODES,
};
use crate::arena::{Handle, HandleVec};
use crate::back::BackendError;
use crate::ir::{Expr, ScanOp};
use crate::types::Level;

/// Checks that every operand is available where it is read, assigns sweeps, and marks the nodes
/// that must be stored per element and the per-sequence prologue of each pass.
pub(super) fn check_and_mark(p: &mut Plan) -> Result<(), BackendError> {
    let m = p.m;
    let nk = p.kernels.len();
    let mut prologue: Vec<Vec<Handle<Expr>>> = vec![Vec::new(); nk];
    // token values read by a later kernel or sweep (and the reading kernel): stored or recomputed
    let mut reads: Vec<(Handle<Expr>, usize)> = Vec::new();
    // depends on an accumulator of its own pass (coarse nodes only)
    let mut after_acc: HandleVec<Expr, bool> = HandleVec::new(m.exprs.len(), false);
    for (h, e) in m.exprs.iter() {
        let ops: Vec<Handle<Expr>> = e.operands().into_iter().map(|o| p.canon[o]).collect();
        let kernel_of_h = ready_kernel(p.role[h]);
        after_acc[h] = ops.iter().any(|&o| {
            matches!(p.role[o], Role::Acc { kernel, .. } if Some(kernel + 1) == kernel_of_h)
                || after_acc[o]
        });
        match p.role[h] {
            Role::None => {}
            Role::Tok { kernel, .. } | Role::Acc { kernel, .. } => {
                if matches!(p.role[h], Role::Tok { .. }) {
                    // a gather recomputed at the neighbour (reads no stored operand, needs no
                    // sweep), or a scan's load recomputing its argument at each token
                    let cone = gather_cone(p, h, kernel)
                        .or_else(|| scan_cone(p, h, kernel).filter(|_| !p.opts.disable_remat));
                    if let Some(cone) = cone {
                        store_cone_reads(p, &cone, kernel);
                        p.recompute[h] = Some(cone);
                    }
                }
                // the argument of an inline scan: not an operand read from this pass
                let inline_arg = if let (true, Expr::Scan { arg, .. }) = (p.scan_inline(h), e) {
                    Some(p.canon[*arg])
                } else {
                    None
                };
                let is_scan = matches!(e, Expr::Scan { .. }) && !p.gather(h)
                    || matches!(
                        e,
                        Expr::Reduce {
                            to: Level::Turn,
                            ..
                        }
                    );
                let needs_all = matches!(e, Expr::Rank { .. } | Expr::PosReduce { .. });
                // the first sweep of its pass (fused kernels: the pass's index)
                let base = match p.role[h] {
                    Role::Tok { sweep, .. } | Role::Acc { sweep, .. } => sweep,
                    Role::None | Role::SeqLocal { .. } | Role::Stmt { .. } => 0,
                };
                let fused = p.kernels.get(kernel).is_some_and(|k| !k.fused.is_empty());
                let mut sweep = base;
                let mut body_op = false;
                for &o in &ops {
                    if Some(o) == inline_arg {
                        continue;
                    }
                    match p.role[o] {
                        Role::None => {}
                        Role::Tok {
                            kernel: ko,
                            sweep: so,
                        } if ko == kernel => {
                            if needs_all {
                                return Err(err(m, h, "needs all sequences of a value computed in the same pass (schedule error)"));
                            }
                            sweep = sweep.max(so);
                            body_op = true;
                            if is_scan {
                                p.stored[o] = true;
                            }
                        }
                        Role::Acc {
                            kernel: ko,
                            sweep: so,
                            ..
                        } if ko == kernel => {
                            if !(fused && so < base && m.level(o) == Level::Seq) {
                                return Err(err(
                                    m,
                                    h,
                                    "reads a reduction of its own pass (schedule error)",
                                ));
                            }
                            p.early[o] = true;
                        }
                        Role::SeqLocal {
                            kernel: ko,
                            sweep: so,
                        } if ko == kernel => {
                            if so > base {
                                return Err(err(
                                    m,
                                    h,
                                    "reads a per-sequence value of a later sweep",
                                ));
                            }
                        }
                        Role::Stmt { kernel: ko }
                            if ko == kernel + 1
                                && p.kernels.get(ko).is_some_and(|k| k.kind == KernelKind::Fin) =>
                        {
                            // a coarse node of this pass: recomputed per sequence if it can be
                            if after_acc[o] || !elementwise(&m.exprs[o]) {
                                return Err(err(
                                    m,
                                    h,
                                    "reads a value finished after its own pass (schedule error)",
                                ));
                            }
                            add_prologue(p, &mut prologue, kernel, o)?;
                        }
                        r @ (Role::Tok { .. }
                        | Role::Acc { .. }
                        | Role::SeqLocal { .. }
                        | Role::Stmt { .. }) => {
                            let ko = ready_kernel(r).unwrap_or(usize::MAX);
                            if ko >= kernel {
                                return Err(err(
                                    m,
                                    h,
                                    "reads a value computed later (schedule error)",
                                ));
                            }
                            // ranks and per-position reductions read other tokens: stored
                            if matches!(r, Role::Tok { .. }) && !is_scan && !needs_all {
                                reads.push((o, kernel));
                            } else {
                                p.stored[o] = true;
                            }
                        }
                    }
                }
                if is_scan && matches!(e, Expr::Scan { .. }) && body_op {
                    sweep += 1;
                }
                match &mut p.role[h] {
                    Role::Tok { sweep: s, .. } | Role::Acc { sweep: s, .. } => *s = sweep,
                    Role::None | Role::SeqLocal { .. } | Role::Stmt { .. } => {}
                }
                if is_scan {
                    p.stored[h] = true;
                }
                if let Some(k) = p.kernels.get_mut(kernel) {
                    k.sweeps = k.sweeps.max(sweep + 1);
                }
                if matches!(p.role[h], Role::Acc { fin: Some(_), .. }) {
                    p.stored[h] = true;
                }
                if matches!(p.role[h], Role::Acc { fin: None, .. }) {
                    p.stored[h] = true;
                }
            }
            Role::SeqLocal { kernel, sweep } => {
                for &o in &ops {
                    match p.role[o] {
                        Role::None => {}
                        Role::Acc {
                            kernel: ko,
                            sweep: so,
                            ..
                        } if ko == kernel && so < sweep && m.level(o) == Level::Seq => {
                            p.early[o] = true;
                        }
                        Role::SeqLocal { kernel: ko, .. } if ko == kernel && o < h => {}
                        r @ (Role::Tok { .. }
                        | Role::Acc { .. }
                        | Role::SeqLocal { .. }
                        | Role::Stmt { .. }) => {
                            if ready_kernel(r).is_none_or(|ko| ko >= kernel) {
                                return Err(err(
                                    m,
                                    h,
                                    "reads a value computed later (fusion error)",
                                ));
                            }
                            p.stored[o] = true;
                        }
                    }
                }
            }
            Role::Stmt { kernel } => {
                p.stored[h] = true;
                for &o in &ops {
                    match p.role[o] {
                        Role::None => {}
                        r @ (Role::Tok { .. }
                        | Role::Acc { .. }
                        | Role::SeqLocal { .. }
                        | Role::Stmt { .. }) => {
                            let ko = ready_kernel(r).unwrap_or(usize::MAX);
                            let same_ok = ko == kernel && o < h;
                            if ko > kernel || (ko == kernel && !same_ok) {
                                return Err(err(
                                    m,
                                    h,
                                    "reads a value computed later (schedule error)",
                                ));
                            }
                            if !matches!(r, Role::Acc { .. }) {
                                p.stored[o] = true;
                            }
                        }
                    }
                }
            }
        }
    }
    // a body node read in a later sweep of its pass is stored or recomputed (scans read
    // buffers)
    for (h, e) in m.exprs.iter() {
        let (kh, sh) = match p.role[h] {
            Role::Tok { kernel, sweep } | Role::Acc { kernel, sweep, .. } => (kernel, sweep),
            Role::None | Role::SeqLocal { .. } | Role::Stmt { .. } => continue,
        };
        let scan_like = matches!(
            e,
            Expr::Scan { .. }
                | Expr::Reduce {
                    to: Level::Turn,
                    ..
                }
        );
        for o in e.operands() {
            let o = p.canon[o];
            if matches!(*e, Expr::Scan { arg, .. } if p.scan_inline(h) && p.canon[arg] == o) {
                continue;
            }
            if let Role::Tok { kernel, sweep } = p.role[o] {
                if kernel == kh && sweep < sh {
                    if scan_like {
                        p.stored[o] = true;
                    } else {
                        reads.push((o, kh));
                    }
                }
            }
        }
    }
    for r in root_handles(m) {
        let c = p.canon[r];
        if p.role[c] != Role::None && m.level(c) == m.level(r) {
            p.stored[c] = true;
            if m.level(c) == Level::Tok {
                p.tok_root[c] = true;
            }
        }
    }
    // every needed node must have been scheduled
    for r in root_handles(m) {
        let c = p.canon[r];
        if p.role[c] == Role::None && !is_inline(&m.exprs[c]) {
            return Err(err(m, r, "a root is not in the schedule (schedule error)"));
        }
    }
    fuse::resolve_reads(p, &reads);
    p.prologue = prologue;
    Ok(())
}

fn add_prologue(
    p: &Plan,
    prologue: &mut [Vec<Handle<Expr>>],
    kernel: usize,
    h: Handle<Expr>,
) -> Result<(), BackendError> {
    let Some(list) = prologue.get_mut(kernel) else {
        return Ok(());
    };
    if list.contains(&h) {
        return Ok(());
    }
    // operands of a prologue node that are themselves coarse nodes of this pass come first
    let mut todo = vec![h];
    let mut all = Vec::new();
    while let Some(x) = todo.pop() {
        if all.contains(&x) || list.contains(&x) {
            continue;
        }
        if !elementwise(&p.m.exprs[x]) || p.m.level(x) == Level::Turn {
            return Err(err(
                p.m,
                x,
                "a per-sequence value of a pass must be elementwise (schedule error)",
            ));
        }
        all.push(x);
        for o in p.m.exprs[x].operands() {
            let o = p.canon[o];
            if p.role[o] == (Role::Stmt { kernel: kernel + 1 }) {
                todo.push(o);
            }
        }
    }
    list.extend(all);
    list.sort();
    Ok(())
}

/// For a `seq_next` / `seq_prev` of token values in kernel `k`: the nodes to recompute at the
/// neighbouring token, operands first ([`recompute_cone`]). `None`: it runs as a scan
/// (argument stored, a sweep later).
pub(crate) fn gather_cone(p: &Plan, h: Handle<Expr>, k: usize) -> Option<Vec<Handle<Expr>>> {
    let Expr::Scan {
        op: ScanOp::Next | ScanOp::Prev,
        arg,
        ..
    } = p.m.exprs[h]
    else {
        return None;
    };
    recompute_cone(p, arg, k)
}

/// For a cumulative or discounted token scan in kernel `k` whose discount is not a token value
/// of a pass: the nodes its load recomputes at each token, operands first ([`recompute_cone`]).
/// `None`: the argument is stored by the sweep before the scan (GAE's δ_t used to be: 4 bytes
/// written and read back per token).
pub(crate) fn scan_cone(p: &Plan, h: Handle<Expr>, k: usize) -> Option<Vec<Handle<Expr>>> {
    let m = p.m;
    let Expr::Scan {
        op:
            ScanOp::CumSum | ScanOp::RevCumSum | ScanOp::DiscountedRevCumSum | ScanOp::DiscountedCumSum,
        arg,
        discount,
    } = m.exprs[h]
    else {
        return None;
    };
    if let Some(d) = discount {
        let d = p.canon[d];
        if m.level(d) == Level::Tok && !is_inline(&m.exprs[d]) {
            return None;
        }
    }
    recompute_cone(p, arg, k)
}

/// Marks the coarse values a recomputed cone reads as stored (the nodes of the cone may belong
/// to an earlier pass, which read them where they were).
fn store_cone_reads(p: &mut Plan, cone: &[Handle<Expr>], k: usize) {
    let m = p.m;
    for &c in cone {
        if let Some(inner) = gather_cone(p, c, k) {
            store_cone_reads(p, &inner, k);
            continue;
        }
        for o in m.exprs[c].operands() {
            let o = p.canon[o];
            if m.level(o) > Level::Tok && !is_inline(&m.exprs[o]) && p.role[o] != Role::None {
                p.stored[o] = true;
            }
        }
    }
}

/// The nodes that recompute token value `arg` for kernel `k` at any token, operands first: its
/// cone when that is an elementwise function of inputs, structural indices, constants and
/// values finished by earlier kernels (at most `REMAT_MAX_NODES` nodes).
fn recompute_cone(p: &Plan, arg: Handle<Expr>, k: usize) -> Option<Vec<Handle<Expr>>> {
    cone_within(p, arg, k, REMAT_MAX_NODES).map(|(order, _)| order)
}

/// [`recompute_cone`] within `budget` nodes (the nodes of nested gathers count too, which also
/// bounds their nesting): the order and the nodes used.
fn cone_within(
    p: &Plan,
    arg: Handle<Expr>,
    k: usize,
    budget: usize,
) -> Option<(Vec<Handle<Expr>>, usize)> {
    let m = p.m;
    if m.level(arg) != Level::Tok {
        return None;
    }
    // depth-first, operands before users
    let mut order: Vec<Handle<Expr>> = Vec::new();
    let mut seen: Vec<Handle<Expr>> = Vec::new();
    let mut used = 0;
    let mut stack = vec![(p.canon[arg], false)];
    while let Some((x, expanded)) = stack.pop() {
        if !expanded && seen.contains(&x) {
            continue;
        }
        let e = &m.exprs[x];
        if is_inline(e) {
            continue;
        }
        if m.level(x) > Level::Tok {
            // a coarse value: read where it is, if an earlier kernel finished it
            if ready_kernel(p.role[x]).is_none_or(|kx| kx >= k) {
                return None;
            }
            continue;
        }
        if expanded {
            order.push(x);
            continue;
        }
        seen.push(x);
        used += 1;
        if used > budget {
            return None;
        }
        stack.push((x, true));
        if let Expr::Scan {
            op: ScanOp::Next | ScanOp::Prev,
            arg: a,
            ..
        } = *e
        {
            // a shift inside the cone: a gather of its own (its cone at the neighbour)
            let (_, n) = cone_within(p, a, k, budget - used)?;
            used += n;
            continue;
        }
        if !elementwise(e) {
            return None;
        }
        for o in e.operands() {
            stack.push((p.canon[o], false));
        }
    }
    Some((order, used))
}
