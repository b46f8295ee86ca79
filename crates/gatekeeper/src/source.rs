//! Policy files, from a folder on disk or from a bundle: every `*.toml` below each root,
//! plus what their `include` keys name, each file read once however many sets include it.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fs;
use std::path::{Component, Path, PathBuf};

use policy::{Diagnostic, Diagnostics, ParsedFile, Policy, Source, parse_file};

use crate::revision::Revision;

/// Where policy files are read from: the real file system, or the files of a bundle.
pub trait Files {
    /// The `*.toml` files a path stands for (the file itself, or every one below a
    /// folder), sorted; an error message when there are none or the path is missing.
    fn expand(&self, path: &Path) -> Result<Vec<PathBuf>, String>;
    /// The identity of a file, so that one file included twice is read once.
    fn canonical(&self, path: &Path) -> Result<PathBuf, String>;
    /// The file's text.
    fn read(&self, path: &Path) -> Result<String, String>;
    /// The name diagnostics give the file.
    fn display(&self, path: &Path) -> String;
}

/// The real file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct Disk;

impl Files for Disk {
    fn expand(&self, path: &Path) -> Result<Vec<PathBuf>, String> {
        let meta =
            fs::metadata(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
        if meta.is_file() {
            return Ok(vec![path.to_path_buf()]);
        }
        let mut out = Vec::new();
        let mut stack = vec![path.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let entries =
                fs::read_dir(&dir).map_err(|e| format!("cannot list `{}`: {e}", dir.display()))?;
            for entry in entries {
                let p = entry
                    .map_err(|e| format!("cannot list `{}`: {e}", dir.display()))?
                    .path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|e| e == "toml") {
                    out.push(p);
                }
            }
        }
        if out.is_empty() {
            return Err(format!(
                "no `*.toml` policy file under `{}`",
                path.display()
            ));
        }
        out.sort();
        Ok(out)
    }

    fn canonical(&self, path: &Path) -> Result<PathBuf, String> {
        fs::canonicalize(path).map_err(|e| format!("cannot resolve path: {e}"))
    }

    fn read(&self, path: &Path) -> Result<String, String> {
        fs::read_to_string(path).map_err(|e| format!("cannot read file: {e}"))
    }

    /// A path relative to the working directory when it lies below it.
    fn display(&self, path: &Path) -> String {
        let relative = std::env::current_dir()
            .ok()
            .and_then(|cwd| fs::canonicalize(cwd).ok())
            .and_then(|cwd| path.strip_prefix(cwd).ok().map(Path::to_path_buf));
        relative
            .unwrap_or_else(|| path.to_path_buf())
            .display()
            .to_string()
    }
}

/// Files held in memory, by relative path (a bundle's contents).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryFiles {
    /// Relative path (with `/`) to text.
    pub files: BTreeMap<String, String>,
    /// Prefix for the names diagnostics give, e.g. `bundle.json:`.
    pub label: String,
}

/// Resolves `.` and `..` without touching a file system.
fn normalize(path: &Path) -> Result<String, String> {
    let mut parts: Vec<String> = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
            Component::CurDir => {}
            Component::ParentDir => {
                if parts.pop().is_none() {
                    return Err(format!("`{}` leaves the bundle", path.display()));
                }
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!(
                    "`{}` is absolute; bundle paths are relative",
                    path.display()
                ));
            }
        }
    }
    Ok(parts.join("/"))
}

impl Files for MemoryFiles {
    fn expand(&self, path: &Path) -> Result<Vec<PathBuf>, String> {
        let key = normalize(path)?;
        if self.files.contains_key(&key) {
            return Ok(vec![PathBuf::from(key)]);
        }
        let prefix = if key.is_empty() {
            String::new()
        } else {
            format!("{key}/")
        };
        let found: Vec<PathBuf> = self
            .files
            .keys()
            .filter(|k| k.starts_with(&prefix) && k.ends_with(".toml"))
            .map(PathBuf::from)
            .collect();
        if found.is_empty() {
            return Err(format!(
                "no `*.toml` policy file under `{key}` in the bundle"
            ));
        }
        Ok(found)
    }

    fn canonical(&self, path: &Path) -> Result<PathBuf, String> {
        normalize(path).map(PathBuf::from)
    }

    fn read(&self, path: &Path) -> Result<String, String> {
        let key = normalize(path)?;
        self.files
            .get(&key)
            .cloned()
            .ok_or_else(|| format!("`{key}` is not in the bundle"))
    }

    fn display(&self, path: &Path) -> String {
        format!("{}{}", self.label, path.display())
    }
}

/// A policy set loaded from files.
#[derive(Debug)]
pub struct LoadedPolicy {
    /// The compiled policy.
    pub policy: Policy,
    /// The files it was loaded from (canonical paths), in load order.
    pub files: Vec<PathBuf>,
    /// Each file's text, by canonical path: what a bundle packs.
    pub texts: Vec<String>,
    /// The SHA-256 of the loaded content.
    pub revision: Revision,
}

/// A path to load, and the `include` entry that asked for it, if any.
struct Wanted {
    path: PathBuf,
    from: Option<(usize, std::ops::Range<usize>)>,
}

/// Loads every `*.toml` below each folder on disk (or the file itself when a path is a
/// file), following `include` keys. A set with any problem loads nothing; the error
/// lists every problem.
pub fn load_dirs<P: AsRef<Path>>(dirs: &[P]) -> Result<LoadedPolicy, Diagnostics> {
    let roots: Vec<PathBuf> = dirs.iter().map(|d| d.as_ref().to_path_buf()).collect();
    load_from(&Disk, &roots)
}

/// Loads the policy files below `roots` from `files`, following `include` keys, which
/// name files or folders relative to the including file.
pub fn load_from(files: &dyn Files, roots: &[PathBuf]) -> Result<LoadedPolicy, Diagnostics> {
    let mut diagnostics = Vec::new();
    let mut parsed: Vec<ParsedFile> = Vec::new();
    let mut paths: Vec<PathBuf> = Vec::new();
    let mut seen: HashSet<PathBuf> = HashSet::new();
    let mut queue: VecDeque<Wanted> = roots
        .iter()
        .map(|d| Wanted {
            path: d.clone(),
            from: None,
        })
        .collect();
    if queue.is_empty() {
        diagnostics.push(
            Diagnostic::file("(none)", "no policy folder given")
                .with_hint("pass `--policies DIR` at least once"),
        );
    }
    while let Some(wanted) = queue.pop_front() {
        let found = match files.expand(&wanted.path) {
            Ok(found) => found,
            Err(message) => {
                let d = match &wanted.from {
                    Some((fi, span)) => Diagnostic::at(&parsed[*fi].source, span.clone(), message)
                        .with_hint("`include` paths are relative to the file that includes them"),
                    None => Diagnostic::file(files.display(&wanted.path), message)
                        .with_hint("give a folder of `*.toml` policy files or one such file"),
                };
                diagnostics.push(d);
                continue;
            }
        };
        for path in found {
            let canonical = match files.canonical(&path) {
                Ok(c) => c,
                Err(message) => {
                    diagnostics.push(Diagnostic::file(files.display(&path), message));
                    continue;
                }
            };
            if !seen.insert(canonical.clone()) {
                continue;
            }
            let name = files.display(&canonical);
            let text = match files.read(&canonical) {
                Ok(t) => t,
                Err(message) => {
                    diagnostics.push(Diagnostic::file(name, message));
                    continue;
                }
            };
            let file = parse_file(Source::new(name, text));
            let base = canonical
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default();
            let index = parsed.len();
            for include in &file.includes {
                queue.push_back(Wanted {
                    path: base.join(include.get_ref()),
                    from: Some((index, include.span())),
                });
            }
            parsed.push(file);
            paths.push(canonical);
        }
    }
    let texts: Vec<String> = parsed.iter().map(|f| f.source.text.clone()).collect();
    let revision = Revision::of_texts(texts.iter().map(String::as_str));
    match Policy::from_parsed(parsed) {
        Ok(policy) if diagnostics.is_empty() => Ok(LoadedPolicy {
            policy,
            files: paths,
            texts,
            revision,
        }),
        Ok(_) => Err(Diagnostics(diagnostics)),
        Err(Diagnostics(more)) => {
            diagnostics.extend(more);
            Err(Diagnostics(diagnostics))
        }
    }
}
