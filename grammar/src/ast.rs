//! The untyped AST: exactly what the user wrote, with a [`Span`] on every node.
//!
//! Produced by `parse`, consumed by the compiler's resolver/checker and by the formatter. Comments
//! are not nodes: they are kept in [`File::comments`] (with spans) so `fmt` can put them back.
//! Doc comments (`///`) are attached to the item, parameter or statement that follows them, one
//! `String` per line, without the `///` and one following space (`/// text` → `"text"`). The span
//! of a documented node starts after its doc comments, at its first token.

use crate::span::Span;
use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct File {
    pub items: Vec<Item>,
    /// Every `//` and `/* */` comment of the file, in source order (doc comments excluded).
    pub comments: Vec<Comment>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Comment {
    /// The comment's text including its delimiters (`// x`, `/* x */`).
    pub text: String,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum Item {
    Use(UseDecl),
    Fn(FnDecl),
    Objective(ObjectiveDecl),
}

/// `use std::kl::k3`, `use std::kl::{k1, k3}`, `use std::kl::*`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct UseDecl {
    /// The module path: `["std", "kl"]`.
    pub module: Vec<Ident>,
    pub names: UseNames,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum UseNames {
    /// `use std::kl::*`
    Glob(Span),
    /// `use std::kl::k3` or `use std::kl::{k1, k3}`
    List(Vec<Ident>),
}

/// A level-polymorphic function: `fn k3(logp, ref_logp) { let d = ...; exp(d) - d - 1 }`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FnDecl {
    pub doc: Vec<String>,
    pub name: Ident,
    pub params: Vec<FnParam>,
    pub body: Block,
    pub span: Span,
}

/// A function parameter; `ty` optionally constrains it (`x: tok`, `eps: f32`, `m: seq bool`) and a
/// default makes it optional at call sites (`eps = 0.2`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FnParam {
    /// `///` lines written just before the parameter.
    pub doc: Vec<String>,
    pub name: Ident,
    pub ty: Option<TypeAnn>,
    pub default: Option<Expr>,
    pub span: Span,
}

/// `tok`, `seq bool`, `f32`, `bool`: an optional level and an optional dtype.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TypeAnn {
    pub level: Option<Ident>,
    pub dtype: Option<Ident>,
    pub span: Span,
}

/// `{ let a = ...; let b = ...; result }`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Block {
    pub stmts: Vec<Stmt>,
    pub result: Box<Expr>,
    pub span: Span,
}

/// `objective grpo(eps: f32 = 0.2, beta: f32 = 0.04) { ... }`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ObjectiveDecl {
    pub doc: Vec<String>,
    pub name: Ident,
    pub params: Vec<ParamDecl>,
    pub body: Vec<Stmt>,
    pub span: Span,
}

/// A run-time scalar parameter of an objective (batch level).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ParamDecl {
    /// `///` lines written just before the parameter.
    pub doc: Vec<String>,
    pub name: Ident,
    pub ty: Option<TypeAnn>,
    pub default: Option<Expr>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Stmt {
    pub doc: Vec<String>,
    pub kind: StmtKind,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum StmtKind {
    /// `input logp: tok diff` / `input ok: seq bool`
    Input {
        name: Ident,
        ty: TypeAnn,
        diff: Option<Span>,
    },
    /// `let x = e`
    Let { name: Ident, value: Expr },
    /// `loss e`
    Loss { value: Expr },
    /// `metric name = e`
    Metric { name: Ident, value: Expr },
    /// `output name = e`
    Output { name: Ident, value: Expr },
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum ExprKind {
    /// `0.2`, `1e-4`, `3`
    Number(f64),
    /// `true`, `false`
    Bool(bool),
    Name(Ident),
    Unary {
        op: UnaryOp,
        operand: Box<Expr>,
    },
    Binary {
        op: BinaryOp,
        lhs: Box<Expr>,
        rhs: Box<Expr>,
    },
    /// `f(a, b, where: c)`
    Call {
        callee: Ident,
        args: Vec<Arg>,
    },
    /// `if c then a else b`
    If {
        cond: Box<Expr>,
        then: Box<Expr>,
        otherwise: Box<Expr>,
    },
    /// `(e)`: kept so spans and `fmt` round-trip; means the same as `e`.
    Paren(Box<Expr>),
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Arg {
    /// `Some` for a named argument (`where: mask`, `q: 0.8`).
    pub name: Option<Ident>,
    pub value: Expr,
    pub span: Span,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum UnaryOp {
    /// `-x`
    Neg,
    /// `!x`
    Not,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    /// `a ^ b` (right associative, binds tighter than unary minus: `-x^2 = -(x^2)`)
    Pow,
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
    /// `&&`
    And,
    /// `||`
    Or,
}

impl BinaryOp {
    pub fn symbol(self) -> &'static str {
        match self {
            BinaryOp::Add => "+",
            BinaryOp::Sub => "-",
            BinaryOp::Mul => "*",
            BinaryOp::Div => "/",
            BinaryOp::Pow => "^",
            BinaryOp::Lt => "<",
            BinaryOp::Le => "<=",
            BinaryOp::Gt => ">",
            BinaryOp::Ge => ">=",
            BinaryOp::Eq => "==",
            BinaryOp::Ne => "!=",
            BinaryOp::And => "&&",
            BinaryOp::Or => "||",
        }
    }

    /// Binding power; higher binds tighter. `||` 1, `&&` 2, comparisons 3, `+ -` 4, `* /` 5, `^` 7
    /// (unary operators sit at 6).
    pub fn precedence(self) -> u8 {
        match self {
            BinaryOp::Or => 1,
            BinaryOp::And => 2,
            BinaryOp::Lt
            | BinaryOp::Le
            | BinaryOp::Gt
            | BinaryOp::Ge
            | BinaryOp::Eq
            | BinaryOp::Ne => 3,
            BinaryOp::Add | BinaryOp::Sub => 4,
            BinaryOp::Mul | BinaryOp::Div => 5,
            BinaryOp::Pow => 7,
        }
    }
}
