//! The documented Envoy configuration, run: the header rules of
//! `crates/serve/envoy/ext_authz.yaml` (which README.md shows verbatim) are read from the
//! file and applied to a client's request, as Envoy would, before it is sent to a real
//! sidecar on 127.0.0.1.

use reqwest::StatusCode;
use yaml_rust2::{Yaml, YamlLoader};

use crate::serve::{Service, config};
use crate::serve_limits::{STORE_HEADERS, restricted_policy};
use crate::support::root;

const CONFIG: &str = "crates/serve/envoy/ext_authz.yaml";

fn documented() -> (String, Yaml) {
    let text = std::fs::read_to_string(root().join(CONFIG)).unwrap();
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    assert!(
        readme.contains(&format!("```yaml\n{text}```\n")),
        "README.md must show {CONFIG} verbatim in a yaml block"
    );
    let mut docs = YamlLoader::load_from_str(&text).unwrap();
    assert_eq!(docs.len(), 1);
    (text, docs.remove(0))
}

/// How Envoy matches a string (`envoy.type.matcher.v3.StringMatcher`), for the kinds the
/// configuration may use; any other kind fails the test rather than being guessed at.
fn matches(matcher: &Yaml, value: &str) -> bool {
    let ignore_case = matcher["ignore_case"].as_bool().unwrap_or(false);
    let fold = |s: &str| {
        if ignore_case {
            s.to_ascii_lowercase()
        } else {
            s.to_owned()
        }
    };
    let value = fold(value);
    let hash = matcher.as_hash().expect("a string matcher is a map");
    let mut kinds = hash
        .keys()
        .filter_map(Yaml::as_str)
        .filter(|k| *k != "ignore_case");
    let kind = kinds.next().expect("a string matcher names its kind");
    assert!(kinds.next().is_none(), "a string matcher has one kind");
    let pattern = fold(matcher[kind].as_str().unwrap());
    match kind {
        "exact" => value == pattern,
        "prefix" => value.starts_with(&pattern),
        "suffix" => value.ends_with(&pattern),
        "contains" => value.contains(&pattern),
        other => panic!("the test does not model string matcher `{other}`"),
    }
}

/// A request's headers as Envoy holds them: names in lower case, in order, repeats kept.
type Headers = Vec<(String, String)>;

/// Applies one `config.common.mutation_rules.v3.HeaderMutation`.
fn mutate(headers: &mut Headers, mutation: &Yaml) {
    if let Some(name) = mutation["remove"].as_str() {
        headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    } else if !mutation["remove_on_match"].is_badvalue() {
        let matcher = &mutation["remove_on_match"]["key_matcher"];
        headers.retain(|(n, _)| !matches(matcher, n));
    } else if !mutation["append"].is_badvalue() {
        let append = &mutation["append"];
        let key = append["header"]["key"]
            .as_str()
            .unwrap()
            .to_ascii_lowercase();
        let value = append["header"]["value"].as_str().unwrap().to_owned();
        assert!(
            !value.contains('%'),
            "the test does not model Envoy's substitution formatter (`{value}`)"
        );
        let present = headers.iter().any(|(n, _)| *n == key);
        match append["append_action"]
            .as_str()
            .unwrap_or("APPEND_IF_EXISTS_OR_ADD")
        {
            "APPEND_IF_EXISTS_OR_ADD" => headers.push((key, value)),
            "ADD_IF_ABSENT" if !present => headers.push((key, value)),
            "ADD_IF_ABSENT" => {}
            "OVERWRITE_IF_EXISTS_OR_ADD" => {
                headers.retain(|(n, _)| *n != key);
                headers.push((key, value));
            }
            "OVERWRITE_IF_EXISTS" if present => {
                headers.retain(|(n, _)| *n != key);
                headers.push((key, value));
            }
            "OVERWRITE_IF_EXISTS" => {}
            other => panic!("unknown append_action `{other}`"),
        }
    } else {
        panic!("the test does not model this header mutation: {mutation:?}");
    }
}

/// What the configuration declares for a request on its way to the sidecar.
struct Rules {
    /// The header mutations of the filters before ext_authz, in order.
    before_authz: Vec<Yaml>,
    /// Which headers ext_authz sends to the sidecar.
    allowed: Vec<Yaml>,
    path_prefix: String,
}

fn filter_type(filter: &Yaml) -> &str {
    filter["typed_config"]["@type"].as_str().unwrap()
}

fn rules(config: &Yaml) -> Rules {
    let filters = config["http_filters"].as_vec().unwrap();
    let authz = filters
        .iter()
        .position(|f| filter_type(f).ends_with(".ext_authz.v3.ExtAuthz"))
        .expect("an ext_authz filter");
    // The order is the point: the client's headers are gone before anything reads them,
    // and the router (which applies route-level header rules) comes last, after the check.
    assert!(
        filter_type(&filters[0]).ends_with(".header_mutation.v3.HeaderMutation"),
        "the first filter must strip the client's headers"
    );
    assert!(
        filter_type(filters.last().unwrap()).ends_with(".router.v3.Router"),
        "the router comes last"
    );
    let mut before_authz = Vec::new();
    for f in &filters[..authz] {
        assert!(
            filter_type(f).ends_with(".header_mutation.v3.HeaderMutation"),
            "the test models only header_mutation filters before ext_authz, not {}",
            filter_type(f)
        );
        before_authz.extend(
            f["typed_config"]["mutations"]["request_mutations"]
                .as_vec()
                .unwrap()
                .iter()
                .cloned(),
        );
    }
    let authz = &filters[authz]["typed_config"];
    assert_eq!(
        authz["failure_mode_allow"].as_bool(),
        Some(false),
        "the documented default fails closed"
    );
    let allowed = match authz["allowed_headers"]["patterns"].as_vec() {
        Some(p) => p.clone(),
        None => authz["http_service"]["authorization_request"]["allowed_headers"]["patterns"]
            .as_vec()
            .expect("ext_authz names the headers it sends")
            .clone(),
    };
    Rules {
        before_authz,
        allowed,
        path_prefix: authz["http_service"]["path_prefix"]
            .as_str()
            .unwrap()
            .to_owned(),
    }
}

/// Runs a client's request through the configuration: the filters before ext_authz (then
/// the store's own filter, which sets its headers), then ext_authz's choice of headers,
/// and asks the sidecar.
fn through_envoy(
    svc: &Service,
    rules: Option<&Rules>,
    path: &str,
    client: &[(&str, &str)],
    store: &[(&str, &str)],
) -> (StatusCode, serde_json::Value) {
    let mut headers: Headers = client
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), (*v).to_owned()))
        .collect();
    if let Some(rules) = rules {
        for m in &rules.before_authz {
            mutate(&mut headers, m);
        }
    }
    // The store's filter sets its headers (after the client's, were they still there).
    headers.extend(
        store
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned())),
    );
    let prefix = match rules {
        Some(rules) => {
            headers.retain(|(n, _)| rules.allowed.iter().any(|m| matches(m, n)));
            rules.path_prefix.as_str()
        }
        None => "/v1/envoy/authz",
    };
    let mut request = svc.client.get(format!("{}{prefix}{path}", svc.base));
    for (n, v) in &headers {
        request = request.header(n.as_str(), v.as_str());
    }
    let r = request.send().unwrap();
    let status = r.status();
    (status, r.json().unwrap_or(serde_json::Value::Null))
}

/// A client's forged headers: a time before the prohibition, another storefront and
/// server, another app, in any case.
const FORGED: [(&str, &str); 5] = [
    ("x-gatekeeper-at", "2019-01-01T00:00:00Z"),
    ("X-Gatekeeper-Storefront", "CA"),
    ("x-gatekeeper-server-country", "CA"),
    ("x-gatekeeper-app", "com.example.free"),
    ("X-GATEKEEPER-KNOWN-AT", "2019-01-01T00:00:00Z"),
];

/// Before: the README's configuration forwarded every `x-gatekeeper-` header a client
/// sent, and a client's `x-gatekeeper-at: 2019-...` turned a 451 into a 200. Through the
/// documented configuration, none of the client's headers reaches the sidecar: the
/// decision is the store's, at the sidecar's clock, even when the sidecar trusts the time
/// header.
#[test]
fn the_documented_envoy_configuration_strips_a_clients_headers() {
    let (_, config_yaml) = documented();
    let rules = rules(&config_yaml);
    let dir = tempfile::tempdir().unwrap();
    for trust_time_header in [false, true] {
        let svc = Service::start(serve::Config {
            trust_time_header,
            ..config(&restricted_policy(dir.path()))
        });
        let (status, answer) = through_envoy(
            &svc,
            Some(&rules),
            "/apps/com.example.restricted",
            &FORGED,
            &STORE_HEADERS,
        );
        assert_eq!(
            status,
            StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS,
            "trust_time_header = {trust_time_header}: {answer}"
        );
        assert_eq!(answer["reasons"][0]["prohibition"], "restricted-store");
        // The server country is the one the configuration sets, not the client's.
        let (status, answer) = through_envoy(
            &svc,
            Some(&rules),
            "/apps/com.example.restricted",
            &[("x-gatekeeper-server-country", "CA")],
            &STORE_HEADERS[..3],
        );
        assert_eq!(
            status,
            StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS,
            "{answer}"
        );
        assert_eq!(answer["jurisdiction"]["signal"], "server_country");
        assert_eq!(answer["jurisdiction"]["value"], "US");
        svc.shutdown();
    }
    // What the rules prevent: without them, a sidecar that trusts the time header believes
    // the client's.
    let svc = Service::start(serve::Config {
        trust_time_header: true,
        ..config(&restricted_policy(dir.path()))
    });
    let (status, answer) = through_envoy(
        &svc,
        None,
        "/apps/com.example.restricted",
        &FORGED[..1],
        &STORE_HEADERS,
    );
    assert_eq!(status, StatusCode::OK, "{answer}");
    svc.shutdown();
}

/// Envoy drops an idle connection to the sidecar before the sidecar would: otherwise a check
/// could be sent on a connection the sidecar is closing, and fail.
#[test]
fn the_documented_envoy_cluster_closes_idle_connections_first() {
    let (_, config_yaml) = documented();
    let cluster = &config_yaml["clusters"][0];
    let options = &cluster["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"];
    let idle = options["common_http_protocol_options"]["idle_timeout"]
        .as_str()
        .unwrap();
    let seconds: f64 = idle.strip_suffix('s').unwrap().parse().unwrap();
    let sidecar = serve::Config::default().header_read_timeout_ms as f64 / 1000.0;
    assert!(
        seconds < sidecar,
        "Envoy's idle timeout {idle} must be shorter than the sidecar's {sidecar} s"
    );
    let port = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
        ["socket_address"]["port_value"]
        .as_i64()
        .unwrap();
    assert_eq!(
        serve::Config::default().listen,
        format!("127.0.0.1:{port}"),
        "the cluster points at the sidecar's default listener"
    );
}
