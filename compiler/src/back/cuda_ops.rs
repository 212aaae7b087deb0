//! The op → C table and the loop shapes: the C expression of each node's value (`val`, `rhs`), its
//! storage type, reduction folds, level loops (`enum_loops`, `level_loop`) and the scan calls.
//! Split from `cuda_emit.rs` to keep files small.

use super::*;

/// The C expression of `h`'s value at the current element of `frame`.
pub(super) fn val(p: &Plan, locals: &[Handle<Expr>], h: Handle<Expr>, frame: Level) -> R<String> {
    let m = p.m;
    let c = p.canon[h];
    let level = m.level(c);
    if frame > level {
        return Err(err(m, h, "internal: value read below its level"));
    }
    let load = |base: String, dtype: DType| match dtype {
        DType::Bool => format!("({base} != 0.0f)"),
        DType::F32 => base,
    };
    Ok(match m.exprs[c] {
        Expr::Const(x) => f32_lit(x),
        Expr::Bool(b) => if b { "true" } else { "false" }.to_string(),
        Expr::Param(i) => format!("p{i}"),
        Expr::Input(i) => load(
            format!("rlo_ld(ctx.in{i}, {})", idx_in(level, frame)),
            m.ty(c).dtype,
        ),
        Expr::Index(IndexKind::Pos) => "((float)t)".to_string(),
        Expr::Index(IndexKind::TurnIndex) => format!(
            "((float)({} - (long long)ctx.turn_off[s]))",
            idx_in(Level::Turn, frame)
        ),
        Expr::Unary { .. }
        | Expr::Binary { .. }
        | Expr::Select { .. }
        | Expr::Broadcast { .. }
        | Expr::Reduce { .. }
        | Expr::Scan { .. }
        | Expr::Rank { .. }
        | Expr::Quantile { .. }
        | Expr::PosReduce { .. }
        | Expr::Detach { .. } => {
            if locals.contains(&c) {
                format!("e{}", c.index())
            } else if p.stored[c] {
                load(
                    format!("ctx.v{}[{}]", c.index(), idx_in(level, frame)),
                    m.ty(c).dtype,
                )
            } else {
                return Err(err(m, h, "internal: value not available in this kernel"));
            }
        }
    })
}

pub(super) fn c_ty(p: &Plan, h: Handle<Expr>) -> &'static str {
    if dtype_is_bool(p.m, h) {
        "bool"
    } else {
        "float"
    }
}

pub(super) fn store_expr(p: &Plan, h: Handle<Expr>, v: &str) -> String {
    if dtype_is_bool(p.m, h) {
        format!("rlo_b2f({v})")
    } else {
        v.to_string()
    }
}

pub(super) fn reduce_init(op: ReduceOp) -> &'static str {
    match op {
        ReduceOp::Sum => "0.0f",
        ReduceOp::Max => "(-RLO_INF)",
        ReduceOp::Min => "RLO_INF",
    }
}

pub(super) fn reduce_fold(op: ReduceOp, acc: &str, v: &str) -> String {
    match op {
        ReduceOp::Sum => format!("{acc} += {v};"),
        ReduceOp::Max => format!("{acc} = fmaxf({acc}, {v});"),
        ReduceOp::Min => format!("{acc} = fminf({acc}, {v});"),
    }
}

pub(super) fn block_fn(op: ReduceOp) -> &'static str {
    match op {
        ReduceOp::Sum => "rlo_block_sum",
        ReduceOp::Max => "rlo_block_max",
        ReduceOp::Min => "rlo_block_min",
    }
}

/// The loops that visit every element of level `elem` inside the current element of `unit`
/// (whose coordinates are in scope), defining `s`, `g`, `t`, `i` as needed. `strided`: the
/// innermost loop is shared by the block's threads. Returns (lines, scopes to close).
pub(super) fn enum_loops(elem: Level, unit: Level, strided: bool) -> Option<(Vec<String>, usize)> {
    let (b, st) = if strided {
        ("threadIdx.x", "blockDim.x")
    } else {
        ("0", "1")
    };
    let tok = |start: &str, step: &str| {
        vec![
            format!("for (long long t = {start}; t < RLO_LEN(s); t += {step}) {{"),
            "const long long i = RLO_TOK(s, t);".to_string(),
        ]
    };
    let v: (Vec<String>, usize) = match (elem, unit) {
        (Level::Tok, Level::Seq) => (tok(b, st), 1),
        (Level::Tok, Level::Group) => {
            let mut l = vec![
                "for (long long m = ctx.group_off[g]; m < ctx.group_off[g + 1]; ++m) {".to_string(),
                "const long long s = ctx.group_seqs[m];".to_string(),
            ];
            l.extend(tok(b, st));
            (l, 2)
        }
        (Level::Tok, Level::Batch) => {
            let mut l = vec![
                "for (long long s = 0; s < ctx.n_seqs; ++s) {".to_string(),
                "const long long g = ctx.seq_group[s];".to_string(),
            ];
            l.extend(tok(b, st));
            (l, 2)
        }
        (Level::Tok, Level::Turn) => {
            let mut l = tok(b, st);
            l.push("if (RLO_TURN(i) == k) {".to_string());
            (l, 2)
        }
        (Level::Turn, Level::Seq) => (
            vec![format!(
                "for (long long k = ctx.turn_off[s] + {b}; k < ctx.turn_off[s + 1]; k += {st}) {{"
            )],
            1,
        ),
        (Level::Turn, Level::Group) => (
            vec![
                "for (long long m = ctx.group_off[g]; m < ctx.group_off[g + 1]; ++m) {".to_string(),
                "const long long s = ctx.group_seqs[m];".to_string(),
                format!(
                    "for (long long k = ctx.turn_off[s] + {b}; k < ctx.turn_off[s + 1]; k += {st}) {{"
                ),
            ],
            2,
        ),
        (Level::Turn, Level::Batch) => (
            vec![
                "for (long long s = 0; s < ctx.n_seqs; ++s) {".to_string(),
                "const long long g = ctx.seq_group[s];".to_string(),
                format!(
                    "for (long long k = ctx.turn_off[s] + {b}; k < ctx.turn_off[s + 1]; k += {st}) {{"
                ),
            ],
            2,
        ),
        (Level::Seq, Level::Group) => (
            vec![
                format!("for (long long m = ctx.group_off[g] + {b}; m < ctx.group_off[g + 1]; m += {st}) {{"),
                "const long long s = ctx.group_seqs[m];".to_string(),
            ],
            1,
        ),
        (Level::Seq, Level::Batch) => (
            vec![
                format!("for (long long s = {b}; s < ctx.n_seqs; s += {st}) {{"),
                "const long long g = ctx.seq_group[s];".to_string(),
            ],
            1,
        ),
        (Level::Group, Level::Batch) => (
            vec![format!("for (long long g = {b}; g < ctx.n_groups; g += {st}) {{")],
            1,
        ),
        _ => return None,
    };
    Some(v)
}

/// A loop over the units of `unit`, one at a time (for block-cooperative work per unit).
pub(super) fn unit_serial(w: &mut W, unit: Level) {
    match unit {
        Level::Seq => {
            w.open("for (long long s = 0; s < ctx.n_seqs; ++s) {");
            w.line("const long long g = ctx.seq_group[s];");
        }
        Level::Group => w.open("for (long long g = 0; g < ctx.n_groups; ++g) {"),
        Level::Batch | Level::Tok | Level::Turn => w.open("{"),
    }
}

/// A block-strided loop over the elements of `level` with `body` inside; token loops zero-fill
/// the padding of root buffer `name` when `tail`.
pub(super) fn level_loop(p: &Plan, w: &mut W, level: Level, body: &str, tail: bool, name: &str) {
    let tails = if tail {
        vec![name.to_string()]
    } else {
        Vec::new()
    };
    level_loop_lines(p, w, level, &[body.to_string()], &tails);
}

/// [`level_loop`] with several body lines and the root buffers whose padding is zero-filled.
pub(super) fn level_loop_lines(
    p: &Plan,
    w: &mut W,
    level: Level,
    body: &[String],
    tails: &[String],
) {
    match level {
        Level::Turn => {
            w.open("for (long long s = 0; s < ctx.n_seqs; ++s) {");
            w.line("const long long g = ctx.seq_group[s];");
            w.open("for (long long k = ctx.turn_off[s] + threadIdx.x; k < ctx.turn_off[s + 1]; k += blockDim.x) {");
            for l in body {
                w.line(l);
            }
            w.close("}");
            w.close("}");
        }
        Level::Tok => {
            w.open("for (long long s = 0; s < ctx.n_seqs; ++s) {");
            w.line("const long long g = ctx.seq_group[s];");
            w.open("for (long long t = threadIdx.x; t < RLO_LEN(s); t += blockDim.x) {");
            w.line("const long long i = RLO_TOK(s, t);");
            for l in body {
                w.line(l);
            }
            w.close("}");
            if !tails.is_empty() && p.opts.layout == TokLayout::Padded {
                w.open("for (long long t = RLO_LEN(s) + threadIdx.x; t < ctx.tok_stride; t += blockDim.x) {");
                for name in tails {
                    w.line(&format!("ctx.{name}[RLO_TOK(s, t)] = 0.0f;"));
                }
                w.close("}");
            }
            w.close("}");
        }
        Level::Seq => {
            w.open("for (long long s = threadIdx.x; s < ctx.n_seqs; s += blockDim.x) {");
            w.line("const long long g = ctx.seq_group[s];");
            for l in body {
                w.line(l);
            }
            w.close("}");
        }
        Level::Group => {
            w.open("for (long long g = threadIdx.x; g < ctx.n_groups; g += blockDim.x) {");
            for l in body {
                w.line(l);
            }
            w.close("}");
        }
        Level::Batch => {
            w.open("if (threadIdx.x == 0) {");
            for l in body {
                w.line(l);
            }
            w.close("}");
        }
    }
}

/// The C expression computing an elementwise node (or a per-element Rank / PosReduce).
pub(super) fn rhs(p: &Plan, locals: &[Handle<Expr>], h: Handle<Expr>, frame: Level) -> R<String> {
    let m = p.m;
    let v = |x: Handle<Expr>| val(p, locals, x, frame);
    // other elements' values (ranks, position reductions): the locals that are the same for
    // every element (batch values), never the current element's own
    let uniform: Vec<Handle<Expr>> = locals
        .iter()
        .copied()
        .filter(|&x| m.level(x) == Level::Batch)
        .collect();
    Ok(match m.exprs[h] {
        Expr::Unary { op, arg } => {
            let a = v(arg)?;
            match op {
                UnaryOp::Neg => format!("(-{a})"),
                UnaryOp::Not => format!("(!{a})"),
                UnaryOp::ToF32 => format!("rlo_b2f({a})"),
                UnaryOp::Exp => format!("expf({a})"),
                UnaryOp::Log => format!("logf({a})"),
                UnaryOp::Log1p => format!("log1pf({a})"),
                UnaryOp::Expm1 => format!("expm1f({a})"),
                UnaryOp::Lgamma => format!("lgammaf({a})"),
                UnaryOp::Digamma => format!("rlo_digamma({a})"),
                UnaryOp::Sqrt => format!("sqrtf({a})"),
                UnaryOp::Abs => format!("fabsf({a})"),
                UnaryOp::Sigmoid => format!("rlo_sigmoid({a})"),
                UnaryOp::Softplus => format!("rlo_softplus({a})"),
                UnaryOp::Tanh => format!("tanhf({a})"),
                UnaryOp::Floor => format!("floorf({a})"),
                UnaryOp::Ceil => format!("ceilf({a})"),
                // ties to even, like torch.round (in the default rounding mode)
                UnaryOp::Round => format!("rintf({a})"),
            }
        }
        Expr::Binary { op, lhs, rhs } => {
            let (a, b) = (v(lhs)?, v(rhs)?);
            let infix = |o: &str| format!("({a} {o} {b})");
            match op {
                BinaryOp::Add => infix("+"),
                BinaryOp::Sub => infix("-"),
                BinaryOp::Mul => infix("*"),
                BinaryOp::Div => infix("/"),
                BinaryOp::Pow => format!("powf({a}, {b})"),
                BinaryOp::Min => format!("fminf({a}, {b})"),
                BinaryOp::Max => format!("fmaxf({a}, {b})"),
                BinaryOp::Lt => infix("<"),
                BinaryOp::Le => infix("<="),
                BinaryOp::Gt => infix(">"),
                BinaryOp::Ge => infix(">="),
                BinaryOp::Eq => infix("=="),
                BinaryOp::Ne => infix("!="),
                BinaryOp::And => infix("&&"),
                BinaryOp::Or => infix("||"),
            }
        }
        Expr::Select {
            cond,
            on_true,
            on_false,
        } => format!("({} ? {} : {})", v(cond)?, v(on_true)?, v(on_false)?),
        Expr::Rank { arg, within } => {
            let level = m.level(arg);
            let (loops, n) = enum_loops(level, within, false)
                .ok_or_else(|| err(m, h, "unsupported rank levels"))?;
            let mut s = format!(
                "([&]() -> float {{ const float x0 = {}; const long long j0 = {}; float r = 0.0f; ",
                v(arg)?,
                idx(level)
            );
            if within == Level::Turn {
                s.push_str("const long long k = RLO_TURN(i); ");
            }
            for l in loops {
                s.push_str(&l);
                s.push(' ');
            }
            s.push_str(&format!(
                "const float y = {}; if (rlo_before(y, x0) || (rlo_same(y, x0) && {} < j0)) {{ r += 1.0f; }} ",
                val(p, &uniform, arg, level)?,
                idx(level)
            ));
            for _ in 0..n {
                s.push_str("} ");
            }
            s.push_str("return r; })()");
            s
        }
        Expr::PosReduce { op, arg } => {
            let fold = reduce_fold(op, "acc", &val(p, &uniform, arg, Level::Tok)?);
            format!(
                "([&]() -> float {{ float acc = {}; for (long long m = ctx.group_off[g]; m < ctx.group_off[g + 1]; ++m) {{ const long long s = ctx.group_seqs[m]; if (t < RLO_LEN(s)) {{ const long long i = RLO_TOK(s, t); {fold} }} }} return acc; }})()",
                reduce_init(op)
            )
        }
        Expr::Const(_)
        | Expr::Bool(_)
        | Expr::Param(_)
        | Expr::Input(_)
        | Expr::Index(_)
        | Expr::Broadcast { .. }
        | Expr::Detach { .. } => v(h)?,
        Expr::Reduce { .. } | Expr::Scan { .. } | Expr::Quantile { .. } => {
            return Err(err(m, h, "internal: collective node used as an expression"))
        }
    })
}

pub(super) fn scan_call(p: &Plan, locals: &[Handle<Expr>], h: Handle<Expr>) -> R<String> {
    let m = p.m;
    let Expr::Scan { op, arg, discount } = m.exprs[h] else {
        return Err(err(m, h, "internal: not a scan"));
    };
    let kind = match op {
        ScanOp::CumSum => "RLO_SCAN_CUMSUM",
        ScanOp::RevCumSum => "RLO_SCAN_REVCUMSUM",
        ScanOp::DiscountedRevCumSum => "RLO_SCAN_DISCOUNTED",
        ScanOp::DiscountedCumSum => "RLO_SCAN_DISCOUNTED_FWD",
        ScanOp::Next => "RLO_SCAN_NEXT",
        ScanOp::Prev => "RLO_SCAN_PREV",
    };
    if m.level(arg) == Level::Turn {
        // over the turns of sequence s: position t is turn turn_off[s] + t
        let x = val(p, locals, arg, Level::Turn)?;
        let d = match discount {
            Some(d) => val(p, locals, d, Level::Turn)?,
            None => "0.0f".to_string(),
        };
        return Ok(format!(
            "rlo_seq_scan({kind}, (long long)(ctx.turn_off[s + 1] - ctx.turn_off[s]), [&](long long t) -> float {{ const long long k = ctx.turn_off[s] + t; return {x}; }}, [&](long long t) -> float {{ const long long k = ctx.turn_off[s] + t; (void)k; return {d}; }}, [&](long long t, float y) {{ ctx.v{}[ctx.turn_off[s] + t] = y; }});{}",
            h.index(),
            span_comment(p, h)
        ));
    }
    // an inline scan recomputes its argument in the load (`Plan::scan_inline`)
    let inline = match (p.role[h], &p.recompute[h]) {
        (Role::Tok { kernel, .. }, Some(cone)) if p.scan_inline(h) => Some((cone, kernel)),
        (
            Role::None
            | Role::Tok { .. }
            | Role::Acc { .. }
            | Role::SeqLocal { .. }
            | Role::Stmt { .. },
            _,
        ) => None,
    };
    let load = if let Some((cone, kernel)) = inline {
        super::cone_lambda(p, locals, cone, arg, kernel)?
    } else {
        let x = val(p, locals, arg, Level::Tok)?;
        format!("[&](long long t) -> float {{ const long long i = RLO_TOK(s, t); return {x}; }}")
    };
    let d = match discount {
        Some(d) => val(p, locals, d, Level::Tok)?,
        None => "0.0f".to_string(),
    };
    Ok(format!(
        "rlo_seq_scan({kind}, RLO_LEN(s), {load}, [&](long long t) -> float {{ const long long i = RLO_TOK(s, t); (void)i; return {d}; }}, [&](long long t, float y) {{ ctx.v{}[RLO_TOK(s, t)] = y; }});{}",
        h.index(),
        span_comment(p, h)
    ))
}

/// Writes `x` as a C float literal.
pub(super) fn f32_lit(x: f64) -> String {
    let f = x as f32;
    if f.is_nan() {
        "RLO_NAN".into()
    } else if f.is_infinite() {
        if f > 0.0 {
            "RLO_INF".into()
        } else {
            "(-RLO_INF)".into()
        }
    } else {
        let mut s = format!("{f:?}");
        if !s.contains('.') && !s.contains('e') && !s.contains("inf") {
            s.push_str(".0");
        }
        if f < 0.0 {
            format!("({s}f)")
        } else {
            format!("{s}f")
        }
    }
}

pub(super) fn dtype_is_bool(m: &crate::ir::Module, h: Handle<Expr>) -> bool {
    m.ty(h).dtype == DType::Bool
}
