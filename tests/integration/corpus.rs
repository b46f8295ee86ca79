//! The test cases kept beside the policies (`policies/<set>/tests/*.jsonl`, and the
//! fixtures' in `tests/fixtures/good/tests/`), run by the runner `gatekeeper test` uses.
//! One case a line: a request, the posture if any, and the fields its decision must have.

use std::collections::BTreeSet;

use authoring::cases::{self, Options};
use policy::{Policy, Posture, RequestRecord};
use serde_json::Value;

use crate::support::{load, root};

/// Every folder of sets with cases.
fn case_roots() -> Vec<std::path::PathBuf> {
    vec![root().join("policies"), root().join("tests/fixtures/good")]
}

/// Every case line, as written.
fn all_cases() -> Vec<Value> {
    let (suites, problems) = cases::discover(&case_roots());
    assert!(problems.is_empty(), "{problems:?}");
    let mut out = Vec::new();
    for suite in suites {
        for file in suite.files {
            let text = std::fs::read_to_string(&file).unwrap();
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                out.push(serde_json::from_str(line).unwrap());
            }
        }
    }
    out
}

#[test]
fn every_case_beside_the_policies_passes() {
    let report = cases::run(&case_roots(), Options::default());
    assert!(report.ok(), "{}", report.to_text(false));
    // Every shipped set and the fixtures have cases.
    assert_eq!(report.suites.len(), 4, "{}", report.to_text(false));
    assert!(
        report
            .suites
            .iter()
            .all(|s| s.files.iter().any(|f| !f.cases.is_empty()))
    );
}

/// Every prohibition and change of the shipped policies is exercised by some case, and
/// every window of uncertainty is judged inside by one.
#[test]
fn the_cases_exercise_every_prohibition_change_and_window() {
    let report = cases::run(&case_roots(), Options::default());
    assert!(report.coverage.items > 0);
    assert!(
        report.coverage.unexercised.is_empty(),
        "not exercised by any case: {:#?}",
        report.coverage.unexercised
    );
}

/// Guards the corpus itself: every shipped prohibition is denied by some case, and every
/// allow reason, action and signal occurs, so that a change of semantics cannot slip
/// through untested.
#[test]
fn corpus_covers_every_prohibition_reason_and_action() {
    let mut denied = BTreeSet::new();
    let mut reasons = BTreeSet::new();
    let mut actions = BTreeSet::new();
    let mut hindsight = 0;
    let (mut uncertain, mut set_aside, mut by_account, mut permissive) = (0, 0, 0, 0);
    {
        for case in all_cases() {
            uncertain += usize::from(case["expect"].get("uncertain").is_some());
            set_aside += usize::from(case["expect"].get("relief_set_aside").is_some());
            by_account += usize::from(case["expect"]["matched_by"] == "publisher-account");
            permissive += usize::from(case["posture"]["boundaries"] == "permissive");
            for r in case["expect"]["reasons"].as_array().into_iter().flatten() {
                denied.insert(r.as_str().unwrap().to_owned());
            }
            if let Some(b) = case["expect"]["because"].as_str() {
                reasons.insert(b.to_owned());
            }
            actions.insert(case["request"]["action"].as_str().unwrap().to_owned());
            hindsight += usize::from(case["request"].get("known_at").is_some());
        }
    }
    let shipped = load(&[
        "policies/us-2020",
        "policies/us-2020-courts",
        "policies/us-2024-pafaca",
    ]);
    for p in shipped.prohibitions() {
        assert!(
            denied.contains(&p.id),
            "no corpus case denies by `{}`",
            p.id
        );
    }
    for reason in [
        "not-covered",
        "action-not-prohibited",
        "outside-jurisdiction",
        "not-yet-in-force",
        "not-enforced",
        "enjoined",
        "lapsed",
        "exempt",
        "revoked",
    ] {
        assert!(
            reasons.contains(reason),
            "no corpus case is allowed as `{reason}`"
        );
    }
    assert!(
        uncertain > 0,
        "no corpus case falls in a window of uncertainty"
    );
    assert!(
        set_aside > 0,
        "no corpus case sets a non-enforcement order aside"
    );
    assert!(
        by_account > 0,
        "no corpus case matches by publisher account"
    );
    assert!(permissive > 0, "no corpus case reads windows permissively");
    for action in policy::Action::ALL {
        assert!(
            actions.contains(action.as_str()),
            "no corpus case asks for `{action}`"
        );
    }
    assert!(hindsight >= 5, "only {hindsight} cases judge in hindsight");
}

/// Loading several sets that include the same files reads each file once and decides
/// as the union of the sets.
#[test]
fn sets_that_include_the_same_files_load_together() {
    let dirs = [
        "policies/us-2020",
        "policies/us-2020-courts",
        "policies/us-2024-pafaca",
    ];
    let paths: Vec<_> = dirs.iter().map(|d| root().join(d)).collect();
    let loaded = gatekeeper::load_dirs(&paths).unwrap();
    let unique: BTreeSet<_> = loaded.files.iter().collect();
    assert_eq!(unique.len(), loaded.files.len());
    let ids =
        |p: &Policy| -> BTreeSet<String> { p.apps().iter().map(|a| a.id().to_owned()).collect() };
    let each: BTreeSet<String> = dirs.iter().flat_map(|d| ids(&load(&[d]))).collect();
    assert_eq!(ids(&loaded.policy), each);
    // The courts set alone already brings the 2020 rule it amends.
    let prohibitions = |p: &Policy| -> BTreeSet<String> {
        p.prohibitions().iter().map(|x| x.id.clone()).collect()
    };
    let rule = prohibitions(&load(&["policies/us-2020"]));
    let courts = prohibitions(&load(&["policies/us-2020-courts"]));
    assert!(
        !rule.is_empty() && rule.is_subset(&courts),
        "{rule:?} {courts:?}"
    );
}

/// Guards the fallback for an app and action prohibited in more regions than the index
/// makes time lines for: such entries are decided by scanning, with the same answers.
#[test]
fn many_regions_are_decided_by_scanning() {
    let countries = ["US", "CA", "FR", "DE", "JP", "BR", "IN", "AU"];
    let mut text = String::from(
        "[instrument]\nid = \"o\"\nkind = \"statute\"\ntitle = \"O\"\nauthority = \"A\"\ncitation = \"1 XR 1\"\nsource = \"https://example.org/o\"\nissued = 2021-01-01T00:00:00Z\n\n[[entity]]\nid = \"e\"\nname = \"E\"\n\n[[app]]\nid = \"a\"\nname = \"A\"\nowner = \"e\"\nandroid = [\"app.a\"]\n",
    );
    for (i, c) in countries.iter().enumerate() {
        text.push_str(&format!(
            "\n[[region]]\nid = \"R{i}\"\nname = \"{c}\"\ncountries = [\"{c}\"]\n\n[[prohibition]]\nid = \"p{i}\"\napps = [\"a\"]\nactions = [\"download\"]\nregion = \"R{i}\"\neffective = 2021-02-{:02}T00:00:00Z\ntext = \"t\"\n",
            i + 1
        ));
    }
    let policy = Policy::from_sources([policy::Source::new("o.toml", text)]).unwrap();
    for (i, c) in countries.iter().enumerate() {
        let request = |at: &str| {
            RequestRecord {
                app: Some(policy::AppRecord {
                    platform: "android".into(),
                    id: "app.a".into(),
                }),
                action: "download".into(),
                at: at.into(),
                storefront: Some((*c).into()),
                ..Default::default()
            }
            .into_request()
            .unwrap()
        };
        let before = policy
            .decide(&request("2021-01-15T00:00:00Z"), Posture::default())
            .to_record();
        assert_eq!(before.because.as_deref(), Some("not-yet-in-force"), "{c}");
        assert_eq!(
            before.valid_until,
            Some(format!("2021-02-{:02}T00:00:00Z", i + 1)),
            "{c}"
        );
        let after = policy
            .decide(&request("2021-03-01T00:00:00Z"), Posture::default())
            .to_record();
        assert_eq!(after.decision, "deny", "{c}");
        assert_eq!(after.reasons[0].prohibition, format!("p{i}"));
        assert_eq!(after.jurisdiction.unwrap().region, format!("R{i}"));
    }
}

/// With every shipped set loaded together, as a store loads them, an allow names the
/// weakest relief among the prohibitions covering the request: TikTok in March 2025 (its
/// 2020 rule revoked, the statute not enforced) is allowed by EO 14166, which an operator
/// may choose not to honour; after the divestiture, by the joint venture's exemption;
/// before the statute, because it is not yet in force. WeChat, under the 2020 rule alone,
/// stays revoked.
#[test]
fn every_set_loaded_together_names_the_relief_an_allow_rests_on() {
    let shipped = load(&[
        "policies/us-2020",
        "policies/us-2020-courts",
        "policies/us-2024-pafaca",
    ]);
    let decide = |id: &str, action: &str, at: &str, known_at: Option<&str>, posture: Posture| {
        let request = RequestRecord {
            app: Some(policy::AppRecord {
                platform: "android".into(),
                id: id.into(),
            }),
            action: action.into(),
            at: at.into(),
            known_at: known_at.map(Into::into),
            storefront: Some("US".into()),
            server_country: Some("US".into()),
            ..Default::default()
        }
        .into_request()
        .unwrap();
        shipped.decide(&request, posture).to_record()
    };
    let tiktok = "com.zhiliaoapp.musically";
    for (id, action, at, known_at, because, by) in [
        (
            tiktok,
            "download",
            "2025-03-01T12:00:00Z",
            None,
            "not-enforced",
            Some("eo-14166"),
        ),
        (
            tiktok,
            "host",
            "2025-10-01T12:00:00Z",
            None,
            "not-enforced",
            Some("eo-14352"),
        ),
        (
            tiktok,
            "update",
            "2025-01-19T05:00:00Z",
            Some("2025-02-01T00:00:00Z"),
            "not-enforced",
            Some("eo-14166"),
        ),
        (
            tiktok,
            "download",
            "2026-02-01T12:00:00Z",
            None,
            "exempt",
            Some("tiktok-usds-joint-venture"),
        ),
        (
            tiktok,
            "download",
            "2024-06-01T12:00:00Z",
            None,
            "not-yet-in-force",
            None,
        ),
        (
            "com.tencent.mm",
            "download",
            "2025-03-01T12:00:00Z",
            None,
            "revoked",
            Some("commerce-rescission-2021"),
        ),
    ] {
        let record = decide(id, action, at, known_at, Posture::default());
        assert_eq!(record.decision, "allow", "{id} {action} {at}: {record:?}");
        assert_eq!(
            record.because.as_deref(),
            Some(because),
            "{id} {action} {at}: {record:?}"
        );
        assert_eq!(record.by.as_deref(), by, "{id} {action} {at}: {record:?}");
    }
    // Ignoring non-enforcement orders, the same request of March 2025 is denied.
    let ignore = Posture {
        non_enforcement: policy::NonEnforcement::Ignore,
        ..Posture::default()
    };
    let record = decide(tiktok, "download", "2025-03-01T12:00:00Z", None, ignore);
    assert_eq!(record.decision, "deny", "{record:?}");
}
