//! Backends: the reference interpreter, CUDA C text, Cranelift IR.

pub mod clif;
mod clif_emit;
mod clif_plan;
mod clif_reduce;
mod clif_scan;
mod clif_simd;
mod clif_sweep;
pub mod cuda;
pub mod interp;

use crate::arena::Handle;
use crate::ir::{Expr, Module};
use rlo_grammar::{Diagnostic, Span};

/// A backend (Cranelift or CUDA) could not generate code for a module: the node at fault when
/// there is one, its span (so the driver can point at `.rlo` source) and what went wrong.
/// Reaching it is a compiler bug: every well-typed, validated module must be compilable.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct BackendError {
    pub handle: Option<Handle<Expr>>,
    pub span: Span,
    pub message: String,
}

impl BackendError {
    pub(crate) fn at(m: &Module, h: Handle<Expr>, message: impl Into<String>) -> BackendError {
        BackendError {
            handle: Some(h),
            span: m.span(h),
            message: message.into(),
        }
    }

    pub(crate) fn general(message: impl Into<String>) -> BackendError {
        BackendError {
            handle: None,
            span: Span::default(),
            message: message.into(),
        }
    }

    pub fn to_diagnostic(&self) -> Diagnostic {
        let d = Diagnostic::error("E9101", format!("code generation failed: {}", self.message));
        match self.handle {
            Some(h) => d.with_primary(self.span, format!("while compiling {h}")),
            None => d,
        }
        .with_note("this is a bug in rloc; please report it with this file")
    }
}
