//! The reference on small sets whose answers are worked out by hand from the
//! documentation; where the engine is expected to agree, it is checked too.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use policy::{Boundaries, NonEnforcement, Policy, Posture, RequestRecord, Source};

use super::{Answer, decide};

const CONSERVATIVE: Posture = Posture {
    boundaries: Boundaries::Conservative,
    non_enforcement: NonEnforcement::Honour,
};
const PERMISSIVE: Posture = Posture {
    boundaries: Boundaries::Permissive,
    non_enforcement: NonEnforcement::Honour,
};
const IGNORE: Posture = Posture {
    boundaries: Boundaries::Conservative,
    non_enforcement: NonEnforcement::Ignore,
};

/// An instrument's file header.
fn instrument(id: &str, issued: &str) -> String {
    format!(
        "[instrument]\nid = \"{id}\"\nkind = \"statute\"\ntitle = \"T\"\nauthority = \"A\"\ncitation = \"1 XR 1\"\nsource = \"https://example.org/{id}\"\nissued = {issued}\n"
    )
}

const COMMON: &str = r#"
[[region]]
id = "US"
name = "United States"
countries = ["US", "PR"]

[[entity]]
id = "parent"
name = "Parent"

[[entity]]
id = "child"
name = "Child"
parent = "parent"
publisher_accounts = [{ store = "google", id = "123456" }]

[[entity]]
id = "other"
name = "Other"

[[app]]
id = "chat"
name = "Chat"
owner = "child"
android = ["com.acme.chat"]

[[app]]
id = "game"
name = "Game"
owner = "other"
android = ["com.other.game"]
"#;

/// The common file, the prohibiting instrument (issued 2020-01-01) with one prohibition
/// on `chat` (owner `child`) in force from `effective`, and more files.
fn load(prohibition: &str, more: &[(&str, String)]) -> Policy {
    let law = format!(
        "{}\n[[prohibition]]\nid = \"p\"\nactions = [\"download\"]\nregion = \"US\"\ntext = \"t\"\n{prohibition}\n",
        instrument("law", "2020-01-01T00:00:00Z")
    );
    let mut sources = vec![
        Source::new("common.toml", COMMON),
        Source::new("law.toml", law),
    ];
    for (name, text) in more {
        sources.push(Source::new(*name, text.clone()));
    }
    match Policy::from_sources(sources) {
        Ok(p) => p,
        Err(d) => panic!("{}", d.render()),
    }
}

fn request(json: &str) -> policy::Request {
    let record: RequestRecord = serde_json::from_str(json).unwrap();
    record.into_request().unwrap()
}

fn chat_at(at: &str) -> policy::Request {
    request(&format!(
        r#"{{"app":{{"platform":"android","id":"com.acme.chat"}},"action":"download","at":"{at}","storefront":"US"}}"#
    ))
}

/// The reference's answer, checked against the engine's.
#[track_caller]
fn agreed(policy: &Policy, request: &policy::Request, posture: Posture) -> Answer {
    let answer = decide(policy, request, posture);
    let engine = Answer::from_record(&policy.decide(request, posture).to_record());
    assert_eq!(engine, answer, "the engine disagrees");
    answer
}

fn stretch(from: &str, until: &str) -> Option<(Option<String>, Option<String>)> {
    Some((Some(from.to_owned()), Some(until.to_owned())))
}

/// A window on `effective`: conservative denies from its earliest reading, permissive
/// from its latest, and in between the decision is uncertain.
#[test]
fn a_window_on_effective_is_uncertain_between_its_readings() {
    let policy = load(
        "apps = [\"chat\"]\neffective = { earliest = 2020-01-10T00:00:00Z, latest = 2020-01-12T00:00:00Z, note = \"open\" }",
        &[],
    );
    let req = chat_at("2020-01-11T00:00:00Z");
    let c = agreed(&policy, &req, CONSERVATIVE);
    assert_eq!(c.decision, "deny");
    assert_eq!(c.reasons.iter().collect::<Vec<_>>(), ["p"]);
    assert_eq!(
        c.uncertain,
        stretch("2020-01-10T00:00:00Z", "2020-01-12T00:00:00Z")
    );
    // At the latest reading both deny: the uncertainty, and so the answer, changes.
    assert_eq!(c.valid_until.as_deref(), Some("2020-01-12T00:00:00Z"));
    let p = agreed(&policy, &req, PERMISSIVE);
    assert_eq!(p.because.as_deref(), Some("not-yet-in-force"));
    assert_eq!(p.in_force_from.as_deref(), Some("2020-01-12T00:00:00Z"));
    assert_eq!(p.uncertain, c.uncertain);
    let before = agreed(&policy, &chat_at("2020-01-09T00:00:00Z"), CONSERVATIVE);
    assert_eq!(before.uncertain, None);
    assert_eq!(before.valid_until.as_deref(), Some("2020-01-10T00:00:00Z"));
}

/// Rule 5: an order in effect defers the prohibition, unless the operator ignores such
/// orders; then it is a deny that names them.
#[test]
fn a_non_enforcement_order_defers_unless_ignored() {
    let ne = format!(
        "{}\n[[non-enforcement]]\nprohibitions = [\"p\"]\nfrom = 2020-01-05T00:00:00Z\nuntil = 2020-01-20T00:00:00Z\n",
        instrument("ne", "2020-01-05T00:00:00Z")
    );
    let policy = load(
        "apps = [\"chat\"]\neffective = 2020-01-10T00:00:00Z",
        &[("ne.toml", ne)],
    );
    let req = chat_at("2020-01-15T00:00:00Z");
    let honour = agreed(&policy, &req, CONSERVATIVE);
    assert_eq!(honour.because.as_deref(), Some("not-enforced"));
    assert_eq!(honour.by.as_deref(), Some("ne"));
    assert_eq!(honour.valid_until.as_deref(), Some("2020-01-20T00:00:00Z"));
    let ignore = agreed(&policy, &req, IGNORE);
    assert_eq!(ignore.decision, "deny");
    assert_eq!(ignore.relief_set_aside.iter().collect::<Vec<_>>(), ["ne"]);
    // After the order ends, the deny names nothing set aside: the answer changes.
    assert_eq!(ignore.valid_until.as_deref(), Some("2020-01-20T00:00:00Z"));
}

/// Rule 4 before rule 5: an injunction bars the prohibition whatever the posture.
#[test]
fn an_injunction_outranks_a_non_enforcement_order() {
    let orders = format!(
        "{}\n[[non-enforcement]]\nprohibitions = [\"p\"]\nfrom = 2020-01-05T00:00:00Z\n\n[[injunction]]\nprohibitions = [\"p\"]\nfrom = 2020-01-06T00:00:00Z\n",
        instrument("court", "2020-01-05T00:00:00Z")
    );
    let policy = load(
        "apps = [\"chat\"]\neffective = 2020-01-10T00:00:00Z",
        &[("court.toml", orders)],
    );
    for posture in [CONSERVATIVE, IGNORE] {
        let a = agreed(&policy, &chat_at("2020-01-15T00:00:00Z"), posture);
        assert_eq!(a.because.as_deref(), Some("enjoined"));
        assert_eq!(a.valid_until, None);
    }
}

/// Rule 6: the latest issued delay wins, judged with what is issued by `known_at`.
#[test]
fn the_latest_issued_delay_wins() {
    let d1 = format!(
        "{}\n[[delay]]\nprohibitions = [\"p\"]\neffective = 2020-01-20T00:00:00Z\n",
        instrument("d1", "2020-01-03T00:00:00Z")
    );
    let d2 = format!(
        "{}\n[[delay]]\nprohibitions = [\"p\"]\neffective = 2020-01-15T00:00:00Z\n",
        instrument("d2", "2020-01-08T00:00:00Z")
    );
    let policy = load(
        "apps = [\"chat\"]\neffective = 2020-01-10T00:00:00Z",
        &[("d1.toml", d1), ("d2.toml", d2)],
    );
    let now = agreed(&policy, &chat_at("2020-01-16T00:00:00Z"), CONSERVATIVE);
    assert_eq!(now.decision, "deny");
    let hindsight = request(
        r#"{"app":{"platform":"android","id":"com.acme.chat"},"action":"download","at":"2020-01-16T00:00:00Z","known_at":"2020-01-04T00:00:00Z","storefront":"US"}"#,
    );
    let then = agreed(&policy, &hindsight, CONSERVATIVE);
    assert_eq!(then.because.as_deref(), Some("not-yet-in-force"));
    assert_eq!(then.in_force_from.as_deref(), Some("2020-01-20T00:00:00Z"));
    assert_eq!(then.valid_until.as_deref(), Some("2020-01-20T00:00:00Z"));
}

/// An unlisted app published from a covered owner's subsidiary's account is covered; a
/// listed app is judged as listed, whoever publishes it.
#[test]
fn a_publisher_account_counts_only_when_no_identifier_matched() {
    let policy = load(
        "owners = [\"parent\"]\neffective = 2020-01-10T00:00:00Z",
        &[],
    );
    let unlisted = request(
        r#"{"app":{"platform":"android","id":"com.unknown.x"},"publisher":{"store":"google","id":"123456"},"action":"download","at":"2020-01-15T00:00:00Z","ip_country":"PRI"}"#,
    );
    let a = agreed(&policy, &unlisted, CONSERVATIVE);
    assert_eq!(a.decision, "deny");
    assert_eq!(a.matched_by.as_deref(), Some("publisher-account"));
    assert_eq!((a.app, a.owner.as_deref()), (None, Some("child")));
    let listed = request(
        r#"{"app":{"platform":"android","id":"com.other.game"},"publisher":{"store":"google","id":"123456"},"action":"download","at":"2020-01-15T00:00:00Z","ip_country":"PRI"}"#,
    );
    let b = agreed(&policy, &listed, CONSERVATIVE);
    assert_eq!(b.because.as_deref(), Some("not-covered"));
    assert_eq!(b.app.as_deref(), Some("game"));
}

/// Every group must place the request; a group it carries no signal of is assumed met.
#[test]
fn jurisdiction_groups_fail_closed_on_missing_signals() {
    let policy = load(
        "apps = [\"chat\"]\njurisdiction = [[\"server_country\"], [\"storefront\", \"ip_country\"]]\neffective = 2020-01-10T00:00:00Z",
        &[],
    );
    let only_storefront = chat_at("2020-01-15T00:00:00Z");
    assert_eq!(
        agreed(&policy, &only_storefront, CONSERVATIVE).decision,
        "deny"
    );
    let served_abroad = request(
        r#"{"app":{"platform":"android","id":"COM.acme.chat"},"action":"download","at":"2020-01-15T00:00:00Z","storefront":"US","server_country":"FR"}"#,
    );
    let a = agreed(&policy, &served_abroad, CONSERVATIVE);
    assert_eq!(a.because.as_deref(), Some("outside-jurisdiction"));
    assert!(a.case_insensitive_match);
}

/// Rule 2: an exemption ends the prohibition for the app it names, not for an unlisted
/// app of the same owner; rule 3: past its end a prohibition has lapsed.
#[test]
fn exemptions_name_apps_and_prohibitions_lapse_at_their_end() {
    let exemption = format!(
        "{}\n[[exemption]]\napps = [\"chat\"]\nprohibitions = [\"p\"]\nfrom = 2020-01-12T00:00:00Z\n",
        instrument("sale", "2020-01-12T00:00:00Z")
    );
    let policy = load(
        "owners = [\"child\"]\neffective = 2020-01-10T00:00:00Z\nend = 2020-01-20T00:00:00Z",
        &[("sale.toml", exemption)],
    );
    let a = agreed(&policy, &chat_at("2020-01-15T00:00:00Z"), CONSERVATIVE);
    assert_eq!(
        (a.because.as_deref(), a.by.as_deref()),
        (Some("exempt"), Some("sale"))
    );
    let unlisted = |at: &str| {
        request(&format!(
            r#"{{"app":{{"platform":"android","id":"com.unknown.x"}},"publisher":{{"store":"google","id":"123456"}},"action":"download","at":"{at}","storefront":"US"}}"#
        ))
    };
    let b = agreed(&policy, &unlisted("2020-01-15T00:00:00Z"), CONSERVATIVE);
    assert_eq!(b.decision, "deny");
    assert_eq!(b.valid_until.as_deref(), Some("2020-01-20T00:00:00Z"));
    let c = agreed(&policy, &unlisted("2020-01-20T00:00:00Z"), CONSERVATIVE);
    assert_eq!(
        (c.because.as_deref(), c.by.as_deref()),
        (Some("lapsed"), Some("law"))
    );
}
