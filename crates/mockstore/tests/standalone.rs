//! The load run's stores as processes of their own (`simulate serve-store`): started,
//! driven, measured and stopped. Here, because only this package's tests can start its
//! `simulate` program.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use mockstore::load::{Options, Stores};
use mockstore::standalone::{SERVE_STORE, StoreProcess, StoreProgram};

fn program() -> StoreProgram {
    StoreProgram {
        program: env!("CARGO_BIN_EXE_simulate").into(),
        args: vec![SERVE_STORE.into()],
    }
}

fn policies() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies");
    vec![root.join("us-2020"), root.join("us-2024-pafaca")]
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Both stores answer the same workload, the one with the layer as `gatekeeper check`
/// decides and the one without it with a 200 for every request; every pair has a round
/// through each, in alternating order, and each store's CPU time is read.
#[test]
fn a_load_run_through_store_processes_measures_each_store() {
    let options = Options {
        requests: 300,
        seed: 7,
        concurrency: 4,
        posture: policy::Posture::default(),
        pairs: 2,
        stores: Stores::Processes(program()),
    };
    let report = runtime()
        .block_on(mockstore::load::run(
            &policies(),
            &options,
            &indicatif::ProgressBar::hidden(),
        ))
        .unwrap();
    assert!(report.mismatches.is_empty(), "{:#?}", report.mismatches);
    assert!(
        report.denied > 0 && report.denied < 300,
        "{}",
        report.denied
    );
    assert_eq!(report.stores, "processes");
    let order: Vec<bool> = report.pairs.iter().map(|p| p.gated_first).collect();
    assert_eq!(order, [true, false]);
    if cfg!(target_os = "linux") {
        for p in &report.pairs {
            let (g, u) = (p.gated.cpu_us_per_request, p.ungated.cpu_us_per_request);
            assert!(
                g.is_some_and(|g| g > 0.0) && u.is_some_and(|u| u > 0.0),
                "{p:?}"
            );
            assert!(p.cpu_ratio.is_some(), "{p:?}");
        }
        assert!(report.cpu_ratio.is_some_and(f64::is_finite));
    }
}

/// A store process serves until its standard input closes, then exits by itself, with
/// success: no store outlives the run that started it.
#[test]
fn a_store_process_exits_when_its_standard_input_closes() {
    let rt = runtime();
    let store = rt
        .block_on(StoreProcess::start(
            &program(),
            &policies(),
            &mockstore::Guard::Layer,
            policy::Posture::default(),
        ))
        .unwrap();
    let health = reqwest::blocking::get(format!("{}/v1/admin/clock", store.base)).unwrap();
    assert_eq!(health.status().as_u16(), 200);
    let status = rt
        .block_on(store.stop())
        .expect("the store had to be killed");
    assert!(status.success(), "{status}");
}

/// A program that does not print a store's address is refused with what it printed, and
/// does not hang the run.
#[test]
fn a_program_that_does_not_serve_is_refused() {
    let not_a_store = StoreProgram {
        program: env!("CARGO_BIN_EXE_simulate").into(),
        args: vec!["--help".into()],
    };
    let error = runtime()
        .block_on(StoreProcess::start(
            &not_a_store,
            &policies(),
            &mockstore::Guard::Off,
            policy::Posture::default(),
        ))
        .unwrap_err();
    assert!(format!("{error:#}").contains("did not start"), "{error:#}");
}
