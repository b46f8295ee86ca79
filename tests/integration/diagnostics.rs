//! Loading diagnostics: one snapshot per kind of bad policy, as a maintainer reads it.

use policy::{Diagnostic, Policy, Source};

const COMMON: &str = r#"
[[region]]
id = "US"
name = "The United States and its territories"
countries = ["US", "PR", "GU", "VI", "AS", "MP", "UM"]

[[entity]]
id = "acme"
name = "Acme"

[[app]]
id = "chat"
name = "Chat"
owner = "acme"
android = ["com.acme.chat"]
"#;

const INSTRUMENT: &str = r#"[instrument]
id = "order"
kind = "identification"
title = "Order"
authority = "Made-up authority"
citation = "1 XR 1"
source = "https://example.org/order"
issued = 2021-01-01T00:00:00Z
"#;

fn diagnostics(files: &[(&str, &str)]) -> Vec<Diagnostic> {
    let sources = std::iter::once(Source::new("common.toml", COMMON))
        .chain(files.iter().map(|(n, t)| Source::new(*n, *t)));
    match Policy::from_sources(sources) {
        Ok(_) => panic!("the policy loaded, but it should not have"),
        Err(d) => d.0,
    }
}

fn render(files: &[(&str, &str)]) -> String {
    diagnostics(files)
        .iter()
        .map(|d| format!("{d}\n"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn order(body: &str) -> String {
    format!("{INSTRUMENT}\n{body}")
}

#[test]
fn toml_syntax_error() {
    insta::assert_snapshot!(render(&[(
        "order.toml",
        &order("[[prohibition]]\nid = \"p1\nactions = []\n")
    )]));
}

#[test]
fn unknown_field() {
    let body = "[[prohibition]]\nid = \"p1\"\napps = [\"chat\"]\nacions = [\"download\"]\nregion = \"US\"\neffective = 2021-02-01T00:00:00Z\ntext = \"t\"\n";
    insta::assert_snapshot!(render(&[("order.toml", &order(body))]));
}

/// A misspelt field of an app: the hint names the field meant.
#[test]
fn a_misspelt_field_suggests_the_field_meant() {
    let more = "[[app]]\nid = \"typo\"\nname = \"Typo\"\nowner = \"acme\"\nandriod = [\"com.acme.typo\"]\n";
    insta::assert_snapshot!(render(&[("more.toml", more)]));
}

#[test]
fn unknown_references_suggest_the_near_miss() {
    let body = "[[prohibition]]\nid = \"p1\"\napps = [\"chta\"]\nowners = [\"nobody\"]\nactions = [\"download\"]\nregion = \"U5\"\neffective = 2021-02-01T00:00:00Z\ntext = \"t\"\n\n[[injunction]]\nprohibitions = [\"p2\"]\nfrom = 2021-03-01T00:00:00Z\n";
    insta::assert_snapshot!(render(&[("order.toml", &order(body))]));
}

#[test]
fn duplicate_ids_across_files() {
    let more = "[[app]]\nid = \"chat\"\nname = \"Chat again\"\nowner = \"acme\"\nios = [\"com.acme.chat\"]\n\n[[region]]\nid = \"US\"\nname = \"again\"\ncountries = [\"US\"]\n";
    insta::assert_snapshot!(render(&[("more.toml", more)]));
}

#[test]
fn an_identifier_claimed_by_two_apps() {
    let more = "[[app]]\nid = \"clone\"\nname = \"Clone\"\nowner = \"acme\"\nandroid = [\"com.acme.chat\"]\ncode_sha256 = [\"not-a-digest\"]\n";
    insta::assert_snapshot!(render(&[("more.toml", more)]));
}

#[test]
fn invalid_country_codes() {
    let more = "[[region]]\nid = \"EU\"\nname = \"Some of Europe\"\ncountries = [\"FR\", \"DEU\", \"UK\", \"EUR\"]\n";
    insta::assert_snapshot!(render(&[("more.toml", more)]));
}

/// Codes people write for countries that ISO 3166-1 does not assign them, names, and an
/// alpha-3 typo: each is still an error, and the hint names the code meant.
#[test]
fn unknown_countries_suggest_the_code_meant() {
    let more = "[[region]]\nid = \"EU\"\nname = \"Some of Europe\"\ncountries = [\"UK\", \"EL\", \"Germany\", \"germny\", \"DUE\", \"EU\"]\n";
    insta::assert_snapshot!(render(&[("more.toml", more)]));
}

/// A local time that a daylight-saving change skips, and one it repeats: the hints name
/// the instants on either side of the gap, and both readings of the repeated time.
#[test]
fn daylight_saving_gaps_and_overlaps() {
    let body = "[[prohibition]]\nid = \"p1\"\napps = [\"chat\"]\nactions = [\"download\"]\nregion = \"US\"\neffective = \"2021-03-14T02:30:00 America/New_York\"\ntext = \"t\"\n\n[[prohibition]]\nid = \"p2\"\napps = [\"chat\"]\nactions = [\"update\"]\nregion = \"US\"\neffective = \"2021-11-07T01:30:00[America/New_York]\"\ntext = \"t\"\n";
    insta::assert_snapshot!(render(&[("order.toml", &order(body))]));
}

#[test]
fn times_without_offset_or_zone() {
    let body = "[[prohibition]]\nid = \"p1\"\napps = [\"chat\"]\nactions = [\"download\"]\nregion = \"US\"\neffective = 2021-02-01T00:00:00\ntext = \"t\"\n\n[[prohibition]]\nid = \"p2\"\napps = [\"chat\"]\nactions = [\"update\"]\nregion = \"US\"\neffective = 2021-02-01\ntext = \"t\"\n\n[[prohibition]]\nid = \"p3\"\napps = [\"chat\"]\nactions = [\"host\"]\nregion = \"US\"\neffective = \"2021-02-01T00:00:00 Europe/Atlantis\"\ntext = \"t\"\n\n[[prohibition]]\nid = \"p4\"\napps = [\"chat\"]\nactions = [\"cdn\"]\nregion = \"US\"\neffective = \"2021-03-14T02:30:00 America/New_York\"\ntext = \"t\"\n";
    insta::assert_snapshot!(render(&[("order.toml", &order(body))]));
}

#[test]
fn ends_before_starts() {
    let body = "[[prohibition]]\nid = \"p1\"\napps = [\"chat\"]\nactions = [\"download\"]\nregion = \"US\"\neffective = 2021-02-01T00:00:00Z\nend = 2021-01-01T00:00:00Z\ntext = \"t\"\n\n[[injunction]]\nprohibitions = [\"p1\"]\nfrom = 2021-03-01T00:00:00Z\nuntil = \"2021-03-01T00:00:00 UTC\"\n";
    insta::assert_snapshot!(render(&[("order.toml", &order(body))]));
}

/// Windows: a missing note, edges in the wrong order, an unknown key; a `until` inside
/// the `from` window; the retired `[[suspension]]`.
#[test]
fn malformed_windows_and_retired_suspensions() {
    let body = r#"[[prohibition]]
id = "p1"
apps = ["chat"]
actions = ["download"]
region = "US"
effective = { earliest = 2021-02-01T00:00:00Z, latest = 2021-02-02T00:00:00Z }
text = "t"

[[prohibition]]
id = "p2"
apps = ["chat"]
actions = ["update"]
region = "US"
effective = { earliest = 2021-02-02T00:00:00Z, latest = 2021-02-01T00:00:00Z, note = "backwards" }
text = "t"

[[prohibition]]
id = "p3"
apps = ["chat"]
actions = ["host"]
region = "US"
effective = { earliest = 2021-02-01T00:00:00Z, lastest = 2021-02-02T00:00:00Z, note = "typo" }
text = "t"

[[non-enforcement]]
prohibitions = ["p1"]
from = { earliest = 2021-03-01T00:00:00Z, latest = 2021-03-05T00:00:00Z, note = "open" }
until = 2021-03-03T00:00:00Z

[[suspension]]
prohibitions = ["p1"]
from = 2021-03-01T00:00:00Z
"#;
    insta::assert_snapshot!(render(&[("order.toml", &order(body))]));
}

/// Jurisdiction groups: none, an empty one, an unknown signal (with a suggestion), a
/// signal in two groups.
#[test]
fn malformed_jurisdiction_groups() {
    let prohibition = |id: &str, groups: &str| {
        format!(
            "[[prohibition]]\nid = \"{id}\"\napps = [\"chat\"]\nactions = [\"host\"]\nregion = \"US\"\njurisdiction = {groups}\neffective = 2021-02-01T00:00:00Z\ntext = \"t\"\n\n"
        )
    };
    let body = prohibition("p1", "[]")
        + &prohibition("p2", r#"[[], ["server_country"]]"#)
        + &prohibition("p3", r#"[["server_contry"]]"#)
        + &prohibition(
            "p4",
            r#"[["server_country"], ["storefront", "server_country"]]"#,
        );
    insta::assert_snapshot!(render(&[("order.toml", &order(&body))]));
}

/// App identifiers that no store issues, ids that differ only in letter case, and
/// malformed publisher accounts.
#[test]
fn malformed_identifiers_and_publisher_accounts() {
    let more = "[[app]]\nid = \"bad\"\nname = \"Bad\"\nowner = \"acme\"\nandroid = [\" com.acme.bad\", \"com.acme.bad.\", \"com..acme\", \"com.acme.\u{200b}bad\", \"com.acme.bäd\", \"\"]\nios = [\"COM.ACME.CHAT\"]\n\n[[entity]]\nid = \"publisher\"\nname = \"Publisher\"\nparent = \"acme\"\npublisher_accounts = [{ store = \"apple\", id = \"SHORT\" }, { store = \"google\", id = \"12ab\" }, { store = \"amazon\", id = \"1\" }]\n";
    insta::assert_snapshot!(render(&[("more.toml", more)]));
}

/// An empty or blank file is refused: a truncated save must not drop instruments.
#[test]
fn an_empty_or_blank_file_is_an_error() {
    let found = diagnostics(&[("empty.toml", ""), ("blank.toml", " \n\t\n")]);
    assert_eq!(found.len(), 2, "{found:#?}");
    for d in &found {
        assert_eq!(d.message, "policy file is empty");
    }
}

/// "Did you mean" compares with every known id; thousands of unknown references must
/// still load (and fail) fast, so only the first ones are searched.
#[test]
fn many_unknown_references_fail_in_linear_time() {
    let mut apps = String::new();
    for i in 0..20_000 {
        apps.push_str(&format!(
            "[[app]]\nid = \"app{i}\"\nname = \"A\"\nowner = \"acme\"\nandroid = [\"com.acme.a{i}\"]\n"
        ));
    }
    let names: Vec<String> = (0..20_000).map(|i| format!("\"missing{i}\"")).collect();
    let body = format!(
        "[[prohibition]]\nid = \"p1\"\napps = [{}]\nactions = [\"download\"]\nregion = \"US\"\neffective = 2021-02-01T00:00:00Z\ntext = \"t\"\n",
        names.join(", ")
    );
    let found = diagnostics(&[("apps.toml", &apps), ("order.toml", &order(&body))]);
    assert_eq!(found.len(), 20_000);
    assert!(found[0].hint.as_deref().unwrap_or("").contains("no app"));
}

#[test]
fn unknown_action_and_kind() {
    let text = INSTRUMENT.replace("identification", "decree")
        + "\n[[prohibition]]\nid = \"p1\"\napps = [\"chat\"]\nactions = [\"updat\", \"download\"]\nregion = \"US\"\neffective = 2021-02-01T00:00:00Z\ntext = \"t\"\n";
    insta::assert_snapshot!(render(&[("order.toml", &text)]));
}

#[test]
fn rules_outside_an_instrument_file_and_ownership_cycles() {
    let more = "[[entity]]\nid = \"a\"\nname = \"A\"\nparent = \"b\"\n\n[[entity]]\nid = \"b\"\nname = \"B\"\nparent = \"a\"\n\n[[prohibition]]\nid = \"p1\"\napps = [\"chat\"]\nactions = [\"download\"]\nregion = \"US\"\neffective = 2021-02-01T00:00:00Z\ntext = \"t\"\n\n[[revocation]]\ninstruments = []\nfrom = 2021-03-01T00:00:00Z\n\n[colour]\nname = \"red\"\n";
    insta::assert_snapshot!(render(&[("more.toml", more)]));
}

/// Guards "all problems at once": one broken entry does not hide the others, and each
/// diagnostic has a place, the offending text and a hint.
#[test]
fn every_problem_is_reported_at_once_with_place_snippet_and_hint() {
    let body = "[[prohibition]]\nid = \"p1\"\napps = [\"chat\"]\nactions = [\"download\"]\nregion = \"US\"\neffective = 2021-02-01\ntext = \"t\"\n\n[[prohibition]]\nid = \"p2\"\napps = [\"chat\"]\nactions = [\"dance\"]\nregion = \"US\"\neffective = 2021-02-01T00:00:00Z\ntext = \"t\"\n\n[[prohibition]]\nid = \"p3\"\nbogus = 1\n";
    let found = diagnostics(&[("order.toml", &order(body)), ("other.toml", "x = [")]);
    assert_eq!(found.len(), 4, "{found:#?}");
    for d in &found {
        let loc = d.location.as_ref().expect("every problem here has a place");
        assert!(loc.line > 0 && loc.column > 0);
        assert!(d.hint.is_some(), "{d}");
    }
    let files: Vec<&str> = found.iter().map(|d| d.file.as_str()).collect();
    assert!(files.contains(&"other.toml"));
    let p1 = found
        .iter()
        .find(|d| d.message.contains("bare date"))
        .unwrap();
    assert_eq!(p1.location.as_ref().unwrap().snippet, "2021-02-01");
    assert_eq!(p1.location.as_ref().unwrap().line, 15);
}

/// A reference to an entry that failed to parse is not reported a second time.
#[test]
fn a_broken_entry_is_reported_once() {
    let body = "[[prohibition]]\nid = \"p1\"\napps = [\"chat\"]\nactions = [\"download\"]\nregion = \"US\"\neffective = 2021-02-01T00:00:00Z\ntext = 5\n\n[[delay]]\nprohibitions = [\"p1\"]\neffective = 2021-03-01T00:00:00Z\n";
    let found = diagnostics(&[("order.toml", &order(body))]);
    assert_eq!(found.len(), 1, "{found:#?}");
}

#[test]
fn missing_include() {
    let dir = crate::support::root().join("tests/fixtures/bad-include");
    let err = gatekeeper::load_dirs(&[dir]).unwrap_err();
    assert_eq!(err.0.len(), 1, "{}", err.render());
    let d = &err.0[0];
    assert!(
        d.file.ends_with("fixtures/bad-include/set.toml"),
        "{}",
        d.file
    );
    assert!(d.message.contains("cannot read"), "{}", d.message);
    assert_eq!(
        d.location.as_ref().unwrap().snippet,
        "\"../no-such-folder\""
    );
}
