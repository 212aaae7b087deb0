//! rlo-grammar: text → AST. The only crate that depends on pest.
//!
//! - [`parse`]`(src, file)` returns the AST of one file or its syntax errors, as [`Diagnostic`]s
//!   (codes E0001–E0012, see README.md); never panics, never overflows the stack.
//! - [`fmt::format_file`] prints an AST back in canonical layout, comments preserved.
//! - [`ast_dump`] / [`expr_dump`]: compact S-expressions for snapshot tests.
//! - [`cmp::same_modulo_layout`]: AST equality up to spans, parentheses and layout.
//!
//! `README.md` has the file table, the EBNF summary of the grammar and the formatter's rules.

pub mod ast;
pub mod cmp;
pub mod diagnostic;
mod dump;
pub mod fmt;
mod parse;
mod perror;
mod recover;
mod scan;
pub mod span;

pub use diagnostic::{Diagnostic, Label, Severity};
pub use dump::{ast_dump, expr_dump};
pub use parse::parse;
pub use scan::MAX_NESTING;
pub use span::{FileId, SourceFile, SourceMap, Span};
