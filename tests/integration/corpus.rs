//! The data-driven corpus: `tests/corpus/<set>.jsonl`, one case a line, each a request
//! and the fields its decision must have. Expected fields are compared exactly; fields
//! a case leaves out are not checked. `reasons` lists the denying prohibitions' ids.

use std::collections::BTreeSet;

use policy::{Policy, Posture, RequestRecord};
use serde_json::Value;

use crate::support::{CORPORA, corpus_sets, load, root};

fn cases(name: &str) -> Vec<Value> {
    let path = root().join("tests/corpus").join(format!("{name}.jsonl"));
    let text = std::fs::read_to_string(&path).unwrap();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Decides one case and compares the expected fields; returns what differs.
fn check(policy: &Policy, case: &Value) -> Result<(), String> {
    let record: RequestRecord =
        serde_json::from_value(case["request"].clone()).map_err(|e| e.to_string())?;
    let request = record.into_request().map_err(|e| e.to_string())?;
    let decision = policy.decide(&request, posture_of(case)?);
    let mut actual = serde_json::to_value(decision.to_record()).unwrap();
    let ids = |list: &Value, key: &str| -> Value {
        list.as_array()
            .map(|r| r.iter().map(|x| x[key].clone()).collect())
            .unwrap_or_default()
    };
    // `authority`: the instruments behind the first reason; `reasons` and
    // `relief_set_aside`: their ids.
    actual["authority"] = ids(&actual["reasons"][0]["authority"], "instrument");
    actual["reasons"] = ids(&actual["reasons"], "prohibition");
    actual["relief_set_aside"] = ids(&actual["relief_set_aside"], "instrument");
    let mut problems = Vec::new();
    for (key, want) in case["expect"].as_object().unwrap() {
        let got = actual.get(key).cloned().unwrap_or(Value::Null);
        if &got != want {
            problems.push(format!("`{key}`: expected {want}, got {got}"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{}\n    decision: {}",
            problems.join("; "),
            serde_json::to_string(&decision.to_record()).unwrap()
        ))
    }
}

/// A case may name the operator's posture: `"posture": {"boundaries": "permissive",
/// "non_enforcement": "ignore"}`, either key optional.
fn posture_of(case: &Value) -> Result<Posture, String> {
    let mut posture = Posture::default();
    if let Some(p) = case.get("posture") {
        if let Some(b) = p.get("boundaries") {
            posture.boundaries = serde_json::from_value(b.clone()).map_err(|e| e.to_string())?;
        }
        if let Some(n) = p.get("non_enforcement") {
            posture.non_enforcement =
                serde_json::from_value(n.clone()).map_err(|e| e.to_string())?;
        }
    }
    Ok(posture)
}

#[track_caller]
fn run(name: &str) {
    let policy = load(&corpus_sets(name));
    let cases = cases(name);
    assert!(!cases.is_empty(), "corpus `{name}` is empty");
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|c| {
            check(&policy, c)
                .err()
                .map(|e| format!("  {}: {e}", c["case"]))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases in `{name}` failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn corpus_us_2020() {
    run("us-2020");
}

#[test]
fn corpus_us_2020_courts() {
    run("us-2020-courts");
}

#[test]
fn corpus_us_2024_pafaca() {
    run("us-2024-pafaca");
}

#[test]
fn corpus_fixtures() {
    run("fixtures");
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
    for name in CORPORA {
        for case in cases(name) {
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
    assert_eq!(loaded.policy.apps().len(), 5);
    // The courts set alone already brings the 2020 rule it amends.
    let courts = load(&["policies/us-2020-courts"]);
    assert_eq!(courts.prohibitions().len(), 11);
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
