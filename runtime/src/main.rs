//! `rloc`: the command line — `check`, `fmt`, `emit`, `run`, `explain`.
//!
//! Exit status: 0 on success, 1 when the input is wrong (diagnostics, a bad batch, unformatted
//! files under `fmt --check`), 2 for command-line usage errors. Never panics on user input.

/// `println!` that never panics (a closed pipe, `rloc emit ir f.rlo | head`, is not an error).
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

/// `print!` that never panics.
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout(), $($t)*);
    }};
}

/// `eprintln!` that never panics.
macro_rules! errln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($t)*);
    }};
}

/// `eprint!` that never panics.
macro_rules! err {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stderr(), $($t)*);
    }};
}

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::dispatch(args) {
        Ok(code) => code,
        Err(cli::CliError::Plain(message)) => {
            errln!("error: {message}");
            ExitCode::from(1)
        }
        Err(cli::CliError::Rendered(diagnostics)) => {
            err!("{diagnostics}");
            ExitCode::from(1)
        }
    }
}
