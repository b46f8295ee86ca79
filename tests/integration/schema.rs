//! The editor schema: the checked-in copy is what the code generates, every shipped
//! policy file passes it, and it refuses unknown fields and wrong types.

use crate::support::root;

const CHECKED_IN: &str = "schema/policy.schema.json";

fn generated() -> String {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = cli::run(
        ["gatekeeper", "schema"],
        &mut std::io::empty(),
        &mut out,
        &mut err,
    );
    assert_eq!(code, 0, "{}", String::from_utf8_lossy(&err));
    String::from_utf8(out).unwrap()
}

#[test]
fn the_checked_in_schema_is_what_the_code_generates() {
    let checked_in = std::fs::read_to_string(root().join(CHECKED_IN)).unwrap_or_default();
    assert!(
        checked_in == generated(),
        "{CHECKED_IN} is out of date: run `cargo run --bin gatekeeper -- schema > {CHECKED_IN}`"
    );
    let parsed: serde_json::Value = serde_json::from_str(&checked_in).unwrap();
    assert_eq!(parsed, policy::schema());
}

/// A TOML document as JSON, the way Taplo hands it to the schema: dates as strings.
fn to_json(value: toml::Value) -> serde_json::Value {
    match value {
        toml::Value::String(s) => s.into(),
        toml::Value::Integer(i) => i.into(),
        toml::Value::Float(f) => f.into(),
        toml::Value::Boolean(b) => b.into(),
        toml::Value::Datetime(d) => d.to_string().into(),
        toml::Value::Array(a) => a.into_iter().map(to_json).collect(),
        toml::Value::Table(t) => t.into_iter().map(|(k, v)| (k, to_json(v))).collect(),
    }
}

struct Validator {
    schemas: boon::Schemas,
    index: boon::SchemaIndex,
}

impl Validator {
    fn new() -> Validator {
        let mut schemas = boon::Schemas::new();
        let mut compiler = boon::Compiler::new();
        compiler
            .add_resource("policy.schema.json", policy::schema())
            .unwrap();
        let index = compiler
            .compile("policy.schema.json", &mut schemas)
            .unwrap();
        Validator { schemas, index }
    }

    /// `Err` with the validator's explanation.
    fn check(&self, toml_text: &str) -> Result<(), String> {
        let table: toml::Table = toml::from_str(toml_text).unwrap();
        let json = to_json(toml::Value::Table(table));
        self.schemas
            .validate(&json, self.index)
            .map_err(|e| format!("{e:#}"))
    }
}

#[test]
fn every_shipped_policy_file_passes_the_schema() {
    let validator = Validator::new();
    let mut checked = 0;
    for dir in [
        "policies",
        "tests/fixtures/good",
        "tests/scenarios/policies",
    ] {
        for file in authoring::fmt::collect(&root().join(dir)).unwrap() {
            let text = std::fs::read_to_string(&file).unwrap();
            if let Err(e) = validator.check(&text) {
                panic!("{}:\n{e}", file.display());
            }
            checked += 1;
        }
    }
    assert!(checked >= 25, "{checked} files");
}

const APP: &str = "[[app]]\nid = \"a\"\nname = \"A\"\nowner = \"o\"\n";

#[test]
fn the_schema_refuses_unknown_fields_and_wrong_types() {
    let validator = Validator::new();
    validator.check(APP).unwrap();
    let cases = [
        // A misspelt field in an [[app]].
        (format!("{APP}andriod = [\"com.example\"]\n"), "andriod"),
        // A key no policy file holds.
        ("suspension = []\n".to_owned(), "suspension"),
        // A string where a list is expected.
        (format!("{APP}ios = \"com.example\"\n"), "/app/0/ios"),
        // An action that does not exist.
        (
            "[[prohibition]]\nid = \"p\"\nactions = [\"downlaod\"]\nregion = \"US\"\neffective = 2020-09-20T00:00:00Z\ntext = \"t\"\n".to_owned(),
            "/prohibition/0/actions/0",
        ),
        // A bare date: no time, no offset.
        (
            "[[revocation]]\ninstruments = [\"i\"]\nfrom = 2021-06-09\n".to_owned(),
            "/revocation/0/from",
        ),
        // A window without its note.
        (
            "[[revocation]]\ninstruments = [\"i\"]\nfrom = { earliest = 2021-06-09T00:00:00Z, latest = 2021-06-10T00:00:00Z }\n".to_owned(),
            "/revocation/0/from",
        ),
    ];
    for (text, place) in cases {
        let error = validator.check(&text).expect_err(&text);
        assert!(
            error.contains(place),
            "`{place}` not in:\n{error}\nfor:\n{text}"
        );
    }
}
