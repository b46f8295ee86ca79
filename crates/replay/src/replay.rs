//! `gatekeeper replay`: what a policy (or a posture) would have answered on real
//! traffic, and where that differs from a baseline policy or from what was served.
//!
//! One pass over the inputs, in one query: every request is decided under the new
//! policy and the baseline, and the rows are grouped by what changed (app, action,
//! region, day, old and new answer); unchanged rows collapse into a few groups and each
//! malformed row is its own group, with its file and line (JSON Lines) or, for
//! Parquet, its file and row found afterwards by reading the files in order.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray as _, RecordBatch};
use datafusion::arrow::datatypes::{Int64Type, UInt64Type};
use datafusion::common::{DataFusionError, Result};
use futures::StreamExt as _;
use serde::Serialize;

use crate::schema;
use crate::session::Session;

/// What the new answers are compared with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Baseline {
    /// Another decision function (an older policy, or the same under another posture).
    Function(String),
    /// What the audit trail says was served.
    Served,
}

/// A replay to run.
#[derive(Clone, Debug)]
pub struct ReplaySpec {
    /// The decision function of the new policy.
    pub new: String,
    pub baseline: Baseline,
    /// Where to write every changed decision as Parquet.
    pub changed_parquet: Option<PathBuf>,
    /// How many groups and malformed rows the Markdown report lists.
    pub shown: usize,
}

/// A row that is not a request, and where it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Malformed {
    pub file: Option<String>,
    /// The 1-based line (JSON Lines) or row (Parquet) in the file.
    pub row: Option<u64>,
    pub problem: String,
}

/// Requests whose answer changed in the same way, for the same app, action, region and day.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Change {
    pub app: Option<String>,
    pub action: Option<String>,
    pub region: Option<String>,
    pub day: Option<String>,
    pub old: Option<String>,
    pub new: Option<String>,
    pub requests: u64,
    /// An example: the first instant among them, and a line (JSON Lines) or trail record.
    pub first_at: Option<String>,
    pub example: Option<String>,
}

/// The replay's findings.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub new: String,
    pub baseline: String,
    pub rows: u64,
    pub decided: u64,
    pub changed: u64,
    /// `allow` -> `deny`, `deny` -> `allow`, and the same decision for other reasons.
    pub allow_to_deny: u64,
    pub deny_to_allow: u64,
    pub reasons_only: u64,
    /// Unchanged requests by decision.
    pub unchanged: BTreeMap<String, u64>,
    pub malformed_rows: u64,
    pub malformed: Vec<Malformed>,
    /// Records of gaps in an audit trail, and how many records they lost.
    pub gaps: u64,
    pub lost: u64,
    pub by_app: BTreeMap<String, u64>,
    pub by_action: BTreeMap<String, u64>,
    pub by_region: BTreeMap<String, u64>,
    pub by_day: BTreeMap<String, u64>,
    /// The changes, most requests first.
    pub changes: Vec<Change>,
}

/// An answer as text: `deny p1,p2`, or `allow because` and ` by instrument` when one is
/// behind it.
fn answer(d: &str) -> String {
    format!(
        "CASE WHEN {d}['decision'] = 'deny' THEN 'deny ' || array_to_string({d}['prohibitions'], ',') \
         WHEN {d}['decision'] = 'allow' THEN 'allow ' || {d}['because'] || coalesce(' by ' || {d}['by'], '') END"
    )
}

/// The inner query: every row of the table `source` (with the columns of the `requests`
/// view) with its problem, its new and old answers, and the keys the report groups by.
fn decided_sql(spec: &ReplaySpec, source: &str) -> String {
    let new = Session::call(&spec.new);
    let (old_answer, old_region, old_app, example) = match &spec.baseline {
        Baseline::Function(_) => (
            answer("dold"),
            "dold['region']".to_owned(),
            "dold['app']".to_owned(),
            "CASE WHEN line IS NOT NULL THEN file || ':' || CAST(line AS VARCHAR) END".to_owned(),
        ),
        Baseline::Served => (
            // A shadow deny was served: it stays apart from a deny, so that enforcing the
            // same policy shows as a change.
            "CASE WHEN served = 'allow' THEN 'allow ' || served_because || coalesce(' by ' || served_by, '') \
             WHEN served IS NOT NULL THEN served || ' ' || array_to_string(served_prohibitions, ',') END"
                .to_owned(),
            "CAST(NULL AS VARCHAR)".to_owned(),
            "CAST(NULL AS VARCHAR)".to_owned(),
            "'record ' || CAST(n AS VARCHAR)".to_owned(),
        ),
    };
    let old_call = match &spec.baseline {
        Baseline::Function(f) => format!(", {} AS dold", Session::call(f)),
        Baseline::Served => String::new(),
    };
    let lost = match &spec.baseline {
        Baseline::Served => "lost",
        Baseline::Function(_) => "CAST(NULL AS BIGINT UNSIGNED)",
    };
    format!(
        "SELECT *, \
           (problem IS NULL AND gap IS NULL AND new_answer IS DISTINCT FROM old_answer) AS changed \
         FROM (SELECT file, line, app_platform, app_id, action, at, known_at, storefront, device_country, \
             ip_country, billing_country, server_country, dnew['at'] AS first_at, {lost} AS gap, {example} AS example, \
             CASE WHEN {lost} IS NULL THEN coalesce(invalid, dnew['error']) END AS problem, \
             {new_answer} AS new_answer, {old_answer} AS old_answer, \
             dnew['decision'] AS new_decision, \
             coalesce(dnew['region'], {old_region}) AS region, \
             CAST(CAST(dnew['at'] AS DATE) AS VARCHAR) AS day, \
             coalesce(dnew['app'], {old_app}, app_id) AS app \
           FROM (SELECT *, {new} AS dnew{old_call} FROM {source}))",
        new_answer = answer("dnew"),
    )
}

/// The query grouping the rows of `decided` by what changed: unchanged rows into a few
/// groups, each malformed row its own.
fn grouped_sql(decided: &str) -> String {
    format!(
        "SELECT \
           CASE WHEN gap IS NOT NULL THEN 'gap' WHEN problem IS NOT NULL THEN 'malformed' \
                WHEN changed THEN 'changed' ELSE 'same' END AS kind, \
           CASE WHEN changed THEN app END AS app, \
           CASE WHEN changed THEN action END AS action, \
           CASE WHEN changed THEN region END AS region, \
           CASE WHEN changed THEN day END AS day, \
           CASE WHEN changed THEN old_answer END AS old_answer, \
           CASE WHEN changed THEN new_answer WHEN problem IS NULL THEN new_decision END AS new_answer, \
           problem, \
           CASE WHEN problem IS NOT NULL THEN file END AS file, \
           CASE WHEN problem IS NOT NULL THEN line END AS line, \
           count(*) AS requests, \
           CAST(sum(gap) AS BIGINT) AS lost, \
           CAST(min(first_at) AS VARCHAR) AS first_at, \
           min(example) AS example \
         FROM ({decided}) \
         GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10"
    )
}

/// Runs a replay in `session` (its functions and inputs registered).
///
/// The inputs are read a few files at a time (as many as the session has partitions),
/// one query each, and the groups of the parts merged: memory does not grow with the
/// number of files, as it would with every file of a large log scanned at once.
pub async fn replay(session: &Session, spec: &ReplaySpec) -> Result<Report> {
    let mut report = Report {
        new: spec.new.clone(),
        baseline: match &spec.baseline {
            Baseline::Function(f) => f.clone(),
            Baseline::Served => "served".to_owned(),
        },
        ..Report::default()
    };
    let mut parquet_problems = BTreeMap::new();
    let mut merged = BTreeMap::new();
    let mut changed = None;
    for (k, part) in session
        .requests_in_parts(session.partitions())
        .iter()
        .enumerate()
    {
        // Each part a view of its own, as `requests` is one.
        let source = format!("requests_part_{k}");
        session
            .ctx
            .sql(&format!("CREATE OR REPLACE VIEW {source} AS {part}"))
            .await?;
        let decided = decided_sql(spec, &source);
        let mut groups = session
            .ctx
            .sql(&grouped_sql(&decided))
            .await?
            .execute_stream()
            .await?;
        while let Some(batch) = groups.next().await {
            read_groups(&batch?, &mut report, &mut parquet_problems)?;
        }
        // Merged part by part: the same change in every part is kept once.
        merge_changes(&mut merged, std::mem::take(&mut report.changes));
        if let Some(path) = &spec.changed_parquet {
            write_changed(session, &decided, path, &mut changed).await?;
        }
        session.ctx.sql(&format!("DROP VIEW {source}")).await?;
    }
    report.changes = merged.into_values().collect();
    report.changes.sort_by(|a, b| {
        b.requests
            .cmp(&a.requests)
            .then_with(|| change_key(a).cmp(&change_key(b)))
    });
    if !parquet_problems.is_empty() {
        // Parquet rows carry no position: find the malformed ones by reading the files
        // that have some, in order.
        let found = locate_parquet_problems(
            session.parquet_files(),
            &parquet_problems,
            session.partitions(),
        )?;
        report.malformed.extend(found);
    }
    report
        .malformed
        .sort_by(|a, b| (&a.file, a.row).cmp(&(&b.file, b.row)));
    if let Some(file) = changed {
        file.finish()?;
    }
    Ok(report)
}

type ChangeKey = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

fn change_key(c: &Change) -> ChangeKey {
    (
        c.app.clone(),
        c.action.clone(),
        c.region.clone(),
        c.day.clone(),
        c.old.clone(),
        c.new.clone(),
    )
}

/// The least of two optional texts, as SQL's `min` takes it (a null is no value).
fn least(a: Option<String>, b: Option<String>) -> Option<String> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Adds a part's groups to `merged`: the same change in two parts adds up, with the
/// first instant and the least example of both.
fn merge_changes(merged: &mut BTreeMap<ChangeKey, Change>, changes: Vec<Change>) {
    for c in changes {
        match merged.entry(change_key(&c)) {
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(c);
            }
            std::collections::btree_map::Entry::Occupied(mut e) => {
                let m = e.get_mut();
                m.requests += c.requests;
                m.first_at = least(m.first_at.take(), c.first_at);
                m.example = least(m.example.take(), c.example);
            }
        }
    }
}

fn text_at(batch: &RecordBatch, name: &str, row: usize) -> Option<String> {
    let a = batch.column_by_name(name)?;
    if a.is_null(row) {
        return None;
    }
    let value = match a.data_type() {
        datafusion::arrow::datatypes::DataType::Utf8 => a.as_string::<i32>().value(row).to_owned(),
        datafusion::arrow::datatypes::DataType::LargeUtf8 => {
            a.as_string::<i64>().value(row).to_owned()
        }
        datafusion::arrow::datatypes::DataType::Utf8View => {
            a.as_string_view().value(row).to_owned()
        }
        _ => return None,
    };
    Some(value)
}

fn u64_at(batch: &RecordBatch, name: &str, row: usize) -> Option<u64> {
    let a = batch.column_by_name(name)?;
    if a.is_null(row) {
        return None;
    }
    match a.data_type() {
        datafusion::arrow::datatypes::DataType::Int64 => {
            u64::try_from(a.as_primitive::<Int64Type>().value(row)).ok()
        }
        datafusion::arrow::datatypes::DataType::UInt64 => {
            Some(a.as_primitive::<UInt64Type>().value(row))
        }
        _ => None,
    }
}

/// Adds a batch of the grouped query to the report; malformed Parquet rows (a file but no
/// line) are counted by file in `parquet_problems`, to be located.
fn read_groups(
    batch: &RecordBatch,
    report: &mut Report,
    parquet_problems: &mut BTreeMap<String, u64>,
) -> Result<()> {
    for row in 0..batch.num_rows() {
        let requests = u64_at(batch, "requests", row).unwrap_or(0);
        let kind = text_at(batch, "kind", row).unwrap_or_default();
        report.rows += requests;
        match kind.as_str() {
            "gap" => {
                report.gaps += requests;
                report.lost += u64_at(batch, "lost", row).unwrap_or(0);
            }
            "malformed" => {
                report.malformed_rows += requests;
                let file = text_at(batch, "file", row);
                let line = u64_at(batch, "line", row);
                match (file, line) {
                    (Some(file), None) => *parquet_problems.entry(file).or_default() += requests,
                    (file, line) => report.malformed.push(Malformed {
                        file,
                        row: line,
                        problem: text_at(batch, "problem", row).unwrap_or_default(),
                    }),
                }
            }
            "same" => {
                report.decided += requests;
                let decision = text_at(batch, "new_answer", row).unwrap_or_default();
                *report.unchanged.entry(decision).or_default() += requests;
            }
            "changed" => {
                report.decided += requests;
                report.changed += requests;
                let change = Change {
                    app: text_at(batch, "app", row),
                    action: text_at(batch, "action", row),
                    region: text_at(batch, "region", row),
                    day: text_at(batch, "day", row),
                    old: text_at(batch, "old_answer", row),
                    new: text_at(batch, "new_answer", row),
                    requests,
                    first_at: text_at(batch, "first_at", row),
                    example: text_at(batch, "example", row),
                };
                // What the caller was told: a shadow deny was served.
                let decision = |a: &Option<String>| {
                    match a.as_deref().and_then(|a| a.split(' ').next()) {
                        Some("shadow-deny") => "allow",
                        Some(d) => d,
                        None => "none",
                    }
                    .to_owned()
                };
                match (
                    decision(&change.old).as_str(),
                    decision(&change.new).as_str(),
                ) {
                    ("deny", "allow") => report.deny_to_allow += requests,
                    ("allow", "deny") => report.allow_to_deny += requests,
                    _ => report.reasons_only += requests,
                }
                let key = |k: &Option<String>| k.clone().unwrap_or_else(|| "-".to_owned());
                *report.by_app.entry(key(&change.app)).or_default() += requests;
                *report.by_action.entry(key(&change.action)).or_default() += requests;
                *report.by_region.entry(key(&change.region)).or_default() += requests;
                *report.by_day.entry(key(&change.day)).or_default() += requests;
                report.changes.push(change);
            }
            other => {
                return Err(DataFusionError::Execution(format!(
                    "the replay's query gave a group of unknown kind `{other}`"
                )));
            }
        }
    }
    Ok(())
}

/// Writes the changed decisions of a part (the request, its row, the old and new
/// answers) to `out`, the file of every part, created with the first part's columns.
async fn write_changed(
    session: &Session,
    decided: &str,
    path: &Path,
    out: &mut Option<crate::tables::WholeParquet>,
) -> Result<()> {
    let df = session
        .ctx
        .sql(&format!(
            "SELECT file, line, app_platform, app_id, action, at, known_at, storefront, \
             device_country, ip_country, billing_country, server_country, region, day, app, \
             old_answer, new_answer FROM ({decided}) WHERE changed"
        ))
        .await?;
    let file = match out {
        Some(file) => file,
        None => out.insert(crate::tables::WholeParquet::create(
            path,
            Arc::new(df.schema().as_arrow().clone()),
        )?),
    };
    let mut rows = df.execute_stream().await?;
    while let Some(batch) = rows.next().await {
        file.write(&batch?)?;
    }
    Ok(())
}

/// The malformed rows of the Parquet files named in `counts`, with their file and 1-based
/// row: each file read in order and its rows validated by the decision function's own
/// reader (nothing decided), files shared out over `threads`. The rows found in a file
/// must be as many as the query counted there.
fn locate_parquet_problems(
    files: &[PathBuf],
    counts: &BTreeMap<String, u64>,
    threads: usize,
) -> Result<Vec<Malformed>> {
    let wanted: Vec<&PathBuf> = files
        .iter()
        .filter(|f| counts.contains_key(&f.display().to_string()))
        .collect();
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let per = wanted.len().div_ceil(threads.max(1));
    let found: Vec<Result<Vec<Malformed>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = wanted
            .chunks(per)
            .map(|some| {
                scope.spawn(move || {
                    let mut found = Vec::new();
                    for file in some {
                        found.extend(locate_in_file(file, counts)?);
                    }
                    Ok(found)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(DataFusionError::Execution(
                        "reading the malformed rows of a Parquet file failed".to_owned(),
                    ))
                })
            })
            .collect()
    });
    let mut all = Vec::new();
    for part in found {
        all.extend(part?);
    }
    Ok(all)
}

/// [`locate_parquet_problems`] in one file.
fn locate_in_file(file: &Path, counts: &BTreeMap<String, u64>) -> Result<Vec<Malformed>> {
    use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let name = file.display().to_string();
    let expected = counts.get(&name).copied().unwrap_or(0);
    let mut found = Vec::new();
    let reader = std::fs::File::open(file)
        .map_err(|e| DataFusionError::Execution(format!("opening `{name}`: {e}")))?;
    let batches = ParquetRecordBatchReaderBuilder::try_new(reader)?
        .with_batch_size(crate::tables::BATCH_ROWS)
        .build()?;
    let mut offset = 0u64;
    for batch in batches {
        let batch = batch?;
        let mut args = Vec::with_capacity(schema::ALL_ARGUMENTS);
        for column in schema::argument_names() {
            match batch.column_by_name(column) {
                Some(c) => args.push(c.clone()),
                None if column == schema::CODE_SHA256 => {}
                None => args.push(datafusion::arrow::array::new_null_array(
                    &datafusion::arrow::datatypes::DataType::Utf8,
                    batch.num_rows(),
                )),
            }
        }
        crate::udf::read_requests(&args, batch.num_rows(), |i, request| {
            if let Err(problem) = request {
                found.push(Malformed {
                    file: Some(name.clone()),
                    row: Some(offset + i as u64 + 1),
                    problem: problem.into_owned(),
                });
            }
        })?;
        offset += batch.num_rows() as u64;
    }
    let located = found.len() as u64;
    if located != expected {
        return Err(DataFusionError::Execution(format!(
            "`{name}`: the replay counted {expected} malformed rows, reading the file in \
             order found {located}"
        )));
    }
    Ok(found)
}

impl Report {
    /// The report as Markdown: totals, the changes by app, action, region and day, the
    /// largest groups with an example, and the malformed rows (`shown` of each list).
    pub fn markdown(&self, shown: usize) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(out, "# Replay: `{}` against {}\n", self.new, self.baseline);
        let _ = writeln!(
            out,
            "| rows | decided | changed | allow -> deny | deny -> allow | other reasons | malformed | gaps |"
        );
        let _ = writeln!(out, "|---:|---:|---:|---:|---:|---:|---:|---:|");
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
            self.rows,
            self.decided,
            self.changed,
            self.allow_to_deny,
            self.deny_to_allow,
            self.reasons_only,
            self.malformed_rows,
            self.gaps
        );
        if self.lost > 0 {
            let _ = writeln!(
                out,
                "The trail records {} gap(s) in which {} record(s) were lost: those requests \
                 cannot be replayed.\n",
                self.gaps, self.lost
            );
        }
        for (title, map) in [
            ("app", &self.by_app),
            ("action", &self.by_action),
            ("region", &self.by_region),
            ("day", &self.by_day),
        ] {
            if map.is_empty() {
                continue;
            }
            let mut rows: Vec<(&String, &u64)> = map.iter().collect();
            rows.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
            let _ = writeln!(
                out,
                "## Changed by {title}\n\n| {title} | requests |\n|---|---:|"
            );
            for (k, v) in rows.iter().take(shown) {
                let _ = writeln!(out, "| {k} | {v} |");
            }
            if rows.len() > shown {
                let _ = writeln!(out, "| ({} more) | |", rows.len() - shown);
            }
            out.push('\n');
        }
        if !self.changes.is_empty() {
            let _ = writeln!(
                out,
                "## Largest changes\n\n| app | action | region | day | was | now | requests | first at | example |\n|---|---|---|---|---|---|---:|---|---|"
            );
            let cell = |c: &Option<String>| c.clone().unwrap_or_else(|| "-".to_owned());
            for c in self.changes.iter().take(shown) {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    cell(&c.app),
                    cell(&c.action),
                    cell(&c.region),
                    cell(&c.day),
                    cell(&c.old),
                    cell(&c.new),
                    c.requests,
                    cell(&c.first_at),
                    cell(&c.example)
                );
            }
            out.push('\n');
        }
        if !self.malformed.is_empty() {
            let _ = writeln!(
                out,
                "## Malformed rows ({}; not decided)\n\n| file | row | problem |\n|---|---:|---|",
                self.malformed_rows
            );
            for m in self.malformed.iter().take(shown) {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} |",
                    m.file.as_deref().unwrap_or("-"),
                    m.row.map_or_else(|| "-".to_owned(), |r| r.to_string()),
                    m.problem.replace('|', "\\|")
                );
            }
            if self.malformed.len() > shown {
                let _ = writeln!(out, "| ({} more) | | |", self.malformed.len() - shown);
            }
        }
        out
    }
}

/// Streams a query's batches to `each` (for `gatekeeper sql`).
pub async fn stream_sql(
    session: &Session,
    sql: &str,
    mut each: impl FnMut(&RecordBatch) -> Result<()>,
) -> Result<()> {
    let mut stream = session.ctx.sql(sql).await?.execute_stream().await?;
    while let Some(batch) = stream.next().await {
        each(&batch?)?;
    }
    Ok(())
}
