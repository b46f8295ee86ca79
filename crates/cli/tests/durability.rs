//! Durable audit under `kill -9`: a real `gatekeeper serve` process, under load from
//! single and batch decide requests on 127.0.0.1, is killed and restarted on the same
//! audit folder ten times; every decision a client was answered is in the trail.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CYCLES: usize = 10;
const REQUESTS: [&str; 2] = [
    r#"{"app":{"platform":"android","id":"com.tencent.mm"},"action":"update","at":"2020-09-22T12:00:00Z","storefront":"US"}"#,
    r#"{"app":{"platform":"android","id":"com.example.notes"},"action":"download","at":"2020-09-22T12:00:00Z","storefront":"US"}"#,
];

/// Starts `gatekeeper serve` on a free port; returns the process and its base URL.
fn start(audit: &Path) -> (Child, String) {
    let policies = concat!(env!("CARGO_MANIFEST_DIR"), "/../../policies/us-2020");
    let mut child = Command::new(env!("CARGO_BIN_EXE_gatekeeper"))
        .args(["serve", "--policies", policies, "--listen", "127.0.0.1:0"])
        .arg("--audit-dir")
        .arg(audit)
        .args(["--audit-durability", "durable"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting `gatekeeper serve`");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    // Reads the address, then drains standard error until the process ends.
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(addr) = line.strip_prefix("gatekeeper serving on ") {
                let _ = tx.send(addr.trim().to_owned());
            }
        }
    });
    let base = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("`gatekeeper serve` did not report its address within 60 s");
    (child, base)
}

#[derive(Default)]
struct Answers {
    single: Vec<String>,
    batch: Vec<String>,
    refused: Vec<String>,
}

/// Sends decide requests (one at a time, or batches of 25) until the server goes away,
/// `stop` is set or 60 s pass; records every decision id it is answered.
fn client(base: String, batch: bool, answers: Arc<Mutex<Answers>>, stop: Arc<AtomicBool>) {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let body = if batch {
        let items: Vec<&str> = (0..25).map(|i| REQUESTS[i % 2]).collect();
        format!("[{}]", items.join(","))
    } else {
        REQUESTS[0].to_owned()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        i += 1;
        let body = if batch {
            body.clone()
        } else {
            REQUESTS[i % 2].to_owned()
        };
        let response = client.post(format!("{base}/v1/decide")).body(body).send();
        let Ok(response) = response else { break };
        let status = response.status();
        let Ok(text) = response.text() else { break };
        if status != reqwest::StatusCode::OK {
            answers
                .lock()
                .unwrap()
                .refused
                .push(format!("{status}: {text}"));
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        let ids: Vec<String> = match &value {
            serde_json::Value::Array(items) => items
                .iter()
                .map(|v| v["decision_id"].as_str().unwrap().to_owned())
                .collect(),
            one => vec![one["decision_id"].as_str().unwrap().to_owned()],
        };
        let mut a = answers.lock().unwrap();
        if batch {
            a.batch.extend(ids);
        } else {
            a.single.extend(ids);
        }
    }
}

fn answered(answers: &Mutex<Answers>) -> usize {
    let a = answers.lock().unwrap();
    a.single.len() + a.batch.len()
}

#[test]
fn no_answered_decision_is_missing_from_a_durable_trail_after_kill_9() {
    let audit = tempfile::tempdir().unwrap();
    let answers = Arc::new(Mutex::new(Answers::default()));
    for cycle in 0..CYCLES {
        let (mut child, base) = start(audit.path());
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = [false, false, true]
            .into_iter()
            .map(|batch| {
                let (base, answers, stop) = (base.clone(), answers.clone(), stop.clone());
                std::thread::spawn(move || client(base, batch, answers, stop))
            })
            .collect();
        // Kill under load: once this cycle has been answered a few hundred decisions,
        // plus a few milliseconds that vary by cycle.
        let before = answered(&answers);
        let deadline = Instant::now() + Duration::from_secs(30);
        while answered(&answers) < before + 300 {
            assert!(
                Instant::now() < deadline,
                "cycle {cycle}: no load within 30 s"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(Duration::from_millis((cycle as u64 * 7) % 23));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        stop.store(true, Ordering::Relaxed);
        for c in clients {
            c.join().unwrap();
        }
    }
    let a = answers.lock().unwrap();
    assert!(
        a.refused.is_empty(),
        "refused: {:?}",
        &a.refused[..a.refused.len().min(3)]
    );
    // What a restart would cut (a torn tail) is never an answered record.
    let records = gatekeeper::audit::read_records(&[audit.path()]).unwrap();
    let recorded: HashSet<&str> = records.iter().filter_map(|r| r.id.as_deref()).collect();
    let missing_single = a
        .single
        .iter()
        .filter(|id| !recorded.contains(id.as_str()))
        .count();
    let missing_batch = a
        .batch
        .iter()
        .filter(|id| !recorded.contains(id.as_str()))
        .count();
    eprintln!(
        "{CYCLES} kill cycles: {} single and {} batch answers, {} records; answered but unrecorded: {missing_single} single, {missing_batch} batch",
        a.single.len(),
        a.batch.len(),
        records.len()
    );
    assert!(!a.single.is_empty() && !a.batch.is_empty());
    assert_eq!((missing_single, missing_batch), (0, 0));
    gatekeeper::verify(&[audit.path()]).unwrap();
}
