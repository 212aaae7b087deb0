//! The one diagnostic type of rlo and its one rendering site.
//!
//! Every phase (parse, resolve, check, lower, backends, batch binding) has its own error enum holding
//! spans and facts; each enum converts to a [`Diagnostic`], which holds all the wording. Rendering is
//! rustc-like text (through `codespan-reporting`) or JSON (`--message-format json`).

use crate::span::{SourceMap, Span};
use codespan_reporting::diagnostic as cs;
use codespan_reporting::files::{Error as FilesError, Files};
use codespan_reporting::term;
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// A span with a message; the primary label is where the problem is, secondary ones give context.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Label {
    pub span: Span,
    pub message: String,
    pub primary: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    /// Stable code, e.g. `E0201`; listed in spec.md.
    pub code: &'static str,
    pub message: String,
    pub labels: Vec<Label>,
    pub notes: Vec<String>,
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn error(code: &'static str, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            code,
            message: message.into(),
            labels: Vec::new(),
            notes: Vec::new(),
            help: None,
        }
    }

    pub fn warning(code: &'static str, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(code, message)
        }
    }

    pub fn with_primary(mut self, span: Span, message: impl Into<String>) -> Diagnostic {
        self.labels.push(Label {
            span,
            message: message.into(),
            primary: true,
        });
        self
    }

    pub fn with_secondary(mut self, span: Span, message: impl Into<String>) -> Diagnostic {
        self.labels.push(Label {
            span,
            message: message.into(),
            primary: false,
        });
        self
    }

    pub fn with_note(mut self, note: impl Into<String>) -> Diagnostic {
        self.notes.push(note.into());
        self
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help = Some(help.into());
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// The primary span, if any (used to sort diagnostics by position).
    pub fn primary_span(&self) -> Option<Span> {
        self.labels.iter().find(|l| l.primary).map(|l| l.span)
    }

    /// rustc-like text: `error[E0201]: ...`, `--> file:line:col`, the source line, labels, notes.
    pub fn render(&self, sources: &SourceMap, color: bool) -> String {
        let files = FilesAdapter(sources);
        let mut d = match self.severity {
            Severity::Error => cs::Diagnostic::error(),
            Severity::Warning => cs::Diagnostic::warning(),
        }
        .with_code(self.code)
        .with_message(&self.message);
        d = d.with_labels(
            self.labels
                .iter()
                .map(|l| {
                    let style = if l.primary {
                        cs::LabelStyle::Primary
                    } else {
                        cs::LabelStyle::Secondary
                    };
                    cs::Label::new(style, l.span.file.0 as usize, l.span.range())
                        .with_message(&l.message)
                })
                .collect(),
        );
        let mut notes = self.notes.clone();
        if let Some(h) = &self.help {
            notes.push(format!("help: {h}"));
        }
        d = d.with_notes(notes);
        let config = term::Config::default();
        let mut out = String::new();
        let ok = if color {
            let mut w = term::termcolor::Ansi::new(Vec::new());
            let r = term::emit_to_write_style(&mut w, &config, &files, &d);
            out = String::from_utf8_lossy(&w.into_inner()).into_owned();
            r
        } else {
            term::emit_to_string(&mut out, &config, &files, &d)
        };
        if ok.is_err() || out.is_empty() {
            // A span outside its file: never lose the message.
            let loc = self
                .primary_span()
                .map(|s| sources.location(s))
                .unwrap_or_default();
            out = format!(
                "{:?}[{}]: {} {}\n",
                self.severity, self.code, self.message, loc
            );
        }
        out
    }

    /// One JSON object per diagnostic, for tools (`--message-format json`).
    pub fn to_json(&self, sources: &SourceMap) -> serde_json::Value {
        let labels: Vec<_> = self
            .labels
            .iter()
            .map(|l| {
                let (file, line, col) = match sources.get(l.span.file) {
                    Some(f) => {
                        let (line, col) = f.line_col(l.span.start as usize);
                        (f.name.clone(), line, col)
                    }
                    None => (String::new(), 0, 0),
                };
                serde_json::json!({
                    "file": file, "line": line, "column": col,
                    "byte_start": l.span.start, "byte_end": l.span.end,
                    "message": l.message, "primary": l.primary,
                })
            })
            .collect();
        serde_json::json!({
            "severity": self.severity, "code": self.code, "message": self.message,
            "labels": labels, "notes": self.notes, "help": self.help,
        })
    }
}

/// Renders a list of diagnostics in order, separated by blank lines, with a summary line.
pub fn render_all(diags: &[Diagnostic], sources: &SourceMap, color: bool) -> String {
    let mut out = String::new();
    for d in diags {
        out.push_str(&d.render(sources, color));
        out.push('\n');
    }
    let errors = diags.iter().filter(|d| d.is_error()).count();
    let warnings = diags.len() - errors;
    if errors > 0 {
        out.push_str(&format!(
            "error: could not compile due to {errors} error{}{}\n",
            if errors == 1 { "" } else { "s" },
            if warnings > 0 {
                format!(
                    "; {warnings} warning{} emitted",
                    if warnings == 1 { "" } else { "s" }
                )
            } else {
                String::new()
            }
        ));
    }
    out
}

struct FilesAdapter<'a>(&'a SourceMap);

impl<'a> Files<'a> for FilesAdapter<'a> {
    type FileId = usize;
    type Name = &'a str;
    type Source = &'a str;

    fn name(&'a self, id: usize) -> Result<&'a str, FilesError> {
        self.0
            .get(crate::span::FileId(id as u32))
            .map(|f| f.name.as_str())
            .ok_or(FilesError::FileMissing)
    }

    fn source(&'a self, id: usize) -> Result<&'a str, FilesError> {
        self.0
            .get(crate::span::FileId(id as u32))
            .map(|f| f.text.as_str())
            .ok_or(FilesError::FileMissing)
    }

    fn line_index(&'a self, id: usize, byte_index: usize) -> Result<usize, FilesError> {
        let f = self
            .0
            .get(crate::span::FileId(id as u32))
            .ok_or(FilesError::FileMissing)?;
        Ok(f.line_col(byte_index).0 - 1)
    }

    fn line_range(
        &'a self,
        id: usize,
        line_index: usize,
    ) -> Result<std::ops::Range<usize>, FilesError> {
        let f = self
            .0
            .get(crate::span::FileId(id as u32))
            .ok_or(FilesError::FileMissing)?;
        let text = f.text.as_str();
        let mut start = 0usize;
        for _ in 0..line_index {
            match text.get(start..).and_then(|s| s.find('\n')) {
                Some(i) => start += i + 1,
                None => {
                    return Err(FilesError::LineTooLarge {
                        given: line_index,
                        max: 0,
                    })
                }
            }
        }
        let end = text
            .get(start..)
            .and_then(|s| s.find('\n'))
            .map(|i| start + i + 1)
            .unwrap_or(text.len());
        Ok(start..end)
    }
}
