//! Syntax-error recovery: after pest's first error, parse again from the next statement of the
//! same objective body, then from the next item, so that one run reports the errors of every
//! broken statement and item (at most [`MAX_ERRORS`]).

use crate::parse::{parse_inner, pest_parse};
use crate::span::FileId;
use crate::Diagnostic;

/// At most this many syntax errors are reported for one file.
const MAX_ERRORS: usize = 20;

/// After a syntax error: the errors of the following statements of the same objective body
/// ([`next_stmt_error`]), then a parse from the next line that starts an item at column 0
/// (`fn`, `objective`, `use`, `///`). Each restart parses a suffix of the file, so the spans of
/// its diagnostics are shifted back.
pub(crate) fn recover(src: &str, file: FileId, first: Diagnostic) -> Vec<Diagnostic> {
    let mut errors = vec![first];
    while let Some(last) = errors.last().and_then(Diagnostic::primary_span) {
        if errors.len() >= MAX_ERRORS {
            break;
        }
        let from = (last.end as usize).max(last.start as usize + 1);
        if let Some(d) = next_stmt_error(src, file, last.start as usize, from) {
            errors.push(d);
            continue;
        }
        let Some(start) = next_item_start(src, from) else {
            break;
        };
        let rest = &src[start..];
        let (found, more) = match pest_parse(rest) {
            Ok(_) => (parse_inner(rest, file).err().unwrap_or_default(), false),
            Err(e) => (vec![crate::perror::convert(rest, file, &e)], true),
        };
        for mut d in found {
            for l in &mut d.labels {
                l.span.start += start as u32;
                l.span.end += start as u32;
            }
            errors.push(d);
        }
        if !more {
            break;
        }
    }
    errors.truncate(MAX_ERRORS);
    errors
}

/// Within an objective body, after a syntax error at `at` (ending at `from`): the first syntax
/// error of the statements that follow (from the statement the error points at, when it begins
/// its line, or the next line that starts with a statement keyword, to the end of the item),
/// found by parsing them as the body of a stand-in objective; spans are shifted back to `src`.
/// `None` when the error is not inside an objective body or the rest parses.
fn next_stmt_error(src: &str, file: FileId, at: usize, from: usize) -> Option<Diagnostic> {
    let item = item_starts(src)
        .take_while(|&i| i <= from)
        .filter(|&i| !src[i..].starts_with("///"))
        .last()?;
    let rest = src.get(item..)?;
    if !rest.starts_with("objective ") {
        return None;
    }
    let body = item + rest.find('{')?;
    if from <= body {
        return None;
    }
    let end = next_item_start(src, from).unwrap_or(src.len());
    // An error reported at a statement keyword that begins its line (the statement before it
    // was incomplete) leaves that statement to check; otherwise start at the next one.
    let line = src.get(..at)?.rfind('\n').map_or(0, |n| n + 1);
    let stmt = if src.get(line..at)?.trim().is_empty() && starts_stmt(src.get(at..)?) {
        at
    } else {
        next_stmt_start(src, from, end)?
    };
    const HEAD: &str = "objective __recover() {\n";
    let text = format!("{HEAD}{}", src.get(stmt..end)?);
    let e = pest_parse(&text).err()?;
    let mut d = crate::perror::convert(&text, file, &e);
    let shift = |x: u32| ((x as usize).saturating_sub(HEAD.len()) + stmt).min(src.len()) as u32;
    for l in &mut d.labels {
        l.span.start = shift(l.span.start);
        l.span.end = shift(l.span.end);
    }
    // At or past the item's end it is the item's own unclosed brace, already reported; and
    // every new error must come after the last one.
    let p = d.primary_span()?.start as usize;
    (p < end && p > at).then_some(d)
}

fn starts_stmt(t: &str) -> bool {
    ["let ", "loss ", "metric ", "output ", "input "]
        .iter()
        .any(|k| t.starts_with(k))
}

/// The first line in `from..end` that starts (after indentation) with a statement keyword.
fn next_stmt_start(src: &str, from: usize, end: usize) -> Option<usize> {
    let mut i = src.get(from..end)?.find('\n')? + from + 1;
    while i < end {
        let line = src.get(i..end)?;
        let t = line.trim_start();
        if starts_stmt(t) {
            return Some(i + (line.len() - t.len()));
        }
        i += line.find('\n')? + 1;
    }
    None
}

/// The byte offset of the first line after `from` that starts an item.
fn next_item_start(src: &str, from: usize) -> Option<usize> {
    item_starts(src).find(|&i| i > from)
}

/// The byte offsets of the lines that start an item (`fn`, `objective`, `use`, `///` at column
/// 0), outside any braces and comments, in order.
fn item_starts(src: &str) -> impl Iterator<Item = usize> + '_ {
    let bytes = src.as_bytes();
    let (mut depth, mut i, mut line_start) = (0i64, 0usize, true);
    std::iter::from_fn(move || {
        while i < bytes.len() {
            let here = i;
            let found = line_start
                && depth == 0
                && ["fn ", "objective ", "use ", "///"]
                    .iter()
                    .any(|k| src[here..].starts_with(k));
            line_start = false;
            match bytes[i] {
                b'/' if bytes.get(i + 1) == Some(&b'/') => {
                    i = src[i..].find('\n').map_or(src.len(), |n| i + n);
                }
                b'/' if bytes.get(i + 1) == Some(&b'*') => {
                    // An unterminated block comment ends the scan (the pre-scan reports it).
                    i = src[i + 2..]
                        .find("*/")
                        .map_or(bytes.len(), |n| i + 2 + n + 2);
                }
                b'{' => {
                    depth += 1;
                    i += 1;
                }
                b'}' => {
                    depth -= 1;
                    i += 1;
                }
                b'\n' => {
                    line_start = true;
                    i += 1;
                }
                _ => i += 1,
            }
            if found {
                return Some(here);
            }
        }
        None
    })
}
