//! What the command line writes for people and for programs: help, colour, JSON
//! diagnostics, and request lines that are not UTF-8.

use std::io::Cursor;

use cli::Terminal;

use crate::support::root;

struct Run {
    code: u8,
    stdout: String,
    stderr: String,
}

/// Runs `gatekeeper` in-process on `terminal`, with `--policies` folders relative to the
/// repository root.
fn gatekeeper_on(terminal: Terminal, args: &[&str], stdin: &[u8]) -> Run {
    let mut input = Cursor::new(stdin.to_vec());
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let mut argv = vec!["gatekeeper".to_owned()];
    let mut policies_next = false;
    for a in args {
        argv.push(if policies_next {
            root().join(a).display().to_string()
        } else {
            (*a).to_owned()
        });
        policies_next = *a == "--policies";
    }
    let code = cli::run_with(argv, &mut input, &mut out, &mut err, terminal);
    Run {
        code,
        stdout: String::from_utf8(out).unwrap(),
        stderr: String::from_utf8(err).unwrap(),
    }
}

fn gatekeeper(args: &[&str], stdin: &[u8]) -> Run {
    gatekeeper_on(Terminal::default(), args, stdin)
}

const ESC: char = '\u{1b}';

#[test]
fn top_level_help() {
    let run = gatekeeper(&["--help"], b"");
    assert_eq!(run.code, 0, "{}", run.stderr);
    insta::assert_snapshot!(run.stdout);
}

/// Help is for a terminal: no Markdown backticks, and every command names its exit codes.
#[test]
fn every_command_documents_its_exit_codes_in_plain_text() {
    let commands: &[&[&str]] = &[
        &[],
        &["validate"],
        &["check"],
        &["explain"],
        &["bundle"],
        &["bundle", "build"],
        &["bundle", "keygen"],
        &["bundle", "sign"],
        &["bundle", "verify"],
        &["audit"],
        &["audit", "verify"],
        &["audit", "prove"],
        &["audit", "check-proof"],
        &["serve"],
    ];
    for command in commands {
        let args: Vec<&str> = command.iter().copied().chain(["--help"]).collect();
        let run = gatekeeper(&args, b"");
        assert_eq!(run.code, 0, "{command:?}: {}", run.stderr);
        assert!(
            run.stdout.contains("Exit status:"),
            "{command:?}: {}",
            run.stdout
        );
        assert!(
            run.stdout.contains("\n  0  "),
            "{command:?}: {}",
            run.stdout
        );
        assert!(!run.stdout.contains('`'), "{command:?}: {}", run.stdout);
    }
}

#[test]
fn diagnostics_are_coloured_with_color_always_only() {
    let bad = ["validate", "--policies", "tests/fixtures/bad"];
    let with = |colour: &str, terminal: Terminal| {
        let mut args = vec!["--color", colour];
        args.extend(bad);
        let run = gatekeeper_on(terminal, &args, b"");
        assert_eq!(run.code, 1, "{}", run.stderr);
        run.stderr
    };
    let tty = Terminal {
        stderr_is_terminal: true,
        stdout_is_terminal: true,
        no_color: false,
    };
    let no_color_tty = Terminal {
        no_color: true,
        ..tty
    };
    let plain = with("never", Terminal::default());
    assert!(plain.contains("unknown region `UZ`"), "{plain}");
    assert!(!plain.contains(ESC), "{plain}");
    assert!(!with("never", tty).contains(ESC));
    // `always` wins over NO_COLOR and over a pipe; the text is the same, with escapes.
    for terminal in [Terminal::default(), no_color_tty] {
        let coloured = with("always", terminal);
        assert!(coloured.contains(ESC), "{coloured}");
        assert!(coloured.contains("unknown region `UZ`"), "{coloured}");
    }
    // `auto` (the default) colours a terminal, unless NO_COLOR is set.
    assert!(with("auto", tty).contains(ESC));
    assert!(!with("auto", no_color_tty).contains(ESC));
    assert!(!with("auto", Terminal::default()).contains(ESC));
    // The flag goes anywhere on the line, and also colours `check`'s load failure.
    let run = gatekeeper(
        &[
            "check",
            "--policies",
            "tests/fixtures/bad",
            "--color=always",
        ],
        b"",
    );
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains(ESC), "{}", run.stderr);
}

/// <https://no-color.org>: any non-empty value turns colour off; an empty one does not.
#[test]
fn no_color_counts_only_when_not_empty() {
    use std::ffi::OsStr;
    assert!(!Terminal::no_color_set(None));
    assert!(!Terminal::no_color_set(Some(OsStr::new(""))));
    assert!(Terminal::no_color_set(Some(OsStr::new("1"))));
    assert!(Terminal::no_color_set(Some(OsStr::new("false"))));
}

#[test]
fn validate_json_lists_every_problem_with_its_place() {
    let run = gatekeeper(
        &[
            "validate",
            "--format",
            "json",
            "--policies",
            "tests/fixtures/bad",
        ],
        b"",
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.is_empty(), "{}", run.stderr);
    let doc: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(doc["ok"], false);
    assert!(doc["summary"].is_null(), "{doc}");
    let problems = doc["problems"].as_array().unwrap();
    assert!(problems.len() >= 6, "{doc}");
    for p in problems {
        for key in ["file", "severity", "message", "hint", "related"] {
            assert!(p.get(key).is_some(), "{key}: {p}");
        }
        assert_eq!(p["severity"], "error");
    }
    let region = problems
        .iter()
        .find(|p| p["message"] == "unknown region `UZ`")
        .unwrap();
    assert!(region["file"].as_str().unwrap().ends_with("order.toml"));
    assert_eq!(region["line"], 14);
    assert_eq!(region["column"], 10);
    assert_eq!(region["end_line"], 14);
    assert_eq!(region["end_column"], 14);
    assert_eq!(region["snippet"], "\"UZ\"");
    let text = std::fs::read_to_string(root().join("tests/fixtures/bad/order.toml")).unwrap();
    let (start, end) = (
        region["span"]["start"].as_u64().unwrap() as usize,
        region["span"]["end"].as_u64().unwrap() as usize,
    );
    assert_eq!(&text[start..end], "\"UZ\"");
    // Two apps claim one package: the second names where the first did.
    let claimed = problems
        .iter()
        .find(|p| p["message"].as_str().unwrap().contains("is claimed by"))
        .unwrap();
    assert_eq!(claimed["related"][0]["message"], "first claimed here");
    assert!(claimed["related"][0]["line"].as_u64().unwrap() > 0);
}

#[test]
fn validate_json_summarises_a_valid_set() {
    let run = gatekeeper(
        &[
            "validate",
            "--format",
            "json",
            "--policies",
            "policies/us-2020",
        ],
        b"",
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let doc: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(doc["ok"], true);
    assert_eq!(doc["problems"], serde_json::json!([]));
    let policy = crate::support::load(&["policies/us-2020"]);
    assert_eq!(doc["summary"]["instruments"], policy.instruments().len());
    assert_eq!(doc["summary"]["prohibitions"], policy.prohibitions().len());
    assert!(doc["summary"]["files"].as_u64().unwrap() > 0);
}

/// Guards the README's promise: a line that is not UTF-8 is an error line, and the lines
/// after it are still decided.
#[test]
fn a_line_that_is_not_utf8_is_an_error_line_and_the_rest_are_decided() {
    let good = br#"{"app":{"platform":"android","id":"com.tencent.mm"},"action":"update","at":"2020-09-22T12:00:00Z","storefront":"US"}"#;
    let mut input = Vec::new();
    input.extend_from_slice(good);
    input.extend_from_slice(b"\n{\"app\":\"\xff\"}\n");
    input.extend_from_slice(good);
    input.push(b'\n');
    let path =
        std::env::temp_dir().join(format!("gatekeeper-not-utf8-{}.jsonl", std::process::id()));
    std::fs::write(&path, &input).unwrap();
    let from_file = gatekeeper(
        &[
            "check",
            "--policies",
            "policies/us-2020",
            path.to_str().unwrap(),
        ],
        b"",
    );
    std::fs::remove_file(&path).unwrap();
    let from_stdin = gatekeeper(&["check", "--policies", "policies/us-2020"], &input);
    for run in [from_file, from_stdin] {
        assert_eq!(run.code, 1, "{}", run.stderr);
        let lines: Vec<serde_json::Value> = run
            .stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3, "{}", run.stdout);
        assert_eq!(lines[0]["decision"], "deny");
        assert_eq!(
            lines[1]["error"],
            "line 2: not UTF-8: byte 9 of the line is not part of a UTF-8 character"
        );
        assert_eq!(lines[2]["decision"], "deny");
    }
}

/// A request's unknown country names the code meant, and stays an error.
#[test]
fn an_unknown_country_in_a_request_suggests_the_code_meant() {
    let request = br#"{"app":{"platform":"android","id":"com.tencent.mm"},"action":"update","at":"2020-09-22T12:00:00Z","storefront":"UK"}"#;
    let run = gatekeeper(&["check", "--policies", "policies/us-2020"], request);
    assert_eq!(run.code, 1);
    let answer: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(
        answer["error"],
        "line 1: `storefront`: unknown country code `UK`; did you mean `GB` (United Kingdom of Great Britain and Northern Ireland)?"
    );
}
