//! Precedence and structure checks written by hand (snapshots live in `snapshots.rs`).

use rlo_grammar::{ast, expr_dump, parse, FileId};

fn expr(src: &str) -> String {
    let file = parse(&format!("objective f() {{ loss {src} }}"), FileId(0))
        .unwrap_or_else(|e| panic!("{src}: {e:?}"));
    match &file.items[0] {
        ast::Item::Objective(o) => match &o.body[0].kind {
            ast::StmtKind::Loss { value } => expr_dump(value),
            k => panic!("{k:?}"),
        },
        i => panic!("{i:?}"),
    }
}

#[test]
fn precedence_follows_the_spec() {
    let cases = [
        ("a + b * c", "(+ a (* b c))"),
        ("a - b - c", "(- (- a b) c)"),
        ("a / b * c", "(* (/ a b) c)"),
        ("-x ^ 2", "(neg (^ x 2))"),
        ("a ^ b ^ c", "(^ a (^ b c))"),
        ("2 ^ -1", "(^ 2 (neg 1))"),
        ("-a * b", "(* (neg a) b)"),
        ("!a && b || c", "(|| (&& (not a) b) c)"),
        ("a || b && c", "(|| a (&& b c))"),
        ("a + 1 < b * 2", "(< (+ a 1) (* b 2))"),
        ("a == b && c != d", "(&& (== a b) (!= c d))"),
        ("if a then b else c + 1", "(if a b (+ c 1))"),
        ("1 + if a then b else c", "(+ 1 (if a b c))"),
        ("if a then b else if c then d else e", "(if a b (if c d e))"),
        ("f(x, y, where: m > 0)", "(call f x y (where: (> m 0)))"),
        ("f()", "(call f)"),
        ("(a + b) * c", "(* (paren (+ a b)) c)"),
        ("1e-4 + 2.5E+3 + 0.2 + 3", "(+ (+ (+ 0.0001 2500) 0.2) 3)"),
        ("true && false", "(&& true false)"),
        ("a\n    - b", "(- a b)"),
        ("tok + seq + bool", "(+ (+ tok seq) bool)"),
    ];
    for (src, want) in cases {
        assert_eq!(expr(src), want, "{src}");
    }
}

#[test]
fn spans_cover_the_node_text() {
    let src = "objective f() {\n    let x = (a + b) * c   // c\n    loss x;\n}\n";
    let file = parse(src, FileId(0)).expect("parses");
    let ast::Item::Objective(o) = &file.items[0] else {
        panic!()
    };
    assert_eq!(&src[o.body[0].span.range()], "let x = (a + b) * c");
    assert_eq!(&src[o.body[1].span.range()], "loss x;");
    let ast::StmtKind::Let { value, .. } = &o.body[0].kind else {
        panic!()
    };
    assert_eq!(&src[value.span.range()], "(a + b) * c");
    assert_eq!(file.comments.len(), 1);
    assert_eq!(&src[file.comments[0].span.range()], "// c");
}

#[test]
fn documented_nodes_span_from_their_first_token() {
    let src = "/// f doc\nfn f(\n    /// p doc\n    p,\n) {\n    p\n}\n\nobjective o() {\n    /// s doc\n    loss f(1)\n}\n";
    let file = parse(src, FileId(0)).expect("parses");
    let ast::Item::Fn(f) = &file.items[0] else {
        panic!()
    };
    assert_eq!(f.doc, ["f doc"]);
    assert!(src[f.span.range()].starts_with("fn f("));
    assert_eq!(f.params[0].doc, ["p doc"]);
    assert_eq!(&src[f.params[0].span.range()], "p");
    let ast::Item::Objective(o) = &file.items[1] else {
        panic!()
    };
    assert_eq!(o.body[0].doc, ["s doc"]);
    assert_eq!(&src[o.body[0].span.range()], "loss f(1)");
}

#[test]
fn several_syntax_errors_are_reported() {
    let src = "fn a(x) {\n    x +\n}\n\nobjective b() {\n    loss (1 + )\n}\n\nobjective c() {\n    loss 1\n}\n";
    let errs = parse(src, FileId(0)).expect_err("two broken items");
    assert_eq!(errs.len(), 2, "{errs:?}");
    let lines: Vec<usize> = errs
        .iter()
        .map(|d| {
            1 + src[..d.primary_span().expect("span").start as usize]
                .matches('\n')
                .count()
        })
        .collect();
    assert_eq!(lines, [3, 6]);
}

#[test]
fn several_syntax_errors_inside_one_objective_are_reported() {
    // Each broken statement is reported (the statement after an incomplete one included), and
    // the next item's error too; a clean statement between them adds nothing.
    let src = "objective o() {\n    input logp: tok diff\n    let a = 1 +\n    let b = logp * * 2\n    metric m = batch_mean(logp) +\n    loss batch_mean(logp)\n}\n\nobjective p() {\n    loss 1 +\n}\n";
    let errs = parse(src, FileId(0)).expect_err("broken statements");
    let at: Vec<(usize, usize)> = errs
        .iter()
        .map(|d| {
            let s = d.primary_span().expect("span").start as usize;
            let line = 1 + src[..s].matches('\n').count();
            let col = 1 + s - src[..s].rfind('\n').map_or(0, |n| n + 1);
            (line, col)
        })
        .collect();
    assert_eq!(at, [(4, 5), (4, 20), (6, 5), (11, 1)], "{errs:?}");
}
