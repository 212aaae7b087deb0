//! Golden files: the AST dump and the formatted text of every `tests/programs/*.rlo`, and the
//! rendered diagnostics of every `tests/errors/*.rlo` (one syntax error topic per file).

use rlo_grammar::diagnostic::render_all;
use rlo_grammar::{ast_dump, cmp, fmt::format_file, parse, SourceMap};
use std::path::{Path, PathBuf};

fn rlo_files(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "rlo"))
        .collect();
    files.sort();
    files
}

fn stem(p: &Path) -> String {
    p.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[test]
fn valid_programs() {
    let files = rlo_files("programs");
    assert!(files.len() >= 9, "programs missing: {files:?}");
    for path in files {
        let name = stem(&path);
        let src = std::fs::read_to_string(&path).expect("readable");
        let mut sm = SourceMap::new();
        let id = sm.add(format!("{name}.rlo"), src.clone());
        let ast = match parse(&src, id) {
            Ok(a) => a,
            Err(ds) => panic!("{name}:\n{}", render_all(&ds, &sm, false)),
        };
        insta::assert_snapshot!(format!("ast_{name}"), ast_dump(&ast));
        let formatted = format_file(&ast, &src);
        insta::assert_snapshot!(format!("fmt_{name}"), formatted);
        let again = parse(&formatted, id).unwrap_or_else(|e| panic!("{name} fmt: {e:?}"));
        assert!(
            cmp::same_modulo_layout(&ast, &again),
            "{name}: formatted text parses to a different AST"
        );
        assert_eq!(
            format_file(&again, &formatted),
            formatted,
            "{name}: not idempotent"
        );
    }
}

#[test]
fn syntax_errors() {
    let files = rlo_files("errors");
    assert!(files.len() >= 10, "error cases missing: {files:?}");
    let mut codes = std::collections::BTreeSet::new();
    for path in files {
        let name = stem(&path);
        let src = std::fs::read_to_string(&path).expect("readable");
        let mut sm = SourceMap::new();
        let id = sm.add(format!("{name}.rlo"), src.clone());
        let diags = match parse(&src, id) {
            Ok(_) => panic!("{name}: parsed, but it is a syntax error case"),
            Err(d) => d,
        };
        assert!(!diags.is_empty());
        for d in &diags {
            codes.insert(d.code);
            let span = d
                .primary_span()
                .expect("every syntax error points somewhere");
            assert!(src.is_char_boundary(span.start as usize));
            assert!(src.is_char_boundary(span.end as usize));
        }
        let rendered = render_all(&diags, &sm, false);
        insta::assert_snapshot!(
            format!("err_{name}"),
            format!("----- SOURCE\n{src}----- ERROR\n{rendered}")
        );
    }
    assert!(codes.len() >= 10, "distinct error codes: {codes:?}");
}
