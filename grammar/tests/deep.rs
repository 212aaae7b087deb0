//! Pathological nesting and long chains: an error or an AST, never a stack overflow.

use rlo_grammar::{parse, FileId, MAX_NESTING};

fn wrap(expr: &str) -> String {
    format!("objective f() {{\n    loss {expr}\n}}\n")
}

fn codes(src: &str) -> Vec<&'static str> {
    match parse(src, FileId(0)) {
        Ok(_) => Vec::new(),
        Err(ds) => ds.iter().map(|d| d.code).collect(),
    }
}

#[test]
fn deep_parens_are_an_error() {
    let n = 100_000;
    let src = wrap(&format!("{}x{}", "(".repeat(n), ")".repeat(n)));
    assert_eq!(codes(&src), ["E0005"]);
    // Unclosed: still the nesting error (found before the end).
    let src = wrap(&"(".repeat(n));
    assert_eq!(codes(&src), ["E0005"]);
}

#[test]
fn nesting_at_the_limit_parses() {
    // The objective's `{` is one level; calls inside nest up to the limit.
    let n = MAX_NESTING - 1;
    let src = wrap(&format!("{}x{}", "f(".repeat(n), ")".repeat(n)));
    assert!(parse(&src, FileId(0)).is_ok(), "{:?}", codes(&src));
    let n = MAX_NESTING - 2;
    let src = wrap(&format!("{}x{}", "(".repeat(n), ")".repeat(n)));
    assert!(parse(&src, FileId(0)).is_ok(), "{:?}", codes(&src));
}

#[test]
fn long_unary_runs_are_an_error() {
    for op in ["-", "!"] {
        let src = wrap(&format!("{}x", op.repeat(100_000)));
        assert_eq!(codes(&src), ["E0005"], "{op}");
    }
    let src = wrap(&format!("{}x", "-".repeat(100)));
    assert!(codes(&src).is_empty());
}

#[test]
fn long_chains_are_an_error_not_an_overflow() {
    // 20k terms keep the debug-build test fast; the depth check does not depend on the length.
    for op in ["+", "^", "&&"] {
        let src = wrap(&vec!["a"; 20_000].join(op));
        assert_eq!(codes(&src), ["E0005"], "{op}");
    }
    let src = wrap(&vec!["a"; 200].join(" + "));
    assert!(codes(&src).is_empty());
}

#[test]
fn deep_if_chains_are_an_error() {
    let n = 100_000;
    let src = wrap(&format!("{}1{}", "if c then 1 else ".repeat(n), ""));
    assert_eq!(codes(&src), ["E0005"]);
    let src = wrap(&format!("{}c then 1 else 2", "if ".repeat(n)));
    assert_eq!(codes(&src), ["E0005"]);
    let src = wrap(&format!("{}1", "if c then 1 else ".repeat(100)));
    assert!(codes(&src).is_empty());
}

#[test]
fn deep_braces_are_an_error() {
    let n = 100_000;
    let src = format!("{}{}", "{".repeat(n), "}".repeat(n));
    assert_eq!(codes(&src), ["E0005"]);
}
