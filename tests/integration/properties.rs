//! Properties over generated policy sets and requests.

use policy::{Policy, Posture, RequestRecord, Source};
use proptest::prelude::*;

const ACTIONS: [&str; 7] = [
    "download", "update", "host", "cdn", "peering", "payment", "code-use",
];
const COUNTRIES: [&str; 5] = ["US", "PRI", "CA", "FR", "gu"];

fn hour(h: i64) -> String {
    let base = chrono::DateTime::parse_from_rfc3339("2020-01-01T00:00:00Z").unwrap();
    (base + chrono::Duration::hours(h)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[derive(Clone, Debug)]
struct GenProhibition {
    instrument: usize,
    apps: Vec<usize>,
    owner: Option<usize>,
    actions: Vec<usize>,
    region: usize,
    effective: i64,
    end: Option<i64>,
}

#[derive(Clone, Debug)]
struct GenChange {
    instrument: usize,
    kind: u8,
    targets: Vec<usize>,
    at: i64,
    until: Option<i64>,
}

#[derive(Clone, Debug)]
struct GenPolicy {
    issued: Vec<i64>,
    prohibitions: Vec<GenProhibition>,
    changes: Vec<GenChange>,
    /// Prohibitions added after the changes were drawn, which no change targets.
    added: Vec<GenProhibition>,
}

fn prohibition() -> impl Strategy<Value = GenProhibition> {
    (
        0usize..4,
        prop::collection::vec(0usize..4, 0..3),
        prop::option::of(0usize..3),
        prop::collection::vec(0usize..7, 1..4),
        0usize..3,
        0i64..2000,
        prop::option::of(4i64..1000),
    )
        .prop_map(
            |(instrument, apps, owner, actions, region, effective, end)| GenProhibition {
                instrument,
                owner: if apps.is_empty() {
                    Some(owner.unwrap_or(0))
                } else {
                    owner
                },
                apps,
                actions,
                region,
                effective,
                end: end.map(|e| effective + e),
            },
        )
}

fn change() -> impl Strategy<Value = GenChange> {
    (
        0usize..4,
        0u8..3,
        prop::collection::vec(0usize..8, 1..3),
        0i64..2000,
        prop::option::of(4i64..800),
    )
        .prop_map(|(instrument, kind, targets, at, until)| GenChange {
            instrument,
            kind,
            targets,
            at,
            until: until.map(|u| at + u),
        })
}

fn gen_policy() -> impl Strategy<Value = GenPolicy> {
    (
        prop::collection::vec(0i64..2000, 4),
        prop::collection::vec(prohibition(), 0..6),
        prop::collection::vec(change(), 0..5),
    )
        .prop_map(|(issued, prohibitions, changes)| GenPolicy {
            issued,
            prohibitions,
            changes,
            added: Vec::new(),
        })
}

const COMMON: &str = r#"
[[region]]
id = "R0"
name = "US and Puerto Rico"
countries = ["US", "PR"]
[[region]]
id = "R1"
name = "Canada"
countries = ["CA"]
[[region]]
id = "R2"
name = "US and Canada"
countries = ["US", "CA"]
[[entity]]
id = "e0"
name = "E0"
[[entity]]
id = "e1"
name = "E1"
parent = "e0"
[[entity]]
id = "e2"
name = "E2"
[[app]]
id = "a0"
name = "A0"
owner = "e1"
android = ["app.0"]
[[app]]
id = "a1"
name = "A1"
owner = "e0"
android = ["app.1"]
[[app]]
id = "a2"
name = "A2"
owner = "e2"
android = ["app.2"]
[[app]]
id = "a3"
name = "A3"
owner = "e1"
android = ["app.3"]
"#;

fn render(g: &GenPolicy) -> Vec<Source> {
    let mut files: Vec<String> = g
        .issued
        .iter()
        .enumerate()
        .map(|(i, issued)| {
            format!(
                "[instrument]\nid = \"i{i}\"\nkind = \"statute\"\ntitle = \"I{i}\"\nauthority = \"A\"\ncitation = \"{i} XR 1\"\nsource = \"https://example.org/{i}\"\nissued = \"{}\"\n",
                hour(*issued)
            )
        })
        .collect();
    for (pi, p) in g.prohibitions.iter().chain(&g.added).enumerate() {
        let list = |v: &[usize], prefix: &str| {
            v.iter()
                .map(|x| format!("\"{prefix}{x}\""))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut text = format!(
            "\n[[prohibition]]\nid = \"p{pi}\"\napps = [{}]\nactions = [{}]\nregion = \"R{}\"\neffective = \"{}\"\ntext = \"t\"\n",
            list(&p.apps, "a"),
            p.actions
                .iter()
                .map(|a| format!("\"{}\"", ACTIONS[*a]))
                .collect::<Vec<_>>()
                .join(", "),
            p.region,
            hour(p.effective)
        )
        .replace(
            &format!("effective = \"{}\"", hour(p.effective)),
            &format!("effective = {}", moment(p.effective)),
        );
        if let Some(o) = p.owner {
            text.push_str(&format!("owners = [\"e{o}\"]\n"));
        }
        if let Some(e) = p.end {
            text.push_str(&format!("end = \"{}\"\n", hour(e)));
        }
        files[p.instrument].push_str(&text);
    }
    if !g.prohibitions.is_empty() {
        for c in &g.changes {
            let targets = c
                .targets
                .iter()
                .map(|t| format!("\"p{}\"", t % g.prohibitions.len()))
                .collect::<Vec<_>>()
                .join(", ");
            let text = match c.kind {
                0 => format!(
                    "\n[[delay]]\nprohibitions = [{targets}]\neffective = \"{}\"\n",
                    hour(c.at)
                ),
                1 => {
                    let until = c
                        .until
                        .map(|u| format!("until = \"{}\"\n", hour(u)))
                        .unwrap_or_default();
                    // Both kinds of relief, and some of them with an open start.
                    let kind = if c.instrument % 2 == 0 {
                        "injunction"
                    } else {
                        "non-enforcement"
                    };
                    format!(
                        "\n[[{kind}]]\nprohibitions = [{targets}]\nfrom = {}\n{until}",
                        moment(c.at)
                    )
                }
                _ => format!(
                    "\n[[revocation]]\nprohibitions = [{targets}]\nfrom = \"{}\"\n",
                    hour(c.at)
                ),
            };
            files[c.instrument].push_str(&text);
        }
    }
    std::iter::once(Source::new("common.toml", COMMON))
        .chain(
            files
                .into_iter()
                .enumerate()
                .map(|(i, t)| Source::new(format!("i{i}.toml"), t)),
        )
        .collect()
}

/// An instant, or, for one in three, a window of three hours starting there.
fn moment(at: i64) -> String {
    if at % 3 == 0 {
        format!(
            "{{ earliest = \"{}\", latest = \"{}\", note = \"open\" }}",
            hour(at),
            hour(at + 3)
        )
    } else {
        format!("\"{}\"", hour(at))
    }
}

fn compile(g: &GenPolicy) -> Policy {
    match Policy::from_sources(render(g)) {
        Ok(p) => p,
        Err(d) => panic!("generated policy failed to load:\n{}", d.render()),
    }
}

#[derive(Clone, Debug)]
struct GenRequest {
    app: usize,
    action: usize,
    at: i64,
    known_at: Option<i64>,
    storefront: Option<usize>,
    device: Option<usize>,
}

fn gen_request() -> impl Strategy<Value = GenRequest> {
    (
        0usize..5,
        0usize..7,
        -10i64..3000,
        prop::option::of(0i64..3000),
        prop::option::of(0usize..5),
        prop::option::of(0usize..5),
    )
        .prop_map(
            |(app, action, at, known_at, storefront, device)| GenRequest {
                app,
                action,
                at,
                known_at,
                storefront: if storefront.is_none() && device.is_none() {
                    Some(0)
                } else {
                    storefront
                },
                device,
            },
        )
}

fn request(r: &GenRequest, at: String) -> policy::Request {
    RequestRecord {
        app: Some(policy::AppRecord {
            platform: "android".into(),
            id: format!("app.{}", r.app),
        }),
        action: ACTIONS[r.action].into(),
        at,
        known_at: r.known_at.map(hour),
        storefront: r.storefront.map(|c| COUNTRIES[c].into()),
        device_country: r.device.map(|c| COUNTRIES[c].into()),
        ..Default::default()
    }
    .into_request()
    .unwrap()
}

/// The decision's content without `valid_until`, to compare answers across instants.
fn answer(policy: &Policy, request: &policy::Request) -> policy::DecisionRecord {
    let mut record = policy.decide(request, Posture::default()).to_record();
    record.valid_until = None;
    record
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Adding a prohibition never turns a deny into an allow.
    #[test]
    fn adding_a_prohibition_never_turns_a_deny_into_an_allow(g in gen_policy(), extra in prohibition(), r in gen_request()) {
        let before = compile(&g);
        let req = request(&r, hour(r.at));
        let was_denied = before.decide(&req, Posture::default()).is_deny();
        let mut more = g.clone();
        more.added.push(extra);
        let after = compile(&more);
        if was_denied {
            prop_assert!(after.decide(&req, Posture::default()).is_deny());
        }
    }

    /// The precomputed time lines answer exactly as a scan of the instruments does.
    #[test]
    fn index_agrees_with_the_reference_scan(g in gen_policy(), r in gen_request()) {
        let policy = compile(&g);
        let req = request(&r, hour(r.at));
        for posture in Posture::ALL {
            let fast = policy.decide(&req, posture).to_record();
            let scanned = policy.decide_scanning(&req, posture).to_record();
            prop_assert_eq!(fast, scanned);
        }
    }

    /// `valid_until` is honest: the answer holds until just before it and changes at it.
    #[test]
    fn the_answer_holds_until_valid_until_and_changes_there(g in gen_policy(), r in gen_request()) {
        let policy = compile(&g);
        let req = request(&r, hour(r.at));
        let now = answer(&policy, &req);
        match policy.decide(&req, Posture::default()).valid_until {
            Some(next) => {
                prop_assert!(next.as_nanos() > policy::Instant::parse_rfc3339(&hour(r.at)).unwrap().as_nanos());
                let just_before = req.at_instant(policy::Instant::from_nanos(next.as_nanos() - 1));
                prop_assert_eq!(&answer(&policy, &just_before), &now);
                let at_next = req.at_instant(next);
                prop_assert_ne!(&answer(&policy, &at_next), &now);
            }
            None => {
                let much_later = req.at_instant(policy::Instant::parse_rfc3339("2040-01-01T00:00:00Z").unwrap());
                prop_assert_eq!(&answer(&policy, &much_later), &now);
            }
        }
    }
}
