//! Policy folders on disk: every `*.toml` below each folder, plus what their `include`
//! keys name, each file read once however many sets include it.

use std::collections::{HashSet, VecDeque};
use std::fs;
use std::path::{Path, PathBuf};

use policy::{Diagnostic, Diagnostics, ParsedFile, Policy, Source, parse_file};

/// A policy set loaded from disk.
#[derive(Debug)]
pub struct LoadedPolicy {
    /// The compiled policy.
    pub policy: Policy,
    /// The files it was loaded from, canonical, in load order.
    pub files: Vec<PathBuf>,
}

/// A path to load, and the `include` entry that asked for it, if any.
struct Wanted {
    path: PathBuf,
    from: Option<(usize, std::ops::Range<usize>)>,
}

/// Loads every `*.toml` below each folder (or the file itself when a path is a file),
/// following `include` keys, which name files or folders relative to the including
/// file. A set with any problem loads nothing; the error lists every problem.
pub fn load_dirs<P: AsRef<Path>>(dirs: &[P]) -> Result<LoadedPolicy, Diagnostics> {
    let mut diagnostics = Vec::new();
    let mut parsed: Vec<ParsedFile> = Vec::new();
    let mut files: Vec<PathBuf> = Vec::new();
    let mut seen: HashSet<PathBuf> = HashSet::new();
    let mut queue: VecDeque<Wanted> = dirs
        .iter()
        .map(|d| Wanted {
            path: d.as_ref().to_path_buf(),
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
        let found = match expand(&wanted.path) {
            Ok(found) => found,
            Err(message) => {
                let d = match &wanted.from {
                    Some((fi, span)) => Diagnostic::at(&parsed[*fi].source, span.clone(), message)
                        .with_hint("`include` paths are relative to the file that includes them"),
                    None => Diagnostic::file(display(&wanted.path), message)
                        .with_hint("give a folder of `*.toml` policy files or one such file"),
                };
                diagnostics.push(d);
                continue;
            }
        };
        for path in found {
            let canonical = match fs::canonicalize(&path) {
                Ok(c) => c,
                Err(e) => {
                    diagnostics.push(Diagnostic::file(
                        display(&path),
                        format!("cannot resolve path: {e}"),
                    ));
                    continue;
                }
            };
            if !seen.insert(canonical.clone()) {
                continue;
            }
            let name = display(&canonical);
            let text = match fs::read_to_string(&canonical) {
                Ok(t) => t,
                Err(e) => {
                    diagnostics.push(Diagnostic::file(name, format!("cannot read file: {e}")));
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
            files.push(canonical);
        }
    }
    let compiled = Policy::from_parsed(parsed);
    match compiled {
        Ok(policy) if diagnostics.is_empty() => Ok(LoadedPolicy { policy, files }),
        Ok(_) => Err(Diagnostics(diagnostics)),
        Err(Diagnostics(more)) => {
            diagnostics.extend(more);
            Err(Diagnostics(diagnostics))
        }
    }
}

/// The `*.toml` files a path stands for, sorted.
fn expand(path: &Path) -> Result<Vec<PathBuf>, String> {
    let meta = fs::metadata(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    if meta.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out = Vec::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries =
            fs::read_dir(&dir).map_err(|e| format!("cannot list `{}`: {e}", dir.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("cannot list `{}`: {e}", dir.display()))?;
            let p = entry.path();
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

/// A path relative to the working directory when it lies below it.
fn display(path: &Path) -> String {
    let relative = std::env::current_dir()
        .ok()
        .and_then(|cwd| fs::canonicalize(cwd).ok())
        .and_then(|cwd| path.strip_prefix(cwd).ok().map(Path::to_path_buf));
    relative
        .unwrap_or_else(|| path.to_path_buf())
        .display()
        .to_string()
}
