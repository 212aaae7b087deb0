//! Canonical formatter: AST (+ comments) → text. (Owned by the grammar work.)

use crate::ast;

/// Formats a parsed file in canonical layout, comments preserved.
pub fn format_file(_file: &ast::File, src: &str) -> String {
    src.to_string()
}
