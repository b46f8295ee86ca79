//! The `gatekeeper` command line, run in-process with in-memory input and output.

use std::io::Cursor;

use crate::support::{load, root};

struct Run {
    code: u8,
    stdout: String,
    stderr: String,
}

fn gatekeeper(args: &[&str], stdin: &str) -> Run {
    let mut input = Cursor::new(stdin.as_bytes().to_vec());
    let mut out = Vec::new();
    let mut err = Vec::new();
    let mut argv = vec!["gatekeeper".to_owned()];
    // Policy folders are given relative to the repository root.
    let mut policies_next = false;
    for a in args {
        argv.push(if policies_next {
            root().join(a).display().to_string()
        } else {
            (*a).to_owned()
        });
        policies_next = *a == "--policies";
    }
    let code = cli::run(argv, &mut input, &mut out, &mut err);
    Run {
        code,
        stdout: String::from_utf8(out).unwrap(),
        stderr: String::from_utf8(err).unwrap(),
    }
}

#[test]
fn validate_accepts_each_shipped_set_and_all_together() {
    for set in [
        "policies/us-2020",
        "policies/us-2020-courts",
        "policies/us-2024-pafaca",
    ] {
        let run = gatekeeper(&["validate", "--policies", set], "");
        assert_eq!(run.code, 0, "{set}: {}", run.stderr);
        assert!(run.stdout.starts_with("ok: "), "{}", run.stdout);
    }
    let all = gatekeeper(
        &[
            "validate",
            "--policies",
            "policies/us-2020",
            "--policies",
            "policies/us-2020-courts",
            "--policies",
            "policies/us-2024-pafaca",
        ],
        "",
    );
    assert_eq!(all.code, 0, "{}", all.stderr);
    // The counts are the library's, whatever the shipped policies hold.
    let policy = crate::support::load(&[
        "policies/us-2020",
        "policies/us-2020-courts",
        "policies/us-2024-pafaca",
    ]);
    for counted in [
        format!("{} instruments", policy.instruments().len()),
        format!("{} prohibitions", policy.prohibitions().len()),
        format!("{} apps", policy.apps().len()),
    ] {
        assert!(all.stdout.contains(&counted), "{counted}: {}", all.stdout);
    }
}

#[test]
fn validate_reports_every_problem_and_exits_1() {
    let run = gatekeeper(&["validate", "--policies", "tests/fixtures/bad"], "");
    assert_eq!(run.code, 1);
    assert!(run.stdout.is_empty());
    let errors = run.stderr.matches("error: ").count();
    // Every diagnostic plus the closing summary line.
    assert!(errors >= 6, "{}", run.stderr);
    assert!(run.stderr.contains("nothing was loaded"), "{}", run.stderr);
    assert!(run.stderr.contains("unknown region `UZ`"), "{}", run.stderr);
    assert!(run.stderr.contains("-->"), "{}", run.stderr);
}

#[test]
fn validate_names_a_missing_folder() {
    let run = gatekeeper(&["validate", "--policies", "policies/no-such-set"], "");
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("no-such-set"), "{}", run.stderr);
}

const MIXED: &str = r#"{"app":{"platform":"android","id":"com.zhiliaoapp.musically"},"action":"update","at":"2020-09-22T12:00:00Z","storefront":"US"}
{"app":{"platform":"android","id":"com.zhiliaoapp.musically"},"action":"updat","at":"2020-09-22T12:00:00Z","storefront":"US"}
not json at all
{"app":{"platform":"ios","id":"com.tencent.xin"},"action":"payment","at":"2020-09-22T12:00:00Z","storefront":"CAN"}

{"app":{"platform":"ios","id":"com.tencent.xin"},"action":"payment","at":"2020-09-22T12:00:00Z"}
{"app":{"platform":"ios","id":"com.tencent.xin"},"action":"payment","at":"2020-09-22T12:00:00","storefront":"US"}
{"app":{"platform":"ios","id":"com.tencent.xin"},"action":"payment","at":"2020-09-22T12:00:00Z","storefront":"ZZ"}
{"app":{"platform":"ios","id":"com.tencent.xin"},"action":"payment","at":"2020-09-22T12:00:00Z","storefront":"US","colour":"red"}
"#;

#[test]
fn check_answers_every_line_in_order_and_exits_1_on_bad_lines() {
    let run = gatekeeper(&["check", "--policies", "policies/us-2020", "-"], MIXED);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let lines: Vec<serde_json::Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 8, "{}", run.stdout);
    assert_eq!(lines[0]["decision"], "deny");
    assert_eq!(lines[0]["reasons"][0]["citation"], "85 FR 60061");
    assert_eq!(lines[0]["jurisdiction"]["signal"], "storefront");
    let error = |i: usize| lines[i]["error"].as_str().unwrap().to_owned();
    assert!(
        error(1).starts_with("line 2: `action`: unknown action `updat`"),
        "{}",
        error(1)
    );
    assert!(
        error(2).starts_with("line 3: invalid request"),
        "{}",
        error(2)
    );
    assert_eq!(lines[3]["because"], "outside-jurisdiction");
    assert!(
        error(4).contains("line 6") && error(4).contains("no jurisdiction signal"),
        "{}",
        error(4)
    );
    assert!(error(5).contains("has no UTC offset"), "{}", error(5));
    assert!(
        error(6).contains("unknown country code `ZZ`"),
        "{}",
        error(6)
    );
    assert!(error(7).contains("unknown field `colour`"), "{}", error(7));
}

#[test]
fn check_output_matches_the_library_and_exits_0_when_all_lines_are_good() {
    let corpus =
        std::fs::read_to_string(root().join("policies/us-2020-courts/tests/cases.jsonl")).unwrap();
    let requests: Vec<String> = corpus
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["request"].to_string())
        .collect();
    let path = std::env::temp_dir().join(format!("gatekeeper-check-{}.jsonl", std::process::id()));
    std::fs::write(&path, requests.join("\n")).unwrap();
    let run = gatekeeper(
        &[
            "check",
            "--policies",
            "policies/us-2020-courts",
            path.to_str().unwrap(),
        ],
        "",
    );
    std::fs::remove_file(&path).unwrap();
    assert_eq!(run.code, 0, "{}", run.stderr);
    let policy = load(&["policies/us-2020-courts"]);
    let got: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(got.len(), requests.len());
    for (line, request) in got.iter().zip(&requests) {
        let record: policy::RequestRecord = serde_json::from_str(request).unwrap();
        let decision = policy.decide(&record.into_request().unwrap(), policy::Posture::default());
        assert_eq!(*line, serde_json::to_string(&decision.to_record()).unwrap());
    }
}

#[test]
fn check_refuses_to_run_on_broken_policies() {
    let run = gatekeeper(&["check", "--policies", "tests/fixtures/bad"], MIXED);
    assert_eq!(run.code, 2);
    assert!(
        run.stdout.is_empty(),
        "no decision may come from a broken set: {}",
        run.stdout
    );
}

#[test]
fn explain_in_plain_english() {
    let requests = r#"{"app":{"platform":"android","id":"com.zhiliaoapp.musically"},"action":"update","at":"2020-09-22T12:00:00Z","storefront":"PRI"}
{"app":{"platform":"ios","id":"com.tencent.xin"},"action":"payment","at":"2020-09-21T12:00:00Z","billing_country":"US"}
{"app":{"platform":"ios","id":"com.tencent.xin"},"action":"payment","at":"2020-09-21T12:00:00Z","known_at":"2020-09-19T06:00:00Z","billing_country":"US"}
{"app":{"platform":"android","id":"com.zhiliaoapp.musically"},"action":"host","at":"2020-11-13T04:58:59Z","server_country":"US"}
{"app":{"platform":"android","id":"com.example.notes"},"action":"download","at":"2020-09-22T12:00:00Z","storefront":"US"}
"#;
    let run = gatekeeper(
        &["explain", "--policies", "policies/us-2020-courts"],
        requests,
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    insta::assert_snapshot!("explain_us_2020_courts", run.stdout);
    let run = gatekeeper(&["explain", "--policies", "policies/us-2020"], requests);
    insta::assert_snapshot!("explain_us_2020", run.stdout);
}

/// Guards issue-9's identifier tricks: an app id a store never issues is an error line,
/// never `allow, not-covered`; one that differs from a covered id only in letter case is
/// matched and says so.
#[test]
fn malformed_app_ids_are_errors_and_letter_case_is_matched() {
    let line = |id: &str| {
        serde_json::json!({
            "app": {"platform": "android", "id": id},
            "action": "download",
            "at": "2025-02-01T12:00:00Z",
            "storefront": "US",
        })
        .to_string()
    };
    let bad = [
        " com.zhiliaoapp.musically",
        "com.zhiliaoapp.musically ",
        "com.zhiliaoapp.musically.",
        ".com.zhiliaoapp.musically",
        "com..zhiliaoapp.musically",
        "com.zhiliaoapp.musically\u{0}",
        "com.zhiliaoapp.\u{200b}musically",
        "com.zhiliaoapp.musicallé",
        "",
    ];
    let mut input: Vec<String> = bad.iter().map(|id| line(id)).collect();
    input.push(line("COM.ZHILIAOAPP.MUSICALLY"));
    let run = gatekeeper(
        &[
            "check",
            "--non-enforcement",
            "ignore",
            "--policies",
            "policies/us-2024-pafaca",
        ],
        &(input.join("\n") + "\n"),
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    let out: Vec<serde_json::Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(out.len(), bad.len() + 1);
    for (answer, id) in out.iter().zip(bad) {
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(error.contains("`app.id`"), "{id:?}: {answer}");
    }
    let cased = &out[bad.len()];
    assert_eq!(cased["decision"], "deny", "{cased}");
    assert_eq!(cased["app"], "tiktok");
    assert_eq!(cased["case_insensitive_match"], true);
    assert_eq!(cased["relief_set_aside"][0]["instrument"], "eo-14166");
}

/// `check` and `explain` take the operator's posture.
#[test]
fn check_takes_the_posture() {
    // Inside the statute's window (2025-01-19 began in Guam, not yet in Hawaii).
    let request = r#"{"app":{"platform":"android","id":"com.lemon.lvoverseas"},"action":"download","at":"2025-01-19T09:00:00Z","storefront":"US"}"#;
    let decide = |posture: &str| {
        let run = gatekeeper(
            &[
                "check",
                "--posture",
                posture,
                "--policies",
                "policies/us-2024-pafaca",
            ],
            &format!("{request}\n"),
        );
        assert_eq!(run.code, 0, "{}", run.stderr);
        serde_json::from_str::<serde_json::Value>(run.stdout.trim()).unwrap()
    };
    let conservative = decide("conservative");
    let permissive = decide("permissive");
    assert_eq!(conservative["decision"], "deny");
    assert_eq!(permissive["decision"], "allow");
    for d in [&conservative, &permissive] {
        assert_eq!(d["uncertain"]["from"], "2025-01-18T14:00:00Z");
        assert_eq!(d["uncertain"]["until"], "2025-01-19T10:00:00Z");
    }
    let explained = gatekeeper(
        &[
            "explain",
            "--posture",
            "permissive",
            "--non-enforcement",
            "ignore",
            "--policies",
            "policies/us-2024-pafaca",
        ],
        &format!("{request}\n"),
    );
    assert!(
        explained.stdout.contains(
            "Posture: permissive reading of open instants; non-enforcement orders set aside."
        ),
        "{}",
        explained.stdout
    );
    assert!(
        explained.stdout.contains("Uncertain: from"),
        "{}",
        explained.stdout
    );
    // Read conservatively it is denied, and denied still once the window closes: the
    // explanation says so, and by which prohibition.
    let explained = gatekeeper(
        &["explain", "--policies", "policies/us-2024-pafaca"],
        &format!("{request}\n"),
    );
    assert!(
        explained
            .stdout
            .contains("; from then the same request is still denied (by `pafaca-marketplace`)."),
        "{}",
        explained.stdout
    );
}
