//! The front end, in naga's phases: [`resolve`] (modules, imports, names, recursion) →
//! [`check`] (levels, dtypes, calls; builds the IR through [`lower::Builder`] in the same walk,
//! inlining functions per call site) → the lowered [`ir::Module`](crate::ir::Module) of the
//! selected objective. [`builtins`] is the one table of builtin functions and values; [`error`]
//! holds every diagnostic's wording.
//!
//! All errors of a file are collected (never just the first) and returned sorted by position;
//! every objective of the file is checked, even when only one is selected.

pub mod builtins;
pub mod check;
pub mod error;
pub mod lower;
pub mod objective;
pub mod resolve;

use crate::{ir::Module, Options};
use error::FrontError;
use rlo_grammar::{ast, Diagnostic, SourceMap, Span};

/// The result of a successful front end: the lowered forward IR and any warnings.
pub struct Checked {
    pub module: Module,
    pub warnings: Vec<Diagnostic>,
}

/// Resolves names (loading imported stdlib modules into `sources`), checks every rule of
/// spec.md, and lowers the selected objective. Returns **all** errors found (and the warnings),
/// sorted by position.
pub fn analyze(
    file: &ast::File,
    sources: &mut SourceMap,
    opts: &Options,
) -> Result<Checked, Vec<Diagnostic>> {
    let mut errors: Vec<FrontError> = Vec::new();
    let mut parse_errors: Vec<Diagnostic> = Vec::new();
    let prog = resolve::resolve(file, sources, opts, &mut errors, &mut parse_errors);

    let mut diags: Vec<Diagnostic> = parse_errors;
    let mut warnings: Vec<Diagnostic> = Vec::new();
    let objectives: Vec<&ast::ObjectiveDecl> = file
        .items
        .iter()
        .filter_map(|it| match it {
            ast::Item::Objective(o) => Some(o),
            ast::Item::Use(_) | ast::Item::Fn(_) => None,
        })
        .collect();
    let names: Vec<String> = objectives.iter().map(|o| o.name.name.clone()).collect();
    let selected: Option<usize> = match &opts.objective {
        Some(want) => {
            let found = names.iter().position(|n| n == want);
            if found.is_none() {
                errors.push(FrontError::UnknownObjective {
                    span: file_start(file),
                    name: want.clone(),
                    names: names.clone(),
                });
            }
            found
        }
        None => match objectives.as_slice() {
            [] => {
                errors.push(FrontError::NoObjective {
                    span: file_start(file),
                });
                None
            }
            [_] => Some(0),
            [first, ..] => {
                errors.push(FrontError::AmbiguousObjective {
                    span: first.name.span,
                    names: names.clone(),
                });
                None
            }
        },
    };

    let mut module = None;
    for (i, o) in objectives.iter().enumerate() {
        let (m, reported, warns) = objective::objective(&prog, o);
        for r in reported {
            let mut d = r.error.to_diagnostic();
            if let Some((span, name)) = r.call_site {
                d = d.with_secondary(span, format!("in this call of `{name}`"));
            }
            if let Some((span, name)) = r.root_site {
                d = d.with_secondary(span, format!("reached from this call of `{name}`"));
            }
            diags.push(d);
        }
        if Some(i) == selected {
            warnings.extend(warns.iter().map(FrontError::to_diagnostic));
            module = m;
        }
    }
    for e in errors {
        let d = e.to_diagnostic();
        if d.is_error() {
            diags.push(d);
        } else {
            warnings.push(d);
        }
    }
    sort_dedup(&mut diags);
    sort_dedup(&mut warnings);
    match module {
        Some(module) if diags.is_empty() => Ok(Checked { module, warnings }),
        _ => {
            diags.extend(warnings);
            sort_dedup(&mut diags);
            Err(diags)
        }
    }
}

fn file_start(file: &ast::File) -> Span {
    Span {
        end: file.span.start,
        ..file.span
    }
}

/// Sorts by primary position (files in SourceMap order) and removes exact duplicates.
fn sort_dedup(diags: &mut Vec<Diagnostic>) {
    diags.sort_by_key(|d| {
        let s = d.primary_span().unwrap_or_default();
        (s.file, s.start, s.end)
    });
    diags.dedup();
}

#[cfg(test)]
mod tests;
