//! Focused cases for rules of `policy::law` that the corpus and the generated policies
//! leave open: which of two equally final changes names an allow, and ties between
//! changes that take effect at the same instant. Each policy is written inline, so that
//! the case shows everything it depends on.

use policy::{DecisionRecord, Policy, Posture, RequestRecord, Source};

/// The apps, owner and region every case shares: `a` and `b`, both Android, `b` with a
/// code digest that another app may carry.
const COMMON: &str = r#"
[[region]]
id = "US"
name = "The United States"
countries = ["US"]

[[entity]]
id = "e"
name = "E"

[[app]]
id = "a"
name = "A"
owner = "e"
android = ["app.a"]

[[app]]
id = "b"
name = "B"
owner = "e"
android = ["app.b"]
code_sha256 = ["bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"]
"#;

/// An instrument's file: its header, issued at `issued`, then `body`.
fn instrument(id: &str, issued: &str, body: &str) -> Source {
    Source::new(
        format!("{id}.toml"),
        format!(
            "[instrument]\nid = \"{id}\"\nkind = \"court-order\"\ntitle = \"{id}\"\nauthority = \"A court\"\ncitation = \"1 XR {id}\"\nsource = \"https://example.org/{id}\"\nissued = {issued}\n\n{body}"
        ),
    )
}

/// The statute every case starts from: prohibitions `p` and `q` on downloading `a`
/// in the US, in force from 2021-02-01, issued 2021-01-01.
fn statute() -> Source {
    instrument(
        "statute",
        "2021-01-01T00:00:00Z",
        r#"
[[prohibition]]
id = "p"
apps = ["a"]
actions = ["download"]
region = "US"
effective = 2021-02-01T00:00:00Z
text = "p"

[[prohibition]]
id = "q"
apps = ["a"]
actions = ["download"]
region = "US"
effective = 2021-02-01T00:00:00Z
text = "q"
"#,
    )
}

fn load(sources: Vec<Source>) -> Policy {
    let all = std::iter::once(Source::new("common.toml", COMMON)).chain(sources);
    match Policy::from_sources(all) {
        Ok(p) => p,
        Err(d) => panic!("policy failed to load:\n{}", d.render()),
    }
}

/// The decision record for downloading the app with package `id` in the US at `at`.
fn decide(policy: &Policy, id: &str, at: &str, posture: Posture) -> DecisionRecord {
    let request = RequestRecord {
        app: Some(policy::AppRecord {
            platform: "android".into(),
            id: id.into(),
        }),
        action: "download".into(),
        at: at.into(),
        storefront: Some("US".into()),
        ..Default::default()
    }
    .into_request()
    .unwrap();
    policy.decide(&request, posture).to_record()
}

#[track_caller]
fn assert_allow(record: &DecisionRecord, because: &str, by: &str) {
    assert_eq!(record.decision, "allow", "{record:?}");
    assert_eq!(record.because.as_deref(), Some(because), "{record:?}");
    assert_eq!(record.by.as_deref(), Some(by), "{record:?}");
}

/// A change ending or barring every prohibition of the statute from 2021-02-15.
fn change(id: &str, issued: &str, table: &str, extra: &str) -> Source {
    instrument(
        id,
        issued,
        &format!("[[{table}]]\ninstruments = [\"statute\"]\nfrom = 2021-02-15T00:00:00Z\n{extra}"),
    )
}

/// Guards rule 2's tie-break: of two revocations taking effect at the same instant, the
/// first listed names the allow (not the last one seen).
#[test]
fn of_two_revocations_from_the_same_instant_the_first_listed_names_the_allow() {
    let policy = load(vec![
        statute(),
        change("r1", "2021-02-10T00:00:00Z", "revocation", ""),
        change("r2", "2021-02-11T00:00:00Z", "revocation", ""),
    ]);
    for posture in Posture::ALL {
        let record = decide(&policy, "app.a", "2021-03-01T00:00:00Z", posture);
        assert_allow(&record, "revoked", "r1");
    }
}

/// Guards rule 2's tie-break for exemptions: of two exemptions naming the app from the
/// same instant, the first listed names the allow.
#[test]
fn of_two_exemptions_from_the_same_instant_the_first_listed_names_the_allow() {
    let policy = load(vec![
        statute(),
        change(
            "x1",
            "2021-02-10T00:00:00Z",
            "exemption",
            "apps = [\"a\"]\n",
        ),
        change(
            "x2",
            "2021-02-11T00:00:00Z",
            "exemption",
            "apps = [\"a\"]\n",
        ),
    ]);
    for posture in Posture::ALL {
        let record = decide(&policy, "app.a", "2021-03-01T00:00:00Z", posture);
        assert_allow(&record, "exempt", "x1");
    }
}

/// Guards rule 4's tie-break: the most recent injunction in effect names the allow, and
/// of two in effect from the same instant, the first listed.
#[test]
fn of_two_injunctions_from_the_same_instant_the_first_listed_names_the_allow() {
    let policy = load(vec![
        statute(),
        change("i1", "2021-02-10T00:00:00Z", "injunction", ""),
        change("i2", "2021-02-11T00:00:00Z", "injunction", ""),
    ]);
    for posture in Posture::ALL {
        let record = decide(&policy, "app.a", "2021-03-01T00:00:00Z", posture);
        assert_allow(&record, "enjoined", "i1");
    }
}

/// Guards rule 5's tie-break: of two non-enforcement orders in effect from the same
/// instant, the first listed names the allow; ignored, both are named as set aside.
#[test]
fn of_two_non_enforcement_orders_from_the_same_instant_the_first_listed_names_the_allow() {
    let policy = load(vec![
        statute(),
        change("n1", "2021-02-10T00:00:00Z", "non-enforcement", ""),
        change("n2", "2021-02-11T00:00:00Z", "non-enforcement", ""),
    ]);
    let record = decide(&policy, "app.a", "2021-03-01T00:00:00Z", Posture::default());
    assert_allow(&record, "not-enforced", "n1");
    let ignore = Posture {
        non_enforcement: policy::NonEnforcement::Ignore,
        ..Posture::default()
    };
    let record = decide(&policy, "app.a", "2021-03-01T00:00:00Z", ignore);
    assert_eq!(record.decision, "deny");
    let aside: Vec<_> = record
        .relief_set_aside
        .iter()
        .map(|i| i.instrument.as_str())
        .collect();
    assert_eq!(aside, ["n1", "n2"]);
}

/// Guards how statuses of several prohibitions combine: two equally final reasons
/// (each prohibition enjoined by its own order) are named by the first prohibition's.
#[test]
fn equally_final_reasons_of_two_prohibitions_are_named_by_the_first() {
    let one = |id: &str, issued: &str, target: &str| {
        instrument(
            id,
            issued,
            &format!(
                "[[injunction]]\nprohibitions = [\"{target}\"]\nfrom = 2021-02-15T00:00:00Z\n"
            ),
        )
    };
    let policy = load(vec![
        statute(),
        one("i1", "2021-02-10T00:00:00Z", "p"),
        one("i2", "2021-02-11T00:00:00Z", "q"),
    ]);
    let record = decide(&policy, "app.a", "2021-03-01T00:00:00Z", Posture::default());
    assert_allow(&record, "enjoined", "i1");
    // Listed the other way round, the other order names it.
    let policy = load(vec![
        statute(),
        one("i2", "2021-02-11T00:00:00Z", "q"),
        one("i1", "2021-02-10T00:00:00Z", "p"),
    ]);
    let record = decide(&policy, "app.a", "2021-03-01T00:00:00Z", Posture::default());
    assert_allow(&record, "enjoined", "i1");
}

/// Guards how the reliefs of several prohibitions combine: the allow names the weakest,
/// on which it rests (the least final, whichever prohibition is listed first). One
/// prohibition revoked and the other exempted: `exempt`. One revoked and the other not
/// enforced (TikTok in 2025, its 2020 rule revoked and the statute not enforced):
/// `not-enforced`, which an operator who ignores such orders does not honour. One enjoined
/// and the other not yet in force: `not-yet-in-force`, with the instant it comes into force.
#[test]
fn of_two_prohibitions_the_weaker_relief_names_the_allow() {
    let on = |table: &str, target: &str, extra: &str| {
        format!("[[{table}]]\nprohibitions = [\"{target}\"]\nfrom = 2021-02-15T00:00:00Z\n{extra}")
    };
    for (first, second) in [("p", "q"), ("q", "p")] {
        // The first prohibition revoked, and the second relieved by instrument `id`.
        let revoked_and = |id: &str, table: &str, extra: &str| {
            load(vec![
                statute(),
                instrument("r", "2021-02-10T00:00:00Z", &on("revocation", first, "")),
                instrument(id, "2021-02-10T00:00:00Z", &on(table, second, extra)),
            ])
        };
        let at = "2021-03-01T00:00:00Z";
        let policy = revoked_and("x", "exemption", "apps = [\"a\"]\n");
        assert_allow(
            &decide(&policy, "app.a", at, Posture::default()),
            "exempt",
            "x",
        );
        let policy = revoked_and("n", "non-enforcement", "until = 2021-04-01T00:00:00Z\n");
        let record = decide(&policy, "app.a", at, Posture::default());
        assert_allow(&record, "not-enforced", "n");
        assert_eq!(record.valid_until.as_deref(), Some("2021-04-01T00:00:00Z"));
        let ignore = Posture {
            non_enforcement: policy::NonEnforcement::Ignore,
            ..Posture::default()
        };
        assert_eq!(decide(&policy, "app.a", at, ignore).decision, "deny");
    }
    // Enjoined, and the other not yet in force (it takes effect later than the statute).
    let policy = load(vec![
        statute(),
        instrument(
            "i",
            "2021-01-20T00:00:00Z",
            "[[injunction]]\nprohibitions = [\"p\"]\nfrom = 2021-01-25T00:00:00Z\n",
        ),
        instrument(
            "d",
            "2021-01-20T00:00:00Z",
            "[[delay]]\nprohibitions = [\"q\"]\neffective = 2021-06-01T00:00:00Z\n",
        ),
    ]);
    let record = decide(&policy, "app.a", "2021-03-01T00:00:00Z", Posture::default());
    assert_eq!(record.decision, "allow", "{record:?}");
    assert_eq!(
        record.because.as_deref(),
        Some("not-yet-in-force"),
        "{record:?}"
    );
    assert_eq!(
        record.in_force_from.as_deref(),
        Some("2021-06-01T00:00:00Z"),
        "{record:?}"
    );
}

/// Guards how several matched apps combine: when both are allowed for equally final
/// reasons, the first matched (here the app the request names) is the one reported.
#[test]
fn of_two_matched_apps_allowed_alike_the_first_is_named() {
    let policy = load(vec![statute()]);
    let request = RequestRecord {
        app: Some(policy::AppRecord {
            platform: "android".into(),
            id: "app.b".into(),
        }),
        code_sha256: vec!["b".repeat(64)],
        action: "download".into(),
        at: "2021-03-01T00:00:00Z".into(),
        storefront: Some("US".into()),
        ..Default::default()
    };
    // `b` alone: not covered.
    let alone = policy
        .decide(&request.clone().into_request().unwrap(), Posture::default())
        .to_record();
    assert_eq!(alone.because.as_deref(), Some("not-covered"));
    assert_eq!(alone.app.as_deref(), Some("b"));
    // `a` carrying `b`'s code: `a` is denied, so the deny names `a`.
    let a_with_b = RequestRecord {
        app: Some(policy::AppRecord {
            platform: "android".into(),
            id: "app.a".into(),
        }),
        ..request.clone()
    };
    let record = policy
        .decide(&a_with_b.into_request().unwrap(), Posture::default())
        .to_record();
    assert_eq!(record.decision, "deny");
    assert_eq!(record.app.as_deref(), Some("a"));
    // Before the statute is issued both are not covered: the first matched, `a`, is named.
    let early = RequestRecord {
        app: Some(policy::AppRecord {
            platform: "android".into(),
            id: "app.a".into(),
        }),
        at: "2020-06-01T00:00:00Z".into(),
        ..request
    };
    let record = policy
        .decide(&early.into_request().unwrap(), Posture::default())
        .to_record();
    assert_eq!(record.because.as_deref(), Some("not-covered"), "{record:?}");
    assert_eq!(record.app.as_deref(), Some("a"), "{record:?}");
    assert_eq!(record.matched_by.as_deref(), Some("android-package"));
}

/// Guards how not-yet-in-force statuses combine: the earliest effective instant among
/// the covering prohibitions is reported, whichever prohibition is listed first.
#[test]
fn of_two_prohibitions_not_yet_in_force_the_earlier_start_is_reported() {
    let prohibition = |id: &str, effective: &str| {
        format!(
            "[[prohibition]]\nid = \"{id}\"\napps = [\"a\"]\nactions = [\"download\"]\nregion = \"US\"\neffective = {effective}\ntext = \"{id}\"\n\n"
        )
    };
    let late = prohibition("late", "2021-03-01T00:00:00Z");
    let early = prohibition("early", "2021-02-15T00:00:00Z");
    for body in [late.clone() + &early, early + &late] {
        let policy = load(vec![instrument("statute", "2021-01-01T00:00:00Z", &body)]);
        let record = decide(&policy, "app.a", "2021-01-15T00:00:00Z", Posture::default());
        assert_eq!(record.because.as_deref(), Some("not-yet-in-force"));
        assert_eq!(
            record.in_force_from.as_deref(),
            Some("2021-02-15T00:00:00Z"),
            "{body}"
        );
        assert_eq!(record.valid_until.as_deref(), Some("2021-02-15T00:00:00Z"));
        let record = decide(&policy, "app.a", "2021-02-15T00:00:00Z", Posture::default());
        let reasons: Vec<_> = record
            .reasons
            .iter()
            .map(|r| r.prohibition.as_str())
            .collect();
        assert_eq!(reasons, ["early"]);
    }
}
