//! The front end: name resolution (stdlib imports), level/dtype checking, lowering to IR.
//! (Owned by the language-core work.)

use crate::{ir::Module, Options};
use rlo_grammar::{ast, Diagnostic, SourceMap};

/// The result of a successful front end: the lowered forward IR and any warnings.
pub struct Checked {
    pub module: Module,
    pub warnings: Vec<Diagnostic>,
}

/// Resolves names (loading imported stdlib modules into `sources`), checks every rule of
/// spec.md, and lowers the selected objective. Returns **all** errors found.
pub fn analyze(
    file: &ast::File,
    sources: &mut SourceMap,
    opts: &Options,
) -> Result<Checked, Vec<Diagnostic>> {
    let _ = (file, sources, opts);
    Err(vec![Diagnostic::error(
        "E0100",
        "front end not implemented yet",
    )])
}
