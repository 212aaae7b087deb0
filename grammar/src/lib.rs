//! rlo-grammar: text → AST. The only crate that depends on pest.
//!
//! `parse(src, file)` returns the AST of one file or every syntax error found, as [`Diagnostic`]s.
//! `fmt::format_file` prints an AST back in canonical layout, comments preserved.

pub mod ast;
pub mod cmp;
pub mod diagnostic;
mod dump;
pub mod fmt;
mod parse;
mod perror;
mod scan;
pub mod span;

pub use diagnostic::{Diagnostic, Label, Severity};
pub use dump::{ast_dump, expr_dump};
pub use parse::parse;
pub use scan::MAX_NESTING;
pub use span::{FileId, SourceFile, SourceMap, Span};
