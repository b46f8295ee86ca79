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
    /// The 1-based line on which the span ends.
    pub end_line: usize,
    /// The 1-based column, in characters, just past the span's last character (equal to
    /// `column` for an empty span).
    pub end_column: usize,
    /// The span's byte offsets in the file, end exclusive.
    pub span: Range<usize>,
    /// The offending text (clipped to its first line).
    pub snippet: String,
    #[serde(skip)]
    line_text: String,
    #[serde(skip)]
    range_in_line: Range<usize>,
}

/// How grave a diagnostic is. Every problem found today stops the set from loading.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The set does not load.
    #[default]
    Error,
}

/// Another place a diagnostic refers to, such as where a duplicated id was first defined.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Related {
    /// The file, as named by its [`Source`].
    pub file: String,
    /// Where in the file.
    #[serde(flatten)]
    pub location: Option<Location>,
    /// What is there, lowercase (`first defined here`).
    pub message: String,
}

/// A problem found while loading policies.
///
/// Its JSON form (also the `diagnostics` of a failed reload over HTTP) is flat: `file`,
/// then, when it has a place, `line`, `column`, `end_line`, `end_column`, `span` (`start`
/// and `end` byte offsets) and `snippet`, then `severity`, `message`, `hint` and
/// `related` (a list of `file`, place and `message`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// The file, as named by its [`Source`].
    pub file: String,
    /// Where in the file, when the problem has a place.
    #[serde(flatten)]
    pub location: Option<Location>,
    /// How grave it is.
    pub severity: Severity,
    /// What is wrong, lowercase, user input in backticks.
    pub message: String,
    /// How to fix it.
    pub hint: Option<String>,
    /// Other places the problem involves (where a duplicate was first defined).
    pub related: Vec<Related>,
}

impl Diagnostic {
    /// A diagnostic pointing at a byte range of a source.
    pub fn at(source: &Source, span: Range<usize>, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            file: source.name.clone(),
            location: Some(locate(&source.text, span)),
            severity: Severity::Error,
            message: message.into(),
            hint: None,
            related: Vec::new(),
        }
    }

    /// A diagnostic about a whole file (or a path that could not be read).
    pub fn file(file: impl Into<String>, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            file: file.into(),
            location: None,
            severity: Severity::Error,
            message: message.into(),
            hint: None,
            related: Vec::new(),
        }
    }

    /// Adds a fix hint.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Diagnostic {
        self.hint = Some(hint.into());
        self
    }

    /// Adds another place the problem involves, such as where a duplicate was first
    /// defined.
    pub fn with_related(
        mut self,
        source: &Source,
        span: Range<usize>,
        message: impl Into<String>,
    ) -> Diagnostic {
        self.related.push(Related {
            file: source.name.clone(),
            location: Some(locate(&source.text, span)),
            message: message.into(),
        });
        self
    }

    /// Renders the diagnostic the way rustc does, with ANSI colours for a terminal.
    pub fn render_styled(&self) -> String {
        self.render_with(&Renderer::styled())
    }

    fn render_with(&self, renderer: &Renderer) -> String {
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
        renderer.render(&[group])
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
    let end_line = line + text[start..end].matches('\n').count();
    let end_line_start = text[..end].rfind('\n').map_or(0, |i| i + 1);
    let end_column = text[end_line_start..end].chars().count() + 1;
    let clip_end = end.min(line_start + line_text.len()).max(start);
    // The span may point into the carriage returns trimmed from the line: clamp both
    // ends to what is shown, or the renderer is asked to mark past the line's end.
    let len = line_text.len();
    let from = (start - line_start).min(len);
    let to = (clip_end - line_start).clamp(from, len);
    Location {
        line,
        column,
        end_line,
        end_column,
        span: start..end,
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
        f.write_str(&self.render_with(&Renderer::plain()))
    }
}

/// Every problem found in a policy set; a set with any of them loads nothing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{} problem{} in the policies", .0.len(), if .0.len() == 1 { "" } else { "s" })]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    /// All diagnostics rendered, separated by blank lines.
    pub fn render(&self) -> String {
        self.render_each(Diagnostic::to_string)
    }

    /// All diagnostics rendered with ANSI colours for a terminal, separated by blank lines.
    pub fn render_styled(&self) -> String {
        self.render_each(Diagnostic::render_styled)
    }

    fn render_each(&self, render: impl Fn(&Diagnostic) -> String) -> String {
        let mut out = String::new();
        for d in &self.0 {
            out.push_str(&render(d));
            out.push_str("\n\n");
        }
        out
    }
}

/// "Did you mean": the known names nearest to `name` by Damerau-Levenshtein distance,
/// every one at the least distance (in the order given), provided it is within
/// `within(known)` edits. Empty when none is near enough.
pub(crate) fn nearest<'a>(
    name: &str,
    known: impl IntoIterator<Item = &'a str>,
    within: impl Fn(&str) -> usize,
) -> Vec<&'a str> {
    let mut best: Option<usize> = None;
    let mut found = Vec::new();
    for k in known {
        let limit = within(k);
        // Only names of about the same length can be within the distance.
        if k.len().abs_diff(name.len()) > limit {
            continue;
        }
        let d = strsim::damerau_levenshtein(name, k);
        if d > limit || best.is_some_and(|b| d > b) {
            continue;
        }
        if best != Some(d) {
            best = Some(d);
            found.clear();
        }
        found.push(k);
    }
    found
}

/// How far a misspelt field or id may be from the intended one: two edits, or a third of
/// its length for long ones.
pub(crate) fn typo_distance(known: &str) -> usize {
    2.max(known.len() / 3)
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

    #[test]
    fn a_span_over_lines_has_its_end_line_and_column() {
        let src = Source::new("a.toml", "x = [\n  \"é\",\n]\n");
        let d = Diagnostic::at(&src, 4..15, "x");
        let loc = d.location.unwrap();
        assert_eq!((loc.line, loc.column), (1, 5));
        assert_eq!((loc.end_line, loc.end_column), (3, 2));
        assert_eq!(loc.span, 4..15);
        assert_eq!(loc.snippet, "[");
    }

    #[test]
    fn json_form_is_flat_with_severity_and_related_places() {
        let src = Source::new("a.toml", "id = \"x\"\nid = \"x\"\n");
        let d = Diagnostic::at(&src, 14..17, "duplicate app id `x`")
            .with_hint("ids must be unique")
            .with_related(&src, 5..8, "first defined here");
        let json = serde_json::to_value(&d).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "file": "a.toml", "line": 2, "column": 6, "end_line": 2, "end_column": 9,
                "span": {"start": 14, "end": 17}, "snippet": "\"x\"",
                "severity": "error", "message": "duplicate app id `x`", "hint": "ids must be unique",
                "related": [{
                    "file": "a.toml", "line": 1, "column": 6, "end_line": 1, "end_column": 9,
                    "span": {"start": 5, "end": 8}, "snippet": "\"x\"",
                    "message": "first defined here",
                }],
            })
        );
    }

    #[test]
    fn styled_rendering_has_ansi_escapes_and_plain_has_none() {
        let src = Source::new("a.toml", "actions = [\"updat\"]\n");
        let d = Diagnostic::at(&src, 11..18, "unknown action `updat`").with_hint("h");
        assert!(d.render_styled().contains('\u{1b}'));
        assert!(!d.to_string().contains('\u{1b}'));
        let all = Diagnostics(vec![d.clone(), d]);
        assert!(all.render_styled().contains('\u{1b}'));
        assert!(!all.render().contains('\u{1b}'));
    }

    #[test]
    fn nearest_keeps_every_name_at_the_least_distance_within_the_limit() {
        let known = ["android", "apps", "actions", "ios"];
        assert_eq!(nearest("andriod", known, typo_distance), ["android"]);
        assert_eq!(nearest("acions", known, typo_distance), ["actions"]);
        assert!(nearest("zzzzzzzz", known, typo_distance).is_empty());
        assert_eq!(
            nearest("ab", ["aa", "bb", "abc"], |_| 1),
            ["aa", "bb", "abc"]
        );
        assert_eq!(nearest("ab", ["ab", "aa"], |_| 1), ["ab"]);
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
