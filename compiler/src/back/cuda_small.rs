//! The one-block kernels (`_s<k>`, `_p<k>_fin`): one block computes a stage's seq, group and
//! batch values. Each node is placed (`place`): per element of its level by the thread that
//! owns the element (elementwise nodes, and reductions that one thread folds for its unit) in
//! block-strided loops over seqs or groups, one loop per run of such nodes with a barrier after;
//! as a batch value every thread holds in a register (elementwise of such values, and
//! block-cooperative reductions, whose result every thread gets), with no barrier; or as a
//! statement of its own followed by a barrier. Split from `cuda_emit.rs` to keep files small.

use std::collections::{HashMap, HashSet};

use super::*;

/// Elementwise statements, fusable into one loop with their neighbours of the same level.
fn fusable(p: &Plan, h: Handle<Expr>) -> bool {
    matches!(
        p.m.exprs[h],
        Expr::Unary { .. } | Expr::Binary { .. } | Expr::Select { .. }
    ) && !matches!(p.role[h], Role::Acc { .. })
}

/// Where a statement of a one-block kernel runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    /// Per element of this level, by the thread that owns the element: in a run.
    Elem(Level),
    /// A batch value computed by every thread (kernel-scope `const`), no barrier.
    Uniform,
    /// A statement of its own, then a barrier.
    Alone,
}

/// A token reduction that is a closed form per sequence (a per-sequence constant over the
/// tokens: `seq_len`, `num_tokens`, filtered by a per-sequence condition).
fn closed_form(p: &Plan, h: Handle<Expr>) -> bool {
    let m = p.m;
    matches!(m.exprs[h], Expr::Reduce { arg, to, filter, .. }
        if m.level(arg) == Level::Tok
            && to != Level::Turn
            && m.level(p.canon[arg]) >= Level::Seq
            && filter.is_none_or(|f| m.level(p.canon[f]) >= Level::Seq))
}

fn place(p: &Plan, h: Handle<Expr>) -> Place {
    let m = p.m;
    if fusable(p, h) {
        return match m.level(h) {
            Level::Batch => Place::Uniform,
            l @ (Level::Tok | Level::Turn | Level::Seq | Level::Group) => Place::Elem(l),
        };
    }
    let unit = |to: Level, serial: bool| {
        if serial && matches!(to, Level::Seq | Level::Group) {
            Place::Elem(to)
        } else if !serial && to == Level::Batch {
            Place::Uniform
        } else {
            Place::Alone
        }
    };
    if let Expr::Reduce { arg, to, .. } = m.exprs[h] {
        return if matches!(p.role[h], Role::Acc { .. }) {
            unit(to, to == Level::Group)
        } else if to == Level::Turn {
            Place::Alone
        } else if closed_form(p, h) {
            unit(to, to != Level::Batch)
        } else {
            unit(to, serial_unit(m.level(arg), to))
        };
    }
    if let Expr::Quantile { arg, to, .. } = m.exprs[h] {
        if !serial_unit(m.level(arg), to) {
            return unit(to, false);
        }
    }
    // token-walking quantiles, scans, ranks, ...: a statement of its own
    Place::Alone
}

pub(super) fn write_single(p: &Plan, w: &mut W, k: &KernelPlan) -> R<()> {
    open_single(p, w, &k.name);
    // one block over seqs/groups: a few iterations per thread, where unrolling buys nothing and
    // costs ptxas time (grpo's first small kernel: 192 -> 160 ms)
    w.rolled = true;
    // batch values every thread holds (kernel-scope locals `e<n>`)
    let mut known: Vec<Handle<Expr>> = Vec::new();
    let segs = segments(p, &k.nodes);
    for (i, (place, seg)) in segs.iter().enumerate() {
        match *place {
            Place::Uniform => write_uniform(p, w, seg, &mut known)?,
            Place::Elem(level) => write_run(p, w, seg, level, &mut known)?,
            Place::Alone => write_stmt(p, w, seg[0], &known)?,
        }
        // what a run or a statement stored, other threads read after the barrier (none is
        // needed at the end: the next kernel starts after this one, nor after a loop that
        // only folded batch reductions: their results are in every thread's registers)
        let stores = match *place {
            Place::Uniform => false,
            Place::Elem(_) => seg.iter().any(|&h| self::place(p, h) == *place),
            Place::Alone => true,
        };
        if stores && i + 1 < segs.len() {
            w.line("__syncthreads();");
        }
    }
    w.rolled = false;
    w.close("}");
    Ok(())
}

/// The statements of a one-block kernel in segments: batch values every thread computes, a run
/// of per-element nodes of one level, or a statement alone. A greedy topological order: ready
/// batch values first (they cost no barrier), else a new segment starts with the first ready
/// node in arena order and, if it is per-element or a batch reduction of seq or group values,
/// takes every node of that level whose operands in this kernel are done (earlier segments or
/// the run itself) and the batch reductions of that level's values its loop can fold. Arena
/// order alone interleaves levels, and every loop and barrier costs run time (a global round
/// trip) and ptxas time (grpo's first small kernel: 25 barriers in arena order, 3 now).
fn segments(p: &Plan, nodes: &[Handle<Expr>]) -> Vec<(Place, Vec<Handle<Expr>>)> {
    let here: HashSet<Handle<Expr>> = nodes.iter().copied().collect();
    // per node, its operands that are statements of this kernel
    let deps: HashMap<Handle<Expr>, Vec<Handle<Expr>>> = nodes
        .iter()
        .map(|&h| {
            let ops = p.m.exprs[h].operands().into_iter().map(|o| p.canon[o]);
            (h, ops.filter(|c| here.contains(c)).collect())
        })
        .collect();
    let places: HashMap<Handle<Expr>, Place> = nodes.iter().map(|&h| (h, place(p, h))).collect();
    let mut pending: Vec<Handle<Expr>> = nodes.to_vec();
    let mut done: HashSet<Handle<Expr>> = HashSet::new();
    let mut out = Vec::new();
    while !pending.is_empty() {
        // `done` holds earlier segments and the open run (same level, same thread per element)
        let ready = |h: Handle<Expr>, done: &HashSet<Handle<Expr>>| {
            deps[&h].iter().all(|d| done.contains(d))
        };
        // (batch reductions of seq or group values wait to be folded by a run's loop)
        let uniform = pending.iter().position(|&h| {
            places[&h] == Place::Uniform
                && !carried_by(p, h, Level::Seq)
                && !carried_by(p, h, Level::Group)
                && ready(h, &done)
        });
        let Some(first) = uniform.or_else(|| pending.iter().position(|&h| ready(h, &done))) else {
            // cannot happen for an acyclic kernel; keep arena order rather than loop forever
            out.extend(pending.drain(..).map(|h| (places[&h], vec![h])));
            break;
        };
        let head = pending.remove(first);
        let mut seg = vec![head];
        // a batch reduction of seq or group values opens a loop over that level, which the
        // other ready reductions and per-element nodes of the level join
        let place = [Level::Seq, Level::Group]
            .into_iter()
            .find(|&l| carried_by(p, head, l))
            .map_or(places[&head], Place::Elem);
        let mut carried = Vec::new();
        if place == places[&head] {
            done.insert(head);
        } else {
            carried.push(head);
        }
        if let Place::Elem(level) = place {
            // batch reductions of this level's values fold in the run's loop; their values
            // exist after it, so nothing in the run may read them
            while let Some(i) = pending
                .iter()
                .position(|&x| (places[&x] == place || carried_by(p, x, level)) && ready(x, &done))
            {
                let x = pending.remove(i);
                if places[&x] == place {
                    done.insert(x);
                } else {
                    carried.push(x);
                }
                seg.push(x);
            }
        }
        done.extend(carried);
        out.push((place, seg));
    }
    out
}

/// A batch reduction over the elements of `level` (seq or group) that a run's loop over that
/// level can fold: the block-strided loop it would run is the run's own, element for element.
fn carried_by(p: &Plan, h: Handle<Expr>, level: Level) -> bool {
    let Expr::Reduce { arg, to, .. } = p.m.exprs[h] else {
        return false;
    };
    let el = if matches!(p.role[h], Role::Acc { .. }) || closed_form(p, h) {
        Level::Seq
    } else {
        p.m.level(arg)
    };
    to == Level::Batch && el == level && matches!(level, Level::Seq | Level::Group)
}

/// A run: one loop over the elements of `level`, each node's value kept in a register for the
/// nodes after it (an element's operands at this level are computed by the same thread), and
/// batch reductions of these elements folded in the same loop, combined over the block after
/// it (the same fold order and combine as their own loop: the same bits).
fn write_run(
    p: &Plan,
    w: &mut W,
    run: &[Handle<Expr>],
    level: Level,
    known: &mut Vec<Handle<Expr>>,
) -> R<()> {
    let mut locals = known.clone();
    let mut body = Vec::new();
    let mut tails = Vec::new();
    let mut carried = Vec::new();
    for &h in run {
        let n = h.index();
        let sc = span_comment(p, h);
        if carried_by(p, h, level) {
            let f = fold_of(p, h, &locals, true)?;
            let (want, _) = enum_loops(level, Level::Batch, true).unwrap_or_default();
            if f.loops != want {
                return Err(err(
                    p.m,
                    h,
                    "internal: a carried reduction with another loop",
                ));
            }
            w.line(&format!(
                "float acc{n} = {}, n{n} = 0.0f;  // e{n}: folded by the loop below",
                reduce_init(f.op)
            ));
            body.push(format!(
                "{{ float& acc = acc{n}; float& n = n{n}; {} }}",
                f.body
            ));
            carried.push((h, f.op));
            continue;
        }
        if fusable(p, h) {
            let e = rhs(p, &locals, h, level)?;
            body.push(format!("const {} e{n} = {e};{sc}", c_ty(p, h)));
        } else if level == Level::Seq && closed_form(p, h) {
            let v = closed_per_seq(p, h, &locals)?;
            body.push(format!("const float e{n} = {v};{sc}"));
        } else {
            body.extend(serial_fold(p, h, &locals)?);
        }
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
    if let [(h, op)] = carried[..] {
        let n = h.index();
        w.line(&format!(
            "float e{n};  // reduce -> batch{}",
            span_comment(p, h)
        ));
        w.open("{");
        w.line(&format!("float acc = acc{n}, n = n{n};"));
        block_combine(w, op);
        w.line(&format!("e{n} = {};", fin_value(op)));
        w.close("}");
    } else if !carried.is_empty() {
        // every accumulator (and the counts max/min need) combined over the block at once:
        // one round of barriers, the same order of operations as one at a time
        // arrays named after the first value: several runs share the kernel's scope
        let id = carried.first().map_or(0, |(h, _)| h.index());
        let (mut vals, mut ops) = (Vec::new(), Vec::new());
        for &(h, op) in &carried {
            vals.push(format!("acc{}", h.index()));
            ops.push(reduce_code(op));
            if op != ReduceOp::Sum {
                vals.push(format!("n{}", h.index()));
                ops.push(reduce_code(ReduceOp::Sum));
            }
        }
        w.line(&format!(
            "float rv{id}[{}] = {{{}}};",
            vals.len(),
            vals.join(", ")
        ));
        w.line(&format!(
            "const unsigned char ro{id}[{}] = {{{}}};",
            ops.len(),
            ops.join(", ")
        ));
        // RLO_REDUCE_N_MAX values a call
        for c in (0..vals.len()).step_by(REDUCE_N_MAX) {
            let k = REDUCE_N_MAX.min(vals.len() - c);
            w.line(&format!(
                "rlo_block_reduce_n(rv{id} + {c}, ro{id} + {c}, {k});"
            ));
        }
        let mut j = 0;
        for &(h, op) in &carried {
            let n = h.index();
            let fin = match op {
                ReduceOp::Sum => format!("rv{id}[{j}]"),
                ReduceOp::Max | ReduceOp::Min => {
                    format!("(rv{id}[{}] > 0.0f ? rv{id}[{j}] : 0.0f)", j + 1)
                }
            };
            j += if op == ReduceOp::Sum { 1 } else { 2 };
            w.line(&format!(
                "const float e{n} = {fin};  // reduce -> batch{}",
                span_comment(p, h)
            ));
        }
    }
    for &(h, _) in &carried {
        let n = h.index();
        w.line(&format!("if (threadIdx.x == 0) {{ ctx.v{n}[0] = e{n}; }}"));
        known.push(h);
    }
    Ok(())
}

/// `RLO_REDUCE_N_MAX` of `rlo_common.cuh`: values one `rlo_block_reduce_n` call combines.
const REDUCE_N_MAX: usize = 64;

/// The operation code of `rlo_block_reduce_n`.
fn reduce_code(op: ReduceOp) -> &'static str {
    match op {
        ReduceOp::Sum => "0",
        ReduceOp::Max => "1",
        ReduceOp::Min => "2",
    }
}

/// A reduction folded by the thread that owns its unit, as run body lines defining `e<n>`.
fn serial_fold(p: &Plan, h: Handle<Expr>, known: &[Handle<Expr>]) -> R<Vec<String>> {
    let n = h.index();
    let f = fold_of(p, h, known, false)?;
    let mut lines = vec![
        format!("float e{n};{}", span_comment(p, h)),
        "{".to_string(),
        format!("float acc = {}, n = 0.0f;", reduce_init(f.op)),
    ];
    for l in &f.loops {
        if l.starts_with("for (") {
            lines.push("#pragma unroll 1".to_string());
        }
        lines.push(l.clone());
    }
    lines.push(f.body);
    lines.extend((0..f.scopes).map(|_| "}".to_string()));
    lines.push(format!("e{n} = {};", fin_value(f.op)));
    lines.push("}".to_string());
    Ok(lines)
}

/// Batch values every thread computes: elementwise ones as kernel-scope constants, reductions
/// and quantiles block-cooperatively (each thread gets the result); thread 0 stores them for
/// later kernels. No barrier: readers in this kernel use the registers.
fn write_uniform(
    p: &Plan,
    w: &mut W,
    seg: &[Handle<Expr>],
    known: &mut Vec<Handle<Expr>>,
) -> R<()> {
    for &h in seg {
        let n = h.index();
        let sc = span_comment(p, h);
        if let Expr::Quantile { arg, q, filter, .. } = p.m.exprs[h] {
            w.line(&format!("float e{n};  // quantile -> batch{sc}"));
            w.open("{");
            let each = quantile_each(p, arg, filter, Level::Batch, known, true)?;
            w.line(&each);
            let qv = val(p, known, q, Level::Batch)?;
            w.line(&format!("e{n} = rlo_block_quantile(each, {qv});"));
            w.close("}");
        } else if let Expr::Reduce { .. } = p.m.exprs[h] {
            let f = fold_of(p, h, known, true)?;
            w.line(&format!("float e{n};  // reduce -> batch{sc}"));
            w.open("{");
            write_fold(w, &f);
            block_combine(w, f.op);
            w.line(&format!("e{n} = {};", fin_value(f.op)));
            w.close("}");
        } else {
            // elementwise
            let e = rhs(p, known, h, Level::Batch)?;
            w.line(&format!("const {} e{n} = {e};{sc}", c_ty(p, h)));
        }
        w.line(&format!(
            "if (threadIdx.x == 0) {{ ctx.v{n}[0] = {}; }}",
            store_expr(p, h, &format!("e{n}"))
        ));
        known.push(h);
    }
    Ok(())
}

/// How a reduction folds one unit of its target level: the loops over the unit's elements
/// (`strided`: shared by the block's threads), the fold of one element into `acc` / `n`.
struct Fold {
    op: ReduceOp,
    loops: Vec<String>,
    scopes: usize,
    body: String,
}

fn fold_of(p: &Plan, h: Handle<Expr>, known: &[Handle<Expr>], strided: bool) -> R<Fold> {
    let m = p.m;
    let n = h.index();
    let Expr::Reduce {
        op,
        arg,
        to,
        filter,
    } = m.exprs[h]
    else {
        return Err(err(m, h, "internal: not a reduction"));
    };
    let levels = |el: Level| {
        enum_loops(el, to, strided).ok_or_else(|| err(m, h, "unsupported reduction levels"))
    };
    if matches!(p.role[h], Role::Acc { .. }) {
        // combine the per-sequence partials of a token pass, in sequence order
        let (loops, scopes) = levels(Level::Seq)?;
        let body = match op {
            ReduceOp::Sum => format!("acc += ctx.q{n}[s];"),
            ReduceOp::Max | ReduceOp::Min => format!(
                "if (ctx.c{n}[s] > 0.0f) {{ {} n += ctx.c{n}[s]; }}",
                reduce_fold(op, "acc", &format!("ctx.q{n}[s]"))
            ),
        };
        return Ok(Fold {
            op,
            loops,
            scopes,
            body,
        });
    }
    if closed_form(p, h) {
        // per sequence in closed form, folded over the unit's sequences
        let (loops, scopes) = levels(Level::Seq)?;
        let value = match op {
            ReduceOp::Sum => closed_per_seq(p, h, known)?,
            ReduceOp::Max | ReduceOp::Min => val(p, known, arg, Level::Seq)?,
        };
        let mut body = format!("{} n += 1.0f;", reduce_fold(op, "acc", &value));
        if op != ReduceOp::Sum {
            body = format!("if {} {{ {body} }}", live_seq(p, filter, known)?);
        }
        return Ok(Fold {
            op,
            loops,
            scopes,
            body,
        });
    }
    let el = m.level(arg);
    let (loops, scopes) = levels(el)?;
    let v = val(p, known, arg, el)?;
    let body = format!("{} n += 1.0f;", reduce_fold(op, "acc", &v));
    let body = match filter {
        Some(f) => format!("if ({}) {{ {body} }}", val(p, known, f, el)?),
        None => body,
    };
    Ok(Fold {
        op,
        loops,
        scopes,
        body,
    })
}

/// Whether sequence `s` takes part in a closed-form token reduction (non-empty, and its
/// per-sequence filter).
fn live_seq(p: &Plan, filter: Option<Handle<Expr>>, known: &[Handle<Expr>]) -> R<String> {
    Ok(match filter {
        Some(f) => format!("({} && RLO_LEN(s) > 0)", val(p, known, f, Level::Seq)?),
        None => "(RLO_LEN(s) > 0)".to_string(),
    })
}

/// A closed-form token reduction's value for sequence `s`.
fn closed_per_seq(p: &Plan, h: Handle<Expr>, known: &[Handle<Expr>]) -> R<String> {
    let Expr::Reduce {
        op, arg, filter, ..
    } = p.m.exprs[h]
    else {
        return Err(err(p.m, h, "internal: a closed form of a non-reduction"));
    };
    let c = val(p, known, arg, Level::Seq)?;
    let live = live_seq(p, filter, known)?;
    Ok(match op {
        ReduceOp::Sum => format!("({live} ? {c} * (float)RLO_LEN(s) : 0.0f)"),
        ReduceOp::Max | ReduceOp::Min => format!("({live} ? {c} : 0.0f)"),
    })
}

/// `float acc, n` and the loops folding one unit into them.
fn write_fold(w: &mut W, f: &Fold) {
    w.line(&format!("float acc = {}, n = 0.0f;", reduce_init(f.op)));
    for l in &f.loops {
        w.open(l);
        if !l.ends_with('{') {
            w.indent -= 1;
        }
    }
    w.line(&f.body);
    for _ in 0..f.scopes {
        w.close("}");
    }
}

/// Every thread's `acc` (and `n`, the count a max or min needs for its empty case) combined
/// over the block; every thread gets the result.
fn block_combine(w: &mut W, op: ReduceOp) {
    w.line(&format!("acc = {}(acc);", block_fn(op)));
    if op != ReduceOp::Sum {
        w.line("n = rlo_block_sum(n);");
    }
}

/// `auto each = [&](auto&& f) { … f(value); … };` visiting a quantile's elements in one unit.
pub(super) fn quantile_each(
    p: &Plan,
    arg: Handle<Expr>,
    filter: Option<Handle<Expr>>,
    to: Level,
    known: &[Handle<Expr>],
    strided: bool,
) -> R<String> {
    let m = p.m;
    let el = m.level(arg);
    let (loops, nc) =
        enum_loops(el, to, strided).ok_or_else(|| err(m, arg, "unsupported quantile levels"))?;
    let v = val(p, known, arg, el)?;
    let call = match filter {
        Some(f) => format!("if ({}) {{ f({v}); }}", val(p, known, f, el)?),
        None => format!("f({v});"),
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
    Ok(each)
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
/// folds it in order. Reads stored, inline and `known` (kernel-scope) values.
pub(super) fn turn_reduce(p: &Plan, w: &mut W, h: Handle<Expr>, known: &[Handle<Expr>]) -> R<()> {
    let m = p.m;
    let Expr::Reduce {
        op, arg, filter, ..
    } = m.exprs[h]
    else {
        return Err(err(m, h, "internal: not a reduction"));
    };
    let n = h.index();
    let v = val(p, known, arg, Level::Tok)?;
    let fold = format!("{} n += 1.0f;", reduce_fold(op, "acc", &v));
    let fold = match filter {
        Some(f) => format!("if ({}) {{ {fold} }}", val(p, known, f, Level::Tok)?),
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

/// A statement alone (followed by a barrier): reductions block-cooperative per unit, turn
/// reductions, serial quantiles, scans, ranks, position reductions, token-level values.
fn write_stmt(p: &Plan, w: &mut W, h: Handle<Expr>, known: &[Handle<Expr>]) -> R<()> {
    let m = p.m;
    let n = h.index();
    let level = m.level(h);
    let sc = span_comment(p, h);
    match m.exprs[h] {
        Expr::Reduce {
            to: Level::Turn, ..
        } => {
            w.line(&format!("// e{n}: reduce tok -> turn{sc}"));
            w.open("for (long long s = 0; s < ctx.n_seqs; ++s) {");
            w.line("const long long g = ctx.seq_group[s];");
            w.line("const long long len = RLO_LEN(s);");
            turn_reduce(p, w, h, known)?;
            w.close("}");
        }
        Expr::Reduce { arg, to, .. } => {
            // what `place` leaves alone: one unit at a time, each folded by the whole block
            // (a serial one here would be in a run)
            let el = m.level(arg);
            if serial_unit(el, to) {
                return Err(err(m, h, "internal: a serial reduction placed alone"));
            }
            let f = fold_of(p, h, known, true)?;
            w.line(&format!("// e{n}: reduce {el} -> {to}{sc}"));
            unit_serial(w, to);
            write_fold(w, &f);
            block_combine(w, f.op);
            w.line(&format!(
                "if (threadIdx.x == 0) {{ ctx.v{n}[{}] = {}; }}",
                idx(to),
                fin_value(f.op)
            ));
            w.close("}");
        }
        Expr::Quantile { arg, q, to, filter } => {
            let el = m.level(arg);
            let serial = serial_unit(el, to);
            w.line(&format!("// e{n}: quantile {el} -> {to}{sc}"));
            let extra = if serial {
                open_thread_per_unit(w, to)
            } else {
                unit_serial(w, to);
                0
            };
            w.line(&quantile_each(p, arg, filter, to, known, !serial)?);
            let qv = val(p, known, q, to)?;
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
            w.line(&scan_call(p, known, h)?);
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
            let e = rhs(p, known, h, level)?;
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
