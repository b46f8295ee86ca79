//! The columns of a request table, and of what the decision function returns.
//!
//! A request log is a table with these columns (any others are carried along): text
//! as the request spelled it, so that a replay reads exactly what `gatekeeper check`
//! reads (a log with timestamps casts them to RFC 3339 text in its query).
//!
//! | column | type | JSON field |
//! |---|---|---|
//! | `app_platform`, `app_id` | text | `app.platform`, `app.id` |
//! | `publisher_store`, `publisher_id` | text | `publisher.store`, `publisher.id` |
//! | `action`, `at`, `known_at` | text (RFC 3339 instants) | same |
//! | `storefront`, `device_country`, `ip_country`, `billing_country`, `server_country` | text | same |
//! | `signing_cert_sha256` | text | same |
//! | `code_sha256` | list of text | same |

use std::sync::{Arc, LazyLock};

use datafusion::arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};

/// A text column of a request table, in the decision function's argument order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Column {
    AppPlatform,
    AppId,
    Action,
    At,
    Storefront,
    DeviceCountry,
    IpCountry,
    BillingCountry,
    ServerCountry,
    KnownAt,
    PublisherStore,
    PublisherId,
    SigningCert,
}

/// The text columns, in argument order; `code_sha256` (a list) comes after them.
pub const TEXT_COLUMNS: [Column; 13] = [
    Column::AppPlatform,
    Column::AppId,
    Column::Action,
    Column::At,
    Column::Storefront,
    Column::DeviceCountry,
    Column::IpCountry,
    Column::BillingCountry,
    Column::ServerCountry,
    Column::KnownAt,
    Column::PublisherStore,
    Column::PublisherId,
    Column::SigningCert,
];

/// The arguments the decision function needs at least: the app, the action, the
/// instant and the five signals; the others may be left out.
pub const REQUIRED_ARGUMENTS: usize = 9;
/// Every argument: the text columns and `code_sha256`.
pub const ALL_ARGUMENTS: usize = TEXT_COLUMNS.len() + 1;

impl Column {
    /// The column's name.
    pub fn name(self) -> &'static str {
        match self {
            Column::AppPlatform => "app_platform",
            Column::AppId => "app_id",
            Column::Action => "action",
            Column::At => "at",
            Column::Storefront => "storefront",
            Column::DeviceCountry => "device_country",
            Column::IpCountry => "ip_country",
            Column::BillingCountry => "billing_country",
            Column::ServerCountry => "server_country",
            Column::KnownAt => "known_at",
            Column::PublisherStore => "publisher_store",
            Column::PublisherId => "publisher_id",
            Column::SigningCert => "signing_cert_sha256",
        }
    }
}

/// The name of the list column of constituent-code digests.
pub const CODE_SHA256: &str = "code_sha256";

/// Every argument's column name, in order: what `decide(...)` is called with.
pub fn argument_names() -> impl Iterator<Item = &'static str> {
    TEXT_COLUMNS
        .iter()
        .map(|c| c.name())
        .chain(std::iter::once(CODE_SHA256))
}

/// The schema of a request log: the text columns, then `code_sha256`.
pub fn requests() -> SchemaRef {
    static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
        let mut fields: Vec<Field> = TEXT_COLUMNS
            .iter()
            .map(|c| Field::new(c.name(), DataType::Utf8, c.nullable()))
            .collect();
        fields.push(Field::new(CODE_SHA256, text_list(), true));
        Arc::new(Schema::new(fields))
    });
    SCHEMA.clone()
}

impl Column {
    fn nullable(self) -> bool {
        !matches!(self, Column::Action | Column::At)
    }
}

/// An instant: nanoseconds since the epoch, UTC.
pub fn instant() -> DataType {
    DataType::Timestamp(
        datafusion::arrow::datatypes::TimeUnit::Nanosecond,
        Some("UTC".into()),
    )
}

/// `List<Utf8>`, its items nullable (Arrow's usual list).
pub fn text_list() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true)))
}

/// The fields of the decision function's result, a struct:
///
/// - `decision`: `allow` or `deny`; null when the request is malformed;
/// - `because`: why an allow (`not-covered`, `enjoined`, ...);
/// - `by`: the instrument behind an allow;
/// - `prohibitions`: the prohibitions of a deny, in the order `gatekeeper check` gives;
/// - `instruments`: the instruments the answer rests on: those the prohibitions of a deny
///   were made by, each once, or the `by` of an allow;
/// - `region`: the region the request was placed in;
/// - `app`, `owner`: the covered app and owner the request matched;
/// - `at`: the instant judged, as a timestamp (for grouping by day or hour);
/// - `error`: why a malformed request could not be decided, as `gatekeeper check` says it.
pub fn decision_fields() -> Fields {
    Fields::from(vec![
        Field::new("decision", DataType::Utf8, true),
        Field::new("because", DataType::Utf8, true),
        Field::new("by", DataType::Utf8, true),
        Field::new("prohibitions", text_list(), true),
        Field::new("instruments", text_list(), true),
        Field::new("region", DataType::Utf8, true),
        Field::new("app", DataType::Utf8, true),
        Field::new("owner", DataType::Utf8, true),
        Field::new("at", instant(), true),
        Field::new("error", DataType::Utf8, true),
    ])
}
