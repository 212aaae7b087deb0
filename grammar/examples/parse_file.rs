//! Parses a file given on the command line and prints the AST dump or the diagnostics.
use rlo_grammar::{ast_dump, parse, SourceMap};

fn main() {
    let path = std::env::args().nth(1).unwrap_or_default();
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let mut sm = SourceMap::new();
    let f = sm.add(path, text.clone());
    match parse(&text, f) {
        Ok(ast) => print!("{}", ast_dump(&ast)),
        Err(ds) => print!("{}", rlo_grammar::diagnostic::render_all(&ds, &sm, false)),
    }
}
