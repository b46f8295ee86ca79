//! The decision function: Gatekeeper's own `Policy::decide`, as a DataFusion scalar
//! function over the columns of a request table.
//!
//! Each registered function carries one loaded policy and one posture, under a name of
//! its own (`decide`, `decide_old`, ...), so that several versions of a policy set
//! answer side by side in one query. It is called with the request columns in the order
//! of [`crate::schema::argument_names`] (the first nine at least) and returns a struct
//! ([`crate::schema::decision_fields`]). A batch is decided row by row, reading the
//! request in place: the usual request allocates nothing. The answer is written into
//! plain vectors (the texts it names copied from the policy it borrows them from), not
//! through an Arrow builder per field. A query that reads only the answer's `decision`
//! (`decide(...)['decision'] = 'deny'`) is given a function writing only that field
//! ([`DecisionOnly`]).

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayBuilder as _, ArrayRef, AsArray as _, ListArray, StringArray, StringBuilder,
    StringViewArray, StructArray, TimestampNanosecondArray,
};
use datafusion::arrow::buffer::{BooleanBuffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::tree_node::{Transformed, TreeNode as _};
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::{
    ColumnarValue, Expr, LogicalPlan, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};
use datafusion::optimizer::{ApplyOrder, OptimizerConfig, OptimizerRule};
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
    /// The `decision` field alone (`allow` or `deny`, null where the request is
    /// malformed), as text: what [`DecisionOnly`] puts in place of `f(...)['decision']`.
    decision_only: bool,
    /// The name in plans: the policy's, or with `.decision` after it.
    name: String,
}

impl PartialEq for Decide {
    fn eq(&self, other: &Decide) -> bool {
        self.policy.name == other.policy.name
            && self.policy.loaded.revision == other.policy.loaded.revision
            && self.policy.posture == other.policy.posture
            && self.decision_only == other.decision_only
    }
}

impl Eq for Decide {}

impl Hash for Decide {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.policy.name.hash(state);
        self.policy.loaded.revision.hash(state);
        self.decision_only.hash(state);
    }
}

impl Decide {
    /// The function deciding under `policy`.
    pub fn new(policy: Arc<NamedPolicy>) -> Decide {
        Decide {
            name: policy.name.clone(),
            policy,
            signature: Signature::user_defined(Volatility::Immutable),
            decision_only: false,
        }
    }

    /// The function giving only the `decision` field of this one's answer.
    pub fn decision_only(&self) -> Decide {
        Decide {
            name: format!("{}.decision", self.policy.name),
            policy: self.policy.clone(),
            signature: self.signature.clone(),
            decision_only: true,
        }
    }

    /// Whether it gives only the `decision` field.
    pub fn is_decision_only(&self) -> bool {
        self.decision_only
    }

    /// The function, ready to register.
    pub fn udf(policy: Arc<NamedPolicy>) -> ScalarUDF {
        ScalarUDF::new_from_impl(Decide::new(policy))
    }

    /// The policy it decides under.
    pub fn policy(&self) -> &Arc<NamedPolicy> {
        &self.policy
    }

    /// Decides every row of `arrays` (the function's arguments).
    fn decide_arrays(&self, arrays: &[ArrayRef], rows: usize) -> Result<StructArray> {
        let named = &self.policy;
        let policy = &named.loaded.policy;
        let mut out = Outputs::with_capacity(rows);
        read_requests(arrays, rows, |_, request| match request {
            Ok(r) => out.decision(&policy.decide(r, named.posture)),
            Err(problem) => out.error(&problem),
        })?;
        out.finish()
    }

    /// The `decision` field alone of every row: the decision without the texts it
    /// names (`Policy::decide_parts`).
    fn decision_arrays(&self, arrays: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
        let named = &self.policy;
        let policy = &named.loaded.policy;
        let mut out = TextColumn::with_capacity(rows, rows * 5);
        read_requests(arrays, rows, |_, request| {
            out.push(request.ok().map(|r| {
                if policy.decide_parts(r, named.posture).is_deny() {
                    "deny"
                } else {
                    "allow"
                }
            }));
        })?;
        Ok(out.finish()?.0)
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
        &self.name
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
        Ok(if self.decision_only {
            DataType::Utf8
        } else {
            DataType::Struct(schema::decision_fields())
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        Ok(ColumnarValue::Array(if self.decision_only {
            self.decision_arrays(&arrays, rows)?
        } else {
            Arc::new(self.decide_arrays(&arrays, rows)?)
        }))
    }
}

/// A query that reads only the `decision` field of an answer (`decide(...)['decision'] =
/// 'deny'`, the usual filter) is given a function that writes only that field: `get_field`
/// of a decision function's call, with the literal `decision`, becomes the call of
/// [`Decide::decision_only`] (under the expression's name, so that the plan's schema
/// stays). Other fields, and answers used whole, are left as they are.
#[derive(Debug, Default)]
pub struct DecisionOnly;

impl OptimizerRule for DecisionOnly {
    fn name(&self) -> &str {
        "gatekeeper_decision_only"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::BottomUp)
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        let names = NamePreserver::new(&plan);
        plan.map_expressions(|expr| {
            let name = names.save(&expr);
            let rewritten = expr.transform_up(|e| {
                Ok(match decision_only(&e) {
                    Some(call) => Transformed::yes(call),
                    None => Transformed::no(e),
                })
            })?;
            Ok(if rewritten.transformed {
                Transformed::yes(name.restore(rewritten.data))
            } else {
                rewritten
            })
        })
    }
}

/// `f(...)['decision']`, for a decision function `f`, as the call of its
/// [`Decide::decision_only`].
fn decision_only(e: &Expr) -> Option<Expr> {
    let Expr::ScalarFunction(get) = e else {
        return None;
    };
    let [Expr::ScalarFunction(call), Expr::Literal(field, _)] = &get.args[..] else {
        return None;
    };
    let named = match field {
        ScalarValue::Utf8(Some(f))
        | ScalarValue::Utf8View(Some(f))
        | ScalarValue::LargeUtf8(Some(f)) => f,
        _ => return None,
    };
    if get.func.name() != "get_field" || named != "decision" {
        return None;
    }
    let decide = call.func.inner().downcast_ref::<Decide>()?;
    if decide.decision_only {
        return None;
    }
    Some(Expr::ScalarFunction(ScalarFunction::new_udf(
        Arc::new(ScalarUDF::new_from_impl(decide.decision_only())),
        call.args.clone(),
    )))
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

    #[inline(always)]
    fn get(&self, column: usize, row: usize) -> Option<&str> {
        let a = &self.text[column];
        (!a.is_null(row)).then(|| a.value(row))
    }
}

/// A row's text columns, in the order of [`TEXT_COLUMNS`].
type Row<'a> = [Option<&'a str>; TEXT_COLUMNS.len()];

/// What a row needs besides the borrowed request: a malformed shape found before
/// validation.
fn shape_error(row: &Row<'_>) -> Option<&'static str> {
    let has = |c: usize| row[c].is_some();
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
        // Column by column in a plain loop, inlined (`array::from_fn` made a call for each).
        let mut v: Row<'_> = [None; TEXT_COLUMNS.len()];
        for (c, slot) in v.iter_mut().enumerate() {
            *slot = inputs.get(c, row);
        }
        if let Some(e) = shape_error(&v) {
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
        let record = RequestRecordRef {
            app: v[0]
                .zip(v[1])
                .map(|(platform, id)| AppRecordRef { platform, id }),
            publisher: v[10]
                .zip(v[11])
                .map(|(store, id)| PublisherRecordRef { store, id }),
            action: v[2].unwrap_or_default(),
            at: v[3].unwrap_or_default(),
            known_at: v[9],
            storefront: v[4],
            device_country: v[5],
            ip_country: v[6],
            billing_country: v[7],
            server_country: v[8],
            signing_cert_sha256: v[12],
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

/// The result's fields, written a row at a time into plain vectors: the texts (their
/// validity follows from them when the batch is finished), the instants, the lists as
/// ends and items.
struct Outputs {
    decision: TextColumn,
    because: TextColumn,
    by: TextColumn,
    region: TextColumn,
    app: TextColumn,
    owner: TextColumn,
    error: TextColumn,
    at: Vec<i64>,
    prohibitions: Lists,
    instruments: Lists,
    /// The instruments of a deny written so far (kept between rows for its memory).
    seen: Vec<u32>,
}

/// A list of ids a row: where each row's ids end, and the ids.
struct Lists {
    ends: Vec<i32>,
    items: StringBuilder,
}

impl Lists {
    fn with_capacity(rows: usize) -> Lists {
        let mut ends = Vec::with_capacity(rows + 1);
        ends.push(0);
        Lists {
            ends,
            items: StringBuilder::new(),
        }
    }

    /// Ends the row: its items are those written since the last end.
    fn end_row(&mut self) {
        self.ends.push(self.items.len() as i32);
    }

    fn finish(mut self, rows: &NullBuffer) -> Result<ArrayRef> {
        let DataType::List(field) = schema::text_list() else {
            return exec_err!("the list of ids is not a list");
        };
        let ends = OffsetBuffer::new(ScalarBuffer::from(self.ends));
        let items = Arc::new(self.items.finish());
        Ok(Arc::new(ListArray::try_new(
            field,
            ends,
            items,
            Some(rows.clone()),
        )?))
    }
}

/// A text field: its rows' texts end to end. No text it is given is empty (ids, answers
/// and messages never are), so an empty row is a null.
struct TextColumn {
    ends: Vec<i32>,
    bytes: Vec<u8>,
}

impl TextColumn {
    fn with_capacity(rows: usize, bytes: usize) -> TextColumn {
        let mut ends = Vec::with_capacity(rows + 1);
        ends.push(0);
        TextColumn {
            ends,
            bytes: Vec::with_capacity(bytes),
        }
    }

    #[inline]
    fn push(&mut self, text: Option<&str>) {
        if let Some(t) = text {
            self.bytes.extend_from_slice(t.as_bytes());
        }
        self.ends.push(self.bytes.len() as i32);
    }

    fn finish(self) -> Result<(ArrayRef, NullBuffer)> {
        let ends = &self.ends;
        let valid = NullBuffer::new(BooleanBuffer::collect_bool(ends.len() - 1, |i| {
            ends[i + 1] > ends[i]
        }));
        let ends = OffsetBuffer::new(ScalarBuffer::from(self.ends));
        let array = StringArray::try_new(ends, self.bytes.into(), Some(valid.clone()))?;
        Ok((Arc::new(array), valid))
    }
}

impl Outputs {
    fn with_capacity(rows: usize) -> Outputs {
        let text = |bytes: usize| TextColumn::with_capacity(rows, rows * bytes);
        Outputs {
            decision: text(5),
            because: text(8),
            by: text(8),
            region: text(4),
            app: text(6),
            owner: text(6),
            error: text(0),
            at: Vec::with_capacity(rows),
            prohibitions: Lists::with_capacity(rows),
            instruments: Lists::with_capacity(rows),
            seen: Vec::new(),
        }
    }

    fn error(&mut self, message: &str) {
        for c in [
            &mut self.decision,
            &mut self.because,
            &mut self.by,
            &mut self.region,
            &mut self.app,
            &mut self.owner,
        ] {
            c.push(None);
        }
        self.error.push(Some(message));
        self.at.push(0);
        self.prohibitions.end_row();
        self.instruments.end_row();
    }

    fn decision(&mut self, d: &policy::Decision<'_>) {
        let policy = d.policy;
        match &d.verdict {
            Verdict::Deny { prohibitions, .. } => {
                self.decision.push(Some("deny"));
                self.because.push(None);
                self.by.push(None);
                self.seen.clear();
                for &p in prohibitions.iter() {
                    let pr = policy.prohibition(p);
                    self.prohibitions.items.append_value(&pr.id);
                    if !self.seen.contains(&pr.instrument) {
                        self.seen.push(pr.instrument);
                        self.instruments
                            .items
                            .append_value(&policy.instrument(pr.instrument).id);
                    }
                }
            }
            Verdict::Allow { because, by, .. } => {
                self.decision.push(Some("allow"));
                self.because.push(Some(because.as_str()));
                let by = by.map(|b| policy.instrument(b).id.as_str());
                self.by.push(by);
                if let Some(id) = by {
                    self.instruments.items.append_value(id);
                }
            }
        }
        self.prohibitions.end_row();
        self.instruments.end_row();
        self.region
            .push(d.jurisdiction.as_ref().map(|j| j.region.id.as_str()));
        self.app.push(d.matched.and_then(|m| m.app).map(|a| a.id()));
        self.owner.push(d.matched.map(|m| m.owner.id.as_str()));
        self.error.push(None);
        self.at.push(d.at.as_nanos());
    }

    fn finish(self) -> Result<StructArray> {
        let text = |c: TextColumn| c.finish().map(|(array, _)| array);
        let (decision, decided) = self.decision.finish()?;
        let at = TimestampNanosecondArray::new(ScalarBuffer::from(self.at), Some(decided.clone()))
            .with_timezone("UTC");
        let arrays: Vec<ArrayRef> = vec![
            decision,
            text(self.because)?,
            text(self.by)?,
            self.prohibitions.finish(&decided)?,
            self.instruments.finish(&decided)?,
            text(self.region)?,
            text(self.app)?,
            text(self.owner)?,
            Arc::new(at),
            text(self.error)?,
        ];
        Ok(StructArray::try_new(
            schema::decision_fields(),
            arrays,
            None,
        )?)
    }
}
