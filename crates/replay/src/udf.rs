//! The decision function: Gatekeeper's own `Policy::decide`, as a DataFusion scalar
//! function over the columns of a request table.
//!
//! Each registered function carries one loaded policy and one posture, under a name of
//! its own (`decide`, `decide_old`, ...), so that several versions of a policy set
//! answer side by side in one query. It is called with the request columns in the order
//! of [`crate::schema::argument_names`] (the first nine at least) and returns a struct
//! ([`crate::schema::decision_fields`]). A batch is decided row by row, reading the
//! request in place: the usual request allocates nothing. The texts a decision names
//! (its answer, reason, instruments, region, app and owner) come from the policy: each
//! row writes their keys into the policy's texts (built once per loaded policy), and a
//! finished batch takes its text columns from those texts in one pass each.

use std::hash::{Hash, Hasher};
use std::sync::{Arc, OnceLock};

use datafusion::arrow::array::{
    Array, ArrayBuilder as _, ArrayRef, AsArray as _, BooleanBufferBuilder, ListArray, StringArray,
    StringBuilder, StringViewArray, StructArray, TimestampNanosecondArray,
};
use datafusion::arrow::buffer::{BooleanBuffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Result, exec_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use policy::{
    AllowReason, AppRecordRef, Policy, Posture, PublisherRecordRef, Request, RequestRecordRef,
    Verdict,
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
    /// The texts its decisions name, built with the first function that decides under it
    /// (a cluster's executor builds a function for every plan it decodes).
    texts: OnceLock<Arc<Texts>>,
}

impl LoadedRevision {
    /// A loaded policy, its revision and where it came from.
    pub fn new(revision: String, policy: Policy, source: String) -> LoadedRevision {
        LoadedRevision {
            revision,
            policy,
            source,
            texts: OnceLock::new(),
        }
    }

    fn texts(&self) -> Arc<Texts> {
        self.texts
            .get_or_init(|| Arc::new(Texts::new(&self.policy)))
            .clone()
    }
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
    texts: Arc<Texts>,
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
            texts: policy.loaded.texts(),
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

impl Decide {
    /// Decides every row of `arrays` (the function's arguments).
    fn decide_arrays(&self, arrays: &[ArrayRef], rows: usize) -> Result<StructArray> {
        let named = &self.policy;
        let policy = &named.loaded.policy;
        let mut out = Outputs::with_capacity(&self.texts, rows);
        read_requests(arrays, rows, |_, request| match request {
            Ok(r) => out.decision(&policy.decide(r, named.posture)),
            Err(problem) => out.error(&problem),
        })?;
        out.finish()
    }
}

/// Every text a decision under one policy can name, each once. A text's key is its
/// place: the answers, then the
/// reasons of an allow (in the order of their discriminants), then the policy's
/// instruments, regions, entities and apps, each in the policy's order.
struct Texts {
    values: StringArray,
    instruments: u32,
    regions: u32,
    entities: u32,
    apps: u32,
}

impl std::fmt::Debug for Texts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Texts({} values)", self.values.len())
    }
}

/// The keys of the answers and of the first reason.
const DENY: u32 = 0;
const ALLOW: u32 = 1;
const REASONS: u32 = 2;

/// The place of `item` in `all`, the slice it was borrowed from.
fn place_in<T>(all: &[T], item: &T) -> u32 {
    let at = (std::ptr::from_ref(item).addr() - all.as_ptr().addr()) / size_of::<T>().max(1);
    debug_assert!(at < all.len(), "an item borrowed from elsewhere");
    at as u32
}

impl Texts {
    fn new(policy: &Policy) -> Texts {
        let answers = ["deny", "allow"].into_iter();
        let reasons = AllowReason::ALL.iter().map(|r| r.as_str());
        let instruments = policy.instruments().iter().map(|i| i.id.as_str());
        let regions = policy.regions().iter().map(|r| r.id.as_str());
        let entities = policy.entities().iter().map(|e| e.id.as_str());
        let apps = policy.apps().iter().map(|a| a.id.as_str());
        let first = REASONS + AllowReason::ALL.len() as u32;
        let instruments_at = first;
        let regions_at = instruments_at + policy.instruments().len() as u32;
        let entities_at = regions_at + policy.regions().len() as u32;
        let apps_at = entities_at + policy.entities().len() as u32;
        let values: StringArray = answers
            .chain(reasons)
            .chain(instruments)
            .chain(regions)
            .chain(entities)
            .chain(apps)
            .map(Some)
            .collect();
        Texts {
            values,
            instruments: instruments_at,
            regions: regions_at,
            entities: entities_at,
            apps: apps_at,
        }
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
        let batch = self.decide_arrays(&arrays, rows)?;
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
        let v: Row<'_> = std::array::from_fn(|c| inputs.get(c, row));
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

/// A key no text has: the field is null.
const NONE: u32 = u32::MAX;

/// The text fields of the result, by their place in [`Outputs::keys`].
const TEXT_FIELDS: usize = 6;
const DECISION: usize = 0;
const BECAUSE: usize = 1;
const BY: usize = 2;
const REGION: usize = 3;
const APP: usize = 4;
const OWNER: usize = 5;

/// The result's fields, written a row at a time into plain vectors: the texts the
/// policy names copied by key, the instants (a row's validity follows from them when the
/// batch is finished), the lists as ends and items, the rare error apart.
struct Outputs<'t> {
    texts: &'t Texts,
    /// The decision, because, by, region, app and owner, a row each, written by key
    /// ([`NONE`] for null). A row without a decision is malformed.
    keys: [TextColumn<'t>; TEXT_FIELDS],
    at: Vec<i64>,
    prohibitions: Lists,
    instruments: Lists,
    /// The malformed rows, in order, with why.
    errors: Vec<(usize, String)>,
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

/// The error column of `rows` rows: null but for `errors` (in the order of their rows).
fn errors(rows: usize, errors: Vec<(usize, String)>) -> Result<StringArray> {
    let mut ends = Vec::with_capacity(rows + 1);
    ends.push(0);
    let mut bytes = Vec::new();
    let mut valid = BooleanBufferBuilder::new(rows);
    valid.append_n(rows, false);
    for (row, e) in errors {
        ends.resize(row + 1, bytes.len() as i32);
        bytes.extend_from_slice(e.as_bytes());
        ends.push(bytes.len() as i32);
        valid.set_bit(row, true);
    }
    ends.resize(rows + 1, bytes.len() as i32);
    let ends = OffsetBuffer::new(ScalarBuffer::from(ends));
    let valid = NullBuffer::new(valid.finish());
    Ok(StringArray::try_new(ends, bytes.into(), Some(valid))?)
}

/// A text field: the texts of its rows, copied from the policy's by key as they come.
struct TextColumn<'t> {
    texts: &'t StringArray,
    ends: Vec<i32>,
    bytes: Vec<u8>,
}

impl<'t> TextColumn<'t> {
    fn with_capacity(texts: &'t StringArray, rows: usize) -> TextColumn<'t> {
        let mut ends = Vec::with_capacity(rows + 1);
        ends.push(0);
        TextColumn {
            texts,
            ends,
            bytes: Vec::with_capacity(rows * 8),
        }
    }

    /// Writes the text of `key`, or a null for [`NONE`] (no text is empty).
    #[inline]
    fn push(&mut self, key: u32) {
        if key != NONE {
            self.bytes
                .extend_from_slice(self.texts.value(key as usize).as_bytes());
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

impl<'t> Outputs<'t> {
    fn with_capacity(texts: &'t Texts, rows: usize) -> Outputs<'t> {
        Outputs {
            texts,
            keys: std::array::from_fn(|_| TextColumn::with_capacity(&texts.values, rows)),
            at: Vec::with_capacity(rows),
            prohibitions: Lists::with_capacity(rows),
            instruments: Lists::with_capacity(rows),
            errors: Vec::new(),
            seen: Vec::new(),
        }
    }

    fn error(&mut self, message: &str) {
        self.errors.push((self.at.len(), message.to_owned()));
        for k in &mut self.keys {
            k.push(NONE);
        }
        self.at.push(0);
        self.prohibitions.end_row();
        self.instruments.end_row();
    }

    fn decision(&mut self, d: &policy::Decision<'_>) {
        let (policy, texts) = (d.policy, self.texts);
        let keys = &mut self.keys;
        match &d.verdict {
            Verdict::Deny { prohibitions, .. } => {
                keys[DECISION].push(DENY);
                keys[BECAUSE].push(NONE);
                keys[BY].push(NONE);
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
                keys[DECISION].push(ALLOW);
                keys[BECAUSE].push(REASONS + *because as u32);
                keys[BY].push(by.map_or(NONE, |b| texts.instruments + b));
                if let Some(b) = by {
                    self.instruments
                        .items
                        .append_value(&policy.instrument(*b).id);
                }
            }
        }
        self.prohibitions.end_row();
        self.instruments.end_row();
        keys[REGION].push(d.jurisdiction.as_ref().map_or(NONE, |j| {
            texts.regions + place_in(policy.regions(), j.region)
        }));
        let matched = d.matched.as_ref();
        keys[APP].push(
            matched
                .and_then(|m| m.app)
                .map_or(NONE, |a| texts.apps + place_in(policy.apps(), a)),
        );
        keys[OWNER].push(matched.map_or(NONE, |m| {
            texts.entities + place_in(policy.entities(), m.owner)
        }));
        self.at.push(d.at.as_nanos());
    }

    fn finish(self) -> Result<StructArray> {
        let text = TextColumn::finish;
        let rows = self.at.len();
        let [decision, because, by, region, app, owner] = self.keys;
        let (decision, decided) = text(decision)?;
        let error = errors(rows, self.errors)?;
        let at = TimestampNanosecondArray::new(ScalarBuffer::from(self.at), Some(decided.clone()))
            .with_timezone("UTC");
        let arrays: Vec<ArrayRef> = vec![
            decision,
            text(because)?.0,
            text(by)?.0,
            self.prohibitions.finish(&decided)?,
            self.instruments.finish(&decided)?,
            text(region)?.0,
            text(app)?.0,
            text(owner)?.0,
            Arc::new(at),
            Arc::new(error),
        ];
        Ok(StructArray::try_new(
            schema::decision_fields(),
            arrays,
            None,
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn functions_under_one_loaded_policy_share_its_texts_in_its_order() -> anyhow::Result<()> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies/us-2020");
        let loaded = crate::load_policy(&root)?;
        let named = |name: &str| {
            Arc::new(NamedPolicy {
                name: name.to_owned(),
                loaded: loaded.clone(),
                posture: Posture::default(),
            })
        };
        let (a, b) = (Decide::new(named("decide")), Decide::new(named("again")));
        assert!(Arc::ptr_eq(&a.texts, &b.texts));
        let texts = &a.texts;
        let policy = &loaded.policy;
        let at = |key: u32| texts.values.value(key as usize).to_owned();
        assert_eq!(
            (at(DENY), at(ALLOW)),
            ("deny".to_owned(), "allow".to_owned())
        );
        for r in AllowReason::ALL {
            assert_eq!(at(REASONS + r as u32), r.as_str());
        }
        for (i, x) in policy.instruments().iter().enumerate() {
            assert_eq!(at(texts.instruments + i as u32), x.id);
        }
        for (i, x) in policy.regions().iter().enumerate() {
            assert_eq!(at(texts.regions + i as u32), x.id);
            assert_eq!(place_in(policy.regions(), x), i as u32);
        }
        for (i, x) in policy.entities().iter().enumerate() {
            assert_eq!(at(texts.entities + i as u32), x.id);
            assert_eq!(place_in(policy.entities(), x), i as u32);
        }
        for (i, x) in policy.apps().iter().enumerate() {
            assert_eq!(at(texts.apps + i as u32), x.id);
            assert_eq!(place_in(policy.apps(), x), i as u32);
        }
        assert_eq!(
            texts.values.len(),
            texts.apps as usize + policy.apps().len(),
            "every text once"
        );
        assert!(!policy.apps().is_empty() && !policy.regions().is_empty());
        Ok(())
    }
}
