//! `gatekeeper check` and `explain` as co-processes: the real binary answers each request
//! line as soon as it has read it, while its standard input stays open, so that a caller
//! can write one request, read its decision, then write the next.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::Duration;

/// How long one answer may take: generous for a loaded machine, and a bound all the same.
const ANSWER_WITHIN: Duration = Duration::from_secs(60);

const POLICIES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../policies/us-2020");

const DENIED: &str = r#"{"app":{"platform":"android","id":"com.tencent.mm"},"action":"update","at":"2020-09-22T12:00:00Z","storefront":"US"}"#;
const ALLOWED: &str = r#"{"app":{"platform":"android","id":"com.example.notes"},"action":"download","at":"2020-09-22T12:00:00Z","storefront":"US"}"#;

/// The running binary, its standard input, and its standard output's lines as they come.
struct CoProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

impl CoProcess {
    fn start(args: &[&str]) -> CoProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_gatekeeper"))
            .args(args)
            .args(["--policies", POLICIES])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting `gatekeeper`");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = channel();
        // A reader thread, so that each read has a time limit (`recv_timeout`).
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        CoProcess {
            stdin: child.stdin.take(),
            child,
            lines,
        }
    }

    /// Writes one line, keeping standard input open.
    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(line.as_bytes()).unwrap();
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
    }

    /// The next line of output, which must come while standard input is still open.
    fn answer(&self) -> String {
        self.lines
            .recv_timeout(ANSWER_WITHIN)
            .expect("no answer while standard input is open: output is held back")
    }

    /// Closes standard input; the exit code.
    fn finish(mut self) -> i32 {
        drop(self.stdin.take());
        let status = self.child.wait().unwrap();
        status.code().expect("exited normally")
    }
}

#[test]
fn check_answers_each_line_before_the_next_is_written() {
    let mut gk = CoProcess::start(&["check"]);
    gk.send(DENIED);
    let first: serde_json::Value = serde_json::from_str(&gk.answer()).unwrap();
    assert_eq!(first["decision"], "deny", "{first}");
    gk.send(ALLOWED);
    let second: serde_json::Value = serde_json::from_str(&gk.answer()).unwrap();
    assert_eq!(second["decision"], "allow", "{second}");
    gk.send("not json");
    let third: serde_json::Value = serde_json::from_str(&gk.answer()).unwrap();
    assert!(
        third["error"].as_str().unwrap().starts_with("line 3: "),
        "{third}"
    );
    // A bad line makes the exit code 1, once the input ends.
    assert_eq!(gk.finish(), 1);
}

#[test]
fn check_exits_0_when_every_line_was_decided() {
    let mut gk = CoProcess::start(&["check", "-"]);
    gk.send(ALLOWED);
    let answer: serde_json::Value = serde_json::from_str(&gk.answer()).unwrap();
    assert_eq!(answer["decision"], "allow", "{answer}");
    assert_eq!(gk.finish(), 0);
}

#[test]
fn explain_answers_each_line_before_the_next_is_written() {
    let mut gk = CoProcess::start(&["explain"]);
    for (request, verdict) in [(DENIED, "DENY"), (ALLOWED, "ALLOW")] {
        gk.send(request);
        // Explanations are separated by a blank line; each ends with what would change it.
        let mut first = gk.answer();
        if first.is_empty() {
            first = gk.answer();
        }
        assert!(first.starts_with(verdict), "{first}");
        while !gk.answer().starts_with("What would change it:") {}
    }
    assert_eq!(gk.finish(), 0);
}
