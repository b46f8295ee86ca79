//! The policy maintainers' commands as a maintainer uses them, in-process on temporary
//! copies of `policies/`: `gatekeeper test`, `diff` and `timeline`, and their errors.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use crate::support::root;

struct Run {
    code: u8,
    stdout: String,
    stderr: String,
}

fn gatekeeper(args: &[&str]) -> Run {
    let mut input = Cursor::new(Vec::new());
    let mut out = Vec::new();
    let mut err = Vec::new();
    let argv = std::iter::once("gatekeeper").chain(args.iter().copied());
    let code = cli::run(argv, &mut input, &mut out, &mut err);
    Run {
        code,
        stdout: String::from_utf8(out).unwrap(),
        stderr: String::from_utf8(err).unwrap(),
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A temporary copy of the shipped policies.
fn shipped_copy(dir: &Path, name: &str) -> PathBuf {
    let to = dir.join(name);
    copy_dir(&root().join("policies"), &to);
    to
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

const COPYCAT: &str = r#"# A copycat of a covered app, identified by Commerce (an exercise, not the record).

[instrument]
id = "commerce-copycat-identification"
kind = "identification"
title = "Identification of a copycat application"
authority = "Secretary of Commerce"
pursuant_to = ["eo-13942"]
citation = "85 FR 99999"
source = "https://example.org/copycat"
issued = 2020-10-01T12:00:00Z

[[app]]
id = "copycat"
name = "Copycat"
owner = "bytedance"
android = ["com.example.copycat"]

[[prohibition]]
id = "copycat-app-store"
item = "1"
apps = ["copycat"]
actions = ["download", "update"]
region = "US"
effective = "2020-10-15T00:00:00 America/New_York"
text = "Any provision of services to distribute or maintain the Copycat app."
"#;

const COPYCAT_CASES: &str = r#"{"case": "copycat: before the identification takes effect", "request": {"app": {"platform": "android", "id": "com.example.copycat"}, "action": "download", "at": "2020-10-15T03:59:59Z", "storefront": "US"}, "expect": {"decision": "allow", "because": "not-yet-in-force", "valid_until": "2020-10-15T04:00:00Z"}}
{"case": "copycat: denied from midnight Eastern", "request": {"app": {"platform": "android", "id": "com.example.copycat"}, "action": "update", "at": "2020-10-15T04:00:00Z", "storefront": "US"}, "expect": {"decision": "deny", "reasons": ["copycat-app-store"], "authority": ["commerce-copycat-identification", "eo-13942"]}}
{"case": "copycat: hosting is not prohibited", "request": {"app": {"platform": "android", "id": "com.example.copycat"}, "action": "host", "at": "2020-10-16T00:00:00Z", "server_country": "US"}, "expect": {"decision": "allow", "because": "action-not-prohibited"}}
"#;

/// A maintainer adds an app and its prohibition, writes cases beside the policy, runs
/// them, sees the difference from the previous version and the new timeline: no Rust.
#[test]
fn a_maintainer_adds_an_app_tests_it_diffs_it_and_draws_it() {
    let tmp = tempfile::tempdir().unwrap();
    let old = shipped_copy(tmp.path(), "old");
    let new = shipped_copy(tmp.path(), "new");
    std::fs::write(
        new.join("us-2020/commerce-copycat-identification.toml"),
        COPYCAT,
    )
    .unwrap();
    std::fs::write(new.join("us-2020/tests/copycat.jsonl"), COPYCAT_CASES).unwrap();

    let test = gatekeeper(&["test", s(&new)]);
    assert_eq!(test.code, 0, "{}{}", test.stdout, test.stderr);
    assert!(test.stdout.contains("ok: "), "{}", test.stdout);
    // The copycat's prohibition is exercised; nothing of the set is left untested.
    assert!(
        !test.stdout.contains("copycat-app-store` ("),
        "{}",
        test.stdout
    );

    let diff = gatekeeper(&["diff", s(&old.join("us-2020")), s(&new.join("us-2020"))]);
    assert_eq!(diff.code, 1, "{}{}", diff.stdout, diff.stderr);
    assert!(
        diff.stdout.contains(
            "copycat · download, update · US (AS, GU, MP, PR, UM, US, VI) · every posture"
        ),
        "{}",
        diff.stdout
    );
    assert!(
        diff.stdout
            .contains("from 2020-10-15T04:00:00Z until for ever"),
        "{}",
        diff.stdout
    );
    assert!(
        diff.stdout.contains("old: allow: not-covered"),
        "{}",
        diff.stdout
    );
    assert!(
        diff.stdout.contains("new: deny (copycat-app-store)"),
        "{}",
        diff.stdout
    );
    // Only the new app changes: the copycat's app-store actions are one entry.
    assert!(diff.stdout.starts_with("1 change from"), "{}", diff.stdout);

    let markdown = gatekeeper(&[
        "diff",
        "--format",
        "markdown",
        s(&old.join("us-2020")),
        s(&new.join("us-2020")),
    ]);
    assert_eq!(markdown.code, 1);
    assert!(
        markdown.stdout.contains("| copycat | download, update |"),
        "{}",
        markdown.stdout
    );

    let json = gatekeeper(&[
        "diff",
        "--format",
        "json",
        s(&old.join("us-2020")),
        s(&new.join("us-2020")),
    ]);
    let report: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(report["changed"], true);
    let change = &report["changes"][0];
    assert_eq!(change["apps"], serde_json::json!(["copycat"]));
    assert_eq!(
        change["intervals"][1]["new"]["reasons"],
        serde_json::json!(["copycat-app-store"])
    );
    let instruments = change["intervals"][0]["instruments"].as_array().unwrap();
    assert!(
        instruments.contains(&serde_json::json!("commerce-copycat-identification")),
        "{instruments:?}"
    );

    let svg = tmp.path().join("timeline.svg");
    let timeline = gatekeeper(&[
        "timeline",
        "--policies",
        s(&new.join("us-2020")),
        "-o",
        s(&svg),
    ]);
    assert_eq!(timeline.code, 0, "{}", timeline.stderr);
    let picture = std::fs::read_to_string(&svg).unwrap();
    assert!(picture.starts_with("<svg"), "{picture}");
    assert!(picture.contains("copycat · download, update"), "{picture}");
    assert!(picture.contains("85 FR 99999"), "the mark's citation");
}

/// A case that fails names its file and line and what differs; `--update` rewrites just
/// that case with the current answer, and the run passes.
#[test]
fn failing_cases_name_their_line_and_update_rewrites_only_them() {
    let tmp = tempfile::tempdir().unwrap();
    let new = shipped_copy(tmp.path(), "p");
    std::fs::write(
        new.join("us-2020/commerce-copycat-identification.toml"),
        COPYCAT,
    )
    .unwrap();
    let wrong = COPYCAT_CASES.replace(
        r#""expect": {"decision": "deny", "reasons": ["copycat-app-store"]"#,
        r#""expect": {"decision": "allow", "reasons": ["copycat-app-store"]"#,
    );
    let fresh = r#"{"case": "copycat: no expectation yet", "request": {"app": {"platform": "android", "id": "com.example.copycat"}, "action": "download", "at": "2021-01-01T00:00:00Z", "storefront": "PR"}}"#;
    let cases = new.join("us-2020/tests/copycat.jsonl");
    std::fs::write(&cases, format!("{wrong}{fresh}\n")).unwrap();

    let run = gatekeeper(&["test", s(&new.join("us-2020"))]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    let place = format!(
        "{}:2: copycat: denied from midnight Eastern",
        cases.display()
    );
    assert!(run.stdout.contains(&place), "{}", run.stdout);
    assert!(
        run.stdout
            .contains(r#"`decision`: expected "allow", got "deny""#),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains(":4: copycat: no expectation yet"),
        "{}",
        run.stdout
    );

    let junit = gatekeeper(&["test", "--format", "junit", s(&new.join("us-2020"))]);
    assert_eq!(junit.code, 1);
    let failure = junit.stdout.split("<failure").nth(1).unwrap();
    let body = failure.split('>').nth(1).unwrap();
    assert!(body.contains(&place), "{}", junit.stdout);

    let before = std::fs::read_to_string(&cases).unwrap();
    let update = gatekeeper(&["test", "--update", s(&new.join("us-2020"))]);
    assert_eq!(update.code, 0, "{}", update.stdout);
    assert!(
        update.stdout.contains("2 case(s) updated"),
        "{}",
        update.stdout
    );
    let after = std::fs::read_to_string(&cases).unwrap();
    let (b, a): (Vec<&str>, Vec<&str>) = (before.lines().collect(), after.lines().collect());
    assert_eq!(a.len(), b.len());
    assert_eq!(
        (a[0], a[2]),
        (b[0], b[2]),
        "passing cases are left byte for byte"
    );
    assert!(a[1].contains(r#""decision":"deny""#), "{}", a[1]);
    assert!(
        a[1].contains(r#""reasons":["copycat-app-store"]"#),
        "{}",
        a[1]
    );
    assert!(a[3].contains(r#""decision":"deny""#), "{}", a[3]);
    assert!(
        a[3].contains(r#""reasons":["copycat-app-store"]"#),
        "{}",
        a[3]
    );
    let again = gatekeeper(&["test", s(&new.join("us-2020"))]);
    assert_eq!(again.code, 0, "{}", again.stdout);
}

/// Malformed case files and unreadable folders are errors with their place, and the
/// other cases still run.
#[test]
fn bad_case_files_and_folders_are_errors_with_their_place() {
    let tmp = tempfile::tempdir().unwrap();
    let set = tmp.path().join("set");
    copy_dir(&root().join("tests/fixtures/good"), &set);
    let bad = set.join("tests/bad.jsonl");
    std::fs::write(
        &bad,
        concat!(
            "{\"case\": \"fine\", \"request\": {\"app\": {\"platform\": \"android\", \"id\": \"com.other\"}, \"action\": \"download\", \"at\": \"2021-01-01T00:00:00Z\", \"storefront\": \"US\"}, \"expect\": {\"decision\": \"allow\"}}\n",
            "{\"case\": \"truncated\", \"request\": {\n",
            "{\"case\": \"typo\", \"request\": {\"action\": \"download\", \"at\": \"2021-01-01T00:00:00Z\", \"storefront\": \"US\", \"app\": {\"platform\": \"android\", \"id\": \"a.b\"}}, \"expect\": {\"desicion\": \"allow\"}}\n",
            "{\"case\": \"bad posture\", \"request\": {}, \"posture\": {\"boundaries\": \"lenient\"}, \"expect\": {\"decision\": \"allow\"}}\n",
            "{\"case\": \"refused\", \"request\": {\"action\": \"download\", \"at\": \"2021-01-01T00:00:00Z\", \"app\": {\"platform\": \"android\", \"id\": \"a.b\"}}, \"expect\": {\"error\": \"no jurisdiction signal\"}}\n",
            "{\"case\": \"refused for another reason\", \"request\": {\"action\": \"download\", \"at\": \"2021-01-01T00:00:00Z\", \"app\": {\"platform\": \"android\", \"id\": \"a.b\"}}, \"expect\": {\"error\": \"unknown action\"}}\n",
        ),
    )
    .unwrap();
    let missing = tmp.path().join("no-such-folder");
    let run = gatekeeper(&["test", s(&set), s(&missing)]);
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    let out = &run.stdout;
    assert!(
        out.contains(&format!("error: {}:2:", bad.display())),
        "{out}"
    );
    assert!(out.contains("invalid case: EOF while parsing"), "{out}");
    assert!(
        out.contains(&format!("error: {}:3: case \"typo\" expects unknown field(s) `desicion` (did you mean `decision`?)", bad.display())),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "error: {}:4: invalid `posture.boundaries` `lenient`",
            bad.display()
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("error: {}: cannot read", missing.display())),
        "{out}"
    );
    // The fixtures' own cases and the good lines of the bad file still ran and passed, but
    // for the refusal whose message is not the one expected.
    assert!(out.contains("FAILED: "), "{out}");
    assert!(out.contains("1 failed, 4 problems"), "{out}");
    assert!(
        out.contains("`error`: expected a refusal containing \"unknown action\""),
        "{out}"
    );

    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(empty.join("tests")).unwrap();
    let run = gatekeeper(&["test", s(&empty)]);
    assert_eq!(run.code, 2);
    assert!(
        run.stdout.contains("holds no `*.jsonl` case file"),
        "{}",
        run.stdout
    );
}

/// Two identical sets: the diff says so and exits 0; a bundle of a set and the set's
/// folder are the same version.
#[test]
fn diff_of_identical_sets_says_so() {
    let set = root().join("policies/us-2024-pafaca");
    let run = gatekeeper(&["diff", s(&set), s(&set)]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.starts_with("no change: "), "{}", run.stdout);

    let tmp = tempfile::tempdir().unwrap();
    let bundle = tmp.path().join("bundle.json");
    let build = gatekeeper(&["bundle", "build", "--policies", s(&set), "-o", s(&bundle)]);
    assert_eq!(build.code, 0, "{}", build.stderr);
    let run = gatekeeper(&["diff", s(&bundle), s(&set)]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);

    let run = gatekeeper(&["diff", s(&set), s(&tmp.path().join("nothing"))]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("nothing"), "{}", run.stderr);
}

/// The courts' set against the rule it amends: the diff finds the delay, the injunctions
/// and the revocation, each with its instrument.
#[test]
fn diff_of_the_rule_and_the_courts_names_the_instruments() {
    let run = gatekeeper(&[
        "diff",
        "--format",
        "json",
        s(&root().join("policies/us-2020")),
        s(&root().join("policies/us-2020-courts")),
    ]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let mut instruments = std::collections::BTreeSet::new();
    for change in report["changes"].as_array().unwrap() {
        for interval in change["intervals"].as_array().unwrap() {
            for i in interval["instruments"].as_array().unwrap() {
                instruments.insert(i.as_str().unwrap().to_owned());
            }
        }
    }
    // Every instrument of the courts' set that changes an answer: the delay, the four
    // injunctions and the 2021 rescission. (Executive Order 14034 changes none: it revokes
    // the executive orders, and the identifications stand until the rescission.)
    for id in [
        "commerce-tiktok-delay",
        "wechat-users-alliance-v-trump",
        "tiktok-v-trump-2020-09-27",
        "marland-v-trump",
        "tiktok-v-trump-2020-12-07",
        "commerce-rescission-2021",
    ] {
        assert!(
            instruments.contains(id),
            "{id} missing from {instruments:?}"
        );
    }
    assert!(
        !instruments.contains("eo-14034"),
        "EO 14034 revokes the orders, not the identifications: {instruments:?}"
    );
}

/// The picture in the README is the shipped policies' own: every instrument is marked with
/// its citation, every covered app has a row; and it is current.
#[test]
fn the_readme_timeline_is_the_shipped_policies_current_picture() {
    let sets = [
        "policies/us-2020",
        "policies/us-2020-courts",
        "policies/us-2024-pafaca",
    ];
    let policy = crate::support::load(&sets);
    let picture = authoring::timeline::build(&policy, &authoring::timeline::Options::default());
    let svg = picture.to_svg();
    for ins in policy.instruments() {
        assert!(
            svg.contains(&format!(">{}</text>", ins.id)),
            "no mark for {}",
            ins.id
        );
        let citation = ins.citation.replace('&', "&amp;").replace('"', "&quot;");
        assert!(svg.contains(&citation), "no citation for {}", ins.id);
    }
    for app in policy.apps() {
        assert!(
            picture
                .rows
                .iter()
                .any(|r| r.apps.iter().any(|a| a == app.id())),
            "no row for {}",
            app.id()
        );
    }
    let html = picture.to_html();
    assert!(html.starts_with("<!doctype html>") && html.contains(&svg));
    assert!(
        !html.contains("<script src") && !html.contains("<link"),
        "self-contained"
    );
    let shipped = std::fs::read_to_string(root().join("docs/timeline.svg")).unwrap();
    assert!(
        shipped == svg,
        "docs/timeline.svg is out of date: run `gatekeeper timeline --policies policies/us-2020 --policies policies/us-2020-courts --policies policies/us-2024-pafaca -o docs/timeline.svg`"
    );
}

/// The diff is exact: at every instant either version fixes (and just before and after
/// it), for every subject group, place, action and posture, two versions' decisions differ
/// exactly where the report says they do.
#[test]
fn diff_is_exact_against_direct_decisions() {
    use authoring::domain::{Answer, Domain};
    use policy::{Action, Instant, Posture};
    let old = crate::support::load(&["policies/us-2020"]);
    let new = crate::support::load(&["policies/us-2020-courts"]);
    let report = authoring::diff::diff(&old, &new, "old", "new");
    assert!(report.changed);
    let mut instants: Vec<Instant> = Vec::new();
    for e in authoring::domain::events(&old)
        .into_iter()
        .chain(authoring::domain::events(&new))
    {
        let n = e.at.as_nanos();
        instants.extend([n - 1, n, n + 1].map(Instant::from_nanos));
    }
    instants.sort();
    instants.dedup();
    let domain = Domain::new(&[&old, &new]);
    let mut checked = 0;
    for group in &domain.groups {
        let labels = group.labels();
        for place in &domain.places {
            for action in Action::ALL {
                let mut request = group
                    .request(action, place.country(), &domain.unlisted)
                    .unwrap();
                for posture in Posture::ALL {
                    let intervals: Vec<_> = report
                        .changes
                        .iter()
                        .filter(|c| {
                            c.apps.contains(&labels[0])
                                && c.actions.contains(&action)
                                && c.place == place.label()
                                && c.postures.contains(&posture)
                        })
                        .flat_map(|c| c.intervals.iter())
                        .collect();
                    for &at in &instants {
                        request.set_at(at);
                        let a = Answer::of(&old, &old.decide(&request, posture));
                        let b = Answer::of(&new, &new.decide(&request, posture));
                        let inside = intervals.iter().any(|d| {
                            d.from.is_none_or(|f| f <= at) && d.until.is_none_or(|u| at < u)
                        });
                        assert_eq!(
                            !a.alike(&b),
                            inside,
                            "{labels:?} {action} {} {posture:?} at {at}: {a:?} vs {b:?}",
                            place.label()
                        );
                        checked += 1;
                    }
                }
            }
        }
    }
    assert!(checked > 10_000, "{checked}");
}

/// `fmt` never changes what a policy means: every shipped file, rewritten in another layout
/// (as the `toml` crate writes it) and then formatted, decides every request of every set
/// exactly as the original does.
#[test]
fn formatting_every_shipped_file_leaves_the_diff_empty() {
    let tmp = tempfile::tempdir().unwrap();
    let copy = shipped_copy(tmp.path(), "policies");
    let mut stack = vec![copy.clone()];
    let mut rewritten = 0;
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "toml") {
                let table: toml::Table =
                    toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
                std::fs::write(&path, toml::to_string(&table).unwrap()).unwrap();
                rewritten += 1;
            }
        }
    }
    assert!(rewritten > 10);
    let fmt = gatekeeper(&["fmt", s(&copy)]);
    assert_eq!(fmt.code, 0, "{}{}", fmt.stdout, fmt.stderr);
    let check = gatekeeper(&["fmt", "--check", s(&copy)]);
    assert_eq!(
        check.code, 0,
        "formatted files are canonical: {}",
        check.stdout
    );
    for set in ["us-2020", "us-2020-courts", "us-2024-pafaca"] {
        let run = gatekeeper(&[
            "diff",
            s(&root().join("policies").join(set)),
            s(&copy.join(set)),
        ]);
        assert_eq!(run.code, 0, "{set}: {}{}", run.stdout, run.stderr);
        assert!(run.stdout.starts_with("no change: "), "{}", run.stdout);
    }
}
