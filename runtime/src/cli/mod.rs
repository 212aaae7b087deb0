//! Argument parsing and the `check`, `fmt`, `emit`, `explain` subcommands (`run` is in `run.rs`).
//!
//! Every subcommand returns `Ok(exit code)` after printing its results, or `Err(message)` for a
//! failure that is not a set of diagnostics (unreadable file, bad batch); `main` prints those as
//! `error: …` and exits 1.

mod emit;
mod run;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use rlo_grammar::{Diagnostic, SourceMap};

#[derive(Parser, Debug)]
#[command(
    name = "rloc",
    version,
    about = "rlo compiler: check, format, inspect and run RL post-training objectives"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Parse and check files; print every error and warning.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// `human` (rustc-like) or `json` (one object per line on stdout).
        #[arg(long, value_enum, default_value_t = MessageFormat::Human)]
        message_format: MessageFormat,
    },
    /// Format files in place (canonical layout, comments kept).
    Fmt {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Change nothing; list files that are not formatted and exit 1 if there are any.
        #[arg(long)]
        check: bool,
    },
    /// Print an intermediate form of an objective.
    Emit {
        #[arg(value_enum)]
        what: EmitKind,
        file: PathBuf,
        /// Which objective of the file (needed when it has several).
        #[arg(long)]
        objective: Option<String>,
    },
    /// Evaluate an objective on a batch: loss, gradients, metrics, outputs.
    Run(run::RunArgs),
    /// Explain the gradient each token receives, as a formula.
    Explain {
        file: PathBuf,
        #[arg(long)]
        objective: Option<String>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum MessageFormat {
    Human,
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum EmitKind {
    /// The parsed syntax tree (JSON).
    Ast,
    /// The lowered forward IR.
    Ir,
    /// The IR with gradients, simplified (what backends run).
    Grad,
    /// The stages of the schedule and the number of token passes.
    Schedule,
    /// The generated CUDA C.
    Cuda,
    /// The generated Cranelift IR.
    Clif,
}

/// A failure of a subcommand: a plain message (`main` prefixes `error: `) or diagnostics already
/// rendered against their source.
#[derive(Debug)]
pub enum CliError {
    Plain(String),
    Rendered(String),
}

impl From<String> for CliError {
    fn from(s: String) -> CliError {
        CliError::Plain(s)
    }
}

pub fn dispatch(cli: Cli) -> Result<ExitCode, CliError> {
    match cli.command {
        Command::Check {
            files,
            message_format,
        } => check(&files, message_format),
        Command::Fmt { files, check } => fmt(&files, check),
        Command::Emit {
            what,
            file,
            objective,
        } => emit::emit(what, &file, objective),
        Command::Run(args) => run::run(&args),
        Command::Explain { file, objective } => emit::explain(&file, objective),
    }
}

/// Reads a source file; the error names it.
pub fn read_source(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn color() -> bool {
    std::io::stderr().is_terminal()
}

/// Prints diagnostics to stderr (human) or stdout (JSON, one object per line).
fn print_diagnostics(diags: &[Diagnostic], sources: &SourceMap, format: MessageFormat) {
    match format {
        MessageFormat::Human => {
            for d in diags {
                err!("{}", d.render(sources, color()));
            }
        }
        MessageFormat::Json => {
            for d in diags {
                outln!("{}", d.to_json(sources));
            }
        }
    }
}

/// Compiles `path` (one objective, or the one named); prints its warnings; renders failures.
pub fn compile_file(
    path: &Path,
    objective: Option<String>,
) -> Result<rlo_runtime::Objective, CliError> {
    let text = read_source(path)?;
    let opts = rlo_compiler::Options {
        objective,
        ..Default::default()
    };
    match rlo_runtime::Objective::compile(&path.display().to_string(), &text, &opts) {
        Ok(obj) => {
            print_diagnostics(
                &obj.compiled.warnings,
                &obj.compiled.sources,
                MessageFormat::Human,
            );
            Ok(obj)
        }
        Err(f) => Err(CliError::Rendered(f.render(color()))),
    }
}

/// The objectives a file declares, in order (empty when it cannot be parsed).
fn objective_names(text: &str) -> Vec<String> {
    let mut sm = SourceMap::new();
    let id = sm.add("<names>", text);
    match rlo_grammar::parse(text, id) {
        Ok(ast) => ast
            .items
            .iter()
            .filter_map(|it| match it {
                rlo_grammar::ast::Item::Objective(o) => Some(o.name.name.clone()),
                _ => None,
            })
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// The front end's "the file has no objective" (E0303).
const NO_OBJECTIVE: &str = "E0303";

fn check(files: &[PathBuf], format: MessageFormat) -> Result<ExitCode, CliError> {
    let mut failed = false;
    for path in files {
        let text = match read_source(path) {
            Ok(t) => t,
            Err(e) => {
                errln!("error: {e}");
                failed = true;
                continue;
            }
        };
        let name = path.display().to_string();
        // Check every objective of the file. A library (`fn`s only, like most of stdlib/) is
        // checked as a whole; that it has no objective is then not an error.
        let mut targets: Vec<Option<String>> =
            objective_names(&text).into_iter().map(Some).collect();
        let library = targets.is_empty();
        if targets.len() <= 1 {
            targets = vec![None];
        }
        let mut seen = std::collections::BTreeSet::new();
        for objective in targets {
            let opts = rlo_compiler::Options {
                objective,
                ..Default::default()
            };
            match rlo_compiler::compile(&name, &text, &opts) {
                Ok(c) => {
                    let fresh: Vec<Diagnostic> = c
                        .warnings
                        .into_iter()
                        .filter(|d| seen.insert(format!("{d:?}")))
                        .collect();
                    print_diagnostics(&fresh, &c.sources, format);
                }
                Err(f) => {
                    let fresh: Vec<Diagnostic> = f
                        .diagnostics
                        .iter()
                        .filter(|d| !(library && d.code == NO_OBJECTIVE))
                        .filter(|d| seen.insert(format!("{d:?}")))
                        .cloned()
                        .collect();
                    if !fresh.iter().any(|d| d.is_error()) {
                        print_diagnostics(&fresh, &f.sources, format);
                        continue;
                    }
                    failed = true;
                    match format {
                        MessageFormat::Human => {
                            err!(
                                "{}",
                                rlo_grammar::diagnostic::render_all(&fresh, &f.sources, color())
                            )
                        }
                        MessageFormat::Json => print_diagnostics(&fresh, &f.sources, format),
                    }
                }
            }
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn fmt(files: &[PathBuf], check_only: bool) -> Result<ExitCode, CliError> {
    let mut failed = false;
    let mut unformatted = Vec::new();
    for path in files {
        let text = match read_source(path) {
            Ok(t) => t,
            Err(e) => {
                errln!("error: {e}");
                failed = true;
                continue;
            }
        };
        let mut sources = SourceMap::new();
        let id = sources.add(path.display().to_string(), text.as_str());
        let ast = match rlo_grammar::parse(&text, id) {
            Ok(a) => a,
            Err(diags) => {
                err!(
                    "{}",
                    rlo_grammar::diagnostic::render_all(&diags, &sources, color())
                );
                failed = true;
                continue;
            }
        };
        let formatted = rlo_grammar::fmt::format_file(&ast, &text);
        if formatted != text {
            if check_only {
                unformatted.push(path.display().to_string());
            } else if let Err(e) = std::fs::write(path, formatted) {
                errln!("error: {}: {e}", path.display());
                failed = true;
            }
        }
    }
    for f in &unformatted {
        outln!("{f}");
    }
    if !unformatted.is_empty() {
        errln!(
            "{} file{} not formatted (run `rloc fmt` to fix)",
            unformatted.len(),
            if unformatted.len() == 1 {
                " is"
            } else {
                "s are"
            }
        );
    }
    Ok(if failed || !unformatted.is_empty() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
