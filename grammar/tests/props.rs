//! Property tests: no input makes `parse` or `format_file` panic, and whatever parses formats
//! to text that re-parses to the same AST (up to layout) and formats to itself.
//!
//! Case counts: `PROPTEST_CASES` (default 2000 per property, kept modest for CI). A large run:
//! `PROPTEST_CASES=100000 cargo test --release -p rlo-grammar --test props`.

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use rlo_grammar::ast::{Arg, BinaryOp, Expr, ExprKind, Ident, UnaryOp};
use rlo_grammar::{cmp, fmt::expr_text, fmt::format_file, parse, FileId, Span};

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

/// The properties every input must have.
fn check(src: &str) -> Result<(), TestCaseError> {
    match parse(src, FileId(0)) {
        Ok(ast) => {
            let once = format_file(&ast, src);
            let again = match parse(&once, FileId(0)) {
                Ok(a) => a,
                Err(d) => {
                    return Err(TestCaseError::fail(format!(
                    "formatted text does not parse: {d:?}\n--- input\n{src}\n--- formatted\n{once}"
                )))
                }
            };
            prop_assert!(
                cmp::same_modulo_layout(&ast, &again),
                "AST changed by formatting\n--- input\n{}\n--- formatted\n{}",
                src,
                once
            );
            let twice = format_file(&again, &once);
            prop_assert_eq!(&twice, &once, "not idempotent; input:\n{}", src);
        }
        Err(diags) => {
            prop_assert!(!diags.is_empty());
            for d in &diags {
                for l in &d.labels {
                    let (s, e) = (l.span.start as usize, l.span.end as usize);
                    prop_assert!(s <= e && e <= src.len(), "span out of range: {:?}", d);
                    prop_assert!(src.is_char_boundary(s) && src.is_char_boundary(e));
                }
            }
        }
    }
    Ok(())
}

fn corpus() -> &'static [String] {
    static CORPUS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    CORPUS.get_or_init(load_corpus)
}

fn load_corpus() -> Vec<String> {
    let mut out = Vec::new();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let stdlib = std::env::var_os("RLO_STDLIB_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join("../stdlib"));
    for dir in [
        root.join("tests/programs"),
        root.join("tests/errors"),
        stdlib,
    ] {
        if let Ok(entries) = std::fs::read_dir(dir) {
            let mut paths: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
            paths.sort();
            for p in paths {
                if p.extension().is_some_and(|x| x == "rlo") {
                    if let Ok(s) = std::fs::read_to_string(p) {
                        out.push(s);
                    }
                }
            }
        }
    }
    out
}

/// Pieces that mutations insert: tokens of the language, comment openers, odd characters.
const PIECES: &[&str] = &[
    "(",
    ")",
    "{",
    "}",
    ",",
    ":",
    "::",
    ";",
    "=",
    "==",
    "!=",
    "<",
    "<=",
    ">",
    ">=",
    "+",
    "-",
    "*",
    "/",
    "^",
    "!",
    "&&",
    "||",
    "&",
    "|",
    ".",
    "let ",
    "loss ",
    "metric m = ",
    "output o = ",
    "input i: tok ",
    "fn ",
    "objective ",
    "use ",
    "if ",
    " then ",
    " else ",
    "diff",
    "tok",
    "seq",
    "bool",
    "f32",
    "true",
    "false",
    "x",
    "f(",
    "where: ",
    "1",
    "0.5",
    "1e-4",
    "2.5E+3",
    "1e",
    "// c\n",
    "/* b */",
    "/*",
    "*/",
    "///",
    "/// d\n",
    "\n",
    " ",
    "\t",
    "é",
    "∑",
    "\u{0}",
    "\"",
    "#",
    "@",
    "9x",
    "_",
];

#[derive(Debug, Clone)]
enum Mutation {
    Delete(usize, usize),
    Insert(usize, usize),
    Duplicate(usize, usize),
    SwapChars(usize, usize),
    SwapTokens(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let i = any::<usize>();
    prop_oneof![
        (i, 1usize..8).prop_map(|(a, n)| Mutation::Delete(a, n)),
        (i, 0..PIECES.len()).prop_map(|(a, p)| Mutation::Insert(a, p)),
        (i, 1usize..40).prop_map(|(a, n)| Mutation::Duplicate(a, n)),
        (i, any::<usize>()).prop_map(|(a, b)| Mutation::SwapChars(a, b)),
        (i, any::<usize>()).prop_map(|(a, b)| Mutation::SwapTokens(a, b)),
    ]
}

fn apply(src: &str, m: &Mutation) -> String {
    let mut chars: Vec<char> = src.chars().collect();
    let n = chars.len().max(1);
    match *m {
        Mutation::Delete(a, k) => {
            let a = a % n;
            let b = (a + k).min(chars.len());
            if a < b {
                chars.drain(a..b);
            }
        }
        Mutation::Insert(a, p) => {
            let a = a % (chars.len() + 1);
            let piece: Vec<char> = PIECES[p].chars().collect();
            chars.splice(a..a, piece);
        }
        Mutation::Duplicate(a, k) => {
            let a = a % n;
            let b = (a + k).min(chars.len());
            if a < b {
                let seg: Vec<char> = chars[a..b].to_vec();
                chars.splice(b..b, seg);
            }
        }
        Mutation::SwapChars(a, b) => {
            if !chars.is_empty() {
                let (a, b) = (a % chars.len(), b % chars.len());
                chars.swap(a, b);
            }
        }
        Mutation::SwapTokens(a, b) => {
            let mut toks: Vec<String> = src.split(' ').map(str::to_string).collect();
            let len = toks.len();
            toks.swap(a % len, b % len);
            return toks.join(" ");
        }
    }
    chars.into_iter().collect()
}

// ---- generated expressions: printing then parsing gives the tree back ----

fn sp() -> Span {
    Span::default()
}

fn leaf() -> impl Strategy<Value = Expr> {
    prop_oneof![
        prop_oneof![
            Just(0.0),
            Just(1.0),
            Just(0.5),
            Just(3.0),
            Just(1e-4),
            Just(2.5e3),
            Just(1e20),
            Just(7e-9)
        ]
        .prop_map(|v| Expr {
            kind: ExprKind::Number(v),
            span: sp()
        }),
        any::<bool>().prop_map(|b| Expr {
            kind: ExprKind::Bool(b),
            span: sp()
        }),
        prop_oneof![
            Just("x"),
            Just("reward"),
            Just("tok"),
            Just("seq"),
            Just("_a1")
        ]
        .prop_map(|n| {
            Expr {
                kind: ExprKind::Name(Ident {
                    name: n.to_string(),
                    span: sp(),
                }),
                span: sp(),
            }
        }),
    ]
}

fn bin_op() -> impl Strategy<Value = BinaryOp> {
    use BinaryOp::*;
    prop_oneof![
        Just(Add),
        Just(Sub),
        Just(Mul),
        Just(Div),
        Just(Pow),
        Just(Lt),
        Just(Le),
        Just(Gt),
        Just(Ge),
        Just(Eq),
        Just(Ne),
        Just(And),
        Just(Or)
    ]
}

fn expr() -> impl Strategy<Value = Expr> {
    leaf().prop_recursive(6, 48, 3, |inner| {
        let b = |kind| Expr { kind, span: sp() };
        prop_oneof![
            (bin_op(), inner.clone(), inner.clone()).prop_map(move |(op, l, r)| b(
                ExprKind::Binary {
                    op,
                    lhs: Box::new(l),
                    rhs: Box::new(r)
                }
            )),
            (any::<bool>(), inner.clone()).prop_map(move |(neg, e)| b(ExprKind::Unary {
                op: if neg { UnaryOp::Neg } else { UnaryOp::Not },
                operand: Box::new(e)
            })),
            (inner.clone(), inner.clone(), inner.clone()).prop_map(move |(c, t, o)| b(
                ExprKind::If {
                    cond: Box::new(c),
                    then: Box::new(t),
                    otherwise: Box::new(o)
                }
            )),
            (prop::collection::vec((any::<bool>(), inner.clone()), 0..3)).prop_map(
                move |mut args| {
                    // Positional arguments first, then named ones.
                    args.sort_by_key(|(named, _)| *named);
                    let args = args
                        .into_iter()
                        .map(|(named, value)| Arg {
                            name: named.then(|| Ident {
                                name: "where".into(),
                                span: sp(),
                            }),
                            value,
                            span: sp(),
                        })
                        .collect();
                    b(ExprKind::Call {
                        callee: Ident {
                            name: "f".into(),
                            span: sp(),
                        },
                        args,
                    })
                }
            ),
            inner.prop_map(move |e| b(ExprKind::Paren(Box::new(e)))),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn arbitrary_strings_never_panic(s in any::<String>()) {
        check(&s)?;
    }

    #[test]
    fn token_soup_never_panics(pieces in prop::collection::vec(0..PIECES.len(), 0..40)) {
        let s: String = pieces.iter().map(|&p| PIECES[p]).collect();
        check(&s)?;
        check(&format!("objective o() {{ loss {s} }}"))?;
    }

    #[test]
    fn mutated_programs_never_panic(
        which in any::<usize>(),
        muts in prop::collection::vec(mutation(), 1..5),
    ) {
        let corpus = corpus();
        prop_assume!(!corpus.is_empty());
        let mut src = corpus[which % corpus.len()].clone();
        for m in &muts {
            src = apply(&src, m);
        }
        check(&src)?;
    }

    #[test]
    fn printed_expressions_parse_back(e in expr()) {
        let text = expr_text(&e, "");
        let src = format!("objective o() {{\n    loss {text}\n}}\n");
        let file = parse(&src, FileId(0)).map_err(|d| TestCaseError::fail(format!("{text}: {d:?}")))?;
        let want = rlo_grammar::ast::File {
            items: vec![rlo_grammar::ast::Item::Objective(rlo_grammar::ast::ObjectiveDecl {
                doc: vec![],
                name: Ident { name: "o".into(), span: sp() },
                params: vec![],
                body: vec![rlo_grammar::ast::Stmt {
                    doc: vec![],
                    kind: rlo_grammar::ast::StmtKind::Loss { value: e.clone() },
                    span: sp(),
                }],
                span: sp(),
            })],
            comments: vec![],
            span: sp(),
        };
        prop_assert!(cmp::same_modulo_layout(&file, &want), "{}", text);
        check(&src)?;
    }
}
