//! Dated scenarios: set the clock, have actors make requests, compare the answers.
//!
//! ```toml
//! name = "us-2020, 2020-09-19 to 2020-09-21"
//! policies = ["us-2020"]             # folders under policies/ (or paths)
//!
//! [[step]]
//! name = "WeChat update withheld in Puerto Rico"
//! at = "2020-09-20T12:00:00Z"
//! do = "update"                      # publish, download, update, cdn, host, payment
//! app = "android:com.tencent.mm"
//! storefront = "PRI"
//! installed = "8.0.0"
//! expect.status = 200
//! expect.json = { "/updates/0/available" = false, "/updates/0/reasons/0/prohibition" = "wechat-app-store" }
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::store::{AppJson, ReleaseFile, StoreConfig};

/// What a step does.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StepKind {
    /// A publisher submits a release.
    Publish,
    /// A device downloads an app.
    Download,
    /// A device asks for updates of an installed app.
    Update,
    /// A CDN edge serves an artifact.
    Cdn,
    /// Backend hosting of the app.
    Host,
    /// A payment through the app.
    Payment,
}

impl StepKind {
    /// The policy action the step exercises.
    pub fn action(self) -> &'static str {
        match self {
            StepKind::Publish => "publish",
            StepKind::Download => "download",
            StepKind::Update => "update",
            StepKind::Cdn => "cdn",
            StepKind::Host => "host",
            StepKind::Payment => "payment",
        }
    }
}

/// What a step must answer.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    pub status: u16,
    /// JSON pointer (`/updates/0/available`) to the value it must have.
    #[serde(default)]
    pub json: BTreeMap<String, toml::Value>,
}

/// One step of a scenario.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub name: String,
    /// The store's clock is set to this instant first.
    pub at: String,
    #[serde(rename = "do")]
    pub kind: StepKind,
    /// `platform:id`, e.g. `android:com.tencent.mm`.
    pub app: String,
    pub storefront: Option<String>,
    pub device_country: Option<String>,
    pub ip_country: Option<String>,
    pub server_country: Option<String>,
    pub payer_country: Option<String>,
    pub client_country: Option<String>,
    /// The version published, or served by the CDN.
    pub version: Option<String>,
    /// The version a device has installed (update).
    pub installed: Option<String>,
    #[serde(default)]
    pub files: Vec<ReleaseFile>,
    pub signing_cert_sha256: Option<String>,
    pub expect: Expect,
}

/// A scenario file.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Policy folders: names under `policies/`, or paths.
    pub policies: Vec<String>,
    #[serde(default)]
    pub step: Vec<Step>,
}

/// What one step did.
#[derive(Clone, Debug, Serialize)]
pub struct StepResult {
    pub name: String,
    pub at: String,
    pub app: String,
    pub action: String,
    /// Where: `storefront US`, `server DE`, ...
    pub place: String,
    pub status: u16,
    /// A short answer for the report table: `served`, `451 wechat-app-store`, `withheld`, ...
    pub outcome: String,
    /// Extra table cells (publish: one per storefront).
    pub cells: Vec<(String, String)>,
    /// `None` when the step answered as expected.
    pub mismatch: Option<String>,
    pub seconds: f64,
}

/// What a scenario did.
#[derive(Clone, Debug, Serialize)]
pub struct ScenarioResult {
    pub name: String,
    pub file: String,
    pub policies: Vec<String>,
    pub steps: Vec<StepResult>,
}

impl ScenarioResult {
    /// Steps that did not answer as expected.
    pub fn failures(&self) -> usize {
        self.steps.iter().filter(|s| s.mismatch.is_some()).count()
    }
}

/// Reads a scenario file.
pub fn load(path: &Path) -> anyhow::Result<Scenario> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading `{}`", path.display()))?;
    toml::from_str(&text)
        .map_err(|e| anyhow::anyhow!("`{}`: {}", path.display(), e.to_string().trim_end()))
}

/// The policy folders a scenario names, resolved against `policies_root`.
pub fn policy_dirs(scenario: &Scenario, policies_root: &Path) -> Vec<PathBuf> {
    scenario
        .policies
        .iter()
        .map(|p| {
            let direct = PathBuf::from(p);
            if direct.is_dir() {
                direct
            } else {
                policies_root.join(p)
            }
        })
        .collect()
}

fn split_app(app: &str) -> anyhow::Result<AppJson> {
    let (platform, id) = app
        .split_once(':')
        .ok_or_else(|| anyhow::anyhow!("app `{app}` must be written `platform:id`"))?;
    Ok(AppJson {
        platform: platform.to_owned(),
        id: id.to_owned(),
    })
}

fn query(pairs: &[(&str, &Option<String>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}")))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

/// Runs one step against a running store; the status and the JSON answer.
async fn send(
    client: &reqwest::Client,
    base: &str,
    step: &Step,
) -> anyhow::Result<(u16, Value, Vec<(String, String)>)> {
    let app = split_app(&step.app)?;
    let response = match step.kind {
        StepKind::Publish => {
            let body = json!({
                "app": app,
                "version": step.version.clone().unwrap_or_else(|| "1.0.0".to_owned()),
                "signing_cert_sha256": step.signing_cert_sha256,
                "files": step.files,
            });
            client
                .post(format!("{base}/v1/publisher/releases"))
                .json(&body)
                .send()
                .await?
        }
        StepKind::Update => {
            let body = json!({
                "storefront": step.storefront.clone().unwrap_or_default(),
                "device_country": step.device_country,
                "ip_country": step.ip_country,
                "installed": [{ "app": app, "version": step.installed.clone().unwrap_or_else(|| "0".to_owned()) }],
            });
            client
                .post(format!("{base}/v1/devices/updates"))
                .json(&body)
                .send()
                .await?
        }
        StepKind::Download => {
            let q = query(&[
                ("storefront", &step.storefront),
                ("device_country", &step.device_country),
                ("ip_country", &step.ip_country),
            ]);
            client
                .get(format!(
                    "{base}/v1/apps/{}/{}/download{q}",
                    app.platform, app.id
                ))
                .send()
                .await?
        }
        StepKind::Cdn => {
            let server = step.server_country.clone().unwrap_or_default();
            let version = step.version.clone().unwrap_or_else(|| "1.0.0".to_owned());
            let q = query(&[("client_country", &step.client_country)]);
            client
                .get(format!(
                    "{base}/v1/cdn/{server}/{}/{}/{version}{q}",
                    app.platform, app.id
                ))
                .send()
                .await?
        }
        StepKind::Host => {
            let server = step.server_country.clone().unwrap_or_default();
            client
                .post(format!(
                    "{base}/v1/hosting/{server}/{}/{}",
                    app.platform, app.id
                ))
                .send()
                .await?
        }
        StepKind::Payment => {
            let q = query(&[("payer_country", &step.payer_country)]);
            client
                .post(format!("{base}/v1/payments/{}/{}{q}", app.platform, app.id))
                .send()
                .await?
        }
    };
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    let mut cells = Vec::new();
    if step.kind == StepKind::Publish
        && let Some(avail) = body["availability"].as_object()
    {
        for (storefront, a) in avail {
            let cell = if a["available"] == json!(true) {
                "available".to_owned()
            } else {
                withheld(a)
            };
            cells.push((format!("storefront {storefront}"), cell));
        }
    }
    Ok((status, body, cells))
}

fn reasons(v: &Value) -> String {
    v["reasons"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(|x| x["prohibition"].as_str())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

fn withheld(v: &Value) -> String {
    let r = reasons(v);
    if r.is_empty() {
        "withheld".to_owned()
    } else {
        format!("withheld ({r})")
    }
}

fn outcome(kind: StepKind, status: u16, body: &Value) -> String {
    match (kind, status) {
        (StepKind::Update, 200) => {
            let u = &body["updates"][0];
            match u["available"].as_bool() {
                Some(true) => "delivered".to_owned(),
                Some(false) => withheld(u),
                None => "no update".to_owned(),
            }
        }
        (StepKind::Publish, 201) => "published".to_owned(),
        (_, 200) => "served".to_owned(),
        (_, 451) => format!("451 {}", reasons(body)),
        (_, s) => format!("{s}"),
    }
}

fn place(step: &Step) -> String {
    let pairs = [
        ("storefront", &step.storefront),
        ("device", &step.device_country),
        ("ip", &step.ip_country),
        ("server", &step.server_country),
        ("payer", &step.payer_country),
        ("client", &step.client_country),
    ];
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k} {v}")))
        .collect();
    if parts.is_empty() {
        "every storefront".to_owned()
    } else {
        parts.join(", ")
    }
}

/// Compares an answer with a step's expectation; what differs, if anything.
fn compare(expect: &Expect, status: u16, body: &Value) -> Option<String> {
    let mut problems = Vec::new();
    if status != expect.status {
        problems.push(format!("status: expected {}, got {status}", expect.status));
    }
    for (pointer, want) in &expect.json {
        let want = serde_json::to_value(want).unwrap_or(Value::Null);
        let got = body.pointer(pointer).cloned().unwrap_or(Value::Null);
        if got != want {
            problems.push(format!("`{pointer}`: expected {want}, got {got}"));
        }
    }
    (!problems.is_empty()).then(|| problems.join("; "))
}

/// Runs a scenario against a fresh store with its policies (or `override_policies`).
pub async fn run(
    path: &Path,
    policies_root: &Path,
    override_policies: &[PathBuf],
) -> anyhow::Result<ScenarioResult> {
    let scenario = load(path)?;
    let dirs = if override_policies.is_empty() {
        policy_dirs(&scenario, policies_root)
    } else {
        override_policies.to_vec()
    };
    let running = crate::start(&dirs, StoreConfig::default())
        .await
        .with_context(|| format!("starting the store for `{}`", path.display()))?;
    let client = reqwest::Client::new();
    let token = StoreConfig::default().admin_token;
    let mut steps = Vec::new();
    for step in &scenario.step {
        let started = std::time::Instant::now();
        let clock = client
            .put(format!("{}/v1/admin/clock", running.base))
            .bearer_auth(&token)
            .json(&json!({ "at": step.at }))
            .send()
            .await?;
        anyhow::ensure!(
            clock.status().is_success(),
            "step `{}`: setting the clock to `{}` failed: {}",
            step.name,
            step.at,
            clock.status()
        );
        let (status, body, cells) = send(&client, &running.base, step)
            .await
            .with_context(|| format!("step `{}`", step.name))?;
        steps.push(StepResult {
            name: step.name.clone(),
            at: step.at.clone(),
            app: step.app.clone(),
            action: step.kind.action().to_owned(),
            place: place(step),
            status,
            outcome: outcome(step.kind, status, &body),
            cells,
            mismatch: compare(&step.expect, status, &body)
                .map(|m| format!("{m}\n    answer: {body}")),
            seconds: started.elapsed().as_secs_f64(),
        });
    }
    running.stop().await;
    // Paths as people read them: relative to the working directory when below it.
    let shown = |p: &Path| {
        let p = std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        std::env::current_dir()
            .ok()
            .and_then(|cwd| p.strip_prefix(cwd).ok().map(Path::to_path_buf))
            .unwrap_or(p)
            .display()
            .to_string()
    };
    Ok(ScenarioResult {
        name: scenario.name,
        file: shown(path),
        policies: dirs.iter().map(|d| shown(d)).collect(),
        steps,
    })
}

/// The shipped scenario files in a folder, sorted.
pub fn shipped(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("listing `{}`", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    anyhow::ensure!(!files.is_empty(), "no scenario under `{}`", dir.display());
    Ok(files)
}
