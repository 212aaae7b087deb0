//! `rloc`: the command line — `check`, `fmt`, `emit`, `run`, `explain`.
//!
//! Exit status: 0 on success, 1 when the input is wrong (diagnostics, a bad batch, unformatted
//! files under `fmt --check`), 2 for command-line usage errors. Never panics on user input.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::dispatch(args) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(1)
        }
    }
}
