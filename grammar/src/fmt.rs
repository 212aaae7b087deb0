//! Canonical formatter: AST (+ comments) → text. `rloc fmt` prints this.
//!
//! Layout rules (spec.md §2.3 summarizes them):
//! - `use` lines first, in source order, with no blank line between them; then every `fn` and
//!   `objective` in source order, one blank line between items.
//! - 4-space indentation, one statement per line, no `;`, one space around binary operators,
//!   `name: type = default` parameters. A parameter list goes one per line (trailing comma) when
//!   a parameter has a doc comment, a comment sits in the list, or the header passes 100 columns.
//! - Parentheses: the user's are dropped and the minimal ones the precedence needs are printed
//!   (`(a * b) + c` → `a * b + c`, `a - (b - c)` kept). An `if` used as an operand, or as the
//!   condition or `then` branch of another `if`, is parenthesized for readability (unless those
//!   parentheses would nest the statement deeper than the parser's limit).
//! - A statement longer than 100 columns is broken: before each `else` of an `if` chain, before
//!   each operator of a same-precedence chain, or one call argument per line (continuation lines
//!   indented by 8; a newline never ends an expression, so the text re-parses the same).
//! - Number literals are printed as written (`1e-4` stays `1e-4`).
//! - A `fn` result that starts with `-` after `let`s is parenthesized (`(-d - 1)`): on its own
//!   line it would continue the last `let` (the source may have separated them with `;`).
//! - Comments stay where they were relative to items, statements and parameters: a comment on
//!   the line of a statement stays at its end; comments between statements stay between them; a
//!   comment *inside* an expression moves to its own line just before that statement. Blank lines
//!   between statements are kept (several collapse to one).
//!
//! Guarantees (tested, also by property tests): the output parses, re-formats to itself, and
//! re-parses to the same AST up to spans, parentheses and the placement described above (see
//! [`crate::cmp`]).

use crate::ast::{self, Comment, Expr, ExprKind, Item, StmtKind, UnaryOp, UseNames};
use std::fmt::Write;

const INDENT: &str = "    ";
const MAX_HEADER: usize = 100;
/// Statements longer than this are broken over several lines (best effort).
const MAX_WIDTH: usize = 100;
/// Start of a continuation line of a statement (statements sit at one indent, so two).
const CONT: &str = "\n        ";

/// Formats a parsed file in canonical layout, comments preserved.
pub fn format_file(file: &ast::File, src: &str) -> String {
    stacker::maybe_grow(4 * 1024 * 1024, 16 * 1024 * 1024, || {
        format_inner(file, src)
    })
}

fn format_inner(file: &ast::File, src: &str) -> String {
    let comments = &file.comments;
    // Give every item its comments: those before it (after the previous item), inside it, and
    // one on the line where it ends.
    let mut next = 0usize;
    let mut parts: Vec<(usize, std::ops::Range<usize>, Option<usize>)> = Vec::new();
    for (i, item) in file.items.iter().enumerate() {
        let span = item_span(item);
        let start = next;
        while next < comments.len() && (comments[next].span.start as usize) < span.end {
            next += 1;
        }
        let inner = start..next;
        let mut trailing = None;
        if let Some(c) = comments.get(next) {
            let next_item = file.items.get(i + 1).map(|n| item_span(n).start);
            if same_line(src, span.end, c.span.start as usize)
                && next_item.is_none_or(|n| (c.span.start as usize) < n)
            {
                trailing = Some(next);
                next += 1;
            }
        }
        parts.push((i, inner, trailing));
    }
    let order: Vec<usize> = (0..file.items.len())
        .filter(|&i| matches!(file.items[i], Item::Use(_)))
        .chain((0..file.items.len()).filter(|&i| !matches!(file.items[i], Item::Use(_))))
        .collect();

    let mut p = Printer {
        src,
        comments,
        next: 0,
        end: 0,
        out: String::new(),
    };
    // The file header: comments before the first item, up to the last blank line before it.
    // It stays at the top even when `use` lines are hoisted above the first item.
    let mut header = 0;
    if let (Some(first), Some((_, range, _))) = (file.items.first(), parts.first()) {
        let first_start = item_span(first).start;
        for j in 1..=range.end {
            let lead = comments.get(j).map(|c| c.span.start as usize);
            let next_start = match lead {
                Some(s) if s < first_start && j < range.end => s,
                _ => first_start,
            };
            if blank_between(src, comments[j - 1].span.end as usize, next_start) {
                header = j;
            }
            if next_start == first_start {
                break;
            }
        }
    }
    if header > 0 {
        p.end = header;
        p.leading(usize::MAX, "", false);
        p.out.push('\n');
    }
    let mut prev_use: Option<bool> = None;
    for &i in &order {
        let (_, range, trailing) = &parts[i];
        let range = if i == 0 {
            header.max(range.start)..range.end
        } else {
            range.clone()
        };
        let item = &file.items[i];
        let is_use = matches!(item, Item::Use(_));
        if let Some(prev) = prev_use {
            if !(prev && is_use) {
                p.out.push('\n');
            }
        }
        prev_use = Some(is_use);
        p.next = range.start;
        p.end = range.end;
        p.item(item);
        if let Some(t) = trailing {
            let _ = write!(p.out, " {}", comments[*t].text);
        }
        p.out.push('\n');
        // Never lose a comment: any the item printer did not place goes after the item.
        p.leading(usize::MAX, "", false);
    }
    // Comments after the last item.
    if next < comments.len() {
        if !file.items.is_empty() {
            let last_end = file
                .items
                .iter()
                .map(|it| item_span(it).end)
                .max()
                .unwrap_or(0);
            if blank_between(src, last_end, comments[next].span.start as usize) {
                p.out.push('\n');
            }
        }
        p.next = next;
        p.end = comments.len();
        p.leading(usize::MAX, "", false);
    }
    p.out
}

fn item_span(item: &Item) -> std::ops::Range<usize> {
    match item {
        Item::Use(u) => u.span.range(),
        Item::Fn(f) => f.span.range(),
        Item::Objective(o) => o.span.range(),
    }
}

/// No newline between `a` and `b`.
fn same_line(src: &str, a: usize, b: usize) -> bool {
    a <= b && src.get(a..b).is_some_and(|s| !s.contains('\n'))
}

/// The text between `a` and `b` contains an empty (whitespace-only) line.
fn blank_between(src: &str, a: usize, b: usize) -> bool {
    let Some(gap) = src.get(a..b) else {
        return false;
    };
    let pieces: Vec<&str> = gap.split('\n').collect();
    pieces.len() > 2
        && pieces[1..pieces.len() - 1]
            .iter()
            .any(|l| l.trim().is_empty())
}

struct Printer<'a> {
    src: &'a str,
    comments: &'a [Comment],
    /// Next comment (index into `comments`) not yet printed, and the end of the range of the
    /// current item.
    next: usize,
    end: usize,
    out: String,
}

impl<'a> Printer<'a> {
    fn pending(&self, before: usize) -> Option<&'a Comment> {
        if self.next < self.end {
            self.comments
                .get(self.next)
                .filter(|c| (c.span.start as usize) < before)
        } else {
            None
        }
    }

    /// Prints, one per line, every pending comment that starts before `before`; keeps blank
    /// lines between them (and before `before` when `blank_before_target`).
    fn leading(&mut self, before: usize, indent: &str, blank_before_target: bool) {
        let mut prev_end: Option<usize> = None;
        while let Some(c) = self.pending(before) {
            let (start, end) = (c.span.start as usize, c.span.end as usize);
            if prev_end.is_some_and(|p| blank_between(self.src, p, start)) {
                self.out.push('\n');
            }
            let _ = writeln!(self.out, "{indent}{}", c.text);
            prev_end = Some(end);
            self.next += 1;
        }
        if blank_before_target {
            if let Some(p) = prev_end {
                if blank_between(self.src, p, before) {
                    self.out.push('\n');
                }
            }
        }
    }

    /// Appends the pending comment that starts on the line where `end` is, before `limit`.
    fn trailing(&mut self, end: usize, limit: usize) {
        if let Some(c) = self.pending(limit) {
            if (c.span.start as usize) >= end && same_line(self.src, end, c.span.start as usize) {
                let _ = write!(self.out, " {}", c.text);
                self.next += 1;
            }
        }
    }

    fn docs(&mut self, doc: &[String], indent: &str) {
        for d in doc {
            if d.is_empty() {
                let _ = writeln!(self.out, "{indent}///");
            } else {
                let _ = writeln!(self.out, "{indent}/// {d}");
            }
        }
    }

    fn item(&mut self, item: &Item) {
        match item {
            Item::Use(u) => {
                self.leading(u.span.start as usize, "", true);
                // Comments inside a `use` line go before it.
                self.leading(u.span.end as usize, "", false);
                let module: Vec<&str> = u.module.iter().map(|i| i.name.as_str()).collect();
                let names = match &u.names {
                    UseNames::Glob(_) => "*".to_string(),
                    UseNames::List(l) if l.len() == 1 => l[0].name.clone(),
                    UseNames::List(l) => {
                        let n: Vec<&str> = l.iter().map(|i| i.name.as_str()).collect();
                        format!("{{{}}}", n.join(", "))
                    }
                };
                if module.is_empty() {
                    let _ = write!(self.out, "use {names}");
                } else {
                    let _ = write!(self.out, "use {}::{names}", module.join("::"));
                }
            }
            Item::Fn(f) => {
                self.leading(f.span.start as usize, "", true);
                self.docs(&f.doc, "");
                let brace = f.body.span.start as usize;
                let params: Vec<Param> = f.params.iter().map(Param::of_fn).collect();
                self.header("fn", &f.name.name, &params, brace);
                self.out.push_str(" {\n");
                let mut elems: Vec<Elem> = f.body.stmts.iter().map(Elem::Stmt).collect();
                elems.push(Elem::Result(&f.body.result));
                self.body(&elems, f.span.end as usize);
                self.out.push('}');
            }
            Item::Objective(o) => {
                self.leading(o.span.start as usize, "", true);
                self.docs(&o.doc, "");
                let after = o
                    .params
                    .last()
                    .map(|p| p.span.end)
                    .unwrap_or(o.name.span.end) as usize;
                let brace = self.find_brace(after);
                let params: Vec<Param> = o.params.iter().map(Param::of_objective).collect();
                self.header("objective", &o.name.name, &params, brace);
                let end = o.span.end as usize;
                if o.body.is_empty() && self.pending(end).is_none() {
                    self.out.push_str(" {}");
                } else {
                    self.out.push_str(" {\n");
                    let elems: Vec<Elem> = o.body.iter().map(Elem::Stmt).collect();
                    self.body(&elems, end);
                    self.out.push('}');
                }
            }
        }
    }

    /// The `{` that opens a body, searching from `from` and skipping comments.
    fn find_brace(&self, from: usize) -> usize {
        let mut i = from;
        let bytes = self.src.as_bytes();
        while i < bytes.len() {
            if let Some(c) = self.comments.iter().find(|c| c.span.start as usize == i) {
                i = c.span.end as usize;
                continue;
            }
            if bytes[i] == b'{' {
                return i;
            }
            i += 1;
        }
        self.src.len()
    }

    /// `fn name(params)` / `objective name(params)`, on one line or one parameter per line.
    fn header(&mut self, kw: &str, name: &str, params: &[Param], brace: usize) {
        let one_line: Vec<String> = params.iter().map(|p| p.text(self.src)).collect();
        let line = format!("{kw} {name}({})", one_line.join(", "));
        let has_docs = params.iter().any(|p| !p.doc.is_empty());
        if !has_docs && self.pending(brace).is_none() && line.len() + 2 <= MAX_HEADER {
            self.out.push_str(&line);
            return;
        }
        let _ = writeln!(self.out, "{kw} {name}(");
        for (i, p) in params.iter().enumerate() {
            self.leading(p.span.end as usize, INDENT, false);
            self.docs(p.doc, INDENT);
            let _ = write!(self.out, "{INDENT}{},", one_line[i]);
            let limit = params
                .get(i + 1)
                .map(|n| n.span.start as usize)
                .unwrap_or(brace);
            self.trailing(p.span.end as usize, limit);
            self.out.push('\n');
        }
        self.leading(brace, INDENT, false);
        self.out.push(')');
    }

    /// The statements (and result) of a body, then the comments left before its `}`.
    fn body(&mut self, elems: &[Elem], end: usize) {
        let mut prev_end: Option<usize> = None;
        for (i, e) in elems.iter().enumerate() {
            let span = e.span();
            let first_start = self
                .pending(span.end as usize)
                .map(|c| c.span.start as usize)
                .unwrap_or(span.start as usize)
                .min(span.start as usize);
            if prev_end.is_some_and(|p| blank_between(self.src, p, first_start)) {
                self.out.push('\n');
            }
            self.leading(span.start as usize, INDENT, true);
            // Comments inside the statement move just before it.
            self.leading(span.end as usize, INDENT, false);
            match e {
                Elem::Stmt(s) => {
                    self.docs(&s.doc, INDENT);
                    self.out.push_str(INDENT);
                    self.stmt(&s.kind);
                }
                Elem::Result(r) => {
                    self.out.push_str(INDENT);
                    if i > 0 && expr_text(r, self.src).starts_with('-') {
                        // A line starting with `-` would continue the `let` above it.
                        self.out.push('(');
                        self.expr(r);
                        self.out.push(')');
                    } else {
                        self.expr(r);
                    }
                }
            }
            let limit = elems
                .get(i + 1)
                .map(|n| n.span().start as usize)
                .unwrap_or(end);
            let before = self.next;
            self.trailing(span.end as usize, limit);
            prev_end = Some(if self.next > before {
                self.comments[before].span.end as usize
            } else {
                span.end as usize
            });
            self.out.push('\n');
        }
        if let Some(c) = self.pending(end) {
            if prev_end.is_some_and(|p| blank_between(self.src, p, c.span.start as usize)) {
                self.out.push('\n');
            }
        }
        self.leading(end, INDENT, false);
    }

    fn stmt(&mut self, k: &StmtKind) {
        match k {
            StmtKind::Input { name, ty, diff } => {
                let _ = write!(self.out, "input {}: {}", name.name, type_text(ty));
                if diff.is_some() {
                    self.out.push_str(" diff");
                }
            }
            StmtKind::Let { name, value } => {
                let _ = write!(self.out, "let {} = ", name.name);
                self.expr(value);
            }
            StmtKind::Loss { value } => {
                self.out.push_str("loss ");
                self.expr(value);
            }
            StmtKind::Metric { name, value } => {
                let _ = write!(self.out, "metric {} = ", name.name);
                self.expr(value);
            }
            StmtKind::Output { name, value } => {
                let _ = write!(self.out, "output {} = ", name.name);
                self.expr(value);
            }
        }
    }

    /// A statement's expression: on the current line if it fits in [`MAX_WIDTH`], else broken
    /// (see [`broken_text`]).
    fn expr(&mut self, e: &Expr) {
        let col = self.out.len() - self.out.rfind('\n').map(|i| i + 1).unwrap_or(0);
        let text = expr_text(e, self.src);
        if col + text.len() <= MAX_WIDTH {
            self.out.push_str(&text);
        } else {
            self.out.push_str(&broken_text(e, self.src));
        }
    }
}

enum Elem<'a> {
    Stmt(&'a ast::Stmt),
    Result(&'a Expr),
}

impl Elem<'_> {
    fn span(&self) -> crate::Span {
        match self {
            Elem::Stmt(s) => s.span,
            Elem::Result(e) => e.span,
        }
    }
}

/// A parameter of a `fn` or an `objective` (same surface syntax).
struct Param<'a> {
    doc: &'a [String],
    name: &'a str,
    ty: Option<&'a ast::TypeAnn>,
    default: Option<&'a Expr>,
    span: crate::Span,
}

impl<'a> Param<'a> {
    fn of_fn(p: &'a ast::FnParam) -> Param<'a> {
        Param {
            doc: &p.doc,
            name: &p.name.name,
            ty: p.ty.as_ref(),
            default: p.default.as_ref(),
            span: p.span,
        }
    }

    fn of_objective(p: &'a ast::ParamDecl) -> Param<'a> {
        Param {
            doc: &p.doc,
            name: &p.name.name,
            ty: p.ty.as_ref(),
            default: p.default.as_ref(),
            span: p.span,
        }
    }

    fn text(&self, src: &str) -> String {
        let mut s = self.name.to_string();
        if let Some(t) = self.ty {
            let _ = write!(s, ": {}", type_text(t));
        }
        if let Some(d) = self.default {
            let _ = write!(s, " = {}", expr_text(d, src));
        }
        s
    }
}

fn type_text(t: &ast::TypeAnn) -> String {
    let parts: Vec<&str> = [&t.level, &t.dtype]
        .into_iter()
        .flatten()
        .map(|i| i.name.as_str())
        .collect();
    parts.join(" ")
}

/// Binding power of an expression as printed (parentheses are transparent): atoms 8, `^` 7,
/// unary 6, binary operators as [`ast::BinaryOp::precedence`], `if` 0.
fn prec(e: &Expr) -> u8 {
    match &strip(e).kind {
        ExprKind::Binary { op, .. } => op.precedence(),
        ExprKind::Unary { .. } => 6,
        ExprKind::If { .. } => 0,
        _ => 8,
    }
}

fn strip(mut e: &Expr) -> &Expr {
    while let ExprKind::Paren(inner) = &e.kind {
        e = inner;
    }
    e
}

/// What the expression writers need: the source (numbers are printed as written) and whether an
/// `if` in the condition or `then` branch of another `if` gets its readability parentheses. It
/// does unless they would make the statement deeper than the parser accepts (each pair is one
/// more nesting level: a chain of 128 `if`s in conditions, valid as written, would not re-parse).
#[derive(Clone, Copy)]
struct Cx<'a> {
    src: &'a str,
    readable: bool,
}

impl<'a> Cx<'a> {
    fn new(e: &Expr, src: &'a str) -> Self {
        // +1: the statement sits inside a `{ }` or `( )` that the pre-scan counts too.
        let readable = printed_depth(e, true) < crate::MAX_NESTING;
        Cx { src, readable }
    }
}

/// Depth of `e` as the parser measures it (each node, parentheses included, one level) once
/// printed: the user's parentheses dropped, those the precedence needs added, and with
/// `readable` the readability parentheses of `if`s in conditions and `then` branches.
fn printed_depth(e: &Expr, readable: bool) -> usize {
    let child = |c: &Expr, paren: bool| printed_depth(c, readable) + usize::from(paren);
    let e = strip(e);
    match &e.kind {
        ExprKind::Number(_) | ExprKind::Bool(_) | ExprKind::Name(_) => 1,
        ExprKind::Paren(inner) => printed_depth(inner, readable),
        ExprKind::Unary { operand, .. } => 1 + child(operand, prec(operand) < 6),
        ExprKind::Binary { op, lhs, rhs } => {
            let (lparen, rparen) = binary_parens(*op, lhs, rhs);
            1 + child(lhs, lparen).max(child(rhs, rparen))
        }
        ExprKind::Call { args, .. } => {
            1 + args
                .iter()
                .map(|a| printed_depth(&a.value, readable))
                .max()
                .unwrap_or(0)
        }
        ExprKind::If {
            cond,
            then,
            otherwise,
        } => {
            let c = child(cond, readable && prec(cond) == 0);
            let t = child(then, readable && prec(then) == 0);
            1 + c.max(t).max(printed_depth(otherwise, readable))
        }
    }
}

/// Whether the operands of a binary operator need parentheses (minimal, by precedence).
fn binary_parens(op: ast::BinaryOp, lhs: &Expr, rhs: &Expr) -> (bool, bool) {
    let p = op.precedence();
    let right_assoc = op == ast::BinaryOp::Pow;
    let non_assoc = p == 3;
    let (pl, pr) = (prec(lhs), prec(rhs));
    let lparen = pl < p || (pl == p && (right_assoc || non_assoc));
    let rparen = if right_assoc {
        // `2 ^ -x` parses as `2 ^ (-x)`: a unary operand needs no parentheses.
        pr < 6
    } else {
        pr <= p
    };
    (lparen, rparen)
}

/// One expression on one line, with the minimal parentheses (see the module docs).
pub fn expr_text(e: &Expr, src: &str) -> String {
    let mut out = String::new();
    write_expr(&mut out, e, Cx::new(e, src));
    out
}

fn write_expr(out: &mut String, e: &Expr, cx: Cx) {
    let e = strip(e);
    match &e.kind {
        ExprKind::Number(v) => out.push_str(&number_text(*v, e.span, cx.src)),
        ExprKind::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        ExprKind::Name(i) => out.push_str(&i.name),
        ExprKind::Paren(inner) => write_expr(out, inner, cx),
        ExprKind::Unary { op, operand } => {
            out.push(match op {
                UnaryOp::Neg => '-',
                UnaryOp::Not => '!',
            });
            write_child(out, operand, prec(operand) < 6, cx);
        }
        ExprKind::Binary { op, lhs, rhs } => {
            let (lparen, rparen) = binary_parens(*op, lhs, rhs);
            write_child(out, lhs, lparen, cx);
            let _ = write!(out, " {} ", op.symbol());
            write_child(out, rhs, rparen, cx);
        }
        ExprKind::Call { callee, args } => {
            out.push_str(&callee.name);
            out.push('(');
            for (i, a) in args.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                if let Some(n) = &a.name {
                    let _ = write!(out, "{}: ", n.name);
                }
                write_expr(out, &a.value, cx);
            }
            out.push(')');
        }
        ExprKind::If {
            cond,
            then,
            otherwise,
        } => {
            out.push_str("if ");
            write_child(out, cond, cx.readable && prec(cond) == 0, cx);
            out.push_str(" then ");
            write_child(out, then, cx.readable && prec(then) == 0, cx);
            out.push_str(" else ");
            write_expr(out, otherwise, cx);
        }
    }
}

/// A long expression over several lines; every continuation line starts with an operator,
/// `else` or an argument, so it re-parses to the same tree (a newline never ends an expression):
/// - an `if` chain breaks before each `else`;
/// - a chain of binary operators of one precedence breaks before each operator;
/// - a call puts one argument per line (trailing comma), `)` on a line of its own.
///
/// Anything else, and the pieces themselves, stay on one line.
fn broken_text(e: &Expr, src: &str) -> String {
    let cx = Cx::new(e, src);
    let mut out = String::new();
    let e = strip(e);
    match &e.kind {
        ExprKind::If { .. } => {
            let mut cur = e;
            while let ExprKind::If {
                cond,
                then,
                otherwise,
            } = &cur.kind
            {
                out.push_str("if ");
                write_child(&mut out, cond, cx.readable && prec(cond) == 0, cx);
                out.push_str(" then ");
                write_child(&mut out, then, cx.readable && prec(then) == 0, cx);
                out.push_str(CONT);
                out.push_str("else ");
                cur = strip(otherwise);
            }
            write_expr(&mut out, cur, cx);
        }
        ExprKind::Binary { op, .. } => {
            let p = op.precedence();
            let chain = *op != ast::BinaryOp::Pow && p != 3;
            // Walk down the left spine of same-precedence (left-associative) operators.
            let mut rest: Vec<(ast::BinaryOp, &Expr)> = Vec::new();
            let mut cur = e;
            while let ExprKind::Binary { op, lhs, rhs } = &cur.kind {
                if op.precedence() != p {
                    break;
                }
                rest.push((*op, rhs));
                cur = strip(lhs);
                if !chain {
                    break;
                }
            }
            let (first_op, _) = rest.last().copied().unwrap_or((*op, e));
            let pl = prec(cur);
            let right_assoc = first_op == ast::BinaryOp::Pow;
            write_child(
                &mut out,
                cur,
                pl < p || (pl == p && (right_assoc || !chain)),
                cx,
            );
            for (op, rhs) in rest.iter().rev() {
                let _ = write!(out, "{CONT}{} ", op.symbol());
                let pr = prec(rhs);
                let paren = if *op == ast::BinaryOp::Pow {
                    pr < 6
                } else {
                    pr <= p
                };
                write_child(&mut out, rhs, paren, cx);
            }
        }
        ExprKind::Call { callee, args } if !args.is_empty() => {
            let _ = write!(out, "{}(", callee.name);
            for a in args {
                out.push_str(CONT);
                if let Some(n) = &a.name {
                    let _ = write!(out, "{}: ", n.name);
                }
                write_expr(&mut out, &a.value, cx);
                out.push(',');
            }
            let _ = write!(out, "\n{INDENT})");
        }
        _ => write_expr(&mut out, e, cx),
    }
    out
}

fn write_child(out: &mut String, e: &Expr, paren: bool, cx: Cx) {
    if paren {
        out.push('(');
        write_expr(out, e, cx);
        out.push(')');
    } else {
        write_expr(out, e, cx);
    }
}

/// The literal as written when the span still points at it, else a form the grammar accepts.
fn number_text(v: f64, span: crate::Span, src: &str) -> String {
    if let Some(t) = src.get(span.range()) {
        let plain = !t.is_empty()
            && t.starts_with(|c: char| c.is_ascii_digit())
            && t.chars()
                .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'));
        if plain && t.parse::<f64>() == Ok(v) {
            return t.to_string();
        }
    }
    let a = v.abs();
    if a != 0.0 && !(1e-5..1e16).contains(&a) {
        format!("{v:e}")
    } else {
        format!("{v}")
    }
}
