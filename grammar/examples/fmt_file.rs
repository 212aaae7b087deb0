//! Formats a file given on the command line (prints the diagnostics if it does not parse).
use rlo_grammar::{fmt::format_file, parse, SourceMap};

fn main() {
    let path = std::env::args().nth(1).unwrap_or_default();
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let mut sm = SourceMap::new();
    let f = sm.add(path, text.clone());
    match parse(&text, f) {
        Ok(ast) => print!("{}", format_file(&ast, &text)),
        Err(ds) => print!("{}", rlo_grammar::diagnostic::render_all(&ds, &sm, false)),
    }
}
