//! Replay and SQL: Gatekeeper's decisions inside Apache DataFusion (and a Ballista
//! cluster started in this process) equal `gatekeeper check`'s, row for row; malformed
//! rows are reported with their file and row in `check`'s words; the audit trail is
//! verified before it is read.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use replay::datafusion::arrow::array::{
    Array, ArrayRef, AsArray as _, RecordBatch, StructArray, UInt64Array,
};
use replay::datafusion::arrow::datatypes::{DataType, Field, Schema, UInt64Type};
use replay::datafusion::parquet::arrow::ArrowWriter;
use replay::genlog::{LogGenerator, LogSpec, batch_of};
use replay::session::{Engine, Inputs, Session};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn set(name: &str) -> PathBuf {
    root().join("policies").join(name)
}

const SETS: [&str; 3] = ["us-2020", "us-2020-courts", "us-2024-pafaca"];

fn run_cli(args: &[&str]) -> (u8, String, String) {
    let mut out = Vec::new();
    let mut err = Vec::new();
    let mut argv = vec!["gatekeeper"];
    argv.extend_from_slice(args);
    let code = cli::run(argv, &mut std::io::empty(), &mut out, &mut err);
    (
        code,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

/// A generated log of `rows` requests in `dir`: JSON Lines, and Parquet with `seq` (the
/// line number) before the request's columns.
/// `gatekeeper replay` of us-2020-courts against us-2020, `args` after them.
fn replay_courts(args: &[&str]) -> (u8, String, String) {
    let (new, old) = (set("us-2020-courts"), set("us-2020"));
    let mut all = vec![
        "replay",
        "--policies",
        new.to_str().unwrap(),
        "--baseline",
        old.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    run_cli(&all)
}

/// The rows of a `--changed` output and the files they came from, as `gatekeeper sql`
/// counts them (CSV: `n,files`).
fn changed_counts(changed: &Path) -> String {
    let (code, out, err) = run_cli(&[
        "sql",
        "--format",
        "csv",
        changed.to_str().unwrap(),
        "-q",
        "SELECT count(*) AS n, count(DISTINCT file) AS files FROM requests_parquet",
    ]);
    assert_eq!(code, 0, "{err}");
    out
}

/// Writes `batch` as a Parquet file.
fn write_parquet(path: &Path, batch: &RecordBatch) {
    let mut w =
        ArrowWriter::try_new(std::fs::File::create(path).unwrap(), batch.schema(), None).unwrap();
    w.write(batch).unwrap();
    w.close().unwrap();
}

fn write_log(dir: &Path, rows: usize, seed: u64, malformed_every: u64) -> (PathBuf, PathBuf) {
    let loaded: Vec<_> = SETS
        .iter()
        .map(|s| gatekeeper::load_dirs(&[set(s)]).unwrap().policy)
        .collect();
    let refs: Vec<&policy::Policy> = loaded.iter().collect();
    let spec = LogSpec {
        rows: rows as u64,
        seed,
        other_apps: 500,
        malformed_every,
    };
    let records = LogGenerator::new(spec, &refs).next_records(rows);
    let jsonl = dir.join("log.jsonl");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&jsonl).unwrap());
    for r in &records {
        serde_json::to_writer(&mut f, r).unwrap();
        f.write_all(b"\n").unwrap();
    }
    f.flush().unwrap();
    let batch = batch_of(&records);
    let mut fields = vec![Arc::new(Field::new("seq", DataType::UInt64, false))];
    fields.extend(batch.schema().fields().iter().cloned());
    let schema = Arc::new(Schema::new(fields));
    let mut columns: Vec<ArrayRef> = vec![Arc::new(UInt64Array::from_iter_values(1..=rows as u64))];
    columns.extend(batch.columns().iter().cloned());
    let numbered = RecordBatch::try_new(schema.clone(), columns).unwrap();
    let parquet = dir.join("log.parquet");
    // Row groups of 500, so that a scan has parts to share out.
    let props = replay::datafusion::parquet::file::properties::WriterProperties::builder()
        .set_max_row_group_row_count(Some(500))
        .build();
    let mut w = ArrowWriter::try_new(
        std::fs::File::create(&parquet).unwrap(),
        schema,
        Some(props),
    )
    .unwrap();
    w.write(&numbered).unwrap();
    w.close().unwrap();
    (jsonl, parquet)
}

/// A `check` answer, reduced to what the decision function returns:
/// `decision|because|by|prohibitions|instruments|region|app|owner` or `error|message`.
fn from_check(line: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    if let Some(e) = v.get("error") {
        let e = e.as_str().unwrap();
        let message = e.split_once(": ").unwrap().1;
        return format!("error|{message}");
    }
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_owned();
    let reasons = v
        .get("reasons")
        .and_then(|r| r.as_array())
        .cloned()
        .unwrap_or_default();
    let prohibitions: Vec<&str> = reasons
        .iter()
        .map(|r| r["prohibition"].as_str().unwrap())
        .collect();
    let mut instruments: Vec<String> = Vec::new();
    for r in &reasons {
        let i = r["instrument"].as_str().unwrap().to_owned();
        if !instruments.contains(&i) {
            instruments.push(i);
        }
    }
    if let Some(by) = v.get("by").and_then(|b| b.as_str()) {
        instruments.push(by.to_owned());
    }
    let region = v
        .get("jurisdiction")
        .and_then(|j| j.get("region"))
        .and_then(|r| r.as_str())
        .unwrap_or("");
    format!(
        "{}|{}|{}|{}|{}|{}|{}|{}",
        s("decision"),
        s("because"),
        s("by"),
        prohibitions.join(","),
        instruments.join(","),
        region,
        s("app"),
        s("owner")
    )
}

/// The same reduction of a row of the decision function's struct.
fn from_struct(d: &StructArray, row: usize, invalid: Option<&str>) -> String {
    let text = |name: &str| {
        let a = d.column_by_name(name).unwrap().as_string::<i32>();
        if a.is_null(row) {
            String::new()
        } else {
            a.value(row).to_owned()
        }
    };
    let list = |name: &str| {
        let a = d.column_by_name(name).unwrap().as_list::<i32>();
        if a.is_null(row) {
            return String::new();
        }
        let items = a.value(row);
        let items = items.as_string::<i32>();
        items
            .iter()
            .map(|i| i.unwrap())
            .collect::<Vec<_>>()
            .join(",")
    };
    if let Some(i) = invalid {
        return format!("error|{i}");
    }
    if !d.column_by_name("error").unwrap().is_null(row) {
        return format!("error|{}", text("error"));
    }
    format!(
        "{}|{}|{}|{}|{}|{}|{}|{}",
        text("decision"),
        text("because"),
        text("by"),
        list("prohibitions"),
        list("instruments"),
        text("region"),
        text("app"),
        text("owner")
    )
}

/// `check`'s answers for every line of `jsonl`, reduced.
fn check_answers(policies: &Path, posture: &[&str], jsonl: &Path) -> Vec<String> {
    let mut args = vec!["check", "--policies", policies.to_str().unwrap()];
    args.extend_from_slice(posture);
    args.push(jsonl.to_str().unwrap());
    let (_, out, err) = run_cli(&args);
    assert!(err.is_empty(), "{err}");
    out.lines().map(from_check).collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn posture_of(args: &[&str]) -> policy::Posture {
    let mut p = policy::Posture::default();
    for w in args.windows(2) {
        match w[0] {
            "--posture" => p.boundaries = policy::Boundaries::parse(w[1]).unwrap(),
            "--non-enforcement" => p.non_enforcement = policy::NonEnforcement::parse(w[1]).unwrap(),
            _ => {}
        }
    }
    p
}

/// The decision function's answers by `seq` (Parquet) or `line` (JSON Lines).
async fn answers(session: &Session, table: &str, key: &str, function: &str) -> Vec<(u64, String)> {
    let invalid = if table == "requests_jsonl" {
        "invalid"
    } else {
        "CAST(NULL AS VARCHAR)"
    };
    let sql = format!(
        "SELECT {key} AS k, {call} AS d, {invalid} AS invalid FROM {table} ORDER BY {key}",
        call = Session::call(function)
    );
    let batches = session
        .ctx
        .sql(&sql)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let mut out = Vec::new();
    for b in &batches {
        let k = replay::datafusion::arrow::compute::cast(b.column(0), &DataType::UInt64).unwrap();
        let k = k.as_primitive::<UInt64Type>();
        let d = b.column(1).as_struct();
        let inv = replay::datafusion::arrow::compute::cast(b.column(2), &DataType::Utf8).unwrap();
        let inv = inv.as_string::<i32>();
        for row in 0..b.num_rows() {
            let i = (!inv.is_null(row)).then(|| inv.value(row));
            out.push((k.value(row), from_struct(d, row, i)));
        }
    }
    out
}

/// The `decision` field alone (`f(...)['decision']`, which the session's optimizer gives
/// a function writing only that field), by `seq` or `line`, with the plan's text.
async fn decisions(
    session: &Session,
    table: &str,
    key: &str,
    function: &str,
) -> (Vec<(u64, Option<String>)>, String) {
    let sql = format!(
        "SELECT {key} AS k, {call}['decision'] AS d FROM {table} ORDER BY {key}",
        call = Session::call(function)
    );
    let frame = session.ctx.sql(&sql).await.unwrap();
    let plan = format!("{}", frame.logical_plan().display_indent());
    let optimized = frame.clone().into_optimized_plan().unwrap();
    let plan = format!("{plan}\n{}", optimized.display_indent());
    let batches = frame.collect().await.unwrap();
    let mut out = Vec::new();
    for b in &batches {
        let k = replay::datafusion::arrow::compute::cast(b.column(0), &DataType::UInt64).unwrap();
        let k = k.as_primitive::<UInt64Type>();
        assert_eq!(b.schema().field(1).name(), "d");
        let d = b.column(1).as_string::<i32>();
        for row in 0..b.num_rows() {
            out.push((
                k.value(row),
                (!d.is_null(row)).then(|| d.value(row).to_owned()),
            ));
        }
    }
    (out, plan)
}

/// The decision alone answers as the whole answer's `decision` (null for a malformed row),
/// through the function that writes only it.
fn assert_same_decisions(
    expected: &[String],
    got: &(Vec<(u64, Option<String>)>, String),
    what: &str,
) {
    let (rows, plan) = got;
    assert!(plan.contains("decide.decision("), "{what}: {plan}");
    assert_eq!(expected.len(), rows.len(), "{what}: rows");
    for (n, (e, (k, d))) in expected.iter().zip(rows).enumerate() {
        assert_eq!(*k, n as u64 + 1, "{what}: row order");
        let decision = e.split('|').next().filter(|d| *d != "error");
        assert_eq!(decision, d.as_deref(), "{what}: row {k}: {e}");
    }
}

fn assert_same(expected: &[String], got: &[(u64, String)], what: &str) {
    assert_eq!(expected.len(), got.len(), "{what}: rows");
    for (n, (e, (k, g))) in expected.iter().zip(got).enumerate() {
        assert_eq!(*k, n as u64 + 1, "{what}: row order");
        assert_eq!(e, g, "{what}: row {k}");
    }
}

#[test]
fn datafusion_decides_every_row_as_check_does_under_every_set_and_posture() {
    let dir = tempfile::tempdir().unwrap();
    let (jsonl, parquet) = write_log(dir.path(), 3000, 11, 97);
    let rt = runtime();
    let postures: [&[&str]; 3] = [
        &[],
        &["--posture", "permissive"],
        &["--non-enforcement", "ignore"],
    ];
    let mut denies = 0;
    let mut errors = 0;
    for s in SETS {
        for posture in postures {
            let expected = check_answers(&set(s), posture, &jsonl);
            denies += expected.iter().filter(|e| e.starts_with("deny|")).count();
            errors += expected.iter().filter(|e| e.starts_with("error|")).count();
            rt.block_on(async {
                let mut session = Session::new(Engine::Local, 2).await.unwrap();
                session
                    .add_policy(
                        "decide",
                        replay::load_policy(&set(s)).unwrap(),
                        posture_of(posture),
                    )
                    .unwrap();
                session
                    .add_inputs(&Inputs {
                        parquet: vec![parquet.clone()],
                        jsonl: vec![jsonl.clone()],
                        trail: vec![],
                        ..Inputs::default()
                    })
                    .await
                    .unwrap();
                let what = format!("{s} {posture:?}");
                let got = answers(&session, "requests_parquet", "seq", "decide").await;
                assert_same(&expected, &got, &format!("{what} parquet"));
                let got = answers(&session, "requests_jsonl", "line", "decide").await;
                assert_same(&expected, &got, &format!("{what} jsonl"));
                let got = decisions(&session, "requests_parquet", "seq", "decide").await;
                assert_same_decisions(&expected, &got, &format!("{what} parquet, decision"));
                let got = decisions(&session, "requests_jsonl", "line", "decide").await;
                assert_same_decisions(&expected, &got, &format!("{what} jsonl, decision"));
            });
        }
    }
    // The log exercises both answers and malformed rows.
    assert!(denies > 300, "{denies} denies");
    assert!(errors > 50, "{errors} errors");
}

#[test]
fn a_ballista_cluster_in_this_process_answers_as_the_embedded_run_row_for_row() {
    let dir = tempfile::tempdir().unwrap();
    let (_, parquet) = write_log(dir.path(), 1500, 12, 101);
    let rt = runtime();
    // A cluster that stops answering fails the test, not hangs it.
    let bounded = |f| async move {
        tokio::time::timeout(std::time::Duration::from_secs(120), f)
            .await
            .expect("the cluster answers within two minutes")
    };
    rt.block_on(bounded(async {
        let mut results = Vec::new();
        for engine in [Engine::Local, Engine::Standalone] {
            let mut session = Session::new(engine.clone(), 2).await.unwrap();
            // Two policies side by side, one of them under another posture.
            session
                .add_policy(
                    "old",
                    replay::load_policy(&set("us-2020")).unwrap(),
                    policy::Posture::default(),
                )
                .unwrap();
            let ignore = policy::Posture {
                non_enforcement: policy::NonEnforcement::Ignore,
                ..policy::Posture::default()
            };
            session
                .add_policy(
                    "new",
                    replay::load_policy(&set("us-2024-pafaca")).unwrap(),
                    ignore,
                )
                .unwrap();
            session
                .add_inputs(&Inputs {
                    parquet: vec![parquet.clone()],
                    ..Inputs::default()
                })
                .await
                .unwrap();
            let old = answers(&session, "requests_parquet", "seq", "old").await;
            let new = answers(&session, "requests_parquet", "seq", "new").await;
            // And an aggregate over the answers, which Ballista runs in two stages.
            let sql = format!(
                "SELECT {}['decision'] AS d, count(*) AS c FROM requests GROUP BY 1 ORDER BY 1",
                Session::call("new")
            );
            let counts = replay::datafusion::arrow::util::pretty::pretty_format_batches(
                &session
                    .ctx
                    .sql(&sql)
                    .await
                    .unwrap()
                    .collect()
                    .await
                    .unwrap(),
            )
            .unwrap()
            .to_string();
            results.push((old, new, counts));
        }
        let (local, cluster) = (&results[0], &results[1]);
        assert_eq!(local.0.len(), 1500);
        assert!(local.1.iter().any(|(_, a)| a.starts_with("deny|")));
        assert_eq!(local.0, cluster.0, "old, row for row");
        assert_eq!(local.1, cluster.1, "new, row for row");
        assert_eq!(local.2, cluster.2, "the aggregate");
    }));
}

/// Replay's counts, computed again from `check`'s answers under both policies.
#[test]
fn replay_reports_exactly_the_rows_whose_check_answer_changes() {
    let dir = tempfile::tempdir().unwrap();
    let (jsonl, parquet) = write_log(dir.path(), 4000, 13, 89);
    let old = check_answers(&set("us-2020"), &[], &jsonl);
    let new = check_answers(&set("us-2020-courts"), &[], &jsonl);
    let answer = |a: &str| {
        let f: Vec<&str> = a.split('|').collect();
        match f[0] {
            "deny" => format!("deny {}", f[3]),
            d if f[2].is_empty() => format!("{d} {}", f[1]),
            d => format!("{d} {} by {}", f[1], f[2]),
        }
    };
    let mut changed = 0u64;
    let (mut to_allow, mut to_deny) = (0u64, 0u64);
    let mut by_app = std::collections::BTreeMap::<String, u64>::new();
    let mut malformed = Vec::new();
    for (n, (o, w)) in old.iter().zip(&new).enumerate() {
        if let Some(problem) = w.strip_prefix("error|") {
            malformed.push((n as u64 + 1, problem.to_owned()));
            continue;
        }
        if answer(o) != answer(w) {
            changed += 1;
            match (o.split('|').next(), w.split('|').next()) {
                (Some("deny"), Some("allow")) => to_allow += 1,
                (Some("allow"), Some("deny")) => to_deny += 1,
                _ => {}
            }
            let app = w.split('|').nth(6).unwrap().to_owned();
            *by_app.entry(app).or_default() += 1;
        }
    }
    assert!(changed > 100, "{changed}");
    let json = dir.path().join("report.json");
    for input in [&jsonl, &parquet] {
        let (code, out, err) = replay_courts(&[
            input.to_str().unwrap(),
            "--json",
            json.to_str().unwrap(),
            "--partitions",
            "2",
        ]);
        assert_eq!(code, 1, "{err}");
        assert!(out.contains("## Changed by app"), "{out}");
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        assert_eq!(report["rows"], 4000);
        assert_eq!(report["changed"], changed);
        assert_eq!(report["deny_to_allow"], to_allow);
        assert_eq!(report["allow_to_deny"], to_deny);
        let apps: std::collections::BTreeMap<String, u64> =
            serde_json::from_value(report["by_app"].clone()).unwrap();
        assert_eq!(apps, by_app);
        let rows: Vec<(u64, String)> = report["malformed"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                assert_eq!(m["file"].as_str().unwrap(), input.display().to_string());
                (
                    m["row"].as_u64().unwrap(),
                    m["problem"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        assert_eq!(rows, malformed, "{}", input.display());
        assert_eq!(report["malformed_rows"], malformed.len());
    }
    // The same policy against itself: nothing changes (exit 1 only for the malformed rows).
    let (_, out, _) = run_cli(&[
        "replay",
        "--policies",
        set("us-2020").to_str().unwrap(),
        "--baseline",
        set("us-2020").to_str().unwrap(),
        parquet.to_str().unwrap(),
    ]);
    assert!(
        out.contains(&format!(
            "| 4000 | {} | 0 | 0 | 0 | 0 |",
            4000 - malformed.len()
        )),
        "{out}"
    );
}

#[test]
fn lines_that_are_not_requests_are_reported_with_their_line_in_checks_words() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("odd.jsonl");
    let good = r#"{"app":{"platform":"ios","id":"com.tencent.xin"},"action":"download","at":"2020-09-21T12:00:00Z","storefront":"US"}"#;
    let mut bytes = Vec::new();
    bytes.extend_from_slice(good.as_bytes());
    bytes.extend_from_slice(b"\n\n   \n");
    bytes.extend_from_slice(b"{\"app\": \n");
    bytes.extend_from_slice(b"\xff\xfe not text\n");
    bytes.extend_from_slice(br#"{"app":{"platform":"ios","id":"com.tencent.xin"},"action":"download","at":"2020-09-21T12:00:00Z","storefront":"QQ"}"#);
    bytes.push(b'\n');
    bytes.extend_from_slice(
        br#"{"action":"download","at":"2020-09-21T12:00:00Z","storefront":"US","extra":1}"#,
    );
    bytes.push(b'\n');
    bytes.extend_from_slice(good.as_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let (_, check, _) = run_cli(&[
        "check",
        "--policies",
        set("us-2020").to_str().unwrap(),
        path.to_str().unwrap(),
    ]);
    let expected: Vec<(u64, String)> = check
        .lines()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let e = v.get("error")?.as_str()?.to_owned();
            let (line, message) = e.strip_prefix("line ")?.split_once(": ")?;
            Some((line.parse().unwrap(), message.to_owned()))
        })
        .collect();
    assert_eq!(expected.len(), 4, "{check}");
    let json = dir.path().join("r.json");
    let (code, out, err) = run_cli(&[
        "replay",
        "--policies",
        set("us-2020").to_str().unwrap(),
        "--baseline-non-enforcement",
        "ignore",
        path.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{out}{err}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let got: Vec<(u64, String)> = report["malformed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["row"].as_u64().unwrap(),
                m["problem"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(got, expected);
    assert_eq!(report["rows"], 6);
    assert_eq!(report["decided"], 2);
}

/// A trail written by the embeddable crate, `n` requests of a generated log.
fn trail(dir: &Path, records: &[policy::RequestRecord]) {
    let gk = gatekeeper::Gatekeeper::builder()
        .policy_dirs([set("us-2020")])
        .audit(gatekeeper::audit::AuditConfig::new(dir))
        .build()
        .unwrap();
    for r in records {
        if let Ok(request) = r.clone().into_request() {
            gk.check(&request).unwrap();
        }
    }
    gk.close_audit().unwrap();
}

#[test]
fn a_trail_replays_against_what_was_served_and_one_that_does_not_verify_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let loaded = gatekeeper::load_dirs(&[set("us-2020")]).unwrap().policy;
    let spec = LogSpec {
        rows: 600,
        seed: 21,
        other_apps: 100,
        malformed_every: 0,
    };
    let records = LogGenerator::new(spec, &[&loaded]).next_records(600);
    let trail_dir = dir.path().join("trail");
    std::fs::create_dir(&trail_dir).unwrap();
    trail(&trail_dir, &records);
    let t = trail_dir.to_str().unwrap();
    let json = dir.path().join("r.json");
    let j = json.to_str().unwrap();
    // Under the policy that served it, nothing changes.
    let (code, out, err) = run_cli(&[
        "replay",
        "--policies",
        set("us-2020").to_str().unwrap(),
        "--trail",
        t,
        "--json",
        j,
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let served = report["rows"].as_u64().unwrap();
    assert!(served > 500, "{served}");
    assert_eq!(
        (report["changed"].as_u64(), report["baseline"].as_str()),
        (Some(0), Some("served"))
    );
    // Under the courts' set, the injunctions allow what was denied.
    let (code, _, err) = run_cli(&[
        "replay",
        "--policies",
        set("us-2020-courts").to_str().unwrap(),
        "--trail",
        t,
        "--json",
        j,
    ]);
    assert_eq!(code, 1, "{err}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(report["deny_to_allow"].as_u64().unwrap() > 10, "{report}");
    assert_eq!(report["allow_to_deny"], 0);
    // Exported as Parquet, the trail is a table of what was served.
    let exported = dir.path().join("trail.parquet");
    let e = exported.to_str().unwrap();
    let (code, out, err) = run_cli(&["audit", "export", t, "--parquet", e]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("wrote {served} records")), "{out}");
    let (code, out, err) = run_cli(&[
        "sql",
        "--policies",
        set("us-2020").to_str().unwrap(),
        e,
        "--format",
        "csv",
        "-q",
        "SELECT count(*) AS records, count(*) FILTER (WHERE served = 'deny') AS denied FROM requests_parquet",
    ]);
    assert_eq!(code, 0, "{err}");
    let denied = records
        .iter()
        .filter_map(|r| r.clone().into_request().ok())
        .filter(|r| loaded.decide(r, policy::Posture::default()).is_deny())
        .count();
    assert_eq!(out, format!("records,denied\n{served},{denied}\n"));
    // One record rewritten: replay and export refuse the trail, and say why.
    let file = gatekeeper::audit::files_in(&trail_dir).unwrap()[0]
        .1
        .clone();
    let text = std::fs::read_to_string(&file).unwrap();
    let tampered = text.replacen(
        "\"deny\":[\"wechat-app-store\"]",
        "\"allow\":\"not-covered\"",
        1,
    );
    assert_ne!(text, tampered);
    std::fs::write(&file, tampered).unwrap();
    let (code, _, err) = run_cli(&[
        "replay",
        "--policies",
        set("us-2020").to_str().unwrap(),
        "--trail",
        t,
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("the audit trail does not verify"), "{err}");
    std::fs::remove_file(&exported).unwrap();
    let (code, _, err) = run_cli(&["audit", "export", t, "--parquet", e]);
    assert_eq!(code, 1);
    assert!(
        err.contains("does not verify") && err.contains("nothing was written"),
        "{err}"
    );
    assert!(!exported.exists());
}

#[test]
fn sql_prints_rows_and_says_what_is_wrong_with_a_query() {
    let us = set("us-2020");
    let p = format!("old={}", us.display());
    let q = "SELECT old('ios', 'com.tencent.xin', 'download', '2020-09-21T12:00:00Z', 'US', NULL, NULL, NULL, NULL)['prohibitions'] AS p";
    let (code, out, err) = run_cli(&["sql", "--policies", &p, "--format", "json", "-q", q]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), r#"{"p":["wechat-app-store"]}"#);
    // Too few arguments, a number for a text, an unknown function: planning errors.
    for (q, says) in [
        ("SELECT old('ios')", "takes 9 to 14 arguments"),
        (
            "SELECT old('ios', 'a', 'download', '2020-09-21T12:00:00Z', 1, NULL, NULL, NULL, NULL)",
            "argument 5 (`storefront`) must be text",
        ),
        ("SELECT nosuch(1)", "nosuch"),
    ] {
        let (code, out, err) = run_cli(&["sql", "--policies", &p, "-q", q]);
        assert_eq!((code, out.as_str()), (2, ""), "{q}");
        assert!(err.contains(says), "{q}: {err}");
    }
    let bad = format!("Bad={}", us.display());
    let (code, _, err) = run_cli(&["sql", "--policies", &bad, "-q", "SELECT 1"]);
    assert_eq!(code, 2);
    assert!(err.contains("not a function name"), "{err}");
}

#[test]
fn parquet_inputs_are_files_or_folders_and_what_is_missing_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (_, parquet) = write_log(dir.path(), 800, 14, 53);
    let logs = dir.path().join("logs/dt=2020-09-21");
    std::fs::create_dir_all(&logs).unwrap();
    std::fs::copy(&parquet, logs.join("a.parquet")).unwrap();
    // A second file with only the required columns and an app: the others are absent.
    let thin = Arc::new(Schema::new(vec![
        Field::new("app_platform", DataType::Utf8, true),
        Field::new("app_id", DataType::Utf8, true),
        Field::new("action", DataType::Utf8, false),
        Field::new("at", DataType::Utf8, false),
        Field::new("storefront", DataType::Utf8, true),
    ]));
    let text = |v: &[Option<&str>]| {
        Arc::new(replay::datafusion::arrow::array::StringArray::from(
            v.to_vec(),
        )) as ArrayRef
    };
    let batch = RecordBatch::try_new(
        thin.clone(),
        vec![
            text(&[Some("android"), Some("android"), Some("ios")]),
            text(&[
                Some("com.tencent.mm"),
                Some("com.tencent.mm"),
                Some("com.tencent.xin"),
            ]),
            text(&[Some("update"), Some("download"), Some("download")]),
            text(&[
                Some("2020-09-21T12:00:00Z"),
                Some("2020-09-19T12:00:00Z"),
                Some("2020-09-21T12:00:00Z"),
            ]),
            text(&[Some("US"), Some("US"), Some("XX")]),
        ],
    )
    .unwrap();
    let thin_file = logs.join("b.parquet");
    write_parquet(&thin_file, &batch);
    let json = dir.path().join("r.json");
    let changed = dir.path().join("changed.parquet");
    let (code, out, err) = replay_courts(&[
        dir.path().join("logs").to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
        "--changed",
        changed.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{out}{err}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["rows"], 803);
    // The thin file's malformed row is found at its row, with check's words.
    let thin_name = thin_file.display().to_string();
    let located: Vec<(u64, String)> = report["malformed"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["file"] == thin_name.as_str())
        .map(|m| {
            (
                m["row"].as_u64().unwrap(),
                m["problem"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(located.len(), 1, "{located:?}");
    assert_eq!(located[0].0, 3);
    assert!(located[0].1.contains("XX"), "{located:?}");
    assert_eq!(
        report["malformed"].as_array().unwrap().len() as u64,
        report["malformed_rows"].as_u64().unwrap()
    );
    // Every changed row is in the Parquet output, with its file.
    let changed_rows = report["changed"].as_u64().unwrap();
    assert!(changed_rows > 0);
    assert_eq!(
        changed_counts(&changed),
        format!("n,files\n{changed_rows},2\n")
    );
    // What is missing is named.
    let missing = dir.path().join("nosuch.parquet");
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let no_action = dir.path().join("no-action.parquet");
    let schema = Arc::new(Schema::new(vec![Field::new("at", DataType::Utf8, false)]));
    write_parquet(
        &no_action,
        &RecordBatch::try_new(schema, vec![text(&[Some("2020-09-21T12:00:00Z")])]).unwrap(),
    );
    // Instants as timestamps: with a zone they read as RFC 3339; without one, the file is
    // refused by name (the instant it names is not said).
    let stamped = |name: &str, zone: Option<&str>| {
        use replay::datafusion::arrow::array::TimestampMillisecondArray;
        let path = dir.path().join(name);
        let at_type = DataType::Timestamp(
            replay::datafusion::arrow::datatypes::TimeUnit::Millisecond,
            zone.map(Into::into),
        );
        let schema = Arc::new(Schema::new(vec![
            Field::new("app_platform", DataType::Utf8, true),
            Field::new("app_id", DataType::Utf8, true),
            Field::new("action", DataType::Utf8, true),
            Field::new("at", at_type, true),
            Field::new("storefront", DataType::Utf8, true),
        ]));
        // 2020-09-21T12:00:00Z, then 2020-09-19T12:00:00Z.
        let at = TimestampMillisecondArray::from(vec![1_600_689_600_000, 1_600_516_800_000]);
        let at: ArrayRef = match zone {
            Some(z) => Arc::new(at.with_timezone(z)),
            None => Arc::new(at),
        };
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                text(&[Some("ios"), Some("ios")]),
                text(&[Some("com.tencent.xin"), Some("com.tencent.xin")]),
                text(&[Some("update"), Some("update")]),
                at,
                text(&[Some("US"), Some("US")]),
            ],
        )
        .unwrap();
        write_parquet(&path, &batch);
        path
    };
    let zoned = stamped("zoned.parquet", Some("UTC"));
    let q = format!(
        "SELECT {}['decision'] AS d FROM requests ORDER BY at",
        Session::call("decide")
    );
    let (code, out, err) = run_cli(&[
        "sql",
        "--policies",
        set("us-2020").to_str().unwrap(),
        "--format",
        "csv",
        zoned.to_str().unwrap(),
        "-q",
        &q,
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "d\nallow\ndeny\n");
    let zoneless = stamped("zoneless.parquet", None);
    for (input, says) in [
        (&missing, "no such file or folder".to_owned()),
        (&empty, "no `*.parquet` file in this folder".to_owned()),
        (&no_action, "has no column `action`".to_owned()),
        (
            &zoneless,
            "column `at` is a timestamp without a time zone".to_owned(),
        ),
    ] {
        let (code, _, err) = run_cli(&[
            "replay",
            "--policies",
            set("us-2020").to_str().unwrap(),
            "--baseline-posture",
            "permissive",
            parquet.to_str().unwrap(),
            input.to_str().unwrap(),
        ]);
        assert_eq!(code, 2, "{err}");
        assert!(
            err.contains(&input.display().to_string()) && err.contains(&says),
            "{err}"
        );
        assert!(!err.contains("Error during planning"), "{err}");
    }
}

#[test]
fn a_null_digest_in_a_list_is_an_error_and_function_names_do_not_shadow_sql() {
    let us = set("us-2020");
    let p = format!("d={}", us.display());
    let q = "SELECT d('ios', 'com.tencent.xin', 'download', '2020-09-21T12:00:00Z', 'US', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, make_array(NULL, 'x'))['error'] AS e";
    let (code, out, err) = run_cli(&["sql", "--policies", &p, "--format", "csv", "-q", q]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "e\n\"`code_sha256`: item 1 is null, not a SHA-256 digest\"\n"
    );
    for name in ["sum", "coalesce"] {
        let given = format!("{name}={}", us.display());
        let (code, _, err) = run_cli(&["sql", "--policies", &given, "-q", "SELECT 1"]);
        assert_eq!(code, 2);
        assert!(err.contains("is the name of a SQL function"), "{err}");
    }
}

#[test]
fn columns_given_in_a_shape_no_request_has_are_errors_in_checks_words() {
    let us = set("us-2020");
    let p = format!("d={}", us.display());
    let q = "SELECT n, d(ap, ai, a, t, 'US', NULL, NULL, NULL, NULL, NULL, ps, pi)['error'] AS e \
             FROM (VALUES \
               (1, 'ios', NULL, 'download', '2020-09-21T12:00:00Z', NULL, NULL), \
               (2, NULL, 'com.tencent.xin', 'download', '2020-09-21T12:00:00Z', NULL, NULL), \
               (3, 'ios', 'com.tencent.xin', 'download', '2020-09-21T12:00:00Z', 'apple', NULL), \
               (4, 'ios', 'com.tencent.xin', 'download', '2020-09-21T12:00:00Z', NULL, 'ABCDE12345'), \
               (5, 'ios', 'com.tencent.xin', NULL, '2020-09-21T12:00:00Z', NULL, NULL), \
               (6, 'ios', 'com.tencent.xin', 'download', NULL, NULL, NULL), \
               (7, 'ios', 'com.tencent.xin', 'download', '2020-09-21T12:00:00Z', NULL, NULL) \
             ) AS v(n, ap, ai, a, t, ps, pi) ORDER BY n";
    let (code, out, err) = run_cli(&["sql", "--policies", &p, "--format", "csv", "-q", q]);
    assert_eq!(code, 0, "{err}");
    let app = "`app_platform` and `app_id` are given together or not at all";
    let publisher = "`publisher_store` and `publisher_id` are given together or not at all";
    assert_eq!(
        out,
        format!(
            "n,e\n1,{app}\n2,{app}\n3,{publisher}\n4,{publisher}\n\
             5,missing field `action`\n6,missing field `at`\n7,\n"
        )
    );
}

#[test]
fn a_replay_read_a_file_at_a_time_reports_as_one_read_all_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (jsonl, parquet) = write_log(dir.path(), 3000, 29, 53);

    // The log as 3 JSON Lines files and 4 Parquet files.
    let parts = dir.path().join("parts");
    std::fs::create_dir(&parts).unwrap();
    let text = std::fs::read_to_string(&jsonl).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut inputs = Vec::new();
    for (k, chunk) in lines.chunks(1000).enumerate() {
        let path = parts.join(format!("log-{k}.jsonl"));
        std::fs::write(&path, chunk.join("\n") + "\n").unwrap();
        inputs.push(path);
    }
    let reader =
        replay::datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            std::fs::File::open(&parquet).unwrap(),
        )
        .unwrap()
        .with_batch_size(750)
        .build()
        .unwrap();
    for (k, batch) in reader.enumerate() {
        let batch = batch.unwrap();
        let path = parts.join(format!("log-{k}.parquet"));
        write_parquet(&path, &batch);
        inputs.push(path);
    }
    assert_eq!(inputs.len(), 7);
    let mut reports = Vec::new();
    for partitions in ["1", "2", "16"] {
        let json = dir.path().join(format!("report-{partitions}.json"));
        let changed = dir.path().join(format!("changed-{partitions}.parquet"));
        let mut args = vec![
            "--partitions",
            partitions,
            "--json",
            json.to_str().unwrap(),
            "--changed",
            changed.to_str().unwrap(),
        ];
        args.extend(inputs.iter().map(|p| p.to_str().unwrap()));
        let (code, out, err) = replay_courts(&args);
        assert_eq!(code, 1, "{out}{err}");
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        assert_eq!(report["rows"], 6000);
        // Every changed row once in the Parquet output, whatever the parts.
        assert_eq!(
            changed_counts(&changed),
            format!("n,files\n{},7\n", report["changed"])
        );
        reports.push(report);
    }
    // Read a file per query (7 of them), two, or all at once: the same report, to the
    // first instant and the example of every group.
    let changes = reports[0]["changes"].as_array().unwrap();
    assert!(
        changes.iter().any(|c| c["requests"].as_u64().unwrap() > 1),
        "groups spanning several files"
    );
    assert!(reports[0]["malformed_rows"].as_u64().unwrap() > 50);
    assert_eq!(reports[0], reports[1]);
    assert_eq!(reports[0], reports[2]);
    // The same parts on a Ballista cluster in the process (Parquet: what executors read).
    let parquet_only: Vec<&str> = inputs
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .map(|p| p.to_str().unwrap())
        .collect();
    let mut reported = Vec::new();
    for engine in [&[][..], &["--standalone"][..]] {
        let json = dir.path().join("report-parquet.json");
        let mut args = vec!["--partitions", "2", "--json", json.to_str().unwrap()];
        args.extend_from_slice(engine);
        args.extend_from_slice(&parquet_only);
        let (code, out, err) = replay_courts(&args);
        assert_eq!(code, 1, "{out}{err}");
        reported.push(std::fs::read_to_string(&json).unwrap());
    }
    assert_eq!(reported[0], reported[1]);
    assert!(reported[0].contains("\"rows\": 3000"), "{}", reported[0]);
}

#[test]
fn a_trail_cut_since_a_checkpoint_kept_elsewhere_is_refused_by_replay_and_export() {
    let dir = tempfile::tempdir().unwrap();
    let trail_dir = dir.path().join("trail");
    let kept = dir.path().join("kept");
    std::fs::create_dir(&kept).unwrap();
    let key = gatekeeper::keys::SignerKey::generate("audit.example.org/store").unwrap();
    let mut config = gatekeeper::audit::AuditConfig::new(&trail_dir);
    config.checkpoint_key = Some(key.clone());
    config.checkpoint_every = gatekeeper::audit::CheckpointEvery {
        records: 10,
        interval: std::time::Duration::from_secs(3600),
    };
    let gk = gatekeeper::Gatekeeper::builder()
        .policy_dirs([set("us-2020")])
        .audit(config)
        .build()
        .unwrap();
    let request: policy::RequestRecord = serde_json::from_str(
        r#"{"app":{"platform":"ios","id":"com.tencent.xin"},"action":"update","at":"2020-09-21T12:00:00Z","storefront":"US"}"#,
    )
    .unwrap();
    let request = request.into_request().unwrap();
    for _ in 0..30 {
        gk.check(&request).unwrap();
    }
    gk.close_audit().unwrap();
    // The operator keeps the latest checkpoint (30 records) and the public key away.
    let checkpoint = kept.join("checkpoint");
    std::fs::copy(trail_dir.join("checkpoint"), &checkpoint).unwrap();
    let public = kept.join("audit.pub");
    std::fs::write(&public, key.verifier().to_string()).unwrap();
    // Someone cuts the last five records at a line end and removes the folder's checkpoints.
    let file = gatekeeper::audit::files_in(&trail_dir)
        .unwrap()
        .last()
        .unwrap()
        .1
        .clone();
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    std::fs::write(&file, lines[..lines.len() - 5].join("\n") + "\n").unwrap();
    std::fs::remove_file(trail_dir.join("checkpoint")).unwrap();
    std::fs::remove_file(trail_dir.join("checkpoints.jsonl")).unwrap();
    let t = trail_dir.to_str().unwrap();
    let exported = dir.path().join("trail.parquet");
    let e = exported.to_str().unwrap();
    let trust = [
        "--checkpoint",
        checkpoint.to_str().unwrap(),
        "--key",
        public.to_str().unwrap(),
    ];
    // On its own the cut trail verifies: only the kept checkpoint tells.
    let us = set("us-2020");
    let replay_args = ["replay", "--policies", us.to_str().unwrap(), "--trail", t];
    let (code, out, err) = run_cli(&replay_args);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("| 25 |"), "{out}");
    let (code, _, err) = run_cli(&[&replay_args[..], &trust[..]].concat());
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("the audit trail does not verify") && err.contains("30"),
        "{err}"
    );
    let (code, _, err) =
        run_cli(&[&["audit", "export", t, "--parquet", e][..], &trust[..]].concat());
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("nothing was written"), "{err}");
    assert!(!exported.exists());
    let (code, _, err) = run_cli(&["audit", "export", t, "--parquet", e]);
    assert_eq!(code, 0, "{err}");
    assert!(exported.exists());
    // A checkpoint or key without a trail to verify is a usage error.
    let (code, _, err) = run_cli(&[
        "replay",
        "--policies",
        us.to_str().unwrap(),
        e,
        "--key",
        public.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("give it with --trail"), "{err}");
}

/// A query reading only the answer's `decision` is given a function writing only it (the
/// usual filter, in an aggregate, counts what the whole answer counts); a query reading
/// another field, or the whole answer, is not; the column keeps its name; a Ballista codec
/// carries the function that writes the decision alone, and what it needs.
#[test]
fn the_decision_alone_is_written_by_a_function_of_its_own_where_only_it_is_read() {
    use replay::cluster::{LogicalCodec, PolicyRegistry};
    use replay::datafusion::logical_expr::ScalarUDF;
    use replay::datafusion_proto::logical_plan::LogicalExtensionCodec as _;
    use replay::udf::{Decide, NamedPolicy};

    let dir = tempfile::tempdir().unwrap();
    let (jsonl, parquet) = write_log(dir.path(), 2000, 5, 53);
    let expected = check_answers(&set("us-2020"), &[], &jsonl);
    let denies = expected.iter().filter(|e| e.starts_with("deny|")).count();
    assert!(denies > 100, "{denies}");
    runtime().block_on(async {
        let mut session = Session::new(Engine::Local, 2).await.unwrap();
        let loaded = replay::load_policy(&set("us-2020")).unwrap();
        session
            .add_policy("decide", loaded.clone(), policy::Posture::default())
            .unwrap();
        session
            .add_inputs(&Inputs {
                parquet: vec![parquet.clone()],
                ..Inputs::default()
            })
            .await
            .unwrap();
        let call = Session::call("decide");
        let run = |sql: String| {
            let ctx = session.ctx.clone();
            async move {
                let frame = ctx.sql(&sql).await.unwrap();
                let named = frame.schema().field(0).name().clone();
                let plan = format!(
                    "{}",
                    frame.clone().into_optimized_plan().unwrap().display_indent()
                );
                let batches = frame.collect().await.unwrap();
                (named, plan, batches)
            }
        };
        // The usual filter, in an aggregate.
        let (_, plan, batches) = run(format!(
            "SELECT count(*) FILTER (WHERE {call}['decision'] = 'deny') AS denied FROM requests_parquet"
        ))
        .await;
        assert!(plan.contains("decide.decision("), "{plan}");
        let counted = batches[0]
            .column(0)
            .as_primitive::<replay::datafusion::arrow::datatypes::Int64Type>()
            .value(0);
        assert_eq!(counted as usize, denies);
        // `EXPLAIN VERBOSE` names the rule where it changed the plan.
        let (_, _, batches) = run(format!(
            "EXPLAIN VERBOSE SELECT {call}['decision'] FROM requests_parquet"
        ))
        .await;
        let steps = replay::datafusion::arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string();
        assert!(
            steps.contains("logical_plan after gatekeeper_decision_only"),
            "{steps}"
        );
        // The decision as a column keeps the expression's name.
        let (named, plan, batches) =
            run(format!("SELECT {call}['decision'] FROM requests_parquet LIMIT 3")).await;
        assert!(plan.contains("decide.decision("), "{plan}");
        assert_eq!(batches[0].schema().field(0).name(), &named);
        assert!(named.contains("decide(") && named.contains("decision"), "{named}");
        // Another field, and the whole answer, are the whole function's.
        for sql in [
            format!("SELECT {call}['because'] FROM requests_parquet LIMIT 3"),
            format!("SELECT {call} FROM requests_parquet LIMIT 3"),
        ] {
            let (_, plan, _) = run(sql).await;
            assert!(!plan.contains("decide.decision("), "{plan}");
        }
        // Sent to a cluster and back: the function that writes the decision alone, under
        // the policy's revision and posture.
        let registry = Arc::new(PolicyRegistry::default());
        registry.insert(loaded.clone());
        let codec = LogicalCodec::new(registry);
        let whole = Decide::new(Arc::new(NamedPolicy {
            name: "decide".to_owned(),
            loaded,
            posture: policy::Posture::default(),
        }));
        for (udf, only) in [
            (ScalarUDF::new_from_impl(whole.decision_only()), true),
            (ScalarUDF::new_from_impl(Decide::new(whole.policy().clone())), false),
        ] {
            let mut buf = Vec::new();
            codec.try_encode_udf(&udf, &mut buf).unwrap();
            let back = codec.try_decode_udf(udf.name(), &buf).unwrap();
            let back = back.inner().downcast_ref::<Decide>().unwrap();
            assert_eq!(back.is_decision_only(), only);
            assert_eq!(back.policy().name, "decide");
            assert_eq!(udf.name(), if only { "decide.decision" } else { "decide" });
        }
    });
}
