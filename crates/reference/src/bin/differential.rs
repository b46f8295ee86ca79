//! `differential --cases N [--seed S] [--threads T] [--show K] [--no-shrink]`: the engine
//! against the reference evaluator on generated policies. Exits non-zero on any
//! mismatch, after printing the first few in full.
//!
//! `differential --replay DIR REQUEST`: one request (a JSON file) against the policy files
//! in a folder, under every posture, both ways: to check a reproduction.

use std::process::ExitCode;

use anyhow::{Context, bail};

use reference::Config;

fn value<T: std::str::FromStr>(
    args: &mut impl Iterator<Item = String>,
    flag: &str,
) -> anyhow::Result<T>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    let text = args
        .next()
        .with_context(|| format!("`{flag}` needs a value"))?;
    text.parse()
        .with_context(|| format!("`{flag}`: cannot read `{text}`"))
}

fn config() -> anyhow::Result<Config> {
    let mut config = Config {
        cases: 10_000,
        ..Config::default()
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--cases" => config.cases = value(&mut args, "--cases")?,
            "--seed" => config.seed = value(&mut args, "--seed")?,
            "--threads" => config.threads = value(&mut args, "--threads")?,
            "--show" => config.show = value(&mut args, "--show")?,
            "--no-shrink" => config.shrink = false,
            other => bail!(
                "unknown argument `{other}`; usage: differential --cases N [--seed S] [--threads T] [--show K] [--no-shrink]"
            ),
        }
    }
    Ok(config)
}

/// Decides one request against a folder of policy files under every posture, both ways.
fn replay(dir: &str, request: &str) -> anyhow::Result<bool> {
    let mut names: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading `{dir}`"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    names.sort();
    let mut sources = Vec::new();
    for path in &names {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading `{}`", path.display()))?;
        sources.push(policy::Source::new(path.display().to_string(), text));
    }
    let policy = match policy::Policy::from_sources(sources) {
        Ok(p) => p,
        Err(d) => bail!("the policy does not load:\n{}", d.render()),
    };
    let text = std::fs::read_to_string(request).with_context(|| format!("reading `{request}`"))?;
    let record: policy::RequestRecord =
        serde_json::from_str(&text).with_context(|| format!("parsing `{request}`"))?;
    let request = record.into_request()?;
    let evaluator = reference::Evaluator::new(&policy, &request);
    let mut same = true;
    for posture in policy::Posture::ALL {
        let engine = policy.decide(&request, posture).to_record();
        let answer = evaluator.answer(posture);
        let fields = reference::Answer::from_record(&engine).differences(&answer);
        same &= fields.is_empty();
        println!("posture:   {}", serde_json::to_string(&posture)?);
        println!("engine:    {}", serde_json::to_string(&engine)?);
        println!("reference: {}", serde_json::to_string(&answer)?);
        if fields.is_empty() {
            println!("agree\n");
        } else {
            println!("differ in: {}\n", fields.join(", "));
        }
    }
    Ok(same)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--replay") {
        return match args.get(1..3) {
            Some([dir, request]) => match replay(dir, request) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(2)
                }
            },
            _ => {
                eprintln!("error: usage: differential --replay DIR REQUEST");
                ExitCode::from(2)
            }
        };
    }
    let config = match config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let report = reference::run(&config);
    print!("{}", report.render());
    if report.passed() {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "error: {} mismatches and {} other failures in {} cases",
            report.mismatches, report.other_failures, report.cases
        );
        ExitCode::FAILURE
    }
}
