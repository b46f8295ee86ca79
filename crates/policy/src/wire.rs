//! The JSON shapes of requests and decisions, shared by the command line, the
//! embeddable crate and the sidecar service. [`RequestRecord::into_request`] is the one
//! place where a request is validated.
//!
//! For the sidecar's batches, the usual form of a request is also read in place
//! ([`RequestRecordRef::from_json_prefix`], [`RequestLayout`]), and decisions are written
//! straight into a buffer ([`DecisionJson`]): what `serde_json` would read, and the bytes
//! `Serialize` writes, as the tests check.

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::country::Country;
use crate::engine::{Decision, Verdict, short, word};
use crate::instant::Instant;
use crate::request::{
    AppRef, Platform, Publisher, Request, RequestError, Signal, Store, check_app_id,
};
use crate::validate::{is_sha256, write_sha256};

/// `{"platform":"android","id":"com.zhiliaoapp.musically"}`
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AppRecord {
    pub platform: String,
    pub id: String,
}

/// `{"store":"apple","id":"ABCDE12345"}`: the account an app is published from.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PublisherRecord {
    pub store: String,
    pub id: String,
}

/// A request as JSON.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct RequestRecord {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app: Option<AppRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publisher: Option<PublisherRecord>,
    pub action: String,
    pub at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub known_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storefront: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_country: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_country: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub billing_country: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_country: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signing_cert_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub code_sha256: Vec<String>,
}

fn field(field: &'static str, message: impl Into<String>) -> RequestError {
    RequestError::Field {
        field,
        message: message.into(),
    }
}

fn check_digest(name: &'static str, text: &str) -> Result<(), RequestError> {
    if is_sha256(text) {
        return Ok(());
    }
    Err(field(
        name,
        format!(
            "`{}` is not a SHA-256 digest (64 hex digits)",
            text.escape_debug()
        ),
    ))
}

impl RequestRecord {
    /// Validates the record into a [`Request`].
    pub fn into_request(self) -> Result<Request, RequestError> {
        self.borrowed().into_request()
    }

    /// The record with its strings borrowed.
    pub fn borrowed(&self) -> RequestRecordRef<'_> {
        RequestRecordRef {
            app: self.app.as_ref().map(|a| AppRecordRef {
                platform: &a.platform,
                id: &a.id,
            }),
            publisher: self.publisher.as_ref().map(|p| PublisherRecordRef {
                store: &p.store,
                id: &p.id,
            }),
            action: &self.action,
            at: &self.at,
            known_at: self.known_at.as_deref(),
            storefront: self.storefront.as_deref(),
            device_country: self.device_country.as_deref(),
            ip_country: self.ip_country.as_deref(),
            billing_country: self.billing_country.as_deref(),
            server_country: self.server_country.as_deref(),
            signing_cert_sha256: self.signing_cert_sha256.as_deref(),
            code_sha256: self.code_sha256.iter().map(String::as_str).collect(),
        }
    }
}

/// [`AppRecord`], borrowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppRecordRef<'a> {
    pub platform: &'a str,
    pub id: &'a str,
}

/// [`PublisherRecord`], borrowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublisherRecordRef<'a> {
    pub store: &'a str,
    pub id: &'a str,
}

/// A [`RequestRecord`] whose strings are borrowed from the text it was read from (a
/// batch read without a `String` per field), or from a `RequestRecord`. It is validated
/// by the same code: [`RequestRecord::into_request`] calls [`RequestRecordRef::into_request`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestRecordRef<'a> {
    pub app: Option<AppRecordRef<'a>>,
    pub publisher: Option<PublisherRecordRef<'a>>,
    pub action: &'a str,
    pub at: &'a str,
    pub known_at: Option<&'a str>,
    pub storefront: Option<&'a str>,
    pub device_country: Option<&'a str>,
    pub ip_country: Option<&'a str>,
    pub billing_country: Option<&'a str>,
    pub server_country: Option<&'a str>,
    pub signing_cert_sha256: Option<&'a str>,
    pub code_sha256: Vec<&'a str>,
}

impl RequestRecordRef<'_> {
    /// Validates the record into a [`Request`].
    pub fn into_request(self) -> Result<Request, RequestError> {
        let mut request = Request {
            app: None,
            publisher: None,
            signing_cert_sha256: None,
            code_sha256: Vec::new(),
            action: crate::Action::Download,
            at: Instant::MIN,
            known_at: None,
            signals: [None; 5],
        };
        self.read_into(&mut request)?;
        Ok(request)
    }

    /// Validates the record into `request`, the same checks and errors as
    /// [`RequestRecordRef::into_request`], reusing the memory of the strings `request`
    /// already holds (app id, publisher account, digests): reading many requests one after
    /// another into one `Request` allocates only when a request carries more, or longer,
    /// of them than any before it. On an error, `request` is left as it was.
    pub fn read_into(&self, request: &mut Request) -> Result<(), RequestError> {
        let app = match self.app {
            None => None,
            Some(a) => {
                let platform = match a.platform {
                    "ios" => Platform::Ios,
                    "android" => Platform::Android,
                    other => {
                        return Err(field(
                            "app.platform",
                            format!(
                                "unknown platform `{}`; expected `ios` or `android`",
                                other.escape_debug()
                            ),
                        ));
                    }
                };
                check_app_id(a.id).map_err(|e| field("app.id", e))?;
                Some((platform, a.id))
            }
        };
        let publisher = match self.publisher {
            None => None,
            Some(p) => {
                let store = Store::parse(p.store).ok_or_else(|| {
                    field(
                        "publisher.store",
                        format!(
                            "unknown store `{}`; expected `apple` or `google`",
                            p.store.escape_debug()
                        ),
                    )
                })?;
                store
                    .check_account(p.id)
                    .map_err(|e| field("publisher.id", e))?;
                if let Some((platform, _)) = app {
                    let fits = matches!(
                        (store, platform),
                        (Store::Apple, Platform::Ios) | (Store::Google, Platform::Android)
                    );
                    if !fits {
                        return Err(field(
                            "publisher.store",
                            format!(
                                "`{}` does not publish {} apps",
                                store.as_str(),
                                platform.as_str()
                            ),
                        ));
                    }
                }
                Some((store, p.id))
            }
        };
        let action = self
            .action
            .parse()
            .map_err(|e: crate::UnknownAction| field("action", e.to_string()))?;
        let at =
            parse_instant(self.at).map_err(|e| field("at", format!("{e}; expected RFC 3339")))?;
        let known_at = self
            .known_at
            .map(parse_instant)
            .transpose()
            .map_err(|e| field("known_at", format!("{e}; expected RFC 3339")))?;
        let mut signals = [None; 5];
        let given = [
            self.storefront,
            self.device_country,
            self.ip_country,
            self.billing_country,
            self.server_country,
        ];
        for (slot, (signal, value)) in signals.iter_mut().zip(Signal::ALL.into_iter().zip(given)) {
            if let Some(code) = value {
                *slot =
                    Some(parse_country(code).map_err(|e| field(signal.as_str(), e.to_string()))?);
            }
        }
        if let Some(c) = self.signing_cert_sha256 {
            check_digest("signing_cert_sha256", c)?;
        }
        for c in &self.code_sha256 {
            check_digest("code_sha256", c)?;
        }
        if signals.iter().all(Option::is_none) {
            return Err(RequestError::NoSignal);
        }
        if app.is_none() && self.signing_cert_sha256.is_none() && self.code_sha256.is_empty() {
            return Err(RequestError::NoApp);
        }
        // Valid: written into `request`, reusing the memory of what it held.
        match app {
            None => request.app = None,
            Some((platform, id)) => {
                let kept = request.app.get_or_insert_with(|| AppRef {
                    platform,
                    id: compact_str::CompactString::default(),
                });
                kept.platform = platform;
                kept.set_id(id);
            }
        }
        match publisher {
            None => request.publisher = None,
            Some((store, id)) => {
                let kept = request.publisher.get_or_insert_with(|| Publisher {
                    store,
                    id: String::new(),
                });
                kept.store = store;
                store.write_account(id, &mut kept.id);
            }
        }
        match self.signing_cert_sha256 {
            None => request.signing_cert_sha256 = None,
            Some(c) => write_sha256(c, request.signing_cert_sha256.get_or_insert_default()),
        }
        request
            .code_sha256
            .resize_with(self.code_sha256.len(), String::new);
        for (c, kept) in self.code_sha256.iter().zip(&mut request.code_sha256) {
            write_sha256(c, kept);
        }
        request.action = action;
        request.at = at;
        request.known_at = known_at;
        request.signals = signals;
        Ok(())
    }
}

/// [`Country::parse`], with the countries of codes of two or three upper-case letters (the
/// usual form of a request's signal) kept once found: the same country, or the same error.
fn parse_country(code: &str) -> Result<Country, crate::UnknownCountry> {
    use std::sync::atomic::{AtomicU8, Ordering};
    /// By code (two letters at `26 * a + b`, three after them): 0 when not asked yet, 1
    /// when not a country, else the country's position plus 2.
    static KEPT: [AtomicU8; 26 * 26 + 26 * 26 * 26] =
        [const { AtomicU8::new(0) }; 26 * 26 + 26 * 26 * 26];
    let letter = |b: u8| b.is_ascii_uppercase().then(|| usize::from(b - b'A'));
    let slot = match *code.as_bytes() {
        [a, b] => letter(a).zip(letter(b)).map(|(a, b)| 26 * a + b),
        [a, b, c] => letter(a)
            .zip(letter(b))
            .zip(letter(c))
            .map(|((a, b), c)| 26 * 26 + 26 * 26 * a + 26 * b + c),
        _ => None,
    };
    let Some(kept) = slot.and_then(|k| KEPT.get(k)) else {
        return Country::parse(code);
    };
    match kept.load(Ordering::Relaxed) {
        0 => {
            let found = Country::parse(code);
            let mark = match &found {
                Ok(c) => u8::from(*c).checked_add(2).unwrap_or(0),
                Err(_) => 1,
            };
            kept.store(mark, Ordering::Relaxed);
            found
        }
        // Asked again, for the same error.
        1 => Country::parse(code),
        mark => Country::try_from(mark - 2).or_else(|_| Country::parse(code)),
    }
}

/// [`Instant::parse_rfc3339`], with the usual form of a request's instant
/// (`2020-09-22T12:00:00Z`, a year from 1700 to 2199) read without chrono: the same
/// instant, or the same error.
fn parse_instant(text: &str) -> Result<Instant, crate::instant::InstantError> {
    match plain_utc_instant(text.as_bytes()) {
        Some(i) => Ok(i),
        None => Instant::parse_rfc3339(text),
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` exactly, a valid date and time of a year from 1700 to 2199 and a
/// second below 60; `None` for any other text. The separators and digits are checked a
/// word at a time, without a branch per byte.
fn plain_utc_instant(t: &[u8]) -> Option<Instant> {
    /// The text's three parts (`YYYY-MM-`, `DDTHH:MM`, `:SSZ`): the separators, with `0`
    /// in the digits' places, and the digits' places (`0xff`).
    const SEPARATORS: [u64; 3] = [
        u64::from_le_bytes(*b"0000-00-"),
        u64::from_le_bytes(*b"00T00:00"),
        u32::from_le_bytes(*b":00Z") as u64,
    ];
    const DIGITS: [u64; 3] = [0x00ff_ff00_ffff_ffff, 0xffff_00ff_ff00_ffff, 0x00ff_ff00];
    const ZEROS: u64 = u64::from_le_bytes(*b"00000000");
    const HIGH: u64 = 0xf0f0_f0f0_f0f0_f0f0;
    const SIX: u64 = 0x0606_0606_0606_0606;
    let t: &[u8; 20] = t.try_into().ok()?;
    let parts = [word(&t[..8]), word(&t[8..16]), short(&t[16..])];
    // A byte is a digit when it is 0x30 to 0x39: its high half is 3, before six is added
    // and after (a carry out of a byte that is not a digit only fails the check more).
    let mut bad = 0;
    for ((part, sep), digits) in parts.iter().zip(SEPARATORS).zip(DIGITS) {
        let d = (part & digits) | (ZEROS & !digits);
        bad |= (part & !digits) ^ (sep & !digits);
        bad |= (d & HIGH) ^ (ZEROS & HIGH);
        bad |= (d.wrapping_add(SIX) & HIGH) ^ (ZEROS & HIGH);
    }
    if bad != 0 {
        return None;
    }
    let d = |i: usize| u32::from(t[i] - b'0');
    let two = |i: usize| d(i) * 10 + d(i + 1);
    let (year, month, day) = (two(0) * 100 + two(2), two(5), two(8));
    let (hour, minute, second) = (two(11), two(14), two(17));
    if !(1700..2200).contains(&year)
        || !(1..=12).contains(&month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let seconds = days_since_epoch(year, month, day)? * 86_400
        + i64::from(hour * 3_600 + minute * 60 + second);
    Some(Instant::from_nanos(seconds * 1_000_000_000))
}

/// The days from 1970-01-01 to a date of the proleptic Gregorian calendar (a year from 1
/// on, a month from 1 to 12), or `None` for a day its month does not have: what
/// `chrono::NaiveDate::from_ymd_opt` gives, without its general path (the count of days
/// of 400-year cycles, by H. Hinnant's `days_from_civil`).
fn days_since_epoch(year: u32, month: u32, day: u32) -> Option<i64> {
    const DAYS: [u32; 12] = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    let leap = year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400));
    let last = DAYS[month as usize - 1] + u32::from(month == 2 && leap);
    if day == 0 || day > last {
        return None;
    }
    // Years counted from March, so that February's leap day ends one.
    let y = i64::from(year) - i64::from(month <= 2);
    let (era, year_of_era) = (y.div_euclid(400), y.rem_euclid(400));
    let m = i64::from(month);
    let day_of_year = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    Some(era * 146_097 + day_of_era - 719_468)
}

/// The date (year, month, day) `days` after 1970-01-01 in the proleptic Gregorian calendar,
/// from 0000-03-01 on (`None` before): [`days_since_epoch`] undone, by H. Hinnant's
/// `civil_from_days`.
fn civil_from_days(days: i64) -> Option<(u32, u32, u32)> {
    // Days from 0000-03-01, in 400-year cycles of 146,097 days.
    let z = u64::try_from(days.checked_add(719_468)?).ok()?;
    let (era, day_of_era) = (z / 146_097, z % 146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    // Months counted from March.
    let m = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * m + 2) / 5 + 1;
    let month = if m < 10 { m + 3 } else { m - 9 };
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    Some((u32::try_from(year).ok()?, month as u32, day as u32))
}

impl<'a> RequestRecordRef<'a> {
    /// Reads the request object at the start of `text` when it has the usual form: an
    /// object of the record's fields, each at most once, with strings without escapes
    /// and `null` only for an optional field; gives the record and the bytes it took.
    /// `None` for anything else (another form of the same record, or no record at all),
    /// which a JSON parser then reads for the record or its error. What this reads,
    /// `serde_json` reads as the same [`RequestRecord`].
    pub fn from_json_prefix(text: &'a str) -> Option<(RequestRecordRef<'a>, usize)> {
        let b = text.as_bytes();
        let mut record = RequestRecordRef::default();
        let mut seen = 0u16;
        if b.first() != Some(&b'{') {
            return None;
        }
        let mut at = skip_ws(b, 1);
        loop {
            let (key, after) = record_key(b, at)?;
            if seen & (1 << key as u16) != 0 {
                return None;
            }
            seen |= 1 << key as u16;
            at = value_start(b, after)?;
            let slot = match key {
                Key::App | Key::Publisher => {
                    if let Some(next) = null_at(b, at) {
                        at = next;
                    } else {
                        let (first, second, next) = string_pair(text, at, key)?;
                        at = next;
                        if key == Key::App {
                            record.app = Some(AppRecordRef {
                                platform: first,
                                id: second,
                            });
                        } else {
                            record.publisher = Some(PublisherRecordRef {
                                store: first,
                                id: second,
                            });
                        }
                    }
                    None
                }
                Key::Action | Key::At => {
                    let (value, next) = json_str_at(text, at)?;
                    at = next;
                    if key == Key::Action {
                        record.action = value;
                    } else {
                        record.at = value;
                    }
                    None
                }
                Key::CodeSha256 => {
                    let (values, next) = json_strs_at(text, at)?;
                    record.code_sha256 = values;
                    at = next;
                    None
                }
                Key::KnownAt => Some(&mut record.known_at),
                Key::Storefront => Some(&mut record.storefront),
                Key::DeviceCountry => Some(&mut record.device_country),
                Key::IpCountry => Some(&mut record.ip_country),
                Key::BillingCountry => Some(&mut record.billing_country),
                Key::ServerCountry => Some(&mut record.server_country),
                Key::SigningCertSha256 => Some(&mut record.signing_cert_sha256),
                Key::Platform | Key::Store | Key::Id => return None,
            };
            if let Some(slot) = slot {
                if let Some(next) = null_at(b, at) {
                    at = next;
                } else {
                    let (value, next) = json_str_at(text, at)?;
                    *slot = Some(value);
                    at = next;
                }
            }
            at = skip_ws(b, at);
            match b.get(at)? {
                b',' => at = skip_ws(b, at + 1),
                b'}' => break,
                _ => return None,
            }
        }
        let required = (1 << Key::Action as u16) | (1 << Key::At as u16);
        (seen & required == required).then_some((record, at + 1))
    }
}

/// How one client writes requests: the text around the string values of the last request
/// read in full, and which field each value is. A batch is usually written by one
/// serializer, so its items share this text and differ in their values; such an item is
/// read by comparing the text between values, without looking at keys. What it reads this
/// way, [`RequestRecordRef::from_json_prefix`] reads the same (the keys, their order, the
/// white space and every `null` are in the compared text; a value is a string without
/// escapes ending at its quote in both), and anything else is read by that.
#[derive(Debug, Default)]
pub struct RequestLayout {
    /// The text between values, one after the other.
    text: Vec<u8>,
    /// For each value, where the text before it ends, and its field.
    values: Vec<(usize, Field)>,
    /// `text` and `values` describe a request.
    learnt: bool,
}

/// Where a string value of a request goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    AppPlatform,
    AppId,
    PublisherStore,
    PublisherId,
    Action,
    At,
    KnownAt,
    Storefront,
    DeviceCountry,
    IpCountry,
    BillingCountry,
    ServerCountry,
    SigningCertSha256,
    CodeSha256,
}

impl RequestLayout {
    /// Reads a request at the start of `text`, as [`RequestRecordRef::from_json_prefix`]
    /// does: by the layout when the request has it, otherwise with that function, and then
    /// the layout becomes the one of the request read.
    pub fn read<'a>(&mut self, text: &'a str) -> Option<(RequestRecordRef<'a>, usize)> {
        let mut record = RequestRecordRef::default();
        let len = self.read_to(text, &mut record)?;
        Some((record, len))
    }

    /// [`RequestLayout::read`], into `record` (all of whose fields it sets, reusing the
    /// memory of its list of digests): the bytes it took. A batch read request after
    /// request into one record does not copy each record (some 230 bytes) on its way
    /// out. When it gives `None`, `record` holds nothing of use.
    pub fn read_to<'a>(
        &mut self,
        text: &'a str,
        record: &mut RequestRecordRef<'a>,
    ) -> Option<usize> {
        if self.learnt
            && let Some(len) = self.read_by_layout(text, record)
        {
            return Some(len);
        }
        let (read, len) = RequestRecordRef::from_json_prefix(text)?;
        self.learn(text, &read, len);
        *record = read;
        Some(len)
    }

    fn read_by_layout<'a>(
        &self,
        text: &'a str,
        record: &mut RequestRecordRef<'a>,
    ) -> Option<usize> {
        let b = text.as_bytes();
        let mut digests = std::mem::take(&mut record.code_sha256);
        digests.clear();
        *record = RequestRecordRef {
            code_sha256: digests,
            ..RequestRecordRef::default()
        };
        let (mut app, mut publisher) = ((None, None), (None, None));
        let (mut at, mut from) = (0, 0);
        for &(until, field) in &self.values {
            let between = &self.text[from..until];
            if !same_bytes(b.get(at..at + between.len())?, between) {
                return None;
            }
            at += between.len();
            let len = first_special(b.get(at..)?)?;
            if b[at + len] != b'"' {
                return None;
            }
            let value = text.get(at..at + len)?;
            at += len;
            from = until;
            match field {
                Field::AppPlatform => app.0 = Some(value),
                Field::AppId => app.1 = Some(value),
                Field::PublisherStore => publisher.0 = Some(value),
                Field::PublisherId => publisher.1 = Some(value),
                Field::Action => record.action = value,
                Field::At => record.at = value,
                Field::KnownAt => record.known_at = Some(value),
                Field::Storefront => record.storefront = Some(value),
                Field::DeviceCountry => record.device_country = Some(value),
                Field::IpCountry => record.ip_country = Some(value),
                Field::BillingCountry => record.billing_country = Some(value),
                Field::ServerCountry => record.server_country = Some(value),
                Field::SigningCertSha256 => record.signing_cert_sha256 = Some(value),
                Field::CodeSha256 => record.code_sha256.push(value),
            }
        }
        let rest = &self.text[from..];
        if !same_bytes(b.get(at..at + rest.len())?, rest) {
            return None;
        }
        if let (Some(platform), Some(id)) = app {
            record.app = Some(AppRecordRef { platform, id });
        }
        if let (Some(store), Some(id)) = publisher {
            record.publisher = Some(PublisherRecordRef { store, id });
        }
        Some(at + rest.len())
    }

    /// Takes the layout of `record`, read by `from_json_prefix` from `text[..len]`: its
    /// values are slices of that text, found by their addresses.
    fn learn(&mut self, text: &str, record: &RequestRecordRef<'_>, len: usize) {
        self.learnt = false;
        self.text.clear();
        self.values.clear();
        let mut values: Vec<(&str, Field)> = Vec::with_capacity(8);
        if let Some(a) = &record.app {
            values.extend([(a.platform, Field::AppPlatform), (a.id, Field::AppId)]);
        }
        if let Some(p) = &record.publisher {
            values.extend([(p.store, Field::PublisherStore), (p.id, Field::PublisherId)]);
        }
        values.extend([(record.action, Field::Action), (record.at, Field::At)]);
        let optional = [
            (record.known_at, Field::KnownAt),
            (record.storefront, Field::Storefront),
            (record.device_country, Field::DeviceCountry),
            (record.ip_country, Field::IpCountry),
            (record.billing_country, Field::BillingCountry),
            (record.server_country, Field::ServerCountry),
            (record.signing_cert_sha256, Field::SigningCertSha256),
        ];
        values.extend(optional.iter().filter_map(|&(v, f)| Some((v?, f))));
        values.extend(record.code_sha256.iter().map(|&v| (v, Field::CodeSha256)));
        let start = text.as_ptr().addr();
        let mut spans = Vec::with_capacity(values.len());
        for (value, field) in values {
            let Some(offset) = value.as_ptr().addr().checked_sub(start) else {
                return;
            };
            spans.push((offset, offset + value.len(), field));
        }
        spans.sort_unstable_by_key(|&(offset, _, _)| offset);
        let Some(read) = text.as_bytes().get(..len) else {
            return;
        };
        let mut from = 0;
        for (offset, end, field) in spans {
            // Each value is a string: the text before it ends with its quote.
            let Some(between) = read.get(from..offset).filter(|t| t.ends_with(b"\"")) else {
                return;
            };
            self.text.extend_from_slice(between);
            self.values.push((self.text.len(), field));
            from = end;
        }
        let Some(rest) = read.get(from..).filter(|t| t.starts_with(b"\"")) else {
            return;
        };
        self.text.extend_from_slice(rest);
        self.learnt = true;
    }
}

/// Whether `a` and `b`, of the same length, hold the same bytes. The texts between a
/// request's values are short (mostly 2 to 24 bytes): up to 32 bytes they are compared
/// here in a few overlapping words, where a call to `memcmp` for each took longer than
/// the comparison itself.
#[inline]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    let at = |s: &[u8], i: usize| word(&s[i..i + 8]);
    match n {
        0..8 => short(a) == short(b),
        8..=32 => {
            let mut diff = (at(a, 0) ^ at(b, 0)) | (at(a, n - 8) ^ at(b, n - 8));
            if n > 16 {
                diff |= at(a, 8) ^ at(b, 8);
            }
            if n > 24 {
                diff |= at(a, 16) ^ at(b, 16);
            }
            diff == 0
        }
        _ => a == b,
    }
}

/// The keys of a request's JSON and of its `app` and `publisher`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Key {
    App,
    Publisher,
    Action,
    At,
    KnownAt,
    Storefront,
    DeviceCountry,
    IpCountry,
    BillingCountry,
    ServerCountry,
    SigningCertSha256,
    CodeSha256,
    Platform,
    Store,
    Id,
}

/// Skips JSON white space from `at`.
fn skip_ws(b: &[u8], mut at: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = b.get(at) {
        at += 1;
    }
    at
}

/// The key whose string starts at `at` (its quotes included, spelled without escapes), and
/// where it ends.
fn record_key(b: &[u8], at: usize) -> Option<(Key, usize)> {
    let rest = b.get(at..)?;
    let known: &[(&[u8], Key)] = match rest.get(1)? {
        b'a' => &[
            (b"\"app\"", Key::App),
            (b"\"action\"", Key::Action),
            (b"\"at\"", Key::At),
        ],
        b'p' => &[
            (b"\"publisher\"", Key::Publisher),
            (b"\"platform\"", Key::Platform),
        ],
        b'k' => &[(b"\"known_at\"", Key::KnownAt)],
        b's' => &[
            (b"\"storefront\"", Key::Storefront),
            (b"\"server_country\"", Key::ServerCountry),
            (b"\"signing_cert_sha256\"", Key::SigningCertSha256),
            (b"\"store\"", Key::Store),
        ],
        b'd' => &[(b"\"device_country\"", Key::DeviceCountry)],
        b'i' => &[(b"\"ip_country\"", Key::IpCountry), (b"\"id\"", Key::Id)],
        b'b' => &[(b"\"billing_country\"", Key::BillingCountry)],
        b'c' => &[(b"\"code_sha256\"", Key::CodeSha256)],
        _ => return None,
    };
    known
        .iter()
        .find(|(name, _)| rest.starts_with(name))
        .map(|&(name, key)| (key, at + name.len()))
}

/// After a key: white space, `:`, white space; where the value starts.
fn value_start(b: &[u8], at: usize) -> Option<usize> {
    let at = skip_ws(b, at);
    (b.get(at)? == &b':').then(|| skip_ws(b, at + 1))
}

/// `null` at `at`: where it ends.
fn null_at(b: &[u8], at: usize) -> Option<usize> {
    (b.get(at..at + 4)? == b"null").then_some(at + 4)
}

/// A string without escapes or control characters at `at`, and where it ends.
fn json_str_at(text: &str, at: usize) -> Option<(&str, usize)> {
    let b = text.as_bytes();
    if b.get(at)? != &b'"' {
        return None;
    }
    let len = first_special(b.get(at + 1..)?)?;
    if b[at + 1 + len] != b'"' {
        return None;
    }
    Some((text.get(at + 1..at + 1 + len)?, at + 2 + len))
}

/// An array of such strings at `at`, and where it ends.
fn json_strs_at(text: &str, mut at: usize) -> Option<(Vec<&str>, usize)> {
    let b = text.as_bytes();
    if b.get(at)? != &b'[' {
        return None;
    }
    at = skip_ws(b, at + 1);
    let mut values = Vec::new();
    if b.get(at)? == &b']' {
        return Some((values, at + 1));
    }
    loop {
        let (value, next) = json_str_at(text, at)?;
        values.push(value);
        at = skip_ws(b, next);
        match b.get(at)? {
            b',' => at = skip_ws(b, at + 1),
            b']' => return Some((values, at + 1)),
            _ => return None,
        }
    }
}

/// `{"platform": ..., "id": ...}` (for `Key::App`) or `{"store": ..., "id": ...}` at
/// `at`, in either order, both required: the two strings and where the object ends.
fn string_pair(text: &str, at: usize, of: Key) -> Option<(&str, &str, usize)> {
    let b = text.as_bytes();
    let first_key = if of == Key::App {
        Key::Platform
    } else {
        Key::Store
    };
    if b.get(at)? != &b'{' {
        return None;
    }
    let mut at = skip_ws(b, at + 1);
    let (mut first, mut second) = (None, None);
    loop {
        let (key, after) = record_key(b, at)?;
        let slot = match key {
            Key::Id => &mut second,
            k if k == first_key => &mut first,
            _ => return None,
        };
        if slot.is_some() {
            return None;
        }
        let (value, next) = json_str_at(text, value_start(b, after)?)?;
        *slot = Some(value);
        at = skip_ws(b, next);
        match b.get(at)? {
            b',' => at = skip_ws(b, at + 1),
            b'}' => return Some((first?, second?, at + 1)),
            _ => return None,
        }
    }
}

/// An instrument a decision rests on: id, citation and where to read it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct InstrumentRecord {
    pub instrument: String,
    pub citation: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// One reason of a deny.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReasonRecord {
    pub instrument: String,
    pub prohibition: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<String>,
    pub citation: String,
    pub text: String,
    pub source: String,
    /// The instruments it was made under: its own first.
    #[serde(default)]
    pub authority: Vec<InstrumentRecord>,
}

/// Where the request was placed.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct JurisdictionRecord {
    pub region: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Groups of signals the request carried none of, assumed in the region.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub assumed: Vec<Vec<String>>,
}

/// Where the readings of the policy's windows disagree.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct UncertainRecord {
    pub from: Option<String>,
    pub until: Option<String>,
}

/// A decision as JSON.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DecisionRecord {
    /// `allow` or `deny`.
    pub decision: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub because: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_force_from: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<ReasonRecord>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub relief_set_aside: Vec<InstrumentRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matched_by: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub case_insensitive_match: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jurisdiction: Option<JurisdictionRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uncertain: Option<UncertainRecord>,
    pub valid_until: Option<String>,
}

impl Decision<'_> {
    /// The decision as its JSON record.
    pub fn to_record(&self) -> DecisionRecord {
        let policy = self.policy;
        let cite = |i: u32, source: bool| {
            let ins = policy.instrument(i);
            InstrumentRecord {
                instrument: ins.id.clone(),
                citation: ins.citation.clone(),
                source: source.then(|| ins.source.clone()),
            }
        };
        let mut record = DecisionRecord {
            decision: String::new(),
            because: None,
            by: None,
            in_force_from: None,
            reasons: Vec::new(),
            relief_set_aside: Vec::new(),
            app: self.matched.and_then(|m| m.app.map(|a| a.id().to_owned())),
            owner: self.matched.map(|m| m.owner.id.clone()),
            matched_by: self.matched.map(|m| m.by.as_str().to_owned()),
            case_insensitive_match: self.matched.is_some_and(|m| m.case_insensitive),
            jurisdiction: self.jurisdiction.as_ref().map(|j| JurisdictionRecord {
                region: j.region.id.clone(),
                signal: j.signal.map(|(s, _)| s.as_str().to_owned()),
                value: j.signal.map(|(_, c)| c.alpha2().to_owned()),
                assumed: j
                    .assumed()
                    .map(|g| g.iter().map(|s| s.as_str().to_owned()).collect())
                    .collect(),
            }),
            uncertain: self.uncertain.map(|u| UncertainRecord {
                from: u.from.map(|i| i.to_string()),
                until: u.until.map(|i| i.to_string()),
            }),
            valid_until: self.valid_until.map(|v| v.to_string()),
        };
        match &self.verdict {
            Verdict::Deny {
                prohibitions,
                set_aside,
            } => {
                record.decision = "deny".to_owned();
                record.reasons = prohibitions
                    .iter()
                    .map(|&p| {
                        let pr = policy.prohibition(p);
                        let i = policy.instrument(pr.instrument);
                        ReasonRecord {
                            instrument: i.id.clone(),
                            prohibition: pr.id.clone(),
                            item: pr.item.clone(),
                            citation: i.citation.clone(),
                            text: pr.text.clone(),
                            source: i.source.clone(),
                            authority: policy
                                .authority(p)
                                .into_iter()
                                .map(|a| cite(a, true))
                                .collect(),
                        }
                    })
                    .collect();
                record.relief_set_aside = set_aside.iter().map(|&i| cite(i, false)).collect();
            }
            Verdict::Allow {
                because,
                by,
                in_force_from,
            } => {
                record.decision = "allow".to_owned();
                record.because = Some(because.as_str().to_owned());
                record.by = by.map(|b| policy.instrument(b).id.clone());
                record.in_force_from = in_force_from.map(|i| i.to_string());
            }
        }
        record
    }
}

impl From<&Request> for RequestRecord {
    /// The request as JSON again (codes as alpha-2, digests normalized).
    fn from(r: &Request) -> RequestRecord {
        let signal = |s: Signal| r.signals[s as usize].map(|c| c.alpha2().to_owned());
        RequestRecord {
            app: r.app.as_ref().map(|a| AppRecord {
                platform: a.platform.as_str().to_owned(),
                id: a.id.to_string(),
            }),
            publisher: r.publisher.as_ref().map(|p| PublisherRecord {
                store: p.store.as_str().to_owned(),
                id: p.id.clone(),
            }),
            action: r.action.as_str().to_owned(),
            at: r.at.to_string(),
            known_at: r.known_at.map(|k| k.to_string()),
            storefront: signal(Signal::Storefront),
            device_country: signal(Signal::DeviceCountry),
            ip_country: signal(Signal::IpCountry),
            billing_country: signal(Signal::BillingCountry),
            server_country: signal(Signal::ServerCountry),
            signing_cert_sha256: r.signing_cert_sha256.clone(),
            code_sha256: r.code_sha256.clone(),
        }
    }
}

/// Writes a value with its `Display`, without an intermediate `String`.
struct Shown<T>(T);

impl<T: std::fmt::Display> Serialize for Shown<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

/// An instrument as [`InstrumentRecord`] writes it, borrowed.
struct CiteRef<'p> {
    policy: &'p crate::Policy,
    instrument: u32,
    source: bool,
}

impl Serialize for CiteRef<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let ins = self.policy.instrument(self.instrument);
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("instrument", &ins.id)?;
        map.serialize_entry("citation", &ins.citation)?;
        if self.source {
            map.serialize_entry("source", &ins.source)?;
        }
        map.end()
    }
}

/// A reason as [`ReasonRecord`] writes it, borrowed.
struct ReasonRef<'p> {
    policy: &'p crate::Policy,
    prohibition: u32,
}

impl Serialize for ReasonRef<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let policy = self.policy;
        let pr = policy.prohibition(self.prohibition);
        let ins = policy.instrument(pr.instrument);
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("instrument", &ins.id)?;
        map.serialize_entry("prohibition", &pr.id)?;
        if let Some(item) = &pr.item {
            map.serialize_entry("item", item)?;
        }
        map.serialize_entry("citation", &ins.citation)?;
        map.serialize_entry("text", &pr.text)?;
        map.serialize_entry("source", &ins.source)?;
        let authority: Vec<CiteRef<'_>> = policy
            .authority(self.prohibition)
            .into_iter()
            .map(|instrument| CiteRef {
                policy,
                instrument,
                source: true,
            })
            .collect();
        map.serialize_entry("authority", &authority)?;
        map.end()
    }
}

/// Where a request was placed, as [`JurisdictionRecord`] writes it, borrowed.
struct PlacedRef<'a, 'p>(&'a crate::engine::Jurisdiction<'p>);

impl Serialize for PlacedRef<'_, '_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let j = self.0;
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("region", &j.region.id)?;
        if let Some((signal, country)) = j.signal {
            map.serialize_entry("signal", signal.as_str())?;
            map.serialize_entry("value", country.alpha2())?;
        }
        if j.assumed != 0 {
            let assumed: Vec<Vec<&str>> = j
                .assumed()
                .map(|g| g.iter().map(|s| s.as_str()).collect())
                .collect();
            map.serialize_entry("assumed", &assumed)?;
        }
        map.end()
    }
}

impl Decision<'_> {
    /// Writes the decision's fields into a map being serialized, exactly as
    /// [`DecisionRecord`] writes them, from borrowed data: no record is built. A caller that
    /// writes fields of its own around them (a verdict) gets one flat object without
    /// `#[serde(flatten)]`'s buffering.
    pub fn serialize_fields<M: serde::ser::SerializeMap>(
        &self,
        map: &mut M,
    ) -> Result<(), M::Error> {
        let policy = self.policy;
        match &self.verdict {
            Verdict::Deny {
                prohibitions,
                set_aside,
            } => {
                map.serialize_entry("decision", "deny")?;
                if !prohibitions.is_empty() {
                    let reasons: Vec<ReasonRef<'_>> = prohibitions
                        .iter()
                        .map(|&prohibition| ReasonRef {
                            policy,
                            prohibition,
                        })
                        .collect();
                    map.serialize_entry("reasons", &reasons)?;
                }
                if !set_aside.is_empty() {
                    let cites: Vec<CiteRef<'_>> = set_aside
                        .iter()
                        .map(|&instrument| CiteRef {
                            policy,
                            instrument,
                            source: false,
                        })
                        .collect();
                    map.serialize_entry("relief_set_aside", &cites)?;
                }
            }
            Verdict::Allow {
                because,
                by,
                in_force_from,
            } => {
                map.serialize_entry("decision", "allow")?;
                map.serialize_entry("because", because.as_str())?;
                if let Some(b) = by {
                    map.serialize_entry("by", &policy.instrument(*b).id)?;
                }
                if let Some(at) = in_force_from {
                    map.serialize_entry("in_force_from", &Shown(at))?;
                }
            }
        }
        if let Some(m) = &self.matched {
            if let Some(app) = m.app {
                map.serialize_entry("app", app.id())?;
            }
            map.serialize_entry("owner", &m.owner.id)?;
            map.serialize_entry("matched_by", m.by.as_str())?;
            if m.case_insensitive {
                map.serialize_entry("case_insensitive_match", &true)?;
            }
        }
        if let Some(j) = &self.jurisdiction {
            map.serialize_entry("jurisdiction", &PlacedRef(j))?;
        }
        if let Some(u) = &self.uncertain {
            struct Window(Option<Instant>, Option<Instant>);
            impl Serialize for Window {
                fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                    use serde::ser::SerializeMap as _;
                    let mut map = s.serialize_map(Some(2))?;
                    map.serialize_entry("from", &self.0.map(Shown))?;
                    map.serialize_entry("until", &self.1.map(Shown))?;
                    map.end()
                }
            }
            map.serialize_entry("uncertain", &Window(u.from, u.until))?;
        }
        map.serialize_entry("valid_until", &self.valid_until.map(Shown))?;
        Ok(())
    }
}

impl Serialize for Decision<'_> {
    /// The same JSON as [`Decision::to_record`]'s, written from borrowed data.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let mut map = s.serialize_map(None)?;
        self.serialize_fields(&mut map)?;
        map.end()
    }
}

/// Decisions' JSON, written straight into a buffer: the bytes [`Decision`]'s `Serialize`
/// (and [`Decision::to_record`]) give, without a serializer. The reasons of a deny depend
/// on the policy alone (instrument, citation, text, source, authority): each is escaped
/// once, when first written, and copied from then on. Built for one policy; a decision of
/// another policy is written without the kept reasons. The policy is recognised by the
/// addresses of its data: keep a table no longer than its policy.
#[derive(Debug)]
pub struct DecisionJson {
    /// The policy's prohibitions and instruments, as address and length: which policy it
    /// was built for.
    prohibitions: (usize, usize),
    instruments: (usize, usize),
    /// Each prohibition's reason object, once written.
    reasons: Box<[OnceLock<Box<[u8]>>]>,
    /// No id of an app, owner, region or instrument needs escaping: they are copied as
    /// they are.
    plain_ids: bool,
}

impl DecisionJson {
    /// An empty table for `policy`'s decisions: nothing is rendered before it is needed.
    pub fn new(policy: &crate::Policy) -> DecisionJson {
        DecisionJson {
            prohibitions: (
                policy.prohibitions().as_ptr().addr(),
                policy.prohibitions().len(),
            ),
            instruments: (
                policy.instruments().as_ptr().addr(),
                policy.instruments().len(),
            ),
            reasons: (0..policy.prohibitions().len())
                .map(|_| OnceLock::new())
                .collect(),
            plain_ids: (policy.apps().iter().map(crate::model::App::id))
                .chain(policy.entities().iter().map(|e| e.id.as_str()))
                .chain(policy.regions().iter().map(|r| r.id.as_str()))
                .chain(policy.instruments().iter().map(|i| i.id.as_str()))
                .all(|id| first_special(id.as_bytes()).is_none()),
        }
    }

    /// Whether this table was built for `policy`.
    fn fits(&self, policy: &crate::Policy) -> bool {
        let (p, i) = (policy.prohibitions(), policy.instruments());
        self.prohibitions == (p.as_ptr().addr(), p.len())
            && self.instruments == (i.as_ptr().addr(), i.len())
    }

    /// Appends the decision as one JSON object.
    pub fn write(&self, decision: &Decision<'_>, out: &mut Vec<u8>) {
        out.push(b'{');
        self.write_fields(decision, out);
        out.push(b'}');
    }

    /// Appends the decision's fields, `"decision":...` to `"valid_until":...`, without the
    /// braces: for a caller that writes fields of its own before them (a verdict).
    pub fn write_fields(&self, d: &Decision<'_>, out: &mut Vec<u8>) {
        let policy = d.policy;
        let fits = self.fits(policy);
        let plain = fits && self.plain_ids;
        let id = |out: &mut Vec<u8>, id: &str| {
            if plain {
                write_plain(out, id);
            } else {
                write_json_str(out, id);
            }
        };
        match &d.verdict {
            Verdict::Deny {
                prohibitions,
                set_aside,
            } => {
                out.extend_from_slice(b"\"decision\":\"deny\"");
                if !prohibitions.is_empty() {
                    out.extend_from_slice(b",\"reasons\":[");
                    for (k, &p) in prohibitions.iter().enumerate() {
                        if k > 0 {
                            out.push(b',');
                        }
                        match self.reasons.get(p as usize).filter(|_| fits) {
                            Some(slot) => out.extend_from_slice(slot.get_or_init(|| {
                                let mut reason = Vec::new();
                                write_reason(policy, p, &mut reason);
                                reason.into_boxed_slice()
                            })),
                            None => write_reason(policy, p, out),
                        }
                    }
                    out.push(b']');
                }
                if !set_aside.is_empty() {
                    out.extend_from_slice(b",\"relief_set_aside\":[");
                    for (k, &i) in set_aside.iter().enumerate() {
                        if k > 0 {
                            out.push(b',');
                        }
                        write_cite(policy, i, false, out);
                    }
                    out.push(b']');
                }
            }
            Verdict::Allow {
                because,
                by,
                in_force_from,
            } => {
                out.extend_from_slice(b"\"decision\":\"allow\",\"because\":");
                write_plain(out, because.as_str());
                if let Some(b) = by {
                    out.extend_from_slice(b",\"by\":");
                    id(out, &policy.instrument(*b).id);
                }
                if let Some(at) = in_force_from {
                    out.extend_from_slice(b",\"in_force_from\":");
                    write_instant(out, *at);
                }
            }
        }
        if let Some(m) = &d.matched {
            if let Some(app) = m.app {
                out.extend_from_slice(b",\"app\":");
                id(out, app.id());
            }
            out.extend_from_slice(b",\"owner\":");
            id(out, &m.owner.id);
            out.extend_from_slice(b",\"matched_by\":");
            write_plain(out, m.by.as_str());
            if m.case_insensitive {
                out.extend_from_slice(b",\"case_insensitive_match\":true");
            }
        }
        if let Some(j) = &d.jurisdiction {
            out.extend_from_slice(b",\"jurisdiction\":{\"region\":");
            id(out, &j.region.id);
            if let Some((signal, country)) = j.signal {
                out.extend_from_slice(b",\"signal\":");
                write_plain(out, signal.as_str());
                out.extend_from_slice(b",\"value\":");
                write_plain(out, country.alpha2());
            }
            if j.assumed != 0 {
                out.extend_from_slice(b",\"assumed\":[");
                for (k, group) in j.assumed().enumerate() {
                    out.extend_from_slice(if k > 0 { b",[" } else { b"[" });
                    for (n, s) in group.iter().enumerate() {
                        if n > 0 {
                            out.push(b',');
                        }
                        write_plain(out, s.as_str());
                    }
                    out.push(b']');
                }
                out.push(b']');
            }
            out.push(b'}');
        }
        if let Some(u) = &d.uncertain {
            out.extend_from_slice(b",\"uncertain\":{\"from\":");
            write_optional_instant(out, u.from);
            out.extend_from_slice(b",\"until\":");
            write_optional_instant(out, u.until);
            out.push(b'}');
        }
        out.extend_from_slice(b",\"valid_until\":");
        write_optional_instant(out, d.valid_until);
    }
}

/// A reason object, as [`ReasonRef`] serializes it.
fn write_reason(policy: &crate::Policy, p: u32, out: &mut Vec<u8>) {
    let pr = policy.prohibition(p);
    let ins = policy.instrument(pr.instrument);
    out.extend_from_slice(b"{\"instrument\":");
    write_json_str(out, &ins.id);
    out.extend_from_slice(b",\"prohibition\":");
    write_json_str(out, &pr.id);
    if let Some(item) = &pr.item {
        out.extend_from_slice(b",\"item\":");
        write_json_str(out, item);
    }
    out.extend_from_slice(b",\"citation\":");
    write_json_str(out, &ins.citation);
    out.extend_from_slice(b",\"text\":");
    write_json_str(out, &pr.text);
    out.extend_from_slice(b",\"source\":");
    write_json_str(out, &ins.source);
    out.extend_from_slice(b",\"authority\":[");
    for (k, a) in policy.authority(p).into_iter().enumerate() {
        if k > 0 {
            out.push(b',');
        }
        write_cite(policy, a, true, out);
    }
    out.extend_from_slice(b"]}");
}

/// An instrument cited, as [`CiteRef`] serializes it.
fn write_cite(policy: &crate::Policy, i: u32, source: bool, out: &mut Vec<u8>) {
    let ins = policy.instrument(i);
    out.extend_from_slice(b"{\"instrument\":");
    write_json_str(out, &ins.id);
    out.extend_from_slice(b",\"citation\":");
    write_json_str(out, &ins.citation);
    if source {
        out.extend_from_slice(b",\"source\":");
        write_json_str(out, &ins.source);
    }
    out.push(b'}');
}

/// The index of the first byte of `bytes` that a JSON string cannot hold as it is: `"`,
/// `\` or a control character. Eight bytes at a time: in each word, the lowest byte
/// flagged is the first such byte (a borrow only flags bytes above a true one).
fn first_special(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut chunks = bytes.chunks_exact(8);
    let mut at = 0;
    for chunk in chunks.by_ref() {
        let v = word(chunk);
        let quote = v ^ (ONES * u64::from(b'"'));
        let backslash = v ^ (ONES * u64::from(b'\\'));
        let found = ((quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash)
            | (v.wrapping_sub(ONES * 0x20) & !v))
            & HIGH;
        if found != 0 {
            return Some(at + (found.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        .map(|k| at + k)
}

/// A string that needs no escaping (the spelling of an enum's variant, a country code, an
/// id checked beforehand), as a JSON string.
#[inline]
fn write_plain(out: &mut Vec<u8>, s: &str) {
    debug_assert!(first_special(s.as_bytes()).is_none(), "{s:?}");
    out.reserve(s.len() + 2);
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
}

/// A JSON string, escaped by `serde_json` (what `to_record`'s JSON is written with).
fn write_json_str(out: &mut Vec<u8>, s: &str) {
    // Writing a string into a vector cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

fn write_optional_instant(out: &mut Vec<u8>, at: Option<Instant>) {
    match at {
        Some(at) => write_instant(out, at),
        None => out.extend_from_slice(b"null"),
    }
}

/// An instant as a JSON string: its `Display` (RFC 3339 in UTC, fractional seconds in
/// threes of digits only when there are any), without a formatter.
fn write_instant(out: &mut Vec<u8>, at: Instant) {
    const NANOS: i64 = 1_000_000_000;
    let nanos = at.as_nanos();
    let (days, of_day, fraction) = match u64::try_from(nanos) {
        // From 1970 on (most instants written), in unsigned arithmetic.
        Ok(n) => {
            let seconds = n / NANOS as u64;
            (
                (seconds / 86_400) as i64,
                (seconds % 86_400) as i64,
                (n % NANOS as u64) as i64,
            )
        }
        Err(_) => {
            let seconds = nanos.div_euclid(NANOS);
            (
                seconds.div_euclid(86_400),
                seconds.rem_euclid(86_400),
                nanos.rem_euclid(NANOS),
            )
        }
    };
    let Some((year, month, day)) = civil_from_days(days).filter(|(y, _, _)| *y <= 9999) else {
        // Not in the years an instant holds; written as `Display` writes it.
        out.extend_from_slice(format!("\"{at}\"").as_bytes());
        return;
    };
    let (month, day) = (i64::from(month), i64::from(day));
    // Every field is below 100 but the year and the fraction: two digits at a time.
    let two = |n: i64| {
        let n = n as usize;
        [b'0' + (n / 10) as u8, b'0' + (n % 10) as u8]
    };
    let [h0, h1] = two(of_day / 3_600);
    let [n0, n1] = two(of_day / 60 % 60);
    let [s0, s1] = two(of_day % 60);
    let [m0, m1] = two(month);
    let [d0, d1] = two(day);
    let [c0, c1] = two(i64::from(year / 100));
    let [y0, y1] = two(i64::from(year % 100));
    out.extend_from_slice(&[
        b'"', c0, c1, y0, y1, b'-', m0, m1, b'-', d0, d1, b'T', h0, h1, b':', n0, n1, b':', s0, s1,
    ]);
    if fraction != 0 {
        let (value, count) = if fraction % 1_000_000 == 0 {
            (fraction / 1_000_000, 3)
        } else if fraction % 1_000 == 0 {
            (fraction / 1_000, 6)
        } else {
            (fraction, 9)
        };
        let mut digits = [b'.', 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let mut rest = value;
        for k in (1..=count).rev() {
            digits[k] = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
        out.extend_from_slice(&digits[..=count]);
    }
    out.extend_from_slice(b"Z\"");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Policy, Posture, Source};

    #[test]
    fn a_plain_utc_instant_is_read_on_the_fast_path_as_chrono_reads_it() {
        // Every hour, minute and second digit, days across leap and century years.
        let start = chrono::DateTime::parse_from_rfc3339("1700-01-01T00:00:00Z").unwrap();
        let mut t = start.timestamp();
        let end = chrono::DateTime::parse_from_rfc3339("2199-12-31T23:59:59Z")
            .unwrap()
            .timestamp();
        let mut read = 0;
        while t <= end {
            let when = chrono::DateTime::from_timestamp(t, 0).unwrap();
            let text = when.format("%Y-%m-%dT%H:%M:%SZ").to_string();
            assert_eq!(
                plain_utc_instant(text.as_bytes()),
                Some(Instant::from_nanos(t * 1_000_000_000)),
                "{text}"
            );
            read += 1;
            // A week, an hour, a minute and 19 seconds: every second of the minute in turn.
            t += 86_400 * 7 + 3_661 + 18;
        }
        assert!(read > 20_000);
        for other in [
            "2021-02-29T00:00:00Z",
            "2100-02-29T00:00:00Z",
            "2021-04-31T00:00:00Z",
            "2021-13-01T00:00:00Z",
            "2021-00-01T00:00:00Z",
            "2021-01-01T24:00:00Z",
            "2021-01-01T23:60:00Z",
            "2021-01-01T23:59:60Z",
            "1699-12-31T23:59:59Z",
            "2200-01-01T00:00:00Z",
            "2021-01-01T0a:00:00Z",
            "2021-01-01 00:00:00Z",
            "2021-01-01T00:00:00+00:00",
            "2021-01-01T00:00:00.5Z",
        ] {
            assert_eq!(plain_utc_instant(other.as_bytes()), None, "{other}");
        }
        assert_eq!(
            plain_utc_instant(b"2000-02-29T12:34:56Z"),
            Some(Instant::from_nanos(951_827_696 * 1_000_000_000))
        );
        assert_eq!(
            plain_utc_instant(b"2199-12-31T23:59:59Z"),
            Some(Instant::from_nanos(end * 1_000_000_000))
        );
    }

    /// Any one byte of a plain instant changed to any value: what the fast path reads,
    /// chrono reads the same (and what it refuses, the general path reads).
    #[test]
    fn a_plain_instant_with_any_byte_changed_is_read_as_chrono_reads_it_or_left_to_it() {
        let plain = *b"2020-09-22T12:00:00Z";
        let (mut read, mut expected) = (0, 0);
        for k in 0..plain.len() {
            for byte in 0..=255u8 {
                let mut text = plain;
                text[k] = byte;
                let chrono = std::str::from_utf8(&text)
                    .ok()
                    .and_then(|t| Instant::parse_rfc3339(t).ok());
                // The fast path's form: a digit where the plain text has one, the same
                // byte elsewhere, and a year it reads.
                let form = byte == plain[k] || (plain[k].is_ascii_digit() && byte.is_ascii_digit());
                let year_read =
                    k > 1 || matches!(&text[..2], b"17" | b"18" | b"19" | b"20" | b"21");
                // (chrono reads a leap second, 60, which the fast path leaves to it.)
                let leap = &text[17..19] == b"60";
                if form && year_read && !leap && chrono.is_some() {
                    expected += 1;
                }
                if let Some(at) = plain_utc_instant(&text) {
                    assert_eq!(chrono, Some(at), "{:?}", String::from_utf8_lossy(&text));
                    read += 1;
                }
            }
        }
        assert_eq!(read, expected);
    }

    #[test]
    fn days_are_counted_as_chrono_counts_them_and_a_day_a_month_lacks_is_refused() {
        let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap();
        let mut dates = 0;
        for year in (1..=3).chain(1600..2401) {
            for month in 1..=12 {
                for day in 0..=32 {
                    let chrono = chrono::NaiveDate::from_ymd_opt(year, month, day)
                        .map(|d| (d - epoch).num_days());
                    assert_eq!(
                        days_since_epoch(year as u32, month, day),
                        chrono,
                        "{year}-{month}-{day}"
                    );
                    dates += usize::from(chrono.is_some());
                }
            }
        }
        assert_eq!(dates, 804 * 365 + 195);
    }

    /// A string escaped by [`write_json_str`].
    fn escaped(s: &str) -> String {
        let mut out = Vec::new();
        write_json_str(&mut out, s);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn reading_into_one_request_gives_each_request_and_keeps_it_on_an_error() {
        let text = |t: &str| serde_json::from_str::<RequestRecord>(t).unwrap();
        let records = [
            text(
                r#"{"app":{"platform":"ios","id":"com.tencent.xin"},"action":"download","at":"2020-09-21T12:00:00Z","storefront":"US"}"#,
            ),
            text(
                r#"{"publisher":{"store":"apple","id":"abcde12345"},"signing_cert_sha256":"AB:CD:EF:01:23:45:67:89:ab:cd:ef:01:23:45:67:89:ab:cd:ef:01:23:45:67:89:ab:cd:ef:01:23:45:67:89","action":"update","at":"2021-01-01T00:00:00+08:00","known_at":"2020-01-01T00:00:00Z","ip_country":"PR"}"#,
            ),
            text(
                r#"{"app":{"platform":"android","id":"com.zhiliaoapp.musically"},"code_sha256":["00000000000000000000000000000000000000000000000000000000000000aa"],"action":"code-use","at":"2020-11-12T00:00:00Z","billing_country":"USA","server_country":"GU"}"#,
            ),
            text(
                r#"{"app":{"platform":"ios","id":"x"},"action":"host","at":"2020-09-21T12:00:00.5Z","device_country":"CN"}"#,
            ),
            text(
                r#"{"app":{"platform":"android","id":"com.a"},"publisher":{"store":"google","id":"0123"},"code_sha256":["0000000000000000000000000000000000000000000000000000000000000001","00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:0B"],"action":"update","at":"2020-09-21T12:00:00Z","storefront":"US"}"#,
            ),
            text(
                r#"{"app":{"platform":"ios","id":"com.a"},"publisher":{"store":"apple","id":"zz0123zz01"},"signing_cert_sha256":"FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF","action":"update","at":"2020-09-21T12:00:00Z","storefront":"US"}"#,
            ),
        ];
        // The normal forms, written into the memory the request already held.
        let mut kept = records[5].clone().into_request().unwrap();
        for (r, publisher, cert, codes) in [
            (
                &records[1],
                Some("ABCDE12345"),
                Some("abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789"),
                vec![],
            ),
            (
                &records[4],
                Some("0123"),
                None,
                vec![format!("{:064}", 1), format!("{:063}b", 0)],
            ),
            (&records[2], None, None, vec![format!("{:062}aa", 0)]),
            (
                &records[5],
                Some("ZZ0123ZZ01"),
                Some(&*"f".repeat(64)),
                vec![],
            ),
        ] {
            r.borrowed().read_into(&mut kept).unwrap();
            assert_eq!(kept.publisher().map(|p| p.id.as_str()), publisher);
            assert_eq!(kept.signing_cert_sha256.as_deref(), cert);
            assert_eq!(kept.code_sha256, codes);
        }
        let bad = [
            text(
                r#"{"app":{"platform":"windows","id":"x"},"action":"download","at":"2020-09-21T12:00:00Z","storefront":"US"}"#,
            ),
            text(
                r#"{"app":{"platform":"ios","id":"x"},"action":"download","at":"2020-09-21T12:00:00Z"}"#,
            ),
            text(r#"{"action":"download","at":"2020-09-21T12:00:00Z","storefront":"US"}"#),
            text(
                r#"{"app":{"platform":"ios","id":"x"},"action":"download","at":"2021-02-30T00:00:00Z","storefront":"US"}"#,
            ),
            text(
                r#"{"app":{"platform":"ios","id":"x"},"code_sha256":["0000000000000000000000000000000000000000000000000000000000000001","00"],"action":"download","at":"2021-01-01T00:00:00Z","storefront":"US"}"#,
            ),
            text(
                r#"{"publisher":{"store":"apple","id":"ABCDE1234"},"signing_cert_sha256":"0000000000000000000000000000000000000000000000000000000000000001","action":"download","at":"2021-01-01T00:00:00Z","storefront":"US"}"#,
            ),
            text(
                r#"{"signing_cert_sha256":"000000000000000000000000000000000000000000000000000000000000000g","action":"download","at":"2021-01-01T00:00:00Z","storefront":"US"}"#,
            ),
        ];
        let mut kept = records[3].clone().into_request().unwrap();
        for _ in 0..2 {
            for r in records.iter().chain(&bad) {
                let before = kept.clone();
                let read = r.borrowed().read_into(&mut kept);
                match r.clone().into_request() {
                    Ok(expected) => {
                        assert_eq!(read, Ok(()));
                        assert_eq!(kept, expected);
                    }
                    Err(e) => {
                        assert_eq!(read, Err(e));
                        assert_eq!(kept, before, "an error leaves the request as it was");
                    }
                }
            }
        }
    }

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        for c in (0u32..0x80).chain([0xa0, 0xe9, 0x2028, 0x4e2d, 0x1f600]) {
            let c = char::from_u32(c).unwrap();
            let s = format!("a{c}b");
            assert_eq!(escaped(&s), serde_json::to_string(&s).unwrap(), "{c:?}");
        }
        // Specials at every offset around the eight-byte words, and none at all.
        let alphabet = [
            'a', 'z', '"', '\\', '\n', '\u{1}', '\u{1f}', ' ', '\u{7f}', 'é', '😀',
        ];
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..20_000 {
            let len = rng.usize(0..40);
            let s: String = (0..len)
                .map(|_| {
                    if rng.u8(..) < 200 {
                        'x'
                    } else {
                        alphabet[rng.usize(..alphabet.len())]
                    }
                })
                .collect();
            assert_eq!(escaped(&s), serde_json::to_string(&s).unwrap(), "{s:?}");
        }
    }

    #[test]
    fn instants_are_written_as_their_display() {
        let mut rng = fastrand::Rng::with_seed(11);
        let second = 1_000_000_000i64;
        let mut cases = vec![
            i64::MIN,
            i64::MAX,
            0,
            -1,
            1,
            -second,
            second - 1,
            951_782_400 * second,
        ];
        for _ in 0..50_000 {
            let nanos = rng.i64(..);
            // Whole seconds, milliseconds, microseconds and nanoseconds.
            cases.extend([
                nanos - nanos.rem_euclid(second),
                nanos - nanos.rem_euclid(1_000_000),
                nanos - nanos.rem_euclid(1_000),
                nanos,
            ]);
        }
        for nanos in cases {
            let at = Instant::from_nanos(nanos);
            let mut out = Vec::new();
            write_instant(&mut out, at);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                format!("\"{at}\""),
                "{nanos}"
            );
        }
    }

    #[test]
    fn dates_from_days_are_chronos_and_undo_the_days_of_a_date() {
        use chrono::Datelike as _;
        // Every day from 0001-01-01 to 9999-12-31, and the days around their ends.
        for days in -719_162..=2_932_896 {
            let (year, month, day) = civil_from_days(days).unwrap();
            assert_eq!(days_since_epoch(year, month, day), Some(days), "{days}");
            let date = chrono::NaiveDate::from_num_days_from_ce_opt(days as i32 + 719_163).unwrap();
            assert_eq!(
                (year, month, day),
                (date.year() as u32, date.month(), date.day()),
                "{days}"
            );
        }
        // The first day it gives, 0000-03-01, and none before it.
        assert_eq!(civil_from_days(-719_468), Some((0, 3, 1)));
        assert_eq!(civil_from_days(-719_469), None);
        assert_eq!(civil_from_days(i64::MIN), None);
        assert_eq!(civil_from_days(i64::MAX), None);
    }

    #[test]
    fn request_instants_parse_as_rfc3339_parses_them() {
        let mut rng = fastrand::Rng::with_seed(13);
        let mut cases: Vec<String> = [
            "2020-09-22T12:00:00Z",
            "2000-02-29T00:00:00Z",
            "1900-02-29T00:00:00Z",
            "2100-02-29T00:00:00Z",
            "2024-02-29T23:59:59Z",
            "2023-02-29T00:00:00Z",
            "2021-04-31T00:00:00Z",
            "2021-12-31T23:59:59Z",
            "2021-13-01T00:00:00Z",
            "2021-00-01T00:00:00Z",
            "2021-01-00T00:00:00Z",
            "2021-01-01T24:00:00Z",
            "2021-01-01T00:60:00Z",
            "2021-01-01T00:00:60Z",
            "1699-12-31T23:59:59Z",
            "1700-01-01T00:00:00Z",
            "2199-12-31T23:59:59Z",
            "2200-01-01T00:00:00Z",
            "1677-09-21T00:12:44Z",
            "2262-04-11T23:47:16Z",
            "2021-01-01t00:00:00z",
            "2021-01-01 00:00:00Z",
            " 2021-01-01T00:00:00Z",
            "2021-01-01T00:00:00Z ",
            "2021-01-01T00:00:00+00:00",
            "2021-01-01T00:00:00.5Z",
            "2021-01-01T00:00:00",
            "2021-1-01T00:00:00Z",
            "2021-01-01T0a:00:00Z",
            "",
        ]
        .map(str::to_owned)
        .into();
        for _ in 0..20_000 {
            let mut s = format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
                rng.u32(1600..2300),
                rng.u32(0..14),
                rng.u32(0..33),
                rng.u32(0..26),
                rng.u32(0..62),
                rng.u32(0..62)
            );
            if rng.u8(..) < 20 {
                // A byte changed.
                let mut bytes = s.into_bytes();
                let k = rng.usize(..bytes.len());
                bytes[k] = rng.u8(0x20..0x7f);
                s = String::from_utf8(bytes).unwrap();
            }
            cases.push(s);
        }
        for s in cases {
            assert_eq!(parse_instant(&s), Instant::parse_rfc3339(&s), "{s:?}");
        }
    }

    #[test]
    fn country_codes_parse_as_country_parses_them() {
        let letters: Vec<char> = ('A'..='Z').collect();
        let mut codes: Vec<String> = Vec::new();
        for &a in &letters {
            for &b in &letters {
                codes.push(format!("{a}{b}"));
                for &c in &letters {
                    codes.push(format!("{a}{b}{c}"));
                }
            }
        }
        codes.extend(
            ["us", "Us", "can", "CaN", "U", "USAA", "", "U1", "1US", "ÉU"].map(str::to_owned),
        );
        // Twice: when found, and when kept.
        for _ in 0..2 {
            for code in &codes {
                assert_eq!(parse_country(code), Country::parse(code), "{code}");
            }
        }
    }

    /// A request's JSON text from parts chosen by `rng`: usually the usual form (random
    /// white space, key order, nulls and optional fields), sometimes another form or
    /// broken.
    fn request_text(rng: &mut fastrand::Rng) -> String {
        let ws = |rng: &mut fastrand::Rng| -> &'static str {
            [" ", "", "", "\n", "\t", "\r\n  "][rng.usize(..6)]
        };
        let value = |rng: &mut fastrand::Rng, plain: &str| -> String {
            match rng.u8(..) {
                0..=7 => "null".to_owned(),
                8..=11 => "5".to_owned(),
                12..=15 => format!("\"{plain}\\n\""),
                16..=18 => format!("\"{plain}\\u0041\""),
                19..=20 => "\"a\u{1}b\"".to_owned(),
                21..=22 => "[\"x\"]".to_owned(),
                23..=24 => "{}".to_owned(),
                _ => format!("\"{plain}\""),
            }
        };
        let object = |rng: &mut fastrand::Rng, fields: Vec<(String, String)>| -> String {
            let mut text = format!("{{{}", ws(rng));
            for (k, (key, value)) in fields.iter().enumerate() {
                if k > 0 {
                    text.push_str(&format!("{},{}", ws(rng), ws(rng)));
                }
                text.push_str(&format!("\"{key}\"{}:{}{value}", ws(rng), ws(rng)));
            }
            if rng.u8(..) < 3 {
                text.push(',');
            }
            text.push_str(&format!("{}}}", ws(rng)));
            text
        };
        let mut fields: Vec<(String, String)> = Vec::new();
        let platform = ["android", "ios", "tv", ""][rng.usize(..4)];
        let id = ["com.acme.chat", "com..acme", "é.app", "com.tencent.mm"][rng.usize(..4)];
        if rng.u8(..) < 230 {
            let mut app = vec![
                ("platform".to_owned(), value(rng, platform)),
                ("id".to_owned(), value(rng, id)),
            ];
            if rng.bool() {
                app.reverse();
            }
            if rng.u8(..) < 8 {
                app.pop();
            }
            if rng.u8(..) < 8 {
                app.push(("store".to_owned(), "\"apple\"".to_owned()));
            }
            let app = if rng.u8(..) < 8 {
                "null".to_owned()
            } else {
                object(rng, app)
            };
            fields.push(("app".to_owned(), app));
        }
        if rng.u8(..) < 40 {
            let store = ["google", "apple", "steam"][rng.usize(..3)];
            let publisher = vec![
                ("store".to_owned(), value(rng, store)),
                ("id".to_owned(), value(rng, "4242")),
            ];
            let publisher = object(rng, publisher);
            fields.push(("publisher".to_owned(), publisher));
        }
        let action = ["update", "download", "steal"][rng.usize(..3)];
        let at = ["2020-09-22T12:00:00Z", "2025-03-01T12:00:00+01:00", "later"][rng.usize(..3)];
        for (key, plain) in [("action", action), ("at", at)] {
            if rng.u8(..) < 250 {
                fields.push((key.to_owned(), value(rng, plain)));
            }
        }
        for key in [
            "known_at",
            "storefront",
            "device_country",
            "ip_country",
            "billing_country",
            "server_country",
            "signing_cert_sha256",
        ] {
            if rng.u8(..) < 50 {
                let plain = ["US", "CAN", "ZZ", "2020-09-01T00:00:00Z"][rng.usize(..4)];
                fields.push((key.to_owned(), value(rng, plain)));
            }
        }
        if rng.u8(..) < 30 {
            let codes: Vec<String> = (0..rng.usize(0..3))
                .map(|_| value(rng, &"ab".repeat(32)))
                .collect();
            let array = if rng.u8(..) < 10 {
                "null".to_owned()
            } else {
                format!("[{}{}]", ws(rng), codes.join(&format!(",{}", ws(rng))))
            };
            fields.push(("code_sha256".to_owned(), array));
        }
        if rng.u8(..) < 6 {
            fields.push(("unknown".to_owned(), "\"x\"".to_owned()));
        }
        if rng.u8(..) < 6 && !fields.is_empty() {
            let again = fields[rng.usize(..fields.len())].clone();
            fields.push(again);
        }
        rng.shuffle(&mut fields);
        let mut text = object(rng, fields);
        if rng.u8(..) < 6 {
            // Cut short.
            let mut cut = rng.usize(..text.len());
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
        // What follows a request in a batch.
        text.push_str([",", "]", " ,", ""][rng.usize(..4)]);
        text
    }

    /// `from_json_prefix`, and the layout learnt from `learnt_from`, read `text` as
    /// `serde_json` reads the request they say they took.
    fn check_read(text: &str, layout: &mut RequestLayout) -> bool {
        let fast = RequestRecordRef::from_json_prefix(text);
        let by_layout = layout.read(text);
        assert_eq!(fast, by_layout, "{text:?}");
        let Some((record, len)) = fast else {
            return false;
        };
        assert!(text[..len].ends_with('}'), "{text:?} {len}");
        let owned: RequestRecord = serde_json::from_str(&text[..len])
            .unwrap_or_else(|e| panic!("{text:?} was read, but serde_json says: {e}"));
        assert_eq!(owned.borrowed(), record, "{text:?}");
        assert_eq!(
            owned.clone().into_request(),
            record.into_request(),
            "{text:?}"
        );
        true
    }

    /// `text` with the string values of the request read from it replaced by others, some
    /// with characters that need escaping.
    fn other_values(text: &str, record: &RequestRecordRef<'_>, rng: &mut fastrand::Rng) -> String {
        let mut spans: Vec<(usize, usize)> = [record.action, record.at]
            .into_iter()
            .chain(record.app.iter().flat_map(|a| [a.platform, a.id]))
            .chain(record.publisher.iter().flat_map(|p| [p.store, p.id]))
            .chain(
                [
                    record.known_at,
                    record.storefront,
                    record.device_country,
                    record.ip_country,
                    record.billing_country,
                    record.server_country,
                    record.signing_cert_sha256,
                ]
                .into_iter()
                .flatten(),
            )
            .chain(record.code_sha256.iter().copied())
            .map(|v| {
                let start = v.as_ptr() as usize - text.as_ptr() as usize;
                (start, start + v.len())
            })
            .collect();
        spans.sort_unstable();
        let mut out = String::new();
        let mut from = 0;
        for (start, end) in spans {
            out.push_str(&text[from..start]);
            let value = [
                "",
                "US",
                "com.acme.chat",
                "é😀",
                "2021-01-01T00:00:00Z",
                "a\\\"b",
                "a\u{1}",
            ][rng.usize(..7)];
            out.push_str(value);
            from = end;
        }
        out.push_str(&text[from..]);
        out
    }

    /// `same_bytes` says what `==` says, at every length it compares in words and beyond,
    /// whichever byte differs.
    #[test]
    fn texts_are_compared_as_equality_compares_them() {
        for n in 0..40 {
            let a: Vec<u8> = (0..n).map(|i| b'a' + (i % 26) as u8).collect();
            assert!(same_bytes(&a, &a.clone()), "{n} bytes");
            for at in 0..n {
                let mut b = a.clone();
                b[at] ^= 0x20;
                assert!(!same_bytes(&a, &b), "{n} bytes, byte {at} differs");
            }
            assert!(!same_bytes(&a, &a[..n.saturating_sub(1)]) || n == 0);
        }
    }

    #[test]
    fn requests_in_the_usual_form_are_read_as_serde_json_reads_them() {
        let mut rng = fastrand::Rng::with_seed(17);
        let mut layout = RequestLayout::default();
        let (mut read, mut by_layout) = (0, 0);
        for _ in 0..100_000 {
            let text = request_text(&mut rng);
            read += usize::from(check_read(&text, &mut layout));
            if let Some((record, _)) = RequestRecordRef::from_json_prefix(&text) {
                // The same layout with other values.
                for _ in 0..3 {
                    let other = other_values(&text, &record, &mut rng);
                    by_layout += usize::from(
                        layout
                            .read_by_layout(&other, &mut RequestRecordRef::default())
                            .is_some(),
                    );
                    check_read(&other, &mut layout);
                }
            }
        }
        // Most are in the usual form, and most with other values are read by the layout.
        assert!(read > 30_000, "{read}");
        assert!(by_layout > 15_000, "{by_layout}");
    }

    /// A record read into again by the layout keeps the memory of its list of digests: a
    /// batch of requests with digests allocates that list once, not for each request.
    #[test]
    fn a_record_read_into_again_keeps_its_list_of_digests() {
        let digest = |c: char| c.to_string().repeat(64);
        let texts: Vec<(String, String)> = ['a', 'b', 'c']
            .into_iter()
            .map(|c| {
                let d = digest(c);
                let text = format!(
                    r#"{{"action":"update","at":"2020-09-22T12:00:00Z","code_sha256":["{d}","{d}"]}}"#
                );
                (text, d)
            })
            .collect();
        let (mut layout, mut record) = (RequestLayout::default(), RequestRecordRef::default());
        let mut lists = Vec::new();
        for (text, d) in &texts {
            layout.read_to(text, &mut record).unwrap();
            assert_eq!(record.code_sha256, [d.as_str(), d.as_str()]);
            lists.push(record.code_sha256.as_ptr());
        }
        // The first is read in full, into a list of its own; the others by the layout.
        assert_eq!(lists[1], lists[2]);
    }

    /// Requests read one after another into one record, as a batch is: each as it is read
    /// alone, whatever the one before it carried (digests, a publisher, `known_at`).
    #[test]
    fn requests_read_into_one_record_are_read_as_alone() {
        let mut rng = fastrand::Rng::with_seed(29);
        let mut texts = Vec::new();
        while texts.len() < 20_000 {
            let text = request_text(&mut rng);
            if let Some((record, _)) = RequestRecordRef::from_json_prefix(&text) {
                for _ in 0..3 {
                    texts.push(other_values(&text, &record, &mut rng));
                }
            }
            texts.push(text);
        }
        let (mut layout, mut record) = (RequestLayout::default(), RequestRecordRef::default());
        let mut read = 0;
        for text in &texts {
            let alone = RequestRecordRef::from_json_prefix(text);
            match layout.read_to(text, &mut record) {
                Some(len) => {
                    assert_eq!(alone, Some((record.clone(), len)), "{text:?}");
                    read += 1;
                }
                None => assert_eq!(alone, None, "{text:?}"),
            }
        }
        assert!(read > 5_000, "{read}");
    }

    #[test]
    fn a_layout_reads_requests_written_the_same_way() {
        let one = r#"{"app":{"platform":"android","id":"com.tencent.mm"},"action":"update","at":"2020-09-22T12:00:00Z","storefront":"US"}"#;
        let mut layout = RequestLayout::default();
        assert!(check_read(one, &mut layout));
        assert!(layout.learnt);
        let others = [
            r#"{"app":{"platform":"ios","id":"com.zhiliaoapp.musically"},"action":"download","at":"2020-09-22T12:00:00Z","storefront":"CAN"}"#,
            r#"{"app":{"platform":"","id":""},"action":"","at":"","storefront":""}"#,
            r#"{"app":{"platform":"é","id":"中文"},"action":"x","at":"y","storefront":"😀"},"#,
        ];
        for text in others {
            assert!(
                layout
                    .read_by_layout(text, &mut RequestRecordRef::default())
                    .is_some(),
                "{text}"
            );
            assert!(check_read(text, &mut layout), "{text}");
        }
        // Not the same way: read in full (or not at all), and the layout follows.
        for text in [
            r#"{"app":{"platform":"ios","id":"com.x"},"action":"download","at":"2020-09-22T12:00:00Z","storefront":"CAN","storefront":"US"}"#,
            r#"{"app":{"platform":"ios","id":"com.x"},"action":"download","at":"2020-09-22T12:00:00Z","storefront":null}"#,
            r#"{"app":{"platform":"ios","id":"com.x"},"action":"download","at":"2020-09-22T12:00:00Z","storefront":"U\"S"}"#,
            r#"{"app":{"platform":"ios","id":"com.x"},"action":"download","at":"2020-09-22T12:00:00Z","storefront":"U\nS"}"#,
            r#"{"app":{"platform":"ios","id":"com.x"},"action":"download","at":"2020-09-22T12:00:00Z","storefront":5}"#,
            r#"{"app":{"platform":"ios","id":"com.x"},"action":"download","at":"2020-09-22T12:00:00Z","storefront":"US" }"#,
            r#"{"app":{"platform":"ios","id":"com.x"},"action":"download","at":"2020-09-22T12:00:00Z","storefront":"US""#,
        ] {
            check_read(text, &mut layout);
        }
    }

    /// The files of policy folders of the repository, and the requests of their cases.
    fn repository_policies() -> (Vec<Vec<Source>>, Vec<Request>) {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let read = |dirs: &[&str]| -> Vec<Source> {
            let mut sources = Vec::new();
            for dir in dirs {
                let mut paths: Vec<_> = std::fs::read_dir(root.join(dir))
                    .unwrap()
                    .map(|e| e.unwrap().path())
                    .filter(|p| p.extension().is_some_and(|e| e == "toml"))
                    .collect();
                paths.sort();
                for path in paths {
                    let text = std::fs::read_to_string(&path).unwrap();
                    sources.push(Source::new(path.display().to_string(), text));
                }
            }
            sources
        };
        let sets = vec![
            read(&["policies/common", "policies/us-2020"]),
            read(&[
                "policies/common",
                "policies/us-2020",
                "policies/us-2020-courts",
                "policies/us-2024-pafaca",
            ]),
            read(&["tests/fixtures/good"]),
        ];
        let mut requests = Vec::new();
        for dir in [
            "policies/us-2020",
            "policies/us-2020-courts",
            "policies/us-2024-pafaca",
            "tests/fixtures/good",
        ] {
            for entry in std::fs::read_dir(root.join(dir).join("tests")).unwrap() {
                let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
                for line in text.lines().filter(|l| !l.trim().is_empty()) {
                    let case: serde_json::Value = serde_json::from_str(line).unwrap();
                    let record: RequestRecord =
                        serde_json::from_value(case["request"].clone()).unwrap();
                    if let Ok(r) = record.into_request() {
                        requests.push(r);
                    }
                }
            }
        }
        (sets, requests)
    }

    /// The decision written by `json` is the JSON `Serialize` and `to_record` give.
    fn check_written(json: &DecisionJson, decision: &Decision<'_>) -> String {
        let mut out = Vec::new();
        json.write(decision, &mut out);
        let written = String::from_utf8(out).unwrap();
        assert_eq!(written, serde_json::to_string(decision).unwrap());
        assert_eq!(
            written,
            serde_json::to_string(&decision.to_record()).unwrap()
        );
        written
    }

    #[test]
    fn decisions_are_written_as_serde_writes_them() {
        let (sets, requests) = repository_policies();
        assert!(requests.len() > 100);
        let policies: Vec<Policy> = sets
            .into_iter()
            .map(|s| Policy::from_sources(s).unwrap())
            .collect();
        let mut denies = 0;
        for policy in &policies {
            let json = DecisionJson::new(policy);
            // Another policy's table: not used for this policy's decisions.
            let other = DecisionJson::new(&policies[0]);
            for request in &requests {
                for posture in Posture::ALL {
                    let decision = policy.decide(request, posture);
                    denies += usize::from(decision.is_deny());
                    check_written(&json, &decision);
                    // Twice: rendered, then kept.
                    check_written(&json, &decision);
                    check_written(&other, &decision);
                    let mut late = request.clone();
                    late.set_at(Instant::parse_rfc3339("2031-01-01T00:00:00.123456Z").unwrap());
                    check_written(&json, &policy.decide(&late, posture));
                }
            }
        }
        assert!(denies > 100, "{denies}");
    }

    #[test]
    fn texts_with_quotes_backslashes_control_and_non_ascii_characters_are_escaped() {
        let text = r#"
[instrument]
id = "order-1"
kind = "identification"
title = "Order"
authority = "Authority"
citation = "1 XR 1 \"quoted\" \\ back\tslash \u0001\u001f\u007f é ✓ 😀"
source = "https://example.org/o?q=\"x\"&y=\\"
issued = 2021-01-01T00:00:00Z
pursuant_to = ["statute-s"]

[[region]]
id = "r-1"
name = "Region \"one\""
countries = ["US", "CA"]

[[entity]]
id = "e_1"
name = "Entity \\ one"

[[app]]
id = "app.1"
name = "App"
owner = "e_1"
android = ["com.acme.chat"]

[[prohibition]]
id = "p-1"
item = "item \"1\"\n\\"
apps = ["app.1"]
actions = ["download"]
region = "r-1"
jurisdiction = [["storefront"], ["ip_country"]]
effective = 2021-02-01T00:00:00Z
text = "Text with \"quotes\", \\backslashes\\, \b\f\n\r\t controls \u0000 \u001b, DEL \u007f, and non-ASCII: é, ß, 中文, 😀"

[[prohibition]]
id = "second"
owners = ["e_1"]
actions = ["download", "update"]
region = "r-1"
effective = 2021-02-01T00:00:00Z
text = "Second \"text\""
"#;
        let statute = r#"
[instrument]
id = "statute-s"
kind = "statute"
title = "Statute"
authority = "Congress"
citation = "Pub. L. \"1\"\u0007"
source = "https://example.org/s\\"
issued = 2020-01-01T00:00:00Z
"#;
        let policy = match Policy::from_sources([
            Source::new("o.toml", text),
            Source::new("s.toml", statute),
        ]) {
            Ok(p) => p,
            Err(d) => panic!("{d:?}"),
        };
        let json = DecisionJson::new(&policy);
        let mut written = String::new();
        for at in ["2021-01-15T00:00:00Z", "2021-03-01T00:00:00Z"] {
            for (storefront, ip) in [(Some("US"), None), (None, Some("CA")), (Some("FR"), None)] {
                for action in ["download", "update"] {
                    let request = RequestRecord {
                        app: Some(AppRecord {
                            platform: "android".into(),
                            id: "com.ACME.chat".into(),
                        }),
                        action: action.into(),
                        at: at.into(),
                        storefront: storefront.map(str::to_owned),
                        ip_country: ip.map(str::to_owned),
                        ..RequestRecord::default()
                    }
                    .into_request()
                    .unwrap();
                    for posture in Posture::ALL {
                        let decision = policy.decide(&request, posture);
                        check_written(&json, &decision);
                        written.push_str(&check_written(&json, &decision));
                    }
                }
            }
        }
        // Reasons with every kind of character were written.
        for part in [
            r#""item":"item \"1\"\n\\""#,
            r#"\b\f\n\r\t controls \u0000 \u001b, DEL "#,
            ", and non-ASCII: é, ß, 中文, 😀\"",
            r#""citation":"Pub. L. \"1\"\u0007""#,
            r#""assumed":[["ip_country"]]"#,
            r#""case_insensitive_match":true"#,
        ] {
            assert!(written.contains(part), "{part} in {written}");
        }
    }
}
