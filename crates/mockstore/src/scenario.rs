//! Dated scenarios: set the clock, have actors make requests, compare the answers.
//!
//! ```toml
//! name = "us-2020, 2020-09-19 to 2020-09-21"
//! policies = ["us-2020"]             # folders under policies/, or paths relative to the
//!                                    # scenario file or to the repository's root
//! posture = "conservative"           # optional: or "permissive" (how windows are read)
//! non_enforcement = "honour"         # optional: or "ignore" (non-enforcement orders set aside)
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
//! expect.absent = ["/updates/0/uncertain"]   # pointers that must not be in the answer
//! ```
//!
//! A `publish` step may name the account it publishes from, and a `download`, `cdn`, `host`
//! or `payment` step the account it asks about (`publisher = { store = "google", id = "..." }`);
//! an update check carries the account of the app's latest release.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use policy::{Boundaries, NonEnforcement, Posture, PublisherRecord};

use crate::proxy::{Deployment, Proxy, deploy};
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
    /// JSON pointers that must be absent (`/uncertain`): TOML has no null.
    #[serde(default)]
    pub absent: Vec<String>,
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
    /// The publisher account: of the release (publish), or asked about (download, cdn,
    /// host, payment).
    pub publisher: Option<PublisherRecord>,
    pub expect: Expect,
}

/// A scenario file.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Policy folders: names under `policies/`, or paths relative to the scenario file or
    /// to the repository's root.
    pub policies: Vec<String>,
    /// `conservative` (the default) or `permissive`: how the store's gatekeeper reads the
    /// windows of instants the record leaves open.
    pub posture: Option<String>,
    /// `honour` (the default) or `ignore`: whether non-enforcement orders count as relief.
    pub non_enforcement: Option<String>,
    /// The steps, each with the place it was written (for reports: `file:line`).
    #[serde(default)]
    pub step: Vec<toml::Spanned<Step>>,
    /// The 1-based line of each step's `[[step]]` entry, filled by [`load`].
    #[serde(skip)]
    pub step_lines: Vec<usize>,
}

impl Scenario {
    /// The posture the store's gatekeeper is built with.
    pub fn posture(&self) -> anyhow::Result<Posture> {
        let mut posture = Posture::default();
        if let Some(text) = &self.posture {
            posture.boundaries = Boundaries::parse(text).ok_or_else(|| {
                anyhow::anyhow!("`posture = \"{text}\"`: expected `conservative` or `permissive`")
            })?;
        }
        if let Some(text) = &self.non_enforcement {
            posture.non_enforcement = NonEnforcement::parse(text).ok_or_else(|| {
                anyhow::anyhow!("`non_enforcement = \"{text}\"`: expected `honour` or `ignore`")
            })?;
        }
        Ok(posture)
    }
}

/// How to run scenarios, beyond what their files say.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Policy folders to load instead of the scenario's own.
    pub policies: Vec<PathBuf>,
    /// Overrides the scenario's `posture`.
    pub boundaries: Option<Boundaries>,
    /// Overrides the scenario's `non_enforcement`.
    pub non_enforcement: Option<NonEnforcement>,
    /// Runs the steps through this proxy in front of the store, with the sidecar deciding
    /// (the configurations shipped in `deploy/`, under the parent of the policies' root),
    /// instead of the store's embedded layer.
    pub proxy: Option<Proxy>,
}

/// What a scenario's steps are sent to.
enum Target {
    /// The store, with its embedded layer.
    Store(crate::Running),
    /// A proxy in front of the store, and the sidecar.
    Behind(Box<Deployment>),
}

impl Target {
    async fn start(
        proxy: Option<Proxy>,
        repo: &Path,
        dirs: &[PathBuf],
        config: StoreConfig,
    ) -> anyhow::Result<Target> {
        Ok(match proxy {
            None => Target::Store(crate::start(dirs, config).await?),
            Some(proxy) => Target::Behind(Box::new(deploy(proxy, repo, dirs, config).await?)),
        })
    }

    /// Where clients send their requests.
    fn base(&self) -> &str {
        match self {
            Target::Store(s) => &s.base,
            Target::Behind(d) => &d.proxy.base,
        }
    }

    /// Where the store's admin routes are: behind a proxy, the store itself.
    fn admin_base(&self) -> &str {
        match self {
            Target::Store(s) => &s.base,
            Target::Behind(d) => &d.store.base,
        }
    }

    async fn stop(self) {
        match self {
            Target::Store(s) => s.stop().await,
            Target::Behind(d) => d.stop().await,
        }
    }
}

/// What one step did.
#[derive(Clone, Debug, Serialize)]
pub struct StepResult {
    pub name: String,
    /// The 1-based line of the step in its scenario file.
    pub line: usize,
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
    /// The store's posture: `conservative` or `permissive`.
    pub posture: String,
    /// `honour` or `ignore`.
    pub non_enforcement: String,
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
    let mut scenario: Scenario = toml::from_str(&text)
        .map_err(|e| anyhow::anyhow!("`{}`: {}", path.display(), e.to_string().trim_end()))?;
    scenario.step_lines = scenario
        .step
        .iter()
        .map(|s| {
            let start = s.span().start.min(text.len());
            text.as_bytes()[..start]
                .iter()
                .filter(|b| **b == b'\n')
                .count()
                + 1
        })
        .collect();
    Ok(scenario)
}

/// The policy folders a scenario names. A name is looked up, in order, under
/// `policies_root`, beside the scenario file, under the repository's root (the parent of
/// `policies_root`) and in the working directory; an absolute path is taken as it is.
pub fn policy_dirs(
    scenario: &Scenario,
    scenario_file: &Path,
    policies_root: &Path,
) -> anyhow::Result<Vec<PathBuf>> {
    let beside = scenario_file.parent().unwrap_or(Path::new("."));
    let repo = policies_root.parent().unwrap_or(Path::new("."));
    scenario
        .policies
        .iter()
        .map(|p| {
            let given = PathBuf::from(p);
            let candidates = if given.is_absolute() {
                vec![given]
            } else {
                vec![policies_root.join(p), beside.join(p), repo.join(p), given]
            };
            candidates
                .iter()
                .find(|c| c.is_dir())
                .cloned()
                .ok_or_else(|| {
                    let looked: Vec<String> = candidates
                        .iter()
                        .map(|c| format!("`{}`", c.display()))
                        .collect();
                    anyhow::anyhow!(
                        "policy folder `{p}` not found (looked at {})",
                        looked.join(", ")
                    )
                })
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

fn query(pairs: &[(&str, Option<&str>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.map(|v| format!("{k}={v}")))
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
    anyhow::ensure!(
        step.kind != StepKind::Update || step.publisher.is_none(),
        "an update check carries the publisher account of the app's latest release: give `publisher` on the `publish` step"
    );
    let publisher = [
        (
            "publisher_store",
            step.publisher.as_ref().map(|p| p.store.as_str()),
        ),
        (
            "publisher_id",
            step.publisher.as_ref().map(|p| p.id.as_str()),
        ),
    ];
    let with_publisher = |pairs: &[(&str, Option<&str>)]| {
        let mut all = pairs.to_vec();
        all.extend(publisher);
        query(&all)
    };
    let response = match step.kind {
        StepKind::Publish => {
            let mut body = json!({
                "app": app,
                "version": step.version.clone().unwrap_or_else(|| "1.0.0".to_owned()),
                "signing_cert_sha256": step.signing_cert_sha256,
                "files": step.files,
            });
            if let Some(p) = &step.publisher {
                body["publisher"] = json!(p);
            }
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
            let q = with_publisher(&[
                ("storefront", step.storefront.as_deref()),
                ("device_country", step.device_country.as_deref()),
                ("ip_country", step.ip_country.as_deref()),
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
            let q = with_publisher(&[("client_country", step.client_country.as_deref())]);
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
            let q = with_publisher(&[]);
            client
                .post(format!(
                    "{base}/v1/hosting/{server}/{}/{}{q}",
                    app.platform, app.id
                ))
                .send()
                .await?
        }
        StepKind::Payment => {
            let q = with_publisher(&[("payer_country", step.payer_country.as_deref())]);
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

/// `served` or `delivered`, and why when the answer says (`served (not-enforced)`).
fn allowed(word: &str, v: &Value) -> String {
    match v["because"].as_str() {
        Some(because) => format!("{word} ({because})"),
        None => word.to_owned(),
    }
}

fn outcome(kind: StepKind, status: u16, body: &Value) -> String {
    match (kind, status) {
        (StepKind::Update, 200) => {
            let u = &body["updates"][0];
            match u["available"].as_bool() {
                Some(true) => allowed("delivered", u),
                Some(false) => withheld(u),
                None => "no update".to_owned(),
            }
        }
        (StepKind::Publish, 201) => "published".to_owned(),
        (_, 200) => allowed("served", body),
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
    let mut parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k} {v}")))
        .collect();
    if let Some(p) = &step.publisher {
        parts.push(format!("publisher {}:{}", p.store, p.id));
    }
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
    for pointer in &expect.absent {
        if let Some(got) = body.pointer(pointer) {
            problems.push(format!("`{pointer}`: expected absent, got {got}"));
        }
    }
    (!problems.is_empty()).then(|| problems.join("; "))
}

/// Runs a scenario against a fresh store with its policies (or `override_policies`) and
/// its posture.
pub async fn run(
    path: &Path,
    policies_root: &Path,
    override_policies: &[PathBuf],
) -> anyhow::Result<ScenarioResult> {
    let options = RunOptions {
        policies: override_policies.to_vec(),
        ..RunOptions::default()
    };
    run_with(path, policies_root, &options).await
}

/// Runs a scenario against a fresh store, with what `options` override.
pub async fn run_with(
    path: &Path,
    policies_root: &Path,
    options: &RunOptions,
) -> anyhow::Result<ScenarioResult> {
    let scenario = load(path)?;
    let dirs = if options.policies.is_empty() {
        policy_dirs(&scenario, path, policies_root)
            .with_context(|| format!("`{}`", path.display()))?
    } else {
        options.policies.clone()
    };
    let mut posture = scenario
        .posture()
        .with_context(|| format!("`{}`", path.display()))?;
    if let Some(b) = options.boundaries {
        posture.boundaries = b;
    }
    if let Some(n) = options.non_enforcement {
        posture.non_enforcement = n;
    }
    let config = StoreConfig {
        posture,
        ..StoreConfig::default()
    };
    let token = config.admin_token.clone();
    let repo = policies_root.parent().unwrap_or(Path::new("."));
    let target = Target::start(options.proxy, repo, &dirs, config)
        .await
        .with_context(|| format!("starting the store for `{}`", path.display()))?;
    let client = reqwest::Client::new();
    let mut steps = Vec::new();
    for (step, line) in scenario.step.iter().zip(&scenario.step_lines) {
        let step = step.get_ref();
        let started = std::time::Instant::now();
        let clock = client
            .put(format!("{}/v1/admin/clock", target.admin_base()))
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
        let (status, body, cells) = send(&client, target.base(), step)
            .await
            .with_context(|| format!("step `{}`", step.name))?;
        steps.push(StepResult {
            name: step.name.clone(),
            line: *line,
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
    target.stop().await;
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
        name: match options.proxy {
            Some(proxy) => format!("{} (behind {proxy} and the sidecar)", scenario.name),
            None => scenario.name,
        },
        file: shown(path),
        policies: dirs.iter().map(|d| shown(d)).collect(),
        posture: posture.boundaries.as_str().to_owned(),
        non_enforcement: posture.non_enforcement.as_str().to_owned(),
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
