//! [`ast_dump`]: a compact S-expression rendering of an AST, without spans, for snapshot tests
//! (grammar, front end, stdlib) and `rloc emit ast`.
//!
//! ```text
//! (use std::kl (k3))
//! (fn k3 (logp ref_logp)
//!   (let d (- ref_logp logp))
//!   (- (- (call exp d) d) 1))
//! (objective grpo ((eps f32 = 0.2))
//!   (input logp tok diff)
//!   (loss (call batch_mean (neg x))))
//! ```
//! Parentheses the user wrote show as `(paren e)`; doc comments as `(doc "text")`; `//`/`/* */`
//! comments are listed at the end as `(comment "...")`.

use crate::ast::{self, Expr, ExprKind, Item, StmtKind, UnaryOp, UseNames};
use std::fmt::Write;

/// The whole file, one item (and one statement) per line.
pub fn ast_dump(file: &ast::File) -> String {
    let mut out = String::new();
    for item in &file.items {
        match item {
            Item::Use(u) => {
                let module: Vec<&str> = u.module.iter().map(|i| i.name.as_str()).collect();
                let names = match &u.names {
                    UseNames::Glob(_) => "*".to_string(),
                    UseNames::List(l) => {
                        let n: Vec<&str> = l.iter().map(|i| i.name.as_str()).collect();
                        format!("({})", n.join(" "))
                    }
                };
                let _ = writeln!(out, "(use {} {names})", module.join("::"));
            }
            Item::Fn(f) => {
                docs(&mut out, &f.doc, "");
                let params: Vec<String> = f.params.iter().map(param).collect();
                let _ = write!(out, "(fn {} ({})", f.name.name, params.join(" "));
                for s in &f.body.stmts {
                    stmt(&mut out, s);
                }
                let _ = writeln!(out, "\n  {})", expr_dump(&f.body.result));
            }
            Item::Objective(o) => {
                docs(&mut out, &o.doc, "");
                let params: Vec<String> = o
                    .params
                    .iter()
                    .map(|p| {
                        param(&ast::FnParam {
                            doc: p.doc.clone(),
                            name: p.name.clone(),
                            ty: p.ty.clone(),
                            default: p.default.clone(),
                            span: p.span,
                        })
                    })
                    .collect();
                let _ = write!(out, "(objective {} ({})", o.name.name, params.join(" "));
                for s in &o.body {
                    stmt(&mut out, s);
                }
                out.push_str(")\n");
            }
        }
    }
    for c in &file.comments {
        let _ = writeln!(out, "(comment {:?})", c.text);
    }
    out
}

fn docs(out: &mut String, doc: &[String], indent: &str) {
    for d in doc {
        if indent.is_empty() {
            let _ = writeln!(out, "(doc {d:?})");
        } else {
            let _ = write!(out, "\n{indent}(doc {d:?})");
        }
    }
}

fn ty(t: &ast::TypeAnn) -> String {
    let parts: Vec<&str> = [&t.level, &t.dtype]
        .into_iter()
        .flatten()
        .map(|i| i.name.as_str())
        .collect();
    parts.join(" ")
}

fn param(p: &ast::FnParam) -> String {
    let mut s = String::new();
    for d in &p.doc {
        let _ = write!(s, "(doc {d:?}) ");
    }
    if p.ty.is_none() && p.default.is_none() {
        s.push_str(&p.name.name);
        return s;
    }
    let _ = write!(s, "({}", p.name.name);
    if let Some(t) = &p.ty {
        let _ = write!(s, " {}", ty(t));
    }
    if let Some(d) = &p.default {
        let _ = write!(s, " = {}", expr_dump(d));
    }
    s.push(')');
    s
}

fn stmt(out: &mut String, s: &ast::Stmt) {
    docs(out, &s.doc, "  ");
    let _ = match &s.kind {
        StmtKind::Input { name, ty: t, diff } => write!(
            out,
            "\n  (input {} {}{})",
            name.name,
            ty(t),
            if diff.is_some() { " diff" } else { "" }
        ),
        StmtKind::Let { name, value } => {
            write!(out, "\n  (let {} {})", name.name, expr_dump(value))
        }
        StmtKind::Loss { value } => write!(out, "\n  (loss {})", expr_dump(value)),
        StmtKind::Metric { name, value } => {
            write!(out, "\n  (metric {} {})", name.name, expr_dump(value))
        }
        StmtKind::Output { name, value } => {
            write!(out, "\n  (output {} {})", name.name, expr_dump(value))
        }
    };
}

/// One expression as an S-expression: `(+ a (* b c))`, `(call f x (where: m))`, `(neg x)`.
pub fn expr_dump(e: &Expr) -> String {
    let mut s = String::new();
    expr(&mut s, e);
    s
}

fn expr(out: &mut String, e: &Expr) {
    match &e.kind {
        ExprKind::Number(v) => {
            let _ = write!(out, "{v}");
        }
        ExprKind::Bool(b) => {
            let _ = write!(out, "{b}");
        }
        ExprKind::Name(i) => out.push_str(&i.name),
        ExprKind::Unary { op, operand } => {
            out.push_str(match op {
                UnaryOp::Neg => "(neg ",
                UnaryOp::Not => "(not ",
            });
            expr(out, operand);
            out.push(')');
        }
        ExprKind::Binary { op, lhs, rhs } => {
            let _ = write!(out, "({} ", op.symbol());
            expr(out, lhs);
            out.push(' ');
            expr(out, rhs);
            out.push(')');
        }
        ExprKind::Call { callee, args } => {
            let _ = write!(out, "(call {}", callee.name);
            for a in args {
                out.push(' ');
                match &a.name {
                    Some(n) => {
                        let _ = write!(out, "({}: ", n.name);
                        expr(out, &a.value);
                        out.push(')');
                    }
                    None => expr(out, &a.value),
                }
            }
            out.push(')');
        }
        ExprKind::If {
            cond,
            then,
            otherwise,
        } => {
            out.push_str("(if ");
            expr(out, cond);
            out.push(' ');
            expr(out, then);
            out.push(' ');
            expr(out, otherwise);
            out.push(')');
        }
        ExprKind::Paren(inner) => {
            out.push_str("(paren ");
            expr(out, inner);
            out.push(')');
        }
    }
}
