//! pest `Pairs` → AST; pest errors → [`Diagnostic`].
//!
//! Pipeline of [`parse`]: `scan::prescan` (comments, stray characters, delimiters, nesting bound)
//! → pest (`rlo.pest`) → this builder. Expressions come out of pest flat and get their precedence
//! from an iterative operator-precedence pass ([`build_expr`]), so no input makes the builder
//! recurse deeper than the pre-scan allowed; the finished tree is at most [`MAX_NESTING`] deep.
//!
//! Error codes: E0001 syntax error (`expected ...`), E0002 unterminated block comment,
//! E0003 unexpected character, E0004 unbalanced delimiter, E0005 nesting too deep,
//! E0006 invalid number, E0007 reserved word used as a name, E0008 positional argument after a
//! named one, E0009 statement not allowed in a `fn` body, E0010 chained comparison,
//! E0011 `use` without a module path, E0012 misplaced doc comment.

use crate::ast::{self, BinaryOp, Expr, ExprKind, Ident, UnaryOp};
use crate::scan::{prescan, MAX_NESTING};
use crate::span::{FileId, Span};
use crate::Diagnostic;
use pest::iterators::Pair;
use pest::Parser;
use pest_derive::Parser;

#[derive(Parser)]
#[grammar = "rlo.pest"]
struct RloParser;

/// Stack the parser runs on: nesting is bounded by [`MAX_NESTING`], and this is ample for that
/// depth even in debug builds, whatever the caller's own stack (test threads have 2 MiB).
const STACK_SIZE: usize = 32 * 1024 * 1024;

/// Parses one file: the AST, or its syntax errors sorted by position: all stray characters and
/// AST-level errors, and the first grammar error of each item and of each later statement of an
/// objective body (the parse restarts at the next statement or item), at most 20.
pub fn parse(src: &str, file: FileId) -> Result<ast::File, Vec<Diagnostic>> {
    stacker::maybe_grow(STACK_SIZE / 2, STACK_SIZE, || parse_inner(src, file))
}

pub(crate) fn parse_inner(src: &str, file: FileId) -> Result<ast::File, Vec<Diagnostic>> {
    let scanned = prescan(src, file);
    if !scanned.errors.is_empty() {
        return Err(scanned.errors);
    }
    let mut pairs = match pest_parse(src) {
        Ok(p) => p,
        Err(e) => {
            let first = crate::perror::convert(src, file, &e);
            return Err(crate::recover::recover(src, file, first));
        }
    };
    let Some(top) = pairs.next() else {
        return Err(vec![Diagnostic::error("E0001", "empty parse")]);
    };
    let mut b = Builder {
        file,
        src,
        comments: scanned
            .comments
            .iter()
            .map(|c| (c.span.start as usize, c.span.end as usize))
            .collect(),
        errors: Vec::new(),
    };
    let span = Span::new(file, 0, src.len());
    let mut items = Vec::new();
    for p in top.into_inner() {
        match p.as_rule() {
            Rule::use_decl => items.push(ast::Item::Use(b.use_decl(p))),
            Rule::fn_decl => {
                if let Some(f) = b.fn_decl(p) {
                    items.push(ast::Item::Fn(f));
                }
            }
            Rule::objective_decl => {
                if let Some(o) = b.objective_decl(p) {
                    items.push(ast::Item::Objective(o));
                }
            }
            _ => {}
        }
    }
    if b.errors.is_empty() {
        Ok(ast::File {
            items,
            comments: scanned.comments,
            span,
        })
    } else {
        b.errors.sort_by_key(|d| d.primary_span());
        Err(b.errors)
    }
}

struct Builder<'s> {
    file: FileId,
    src: &'s str,
    /// `(start, end)` of every `//` and `/* */` comment, sorted.
    comments: Vec<(usize, usize)>,
    errors: Vec<Diagnostic>,
}

/// An operator on the precedence stack of [`Builder::build_expr`].
#[derive(Clone, Copy)]
enum Op {
    Prefix(UnaryOp, Span),
    Infix(BinaryOp, Span),
}

impl Op {
    /// Binding power (see [`BinaryOp::precedence`]); prefix operators sit at 6.
    fn prec(self) -> u8 {
        match self {
            Op::Prefix(..) => 6,
            Op::Infix(op, _) => op.precedence(),
        }
    }
}

fn is_comparison(op: BinaryOp) -> bool {
    op.precedence() == 3
}

impl Builder<'_> {
    /// The span of a pair without the whitespace and comments pest may have skipped at its end
    /// (before an optional part that did not match, e.g. `stmt`'s `";"?`).
    fn span(&self, p: &Pair<Rule>) -> Span {
        let s = p.as_span();
        let (start, mut end) = (s.start(), s.end());
        let bytes = self.src.as_bytes();
        loop {
            while end > start && bytes.get(end - 1).is_some_and(|b| b.is_ascii_whitespace()) {
                end -= 1;
            }
            match self.comments.binary_search_by_key(&end, |c| c.1) {
                Ok(i) if self.comments[i].0 >= start => end = self.comments[i].0,
                _ => break,
            }
        }
        Span::new(self.file, start, end)
    }

    /// The span of an item, parameter or statement: from its first token after its doc
    /// comments (diagnostics point at the code, not at the documentation).
    fn span_after_docs(&self, p: &Pair<Rule>) -> Span {
        let full = self.span(p);
        let start = p
            .clone()
            .into_inner()
            .find(|c| c.as_rule() != Rule::doc_comment)
            .map(|c| c.as_span().start())
            .unwrap_or(full.start as usize);
        Span::new(self.file, start, full.end as usize)
    }

    fn ident(&self, p: Pair<Rule>) -> Ident {
        // `name` and `arg_name` wrap an `ident`; `callee` is atomic and its text is the name.
        let span = self.span(&p);
        Ident {
            name: p.as_str().to_string(),
            span,
        }
    }

    fn doc(p: &Pair<Rule>) -> String {
        // `/// text` → `text` (one leading space dropped, trailing whitespace dropped).
        let t = p.as_str().strip_prefix("///").unwrap_or(p.as_str());
        let t = t.strip_prefix(' ').unwrap_or(t);
        t.trim_end().to_string()
    }

    fn use_decl(&mut self, p: Pair<Rule>) -> ast::UseDecl {
        let span = self.span(&p);
        let mut idents = Vec::new();
        let mut names = None;
        for c in p.into_inner() {
            match c.as_rule() {
                Rule::ident => idents.push(self.ident(c)),
                Rule::use_glob => names = Some(ast::UseNames::Glob(self.span(&c))),
                Rule::use_list => {
                    let list = c
                        .into_inner()
                        .filter(|i| i.as_rule() == Rule::ident)
                        .map(|i| self.ident(i))
                        .collect();
                    names = Some(ast::UseNames::List(list));
                }
                _ => {}
            }
        }
        let names = match names {
            Some(n) => n,
            None => match idents.pop() {
                Some(last) => ast::UseNames::List(vec![last]),
                None => ast::UseNames::List(Vec::new()),
            },
        };
        if idents.is_empty() {
            self.errors.push(
                Diagnostic::error("E0011", "`use` needs a module path")
                    .with_primary(span, "no module named here")
                    .with_help(
                        "write `use std::kl::k3`, `use std::kl::{k1, k3}` or `use std::kl::*`",
                    ),
            );
        }
        ast::UseDecl {
            module: idents,
            names,
            span,
        }
    }

    /// Shared by `fn` and `objective`: doc lines, name, params, and the remaining pairs.
    fn header<'a>(
        &mut self,
        p: Pair<'a, Rule>,
    ) -> (
        Vec<String>,
        Option<Ident>,
        Vec<ast::FnParam>,
        Vec<Pair<'a, Rule>>,
    ) {
        let mut doc = Vec::new();
        let mut name = None;
        let mut params = Vec::new();
        let mut rest = Vec::new();
        for c in p.into_inner() {
            match c.as_rule() {
                Rule::doc_comment => doc.push(Self::doc(&c)),
                Rule::ident => name = Some(self.ident(c)),
                Rule::param => {
                    if let Some(param) = self.param(c) {
                        params.push(param);
                    }
                }
                Rule::kw_fn | Rule::kw_objective => {}
                _ => rest.push(c),
            }
        }
        (doc, name, params, rest)
    }

    fn param(&mut self, p: Pair<Rule>) -> Option<ast::FnParam> {
        let span = self.span_after_docs(&p);
        let mut doc = Vec::new();
        let mut name = None;
        let mut ty = None;
        let mut default = None;
        for c in p.into_inner() {
            match c.as_rule() {
                Rule::doc_comment => doc.push(Self::doc(&c)),
                Rule::ident => name = Some(self.ident(c)),
                Rule::type_ann => ty = Some(self.type_ann(c)),
                Rule::expr => default = self.expr(c),
                _ => {}
            }
        }
        Some(ast::FnParam {
            doc,
            name: name?,
            ty,
            default,
            span,
        })
    }

    fn type_ann(&self, p: Pair<Rule>) -> ast::TypeAnn {
        let span = self.span(&p);
        let mut level = None;
        let mut dtype = None;
        for c in p.into_inner() {
            match c.as_rule() {
                Rule::level => level = Some(self.ident(c)),
                Rule::dtype => dtype = Some(self.ident(c)),
                _ => {}
            }
        }
        ast::TypeAnn { level, dtype, span }
    }

    fn fn_decl(&mut self, p: Pair<Rule>) -> Option<ast::FnDecl> {
        let span = self.span_after_docs(&p);
        let (doc, name, params, rest) = self.header(p);
        let block = rest.into_iter().find(|c| c.as_rule() == Rule::block)?;
        let block_span = self.span(&block);
        let mut stmts = Vec::new();
        let mut result = None;
        for c in block.into_inner() {
            match c.as_rule() {
                Rule::stmt => {
                    if let Some(s) = self.stmt(c) {
                        if matches!(s.kind, ast::StmtKind::Let { .. }) {
                            stmts.push(s);
                        } else {
                            let kw = match s.kind {
                                ast::StmtKind::Input { .. } => "input",
                                ast::StmtKind::Loss { .. } => "loss",
                                ast::StmtKind::Metric { .. } => "metric",
                                _ => "output",
                            };
                            self.errors.push(
                                Diagnostic::error(
                                    "E0009",
                                    format!("`{kw}` is not allowed in a `fn` body"),
                                )
                                .with_primary(s.span, "only `let` statements may come here")
                                .with_help(
                                    "a fn body is `let` bindings followed by one result expression; \
                                     `input`, `loss`, `metric` and `output` belong in an `objective`",
                                ),
                            );
                        }
                    }
                }
                Rule::expr => result = self.expr(c),
                _ => {}
            }
        }
        Some(ast::FnDecl {
            doc,
            name: name?,
            params,
            body: ast::Block {
                stmts,
                result: Box::new(result?),
                span: block_span,
            },
            span,
        })
    }

    fn objective_decl(&mut self, p: Pair<Rule>) -> Option<ast::ObjectiveDecl> {
        let span = self.span_after_docs(&p);
        let (doc, name, params, rest) = self.header(p);
        let params = params
            .into_iter()
            .map(|f| ast::ParamDecl {
                doc: f.doc,
                name: f.name,
                ty: f.ty,
                default: f.default,
                span: f.span,
            })
            .collect();
        let mut body = Vec::new();
        for b in rest.into_iter().filter(|c| c.as_rule() == Rule::body) {
            for c in b.into_inner() {
                if c.as_rule() == Rule::stmt {
                    if let Some(s) = self.stmt(c) {
                        body.push(s);
                    }
                }
            }
        }
        Some(ast::ObjectiveDecl {
            doc,
            name: name?,
            params,
            body,
            span,
        })
    }

    fn stmt(&mut self, p: Pair<Rule>) -> Option<ast::Stmt> {
        let span = self.span_after_docs(&p);
        let mut doc = Vec::new();
        let mut kind = None;
        for c in p.into_inner() {
            match c.as_rule() {
                Rule::doc_comment => doc.push(Self::doc(&c)),
                Rule::input_stmt => {
                    let mut name = None;
                    let mut ty = None;
                    let mut diff = None;
                    for d in c.into_inner() {
                        match d.as_rule() {
                            Rule::ident => name = Some(self.ident(d)),
                            Rule::input_type => ty = Some(self.type_ann(d)),
                            Rule::kw_diff => diff = Some(self.span(&d)),
                            _ => {}
                        }
                    }
                    kind = Some(ast::StmtKind::Input {
                        name: name?,
                        ty: ty?,
                        diff,
                    });
                }
                Rule::let_stmt | Rule::metric_stmt | Rule::output_stmt | Rule::loss_stmt => {
                    let rule = c.as_rule();
                    let mut name = None;
                    let mut value = None;
                    for d in c.into_inner() {
                        match d.as_rule() {
                            Rule::ident => name = Some(self.ident(d)),
                            Rule::expr => value = self.expr(d),
                            _ => {}
                        }
                    }
                    let value = value?;
                    kind = Some(match rule {
                        Rule::let_stmt => ast::StmtKind::Let { name: name?, value },
                        Rule::metric_stmt => ast::StmtKind::Metric { name: name?, value },
                        Rule::output_stmt => ast::StmtKind::Output { name: name?, value },
                        _ => ast::StmtKind::Loss { value },
                    });
                }
                _ => {}
            }
        }
        Some(ast::Stmt {
            doc,
            kind: kind?,
            span,
        })
    }

    /// Builds an expression and checks the depth of the finished tree.
    fn expr(&mut self, p: Pair<Rule>) -> Option<Expr> {
        match self.build_expr(p) {
            Ok((e, _)) => Some(e),
            Err(d) => {
                self.errors.push(d);
                None
            }
        }
    }

    /// `prefix* operand (infix prefix* operand)*` → a tree, by operator precedence with explicit
    /// stacks (no recursion over the chain). Returns the tree and its depth; a tree deeper than
    /// [`MAX_NESTING`] is an error (downstream passes walk the tree recursively).
    fn build_expr(&mut self, p: Pair<Rule>) -> Result<(Expr, usize), Diagnostic> {
        let mut operands: Vec<(Expr, usize)> = Vec::new();
        let mut ops: Vec<Op> = Vec::new();
        for c in p.into_inner() {
            match c.as_rule() {
                Rule::prefix => {
                    let op = if c.as_str() == "-" {
                        UnaryOp::Neg
                    } else {
                        UnaryOp::Not
                    };
                    ops.push(Op::Prefix(op, self.span(&c)));
                }
                Rule::infix => {
                    let op = binary_op(c.as_str());
                    let span = self.span(&c);
                    let prec = op.precedence();
                    // Pop what binds at least as tightly (left associative), except for `^`
                    // (right associative) which only pops strictly tighter operators.
                    while let Some(&top) = ops.last() {
                        let pop = if op == BinaryOp::Pow {
                            top.prec() > prec
                        } else {
                            top.prec() >= prec
                        };
                        if !pop {
                            break;
                        }
                        if let (Op::Infix(t, tspan), true) = (top, is_comparison(op)) {
                            if is_comparison(t) {
                                return Err(chained_comparison(tspan, span, t, op));
                            }
                        }
                        ops.pop();
                        reduce(&mut operands, top)?;
                    }
                    ops.push(Op::Infix(op, span));
                }
                _ => operands.push(self.operand(c)?),
            }
        }
        while let Some(top) = ops.pop() {
            reduce(&mut operands, top)?;
        }
        match (operands.pop(), operands.is_empty()) {
            (Some(e), true) => Ok(e),
            _ => Err(Diagnostic::error("E0001", "malformed expression")),
        }
    }

    fn operand(&mut self, p: Pair<Rule>) -> Result<(Expr, usize), Diagnostic> {
        let span = self.span(&p);
        let leaf = |kind| Ok((Expr { kind, span }, 1));
        match p.as_rule() {
            Rule::number => match p.as_str().parse::<f64>() {
                Ok(v) if v.is_finite() => leaf(ExprKind::Number(v)),
                _ => Err(Diagnostic::error(
                    "E0006",
                    format!("number literal `{}` is out of range", p.as_str()),
                )
                .with_primary(span, "too large for a 64-bit float")
                .with_help("use `inf` for infinity")),
            },
            Rule::boolean => leaf(ExprKind::Bool(p.as_str() == "true")),
            Rule::paren => {
                let inner = p.into_inner().find(|c| c.as_rule() == Rule::expr);
                let (e, d) = match inner {
                    Some(i) => self.build_expr(i)?,
                    None => return Err(Diagnostic::error("E0001", "malformed parentheses")),
                };
                deep(span, d + 1)?;
                Ok((
                    Expr {
                        kind: ExprKind::Paren(Box::new(e)),
                        span,
                    },
                    d + 1,
                ))
            }
            Rule::if_expr => {
                let mut parts = Vec::with_capacity(3);
                let mut depth = 0;
                for c in p.into_inner().filter(|c| c.as_rule() == Rule::expr) {
                    let (e, d) = self.build_expr(c)?;
                    depth = depth.max(d);
                    parts.push(e);
                }
                deep(span, depth + 1)?;
                let mut it = parts.into_iter();
                match (it.next(), it.next(), it.next()) {
                    (Some(c), Some(t), Some(o)) => Ok((
                        Expr {
                            kind: ExprKind::If {
                                cond: Box::new(c),
                                then: Box::new(t),
                                otherwise: Box::new(o),
                            },
                            span,
                        },
                        depth + 1,
                    )),
                    _ => Err(Diagnostic::error("E0001", "malformed `if`")),
                }
            }
            Rule::name => {
                let mut inner = p.into_inner();
                let Some(callee) = inner.next().map(|i| self.ident(i)) else {
                    return Err(Diagnostic::error("E0001", "malformed name"));
                };
                let Some(arg_pairs) = inner.next() else {
                    return leaf(ExprKind::Name(callee));
                };
                let mut args: Vec<ast::Arg> = Vec::new();
                let mut depth = 0;
                let mut first_named: Option<Span> = None;
                for c in arg_pairs.into_inner().filter(|c| c.as_rule() == Rule::arg) {
                    let aspan = self.span(&c);
                    let mut name = None;
                    let mut value = None;
                    for a in c.into_inner() {
                        match a.as_rule() {
                            Rule::arg_name => name = a.into_inner().next().map(|i| self.ident(i)),
                            Rule::expr => value = Some(self.build_expr(a)?),
                            _ => {}
                        }
                    }
                    let Some((value, d)) = value else { continue };
                    depth = depth.max(d);
                    match (&name, first_named) {
                        (Some(_), None) => first_named = Some(aspan),
                        (None, Some(named)) => self.errors.push(
                            Diagnostic::error(
                                "E0008",
                                "positional argument after a named argument",
                            )
                            .with_primary(aspan, "positional argument")
                            .with_secondary(named, "named argument given before it")
                            .with_help("put positional arguments first: `f(x, where: m)`"),
                        ),
                        _ => {}
                    }
                    args.push(ast::Arg {
                        name,
                        value,
                        span: aspan,
                    });
                }
                deep(span, depth + 1)?;
                Ok((
                    Expr {
                        kind: ExprKind::Call { callee, args },
                        span,
                    },
                    depth + 1,
                ))
            }
            _ => Err(Diagnostic::error("E0001", "malformed expression")),
        }
    }
}

fn deep(span: Span, depth: usize) -> Result<(), Diagnostic> {
    if depth > MAX_NESTING {
        Err(Diagnostic::error(
            "E0005",
            format!("expression nested too deeply (more than {MAX_NESTING} levels)"),
        )
        .with_primary(span, "this expression is too deep")
        .with_help("split it with `let` bindings"))
    } else {
        Ok(())
    }
}

fn chained_comparison(first: Span, second: Span, a: BinaryOp, b: BinaryOp) -> Diagnostic {
    Diagnostic::error("E0010", "comparison operators cannot be chained")
        .with_primary(second, format!("second comparison `{}`", b.symbol()))
        .with_secondary(first, format!("first comparison `{}`", a.symbol()))
        .with_help("combine comparisons with `&&` (`a < b && b < c`) or add parentheses")
}

/// Applies `op` to the top of the operand stack.
fn reduce(operands: &mut Vec<(Expr, usize)>, op: Op) -> Result<(), Diagnostic> {
    let malformed = || Diagnostic::error("E0001", "malformed expression");
    let (kind, span, depth) = match op {
        Op::Prefix(u, span) => {
            let (e, d) = operands.pop().ok_or_else(malformed)?;
            let s = span.to(e.span);
            (
                ExprKind::Unary {
                    op: u,
                    operand: Box::new(e),
                },
                s,
                d + 1,
            )
        }
        Op::Infix(b, _) => {
            let (r, dr) = operands.pop().ok_or_else(malformed)?;
            let (l, dl) = operands.pop().ok_or_else(malformed)?;
            let s = l.span.to(r.span);
            (
                ExprKind::Binary {
                    op: b,
                    lhs: Box::new(l),
                    rhs: Box::new(r),
                },
                s,
                dl.max(dr) + 1,
            )
        }
    };
    deep(span, depth)?;
    operands.push((Expr { kind, span }, depth));
    Ok(())
}

fn binary_op(s: &str) -> BinaryOp {
    match s {
        "||" => BinaryOp::Or,
        "&&" => BinaryOp::And,
        "==" => BinaryOp::Eq,
        "!=" => BinaryOp::Ne,
        "<=" => BinaryOp::Le,
        ">=" => BinaryOp::Ge,
        "<" => BinaryOp::Lt,
        ">" => BinaryOp::Gt,
        "+" => BinaryOp::Add,
        "-" => BinaryOp::Sub,
        "*" => BinaryOp::Mul,
        "/" => BinaryOp::Div,
        _ => BinaryOp::Pow,
    }
}

pub(crate) use Rule as PestRule;

/// Runs the pest grammar alone (no pre-scan).
pub(crate) fn pest_parse(
    src: &str,
) -> Result<pest::iterators::Pairs<'_, Rule>, pest::error::Error<Rule>> {
    RloParser::parse(Rule::file, src)
}
