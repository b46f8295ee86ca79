//! A query session: DataFusion on this machine, or a Ballista cluster (in this process,
//! or remote), with the decision functions and the input tables registered.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ballista::prelude::{SessionConfigExt as _, SessionContextExt as _};
use datafusion::catalog::TableProvider as _;
use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::MemTable;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::execution::FunctionRegistry as _;
use datafusion::execution::SessionStateBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use policy::Posture;

use crate::cluster::{LogicalCodec, PhysicalCodec, PolicyRegistry};
use crate::schema::{self, CODE_SHA256, TEXT_COLUMNS};
use crate::tables;
use crate::udf::{Decide, DecisionOnly, LoadedRevision, NamedPolicy};

/// Where queries run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Engine {
    /// DataFusion in this process, on every core.
    Local,
    /// A Ballista scheduler and executor started in this process.
    Standalone,
    /// A Ballista cluster: its scheduler's `df://host:port`.
    Remote(String),
}

/// The inputs of a replay or a query, by kind.
#[derive(Clone, Debug, Default)]
pub struct Inputs {
    /// Parquet request logs (files or folders of files).
    pub parquet: Vec<PathBuf>,
    /// JSON Lines request logs, the `gatekeeper check` format.
    pub jsonl: Vec<PathBuf>,
    /// Audit trail files or folders (verified before they are read).
    pub trail: Vec<PathBuf>,
    /// Signed checkpoints kept outside the trail, and the key of the trail's own: what the
    /// trail is verified against (see `gatekeeper::audit::verify_with`).
    pub trail_checkpoints: Vec<gatekeeper::audit::Checkpoint>,
    pub trail_key: Option<gatekeeper::keys::VerifierKey>,
}

impl Inputs {
    /// Sorts paths into kinds by name: `.parquet` files and folders are Parquet,
    /// `.jsonl`, `.ndjson` and `.json` files are JSON Lines.
    pub fn add_by_name(&mut self, path: PathBuf) -> Result<()> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or_default()
            .to_ascii_lowercase();
        match ext.as_str() {
            "parquet" => self.parquet.push(path),
            "jsonl" | "ndjson" | "json" => self.jsonl.push(path),
            _ if path.is_dir() => self.parquet.push(path),
            _ => {
                return Err(DataFusionError::Plan(format!(
                    "`{}`: not a request log by its name (.parquet, or .jsonl, .ndjson, .json \
                     for JSON Lines; an audit trail goes after --trail)",
                    path.display()
                )));
            }
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.parquet.is_empty() && self.jsonl.is_empty() && self.trail.is_empty()
    }
}

/// The kind of an input file: a part of a replay never mixes two.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum InputKind {
    Parquet,
    JsonLines,
    Trail,
}

/// A session with decision functions registered.
pub struct Session {
    pub ctx: SessionContext,
    pub engine: Engine,
    registry: Arc<PolicyRegistry>,
    functions: Vec<Arc<NamedPolicy>>,
    /// What reading the audit trail verified, when a trail is an input.
    pub trail: Option<gatekeeper::audit::VerifyReport>,
    /// The Parquet inputs as given.
    parquet: Vec<PathBuf>,
    /// The parts of the `requests` view, one per input file (the trail: one), with their
    /// kind: a replay reads them a few at a time, so that its memory does not grow with the
    /// number of files.
    units: Vec<(InputKind, String)>,
}

impl Session {
    /// A session on `engine`, `partitions` wide (0: the machine's cores).
    pub async fn new(engine: Engine, partitions: usize) -> Result<Session> {
        let registry = Arc::new(PolicyRegistry::default());
        let mut config = SessionConfig::new();
        if partitions > 0 {
            config = config.with_target_partitions(partitions);
        }
        let ctx = match &engine {
            Engine::Local => SessionContext::new_with_state(
                SessionStateBuilder::new()
                    .with_config(config)
                    .with_default_features()
                    .with_optimizer_rule(Arc::new(DecisionOnly))
                    .build(),
            ),
            Engine::Standalone | Engine::Remote(_) => {
                let mut config = SessionConfig::new_with_ballista()
                    .with_ballista_logical_extension_codec(Arc::new(LogicalCodec::new(
                        registry.clone(),
                    )))
                    .with_ballista_physical_extension_codec(Arc::new(PhysicalCodec::new(
                        registry.clone(),
                    )));
                if partitions > 0 {
                    config = config
                        .with_target_partitions(partitions)
                        .with_ballista_standalone_parallelism(partitions);
                }
                let state = SessionStateBuilder::new()
                    .with_config(config)
                    .with_default_features()
                    .build();
                match &engine {
                    Engine::Remote(url) => SessionContext::remote_with_state(url, state).await?,
                    _ => SessionContext::standalone_with_state(state).await?,
                }
            }
        };
        Ok(Session {
            ctx,
            engine,
            registry,
            functions: Vec::new(),
            trail: None,
            parquet: Vec::new(),
            units: Vec::new(),
        })
    }

    /// Registers a decision function `name` deciding under `loaded` with `posture`.
    pub fn add_policy(
        &mut self,
        name: &str,
        loaded: Arc<LoadedRevision>,
        posture: Posture,
    ) -> Result<Arc<NamedPolicy>> {
        check_name(name)?;
        if self.functions.iter().all(|f| f.name != name)
            && (self.ctx.udf(name).is_ok()
                || self.ctx.udaf(name).is_ok()
                || self.ctx.udwf(name).is_ok())
        {
            return Err(DataFusionError::Plan(format!(
                "`{name}` is the name of a SQL function; give the decision function another"
            )));
        }
        if self.functions.iter().any(|f| f.name == name) {
            return Err(DataFusionError::Plan(format!(
                "two decision functions are named `{name}`"
            )));
        }
        let loaded = self.registry.insert(loaded);
        let named = Arc::new(NamedPolicy {
            name: name.to_owned(),
            loaded,
            posture,
        });
        self.ctx.register_udf(Decide::udf(named.clone()));
        self.functions.push(named.clone());
        Ok(named)
    }

    /// The decision functions registered.
    pub fn functions(&self) -> &[Arc<NamedPolicy>] {
        &self.functions
    }

    /// Registers the inputs as tables: `requests_parquet`, `requests_jsonl`,
    /// `requests_trail` for the kinds given, and `requests`, every request of them with
    /// the same columns (see [`TRAIL_COLUMNS`]).
    pub async fn add_inputs(&mut self, inputs: &Inputs) -> Result<()> {
        if inputs.is_empty() {
            return Err(DataFusionError::Plan("no input was given".to_owned()));
        }
        let local_only = |kind: &str| -> Result<()> {
            if self.engine != Engine::Local {
                return Err(DataFusionError::NotImplemented(format!(
                    "{kind} inputs are read by this process, not by a Ballista cluster's \
                     executors: give the cluster Parquet (`gatekeeper audit export --parquet` \
                     writes a trail as Parquet)"
                )));
            }
            Ok(())
        };
        if !inputs.parquet.is_empty() {
            // Every file by name (a folder's, walked in order): a path that does not exist
            // or a folder without Parquet files is an error, not an empty input.
            let files = parquet_files(&inputs.parquet)?;
            let state = self.ctx.state();
            let listing = |paths: &[PathBuf]| -> Result<ListingTableConfig> {
                let urls = paths
                    .iter()
                    .map(|p| {
                        let text = std::path::absolute(p)
                            .unwrap_or_else(|_| p.clone())
                            .display()
                            .to_string();
                        ListingTableUrl::parse(text)
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok(
                    ListingTableConfig::new_with_multi_paths(urls).with_listing_options(
                        ListingOptions::new(Arc::new(ParquetFormat::default()))
                            .with_file_extension(".parquet"),
                    ),
                )
            };
            // Each on its own, so that every row of the `requests` view knows its file (and
            // a file may lack optional columns), then all of them as they are.
            for (k, file) in files.iter().enumerate() {
                let config = listing(std::slice::from_ref(file))?
                    .infer_schema(&state)
                    .await
                    .map_err(|e| {
                        DataFusionError::Plan(format!(
                            "`{}` is not a Parquet file that can be read: {}",
                            file.display(),
                            e.find_root()
                        ))
                    })?;
                let table = ListingTable::try_new(config)?;
                let schema = table.schema();
                let name = format!("requests_parquet_{k}");
                self.ctx.register_table(name.as_str(), Arc::new(table))?;
                self.units
                    .push((InputKind::Parquet, parquet_part(&name, file, &schema)?));
            }
            let all = listing(&files)?.infer_schema(&state).await?;
            self.ctx
                .register_table("requests_parquet", Arc::new(ListingTable::try_new(all)?))?;
            self.parquet = files;
        }
        if !inputs.jsonl.is_empty() {
            local_only("JSON Lines")?;
            self.ctx.register_table(
                "requests_jsonl",
                Arc::new(tables::jsonl_table(&inputs.jsonl)?),
            )?;
            for (k, file) in inputs.jsonl.iter().enumerate() {
                let name = format!("requests_jsonl_{k}");
                self.ctx.register_table(
                    name.as_str(),
                    Arc::new(tables::jsonl_table(std::slice::from_ref(file))?),
                )?;
                self.units
                    .push((InputKind::JsonLines, view_part(&name, true, false)));
            }
        }
        if !inputs.trail.is_empty() {
            local_only("Audit trail")?;
            if !self.units.is_empty() {
                return Err(DataFusionError::Plan(
                    "an audit trail is replayed on its own, not with request logs".to_owned(),
                ));
            }
            let (report, batches) = tables::read_trail(
                &inputs.trail,
                &inputs.trail_checkpoints,
                inputs.trail_key.as_ref(),
            )?;
            let table = MemTable::try_new(tables::trail_schema(), vec![batches])?;
            self.ctx.register_table("requests_trail", Arc::new(table))?;
            self.trail = Some(report);
            self.units
                .push((InputKind::Trail, view_part("requests_trail", false, true)));
        }
        let view = self
            .units
            .iter()
            .map(|(_, part)| part.as_str())
            .collect::<Vec<_>>()
            .join("\nUNION ALL\n");
        self.ctx
            .sql(&format!("CREATE VIEW requests AS {view}"))
            .await?;
        Ok(())
    }

    /// The `requests` view in parts of at most `per` files of one kind (a trail: the
    /// whole trail), in order: each a query with the view's columns. (A part mixing Parquet
    /// and JSON Lines would union a literal's text with a column's, which DataFusion 55
    /// plans with two string types when the changed rows are selected from it.)
    pub fn requests_in_parts(&self, per: usize) -> Vec<String> {
        self.units
            .chunk_by(|a, b| a.0 == b.0)
            .flat_map(|kind| kind.chunks(per.max(1)))
            .map(|c| {
                c.iter()
                    .map(|(_, part)| part.as_str())
                    .collect::<Vec<_>>()
                    .join("\nUNION ALL\n")
            })
            .collect()
    }

    /// How many partitions a query is planned over.
    pub fn partitions(&self) -> usize {
        self.ctx.state().config().target_partitions()
    }

    /// Every Parquet file of the inputs, in order.
    pub fn parquet_files(&self) -> &[PathBuf] {
        &self.parquet
    }

    /// The call of a decision function on the `requests` columns.
    pub fn call(name: &str) -> String {
        let args: Vec<&str> = schema::argument_names().collect();
        format!("{name}({})", args.join(", "))
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("ctx", &self.ctx.session_id())
            .field("engine", &self.engine)
            .field("functions", &self.functions)
            .finish_non_exhaustive()
    }
}

/// Function names are SQL identifiers of lower-case letters, digits and `_`.
fn check_name(name: &str) -> Result<()> {
    let ok = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !ok {
        return Err(DataFusionError::Plan(format!(
            "`{}` is not a function name: lower-case letters, digits and `_`, not starting \
             with a digit",
            name.escape_debug()
        )));
    }
    Ok(())
}

/// The columns the `requests` view has after the request's own when its input is an
/// audit trail: what was served (`served`, `served_prohibitions`, `served_because`,
/// `served_by`), under which revision (`rev`), the record's `n`, `t` and decision `id`,
/// and `lost` for the record of a gap. Every view also has `file` and `line` (for JSON
/// Lines; null for Parquet) and `invalid` (why a line is not a request).
pub const TRAIL_COLUMNS: [&str; 9] = [
    "served",
    "served_prohibitions",
    "served_because",
    "served_by",
    "rev",
    "n",
    "t",
    "id",
    "lost",
];

/// The files of Parquet inputs: a file as given, a folder's `*.parquet` files below it
/// (folders walked in name order, as Hive-style `key=value` folders are); a path that does
/// not exist, or a folder without any, is an error naming it.
fn parquet_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    fn walk(dir: &Path, into: &mut Vec<PathBuf>) -> Result<()> {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| DataFusionError::Plan(format!("reading `{}`: {e}", dir.display())))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for e in entries {
            if e.is_dir() {
                walk(&e, into)?;
            } else if e.extension().is_some_and(|x| x == "parquet") {
                into.push(e);
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let before = files.len();
            walk(p, &mut files)?;
            if files.len() == before {
                return Err(DataFusionError::Plan(format!(
                    "`{}`: no `*.parquet` file in this folder",
                    p.display()
                )));
            }
        } else if p.is_file() {
            files.push(p.clone());
        } else {
            return Err(DataFusionError::Plan(format!(
                "`{}`: no such file or folder",
                p.display()
            )));
        }
    }
    Ok(files)
}

/// A text literal of SQL.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// One Parquet file's rows in the `requests` view: its name in `file`, no line, its
/// request columns (a missing optional one is null; a missing `action` or `at` is an
/// error naming the file).
fn parquet_part(
    table: &str,
    file: &Path,
    schema: &datafusion::arrow::datatypes::Schema,
) -> Result<String> {
    let has = |c: &str| schema.field_with_name(c).is_ok();
    for required in ["action", "at"] {
        if !has(required) {
            return Err(DataFusionError::Plan(format!(
                "`{}` has no column `{required}`: a request log needs `action` and `at` (see \
                 `replay::schema`)",
                file.display()
            )));
        }
    }
    // An instant is text (RFC 3339) or a timestamp with its time zone, which reads as
    // RFC 3339; one without a zone does not say which instant it is.
    for instant in ["at", "known_at"] {
        if let Ok(f) = schema.field_with_name(instant)
            && let datafusion::arrow::datatypes::DataType::Timestamp(_, None) = f.data_type()
        {
            return Err(DataFusionError::Plan(format!(
                "`{}`: column `{instant}` is a timestamp without a time zone, which does not \
                 say which instant it is: write it with its zone (UTC) or as RFC 3339 text",
                file.display()
            )));
        }
    }
    let mut cols = vec![
        format!(
            "CAST({} AS VARCHAR) AS file",
            literal(&file.display().to_string())
        ),
        "CAST(NULL AS BIGINT UNSIGNED) AS line".to_owned(),
    ];
    for c in TEXT_COLUMNS {
        let name = c.name();
        cols.push(if has(name) {
            format!("CAST({name} AS VARCHAR) AS {name}")
        } else {
            format!("CAST(NULL AS VARCHAR) AS {name}")
        });
    }
    cols.push(if has(CODE_SHA256) {
        CODE_SHA256.to_owned()
    } else {
        format!("NULL AS {CODE_SHA256}")
    });
    cols.push("CAST(NULL AS VARCHAR) AS invalid".to_owned());
    Ok(format!("SELECT {} FROM {table}", cols.join(", ")))
}

fn view_part(table: &str, jsonl: bool, trail: bool) -> String {
    let text = |c: &str, have: bool| {
        if have {
            format!("CAST({c} AS VARCHAR) AS {c}")
        } else {
            format!("CAST(NULL AS VARCHAR) AS {c}")
        }
    };
    let mut cols = vec![
        text("file", jsonl),
        if jsonl {
            "CAST(line AS BIGINT UNSIGNED) AS line".to_owned()
        } else {
            "CAST(NULL AS BIGINT UNSIGNED) AS line".to_owned()
        },
    ];
    cols.extend(TEXT_COLUMNS.iter().map(|c| text(c.name(), true)));
    cols.push(CODE_SHA256.to_owned());
    cols.push(text("invalid", jsonl));
    if trail {
        cols.extend(TRAIL_COLUMNS.iter().map(|c| (*c).to_owned()));
    }
    format!("SELECT {} FROM {table}", cols.join(", "))
}
