//! Input generators of `robust.rs`: random text, token soup, random grammatical programs,
//! mutations of the stdlib files, deep nesting.

use super::Case;
use rand::Rng;

/// Every kind of token of the language, plus near-misses.
const TOKENS: &[&str] = &[
    "use",
    "fn",
    "objective",
    "input",
    "let",
    "loss",
    "metric",
    "output",
    "if",
    "then",
    "else",
    "true",
    "false",
    "diff",
    "tok",
    "turn",
    "seq",
    "group",
    "batch",
    "f32",
    "bool",
    "std",
    "::",
    "::*",
    "{",
    "}",
    "(",
    ")",
    ",",
    ";",
    ":",
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
    "0",
    "1",
    "3",
    "0.2",
    "1e-4",
    "2.5E+3",
    "1e308",
    "1e39",
    "-0",
    "inf",
    "nan",
    "1.",
    ".5",
    "00",
    "1e",
    "x",
    "logp",
    "reward",
    "mask",
    "exp",
    "log",
    "sqrt",
    "min",
    "max",
    "clamp",
    "where",
    "where:",
    "float",
    "detach",
    "seq_mean",
    "group_std",
    "batch_sum",
    "batch_mean",
    "group_quantile",
    "batch_rank",
    "seq_cumsum",
    "seq_discounted_revcumsum",
    "group_pos_mean",
    "pos",
    "seq_len",
    "turn_index",
    "num_seqs",
    "unbiased:",
    "q:",
    "//",
    "/*",
    "*/",
    "///",
    "/// doc\n",
    "// c\n",
    "\n",
    "\t",
    " ",
    "\"",
    "'",
    "#",
    "@",
    "$",
    "é",
    "🦀",
    "\u{0}",
    "\r",
    "\u{feff}",
];

/// Value names at every level and dtype, for random programs.
const VALUES: &[&str] = &[
    "lp",
    "old",
    "tr",
    "r",
    "g",
    "b",
    "m",
    "ok",
    "eps",
    "flag",
    "pos",
    "seq_len",
    "turn_index",
    "turn_len",
    "group_size",
    "num_seqs",
    "num_tokens",
    "inf",
    "1",
    "0",
    "0.5",
    "1e-4",
    "true",
    "false",
    "a0",
    "a1",
];
const UNARY: &[&str] = &[
    "exp",
    "log",
    "log1p",
    "expm1",
    "lgamma",
    "sqrt",
    "abs",
    "sigmoid",
    "softplus",
    "tanh",
    "log_sigmoid",
    "sign",
    "square",
    "float",
    "detach",
    "seq_cumsum",
    "seq_revcumsum",
    "seq_next",
    "seq_prev",
    "group_rank",
    "batch_rank",
    "group_pos_sum",
    "group_pos_mean",
    "group_pos_max",
    "group_pos_count",
];
const BINARY: &[&str] = &["min", "max", "pow", "seq_discounted_revcumsum"];
const LEVELS: &[&str] = &["tok", "turn", "seq", "group", "batch"];
const REDUCE: &[&str] = &[
    "sum",
    "mean",
    "max",
    "min",
    "count",
    "std",
    "var",
    "logsumexp",
    "quantile",
];
const OPS: &[&str] = &[
    "+", "-", "*", "/", "^", "==", "!=", "<", "<=", ">", ">=", "&&", "||",
];
const NUMBERS: &[&str] = &[
    "inf",
    "1e308",
    "-0",
    "0",
    "1e39",
    "3.4028236e38",
    "1e-320",
    "99999999999999999999",
    "0.0",
];

pub struct Generators {
    /// `(module name, text)` of every `stdlib/*.rlo`.
    pub stdlib: Vec<(String, String)>,
    /// Every identifier of the stdlib files.
    idents: Vec<String>,
}

fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| {
            w.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        })
}

impl Generators {
    pub fn load() -> Generators {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../stdlib");
        let mut stdlib: Vec<(String, String)> = std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "rlo"))
                    .filter_map(|p| {
                        let name = p.file_stem()?.to_str()?.to_string();
                        Some((name, std::fs::read_to_string(&p).ok()?))
                    })
                    .collect()
            })
            .unwrap_or_default();
        stdlib.sort();
        let mut idents: Vec<String> = stdlib
            .iter()
            .flat_map(|(_, t)| words(t).map(String::from).collect::<Vec<_>>())
            .collect();
        idents.sort();
        idents.dedup();
        Generators { stdlib, idents }
    }

    pub fn random_case(&self, rng: &mut impl Rng, i: usize) -> Case {
        let plain = |what: &str, text: String| Case {
            what: what.to_string(),
            text,
            extra: vec![],
        };
        match i % 10 {
            0 => plain("random bytes", random_bytes(rng)),
            1 => plain("random unicode", random_unicode(rng)),
            2 => plain("token soup", token_soup(rng)),
            3 => {
                let body = token_soup(rng);
                plain(
                    "token soup in an objective",
                    format!("objective o(eps = 0.2) {{\n input logp: tok diff\n loss batch_mean({body})\n}}\n"),
                )
            }
            4 | 5 => plain("random program", random_program(rng)),
            _ => self.mutated_stdlib(rng),
        }
    }

    /// One stdlib file, mutated 1 to 4 times; a module file is also injected (mutated) under its
    /// own name into a stdlib objective that imports it.
    fn mutated_stdlib(&self, rng: &mut impl Rng) -> Case {
        let Some((name, text)) = self
            .stdlib
            .get(rng.random_range(0..self.stdlib.len().max(1)))
        else {
            return Case {
                what: "empty".into(),
                text: String::new(),
                extra: vec![],
            };
        };
        let mut t = text.clone();
        for _ in 0..rng.random_range(1..=4) {
            t = self.mutate(rng, &t);
        }
        let importer = self
            .stdlib
            .iter()
            .filter(|(_, u)| u.contains(&format!("use std::{name}::")))
            .map(|(_, u)| u.clone())
            .collect::<Vec<_>>();
        if !importer.is_empty() && rng.random_bool(0.5) {
            let user = importer[rng.random_range(0..importer.len())].clone();
            Case {
                what: format!("stdlib/{name}.rlo mutated, imported"),
                text: user,
                extra: vec![(name.clone(), t)],
            }
        } else {
            Case {
                what: format!("stdlib/{name}.rlo mutated"),
                text: t,
                extra: vec![],
            }
        }
    }

    fn mutate(&self, rng: &mut impl Rng, t: &str) -> String {
        let chars: Vec<char> = t.chars().collect();
        let lines: Vec<&str> = t.split_inclusive('\n').collect();
        let toks = tokenize(t);
        let n = chars.len().max(1);
        let ci = rng.random_range(0..n);
        let cj = rng.random_range(0..n);
        let li = rng.random_range(0..lines.len().max(1));
        let lj = rng.random_range(0..lines.len().max(1));
        let ti = rng.random_range(0..toks.len().max(1));
        let tj = rng.random_range(0..toks.len().max(1));
        let cs = |v: &[char]| v.iter().collect::<String>();
        match rng.random_range(0..14) {
            0 => cs(&[
                &chars[..ci.min(chars.len())],
                &chars[(ci + 1).min(chars.len())..],
            ]
            .concat()),
            1 => {
                let c = TOKENS[rng.random_range(0..TOKENS.len())];
                let c: Vec<char> = c.chars().take(1).collect();
                cs(&[
                    &chars[..ci.min(chars.len())],
                    &c,
                    &chars[ci.min(chars.len())..],
                ]
                .concat())
            }
            2 => {
                let mut v = chars.clone();
                if ci < v.len() && cj < v.len() {
                    v.swap(ci, cj);
                }
                cs(&v)
            }
            3 => {
                let mut v = lines.clone();
                if li < v.len() {
                    v.remove(li);
                }
                v.concat()
            }
            4 => {
                let mut v = lines.clone();
                if li < v.len() {
                    v.insert(li, lines[li]);
                }
                v.concat()
            }
            5 => {
                let mut v = lines.clone();
                if li < v.len() && lj < v.len() {
                    v.swap(li, lj);
                }
                v.concat()
            }
            6 => {
                let mut v = toks.clone();
                if ti < v.len() {
                    v.remove(ti);
                }
                v.concat()
            }
            7 => {
                let mut v = toks.clone();
                if ti < v.len() {
                    v.insert(ti, toks[ti].clone());
                }
                v.concat()
            }
            8 => {
                let mut v = toks.clone();
                if ti < v.len() && tj < v.len() {
                    v.swap(ti, tj);
                }
                v.concat()
            }
            9 => {
                let mut v = toks.clone();
                if ti <= v.len() {
                    v.insert(ti, TOKENS[rng.random_range(0..TOKENS.len())].to_string());
                }
                v.concat()
            }
            10 => self.replace_word(
                rng,
                &toks,
                |w| {
                    w.chars()
                        .next()
                        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                },
                |g, rng| g.idents[rng.random_range(0..g.idents.len().max(1))].clone(),
            ),
            11 => self.replace_word(
                rng,
                &toks,
                |w| {
                    LEVELS
                        .iter()
                        .any(|l| w == *l || w.starts_with(&format!("{l}_")))
                },
                |_, rng| {
                    let l = LEVELS[rng.random_range(0..LEVELS.len())];
                    let r = REDUCE[rng.random_range(0..REDUCE.len())];
                    if rng.random_bool(0.5) {
                        l.to_string()
                    } else {
                        format!("{l}_{r}")
                    }
                },
            ),
            _ => self.replace_word(
                rng,
                &toks,
                |w| w.chars().next().is_some_and(|c| c.is_ascii_digit()),
                |_, rng| NUMBERS[rng.random_range(0..NUMBERS.len())].to_string(),
            ),
        }
    }

    fn replace_word<R: Rng>(
        &self,
        rng: &mut R,
        toks: &[String],
        pick: impl Fn(&str) -> bool,
        with: impl Fn(&Generators, &mut R) -> String,
    ) -> String {
        let idx: Vec<usize> = (0..toks.len()).filter(|&i| pick(&toks[i])).collect();
        let mut v = toks.to_vec();
        if !idx.is_empty() {
            let i = idx[rng.random_range(0..idx.len())];
            v[i] = with(self, rng);
        }
        v.concat()
    }
}

/// Splits text into word, number, whitespace and single-punctuation tokens (concat = the text).
fn tokenize(t: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let class = |c: char| {
        if c.is_ascii_alphanumeric() || c == '_' || c == '.' {
            0
        } else if c.is_whitespace() {
            1
        } else {
            2
        }
    };
    for c in t.chars() {
        match out.last_mut() {
            Some(last)
                if class(c) != 2 && last.chars().next().is_some_and(|l| class(l) == class(c)) =>
            {
                last.push(c)
            }
            _ => out.push(c.to_string()),
        }
    }
    out
}

fn random_bytes(rng: &mut impl Rng) -> String {
    let n = rng.random_range(0..300);
    let v: Vec<u8> = (0..n).map(|_| rng.random()).collect();
    String::from_utf8_lossy(&v).into_owned()
}

fn random_unicode(rng: &mut impl Rng) -> String {
    let n = rng.random_range(0..200);
    (0..n)
        .map(|_| match rng.random_range(0..6) {
            0 => char::from_u32(rng.random_range(0..0x11_0000)).unwrap_or('\u{fffd}'),
            1 => char::from_u32(rng.random_range(0..0x20)).unwrap_or(' '),
            2 => ['é', '中', '🦀', '\u{200b}', '\u{2028}', '\u{301}', 'ß', 'İ']
                [rng.random_range(0..8)],
            _ => char::from(rng.random_range(0x20u8..0x7f)),
        })
        .collect()
}

fn token_soup(rng: &mut impl Rng) -> String {
    let n = rng.random_range(0..60);
    let mut s = String::new();
    for _ in 0..n {
        s += TOKENS[rng.random_range(0..TOKENS.len())];
        s += [" ", " ", "\n", ""][rng.random_range(0..4)];
    }
    s
}

/// A random expression over the inputs of [`random_program`] (well-formed syntax, any typing).
fn expr(rng: &mut impl Rng, depth: usize) -> String {
    if depth == 0 || rng.random_bool(0.25) {
        return VALUES[rng.random_range(0..VALUES.len())].to_string();
    }
    let d = depth - 1;
    match rng.random_range(0..9) {
        0 | 1 => format!(
            "{} {} {}",
            expr(rng, d),
            OPS[rng.random_range(0..OPS.len())],
            expr(rng, d)
        ),
        2 => format!(
            "{}({})",
            UNARY[rng.random_range(0..UNARY.len())],
            expr(rng, d)
        ),
        3 => format!(
            "{}({}, {})",
            BINARY[rng.random_range(0..BINARY.len())],
            expr(rng, d),
            expr(rng, d)
        ),
        4 | 5 => {
            let l = LEVELS[rng.random_range(1..LEVELS.len())];
            let r = REDUCE[rng.random_range(0..REDUCE.len())];
            let mut s = format!("{l}_{r}({}", expr(rng, d));
            if r == "quantile" {
                s += &format!(", {}", expr(rng, 0));
            }
            if rng.random_bool(0.3) {
                s += &format!(", where: {}", expr(rng, d));
            }
            if (r == "std" || r == "var") && rng.random_bool(0.3) {
                s += ", unbiased: false";
            }
            s + ")"
        }
        6 => format!(
            "if {} then {} else {}",
            expr(rng, d),
            expr(rng, d),
            expr(rng, d)
        ),
        7 => format!(
            "({}{})",
            ["-", "!", ""][rng.random_range(0..3)],
            expr(rng, d)
        ),
        _ => format!(
            "clamp({}, {}, {})",
            expr(rng, d),
            expr(rng, 0),
            expr(rng, 0)
        ),
    }
}

/// A random syntactically valid objective (often ill-typed) with helper functions.
fn random_program(rng: &mut impl Rng) -> String {
    let mut s = String::from("fn h(x, y = 1) {\n    let t = x * y\n    ");
    s += &expr(rng, 2).replace("lp", "x").replace("old", "t");
    s += "\n}\n/// doc\nobjective o(eps: f32 = 0.2, flag: bool = true) {\n";
    s += "    input lp: tok diff\n    input old: tok\n    input tr: turn diff\n    input r: seq\n";
    s += "    input g: group\n    input b: batch\n    input m: tok bool\n    input ok: seq bool\n";
    for i in 0..2 {
        s += &format!("    let a{i} = {}\n", expr(rng, 3));
    }
    if rng.random_bool(0.5) {
        s += &format!("    let _u = h({}, y: {})\n", expr(rng, 1), expr(rng, 1));
    }
    let l = expr(rng, 4);
    s += &if rng.random_bool(0.7) {
        format!("    loss batch_mean({l}) + batch_sum(lp * a0)\n")
    } else {
        format!("    loss {l}\n")
    };
    s += &format!("    metric mm = batch_max({})\n", expr(rng, 2));
    s += &format!("    output oo = {}\n}}\n", expr(rng, 2));
    s
}

fn objective(loss: &str) -> String {
    format!(
        "objective o(eps = 0.2) {{\n    input x: tok diff\n    input c: seq bool\n    loss batch_sum({loss})\n}}\n"
    )
}

/// Deep nesting of every kind at depths around the limits (256 expression levels, 64 calls).
/// Depths go up to `max` (flat chains and nesting past the limits); fn and let chains to
/// `max / 10`.
pub fn deep_cases(max: usize) -> Vec<Case> {
    let mut out = Vec::new();
    let mut add = |what: String, text: String| {
        out.push(Case {
            what,
            text,
            extra: vec![],
        })
    };
    for n in [
        1, 2, 63, 64, 65, 127, 128, 200, 254, 255, 256, 257, 300, 1000, 10_000, 100_000,
    ] {
        let r = |s: &str| s.repeat(n);
        add(
            format!("parens {n}"),
            objective(&format!("{}x{}", r("("), r(")"))),
        );
        add(
            format!("unary minus {n}"),
            objective(&format!("{}x", r("-"))),
        );
        add(
            format!("unary minus spaced {n}"),
            objective(&format!("{}x", r("- "))),
        );
        add(
            format!("not {n}"),
            objective(&format!("float({}(x > 0))", r("!"))),
        );
        add(
            format!("mixed unary {n}"),
            objective(&format!("float({}(x > 0))", r("-!"))),
        );
        add(
            format!("if chain {n}"),
            objective(&format!("{}x{}", r("if x > 0 then "), r(" else 1"))),
        );
        add(
            format!("if in condition {n}"),
            objective(&format!(
                "if {}c{} then x else 0",
                r("if "),
                r(" then c else c")
            )),
        );
        add(
            format!("nested exp {n}"),
            objective(&format!("{}x{}", r("exp("), r(")"))),
        );
        add(
            format!("nested min {n}"),
            objective(&format!("{}x{}", r("min(x, "), r(")"))),
        );
        add(
            format!("nested named where {n}"),
            objective(&format!("{}x{}", r("seq_sum(x, where: "), r(")"))),
        );
        add(
            format!("+ chain {n}"),
            objective(&format!("{}x", r("x + "))),
        );
        add(
            format!("* chain {n}"),
            objective(&format!("{}x", r("x * "))),
        );
        add(
            format!("^ chain {n}"),
            objective(&format!("{}x", r("x ^ "))),
        );
        add(
            format!("&& chain {n}"),
            objective(&format!("float({}c)", r("c && "))),
        );
        add(
            format!("< chain {n}"),
            objective(&format!("float({}x)", r("x < "))),
        );
        add(
            format!("-x^ chain {n}"),
            objective(&format!("{}x", r("-x ^ "))),
        );
        add(
            format!("deep default {n}"),
            format!(
                "objective o(eps = {}1{}) {{ input x: tok diff\n loss batch_sum(x * eps) }}",
                r("-("),
                r(")")
            ),
        );
        add(
            format!("use path {n}"),
            format!("use std{}::f\n{}", r("::m"), objective("x")),
        );
        add(format!("deep fn body {n}"), {
            format!("fn f(x) {{ {}x{} }}\n{}", r("("), r(")"), objective("f(x)"))
        });
        if n <= max / 10 {
            let lets: String = (1..n)
                .map(|i| format!("let a{i} = a{} * 0.5 + x\n", i - 1))
                .collect();
            add(
                format!("let chain {n}"),
                format!(
                    "objective o() {{ input x: tok diff\n let a0 = x\n{lets} loss batch_sum(a{}) }}",
                    n - 1
                ),
            );
            let fns: String = (1..n)
                .map(|i| format!("fn f{i}(x) {{ f{}(x) * 2 + 1 }}\n", i - 1))
                .collect();
            add(
                format!("fn chain {n}"),
                format!(
                    "fn f0(x) {{ x }}\n{fns}{}",
                    objective(&format!("f{}(x)", n - 1))
                ),
            );
            let fns: String = (1..n)
                .map(|i| format!("fn g{i}(x) {{ g{}(-(x)) }}\n", i - 1))
                .collect();
            add(
                format!("fn chain deep body {n}"),
                format!(
                    "fn g0(x) {{ {}x{} }}\n{fns}{}",
                    "(".repeat(250),
                    ")".repeat(250),
                    objective(&format!("g{}(x)", n - 1))
                ),
            );
        }
    }
    // Widest fan-out the call-depth limit allows: each fn calls the previous one twice with
    // different arguments (2^k inlined copies), small k only.
    for k in [4, 8, 12] {
        let fns: String = (1..=k)
            .map(|i| format!("fn d{i}(x) {{ d{}(x) + d{}(x * 2) }}\n", i - 1, i - 1))
            .collect();
        add(
            format!("doubling fns {k}"),
            format!(
                "fn d0(x) {{ exp(x) }}\n{fns}{}",
                objective(&format!("d{k}(x)"))
            ),
        );
    }
    out
}
