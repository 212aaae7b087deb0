//! Every `stdlib/*.rlo` present at test time parses, formats idempotently, and the formatted text
//! re-parses to the same AST (up to layout, see `rlo_grammar::cmp`).
//!
//! `RLO_STDLIB_DIR` points the test at another directory (e.g. a stdlib work tree).

use rlo_grammar::diagnostic::render_all;
use rlo_grammar::{cmp, fmt::format_file, parse, SourceMap};
use std::path::PathBuf;

#[test]
fn stdlib_parses_and_formats_stably() {
    let dir = std::env::var_os("RLO_STDLIB_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../stdlib"));
    let Ok(entries) = std::fs::read_dir(&dir) else {
        eprintln!("no stdlib directory at {} yet", dir.display());
        return;
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "rlo"))
        .collect();
    files.sort();
    let mut failures = Vec::new();
    for path in &files {
        let src = std::fs::read_to_string(path).expect("readable");
        let mut sm = SourceMap::new();
        let id = sm.add(path.display().to_string(), src.clone());
        let ast = match parse(&src, id) {
            Ok(a) => a,
            Err(ds) => {
                failures.push(render_all(&ds, &sm, false));
                continue;
            }
        };
        let once = format_file(&ast, &src);
        let again = match parse(&once, id) {
            Ok(a) => a,
            Err(ds) => {
                failures.push(format!(
                    "{}: formatted text does not parse: {ds:?}",
                    path.display()
                ));
                continue;
            }
        };
        if !cmp::same_modulo_layout(&ast, &again) {
            failures.push(format!("{}: formatting changed the AST", path.display()));
        }
        if format_file(&again, &once) != once {
            failures.push(format!("{}: formatting is not idempotent", path.display()));
        }
    }
    eprintln!("checked {} stdlib files in {}", files.len(), dir.display());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
