//! `gatekeeper fmt`: the shipped files are in the canonical layout, formatting is
//! idempotent and never changes what a policy means or decides, comments survive, and a
//! broken file or a check never writes.

use std::path::{Path, PathBuf};

use authoring::fmt::{Mode, Status, format_text};

use crate::support::root;

/// The folders whose files CI keeps in the canonical layout.
const FORMATTED: [&str; 3] = [
    "policies",
    "tests/fixtures/good",
    "tests/scenarios/policies",
];

fn shipped_files() -> Vec<PathBuf> {
    let files: Vec<PathBuf> = FORMATTED
        .iter()
        .flat_map(|dir| authoring::fmt::collect(&root().join(dir)).unwrap())
        .collect();
    assert!(files.len() >= 25, "{files:?}");
    files
}

fn gatekeeper(args: &[&str]) -> (u8, String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let argv = std::iter::once("gatekeeper").chain(args.iter().copied());
    let code = cli::run(argv, &mut std::io::empty(), &mut out, &mut err);
    (
        code,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

/// CI's format check: every shipped policy file is in the canonical layout.
#[test]
fn shipped_policy_files_are_in_the_canonical_layout() {
    let paths: Vec<PathBuf> = FORMATTED.iter().map(|d| root().join(d)).collect();
    let report = authoring::fmt::run(&paths, Mode::Check);
    let errors: Vec<String> = report.errors().map(ToString::to_string).collect();
    assert!(errors.is_empty(), "{errors:#?}");
    let changed: Vec<String> = report
        .changed()
        .map(|f| match &f.status {
            Status::WouldChange { diff } => diff.clone(),
            _ => f.path.display().to_string(),
        })
        .collect();
    assert!(
        changed.is_empty(),
        "{} files are not in the canonical layout; run `cargo run --bin gatekeeper -- fmt {}`:\n{}",
        changed.len(),
        FORMATTED.join(" "),
        changed.join("\n")
    );
    assert_eq!(report.exit_code(), 0);
}

#[test]
fn formatting_is_idempotent_on_every_shipped_file() {
    for file in shipped_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        // From the layout a serializer writes (other quoting, sub-tables, no blank lines)
        // as well as from the file as written.
        let table: toml::Table = toml::from_str(&text).unwrap();
        for input in [text.clone(), toml::to_string(&table).unwrap()] {
            let once = format_text(&file, &input).unwrap();
            let twice = format_text(&file, &once).unwrap();
            assert_eq!(once, twice, "{}", file.display());
        }
    }
}

/// Copies `policies/` to `dir`, each file rewritten by `rewrite`.
fn copy_policies(dir: &Path, rewrite: impl Fn(&Path, String) -> String) {
    let from = root().join("policies");
    for file in authoring::fmt::collect(&from).unwrap() {
        let to = dir.join(file.strip_prefix(&from).unwrap());
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        let text = std::fs::read_to_string(&file).unwrap();
        std::fs::write(&to, rewrite(&file, text)).unwrap();
    }
}

/// A file in another layout with the same meaning: as `toml` serializes it (sub-tables
/// for windows, literal strings, no comments), with blank lines and comments added
/// above each header.
fn messy(file: &Path, text: String) -> String {
    let table: toml::Table = toml::from_str(&text).unwrap();
    let serialized = toml::to_string(&table).unwrap();
    let noisy = serialized.replace("\n[", "\n\n\n   # a comment above a header\n[");
    let reparsed: toml::Table = toml::from_str(&noisy).unwrap();
    assert_eq!(reparsed, table, "the messy copy of {}", file.display());
    noisy
}

/// What the engine makes of a set: the validated model, file paths relative to `dir`.
fn model(dir: &Path, set: &str) -> String {
    let loaded = gatekeeper::load_dirs(&[dir.join(set)])
        .unwrap_or_else(|d| panic!("{set} in {}:\n{}", dir.display(), d.render()));
    let p = &loaded.policy;
    let text = format!(
        "{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}",
        p.instruments(),
        p.regions(),
        p.apps(),
        p.prohibitions(),
        p.changes(),
        loaded.files.len()
    );
    text.replace(&dir.display().to_string(), "<policies>")
}

/// Formatting never changes what a policy means: the formatted copy of every file parses
/// to the same TOML, and every shipped set loads to the same model from the original,
/// from a messy copy and from that copy formatted.
#[test]
fn formatting_never_changes_what_a_policy_means() {
    let dir = tempfile::tempdir().unwrap();
    let (original, formatted) = (dir.path().join("original"), dir.path().join("formatted"));
    copy_policies(&original, |_, text| text);
    copy_policies(&formatted, messy);
    let report = authoring::fmt::run(std::slice::from_ref(&formatted), Mode::Write);
    assert_eq!(report.exit_code(), 0);
    let shipped = authoring::fmt::collect(&original).unwrap().len();
    assert!(shipped >= 24, "{shipped} policy files");
    assert_eq!(report.files.len(), shipped, "every shipped policy file");
    assert!(
        report.changed().count() >= 20,
        "the messy copies were rewritten"
    );
    for file in authoring::fmt::collect(&original).unwrap() {
        let relative = file.strip_prefix(&original).unwrap();
        let before: toml::Table = toml::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        let text = std::fs::read_to_string(formatted.join(relative)).unwrap();
        let after: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(before, after, "{}", relative.display());
        assert_eq!(
            format_text(&file, &text).unwrap(),
            text,
            "{}",
            relative.display()
        );
    }
    for set in ["us-2020", "us-2020-courts", "us-2024-pafaca"] {
        assert_eq!(model(&original, set), model(&formatted, set), "{set}");
    }
}

const MESSY: &str = r#"# c1 the file's head comment


include=[ '../common' ]   # c2 at the end of a line
[ instrument ]
    id   =   "order-1"      # c3 on a key
kind='identification'
title = "A \"quoted\" title"
issued = {earliest=2020-09-18 08:30:00-04:00,latest = 2020-09-18T09:00:00-04:00 , note='made public around 08:45'}
notes = [ "short",
   "also short" ]



# c4 before a table, after blank lines
[[prohibition]]   # c5 on a header
id = "p"
apps = [
   # c6 inside an array, above an item
   "a",   # c7 after an item
   "b"
   # c8 before the closing bracket
]
actions = ["download", "update", "host", "cdn", "peering", "payment", "code-use", "download", "update"]
jurisdiction = [ ["server_country"],["storefront","device_country"] ]
effective = 2020-09-21T03:59:00z
text = 'literal \no escape'
# c9 at the end of the file
"#;

/// Messy input comes out in the canonical layout with every comment kept.
#[test]
fn messy_input_comes_out_canonical_with_every_comment() {
    let formatted = format_text(Path::new("messy.toml"), MESSY).unwrap();
    for n in 1..=9 {
        let marker = format!("# c{n} ");
        assert_eq!(
            formatted.matches(&marker).count(),
            1,
            "`{marker}`:\n{formatted}"
        );
    }
    assert!(formatted.lines().all(|l| l == l.trim_end()), "{formatted}");
    assert_eq!(
        format_text(Path::new("messy.toml"), &formatted).unwrap(),
        formatted
    );
    insta::assert_snapshot!(formatted);
}

/// A file that is not valid TOML is an error naming file, line and column, and is left
/// as it was; the other files are still formatted.
#[test]
fn invalid_toml_is_reported_with_its_place_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    let broken = "[instrument]\nid = \"x\"\nkind = [\"a\",\n";
    std::fs::write(&bad, broken).unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "a=1\n").unwrap();
    let (code, stdout, stderr) = gatekeeper(&["fmt", &dir.path().display().to_string()]);
    assert_eq!(code, 2, "{stdout}{stderr}");
    let place = format!("error: {}:3:", bad.display());
    assert!(stderr.contains(&place), "{stderr}");
    assert!(stderr.contains("invalid TOML"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&bad).unwrap(), broken);
    assert_eq!(std::fs::read_to_string(&good).unwrap(), "a = 1\n");
    assert!(stdout.contains("formatted "), "{stdout}");
    // No temporary file is left behind.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

/// `--check` writes nothing, shows what would change and exits 1; formatting then
/// rewrites the file and a second check passes.
#[test]
fn check_exits_1_with_a_diff_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.toml");
    let written = "[instrument]\nid='x'   # the id\n";
    std::fs::write(&file, written).unwrap();
    let path = file.display().to_string();
    let (code, stdout, stderr) = gatekeeper(&["fmt", "--check", &path]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("would reformat {path}")),
        "{stdout}"
    );
    assert!(
        stdout.contains("-id='x'   # the id\n+id = \"x\" # the id\n"),
        "{stdout}"
    );
    assert!(
        stderr.contains("1 of 1 files not in the canonical layout"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), written);

    let (code, stdout, _) = gatekeeper(&["fmt", &path]);
    assert_eq!((code, stdout), (0, format!("formatted {path}\n")));
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "[instrument]\nid = \"x\" # the id\n"
    );
    let (code, stdout, stderr) = gatekeeper(&["fmt", "--check", &path]);
    assert_eq!((code, stdout.as_str(), stderr.as_str()), (0, "", ""));
}
