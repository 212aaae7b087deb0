//! The one-block kernels (`_s<k>`, `_p<k>_fin`): one statement per node, each a block-strided
//! loop over its level or a fixed-order reduction / quantile / scan, separated by
//! `__syncthreads()`. Split from `cuda_emit.rs` to keep files small.

use std::collections::{HashMap, HashSet};

use super::*;

/// Elementwise statements, fusable into one loop with their neighbours of the same level.
fn fusable(p: &Plan, h: Handle<Expr>) -> bool {
    matches!(
        p.m.exprs[h],
        Expr::Unary { .. } | Expr::Binary { .. } | Expr::Select { .. }
    ) && !matches!(p.role[h], Role::Acc { .. })
}

pub(super) fn write_single(p: &Plan, w: &mut W, k: &KernelPlan) -> R<()> {
    open_single(p, w, &k.name);
    // one block over seqs/groups: a few iterations per thread, where unrolling buys nothing and
    // costs ptxas time (grpo's first small kernel: 192 -> 160 ms)
    w.rolled = true;
    for seg in segments(p, &k.nodes) {
        match seg.as_slice() {
            [h] if !fusable(p, *h) => write_stmt(p, w, *h)?,
            // a run of elementwise nodes at one level: one loop, values kept in registers (an
            // element's operands at this level are computed by the same thread)
            run => write_run(p, w, run, p.m.level(run[0]))?,
        }
        w.line("__syncthreads();");
    }
    w.rolled = false;
    w.close("}");
    Ok(())
}

/// The statements of a one-block kernel in barrier-separated segments: a non-elementwise node
/// alone, or a run of elementwise nodes of one level. A greedy topological order: the open run
/// takes every node of its level whose operands in this kernel are done (earlier segments or
/// the run itself) before a new segment starts with the first ready node in arena order. Arena
/// order alone interleaves levels (grpo's first small kernel: 24 segments, 15 after), and every
/// loop and barrier costs ptxas time (≈ 6 ms per segment, the most of a cold compile).
fn segments(p: &Plan, nodes: &[Handle<Expr>]) -> Vec<Vec<Handle<Expr>>> {
    let here: HashSet<Handle<Expr>> = nodes.iter().copied().collect();
    // per node, its operands that are statements of this kernel
    let deps: HashMap<Handle<Expr>, Vec<Handle<Expr>>> = nodes
        .iter()
        .map(|&h| {
            let ops = p.m.exprs[h].operands().into_iter().map(|o| p.canon[o]);
            (h, ops.filter(|c| here.contains(c)).collect())
        })
        .collect();
    let mut pending: Vec<Handle<Expr>> = nodes.to_vec();
    let mut done: HashSet<Handle<Expr>> = HashSet::new();
    let mut out = Vec::new();
    while !pending.is_empty() {
        // `done` holds earlier segments and the open run (same level, same thread per element)
        let ready = |h: Handle<Expr>, done: &HashSet<Handle<Expr>>| {
            deps[&h].iter().all(|d| done.contains(d))
        };
        let Some(first) = pending.iter().position(|&h| ready(h, &done)) else {
            // cannot happen for an acyclic kernel; keep arena order rather than loop forever
            out.extend(pending.drain(..).map(|h| vec![h]));
            break;
        };
        let head = pending.remove(first);
        done.insert(head);
        let mut seg = vec![head];
        if fusable(p, head) {
            let level = p.m.level(head);
            while let Some(i) = pending
                .iter()
                .position(|&x| fusable(p, x) && p.m.level(x) == level && ready(x, &done))
            {
                let x = pending.remove(i);
                done.insert(x);
                seg.push(x);
            }
        }
        out.push(seg);
    }
    out
}

fn write_run(p: &Plan, w: &mut W, run: &[Handle<Expr>], level: Level) -> R<()> {
    let mut locals = Vec::new();
    let mut body = Vec::new();
    let mut tails = Vec::new();
    for &h in run {
        let n = h.index();
        let e = rhs(p, &locals, h, level)?;
        body.push(format!(
            "const {} e{n} = {e};{}",
            c_ty(p, h),
            span_comment(p, h)
        ));
        body.push(format!(
            "ctx.v{n}[{}] = {};",
            idx(level),
            store_expr(p, h, &format!("e{n}"))
        ));
        locals.push(h);
        if p.tok_root[h] {
            tails.push(format!("v{n}"));
        }
    }
    level_loop_lines(p, w, level, &body, &tails);
    Ok(())
}

fn fin_value(op: ReduceOp) -> &'static str {
    match op {
        ReduceOp::Sum => "acc",
        ReduceOp::Max | ReduceOp::Min => "(n > 0.0f ? acc : 0.0f)",
    }
}

/// Whether a reduction or quantile from `el` to `to` runs one thread per unit (small units:
/// the sequences of a group, the turns of a sequence or of a group's sequences).
fn serial_unit(el: Level, to: Level) -> bool {
    matches!(
        (el, to),
        (Level::Seq, Level::Group)
            | (Level::Turn, Level::Seq)
            | (Level::Turn, Level::Group)
            | (Level::Tok, Level::Turn)
    )
}

/// One thread per element of `to` (group, sequence or turn), with its coordinates; the caller
/// closes one scope, this adds the extra ones it opened (returned).
fn open_thread_per_unit(w: &mut W, to: Level) -> usize {
    if to == Level::Turn {
        w.open("for (long long s = 0; s < ctx.n_seqs; ++s) {");
        w.line("const long long g = ctx.seq_group[s];");
        w.open("for (long long k = ctx.turn_off[s] + threadIdx.x; k < ctx.turn_off[s + 1]; k += blockDim.x) {");
        return 1;
    }
    if to == Level::Seq {
        w.open("for (long long s = threadIdx.x; s < ctx.n_seqs; s += blockDim.x) {");
        w.line("const long long g = ctx.seq_group[s];");
    } else {
        w.open("for (long long g = threadIdx.x; g < ctx.n_groups; g += blockDim.x) {");
    }
    0
}

/// Token → turn reduction of sequence `s` (in scope with `g`, `len`): one thread per turn finds
/// the turn's token range by binary search of `tok_turn` (non-decreasing along a sequence) and
/// folds it in order. Reads only stored or inline values.
pub(super) fn turn_reduce(p: &Plan, w: &mut W, h: Handle<Expr>) -> R<()> {
    let m = p.m;
    let Expr::Reduce {
        op, arg, filter, ..
    } = m.exprs[h]
    else {
        return Err(err(m, h, "internal: not a reduction"));
    };
    let n = h.index();
    let v = val(p, &[], arg, Level::Tok)?;
    let fold = format!("{} n += 1.0f;", reduce_fold(op, "acc", &v));
    let fold = match filter {
        Some(f) => format!("if ({}) {{ {fold} }}", val(p, &[], f, Level::Tok)?),
        None => fold,
    };
    w.open("for (long long k = ctx.turn_off[s] + threadIdx.x; k < ctx.turn_off[s + 1]; k += blockDim.x) {");
    w.line("long long lo = 0, hi = len;");
    w.line("while (lo < hi) { const long long mid = (lo + hi) / 2; if (RLO_TURN(RLO_TOK(s, mid)) < k) { lo = mid + 1; } else { hi = mid; } }");
    w.line("const long long t0 = lo;");
    w.line("hi = len;");
    w.line("while (lo < hi) { const long long mid = (lo + hi) / 2; if (RLO_TURN(RLO_TOK(s, mid)) <= k) { lo = mid + 1; } else { hi = mid; } }");
    w.line(&format!("float acc = {}, n = 0.0f;", reduce_init(op)));
    w.open("for (long long t = t0; t < lo; ++t) {");
    w.line("const long long i = RLO_TOK(s, t);");
    w.line(&fold);
    w.close("}");
    w.line(&format!("ctx.v{n}[k] = {};", fin_value(op)));
    w.close("}");
    Ok(())
}

/// A reduction over the sequences of each group (one thread per group, serial) or of the batch
/// (block-cooperative); `body` folds one element into `acc` / `n`.
#[allow(clippy::too_many_arguments)]
fn write_seq_reduce(
    w: &mut W,
    op: ReduceOp,
    to: Level,
    n: usize,
    loops: &[String],
    nc: usize,
    body: &str,
    sc: &str,
) {
    let serial = to == Level::Group;
    w.line(&format!("// e{n}: reduce -> {to}{sc}"));
    if serial {
        w.open("for (long long g = threadIdx.x; g < ctx.n_groups; g += blockDim.x) {");
    } else {
        unit_serial(w, to);
    }
    w.line(&format!("float acc = {}, n = 0.0f;", reduce_init(op)));
    for l in loops {
        w.open(l);
        if !l.ends_with('{') {
            w.indent -= 1;
        }
    }
    w.line(body);
    for _ in 0..nc {
        w.close("}");
    }
    if serial {
        w.line(&format!("ctx.v{n}[g] = {};", fin_value(op)));
    } else {
        block_finish(w, op, &format!("ctx.v{n}[{}]", idx(to)));
    }
    w.close("}");
}

/// The end of a block-cooperative reduction: combine every thread's `acc` (and `n`, the count
/// a max or min needs for its empty case) and let thread 0 store the result to `target`.
fn block_finish(w: &mut W, op: ReduceOp, target: &str) {
    w.line(&format!("acc = {}(acc);", block_fn(op)));
    if op != ReduceOp::Sum {
        w.line("n = rlo_block_sum(n);");
    }
    w.line(&format!(
        "if (threadIdx.x == 0) {{ {target} = {}; }}",
        fin_value(op)
    ));
}

fn write_stmt(p: &Plan, w: &mut W, h: Handle<Expr>) -> R<()> {
    let m = p.m;
    let n = h.index();
    let level = m.level(h);
    let sc = span_comment(p, h);
    match m.exprs[h] {
        Expr::Reduce { op, arg, to, .. } if matches!(p.role[h], Role::Acc { .. }) => {
            // combine the per-sequence partials of a token pass, in sequence order
            let fold = match op {
                ReduceOp::Sum => format!("acc += ctx.q{n}[s];"),
                ReduceOp::Max | ReduceOp::Min => format!(
                    "if (ctx.c{n}[s] > 0.0f) {{ {} n += ctx.c{n}[s]; }}",
                    reduce_fold(op, "acc", &format!("ctx.q{n}[s]"))
                ),
            };
            let _ = arg;
            w.line(&format!("// e{n}: combine per-sequence partials{sc}"));
            if to == Level::Group {
                w.open("for (long long g = threadIdx.x; g < ctx.n_groups; g += blockDim.x) {");
                w.line(&format!("float acc = {}, n = 0.0f;", reduce_init(op)));
                w.open("for (long long m = ctx.group_off[g]; m < ctx.group_off[g + 1]; ++m) {");
                w.line("const long long s = ctx.group_seqs[m];");
                w.line(&fold);
                w.close("}");
                w.line(&format!("ctx.v{n}[g] = {};", fin_value(op)));
                w.close("}");
            } else {
                w.open("{");
                w.line(&format!("float acc = {}, n = 0.0f;", reduce_init(op)));
                w.open("for (long long s = threadIdx.x; s < ctx.n_seqs; s += blockDim.x) {");
                w.line(&fold);
                w.close("}");
                block_finish(w, op, &format!("ctx.v{n}[0]"));
                w.close("}");
            }
        }
        Expr::Reduce {
            op,
            arg,
            to,
            filter,
        } if m.level(arg) == Level::Tok
            && to != Level::Turn
            && m.level(p.canon[arg]) >= Level::Seq
            && filter.is_none_or(|f| m.level(p.canon[f]) >= Level::Seq) =>
        {
            // a per-sequence constant over the tokens (seq_len, num_tokens, filtered by a
            // per-sequence condition): closed form per sequence, no token loop (to a turn it
            // needs the turn's token count: the token loop of the `to: Turn` arm below)
            let c = val(p, &[], arg, Level::Seq)?;
            let live = match filter {
                Some(f) => format!("({} && RLO_LEN(s) > 0)", val(p, &[], f, Level::Seq)?),
                None => "(RLO_LEN(s) > 0)".to_string(),
            };
            let per_seq = match op {
                ReduceOp::Sum => format!("({live} ? {c} * (float)RLO_LEN(s) : 0.0f)"),
                ReduceOp::Max | ReduceOp::Min => format!("({live} ? {c} : 0.0f)"),
            };
            if to == Level::Seq {
                let body = format!("ctx.v{n}[s] = {per_seq};{sc}");
                level_loop(p, w, Level::Seq, &body, false, "");
            } else {
                let (loops, nc) = enum_loops(Level::Seq, to, to != Level::Group)
                    .ok_or_else(|| err(m, h, "unsupported reduction levels"))?;
                let value = match op {
                    ReduceOp::Sum => per_seq,
                    ReduceOp::Max | ReduceOp::Min => c,
                };
                let mut body = format!("{} n += 1.0f;", reduce_fold(op, "acc", &value));
                if op != ReduceOp::Sum {
                    body = format!("if {live} {{ {body} }}");
                }
                write_seq_reduce(w, op, to, n, &loops, nc, &body, &sc);
            }
        }
        Expr::Reduce {
            op,
            to: Level::Turn,
            ..
        } => {
            let _ = op;
            w.line(&format!("// e{n}: reduce tok -> turn{sc}"));
            w.open("for (long long s = 0; s < ctx.n_seqs; ++s) {");
            w.line("const long long g = ctx.seq_group[s];");
            w.line("const long long len = RLO_LEN(s);");
            turn_reduce(p, w, h)?;
            w.close("}");
        }
        Expr::Reduce {
            op,
            arg,
            to,
            filter,
        } => {
            let el = m.level(arg);
            let serial = serial_unit(el, to);
            let (loops, nc) = enum_loops(el, to, !serial)
                .ok_or_else(|| err(m, h, "unsupported reduction levels"))?;
            let v = val(p, &[], arg, el)?;
            let body = format!("{} n += 1.0f;", reduce_fold(op, "acc", &v));
            let body = match filter {
                Some(f) => format!("if ({}) {{ {body} }}", val(p, &[], f, el)?),
                None => body,
            };
            w.line(&format!("// e{n}: reduce {el} -> {to}{sc}"));
            let extra = if serial {
                open_thread_per_unit(w, to)
            } else {
                unit_serial(w, to);
                0
            };
            w.line(&format!("float acc = {}, n = 0.0f;", reduce_init(op)));
            for l in &loops {
                w.open(l);
                if !l.ends_with('{') {
                    w.indent -= 1;
                }
            }
            w.line(&body);
            for _ in 0..nc {
                w.close("}");
            }
            if serial {
                w.line(&format!("ctx.v{n}[{}] = {};", idx(to), fin_value(op)));
            } else {
                block_finish(w, op, &format!("ctx.v{n}[{}]", idx(to)));
            }
            w.close("}");
            for _ in 0..extra {
                w.close("}");
            }
        }
        Expr::Quantile { arg, q, to, filter } => {
            let el = m.level(arg);
            let serial = serial_unit(el, to);
            let (loops, nc) = enum_loops(el, to, !serial)
                .ok_or_else(|| err(m, h, "unsupported quantile levels"))?;
            let v = val(p, &[], arg, el)?;
            let call = match filter {
                Some(f) => format!("if ({}) {{ f({v}); }}", val(p, &[], f, el)?),
                None => format!("f({v});"),
            };
            w.line(&format!("// e{n}: quantile {el} -> {to}{sc}"));
            let extra = if serial {
                open_thread_per_unit(w, to)
            } else {
                unit_serial(w, to);
                0
            };
            let mut each = String::from("auto each = [&](auto&& f) { ");
            for l in &loops {
                each.push_str(l);
                each.push(' ');
            }
            each.push_str(&call);
            for _ in 0..nc {
                each.push_str(" }");
            }
            each.push_str(" };");
            w.line(&each);
            let qv = val(p, &[], q, to)?;
            if serial {
                w.line(&format!(
                    "ctx.v{n}[{}] = rlo_serial_quantile(each, {qv});",
                    idx(to)
                ));
            } else {
                w.line(&format!("const float r = rlo_block_quantile(each, {qv});"));
                w.line(&format!(
                    "if (threadIdx.x == 0) {{ ctx.v{n}[{}] = r; }}",
                    idx(to)
                ));
            }
            w.close("}");
            for _ in 0..extra {
                w.close("}");
            }
        }
        Expr::Scan { .. } => {
            w.line(&format!("// e{n}: scan, one sequence at a time"));
            w.open("for (long long s = 0; s < ctx.n_seqs; ++s) {");
            w.line("const long long g = ctx.seq_group[s];");
            w.line(&scan_call(p, &[], h)?);
            if p.tok_root[h] && p.opts.layout == TokLayout::Padded {
                w.open("for (long long t = RLO_LEN(s) + threadIdx.x; t < ctx.tok_stride; t += blockDim.x) {");
                w.line(&format!("ctx.v{n}[RLO_TOK(s, t)] = 0.0f;"));
                w.close("}");
            }
            w.close("}");
        }
        Expr::Unary { .. }
        | Expr::Binary { .. }
        | Expr::Select { .. }
        | Expr::Rank { .. }
        | Expr::PosReduce { .. } => {
            let e = rhs(p, &[], h, level)?;
            let body = format!("ctx.v{n}[{}] = {};{sc}", idx(level), store_expr(p, h, &e));
            level_loop(p, w, level, &body, p.tok_root[h], &format!("v{n}"));
        }
        Expr::Const(_)
        | Expr::Bool(_)
        | Expr::Param(_)
        | Expr::Input(_)
        | Expr::Index(_)
        | Expr::Broadcast { .. }
        | Expr::Detach { .. } => {
            if !is_inline(&m.exprs[h]) {
                return Err(err(m, h, "internal: alias scheduled as a statement"));
            }
        }
    }
    Ok(())
}
