//! Each engine loaded in timed phases, and deciding prepared requests.

use std::str::FromStr;
use std::time::Instant as Clock;

use anyhow::{Context as _, anyhow, bail};
use policy::{Policy, Posture, Request, Signal, Source};
use serde_json::json;

use crate::encode::quote;
use crate::requests::{Prepared, signals_json};

/// The engines, in the order of the report.
pub const ENGINES: [&str; 3] = ["gatekeeper", "cedar", "regorus"];

/// Gatekeeper loading the policy's compiled image (`Policy::from_image`) instead of its
/// TOML: measured for its load only (its decisions are Gatekeeper's, and are checked to
/// agree with the others').
pub const IMAGE: &str = "gatekeeper (image)";

/// Where an engine's load time goes, in milliseconds. A phase an engine does not have, or
/// whose API gives no way to time it apart from another, is `None`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Load {
    pub parse_ms: f64,
    pub validate_ms: Option<f64>,
    pub compile_ms: Option<f64>,
    /// Validation and compilation in one call, where the API does not part them.
    pub validate_compile_ms: Option<f64>,
    /// Reading a compiled image (decoding and checking it), in place of the other phases.
    pub image_ms: Option<f64>,
}

impl Load {
    pub fn total_ms(&self) -> f64 {
        self.parse_ms
            + self.validate_ms.unwrap_or(0.0)
            + self.compile_ms.unwrap_or(0.0)
            + self.validate_compile_ms.unwrap_or(0.0)
            + self.image_ms.unwrap_or(0.0)
    }
}

fn ms_since(t: Clock) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// A decision engine on prepared inputs: `true` allows.
pub trait Engine {
    type Input;
    /// Turns a request into what the engine takes (not timed).
    fn prepare(&self, r: &Prepared) -> anyhow::Result<Self::Input>;
    fn allows(&mut self, input: &Self::Input) -> anyhow::Result<bool>;
}

/// What each engine is loaded from: its own text, made from the policy model beforehand.
pub struct Texts {
    pub sources: Vec<Source>,
    /// The compiled image of the policy (`Policy::to_image`).
    pub image: Vec<u8>,
    pub cedar_policies: String,
    pub cedar_entities: String,
    pub cedar_schema: String,
    pub rego: String,
    pub rego_data: String,
}

pub struct Ours(Policy);

impl Ours {
    /// Parse (`policy::parse_file`, each file), then validate and compile
    /// (`Policy::from_parsed`): the policy crate's public API does both in one call, so
    /// they are timed together.
    pub fn load(sources: Vec<Source>) -> anyhow::Result<(Ours, Load)> {
        let t = Clock::now();
        let parsed: Vec<policy::ParsedFile> = sources.into_iter().map(policy::parse_file).collect();
        let parse_ms = ms_since(t);
        let t = Clock::now();
        let policy = Policy::from_parsed(parsed).map_err(|d| anyhow!("{}", d.render()))?;
        let validate_compile_ms = ms_since(t);
        Ok((
            Ours(policy),
            Load {
                parse_ms,
                validate_compile_ms: Some(validate_compile_ms),
                ..Load::default()
            },
        ))
    }

    /// The compiled image (`Policy::to_image`'s bytes, read beforehand): `Policy::from_image`
    /// decodes it and checks every index and range in it, in one call; there is no parse,
    /// validation or compile.
    pub fn from_image(image: &[u8]) -> anyhow::Result<(Ours, Load)> {
        let t = Clock::now();
        let policy = Policy::from_image(image).map_err(|e| anyhow!("{e}"))?;
        let image_ms = ms_since(t);
        Ok((
            Ours(policy),
            Load {
                image_ms: Some(image_ms),
                ..Load::default()
            },
        ))
    }
}

impl Engine for Ours {
    type Input = Request;
    fn prepare(&self, r: &Prepared) -> anyhow::Result<Request> {
        Ok(r.ours.clone())
    }
    #[inline]
    fn allows(&mut self, r: &Request) -> anyhow::Result<bool> {
        Ok(!self.0.decide_parts(r, Posture::default()).is_deny())
    }
}

pub struct Cedar {
    policies: cedar_policy::PolicySet,
    entities: cedar_policy::Entities,
    authorizer: cedar_policy::Authorizer,
}

impl Cedar {
    /// Parse (the policies, and the entities with their hierarchy, whose transitive closure
    /// `Entities::from_json_str` computes as it parses), then validate the policies against
    /// `encodings/gatekeeper.cedarschema` (strict mode). Cedar evaluates the parsed policies
    /// as they are: it has no compile step.
    pub fn load(text: &str, entities: &str, schema: &str) -> anyhow::Result<(Cedar, Load)> {
        let t = Clock::now();
        let policies =
            cedar_policy::PolicySet::from_str(text).map_err(|e| anyhow!("cedar policies: {e}"))?;
        let entities = cedar_policy::Entities::from_json_str(entities, None)
            .map_err(|e| anyhow!("cedar entities: {e}"))?;
        let parse_ms = ms_since(t);
        let t = Clock::now();
        let (schema, _warnings) = cedar_policy::Schema::from_cedarschema_str(schema)
            .map_err(|e| anyhow!("cedar schema: {e}"))?;
        let validated = cedar_policy::Validator::new(schema)
            .validate(&policies, cedar_policy::ValidationMode::Strict);
        if !validated.validation_passed() {
            let errors: Vec<String> = validated
                .validation_errors()
                .take(5)
                .map(|e| e.to_string())
                .collect();
            bail!("cedar policies do not validate: {}", errors.join("; "));
        }
        let validate_ms = ms_since(t);
        Ok((
            Cedar {
                policies,
                entities,
                authorizer: cedar_policy::Authorizer::new(),
            },
            Load {
                parse_ms,
                validate_ms: Some(validate_ms),
                ..Load::default()
            },
        ))
    }
}

fn uid(kind: &str, id: &str) -> anyhow::Result<cedar_policy::EntityUid> {
    cedar_policy::EntityUid::from_str(&format!("Gatekeeper::{kind}::{}", quote(id)))
        .map_err(|e| anyhow!("{e}"))
}

impl Engine for Cedar {
    type Input = cedar_policy::Request;
    fn prepare(&self, r: &Prepared) -> anyhow::Result<cedar_policy::Request> {
        use cedar_policy::RestrictedExpression as E;
        let mut pairs = vec![
            ("at".to_owned(), E::new_long(r.at)),
            ("known".to_owned(), E::new_long(r.known)),
            (
                "countries".to_owned(),
                E::new_set(r.countries.iter().map(|c| E::new_string(c.clone()))),
            ),
        ];
        for signal in Signal::ALL {
            let carried = r.signals.iter().filter(|(s, _)| *s == signal);
            pairs.push((
                signal.as_str().to_owned(),
                E::new_set(carried.map(|(_, c)| E::new_string(c.clone()))),
            ));
        }
        let context = cedar_policy::Context::from_pairs(pairs).map_err(|e| anyhow!("{e}"))?;
        cedar_policy::Request::new(
            uid("Store", "store")?,
            uid("Action", r.action)?,
            uid("App", &r.app)?,
            context,
            None,
        )
        .map_err(|e| anyhow!("{e}"))
    }
    fn allows(&mut self, r: &cedar_policy::Request) -> anyhow::Result<bool> {
        let response = self
            .authorizer
            .is_authorized(r, &self.policies, &self.entities);
        Ok(response.decision() == cedar_policy::Decision::Allow)
    }
}

pub struct Rego(regorus::Engine);

/// The rule every decision evaluates.
const RULE: &str = "data.gatekeeper.allow";

impl Rego {
    /// Parse (the Rego policy, and the data document, then merged into the engine's data),
    /// then compile: regorus analyses and schedules the policy's statements and hoists its
    /// loops on the first evaluation, or when asked to compile; validation is part of that
    /// analysis and is not timed apart.
    pub fn load(rego: &str, data: &str) -> anyhow::Result<(Rego, Load)> {
        let t = Clock::now();
        let mut engine = regorus::Engine::new();
        engine
            .add_policy("gatekeeper.rego".to_owned(), rego.to_owned())
            .map_err(|e| anyhow!("{e}"))?;
        engine
            .add_data(regorus::Value::from_json_str(data).map_err(|e| anyhow!("{e}"))?)
            .map_err(|e| anyhow!("{e}"))?;
        let parse_ms = ms_since(t);
        let t = Clock::now();
        let compiled = engine
            .compile_with_entrypoint(&RULE.into())
            .map_err(|e| anyhow!("{e}"))
            .context("compiling gatekeeper.rego")?;
        drop(compiled);
        let compile_ms = ms_since(t);
        Ok((
            Rego(engine),
            Load {
                parse_ms,
                compile_ms: Some(compile_ms),
                ..Load::default()
            },
        ))
    }
}

impl Engine for Rego {
    type Input = regorus::Value;
    fn prepare(&self, r: &Prepared) -> anyhow::Result<regorus::Value> {
        let input = json!({ "app": r.app, "action": r.action, "at": r.at, "known": r.known, "countries": r.countries, "signals": signals_json(r) });
        regorus::Value::from_json_str(&input.to_string()).map_err(|e| anyhow!("{e}"))
    }
    fn allows(&mut self, input: &regorus::Value) -> anyhow::Result<bool> {
        self.0.set_input(input.clone());
        let answer = self
            .0
            .eval_rule(RULE.to_owned())
            .map_err(|e| anyhow!("{e}"))?;
        Ok(answer == regorus::Value::from(true))
    }
}
