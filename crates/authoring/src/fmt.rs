//! The canonical layout of policy files: `gatekeeper fmt`.
//!
//! The document is parsed with `toml_edit`, which keeps every comment and blank line
//! with the item it belongs to; the formatter rewrites only the layout around the items
//! and the spelling of strings, keys and datetimes, never their order or their values:
//!
//! - `key = value` with one space each side of `=`, no indentation of keys;
//! - `[table]` and `[[array.of.tables]]` headers without inner spaces, each after one
//!   blank line; at most one blank line anywhere, none right after a header;
//! - comments kept where they were written: above an item, at the end of its line (one
//!   space before `#`, the text as written without trailing white space), inside arrays;
//! - arrays on one line (`["a", "b"]`) when they hold no comment and fit in
//!   [`MAX_WIDTH`] columns, otherwise one item per line, indented by two spaces, with a
//!   trailing comma;
//! - inline tables as `{ key = value, other = value }` (TOML keeps them on one line);
//! - strings in basic quotes (`"..."`) with the fewest escapes, except control and
//!   invisible characters (bidirectional controls, zero-width spaces), which stay
//!   escaped so that nobody reads a policy differently from the engine; a string that
//!   spans lines stays as written (`"""` or `'''`);
//! - datetimes as `2020-09-21T03:59:00Z` (`T` and `Z` upper case, no trailing zeros in
//!   fractions of a second); numbers and booleans as written;
//! - LF line ends, no trailing white space, one final newline.
//!
//! Meaning is checked, not assumed: the formatted text must parse to the same TOML value
//! as the original, or nothing is written. Files are replaced atomically (a temporary
//! file in the same folder, synced, then renamed over the original).
//!
//! ```
//! let messy = "include=[ '../common' ]   # shared items\n[instrument]\nid='x'\n";
//! let tidy = authoring::fmt::format_text(std::path::Path::new("x.toml"), messy).unwrap();
//! assert_eq!(tidy, "include = [\"../common\"] # shared items\n\n[instrument]\nid = \"x\"\n");
//! ```

use std::path::{Path, PathBuf};

use toml_edit::{Array, DocumentMut, InlineTable, Item, KeyMut, Table, Value};

/// Lines longer than this put each item of an array on a line of its own.
pub const MAX_WIDTH: usize = 100;

/// Indentation of each nesting level of a multi-line array.
const INDENT: usize = 2;

/// Why a file could not be formatted. The file is left as it was in every case.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file is not valid TOML.
    #[error("{}:{line}:{column}: invalid TOML: {message}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line of the problem.
        line: usize,
        /// 1-based column (in characters) of the problem.
        column: usize,
        /// What the parser says.
        message: String,
    },
    /// The formatted text would not parse to the same TOML value: a bug of the
    /// formatter, caught before anything was written.
    #[error(
        "{}: formatting would change what the file means, so it was left as it is (a bug of the formatter: please report it with the file)",
        path.display()
    )]
    MeaningChanged {
        /// The file.
        path: PathBuf,
    },
    /// A file or folder that cannot be read or written.
    #[error("{}: cannot {action}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What was being done: `read the file`, `list the folder`, ...
        action: &'static str,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
}

/// Whether files are rewritten or only compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Rewrite every file that is not in the canonical layout.
    Write,
    /// Write nothing; report the files that would change.
    Check,
}

/// What happened to one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    /// Already in the canonical layout.
    Unchanged,
    /// Rewritten in the canonical layout ([`Mode::Write`]).
    Formatted,
    /// Not in the canonical layout, left as it is ([`Mode::Check`]): a unified diff from
    /// the file to its canonical layout.
    WouldChange {
        /// The unified diff, with the file's path in its header.
        diff: String,
    },
}

/// One file's outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileOutcome {
    /// The file, as found under the paths given.
    pub path: PathBuf,
    /// What happened to it.
    pub status: Status,
}

/// The outcome of formatting (or checking) a list of paths.
#[derive(Debug, Default)]
pub struct Report {
    /// Every file, in order: what happened to it, or why it could not be formatted.
    pub files: Vec<Result<FileOutcome, Error>>,
}

impl Report {
    /// Files rewritten, or (in check mode) that would change.
    pub fn changed(&self) -> impl Iterator<Item = &FileOutcome> {
        self.files
            .iter()
            .filter_map(|f| f.as_ref().ok())
            .filter(|f| f.status != Status::Unchanged)
    }

    /// Files that could not be formatted, and paths that could not be listed.
    pub fn errors(&self) -> impl Iterator<Item = &Error> {
        self.files.iter().filter_map(|f| f.as_ref().err())
    }

    /// The command's exit code: 2 when any file could not be formatted, 1 when a check
    /// found a file to change, 0 otherwise.
    pub fn exit_code(&self) -> u8 {
        if self.errors().next().is_some() {
            2
        } else if self
            .changed()
            .any(|f| matches!(f.status, Status::WouldChange { .. }))
        {
            1
        } else {
            0
        }
    }
}

/// Formats (or checks) every file of `paths`: a file is taken as it is, a folder for
/// every `*.toml` file below it, sorted. Never stops at the first problem.
pub fn run(paths: &[PathBuf], mode: Mode) -> Report {
    let mut report = Report::default();
    for path in paths {
        match collect(path) {
            Ok(files) => {
                for file in files {
                    report.files.push(format_file(&file, mode));
                }
            }
            Err(e) => report.files.push(Err(e)),
        }
    }
    report
}

/// The files `path` names: itself when it is a file, else every `*.toml` file below it
/// (links to folders are not followed), sorted.
pub fn collect(path: &Path) -> Result<Vec<PathBuf>, Error> {
    let meta = std::fs::metadata(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        action: "read it",
        source,
    })?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    let mut folders = vec![path.to_path_buf()];
    while let Some(folder) = folders.pop() {
        let io = |source| Error::Io {
            path: folder.clone(),
            action: "list the folder",
            source,
        };
        for entry in std::fs::read_dir(&folder).map_err(io)? {
            let entry = entry.map_err(io)?;
            let path = entry.path();
            if entry.file_type().map_err(io)?.is_dir() {
                folders.push(path);
            } else if path.extension().is_some_and(|e| e == "toml") && path.is_file() {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Formats (or checks) one file. In [`Mode::Write`] a file that changes is replaced
/// atomically, keeping its permissions.
pub fn format_file(path: &Path, mode: Mode) -> Result<FileOutcome, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        action: "read the file",
        source,
    })?;
    let formatted = format_text(path, &text)?;
    let status = if formatted == text {
        Status::Unchanged
    } else {
        match mode {
            Mode::Check => Status::WouldChange {
                diff: diff(path, &text, &formatted),
            },
            Mode::Write => {
                write_atomically(path, &formatted)?;
                Status::Formatted
            }
        }
    };
    Ok(FileOutcome {
        path: path.to_path_buf(),
        status,
    })
}

/// A unified diff from `old` to `new`, two lines of context, `path` in the header.
pub fn diff(path: &Path, old: &str, new: &str) -> String {
    let shown = path.display().to_string();
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(2)
        .header(&shown, &format!("{shown} (formatted)"))
        .to_string()
}

/// Replaces `path` with `text` so that no reader ever sees half of it: a temporary file
/// beside the target (through links, the linked file), synced, then renamed over it.
pub(crate) fn write_atomically(path: &Path, text: &str) -> Result<(), Error> {
    use std::io::Write as _;
    let target = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let io = |action| {
        move |source| Error::Io {
            path: path.to_path_buf(),
            action,
            source,
        }
    };
    let dir = target.parent().unwrap_or(Path::new("."));
    let permissions = std::fs::metadata(&target)
        .map_err(io("read the file"))?
        .permissions();
    let mut temp = tempfile::Builder::new()
        .prefix(".fmt-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(io("create a temporary file beside it"))?;
    temp.write_all(text.as_bytes())
        .map_err(io("write a temporary file beside it"))?;
    temp.as_file()
        .set_permissions(permissions)
        .map_err(io("set the temporary file's permissions"))?;
    temp.as_file()
        .sync_all()
        .map_err(io("sync the temporary file"))?;
    temp.persist(&target)
        .map_err(|e| io("replace the file")(e.error))?;
    Ok(())
}

/// The canonical layout of `text`, checked to mean the same TOML value. `path` only
/// names the file in errors.
pub fn format_text(path: &Path, text: &str) -> Result<String, Error> {
    let syntax = |span: Option<std::ops::Range<usize>>, message: &str| {
        let (line, column) = line_column(text, span.map_or(0, |s| s.start));
        Error::Syntax {
            path: path.to_path_buf(),
            line,
            column,
            message: message.trim_end().to_owned(),
        }
    };
    // The engine reads files with `toml`; the formatter edits them with `toml_edit`. A
    // file must be valid for both, and mean the same to `toml` afterwards.
    let before: toml::Table = toml::from_str(text).map_err(|e| syntax(e.span(), e.message()))?;
    let mut doc: DocumentMut = text
        .parse()
        .map_err(|e: toml_edit::TomlError| syntax(e.span(), e.message()))?;
    format_document(&mut doc);
    let rendered = doc.to_string();
    let body = rendered.trim_start_matches('\n').trim_end_matches('\n');
    let formatted = if body.is_empty() {
        String::new()
    } else {
        format!("{body}\n")
    };
    match toml::from_str::<toml::Table>(&formatted) {
        Ok(after) if after == before => Ok(formatted),
        _ => Err(Error::MeaningChanged {
            path: path.to_path_buf(),
        }),
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[start..].chars().count() + 1)
}

fn format_document(doc: &mut DocumentMut) {
    let trailing = raw(doc.trailing().as_str());
    let root = doc.as_table_mut();
    root.decor_mut().set_prefix("");
    root.decor_mut().set_suffix("");
    format_table(root, true);
    // Comments after the last item: one blank line before them if there was one.
    let lines = own_lines(&trailing, Context::Body { first: false });
    doc.set_trailing(render_lines(&lines, 0));
}

/// A table: its header's decor (unless it is the root), its key-values in the order
/// they are shown, then the tables below it.
fn format_table(table: &mut Table, root: bool) {
    if !root {
        let decor = table.decor_mut();
        let prefix = raw(decor.prefix().and_then(|r| r.as_str()));
        let suffix = raw(decor.suffix().and_then(|r| r.as_str()));
        // One blank line before every header (the document's first is trimmed later).
        let lines = own_lines(&prefix, Context::Header);
        decor.set_prefix(format!("\n{}", render_lines(&lines, 0)));
        decor.set_suffix(same_line(&suffix));
    }
    let mut values = Vec::new();
    let mut tables = Vec::new();
    collect_items(table, 0, &mut values, &mut tables);
    for (i, entry) in values.into_iter().enumerate() {
        let KeyValue {
            mut key,
            value,
            path_width,
        } = entry;
        let prefix = raw(key.leaf_decor().prefix().and_then(|r| r.as_str()));
        key.fmt();
        let lines = own_lines(&prefix, Context::Body { first: i == 0 });
        key.leaf_decor_mut().set_prefix(render_lines(&lines, 0));
        key.leaf_decor_mut().set_suffix(" ");
        let suffix = raw(value.decor().suffix().and_then(|r| r.as_str()));
        let column = path_width + key.display_repr().chars().count() + " = ".len();
        format_value(value, 0, column, true);
        value.decor_mut().set_prefix(" ");
        value.decor_mut().set_suffix(same_line(&suffix));
    }
    for table in tables {
        format_table(table, false);
    }
}

/// A key-value of a table body, with the width of the dotted keys before its key.
struct KeyValue<'a> {
    key: KeyMut<'a>,
    value: &'a mut Value,
    path_width: usize,
}

/// Splits a table's items, in the order `toml_edit` shows them, into key-values (through
/// dotted keys) and tables with headers of their own. Keys of headers and of dotted
/// tables are given their canonical spelling and no inner spaces here.
fn collect_items<'a>(
    table: &'a mut Table,
    path_width: usize,
    values: &mut Vec<KeyValue<'a>>,
    tables: &mut Vec<&'a mut Table>,
) {
    for (mut key, item) in table.iter_mut() {
        match item {
            Item::Value(value) => values.push(KeyValue {
                key,
                value,
                path_width,
            }),
            Item::Table(sub) => {
                key.fmt();
                if sub.is_dotted() {
                    let width = path_width + key.display_repr().chars().count() + 1;
                    collect_items(sub, width, values, tables);
                } else {
                    tables.push(sub);
                }
            }
            Item::ArrayOfTables(array) => {
                key.fmt();
                tables.extend(array.iter_mut());
            }
            Item::None => {}
        }
    }
}

/// A value in place: `indent` is the indentation of the line it starts on, `column` the
/// column it starts at; `may_break` is false inside inline tables, which TOML keeps on
/// one line (an array there breaks only to keep its comments).
fn format_value(value: &mut Value, indent: usize, column: usize, may_break: bool) {
    match value {
        Value::String(s) => {
            // A string that spans lines stays as written: `\n` escapes would be worse.
            let written = s.display_repr();
            let canonical = basic_string(s.value());
            let rewrite = !s.value().contains('\n') && written != canonical;
            if rewrite && let Ok(parsed) = canonical.parse::<Value>() {
                *value = parsed;
            }
        }
        Value::Datetime(d) => {
            if d.display_repr() != d.value().to_string() {
                *value = Value::from(*d.value());
            }
        }
        Value::Integer(_) | Value::Float(_) | Value::Boolean(_) => {}
        Value::Array(array) => format_array(array, indent, column, may_break),
        Value::InlineTable(table) => format_inline_table(table, indent),
    }
}

fn format_inline_table(table: &mut InlineTable, indent: usize) {
    table.set_preamble("");
    let mut values = Vec::new();
    collect_inline(table, &mut values);
    let count = values.len();
    for (i, (mut key, value)) in values.into_iter().enumerate() {
        key.fmt();
        key.leaf_decor_mut().set_prefix(" ");
        key.leaf_decor_mut().set_suffix(" ");
        format_value(value, indent, 0, false);
        value.decor_mut().set_prefix(" ");
        value
            .decor_mut()
            .set_suffix(if i + 1 == count { " " } else { "" });
    }
}

fn collect_inline<'a>(table: &'a mut InlineTable, values: &mut Vec<(KeyMut<'a>, &'a mut Value)>) {
    for (mut key, value) in table.iter_mut() {
        if !matches!(value, Value::InlineTable(sub) if sub.is_dotted()) {
            values.push((key, value));
        } else if let Value::InlineTable(sub) = value {
            key.fmt();
            collect_inline(sub, values);
        }
    }
}

/// What surrounds the items of an array: comments and blank lines, each in its place.
#[derive(Default)]
struct ArrayLayout {
    /// The comment at the end of the `[` line.
    open: Option<String>,
    /// Per item: the lines above it and the comment at the end of its line.
    items: Vec<(Vec<Line>, Option<String>)>,
    /// The lines above `]`.
    close: Vec<Line>,
}

impl ArrayLayout {
    fn read(array: &Array) -> ArrayLayout {
        let mut layout = ArrayLayout::default();
        let mut pending: Vec<Line> = Vec::new();
        for item in array.iter() {
            let decor = item.decor();
            layout.absorb(&mut pending, &raw(decor.prefix().and_then(|r| r.as_str())));
            layout.items.push((std::mem::take(&mut pending), None));
            layout.absorb(&mut pending, &raw(decor.suffix().and_then(|r| r.as_str())));
        }
        layout.absorb(&mut pending, &raw(array.trailing().as_str()));
        layout.close = pending;
        layout
    }

    /// Reads white space and comments: a comment on the line of the last item (or of `[`)
    /// is that line's; whole lines wait in `pending` for the next item (or `]`).
    fn absorb(&mut self, pending: &mut Vec<Line>, text: &str) {
        let (same, lines) = split_raw(text);
        if let Some(comment) = same {
            let slot = match self.items.last_mut() {
                Some((_, slot)) => slot,
                None => &mut self.open,
            };
            if slot.is_none() && pending.is_empty() {
                *slot = Some(comment);
            } else {
                pending.push(Line::Comment(comment));
            }
        }
        pending.extend(lines);
    }

    fn has_comments(&self) -> bool {
        self.open.is_some()
            || self.items.iter().any(|(lines, same)| {
                same.is_some() || lines.iter().any(|l| matches!(l, Line::Comment(_)))
            })
            || self.close.iter().any(|l| matches!(l, Line::Comment(_)))
    }
}

fn format_array(array: &mut Array, indent: usize, column: usize, may_break: bool) {
    let layout = ArrayLayout::read(array);
    let nested_comments = array.iter().any(value_has_comments);
    if !layout.has_comments() && !nested_comments {
        // One line, if it fits (or may not break).
        for (i, item) in array.iter_mut().enumerate() {
            format_value(item, indent, 0, false);
            item.decor_mut().set_prefix(if i == 0 { "" } else { " " });
            item.decor_mut().set_suffix("");
        }
        array.set_trailing_comma(false);
        array.set_trailing("");
        let mut probe = array.clone();
        probe.decor_mut().clear();
        let width = probe.to_string().chars().count();
        if !may_break || column + width <= MAX_WIDTH {
            return;
        }
    }
    // One item per line.
    let inner = indent + INDENT;
    let pad = " ".repeat(inner);
    let mut same_line_before = layout.open.clone();
    let mut first = true;
    for (item, (lines, same)) in array.iter_mut().zip(layout.items) {
        format_value(item, inner, inner, true);
        let mut prefix = String::new();
        if let Some(comment) = same_line_before.take() {
            prefix.push_str(&format!(" {comment}"));
        }
        prefix.push('\n');
        let lines = trim_blank_edges(lines, first, false);
        first = false;
        prefix.push_str(&render_lines(&lines, inner));
        prefix.push_str(&pad);
        item.decor_mut().set_prefix(prefix);
        item.decor_mut().set_suffix("");
        same_line_before = same;
    }
    let mut trailing = String::new();
    if let Some(comment) = same_line_before {
        trailing.push_str(&format!(" {comment}"));
    }
    trailing.push('\n');
    let close = trim_blank_edges(layout.close, true, true);
    trailing.push_str(&render_lines(&close, inner));
    trailing.push_str(&" ".repeat(indent));
    array.set_trailing_comma(true);
    array.set_trailing(trailing);
}

/// Whether a value holds a comment anywhere inside (arrays only can).
fn value_has_comments(value: &Value) -> bool {
    let comment = |raw: Option<&str>| raw.is_some_and(|r| r.contains('#'));
    match value {
        Value::Array(array) => {
            comment(array.trailing().as_str())
                || array.iter().any(|item| {
                    comment(item.decor().prefix().and_then(|r| r.as_str()))
                        || comment(item.decor().suffix().and_then(|r| r.as_str()))
                        || value_has_comments(item)
                })
        }
        Value::InlineTable(table) => table.iter().any(|(_, v)| value_has_comments(v)),
        _ => false,
    }
}

/// A line of white space or comment between items.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Line {
    Blank,
    /// The comment, from `#`, without trailing white space.
    Comment(String),
}

/// Where the lines above an item stand.
#[derive(Clone, Copy)]
enum Context {
    /// Above a table header: blank lines before the first comment are dropped (the
    /// header gets one of its own).
    Header,
    /// Above a key-value (or at the end of the document): no blank line above the first
    /// item of a table body.
    Body { first: bool },
}

/// The text of a decor, or nothing.
fn raw(text: Option<&str>) -> String {
    text.unwrap_or_default().to_owned()
}

/// Splits white space and comments into the comment ending the line it starts on (if
/// any) and the whole lines after it. What follows the last line end is indentation.
fn split_raw(text: &str) -> (Option<String>, Vec<Line>) {
    let mut parts = text.split('\n');
    let first = parts.next().unwrap_or_default().trim();
    let same = first.starts_with('#').then(|| first.to_owned());
    let mut rest: Vec<&str> = parts.collect();
    rest.pop(); // the indentation of what follows (or nothing)
    let lines = rest
        .into_iter()
        .map(|l| match l.trim() {
            "" => Line::Blank,
            comment => Line::Comment(comment.to_owned()),
        })
        .collect();
    (same, collapse(lines))
}

/// Runs of blank lines as one.
fn collapse(lines: Vec<Line>) -> Vec<Line> {
    let mut out: Vec<Line> = Vec::with_capacity(lines.len());
    for line in lines {
        if line == Line::Blank && out.last() == Some(&Line::Blank) {
            continue;
        }
        out.push(line);
    }
    out
}

fn trim_blank_edges(mut lines: Vec<Line>, leading: bool, trailing: bool) -> Vec<Line> {
    if trailing {
        while lines.last() == Some(&Line::Blank) {
            lines.pop();
        }
    }
    if leading {
        let start = lines.iter().take_while(|l| **l == Line::Blank).count();
        lines.drain(..start);
    }
    lines
}

/// The lines above an item at the start of a line (a key-value, a header): the text
/// before its first line end belongs to the line before, which (outside arrays) holds
/// no comment of its own after a key-value, so it is read as a line of its own.
fn own_lines(text: &str, context: Context) -> Vec<Line> {
    let mut lines = Vec::new();
    let mut parts = text.split('\n').peekable();
    while let Some(part) = parts.next() {
        let last = parts.peek().is_none();
        match part.trim() {
            "" if last => {}
            "" => lines.push(Line::Blank),
            comment => lines.push(Line::Comment(comment.to_owned())),
        }
    }
    let lines = collapse(lines);
    match context {
        Context::Header => trim_blank_edges(lines, true, false),
        Context::Body { first } => trim_blank_edges(lines, first, false),
    }
}

fn render_lines(lines: &[Line], indent: usize) -> String {
    let pad = " ".repeat(indent);
    let mut out = String::new();
    for line in lines {
        match line {
            Line::Blank => out.push('\n'),
            Line::Comment(c) => {
                out.push_str(&pad);
                out.push_str(c);
                out.push('\n');
            }
        }
    }
    out
}

/// The comment ending a line, with one space before it; or nothing.
fn same_line(text: &str) -> String {
    match text.trim() {
        "" => String::new(),
        comment => format!(" {comment}"),
    }
}

/// `s` as a TOML basic string with the fewest escapes, except for characters that are
/// invisible or reorder text, which are escaped so that a reader sees them.
pub fn basic_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\u{c}' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            c if escaped(c) => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Control characters, and the format characters that hide or reorder text: soft
/// hyphen, zero-width spaces and joiners, bidirectional marks, embeddings and
/// isolates, line and paragraph separators, word joiners, the byte-order mark.
fn escaped(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{AD}'
                | '\u{180E}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{206F}'
                | '\u{FEFF}'
        )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn fmt(text: &str) -> String {
        format_text(Path::new("t.toml"), text).unwrap()
    }

    #[test]
    fn spacing_blank_lines_and_final_newline() {
        let messy = "\n\n# head\n\n\n[instrument]   # the one\n\n\nid='x'\nkind  =  \"y\"\t\n\n\n\n[[app]]\nid=\"a\"\n[[app]]\n\n# about b\nid=\"b\"";
        assert_eq!(
            fmt(messy),
            "# head\n\n[instrument] # the one\nid = \"x\"\nkind = \"y\"\n\n[[app]]\nid = \"a\"\n\n[[app]]\n# about b\nid = \"b\"\n"
        );
    }

    #[test]
    fn arrays_fit_or_break_and_keep_comments() {
        let long = format!("notes = [\"{}\", \"b\"]\n", "a".repeat(95));
        assert_eq!(
            fmt(&long),
            format!("notes = [\n  \"{}\",\n  \"b\",\n]\n", "a".repeat(95))
        );
        assert_eq!(fmt("a = [\n  \"x\",\n  \"y\"\n]\n"), "a = [\"x\", \"y\"]\n");
        assert_eq!(
            fmt(
                "a = [ # open\n \"x\", # after x\n  # before y\n\"y\"  # after y\n  # before close\n]\n"
            ),
            "a = [ # open\n  \"x\", # after x\n  # before y\n  \"y\", # after y\n  # before close\n]\n"
        );
    }

    #[test]
    fn strings_and_datetimes_are_canonical() {
        assert_eq!(
            fmt("a = 'say \"q\"'\nb = 2020-09-21 03:59:00.500z\nc = \"\\u00e9\\u200b\"\n"),
            "a = \"say \\\"q\\\"\"\nb = 2020-09-21T03:59:00.5Z\nc = \"é\\u200B\"\n"
        );
        // Multi-line strings stay as written.
        assert_eq!(fmt("a = '''\nx  \n'''\n"), "a = '''\nx  \n'''\n");
    }

    #[test]
    fn invalid_toml_names_the_place() {
        let e = format_text(Path::new("p.toml"), "a = 1\nb = [1,\nc = 2\n").unwrap_err();
        assert!(
            matches!(
                e,
                Error::Syntax {
                    line: 3,
                    column: 3,
                    ..
                }
            ),
            "{e}"
        );
        assert!(
            e.to_string().starts_with("p.toml:3:3: invalid TOML: "),
            "{e}"
        );
    }

    #[test]
    fn formatting_is_idempotent_on_its_own_tests() {
        for text in [
            "a = [ # open\n \"x\", # after x\n\n\n  # before y\n\"y\"  # after y\n  # before close\n]\n",
            "x.y = 1\n[t]\nz = { a = [1,2], b.c = 'd' }\n",
        ] {
            let once = fmt(text);
            assert_eq!(fmt(&once), once);
        }
    }
}
