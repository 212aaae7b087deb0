//! The pre-scan that runs before pest: a cheap byte-level pass over the source that
//!
//! - records every `//` and `/* */` comment with its span (the grammar skips them; `fmt` needs
//!   them back), doc comments (`///`) excluded since they are AST nodes;
//! - reports an unterminated block comment, characters that are not part of the language, and
//!   unbalanced or mismatched `(` `)` `{` `}` with labels on both ends;
//! - bounds nesting: the number of open delimiters plus pending `if`s never exceeds
//!   [`MAX_NESTING`], so pest's recursive descent (and the AST builder's recursion over
//!   parentheses, `if` and call arguments) stays shallow whatever the input.
//!
//! Invariant: every span it produces lies on UTF-8 character boundaries.

use crate::ast::Comment;
use crate::span::{FileId, Span};
use crate::Diagnostic;

/// Deepest expression nesting accepted; deeper input is an error, never a stack overflow.
pub const MAX_NESTING: usize = 256;

/// At most this many "unexpected character" errors are reported for one file.
const MAX_CHAR_ERRORS: usize = 20;

/// Words after which a pending `if` cannot continue (they start an item or a statement).
const STMT_KEYWORDS: [&str; 8] = [
    "use",
    "fn",
    "objective",
    "input",
    "let",
    "loss",
    "metric",
    "output",
];

pub struct Scanned {
    pub comments: Vec<Comment>,
    pub errors: Vec<Diagnostic>,
}

struct Frame {
    open: u8,
    at: usize,
    ifs: usize,
}

pub fn prescan(src: &str, file: FileId) -> Scanned {
    let bytes = src.as_bytes();
    let span = |a: usize, b: usize| Span::new(file, a, b);
    let mut comments = Vec::new();
    let mut errors = Vec::new();
    let mut char_errors = 0usize;
    let mut frames: Vec<Frame> = Vec::new();
    // `if`s pending outside any delimiter (e.g. in a statement at top level, malformed).
    let mut top_ifs = 0usize;
    let depth = |frames: &[Frame], top_ifs: usize| {
        top_ifs + frames.iter().map(|f| 1 + f.ifs).sum::<usize>()
    };
    let mut i = 0usize;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b' ' | b'\t' | b'\r' | b'\n' => i += 1,
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                let end = src[i..].find('\n').map(|n| i + n).unwrap_or(src.len());
                let text = &src[i..end];
                let is_doc = text.starts_with("///") && !text.starts_with("////");
                if !is_doc {
                    comments.push(Comment {
                        text: text.trim_end().to_string(),
                        span: span(i, i + text.trim_end().len()),
                    });
                }
                i = end;
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => match src[i + 2..].find("*/") {
                Some(n) => {
                    let end = i + 2 + n + 2;
                    comments.push(Comment {
                        text: src[i..end].to_string(),
                        span: span(i, end),
                    });
                    i = end;
                }
                None => {
                    errors.push(
                        Diagnostic::error("E0002", "unterminated block comment")
                            .with_primary(span(i, i + 2), "this comment is never closed")
                            .with_help("close it with `*/` (block comments do not nest)"),
                    );
                    return Scanned { comments, errors };
                }
            },
            b'a'..=b'z' | b'A'..=b'Z' | b'_' => {
                let start = i;
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                let word = &src[start..i];
                let ifs = match frames.last_mut() {
                    Some(f) => &mut f.ifs,
                    None => &mut top_ifs,
                };
                if word == "if" {
                    *ifs += 1;
                    if depth(&frames, top_ifs) > MAX_NESTING {
                        errors.push(too_deep(span(start, i)));
                        return Scanned { comments, errors };
                    }
                } else if STMT_KEYWORDS.contains(&word) {
                    *ifs = 0;
                }
            }
            b'0'..=b'9' => {
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'.') {
                    i += 1;
                }
            }
            b'(' | b'{' => {
                frames.push(Frame {
                    open: b,
                    at: i,
                    ifs: 0,
                });
                if depth(&frames, top_ifs) > MAX_NESTING {
                    errors.push(too_deep(span(i, i + 1)));
                    return Scanned { comments, errors };
                }
                i += 1;
            }
            b')' | b'}' => {
                let want = if b == b')' { b'(' } else { b'{' };
                match frames.pop() {
                    None => {
                        errors.push(
                            Diagnostic::error(
                                "E0004",
                                format!("unexpected closing `{}`", b as char),
                            )
                            .with_primary(span(i, i + 1), "nothing to close here"),
                        );
                        return Scanned { comments, errors };
                    }
                    Some(f) if f.open != want => {
                        let close = if f.open == b'(' { ')' } else { '}' };
                        errors.push(
                            Diagnostic::error(
                                "E0004",
                                format!(
                                    "mismatched closing delimiter: expected `{close}`, found `{}`",
                                    b as char
                                ),
                            )
                            .with_primary(span(i, i + 1), format!("expected `{close}`"))
                            .with_secondary(
                                span(f.at, f.at + 1),
                                format!("this `{}` is not closed", f.open as char),
                            ),
                        );
                        return Scanned { comments, errors };
                    }
                    Some(_) => {}
                }
                i += 1;
            }
            b',' => {
                if let Some(f) = frames.last_mut() {
                    f.ifs = 0;
                }
                i += 1;
            }
            b'=' | b':' | b';' | b'+' | b'-' | b'*' | b'/' | b'^' | b'<' | b'>' | b'!' | b'&'
            | b'|' | b'.' => i += 1,
            _ => {
                // Not part of the language; report it (on a char boundary) and go on.
                let c = src[i..].chars().next().unwrap_or('\u{fffd}');
                let len = c.len_utf8();
                if char_errors < MAX_CHAR_ERRORS {
                    errors.push(
                        Diagnostic::error("E0003", format!("unexpected character {c:?}"))
                            .with_primary(span(i, i + len), "not part of the rlo language")
                            .with_help(char_help(c)),
                    );
                }
                char_errors += 1;
                i += len;
            }
        }
    }
    if errors.is_empty() {
        if let Some(f) = frames.last() {
            let close = if f.open == b'(' { ')' } else { '}' };
            let mut d = Diagnostic::error("E0004", format!("unclosed `{}`", f.open as char))
                .with_primary(
                    span(f.at, f.at + 1),
                    format!("this `{}` is never closed", f.open as char),
                )
                .with_help(format!("add `{close}`"));
            if frames.len() > 1 {
                d = d.with_note(format!(
                    "{} delimiters are open at the end of the file",
                    frames.len()
                ));
            }
            errors.push(d);
        }
    }
    Scanned { comments, errors }
}

fn too_deep(span: Span) -> Diagnostic {
    Diagnostic::error(
        "E0005",
        format!("expression nested too deeply (more than {MAX_NESTING} levels)"),
    )
    .with_primary(span, "nesting limit reached here")
    .with_help("split the expression with `let` bindings")
}

fn char_help(c: char) -> String {
    match c {
        '"' | '\'' => "rlo has no string literals".to_string(),
        '[' | ']' => "rlo has no indexing; values are addressed by level (see spec.md)".to_string(),
        '%' => "there is no `%` operator".to_string(),
        '#' => "comments start with `//`".to_string(),
        c if c.is_alphabetic() => "names use ASCII letters, digits and `_`".to_string(),
        _ => "remove it".to_string(),
    }
}
