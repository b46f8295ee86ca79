//! Diagnostics: what is wrong in a policy file, where, and how to fix it.

use std::fmt;
use std::ops::Range;

use annotate_snippets::{AnnotationKind, Level, Origin, Renderer, Snippet};
use serde::Serialize;

/// One policy file's text and the name it is reported under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    /// The name diagnostics use, usually a path relative to the working directory.
    pub name: String,
    /// The whole text of the file.
    pub text: String,
}

impl Source {
    /// A source from a name and its text.
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Source {
        Source {
            name: name.into(),
            text: text.into(),
        }
    }
}

/// Where in a file a diagnostic points.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Location {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// The offending text (clipped to its first line).
    pub snippet: String,
    #[serde(skip)]
    line_text: String,
    #[serde(skip)]
    range_in_line: Range<usize>,
}

/// A problem found while loading policies.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// The file, as named by its [`Source`].
    pub file: String,
    /// Where in the file, when the problem has a place.
    #[serde(flatten)]
    pub location: Option<Location>,
    /// What is wrong, lowercase, user input in backticks.
    pub message: String,
    /// How to fix it.
    pub hint: Option<String>,
}

impl Diagnostic {
    /// A diagnostic pointing at a byte range of a source.
    pub fn at(source: &Source, span: Range<usize>, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            file: source.name.clone(),
            location: Some(locate(&source.text, span)),
            message: message.into(),
            hint: None,
        }
    }

    /// A diagnostic about a whole file (or a path that could not be read).
    pub fn file(file: impl Into<String>, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            file: file.into(),
            location: None,
            message: message.into(),
            hint: None,
        }
    }

    /// Adds a fix hint.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Diagnostic {
        self.hint = Some(hint.into());
        self
    }

    /// Line and column, when the diagnostic has a place.
    pub fn line_column(&self) -> Option<(usize, usize)> {
        self.location.as_ref().map(|l| (l.line, l.column))
    }
}

fn locate(text: &str, span: Range<usize>) -> Location {
    let start = floor_char_boundary(text, span.start.min(text.len()));
    let end = floor_char_boundary(text, span.end.clamp(start, text.len()));
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
    let line = text[..start].matches('\n').count() + 1;
    let column = text[line_start..start].chars().count() + 1;
    let line_text = text[line_start..line_end].trim_end_matches('\r').to_owned();
    let clip_end = end.min(line_start + line_text.len()).max(start);
    // The span may point into the carriage returns trimmed from the line: clamp both
    // ends to what is shown, or the renderer is asked to mark past the line's end.
    let len = line_text.len();
    let from = (start - line_start).min(len);
    let to = (clip_end - line_start).clamp(from, len);
    Location {
        line,
        column,
        snippet: text[start..clip_end].to_owned(),
        line_text,
        range_in_line: from..to,
    }
}

fn floor_char_boundary(text: &str, mut i: usize) -> usize {
    while i > 0 && !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

impl fmt::Display for Diagnostic {
    /// Renders the diagnostic the way rustc does, without colour.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let title = Level::ERROR.primary_title(self.message.as_str());
        let mut group = match &self.location {
            Some(loc) => title.element(
                Snippet::source(loc.line_text.as_str())
                    .line_start(loc.line)
                    .path(self.file.as_str())
                    .annotation(AnnotationKind::Primary.span(loc.range_in_line.clone())),
            ),
            None => title.element(Origin::path(self.file.as_str())),
        };
        if let Some(hint) = &self.hint {
            group = group.element(Level::HELP.message(hint.as_str()));
        }
        f.write_str(&Renderer::plain().render(&[group]))
    }
}

/// Every problem found in a policy set; a set with any of them loads nothing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{} problem{} in the policies", .0.len(), if .0.len() == 1 { "" } else { "s" })]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    /// All diagnostics rendered, separated by blank lines.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for d in &self.0 {
            out.push_str(&d.to_string());
            out.push_str("\n\n");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_line_column_and_snippet() {
        let src = Source::new("a.toml", "x = 1\nactions = [\"updat\"]\n");
        let d = Diagnostic::at(&src, 17..24, "unknown action `updat`");
        let loc = d.location.clone().unwrap();
        assert_eq!((loc.line, loc.column), (2, 12));
        assert_eq!(loc.snippet, "\"updat\"");
        let rendered = d.to_string();
        assert!(rendered.contains("a.toml:2:12"), "{rendered}");
        assert!(rendered.contains("^^^^^^^"), "{rendered}");
    }

    /// Found by fuzzing: a span inside the carriage returns at the end of a line.
    #[test]
    fn spans_inside_trailing_carriage_returns_do_not_panic() {
        let src = Source::new("a.toml", "\"\r\r");
        let d = Diagnostic::at(&src, 3..3, "x");
        assert!(d.to_string().contains("a.toml"));
        let parsed = crate::parse_file(Source::new("f.toml", "\"\r\r"));
        for d in &parsed.diagnostics {
            assert!(!d.to_string().is_empty());
        }
    }

    #[test]
    fn spans_past_the_end_do_not_panic() {
        let src = Source::new("a.toml", "é");
        let d = Diagnostic::at(&src, 1..99, "x");
        assert_eq!(d.line_column(), Some((1, 1)));
    }
}
