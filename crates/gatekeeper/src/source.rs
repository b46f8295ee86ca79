//! Policy files, from a folder on disk or from a bundle: every `*.toml` below each root,
//! plus what their `include` keys name, each file read once however many sets include it.
//!
//! Loading from disk never hangs and never reads damage as policy: folders are walked once
//! each, so a symbolic link loop is reported rather than followed; only regular files are
//! opened, without blocking, so a FIFO or a device is reported rather than waited on; and a
//! file is read only up to [`MAX_POLICY_FILE_BYTES`] and only if it is UTF-8.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fs;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

use policy::{Diagnostic, Diagnostics, ParsedFile, Policy, Source, parse_file};

use crate::revision::Revision;

/// The largest policy file that is read, in bytes (8 MiB). The shipped instruments are a few
/// KiB each; a file this large is a wrong path (a log, an image) or damage, and is refused
/// before it is read into memory. Bundles' files are held to the same limit.
pub const MAX_POLICY_FILE_BYTES: u64 = 8 * 1024 * 1024;

/// What a path stands for: the policy files found, and the problems met finding them. Both
/// are kept so that one load reports a loop in one folder and a bad file in another.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expanded {
    /// The `*.toml` files (the path itself, or every one below a folder), sorted.
    pub files: Vec<PathBuf>,
    /// Each problem with the path it is about: the path itself (missing, or holding no
    /// policy file), or an entry below it that cannot be walked (a symbolic link loop, a
    /// FIFO), sorted.
    pub problems: Vec<(PathBuf, String)>,
}

impl Expanded {
    fn problem(path: &Path, message: String) -> Expanded {
        Expanded {
            files: Vec::new(),
            problems: vec![(path.to_path_buf(), message)],
        }
    }
}

/// Where policy files are read from: the real file system, or the files of a bundle.
pub trait Files {
    /// The `*.toml` files a path stands for, and the problems met finding them.
    fn expand(&self, path: &Path) -> Expanded;
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
    fn expand(&self, path: &Path) -> Expanded {
        let meta = match fs::metadata(path) {
            Ok(meta) => meta,
            Err(e) => {
                return Expanded::problem(path, format!("cannot read `{}`: {e}", path.display()));
            }
        };
        if !meta.is_dir() {
            if let Some(kind) = not_regular(&meta) {
                let message = format!("`{}` is not a regular file: {kind}", path.display());
                return Expanded::problem(path, message);
            }
            return Expanded {
                files: vec![path.to_path_buf()],
                problems: Vec::new(),
            };
        }
        let found = walk(path, &meta);
        if found.files.is_empty() && found.problems.is_empty() {
            let message = format!("no `*.toml` policy file under `{}`", path.display());
            return Expanded::problem(path, message);
        }
        found
    }

    fn canonical(&self, path: &Path) -> Result<PathBuf, String> {
        fs::canonicalize(path).map_err(|e| format!("cannot resolve path: {e}"))
    }

    fn read(&self, path: &Path) -> Result<String, String> {
        let cannot = |e: io::Error| format!("cannot read file: {e}");
        check_file(&fs::metadata(path).map_err(cannot)?)?;
        let file = open_without_blocking(path).map_err(cannot)?;
        // The path may have been replaced since it was checked: what counts is what was opened.
        let meta = file.metadata().map_err(cannot)?;
        check_file(&meta)?;
        let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
        // Bounded too, in case the file grows while it is read.
        file.take(MAX_POLICY_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(cannot)?;
        if bytes.len() as u64 > MAX_POLICY_FILE_BYTES {
            return Err(format!(
                "file grew past the limit of {MAX_POLICY_FILE_BYTES} bytes while it was read"
            ));
        }
        String::from_utf8(bytes).map_err(|e| not_utf8(e.as_bytes(), e.utf8_error()))
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

/// What a folder is, however it is reached: its device and inode on Unix (so that a bind
/// mount of an ancestor is caught as well as a link to it), its canonical path elsewhere.
#[derive(Clone, PartialEq, Eq, Hash)]
struct FolderId(#[cfg(unix)] (u64, u64), #[cfg(not(unix))] PathBuf);

impl FolderId {
    #[cfg(unix)]
    fn of(_path: &Path, meta: &fs::Metadata) -> io::Result<FolderId> {
        use std::os::unix::fs::MetadataExt;
        Ok(FolderId((meta.dev(), meta.ino())))
    }

    #[cfg(not(unix))]
    fn of(path: &Path, _meta: &fs::Metadata) -> io::Result<FolderId> {
        fs::canonicalize(path).map(FolderId)
    }
}

/// A folder being walked: what is left of its entries.
struct Frame {
    id: FolderId,
    path: PathBuf,
    /// Whether the way to the folder passes through a symbolic link.
    via_link: bool,
    entries: std::vec::IntoIter<PathBuf>,
}

/// What an entry of a folder turned out to be.
enum Entry {
    File,
    Folder { id: FolderId, link: bool },
    Problem(String),
}

/// Every `*.toml` regular file below `root`, depth first. Each folder is entered once, so the
/// walk ends however links are arranged; a folder reached again from inside itself is a loop,
/// and a problem. An entry that is neither a folder nor a regular file (a FIFO, a socket, a
/// device, a link that cannot be followed) is a problem whatever its name: it is never opened.
fn walk(root: &Path, meta: &fs::Metadata) -> Expanded {
    let id = match FolderId::of(root, meta) {
        Ok(id) => id,
        Err(e) => return Expanded::problem(root, format!("cannot resolve path: {e}")),
    };
    let entries = match list(root) {
        Ok(entries) => entries,
        Err(message) => return Expanded::problem(root, message),
    };
    let mut problems = Vec::new();
    let mut files = Vec::new();
    let mut entered = HashSet::from([id.clone()]);
    let mut frames = vec![Frame {
        id,
        path: root.to_path_buf(),
        via_link: false,
        entries,
    }];
    while let Some(frame) = frames.last_mut() {
        let via_link = frame.via_link;
        let Some(path) = frame.entries.next() else {
            frames.pop();
            continue;
        };
        match entry(&path) {
            Entry::File => {
                if path.extension().is_some_and(|e| e == "toml") {
                    files.push(path);
                }
            }
            Entry::Folder { id, link } => {
                if let Some(outer) = frames.iter().find(|f| f.id == id) {
                    let what = if link || via_link {
                        "symbolic link loop"
                    } else {
                        "folder loop"
                    };
                    let message = format!(
                        "{what}: leads back to `{}`, a folder that contains it",
                        Disk.display(&outer.path)
                    );
                    problems.push((path, message));
                } else if entered.insert(id.clone()) {
                    // A folder entered before by another way (a link to a sibling) is not a
                    // loop: its files are listed already.
                    match list(&path) {
                        Ok(entries) => frames.push(Frame {
                            id,
                            path,
                            via_link: via_link || link,
                            entries,
                        }),
                        Err(message) => problems.push((path, message)),
                    }
                }
            }
            Entry::Problem(message) => problems.push((path, message)),
        }
    }
    files.sort();
    problems.sort();
    Expanded { files, problems }
}

/// A folder's entries, sorted, read at once so that a deep walk holds no folder open.
fn list(dir: &Path) -> Result<std::vec::IntoIter<PathBuf>, String> {
    let cannot = |e: io::Error| format!("cannot list folder: {e}");
    let mut entries = fs::read_dir(dir)
        .map_err(cannot)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<io::Result<Vec<_>>>()
        .map_err(cannot)?;
    entries.sort();
    Ok(entries.into_iter())
}

/// What a folder's entry is, following a symbolic link once (the link's own type first, so
/// that a link that cannot be followed is told apart from a missing entry).
fn entry(path: &Path) -> Entry {
    let own = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) => return Entry::Problem(format!("cannot read: {e}")),
    };
    let link = own.file_type().is_symlink();
    let meta = if link {
        match fs::metadata(path) {
            Ok(m) => m,
            Err(e) => return Entry::Problem(unfollowable(path, &e)),
        }
    } else {
        own
    };
    if meta.is_dir() {
        match FolderId::of(path, &meta) {
            Ok(id) => Entry::Folder { id, link },
            Err(e) => Entry::Problem(format!("cannot resolve path: {e}")),
        }
    } else {
        match not_regular(&meta) {
            None => Entry::File,
            Some(kind) => Entry::Problem(format!("not a regular file: {kind}")),
        }
    }
}

/// Why a symbolic link cannot be followed, in words.
fn unfollowable(path: &Path, e: &io::Error) -> String {
    if is_loop(e) {
        return "symbolic link loop: following the link never reaches a file or a folder".into();
    }
    match (e.kind(), fs::read_link(path)) {
        (io::ErrorKind::NotFound, Ok(target)) => format!(
            "symbolic link to `{}`, which does not exist",
            target.display()
        ),
        _ => format!("cannot follow symbolic link: {e}"),
    }
}

#[cfg(unix)]
fn is_loop(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ELOOP)
}

#[cfg(not(unix))]
fn is_loop(_: &io::Error) -> bool {
    false
}

/// What kind of thing a path that is not a regular file is, in words; `None` for a regular file.
fn not_regular(meta: &fs::Metadata) -> Option<&'static str> {
    let kind = meta.file_type();
    if kind.is_file() {
        return None;
    }
    if kind.is_dir() {
        return Some("a folder");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if kind.is_fifo() {
            return Some("a FIFO (named pipe)");
        }
        if kind.is_socket() {
            return Some("a socket");
        }
        if kind.is_block_device() {
            return Some("a block device");
        }
        if kind.is_char_device() {
            return Some("a character device");
        }
    }
    Some("neither a file nor a folder")
}

/// A file may be read: it is a regular file within the size limit.
fn check_file(meta: &fs::Metadata) -> Result<(), String> {
    if let Some(kind) = not_regular(meta) {
        return Err(format!("not a regular file: {kind}"));
    }
    within_limit(meta.len())
}

fn within_limit(len: u64) -> Result<(), String> {
    if len > MAX_POLICY_FILE_BYTES {
        let mib = MAX_POLICY_FILE_BYTES / (1024 * 1024);
        return Err(format!(
            "file is {len} bytes, over the limit of {MAX_POLICY_FILE_BYTES} bytes ({mib} MiB)"
        ));
    }
    Ok(())
}

/// Opens a file for reading in a way that returns at once even if the path is a FIFO with no
/// writer (opening one blocks otherwise): a FIFO swapped in after the type check is then caught
/// by the check of the opened file.
fn open_without_blocking(path: &Path) -> io::Result<fs::File> {
    let mut options = fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    options.open(path)
}

/// Why a bundle file (or the cached bundle) could not be read: it is read like a policy
/// file (a regular file only, opened without blocking) and never past the size limit.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read `{path}`")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("`{path}` is not a regular file: {kind}")]
    NotRegular { path: PathBuf, kind: &'static str },
    #[error("`{path}` is over the limit of {limit} bytes")]
    TooLarge { path: PathBuf, limit: u64 },
}

impl ReadError {
    /// Whether the file is simply not there (a bundle cache not written yet).
    #[cfg_attr(not(feature = "http-source"), allow(dead_code))]
    pub(crate) fn is_not_found(&self) -> bool {
        matches!(self, ReadError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

/// Reads a whole regular file of at most `limit` bytes, the way policy files are read: the
/// type is checked before and after opening (a FIFO or a device is refused, never waited on),
/// the length is checked before reading, and the read stops one byte past the limit, so a file
/// that grows while it is read is refused without being held in memory.
pub(crate) fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, ReadError> {
    let io = |source: io::Error| ReadError::Io {
        path: path.to_path_buf(),
        source,
    };
    let check = |meta: &fs::Metadata| match not_regular(meta) {
        Some(kind) => Err(ReadError::NotRegular {
            path: path.to_path_buf(),
            kind,
        }),
        None if meta.len() > limit => Err(ReadError::TooLarge {
            path: path.to_path_buf(),
            limit,
        }),
        None => Ok(meta.len()),
    };
    check(&fs::metadata(path).map_err(io)?)?;
    let file = open_without_blocking(path).map_err(io)?;
    // The path may have been replaced since it was checked: what counts is what was opened.
    let len = check(&file.metadata().map_err(io)?)?;
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > limit {
        return Err(ReadError::TooLarge {
            path: path.to_path_buf(),
            limit,
        });
    }
    Ok(bytes)
}

/// Where a file stops being UTF-8, as a message.
fn not_utf8(bytes: &[u8], error: std::str::Utf8Error) -> String {
    let valid = &bytes[..error.valid_up_to()];
    let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = valid.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    // The prefix is valid UTF-8, so counting its characters gives the column.
    let column = String::from_utf8_lossy(&valid[line_start..])
        .chars()
        .count()
        + 1;
    let byte = bytes.get(error.valid_up_to()).copied().unwrap_or_default();
    format!(
        "file is not UTF-8 text: byte 0x{byte:02x} at line {line}, column {column}; policy files are UTF-8"
    )
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

/// What a path stands for among files held in memory by relative path: the file itself, or
/// every `*.toml` below it.
fn expand_in<'a, V: 'a>(files: &'a BTreeMap<String, V>, path: &Path) -> Expanded {
    let key = match normalize(path) {
        Ok(key) => key,
        Err(message) => return Expanded::problem(path, message),
    };
    if files.contains_key(&key) {
        return Expanded {
            files: vec![PathBuf::from(key)],
            problems: Vec::new(),
        };
    }
    let prefix = if key.is_empty() {
        String::new()
    } else {
        format!("{key}/")
    };
    let found: Vec<PathBuf> = files
        .keys()
        .filter(|k| k.starts_with(&prefix) && k.ends_with(".toml"))
        .map(PathBuf::from)
        .collect();
    if found.is_empty() {
        let message = format!("no `*.toml` policy file under `{key}` in the bundle");
        return Expanded::problem(path, message);
    }
    Expanded {
        files: found,
        problems: Vec::new(),
    }
}

impl Files for MemoryFiles {
    fn expand(&self, path: &Path) -> Expanded {
        expand_in(&self.files, path)
    }

    fn canonical(&self, path: &Path) -> Result<PathBuf, String> {
        normalize(path).map(PathBuf::from)
    }

    fn read(&self, path: &Path) -> Result<String, String> {
        let key = normalize(path)?;
        let text = self
            .files
            .get(&key)
            .ok_or_else(|| format!("`{key}` is not in the bundle"))?;
        within_limit(text.len() as u64)?;
        Ok(text.clone())
    }

    fn display(&self, path: &Path) -> String {
        format!("{}{}", self.label, path.display())
    }
}

/// A bundle's files, each handed over (moved, not copied) the one time the loader reads it,
/// so that loading a bundle holds each text once ([`load_from`] reads each canonical path
/// once). Each is named by its path in the bundle.
#[derive(Debug)]
pub(crate) struct TakenFiles {
    files: RefCell<BTreeMap<String, Option<String>>>,
}

impl TakenFiles {
    /// The files: relative path to text.
    pub(crate) fn new(files: BTreeMap<String, String>) -> TakenFiles {
        TakenFiles {
            files: RefCell::new(files.into_iter().map(|(k, v)| (k, Some(v))).collect()),
        }
    }

    /// The files never read, sorted: those the policy does not load.
    pub(crate) fn unread(self) -> Vec<String> {
        self.files
            .into_inner()
            .into_iter()
            .filter_map(|(k, v)| v.map(|_| k))
            .collect()
    }
}

impl Files for TakenFiles {
    fn expand(&self, path: &Path) -> Expanded {
        expand_in(&self.files.borrow(), path)
    }

    fn canonical(&self, path: &Path) -> Result<PathBuf, String> {
        normalize(path).map(PathBuf::from)
    }

    fn read(&self, path: &Path) -> Result<String, String> {
        let key = normalize(path)?;
        let mut files = self.files.borrow_mut();
        let slot = files
            .get_mut(&key)
            .ok_or_else(|| format!("`{key}` is not in the bundle"))?;
        let len = slot.as_ref().map_or(0, String::len);
        within_limit(len as u64)?;
        slot.take()
            .ok_or_else(|| format!("`{key}` was read already"))
    }

    fn display(&self, path: &Path) -> String {
        path.display().to_string()
    }
}

/// How a loaded policy was compiled: from its files, or from a bundle's compiled image.
#[derive(Debug, Clone, PartialEq)]
pub enum ImageUse {
    /// No compiled image was offered (policy folders, or a bundle without one): the policy
    /// was compiled from its files.
    NotOffered,
    /// The policy was loaded from the bundle's compiled image, made by this engine build
    /// (`policy::image_build()`); its files were not parsed.
    Loaded,
    /// The bundle's compiled image was not used, for this reason: the policy was compiled
    /// from the bundle's files instead.
    Skipped(ImageSkipped),
}

impl ImageUse {
    /// What the loader should log or print: why an image offered was not used. `None` when
    /// the image was used or none was offered.
    pub fn warning(&self) -> Option<String> {
        match self {
            ImageUse::Skipped(why) => Some(format!(
                "{why}; the policy was compiled from the bundle's policy files instead"
            )),
            ImageUse::NotOffered | ImageUse::Loaded => None,
        }
    }
}

/// Why a bundle's compiled image was not used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ImageSkipped {
    /// The image was compiled by another engine build (another version, or changed code).
    #[error(
        "the bundle's compiled image is of engine build `{found}`, and this is build `{expected}`"
    )]
    OtherBuild { found: String, expected: String },
    /// The image names this build but does not load (damaged, or inconsistent).
    #[error("the bundle's compiled image does not load: {0}")]
    Refused(policy::ImageError),
}

/// A policy set loaded from files.
#[derive(Debug)]
pub struct LoadedPolicy {
    /// The compiled policy.
    pub policy: Policy,
    /// The files it was loaded from (canonical paths), in load order (from a bundle's
    /// compiled image: the manifest's order).
    pub files: Vec<PathBuf>,
    /// Each file's text, by canonical path: what a bundle packs.
    pub texts: Vec<String>,
    /// The SHA-256 of the loaded content: the same however the policy was compiled.
    pub revision: Revision,
    /// Whether the policy came from a bundle's compiled image, and if one was offered and
    /// not used, why ([`ImageUse::warning`]).
    pub image: ImageUse,
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
    // Entries below a folder that cannot be walked, each reported once however many sets
    // include the folder.
    let mut reported: HashSet<PathBuf> = HashSet::new();
    while let Some(wanted) = queue.pop_front() {
        let found = files.expand(&wanted.path);
        for (path, message) in found.problems {
            if path == wanted.path {
                diagnostics.push(match &wanted.from {
                    Some((fi, span)) => Diagnostic::at(&parsed[*fi].source, span.clone(), message)
                        .with_hint("`include` paths are relative to the file that includes them"),
                    None => Diagnostic::file(files.display(&wanted.path), message)
                        .with_hint("give a folder of `*.toml` policy files or one such file"),
                });
            } else if reported.insert(path.clone()) {
                diagnostics.push(Diagnostic::file(files.display(&path), message).with_hint(
                    "a policy folder may hold only folders, regular files and symbolic links to them that do not loop",
                ));
            }
        }
        for path in found.files {
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
            image: ImageUse::NotOffered,
        }),
        Ok(_) => Err(Diagnostics(diagnostics)),
        Err(Diagnostics(more)) => {
            diagnostics.extend(more);
            Err(Diagnostics(diagnostics))
        }
    }
}
