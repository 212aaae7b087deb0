//! pest's `Error<Rule>` → a readable [`Diagnostic`]: "expected an expression, found `)`".
//!
//! pest reports the rules (and, with error detail on, the literal tokens) it tried at the
//! furthest position it reached. They are renamed here to what a user would call them, merged,
//! and a few common situations get a dedicated message (reserved word used as a name, malformed
//! number, doc comment in the wrong place, missing operand at the end of the file).

use crate::parse::PestRule as Rule;
use crate::span::{FileId, Span};
use crate::Diagnostic;
use pest::error::{Error, ErrorVariant, InputLocation};

const RESERVED: [&str; 14] = [
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
];

/// What the user would call a rule when it is expected; `None` = not worth mentioning.
fn describe(rule: Rule) -> Option<&'static str> {
    Some(match rule {
        Rule::expr
        | Rule::prefix
        | Rule::if_expr
        | Rule::paren
        | Rule::number
        | Rule::boolean
        | Rule::name
        | Rule::kw_if => "an expression",
        Rule::args | Rule::arg | Rule::arg_name => "an argument",
        Rule::infix => "an operator",
        Rule::ident => "a name",
        Rule::stmt
        | Rule::input_stmt
        | Rule::let_stmt
        | Rule::loss_stmt
        | Rule::metric_stmt
        | Rule::output_stmt
        | Rule::kw_input
        | Rule::kw_let
        | Rule::kw_loss
        | Rule::kw_metric
        | Rule::kw_output => "a statement (`input`, `let`, `loss`, `metric`, `output`)",
        Rule::file
        | Rule::use_decl
        | Rule::fn_decl
        | Rule::objective_decl
        | Rule::kw_use
        | Rule::kw_fn
        | Rule::kw_objective => "an item (`use`, `fn`, `objective`)",
        Rule::EOI => "end of file",
        Rule::level | Rule::input_type => "a level (`tok`, `turn`, `seq`, `group`, `batch`)",
        Rule::dtype => "a dtype (`f32`, `bool`)",
        Rule::type_ann => "a type (a level and/or `f32`/`bool`)",
        Rule::kw_diff => "`diff`",
        Rule::kw_then => "`then`",
        Rule::kw_else => "`else`",
        Rule::use_glob => "`*`",
        Rule::use_list => "`{`",
        Rule::param => "a parameter",
        Rule::block | Rule::body => "`{`",
        _ => return None,
    })
}

/// Punctuation worth naming when pest expected it as a literal token.
const TOKENS: [&str; 9] = ["(", ")", "{", "}", ",", ":", "=", "::", "="];

/// The token found at `pos`, for "found ..." (a word, a number, an operator or end of file).
fn found_at(src: &str, pos: usize) -> (String, usize) {
    let rest = src.get(pos..).unwrap_or("");
    let Some(c) = rest.chars().next() else {
        return ("end of file".to_string(), 0);
    };
    let len = if c.is_ascii_alphanumeric() || c == '_' {
        rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
            .unwrap_or(rest.len())
    } else {
        let two = rest.get(..2).unwrap_or("");
        if ["||", "&&", "==", "!=", "<=", ">=", "::", "//", "/*"].contains(&two) {
            2
        } else {
            c.len_utf8()
        }
    };
    let tok = &rest[..len];
    if tok.starts_with("//") || tok.starts_with("/*") {
        return ("a comment".to_string(), len);
    }
    (format!("`{tok}`"), len)
}

pub fn convert(src: &str, file: FileId, err: &Error<Rule>) -> Diagnostic {
    let mut pos = match err.location {
        InputLocation::Pos(p) => p,
        InputLocation::Span((s, _)) => s,
    };
    let mut positives: Vec<Rule> = match &err.variant {
        ErrorVariant::ParsingError { positives, .. } => positives.clone(),
        ErrorVariant::CustomError { message } => {
            let at = Span::new(
                file,
                floor_char_boundary(src, pos),
                floor_char_boundary(src, pos),
            );
            return Diagnostic::error("E0001", format!("syntax error: {message}"))
                .with_primary(at, "here");
        }
    };
    positives.sort_by_key(|r| *r as usize);
    // pest's positives only name rules; literal tokens (`)`, `:`, `,`) need its error detail,
    // collected by a second parse on this error path only. When a literal token was expected
    // further on than any rule, that is the better place to point at.
    let detail = detailed(src);
    let mut tokens = Vec::new();
    if let Some(d) = detail {
        if d.max > pos && !d.tokens.is_empty() {
            pos = d.max;
            positives = d.rules.into_iter().filter(|r| is_leaf(*r)).collect();
            tokens = d.tokens;
        } else if d.max == pos {
            tokens = d.tokens;
        }
    }
    let pos = floor_char_boundary(src, pos);
    let (found, len) = found_at(src, pos);
    let at = Span::new(file, pos, pos + len);
    let point = Span::new(file, pos, pos);

    let rest = src.get(pos..).unwrap_or("");
    let word: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    let mut expected: Vec<String> = Vec::new();
    for r in &positives {
        if let Some(d) = describe(*r) {
            if !expected.iter().any(|e| e == d) {
                expected.push(d.to_string());
            }
        }
    }
    let wants_expr = expected.iter().any(|e| e == "an expression");
    if wants_expr {
        expected.retain(|e| e != "a name");
    }
    for t in tokens {
        let t = format!("`{t}`");
        let redundant = wants_expr && t == "`(`";
        if !redundant && !expected.contains(&t) {
            expected.push(t);
        }
    }

    // A reserved word where a name was expected.
    if positives.contains(&Rule::ident) && !wants_expr && RESERVED.contains(&word.as_str()) {
        return Diagnostic::error("E0007", format!("`{word}` is a reserved word"))
            .with_primary(at, "cannot be used as a name")
            .with_help(format!("rename it, e.g. `{word}_`"));
    }
    // A malformed number: `1e`, `1.`, `2.5.1`, `3x`.
    if rest.starts_with(|c: char| c.is_ascii_digit()) && (wants_expr || expected.len() > 1) {
        return Diagnostic::error("E0006", format!("invalid number literal {found}"))
            .with_primary(at, "not a number")
            .with_help("numbers look like `3`, `0.2`, `1e-4`, `2.5E+3`");
    }
    // A doc comment that documents nothing: at the error, or just before it.
    if let Some((ds, de)) = doc_comment_near(src, pos) {
        return Diagnostic::error(
            "E0012",
            "doc comment not followed by anything it can document",
        )
        .with_primary(Span::new(file, ds, de), "this doc comment")
        .with_help(
            "`///` documents the `fn`, `objective`, parameter or statement after it; \
                 use `//` for an ordinary comment",
        );
    }

    // `:` (after a would-be argument name) and "an argument" only help when alone.
    if expected.len() > 1 {
        expected.retain(|e| e != "`:`" && e != "an argument");
    }
    if expected.is_empty() {
        expected.push("something else".to_string());
    }
    let list = join_or(&expected);
    let mut d = Diagnostic::error("E0001", format!("expected {list}, found {found}"));
    d = if len == 0 {
        d.with_primary(point, format!("expected {list}"))
    } else {
        d.with_primary(at, format!("unexpected {found}"))
    };
    if RESERVED.contains(&word.as_str()) && wants_expr {
        d = d.with_note(format!("`{word}` is a reserved word"));
    }
    let fn_body = expected.iter().any(|e| e.starts_with("a statement")) && wants_expr;
    if fn_body && found == "`}`" {
        d = match minus_continuation(src, pos) {
            Some(line) => d
                .with_secondary(
                    Span::new(file, line, line + 1),
                    "this `-` continues the expression of the line above",
                )
                .with_help(
                    "a newline does not end an expression; to start the result with a minus, \
                     wrap it in parentheses: `(-x * y)`",
                ),
            None => d.with_help("a `fn` body ends with the expression it returns"),
        };
    }
    let stmt_kw = ["input", "let", "loss", "metric", "output"].contains(&word.as_str());
    if stmt_kw && expected.iter().any(|e| e.starts_with("an item")) {
        d = d.with_help("statements go inside an `objective name() { ... }`");
    }
    let before = src.get(..pos).unwrap_or("");
    if found == "`(`"
        && before.ends_with([' ', '\t'])
        && before
            .trim_end()
            .ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
    {
        d = d.with_help("in a call, `(` follows the function name directly: `f(x)`");
    }
    if found == "`&`" || found == "`|`" {
        d = d.with_help("the logical operators are `&&` and `||`");
    }
    if found == "`=`" && wants_expr {
        d = d.with_help("use `==` to compare");
    }
    d
}

/// The `-` starting a line between the last `let` before `pos` and `pos`, if any: the usual
/// reason a fn body "has no result" (the result line continued the last `let`).
fn minus_continuation(src: &str, pos: usize) -> Option<usize> {
    let before = src.get(..pos)?;
    let from = before.rfind("let ")?;
    let mut offset = from;
    for line in before.get(from..)?.split_inclusive('\n') {
        let t = line.trim_start();
        if t.starts_with('-') {
            return Some(offset + (line.len() - t.len()));
        }
        offset += line.len();
    }
    None
}

/// Rules that name what may come next (not the enclosing construct being parsed).
fn is_leaf(r: Rule) -> bool {
    matches!(
        describe(r),
        Some(
            "an expression"
                | "an operator"
                | "a name"
                | "end of file"
                | "`diff`"
                | "`then`"
                | "`else`"
                | "a dtype (`f32`, `bool`)"
                | "a type (a level and/or `f32`/`bool`)"
                | "a level (`tok`, `turn`, `seq`, `group`, `batch`)"
        )
    )
}

/// The `///` comment at `pos`, or the one on the last non-blank line before `pos`.
fn doc_comment_near(src: &str, pos: usize) -> Option<(usize, usize)> {
    let before = src.get(..pos)?.trim_end();
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let candidates = [
        (pos, src.get(pos..)?),
        (line_start, before.get(line_start..)?),
    ];
    for (start, text) in candidates {
        let t = text.trim_start();
        if t.starts_with("///") && !t.starts_with("////") {
            let s = start + (text.len() - t.len());
            let len = t.find('\n').unwrap_or(t.len());
            return Some((s, s + t[..len].trim_end().len()));
        }
    }
    None
}

struct Detail {
    max: usize,
    tokens: Vec<String>,
    rules: Vec<Rule>,
}

/// What pest expected at its furthest position, from a second parse with error detail on.
fn detailed(src: &str) -> Option<Detail> {
    pest::set_error_detail(true);
    let result = crate::parse::pest_parse(src).map(|_| ());
    pest::set_error_detail(false);
    let attempts = result.err()?.parse_attempts()?;
    let mut tokens: Vec<String> = Vec::new();
    for t in attempts.expected_tokens() {
        let token = t.to_string();
        if TOKENS.contains(&token.as_str()) && !tokens.contains(&token) {
            tokens.push(token);
        }
    }
    let rules = attempts
        .call_stacks()
        .iter()
        .filter_map(|c| c.deepest.get_rule().copied())
        .collect();
    Some(Detail {
        max: attempts.max_position,
        tokens,
        rules,
    })
}

fn join_or(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [a] => a.clone(),
        [a, b] => format!("{a} or {b}"),
        [init @ .., last] => format!("{}, or {last}", init.join(", ")),
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}
