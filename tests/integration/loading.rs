//! Loading from disk never hangs and never accepts damage: symbolic link loops, FIFOs,
//! sockets, oversized, non-UTF-8 and empty files are each a diagnostic naming the path, and
//! a set with any of them loads nothing. Every load runs on a thread with a bound on how long
//! it may take, so a loader that hangs fails the test instead of stalling the run.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use gatekeeper::{Gatekeeper, LoadedPolicy, MAX_POLICY_FILE_BYTES};
use policy::{Diagnostic, Diagnostics};

use crate::support::root;

/// How long a load may take before the test fails: a bound on a hang, not a timing assert.
const BOUND: Duration = Duration::from_secs(10);

/// Runs `work` on a thread and returns its result, failing the test if it does not finish
/// within [`BOUND`]. A hung thread is left behind; it ends with the test process.
#[track_caller]
fn within_bound<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        // The receiver is gone only if the test already failed on the bound.
        let _ = tx.send(work());
    });
    match rx.recv_timeout(BOUND) {
        Ok(result) => result,
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("loading did not finish within {BOUND:?}: it hangs")
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("loading panicked"),
    }
}

/// Loads `dirs` from disk within the bound.
#[track_caller]
fn load(dirs: &[&Path]) -> Result<LoadedPolicy, Diagnostics> {
    let dirs: Vec<PathBuf> = dirs.iter().map(|d| d.to_path_buf()).collect();
    within_bound(move || gatekeeper::load_dirs(&dirs))
}

/// The `good` fixtures' policy files, sorted: a set that loads.
fn good_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(root().join("tests/fixtures/good"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

/// A temporary folder holding `set/`, a copy of the `good` fixtures, to damage.
fn good_set() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let set = dir.path().join("set");
    fs::create_dir(&set).unwrap();
    for path in good_files() {
        fs::copy(&path, set.join(path.file_name().unwrap())).unwrap();
    }
    (dir, set)
}

/// Asserts that loading `dirs` fails with a diagnostic about the path ending in `tail` whose
/// message contains every one of `words`, and returns that diagnostic.
#[track_caller]
fn refused(dirs: &[&Path], tail: &str, words: &[&str]) -> Diagnostic {
    let err = match load(dirs) {
        Ok(loaded) => panic!(
            "loaded {} files, expected a diagnostic about `{tail}`",
            loaded.files.len()
        ),
        Err(err) => err,
    };
    let found = err.0.iter().find(|d| {
        (d.file.ends_with(tail) || d.message.contains(tail))
            && words.iter().all(|w| d.message.contains(w))
    });
    match found {
        Some(d) => d.clone(),
        None => panic!(
            "no diagnostic about `{tail}` saying {words:?}:\n{}",
            err.render()
        ),
    }
}

fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success(), "mkfifo {} failed", path.display());
}

/// The fixture copy loads as it is, so each refusal below is caused by the damage alone.
#[test]
fn the_undamaged_copy_loads() {
    let (_dir, set) = good_set();
    assert_eq!(load(&[&set]).unwrap().files.len(), good_files().len());
}

/// A link to a folder that contains it would be walked forever.
#[test]
fn a_link_to_an_ancestor_folder_is_a_loop() {
    let (_dir, set) = good_set();
    fs::create_dir(set.join("nested")).unwrap();
    symlink("..", set.join("nested/up")).unwrap();
    let d = refused(
        &[&set],
        "set/nested/up",
        &["symbolic link loop", "leads back"],
    );
    assert!(d.location.is_none(), "{d}");
}

/// A link to the folder itself is the shortest loop.
#[test]
fn a_link_to_its_own_folder_is_a_loop() {
    let (_dir, set) = good_set();
    symlink(&set, set.join("self")).unwrap();
    refused(&[&set], "set/self", &["symbolic link loop"]);
}

/// Two links naming each other cannot be followed, whether or not they look like policy files.
#[test]
fn two_links_to_each_other_are_a_loop() {
    let (_dir, set) = good_set();
    symlink("b.toml", set.join("a.toml")).unwrap();
    symlink("a.toml", set.join("b.toml")).unwrap();
    symlink("d", set.join("c")).unwrap();
    symlink("c", set.join("d")).unwrap();
    for name in ["a.toml", "b.toml", "c", "d"] {
        refused(&[&set], &format!("set/{name}"), &["symbolic link loop"]);
    }
}

/// Two folders each holding a link to the other form a loop through both.
#[test]
fn two_folders_linked_to_each_other_are_a_loop() {
    let (_dir, set) = good_set();
    fs::create_dir_all(set.join("x")).unwrap();
    fs::create_dir_all(set.join("y")).unwrap();
    symlink("../y", set.join("x/to-y")).unwrap();
    symlink("../x", set.join("y/to-x")).unwrap();
    // Walked in name order, the loop closes at `y`'s link back to `x`.
    refused(
        &[&set],
        "set/x/to-y/to-x",
        &["symbolic link loop", "leads back"],
    );
}

/// Links that do not loop keep working: to a folder outside the set (twice) and to a file.
#[test]
fn links_that_do_not_loop_still_load() {
    let (dir, set) = good_set();
    let names: Vec<_> = good_files()
        .iter()
        .map(|p| p.file_name().unwrap().to_owned())
        .collect();
    let shared = dir.path().join("shared");
    fs::create_dir(&shared).unwrap();
    fs::rename(set.join(&names[0]), shared.join(&names[0])).unwrap();
    symlink(&shared, set.join("shared")).unwrap();
    symlink("../shared", set.join("shared-again")).unwrap();
    let elsewhere = dir.path().join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    fs::rename(set.join(&names[1]), elsewhere.join(&names[1])).unwrap();
    symlink(elsewhere.join(&names[1]), set.join(&names[1])).unwrap();
    let loaded = load(&[&set]).unwrap();
    assert_eq!(loaded.files.len(), names.len(), "{:?}", loaded.files);
}

/// Opening a FIFO with no writer blocks forever: one in a policy folder is never opened.
#[test]
fn a_fifo_in_a_folder_is_not_opened() {
    let (_dir, set) = good_set();
    mkfifo(&set.join("pipe.toml"));
    refused(&[&set], "set/pipe.toml", &["not a regular file", "FIFO"]);
}

/// A FIFO is refused whatever its name, since it is neither a folder nor a file.
#[test]
fn a_fifo_without_the_toml_extension_is_refused() {
    let (_dir, set) = good_set();
    mkfifo(&set.join("pipe"));
    refused(&[&set], "set/pipe", &["not a regular file", "FIFO"]);
}

/// A FIFO given as the path to load, or named by an `include`, is not opened either.
#[test]
fn a_fifo_named_directly_or_included_is_not_opened() {
    let (dir, set) = good_set();
    let pipe = dir.path().join("pipe.toml");
    mkfifo(&pipe);
    refused(&[&pipe], "pipe.toml", &["not a regular file", "FIFO"]);

    let order = set.join("order-1.toml");
    let text = fs::read_to_string(&order).unwrap();
    fs::write(&order, format!("include = [\"../pipe.toml\"]\n{text}")).unwrap();
    let d = refused(&[&set], "pipe.toml", &["not a regular file", "FIFO"]);
    assert_eq!(d.location.unwrap().snippet, "\"../pipe.toml\"");
}

/// A FIFO behind a link (the link itself being fine) is still not opened.
#[test]
fn a_link_to_a_fifo_is_not_opened() {
    let (dir, set) = good_set();
    let pipe = dir.path().join("pipe");
    mkfifo(&pipe);
    symlink(&pipe, set.join("linked.toml")).unwrap();
    refused(&[&set], "set/linked.toml", &["not a regular file", "FIFO"]);
}

/// A socket is not a policy file.
#[test]
fn a_socket_is_refused() {
    let (_dir, set) = good_set();
    let _listener = std::os::unix::net::UnixListener::bind(set.join("control.sock")).unwrap();
    refused(
        &[&set],
        "set/control.sock",
        &["not a regular file", "socket"],
    );
}

/// A file over the limit is refused from its length, before it is read.
#[test]
fn a_file_over_the_size_limit_is_refused() {
    let (_dir, set) = good_set();
    // Sparse: no disk space is used and nothing is written.
    let big = fs::File::create(set.join("big.toml")).unwrap();
    big.set_len(MAX_POLICY_FILE_BYTES + 1).unwrap();
    let size = (MAX_POLICY_FILE_BYTES + 1).to_string();
    let limit = MAX_POLICY_FILE_BYTES.to_string();
    refused(&[&set], "set/big.toml", &[&size, &limit, "over the limit"]);
}

/// A file exactly at the limit is read (and then judged as TOML like any other).
#[test]
fn a_file_at_the_size_limit_is_read() {
    let (_dir, set) = good_set();
    let mut text = String::from("# padding\n");
    text.push_str(&"#".repeat(MAX_POLICY_FILE_BYTES as usize - text.len() - 1));
    text.push('\n');
    assert_eq!(text.len() as u64, MAX_POLICY_FILE_BYTES);
    fs::write(set.join("padded.toml"), text).unwrap();
    let err = load(&[&set]);
    if let Err(err) = err {
        assert!(!err.render().contains("over the limit"), "{}", err.render());
    }
}

/// A file in another encoding is named, with where its text stops being UTF-8.
#[test]
fn a_file_that_is_not_utf8_is_refused() {
    let (_dir, set) = good_set();
    fs::write(set.join("latin1.toml"), b"# notes\n# caf\xe9\n").unwrap();
    let d = refused(&[&set], "set/latin1.toml", &["not UTF-8"]);
    assert!(d.message.contains("line 2, column 6"), "{d}");
}

/// A save truncated to nothing must not silently drop an instrument.
#[test]
fn an_empty_file_is_refused() {
    let (_dir, set) = good_set();
    fs::write(set.join("x.toml"), "").unwrap();
    refused(&[&set], "x.toml", &[]);
}

/// Whitespace alone is as empty as nothing.
#[test]
fn a_whitespace_only_file_is_refused() {
    let (_dir, set) = good_set();
    fs::write(set.join("x.toml"), " \n\t\n  \r\n").unwrap();
    refused(&[&set], "x.toml", &[]);
}

/// Every kind of damage in one set is reported in one load, each naming its path.
#[test]
fn every_problem_is_reported_at_once() {
    let (_dir, set) = good_set();
    fs::create_dir(set.join("nested")).unwrap();
    symlink("..", set.join("nested/up")).unwrap();
    mkfifo(&set.join("pipe.toml"));
    fs::File::create(set.join("big.toml"))
        .unwrap()
        .set_len(MAX_POLICY_FILE_BYTES + 1)
        .unwrap();
    fs::write(set.join("latin1.toml"), b"# caf\xe9\n").unwrap();
    let err = load(&[&set]).unwrap_err();
    for (tail, words) in [
        ("set/nested/up", "symbolic link loop"),
        ("set/pipe.toml", "not a regular file"),
        ("set/big.toml", "over the limit"),
        ("set/latin1.toml", "not UTF-8"),
    ] {
        assert!(
            err.0
                .iter()
                .any(|d| d.file.ends_with(tail) && d.message.contains(words)),
            "no `{words}` for `{tail}`:\n{}",
            err.render()
        );
    }
}

/// A reload of a damaged folder fails and leaves the last good policy active.
#[test]
fn a_damaged_reload_keeps_the_last_good_policy() {
    let (_dir, set) = good_set();
    let gk = Gatekeeper::builder()
        .policy_dirs([set.clone()])
        .build()
        .unwrap();
    let before = gk.active().unwrap().revision.clone();
    mkfifo(&set.join("pipe.toml"));
    symlink("..", set.join("up")).unwrap();
    let reloading = gk.clone();
    let result = within_bound(move || reloading.reload().map(|_| ()));
    assert!(result.is_err(), "a damaged folder reloaded");
    assert_eq!(gk.active().unwrap().revision, before);
}
