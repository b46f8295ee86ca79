//! `cargo xtask gen-log`: writes a seeded, realistic request log as Parquet and JSON Lines
//! (see `replay::genlog`).

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use replay::datafusion::arrow::array::{ArrayRef, RecordBatch, UInt64Array};
use replay::datafusion::arrow::datatypes::{DataType, Field, Schema};
use replay::datafusion::parquet::arrow::ArrowWriter;
use replay::datafusion::parquet::basic::{Compression, ZstdLevel};
use replay::datafusion::parquet::file::properties::WriterProperties;
use replay::genlog::{LogGenerator, LogSpec};

#[derive(Parser, Debug)]
#[command(
    name = "gen-log",
    about = "Write a seeded, realistic request log (Parquet and JSON Lines)"
)]
struct Args {
    /// Requests to write.
    #[arg(long, default_value_t = 1_000_000)]
    rows: u64,
    /// The seed: the same seed, rows and policies give the same log.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The folder to write into (created if needed).
    #[arg(long, default_value = "target/logs")]
    out: PathBuf,
    /// Which files: parquet, jsonl or both.
    #[arg(long, default_value = "both", value_parser = ["parquet", "jsonl", "both"])]
    format: String,
    /// Parquet files to split the log into.
    #[arg(long, default_value_t = 1)]
    files: u64,
    /// Made-up apps beside the policies' own.
    #[arg(long, default_value_t = 50_000)]
    other_apps: usize,
    /// One row in this many is malformed (0: none).
    #[arg(long, default_value_t = 997)]
    malformed_every: u64,
    /// Policy sets whose apps the log asks for.
    #[arg(long = "policies", value_name = "DIR", default_values = ["policies/us-2020", "policies/us-2020-courts", "policies/us-2024-pafaca"])]
    policies: Vec<PathBuf>,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let mut loaded = Vec::new();
    for dir in &args.policies {
        let l = gatekeeper::load_dirs(std::slice::from_ref(dir))
            .map_err(|d| anyhow::anyhow!("{}: {d}", dir.display()))?;
        loaded.push(l.policy);
    }
    let refs: Vec<&policy::Policy> = loaded.iter().collect();
    let spec = LogSpec {
        rows: args.rows,
        seed: args.seed,
        other_apps: args.other_apps,
        malformed_every: args.malformed_every,
    };
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating `{}`", args.out.display()))?;
    let parquet = args.format != "jsonl";
    let jsonl = args.format != "parquet";
    let mut generator = LogGenerator::new(spec, &refs);
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1)?))
        .set_max_row_group_row_count(Some(1 << 20))
        .build();
    let files = args.files.max(1);
    let per_file = args.rows.div_ceil(files);
    let mut json = if jsonl {
        let path = args.out.join("requests.jsonl");
        let f = std::fs::File::create(&path)
            .with_context(|| format!("creating `{}`", path.display()))?;
        Some(std::io::BufWriter::with_capacity(1 << 20, f))
    } else {
        None
    };
    // `seq`, the row's position in the log from 1 (its line in the JSON Lines file),
    // before the request's columns: what a check of a replay joins on.
    let numbered = {
        let mut fields = vec![Arc::new(Field::new("seq", DataType::UInt64, false))];
        fields.extend(replay::schema::requests().fields().iter().cloned());
        Arc::new(Schema::new(fields))
    };
    let mut seq = 0u64;
    let mut left = args.rows;
    let mut written_files = Vec::new();
    for k in 0..files {
        let mut in_file = per_file.min(left);
        if in_file == 0 {
            break;
        }
        let path = args.out.join(format!("requests-{k:05}.parquet"));
        let mut writer = if parquet {
            let f = std::fs::File::create(&path)
                .with_context(|| format!("creating `{}`", path.display()))?;
            Some(ArrowWriter::try_new(
                f,
                numbered.clone(),
                Some(props.clone()),
            )?)
        } else {
            None
        };
        while in_file > 0 {
            let n = in_file.min(65_536) as usize;
            let records = generator.next_records(n);
            if let Some(w) = &mut writer {
                let batch = replay::genlog::batch_of(&records);
                let mut columns: Vec<ArrayRef> = vec![Arc::new(UInt64Array::from_iter_values(
                    seq + 1..=seq + n as u64,
                ))];
                columns.extend(batch.columns().iter().cloned());
                w.write(&RecordBatch::try_new(numbered.clone(), columns)?)?;
            }
            if let Some(out) = &mut json {
                for record in &records {
                    serde_json::to_writer(&mut *out, record)?;
                    out.write_all(b"\n")?;
                }
            }
            seq += n as u64;
            in_file -= n as u64;
            left -= n as u64;
        }
        if let Some(w) = writer {
            w.close()?;
            written_files.push(path);
        }
    }
    if let Some(mut out) = json {
        out.flush()?;
        written_files.push(args.out.join("requests.jsonl"));
    }
    for f in written_files {
        println!("{}", f.display());
    }
    Ok(())
}
