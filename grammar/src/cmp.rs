//! Comparing ASTs up to layout: what "the formatter's output re-parses to the same AST" means.
//!
//! [`normalized`] maps a file to a JSON value without spans (a span becomes the string `"span"`,
//! so `diff: Some(span)` still differs from `None`), without [`ExprKind::Paren`] wrappers (the
//! formatter chooses parentheses from precedence), with `use` items first in source order (the
//! formatter hoists them) and with comments reduced to their texts in order of appearance within
//! that reordering... simplified to the sorted multiset of comment texts, since the formatter may
//! move a comment from inside an expression to the line before its statement.
//!
//! [`ExprKind::Paren`]: crate::ast::ExprKind::Paren

use crate::ast::{File, Item};
use serde_json::Value;

/// The layout-free form of a file (see the module docs).
pub fn normalized(file: &File) -> Value {
    let items: Vec<&Item> = file
        .items
        .iter()
        .filter(|i| matches!(i, Item::Use(_)))
        .chain(file.items.iter().filter(|i| !matches!(i, Item::Use(_))))
        .collect();
    let mut comments: Vec<&str> = file.comments.iter().map(|c| c.text.as_str()).collect();
    comments.sort_unstable();
    let items = serde_json::to_value(items).unwrap_or(Value::Null);
    serde_json::json!({ "items": strip(items), "comments": comments })
}

/// `a` and `b` are the same program up to layout.
pub fn same_modulo_layout(a: &File, b: &File) -> bool {
    normalized(a) == normalized(b)
}

fn is_span(m: &serde_json::Map<String, Value>) -> bool {
    m.len() == 3 && m.contains_key("file") && m.contains_key("start") && m.contains_key("end")
}

fn strip(v: Value) -> Value {
    match v {
        Value::Object(m) if is_span(&m) => Value::String("span".into()),
        Value::Object(mut m) => {
            // An `Expr` whose kind is `Paren(inner)`: replace it by the inner expression.
            if let Some(Value::Object(kind)) = m.get("kind") {
                if let Some(inner) = kind.get("Paren") {
                    return strip(inner.clone());
                }
            }
            let keys: Vec<String> = m.keys().cloned().collect();
            for k in keys {
                if let Some(x) = m.remove(&k) {
                    m.insert(k, strip(x));
                }
            }
            Value::Object(m)
        }
        Value::Array(a) => Value::Array(a.into_iter().map(strip).collect()),
        other => other,
    }
}
