//! Inputs as tables: request logs in Parquet (DataFusion's own reader) and in JSON Lines
//! (the `gatekeeper check` format, read here so that a line that is not a request is a
//! row that says so, with its file and line), and the audit trail (verified first).

use std::fs::File;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, ListBuilder, RecordBatch, StringBuilder, TimestampMillisecondBuilder, UInt64Builder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::streaming::StreamingTable;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchReceiverStream;
use datafusion::physical_plan::streaming::PartitionStream;
use policy::{RequestLayout, RequestRecord, RequestRecordRef};

use crate::schema::{self, TEXT_COLUMNS};

/// Rows per batch of the readers here.
pub const BATCH_ROWS: usize = 8192;

/// The columns a JSON Lines table adds before the request's: where the line is.
pub const FILE: &str = "file";
pub const LINE: &str = "line";
/// Why a line is not a request, as `gatekeeper check` says it (null for a request).
pub const INVALID: &str = "invalid";

/// The schema of a JSON Lines request table.
pub fn jsonl_schema() -> SchemaRef {
    let mut fields = vec![
        Field::new(FILE, DataType::Utf8, false),
        Field::new(LINE, DataType::UInt64, false),
    ];
    fields.extend(
        schema::requests()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true)),
    );
    fields.push(Field::new(INVALID, DataType::Utf8, true));
    Arc::new(Schema::new(fields))
}

/// Builders of the request columns.
struct RequestColumns {
    text: Vec<StringBuilder>,
    codes: ListBuilder<StringBuilder>,
}

impl RequestColumns {
    fn new() -> RequestColumns {
        RequestColumns {
            text: (0..TEXT_COLUMNS.len())
                .map(|_| StringBuilder::with_capacity(BATCH_ROWS, BATCH_ROWS * 10))
                .collect(),
            codes: ListBuilder::new(StringBuilder::new()),
        }
    }

    fn push(&mut self, r: &RequestRecordRef<'_>) {
        for (b, c) in self.text.iter_mut().zip(TEXT_COLUMNS) {
            b.append_option(c.of_ref(r));
        }
        if r.code_sha256.is_empty() {
            self.codes.append_null();
        } else {
            for c in &r.code_sha256 {
                self.codes.values().append_value(c);
            }
            self.codes.append(true);
        }
    }

    fn push_null(&mut self) {
        for b in &mut self.text {
            b.append_null();
        }
        self.codes.append_null();
    }

    fn finish(&mut self, into: &mut Vec<ArrayRef>) {
        for b in &mut self.text {
            into.push(Arc::new(b.finish()));
        }
        into.push(Arc::new(self.codes.finish()));
    }
}

impl schema::Column {
    /// The column's value in a borrowed request record.
    pub fn of_ref<'a>(self, r: &RequestRecordRef<'a>) -> Option<&'a str> {
        use schema::Column as C;
        match self {
            C::AppPlatform => r.app.map(|a| a.platform),
            C::AppId => r.app.map(|a| a.id),
            C::PublisherStore => r.publisher.map(|p| p.store),
            C::PublisherId => r.publisher.map(|p| p.id),
            C::Action => Some(r.action),
            C::At => Some(r.at),
            C::KnownAt => r.known_at,
            C::Storefront => r.storefront,
            C::DeviceCountry => r.device_country,
            C::IpCountry => r.ip_country,
            C::BillingCountry => r.billing_country,
            C::ServerCountry => r.server_country,
            C::SigningCert => r.signing_cert_sha256,
        }
    }
}

/// One JSON Lines file as a partition of a table.
#[derive(Debug)]
struct JsonlFile {
    path: PathBuf,
    schema: SchemaRef,
}

impl PartitionStream for JsonlFile {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let mut builder = RecordBatchReceiverStream::builder(self.schema.clone(), 2);
        let tx = builder.tx();
        let path = self.path.clone();
        let schema = self.schema.clone();
        builder.spawn_blocking(move || {
            read_jsonl(&path, &schema, |batch| {
                tx.blocking_send(Ok(batch))
                    .map_err(|_| DataFusionError::Execution("the query stopped reading".into()))
            })
        });
        builder.build()
    }
}

/// Reads a JSON Lines file of requests into batches of [`jsonl_schema`], a row per
/// line that is not blank: the request's columns, or `invalid` with what
/// `gatekeeper check` says of the line (its line number is the row's `line`).
pub fn read_jsonl(
    path: &Path,
    schema: &SchemaRef,
    mut send: impl FnMut(RecordBatch) -> Result<()>,
) -> Result<()> {
    let file = File::open(path).map_err(|e| {
        DataFusionError::Execution(format!("opening requests `{}`: {e}", path.display()))
    })?;
    let name = path.display().to_string();
    let mut input = BufReader::with_capacity(1 << 20, file);
    let mut line: Vec<u8> = Vec::new();
    let mut number = 0u64;
    let mut layout = RequestLayout::default();
    let mut files = StringBuilder::new();
    let mut lines = UInt64Builder::with_capacity(BATCH_ROWS);
    let mut columns = RequestColumns::new();
    let mut invalid = StringBuilder::new();
    let mut rows = 0usize;
    loop {
        line.clear();
        let read = input.read_until(b'\n', &mut line).map_err(|e| {
            DataFusionError::Execution(format!("reading `{name}` after line {number}: {e}"))
        })?;
        if read == 0 {
            break;
        }
        number += 1;
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        let problem = match std::str::from_utf8(&line) {
            Ok(text) if text.trim().is_empty() => continue,
            Ok(text) => {
                let text = text.trim();
                match layout.read(text) {
                    Some((record, used)) if text[used..].trim().is_empty() => {
                        columns.push(&record);
                        None
                    }
                    _ => match serde_json::from_str::<RequestRecord>(text) {
                        Ok(record) => {
                            columns.push(&record.borrowed());
                            None
                        }
                        Err(e) => Some(format!("invalid request: {e}")),
                    },
                }
            }
            Err(e) => Some(format!(
                "not UTF-8: byte {} of the line is not part of a UTF-8 character",
                e.valid_up_to() + 1
            )),
        };
        match problem {
            None => invalid.append_null(),
            Some(p) => {
                columns.push_null();
                invalid.append_value(p);
            }
        }
        files.append_value(&name);
        lines.append_value(number);
        rows += 1;
        if rows == BATCH_ROWS {
            send(finish(
                schema,
                &mut files,
                &mut lines,
                &mut columns,
                &mut invalid,
            )?)?;
            rows = 0;
        }
    }
    if rows > 0 {
        send(finish(
            schema,
            &mut files,
            &mut lines,
            &mut columns,
            &mut invalid,
        )?)?;
    }
    Ok(())
}

fn finish(
    schema: &SchemaRef,
    files: &mut StringBuilder,
    lines: &mut UInt64Builder,
    columns: &mut RequestColumns,
    invalid: &mut StringBuilder,
) -> Result<RecordBatch> {
    let mut arrays: Vec<ArrayRef> = vec![Arc::new(files.finish()), Arc::new(lines.finish())];
    columns.finish(&mut arrays);
    arrays.push(Arc::new(invalid.finish()));
    Ok(RecordBatch::try_new(schema.clone(), arrays)?)
}

/// A table of JSON Lines request files, a partition per file.
pub fn jsonl_table(paths: &[PathBuf]) -> Result<StreamingTable> {
    let schema = jsonl_schema();
    let partitions: Vec<Arc<dyn PartitionStream>> = paths
        .iter()
        .map(|p| {
            Arc::new(JsonlFile {
                path: p.clone(),
                schema: schema.clone(),
            }) as Arc<dyn PartitionStream>
        })
        .collect();
    StreamingTable::try_new(schema, partitions)
}

/// The columns of the audit trail's table, before the request's: the record's number,
/// decision id, time (milliseconds), the policy revision, what the caller was told
/// (`deny`, `shadow-deny` or `allow`), the prohibitions of a deny, the reason and
/// instrument of an allow, and, for a record of a gap in the trail, how many records
/// were lost.
pub fn trail_schema() -> SchemaRef {
    let mut fields = vec![
        Field::new("n", DataType::UInt64, false),
        Field::new("id", DataType::Utf8, true),
        Field::new(
            "t",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        ),
        Field::new("rev", DataType::Utf8, true),
        Field::new("served", DataType::Utf8, true),
        Field::new("served_prohibitions", schema::text_list(), true),
        Field::new("served_because", DataType::Utf8, true),
        Field::new("served_by", DataType::Utf8, true),
        Field::new("lost", DataType::UInt64, true),
    ];
    fields.extend(
        schema::requests()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true)),
    );
    Arc::new(Schema::new(fields))
}

/// The audit trail as batches of [`trail_schema`]: verified first (a trail that does
/// not verify is refused with the reason), then read record by record.
pub fn read_trail(
    paths: &[PathBuf],
    checkpoints: &[gatekeeper::audit::Checkpoint],
    key: Option<&gatekeeper::keys::VerifierKey>,
) -> Result<(gatekeeper::audit::VerifyReport, Vec<RecordBatch>)> {
    let report = gatekeeper::audit::verify_with(paths, checkpoints, key)
        .map_err(|e| DataFusionError::Execution(format!("the audit trail does not verify: {e}")))?;
    let records = gatekeeper::audit::read_records(paths)
        .map_err(|e| DataFusionError::Execution(format!("the audit trail does not read: {e}")))?;
    let schema = trail_schema();
    let mut batches = Vec::new();
    for chunk in records.chunks(BATCH_ROWS) {
        let mut n = UInt64Builder::with_capacity(chunk.len());
        let mut id = StringBuilder::new();
        let mut t = TimestampMillisecondBuilder::with_capacity(chunk.len()).with_timezone("UTC");
        let mut rev = StringBuilder::new();
        let mut served = StringBuilder::new();
        let mut prohibitions = ListBuilder::new(StringBuilder::new());
        let mut because = StringBuilder::new();
        let mut by = StringBuilder::new();
        let mut lost = UInt64Builder::with_capacity(chunk.len());
        let mut columns = RequestColumns::new();
        for r in chunk {
            n.append_value(r.n);
            id.append_option(r.id.as_deref());
            t.append_value(r.t);
            rev.append_option(r.rev.as_deref());
            let told = match r.told() {
                Some(gatekeeper::audit::Told::Deny) => Some("deny"),
                Some(gatekeeper::audit::Told::ShadowDeny) => Some("shadow-deny"),
                Some(gatekeeper::audit::Told::Allow) => Some("allow"),
                None => None,
            };
            served.append_option(told);
            match r.deny.as_ref().or(r.shadow_deny.as_ref()) {
                Some(ids) => {
                    for p in ids {
                        prohibitions.values().append_value(p);
                    }
                    prohibitions.append(true);
                }
                None => prohibitions.append_null(),
            }
            because.append_option(r.allow.as_deref());
            by.append_option(r.by.as_deref());
            lost.append_option(r.resumed.as_ref().map(|g| g.lost));
            match &r.req {
                Some(req) => columns.push(&req.borrowed()),
                None => columns.push_null(),
            }
        }
        let mut arrays: Vec<ArrayRef> = vec![
            Arc::new(n.finish()),
            Arc::new(id.finish()),
            Arc::new(t.finish()),
            Arc::new(rev.finish()),
            Arc::new(served.finish()),
            Arc::new(prohibitions.finish()),
            Arc::new(because.finish()),
            Arc::new(by.finish()),
            Arc::new(lost.finish()),
        ];
        columns.finish(&mut arrays);
        batches.push(RecordBatch::try_new(schema.clone(), arrays)?);
    }
    Ok((report, batches))
}

/// A Parquet file written whole or not at all: into a temporary file beside `path`
/// (readable, mode 0644), renamed over it by [`WholeParquet::finish`]; dropped before,
/// it leaves nothing. Every batch is written with the first schema's types.
pub(crate) struct WholeParquet {
    path: std::path::PathBuf,
    file: tempfile::NamedTempFile,
    writer: datafusion::parquet::arrow::ArrowWriter<std::fs::File>,
    schema: SchemaRef,
}

impl WholeParquet {
    pub(crate) fn create(path: &std::path::Path, schema: SchemaRef) -> Result<WholeParquet> {
        let failed = |e: std::io::Error| {
            DataFusionError::Execution(format!("writing `{}`: {e}", path.display()))
        };
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => std::path::Path::new("."),
        };
        let mut builder = tempfile::Builder::new();
        builder.prefix(".gatekeeper-").suffix(".tmp");
        #[cfg(unix)]
        builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644));
        let file = builder.tempfile_in(dir).map_err(failed)?;
        let handle = file.as_file().try_clone().map_err(failed)?;
        let writer =
            datafusion::parquet::arrow::ArrowWriter::try_new(handle, schema.clone(), None)?;
        Ok(WholeParquet {
            path: path.to_owned(),
            file,
            writer,
            schema,
        })
    }

    /// Writes `batch`, its columns cast to the file's types (parts of one view may plan
    /// the same column with two string types).
    pub(crate) fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let columns = batch
            .columns()
            .iter()
            .zip(self.schema.fields())
            .map(|(c, f)| datafusion::arrow::compute::cast(c, f.data_type()))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        self.writer
            .write(&RecordBatch::try_new(self.schema.clone(), columns)?)?;
        Ok(())
    }

    pub(crate) fn finish(self) -> Result<()> {
        let failed = |e: std::io::Error| {
            DataFusionError::Execution(format!("writing `{}`: {e}", self.path.display()))
        };
        self.writer.close()?;
        self.file.as_file().sync_all().map_err(failed)?;
        self.file.persist(&self.path).map_err(|e| failed(e.error))?;
        Ok(())
    }
}
