//! rlo-compiler: AST → checked IR → gradient IR → simplified IR → schedule → backends.
//!
//! [`compile`] is the whole pipeline as straight-line code. Each step is a named function from
//! module to module; in debug builds and tests the validator runs after each one (`run_pass`), and
//! `RLO_DEBUG=ir` dumps every stage to stderr.
#![deny(clippy::unwrap_used, clippy::indexing_slicing)]
#![warn(clippy::wildcard_enum_match_arm)]

pub mod arena;
pub mod autodiff;
pub mod back;
pub mod data;
pub mod explain;
pub mod front;
pub mod ir;
pub mod passes;
pub mod schedule;
pub mod special;
pub mod split;
pub mod stdlib;
pub mod types;
pub mod valid;

use rlo_grammar::{Diagnostic, SourceMap};

pub use arena::Handle;
pub use data::{Batch, Evaluation, Layout};
pub use ir::Module;
pub use schedule::Schedule;
pub use types::{DType, Level, Ty};

/// Options of one compilation.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Which objective of the file to compile (needed when the file has several).
    pub objective: Option<String>,
    /// Extra modules `(name, source)` importable as `std::<name>`, searched before the embedded
    /// stdlib (tests inject modules with it; tools can add a search path).
    pub extra_modules: Vec<(String, String)>,
}

/// A compiled objective: the IR with its gradients, its schedule, and the sources it came from.
#[derive(Clone, Debug)]
pub struct Compiled {
    pub sources: SourceMap,
    /// The lowered forward IR, before autodiff (for `rloc emit ir`).
    pub forward: Module,
    /// Forward + gradients, simplified: what backends run.
    pub module: Module,
    pub schedule: Schedule,
    /// Warnings (errors stop compilation).
    pub warnings: Vec<Diagnostic>,
}

/// Compilation failed: every diagnostic found, with the sources to render them against.
#[derive(Clone, Debug)]
pub struct Failure {
    pub sources: SourceMap,
    pub diagnostics: Vec<Diagnostic>,
}

impl Failure {
    pub fn render(&self, color: bool) -> String {
        rlo_grammar::diagnostic::render_all(&self.diagnostics, &self.sources, color)
    }
}

/// Parses, checks, lowers, differentiates, simplifies and schedules the objective in `text`.
pub fn compile(name: &str, text: &str, opts: &Options) -> Result<Compiled, Box<Failure>> {
    let mut sources = SourceMap::new();
    let file = sources.add(name, text);
    let fail = |sources: &SourceMap, diagnostics| {
        Box::new(Failure {
            sources: sources.clone(),
            diagnostics,
        })
    };

    let ast = rlo_grammar::parse(text, file).map_err(|d| fail(&sources, d))?;
    let front::Checked { module, warnings } =
        front::analyze(&ast, &mut sources, opts).map_err(|d| fail(&sources, d))?;
    let forward = run_pass("lower", module, &sources).map_err(|d| fail(&sources, d))?;
    let module = run_pass(
        "autodiff",
        autodiff::differentiate(forward.clone()),
        &sources,
    )
    .map_err(|d| fail(&sources, d))?;
    let module =
        run_pass("simplify", passes::simplify(module), &sources).map_err(|d| fail(&sources, d))?;
    let schedule = schedule::schedule(&module);
    if std::env::var("RLO_DEBUG").is_ok_and(|v| v.split(',').any(|s| s == "schedule")) {
        eprintln!("== schedule\n{schedule:#?}");
    }

    Ok(Compiled {
        sources,
        forward,
        module,
        schedule,
        warnings,
    })
}

/// Validates the module a pass produced (debug builds and tests), and dumps it when asked.
fn run_pass(name: &str, m: Module, sources: &SourceMap) -> Result<Module, Vec<Diagnostic>> {
    if std::env::var("RLO_DEBUG").is_ok_and(|v| v.split(',').any(|s| s == "ir")) {
        eprintln!("== after {name}\n{}", ir::display_module(&m));
    }
    if cfg!(debug_assertions) || cfg!(test) {
        valid::validate(&m).map_err(|e| vec![e.to_diagnostic(name, sources)])?;
    }
    Ok(m)
}
