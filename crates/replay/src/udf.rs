//! The decision function: Gatekeeper's own `Policy::decide`, as a DataFusion scalar
//! function over the columns of a request table.
//!
//! Each registered function carries one loaded policy and one posture, under a name of
//! its own (`decide`, `decide_old`, ...), so that several versions of a policy set
//! answer side by side in one query. It is called with the request columns in the order
//! of [`crate::schema::argument_names`] (the first nine at least) and returns a struct
//! ([`crate::schema::decision_fields`]). A batch is decided row by row into Arrow
//! builders, reading the request in place: the usual request allocates nothing.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray as _, ListArray, ListBuilder, StringBuilder, StringViewArray,
    StructArray, TimestampNanosecondBuilder,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::{Result, exec_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use policy::{
    AppRecordRef, Policy, Posture, PublisherRecordRef, Request, RequestRecordRef, Verdict,
};

use crate::schema::{self, ALL_ARGUMENTS, REQUIRED_ARGUMENTS, TEXT_COLUMNS};

/// A loaded policy and its revision.
#[derive(Debug)]
pub struct LoadedRevision {
    /// The hex SHA-256 of the policy's content (`gatekeeper::Revision`).
    pub revision: String,
    pub policy: Policy,
    /// Where it was loaded from, for messages.
    pub source: String,
}

/// A loaded policy under a name, with the posture it answers under.
#[derive(Debug)]
pub struct NamedPolicy {
    /// The function's name in SQL.
    pub name: String,
    pub loaded: Arc<LoadedRevision>,
    pub posture: Posture,
}

/// The scalar function of one [`NamedPolicy`].
#[derive(Debug)]
pub struct Decide {
    policy: Arc<NamedPolicy>,
    signature: Signature,
}

impl PartialEq for Decide {
    fn eq(&self, other: &Decide) -> bool {
        self.policy.name == other.policy.name
            && self.policy.loaded.revision == other.policy.loaded.revision
            && self.policy.posture == other.policy.posture
    }
}

impl Eq for Decide {}

impl Hash for Decide {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.policy.name.hash(state);
        self.policy.loaded.revision.hash(state);
    }
}

impl Decide {
    /// The function deciding under `policy`.
    pub fn new(policy: Arc<NamedPolicy>) -> Decide {
        Decide {
            policy,
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }

    /// The function, ready to register.
    pub fn udf(policy: Arc<NamedPolicy>) -> ScalarUDF {
        ScalarUDF::new_from_impl(Decide::new(policy))
    }

    /// The policy it decides under.
    pub fn policy(&self) -> &Arc<NamedPolicy> {
        &self.policy
    }
}

fn is_text(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null
    ) || matches!(t, DataType::Dictionary(_, v) if is_text(v))
}

fn is_text_list(t: &DataType) -> bool {
    match t {
        DataType::List(f) | DataType::LargeList(f) => is_text(f.data_type()),
        DataType::Null => true,
        _ => false,
    }
}

impl ScalarUDFImpl for Decide {
    fn name(&self) -> &str {
        &self.policy.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let n = arg_types.len();
        if !(REQUIRED_ARGUMENTS..=ALL_ARGUMENTS).contains(&n) {
            return plan_err!(
                "{}() takes {REQUIRED_ARGUMENTS} to {ALL_ARGUMENTS} arguments ({}), not {n}",
                self.policy.name,
                schema::argument_names().collect::<Vec<_>>().join(", ")
            );
        }
        let mut names = schema::argument_names();
        let mut coerced = Vec::with_capacity(n);
        for (i, t) in arg_types.iter().enumerate() {
            let name = names.next().unwrap_or("?");
            if i < TEXT_COLUMNS.len() {
                if !is_text(t) {
                    return plan_err!(
                        "{}(): argument {} (`{name}`) must be text, not {t}",
                        self.policy.name,
                        i + 1
                    );
                }
                coerced.push(DataType::Utf8View);
            } else {
                if !is_text_list(t) {
                    return plan_err!(
                        "{}(): argument {} (`{name}`) must be a list of text, not {t}",
                        self.policy.name,
                        i + 1
                    );
                }
                coerced.push(schema::text_list());
            }
        }
        Ok(coerced)
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Struct(schema::decision_fields()))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let batch = decide_arrays(&self.policy, &arrays, rows)?;
        Ok(ColumnarValue::Array(Arc::new(batch)))
    }
}

/// The argument columns of a batch, read as text.
struct Inputs {
    text: Vec<StringViewArray>,
    codes: Option<ListArray>,
}

impl Inputs {
    fn new(arrays: &[ArrayRef], rows: usize) -> Result<Inputs> {
        let mut text = Vec::with_capacity(TEXT_COLUMNS.len());
        for i in 0..TEXT_COLUMNS.len() {
            let column = match arrays.get(i) {
                Some(a) => cast(a, &DataType::Utf8View)?,
                None => datafusion::arrow::array::new_null_array(&DataType::Utf8View, rows),
            };
            text.push(column.as_string_view().clone());
        }
        let codes = match arrays.get(TEXT_COLUMNS.len()) {
            Some(a) => Some(cast(a, &schema::text_list())?.as_list::<i32>().clone()),
            None => None,
        };
        for a in &text {
            if a.len() != rows {
                return exec_err!("a column has {} rows, the batch {rows}", a.len());
            }
        }
        Ok(Inputs { text, codes })
    }

    fn get(&self, column: usize, row: usize) -> Option<&str> {
        let a = &self.text[column];
        (!a.is_null(row)).then(|| a.value(row))
    }
}

/// What a row needs besides the borrowed request: a malformed shape found before
/// validation.
fn shape_error(inputs: &Inputs, row: usize) -> Option<&'static str> {
    let has = |c: usize| inputs.get(c, row).is_some();
    if has(0) != has(1) {
        return Some("`app_platform` and `app_id` are given together or not at all");
    }
    if has(10) != has(11) {
        return Some("`publisher_store` and `publisher_id` are given together or not at all");
    }
    if !has(2) {
        return Some("missing field `action`");
    }
    if !has(3) {
        return Some("missing field `at`");
    }
    None
}

/// Decides every row of `arrays` (the function's arguments) under `named`.
pub fn decide_arrays(named: &NamedPolicy, arrays: &[ArrayRef], rows: usize) -> Result<StructArray> {
    let mut out = Outputs::with_capacity(rows);
    let policy = &named.loaded.policy;
    read_requests(arrays, rows, |_, request| match request {
        Ok(r) => out.decision(&policy.decide(r, named.posture)),
        Err(problem) => out.error(&problem),
    })?;
    Ok(out.finish())
}

/// Reads every row of `arrays` (the decision function's arguments) as a request, in
/// place, in order: `each(row, Ok(request))`, or `each(row, Err(problem))` in the words
/// `gatekeeper check` uses. The usual request allocates nothing: every row is read into
/// one `Request`.
pub fn read_requests(
    arrays: &[ArrayRef],
    rows: usize,
    mut each: impl FnMut(usize, std::result::Result<&Request, std::borrow::Cow<'_, str>>),
) -> Result<()> {
    let inputs = Inputs::new(arrays, rows)?;
    let mut request: Option<Request> = None;
    let mut codes: Vec<&str> = Vec::new();
    for row in 0..rows {
        if let Some(e) = shape_error(&inputs, row) {
            each(row, Err(e.into()));
            continue;
        }
        codes.clear();
        if let Some(l) = &inputs.codes
            && !l.is_null(row)
        {
            let items = l.values().as_string::<i32>();
            let offsets = l.value_offsets();
            let (from, to) = (offsets[row] as usize, offsets[row + 1] as usize);
            if let Some(k) = (from..to).find(|&k| items.is_null(k)) {
                each(
                    row,
                    Err(format!(
                        "`code_sha256`: item {} is null, not a SHA-256 digest",
                        k - from + 1
                    )
                    .into()),
                );
                continue;
            }
            codes.extend((from..to).map(|k| items.value(k)));
        }
        let at = inputs.get(3, row).unwrap_or_default();
        let record = RequestRecordRef {
            app: inputs
                .get(0, row)
                .zip(inputs.get(1, row))
                .map(|(platform, id)| AppRecordRef { platform, id }),
            publisher: inputs
                .get(10, row)
                .zip(inputs.get(11, row))
                .map(|(store, id)| PublisherRecordRef { store, id }),
            action: inputs.get(2, row).unwrap_or_default(),
            at,
            known_at: inputs.get(9, row),
            storefront: inputs.get(4, row),
            device_country: inputs.get(5, row),
            ip_country: inputs.get(6, row),
            billing_country: inputs.get(7, row),
            server_country: inputs.get(8, row),
            signing_cert_sha256: inputs.get(12, row),
            code_sha256: std::mem::take(&mut codes),
        };
        let read = match &mut request {
            Some(r) => record.read_into(r),
            slot => record.clone().into_request().map(|r| {
                *slot = Some(r);
            }),
        };
        codes = record.code_sha256;
        match (read, &request) {
            (Err(e), _) => each(row, Err(e.to_string().into())),
            (Ok(()), Some(r)) => each(row, Ok(r)),
            (Ok(()), None) => each(row, Err("the request was not kept".into())),
        }
    }
    Ok(())
}

/// The builders of the result's fields.
struct Outputs {
    decision: StringBuilder,
    because: StringBuilder,
    by: StringBuilder,
    prohibitions: ListBuilder<StringBuilder>,
    instruments: ListBuilder<StringBuilder>,
    region: StringBuilder,
    app: StringBuilder,
    owner: StringBuilder,
    at: TimestampNanosecondBuilder,
    error: StringBuilder,
    /// The instruments of a deny written so far (kept between rows for its memory).
    seen: Vec<u32>,
}

impl Outputs {
    fn with_capacity(rows: usize) -> Outputs {
        let text = |bytes: usize| StringBuilder::with_capacity(rows, rows * bytes);
        let list = || {
            ListBuilder::with_capacity(StringBuilder::new(), rows)
                .with_field(Arc::new(Field::new_list_field(DataType::Utf8, true)))
        };
        Outputs {
            decision: text(5),
            because: text(8),
            by: text(8),
            prohibitions: list(),
            instruments: list(),
            region: text(4),
            app: text(6),
            owner: text(6),
            at: TimestampNanosecondBuilder::with_capacity(rows).with_timezone("UTC"),
            error: StringBuilder::new(),
            seen: Vec::new(),
        }
    }

    fn error(&mut self, message: &str) {
        self.decision.append_null();
        self.because.append_null();
        self.by.append_null();
        self.prohibitions.append_null();
        self.instruments.append_null();
        self.region.append_null();
        self.app.append_null();
        self.owner.append_null();
        self.at.append_null();
        self.error.append_value(message);
    }

    fn decision(&mut self, d: &policy::Decision<'_>) {
        let policy = d.policy;
        match &d.verdict {
            Verdict::Deny { prohibitions, .. } => {
                self.decision.append_value("deny");
                self.because.append_null();
                self.by.append_null();
                self.seen.clear();
                for &p in prohibitions.iter() {
                    let pr = policy.prohibition(p);
                    self.prohibitions.values().append_value(&pr.id);
                    if !self.seen.contains(&pr.instrument) {
                        self.seen.push(pr.instrument);
                        self.instruments
                            .values()
                            .append_value(&policy.instrument(pr.instrument).id);
                    }
                }
                self.prohibitions.append(true);
                self.instruments.append(true);
            }
            Verdict::Allow { because, by, .. } => {
                self.decision.append_value("allow");
                self.because.append_value(because.as_str());
                match by {
                    Some(b) => {
                        let id = &policy.instrument(*b).id;
                        self.by.append_value(id);
                        self.instruments.values().append_value(id);
                    }
                    None => self.by.append_null(),
                }
                self.prohibitions.append(true);
                self.instruments.append(true);
            }
        }
        self.region
            .append_option(d.jurisdiction.as_ref().map(|j| j.region.id.as_str()));
        self.app
            .append_option(d.matched.and_then(|m| m.app).map(|a| a.id.as_str()));
        self.owner
            .append_option(d.matched.map(|m| m.owner.id.as_str()));
        self.at.append_value(d.at.as_nanos());
        self.error.append_null();
    }

    fn finish(mut self) -> StructArray {
        let arrays: Vec<ArrayRef> = vec![
            Arc::new(self.decision.finish()),
            Arc::new(self.because.finish()),
            Arc::new(self.by.finish()),
            Arc::new(self.prohibitions.finish()),
            Arc::new(self.instruments.finish()),
            Arc::new(self.region.finish()),
            Arc::new(self.app.finish()),
            Arc::new(self.owner.finish()),
            Arc::new(self.at.finish()),
            Arc::new(self.error.finish()),
        ];
        StructArray::new(schema::decision_fields(), arrays, None)
    }
}
