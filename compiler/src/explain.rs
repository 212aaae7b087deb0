//! `rloc explain`: for every `diff` input, the gradient each element receives as a readable infix
//! formula (levels implicit as in the language: broadcasts are not written, reductions are named
//! by the level they produce), with shared subexpressions named `t1, t2, …`, and the
//! normalizers — the structural values (counts, lengths) the gradient is scaled by.

// A printer: a new primitive falls back to its generic form, so defaults are wanted here.
#![allow(clippy::wildcard_enum_match_arm)]

use crate::arena::Handle;
use crate::ir::{BinaryOp, Expr, IndexKind, Module, ReduceOp, ScanOp, UnaryOp};
use crate::types::Level;
use crate::{autodiff, passes, Compiled};
use std::collections::BTreeMap;
use std::fmt::Write;

/// The explanation of a compiled objective: [`explain`] of its gradient IR simplified without
/// broadcast sinking and sum factoring. Those two change where and in which order values are
/// computed, not what they are; without them the coarse coefficients of the gradient stay
/// separate broadcasts, which is what finds the normalizers and keeps the formulas as autodiff
/// wrote them.
pub fn explain_compiled(c: &Compiled) -> String {
    let m = autodiff::differentiate(c.forward.clone());
    explain(&passes::simplify_with(m, passes::SimplifyOptions::BASIC))
}

/// The explanation of every gradient of `m` (a module after autodiff).
pub fn explain(m: &Module) -> String {
    let mut out = String::new();
    if m.grads.is_empty() {
        let _ = writeln!(out, "objective {} has no diff input", m.name);
        return out;
    }
    let st = layout_only(m);
    for g in &m.grads {
        let Some(inp) = m.inputs.get(g.input as usize) else {
            continue;
        };
        let mut p = Printer::new(m, g.value);
        let formula = p.expr(g.value, 0);
        let _ = writeln!(
            out,
            "d loss / d {}  ({} level: one value per {})",
            inp.name, inp.ty.level, inp.ty.level
        );
        for (name, text) in &p.lets {
            let _ = writeln!(out, "  let {name} = {text}");
        }
        let _ = writeln!(out, "  = {formula}");
        let mut norms = Vec::new();
        collect_normalizers(m, g.value, &st, &mut norms, &mut vec![false; m.exprs.len()]);
        for h in norms {
            let mut p = Printer::new(m, h);
            let text = p.expr(h, 0);
            let _ = writeln!(out, "  normalizer ({}): {text}", m.level(h));
        }
    }
    out
}

/// Nodes computed from the layout alone (no input) that involve a count: the normalizers.
fn layout_only(m: &Module) -> Vec<bool> {
    let mut no_input: Vec<bool> = Vec::with_capacity(m.exprs.len());
    let mut count: Vec<bool> = Vec::with_capacity(m.exprs.len());
    for (_, e) in m.exprs.iter() {
        let ops = e.operands();
        let all = |v: &[bool]| {
            ops.iter()
                .all(|o| v.get(o.index()).copied().unwrap_or(false))
        };
        let any = |v: &[bool]| {
            ops.iter()
                .any(|o| v.get(o.index()).copied().unwrap_or(false))
        };
        no_input.push(!matches!(e, Expr::Input(_)) && all(&no_input));
        let is_count = matches!(*e, Expr::Reduce { op: ReduceOp::Sum, arg, .. } if is_one(m, arg));
        count.push(is_count || any(&count));
    }
    no_input.iter().zip(&count).map(|(a, b)| *a && *b).collect()
}

/// Structural, non-literal values broadcast into the gradient (counts, lengths and their
/// combinations).
fn collect_normalizers(
    m: &Module,
    h: Handle<Expr>,
    st: &[bool],
    out: &mut Vec<Handle<Expr>>,
    seen: &mut Vec<bool>,
) {
    if seen.get(h.index()).copied().unwrap_or(true) {
        return;
    }
    if let Some(x) = seen.get_mut(h.index()) {
        *x = true;
    }
    let Some(e) = m.exprs.get(h) else { return };
    if let Expr::Broadcast { arg, .. } = *e {
        let lit = matches!(m.exprs.get(arg), Some(Expr::Const(_) | Expr::Bool(_)));
        if st.get(arg.index()).copied().unwrap_or(false) && !lit {
            if !out.contains(&arg) {
                out.push(arg);
            }
            return;
        }
    }
    for o in e.operands() {
        collect_normalizers(m, o, st, out, seen);
    }
}

struct Printer<'a> {
    m: &'a Module,
    uses: Vec<u32>,
    names: BTreeMap<Handle<Expr>, String>,
    lets: Vec<(String, String)>,
}

impl<'a> Printer<'a> {
    fn new(m: &'a Module, root: Handle<Expr>) -> Printer<'a> {
        let mut uses = vec![0u32; m.exprs.len()];
        let mut stack = vec![root];
        let mut seen = vec![false; m.exprs.len()];
        while let Some(h) = stack.pop() {
            match seen.get_mut(h.index()) {
                Some(s) if !*s => *s = true,
                _ => continue,
            }
            for o in m.exprs.get(h).map(Expr::operands).unwrap_or_default() {
                if let Some(u) = uses.get_mut(o.index()) {
                    *u += 1;
                }
                stack.push(o);
            }
        }
        let mut names = BTreeMap::new();
        for n in m.outputs.iter().chain(&m.metrics) {
            names.insert(n.value, n.name.clone());
        }
        Printer {
            m,
            uses,
            names,
            lets: Vec::new(),
        }
    }

    fn leaf(&self, h: Handle<Expr>) -> Option<String> {
        let m = self.m;
        Some(match *m.exprs.get(h)? {
            Expr::Const(c) => fmt_num(c),
            Expr::Bool(b) => b.to_string(),
            Expr::Param(i) => m.params.get(i as usize)?.name.clone(),
            Expr::Input(i) => m.inputs.get(i as usize)?.name.clone(),
            Expr::Index(IndexKind::Pos) => "pos".into(),
            Expr::Index(IndexKind::TurnIndex) => "turn_index".into(),
            Expr::Broadcast { arg, .. } => return self.leaf(arg),
            Expr::Reduce {
                op: ReduceOp::Sum,
                arg,
                to,
                filter: None,
            } => count_name(counted(m, arg)?, to),
            _ => return None,
        })
    }

    /// Infix text of `h`; `prec` is the binding strength of the context (parenthesize below it).
    fn expr(&mut self, h: Handle<Expr>, prec: u8) -> String {
        if let Some(l) = self.leaf(h) {
            return l;
        }
        if let Some(n) = self.names.get(&h) {
            return n.clone();
        }
        if let Some(Expr::Broadcast { arg, .. }) = self.m.exprs.get(h) {
            return self.expr(*arg, prec);
        }
        let shared = self.uses.get(h.index()).copied().unwrap_or(0) > 1;
        if shared {
            let text = self.body(h, 0);
            let name = format!("t{}", self.lets.len() + 1);
            self.lets.push((name.clone(), text));
            self.names.insert(h, name.clone());
            return name;
        }
        self.body(h, prec)
    }

    fn body(&mut self, h: Handle<Expr>, prec: u8) -> String {
        let m = self.m;
        let Some(e) = m.exprs.get(h).cloned() else {
            return format!("{h}");
        };
        let paren = |s: String, p: u8| if p < prec { format!("({s})") } else { s };
        match e {
            Expr::Broadcast { arg, .. } => self.expr(arg, prec),
            Expr::Detach { arg } => format!("detach({})", self.expr(arg, 0)),
            Expr::Unary { op, arg } => match op {
                UnaryOp::Neg => paren(format!("-{}", self.expr(arg, 6)), 5),
                UnaryOp::Not => paren(format!("!{}", self.expr(arg, 6)), 5),
                UnaryOp::ToF32 => format!("float({})", self.expr(arg, 0)),
                _ => format!("{}({})", unary_name(op), self.expr(arg, 0)),
            },
            Expr::Binary { op, lhs, rhs } => {
                let (sym, p, func) = binary_sym(op);
                if func {
                    return format!("{sym}({}, {})", self.expr(lhs, 0), self.expr(rhs, 0));
                }
                let (lp, rp) = if op == BinaryOp::Pow {
                    (p + 1, p)
                } else {
                    (p, p + 1)
                };
                let text = format!("{} {sym} {}", self.expr(lhs, lp), self.expr(rhs, rp));
                paren(text, p)
            }
            Expr::Select {
                cond,
                on_true,
                on_false,
            } => {
                let text = format!(
                    "if {} then {} else {}",
                    self.expr(cond, 1),
                    self.expr(on_true, 1),
                    self.expr(on_false, 0)
                );
                paren(text, 0)
            }
            Expr::Reduce {
                op,
                arg,
                to,
                filter,
            } => {
                let name = match op {
                    ReduceOp::Sum => "sum",
                    ReduceOp::Max => "max",
                    ReduceOp::Min => "min",
                };
                let a = self.expr(arg, 0);
                let f = filter.map(|f| format!(", where: {}", self.expr(f, 0)));
                format!("{to}_{name}({a}{})", f.unwrap_or_default())
            }
            Expr::Quantile { arg, q, to, filter } => {
                let (a, qv) = (self.expr(arg, 0), self.expr(q, 0));
                let f = filter.map(|f| format!(", where: {}", self.expr(f, 0)));
                format!("{to}_quantile({a}, {qv}{})", f.unwrap_or_default())
            }
            Expr::Scan { op, arg, discount } => {
                let a = self.expr(arg, 0);
                let d = discount.map(|d| format!(", {}", self.expr(d, 0)));
                let name = match op {
                    ScanOp::CumSum => "seq_cumsum",
                    ScanOp::RevCumSum => "seq_revcumsum",
                    ScanOp::DiscountedRevCumSum => "seq_discounted_revcumsum",
                    ScanOp::DiscountedCumSum => "seq_discounted_cumsum",
                    ScanOp::Next => "seq_next",
                    ScanOp::Prev => "seq_prev",
                };
                format!("{name}({a}{})", d.unwrap_or_default())
            }
            Expr::Rank { arg, within } => format!("{within}_rank({})", self.expr(arg, 0)),
            Expr::PosReduce { op, arg } => {
                let name = match op {
                    ReduceOp::Sum => "sum",
                    ReduceOp::Max => "max",
                    ReduceOp::Min => "min",
                };
                format!("group_pos_{name}({})", self.expr(arg, 0))
            }
            Expr::Const(_) | Expr::Bool(_) | Expr::Param(_) | Expr::Input(_) | Expr::Index(_) => {
                self.leaf(h).unwrap_or_default()
            }
        }
    }
}

fn is_one(m: &Module, h: Handle<Expr>) -> bool {
    match m.exprs.get(h) {
        Some(Expr::Const(c)) => *c == 1.0,
        Some(Expr::Broadcast { arg, .. }) => is_one(m, *arg),
        _ => false,
    }
}

/// `Some(level)` when summing `h` counts `level` elements: `h` is the constant 1 at `level`, or
/// itself a filter-free count of `level` elements (`batch_sum(seq_len)` is `num_tokens`: sum
/// factoring writes token counts that way).
fn counted(m: &Module, h: Handle<Expr>) -> Option<Level> {
    if is_one(m, h) {
        return Some(m.level(h));
    }
    match *m.exprs.get(h)? {
        Expr::Reduce {
            op: ReduceOp::Sum,
            arg,
            filter: None,
            ..
        } => counted(m, arg),
        _ => None,
    }
}

fn count_name(from: Level, to: Level) -> String {
    match (from, to) {
        (Level::Tok, Level::Seq) => "seq_len".into(),
        (Level::Tok, Level::Turn) => "turn_len".into(),
        (Level::Turn, Level::Seq) => "seq_turns".into(),
        (Level::Seq, Level::Group) => "group_size".into(),
        (Level::Tok, Level::Batch) => "num_tokens".into(),
        (Level::Seq, Level::Batch) => "num_seqs".into(),
        (Level::Group, Level::Batch) => "num_groups".into(),
        _ => format!("{to}_count({from})"),
    }
}

fn fmt_num(c: f64) -> String {
    if c == f64::INFINITY {
        "inf".into()
    } else if c == f64::NEG_INFINITY {
        "-inf".into()
    } else {
        format!("{c}")
    }
}

fn unary_name(op: UnaryOp) -> &'static str {
    match op {
        UnaryOp::Neg => "neg",
        UnaryOp::Not => "not",
        UnaryOp::ToF32 => "float",
        UnaryOp::Exp => "exp",
        UnaryOp::Log => "log",
        UnaryOp::Log1p => "log1p",
        UnaryOp::Expm1 => "expm1",
        UnaryOp::Lgamma => "lgamma",
        UnaryOp::Digamma => "digamma",
        UnaryOp::Sqrt => "sqrt",
        UnaryOp::Abs => "abs",
        UnaryOp::Sigmoid => "sigmoid",
        UnaryOp::Softplus => "softplus",
        UnaryOp::Tanh => "tanh",
        UnaryOp::Floor => "floor",
        UnaryOp::Ceil => "ceil",
        UnaryOp::Round => "round",
    }
}

/// `(symbol, precedence, written as a call)`; precedences follow the language's operators.
fn binary_sym(op: BinaryOp) -> (&'static str, u8, bool) {
    match op {
        BinaryOp::Or => ("||", 1, false),
        BinaryOp::And => ("&&", 2, false),
        BinaryOp::Lt => ("<", 3, false),
        BinaryOp::Le => ("<=", 3, false),
        BinaryOp::Gt => (">", 3, false),
        BinaryOp::Ge => (">=", 3, false),
        BinaryOp::Eq => ("==", 3, false),
        BinaryOp::Ne => ("!=", 3, false),
        BinaryOp::Add => ("+", 4, false),
        BinaryOp::Sub => ("-", 4, false),
        BinaryOp::Mul => ("*", 5, false),
        BinaryOp::Div => ("/", 5, false),
        BinaryOp::Pow => ("^", 7, false),
        BinaryOp::Min => ("min", 0, true),
        BinaryOp::Max => ("max", 0, true),
    }
}
