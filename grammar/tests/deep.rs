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

/// `if` chains nested through conditions and `then` branches: whatever parses formats to text
/// that parses again and formats to itself. The formatter's readability parentheses add one
/// level per `if`; near the limit it leaves them out rather than print text the parser rejects.
#[test]
fn formatting_deep_if_conditions_keeps_them_parseable() {
    use rlo_grammar::fmt::format_file;
    let cond_chain = |n: usize| {
        let mut e = "x > 0".to_string();
        for i in 0..n {
            e = format!("if {e} then x > {i} else x < {i}");
        }
        e
    };
    let then_chain = |n: usize| {
        let mut e = "x".to_string();
        for i in 0..n {
            e = format!("if c{i} then {e} else {i}");
        }
        e
    };
    let mut readable_seen = false;
    let mut plain_seen = false;
    for n in [3, 60, 126, 127, 128, 129, 200, 250, MAX_NESTING - 4] {
        for (kind, e) in [("cond", cond_chain(n)), ("then", then_chain(n))] {
            let src = wrap(&e);
            let Ok(ast) = parse(&src, FileId(0)) else {
                continue;
            };
            let once = format_file(&ast, &src);
            let again = parse(&once, FileId(0))
                .unwrap_or_else(|d| panic!("{kind} chain of {n}: formatted text fails: {d:?}"));
            assert_eq!(
                format_file(&again, &once),
                once,
                "{kind} chain of {n}: not idempotent"
            );
            if once.contains("if (if") || once.contains("then (if") {
                readable_seen = true;
            } else if n > 100 {
                plain_seen = true;
            }
        }
    }
    // Both branches of the choice ran: shallow chains keep the parentheses, deep ones drop them.
    assert!(readable_seen && plain_seen);
}
