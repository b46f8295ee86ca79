//! Requests: which app, which action, when, and where. A [`Request`] can only be made
//! by validating its JSON form ([`crate::RequestRecord::into_request`]): this module and
//! `wire` are the one place where a request's fields are checked.

use std::fmt;

use serde::Serialize;

use crate::action::Action;
use crate::country::Country;
use crate::instant::Instant;

/// A mobile platform.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    Ios,
    Android,
}

impl Platform {
    /// The spelling used in requests.
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Ios => "ios",
            Platform::Android => "android",
        }
    }
}

/// An app store that publishes apps from developer accounts.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Store {
    /// The App Store: accounts are Apple team ids.
    Apple,
    /// Google Play: accounts are developer account ids.
    Google,
}

impl Store {
    /// The spelling used in policies and requests.
    pub fn as_str(self) -> &'static str {
        match self {
            Store::Apple => "apple",
            Store::Google => "google",
        }
    }

    /// Parses `apple` or `google`.
    pub fn parse(text: &str) -> Option<Store> {
        match text {
            "apple" => Some(Store::Apple),
            "google" => Some(Store::Google),
            _ => None,
        }
    }

    /// The account id in its normal form (Apple team ids upper case), or why it is not one.
    pub fn normalize_account(self, id: &str) -> Result<String, String> {
        self.check_account(id)?;
        let mut out = String::with_capacity(id.len());
        self.write_account(id, &mut out);
        Ok(out)
    }

    /// What [`Store::normalize_account`] checks, allocating nothing when `id` is an
    /// account id of this store.
    pub(crate) fn check_account(self, id: &str) -> Result<(), String> {
        match self {
            Store::Apple => {
                if id.len() == 10 && id.bytes().all(|b| b.is_ascii_alphanumeric()) {
                    Ok(())
                } else {
                    Err(format!(
                        "`{id}` is not an Apple team id (10 letters and digits)"
                    ))
                }
            }
            Store::Google => {
                if (1..=25).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_digit()) {
                    Ok(())
                } else {
                    Err(format!(
                        "`{id}` is not a Google Play developer account id (1 to 25 digits)"
                    ))
                }
            }
        }
    }

    /// Writes the normal form of an id [`Store::check_account`] accepts into `out`
    /// (cleared first), reusing its memory.
    pub(crate) fn write_account(self, id: &str, out: &mut String) {
        out.clear();
        out.push_str(id);
        if self == Store::Apple {
            out.make_ascii_uppercase();
        }
    }
}

/// The longest app identifier accepted.
pub const MAX_APP_ID_LEN: usize = 255;

/// Checks that `id` is a well-formed iOS bundle id or Android package name: 1 to 255
/// ASCII letters, digits, `.`, `_` and `-`, with no empty segment between dots.
pub fn check_app_id(id: &str) -> Result<(), String> {
    if is_plain_app_id(id.as_bytes()) {
        return Ok(());
    }
    if id.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if id.len() > MAX_APP_ID_LEN {
        return Err(format!(
            "is {} bytes long; an app id has at most {MAX_APP_ID_LEN}",
            id.len()
        ));
    }
    if let Some((at, c)) = id
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        let what = if c.is_whitespace() {
            "white space"
        } else if c.is_control() {
            "a control character"
        } else if !c.is_ascii() {
            "a non-ASCII character"
        } else {
            "a character"
        };
        return Err(format!(
            "`{}` has {what} ({}) at byte {at}; an app id uses ASCII letters, digits, `.`, `_` and `-`",
            id.escape_debug(),
            c.escape_unicode()
        ));
    }
    if id.split('.').any(str::is_empty) {
        return Err(format!(
            "`{id}` has an empty segment (a leading, trailing or doubled `.`)"
        ));
    }
    Ok(())
}

/// What [`check_app_id`] accepts, in one pass over the bytes (it says why not), eight
/// bytes at a time.
fn is_plain_app_id(id: &[u8]) -> bool {
    let (Some(&first), Some(&last)) = (id.first(), id.last()) else {
        return false;
    };
    if id.len() > MAX_APP_ID_LEN || first == b'.' || last == b'.' {
        return false;
    }
    // Every byte of a class, no dot after a dot: a word's flags in the high bit of each
    // byte, a dot at the end of one word carried to the start of the next.
    let mut bad = 0u64;
    let mut dot_before = 0u64;
    let mut chunks = id.chunks_exact(8);
    for chunk in chunks.by_ref() {
        let (wrong, dots) = app_id_word(crate::engine::word(chunk));
        bad |= wrong | (dots & ((dots >> 8) | dot_before));
        dot_before = dots >> 56;
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        let (wrong, dots) = match id.len().checked_sub(8) {
            // The last eight bytes, some checked again: a dot before the tail is in them.
            Some(start) => app_id_word(crate::engine::word(&id[start..])),
            // Padded with letters, which are neither wrong nor dots.
            None => app_id_word(
                crate::engine::short(tail) | (u64::from_le_bytes([b'a'; 8]) << (8 * tail.len())),
            ),
        };
        bad |= wrong | (dots & (dots >> 8));
    }
    bad == 0
}

/// Eight bytes of an app id: in the high bit of each byte, whether the byte is not one an
/// app id holds (an ASCII letter, digit, `.`, `_` or `-`), and whether it is a dot. Exact
/// for each byte: no sum carries from one byte into the next.
#[inline]
fn app_id_word(v: u64) -> (u64, u64) {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = ONES * 0x80;
    let non_ascii = v & HIGH;
    // Each byte below 0x80 from here: adding at most 0x80 to one does not carry.
    let v = v & !HIGH;
    let at_least = |lo: u8| v + ONES * u64::from(0x80 - lo);
    let above = |hi: u8| v + ONES * u64::from(0x7f - hi);
    let equal = |c: u8| !((v ^ (ONES * u64::from(c))) + ONES * 0x7f);
    let dash_to_nine = at_least(b'-') & !above(b'9') & !equal(b'/');
    let upper = at_least(b'A') & !above(b'Z');
    let lower = at_least(b'a') & !above(b'z');
    let fits = dash_to_nine | upper | lower | equal(b'_');
    (non_ascii | (!fits & HIGH), equal(b'.') & HIGH)
}

/// An app as a store names it.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct AppRef {
    pub platform: Platform,
    /// The iOS bundle id or Android package name, as the request spelled it: kept in the
    /// request itself when it is no longer than a `String` (24 bytes on 64-bit targets, as
    /// most are), so that reading a request brings its app id with it, where a `String`
    /// would be one more read elsewhere in memory.
    pub(crate) id: compact_str::CompactString,
}

impl AppRef {
    /// The iOS bundle id or Android package name, as the request spelled it.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Makes `id` this app's id, in place when it fits (even where a longer id before it
    /// had its own memory), otherwise in the memory a longer id before it left.
    pub(crate) fn set_id(&mut self, id: &str) {
        if id.len() <= std::mem::size_of::<String>() {
            self.id = compact_str::CompactString::new(id);
        } else {
            self.id.clear();
            self.id.push_str(id);
        }
    }
}

/// The developer account an app is published from.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Publisher {
    pub store: Store,
    /// Normal form (see [`Store::normalize_account`]).
    pub id: String,
}

/// A jurisdiction signal: one way a request can be placed in a country.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    /// The store account's country (Apple storefronts are alpha-3).
    Storefront,
    /// Where the device says it is.
    DeviceCountry,
    /// Where the client's IP address is.
    IpCountry,
    /// The payment profile's country.
    BillingCountry,
    /// Where the serving infrastructure is (host, cdn, peering).
    ServerCountry,
}

impl Signal {
    /// Every signal, in the order a decision reports them.
    pub const ALL: [Signal; 5] = [
        Signal::Storefront,
        Signal::DeviceCountry,
        Signal::IpCountry,
        Signal::BillingCountry,
        Signal::ServerCountry,
    ];

    /// The request field that carries it.
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Storefront => "storefront",
            Signal::DeviceCountry => "device_country",
            Signal::IpCountry => "ip_country",
            Signal::BillingCountry => "billing_country",
            Signal::ServerCountry => "server_country",
        }
    }

    /// Parses a request field name.
    pub fn parse(text: &str) -> Option<Signal> {
        Signal::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// A phrase for explanations.
    pub fn describe(self) -> &'static str {
        match self {
            Signal::Storefront => "store account (storefront)",
            Signal::DeviceCountry => "device location",
            Signal::IpCountry => "IP address location",
            Signal::BillingCountry => "billing country",
            Signal::ServerCountry => "serving infrastructure",
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of signals: one group of a jurisdiction test.
///
/// With serde, its bits; a set with bits of no signal is refused.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default, Serialize, serde::Deserialize,
)]
#[serde(into = "u8", try_from = "u8")]
pub struct SignalSet(u8);

impl From<SignalSet> for u8 {
    fn from(s: SignalSet) -> u8 {
        s.0
    }
}

impl TryFrom<u8> for SignalSet {
    type Error = String;

    fn try_from(bits: u8) -> Result<SignalSet, String> {
        if bits & !SignalSet::ALL.0 == 0 {
            Ok(SignalSet(bits))
        } else {
            Err(format!("signal set {bits:#b} has bits of no signal"))
        }
    }
}

impl SignalSet {
    /// Every signal.
    pub const ALL: SignalSet = SignalSet(0b1_1111);

    /// Adds a signal; false when it was there already.
    pub fn insert(&mut self, s: Signal) -> bool {
        let had = self.contains(s);
        self.0 |= 1 << s as u8;
        !had
    }

    /// Whether the set holds the signal.
    pub fn contains(self, s: Signal) -> bool {
        self.0 & (1 << s as u8) != 0
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The signals, in [`Signal::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Signal> {
        Signal::ALL.into_iter().filter(move |s| self.contains(*s))
    }
}

/// A validated request.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Request {
    pub(crate) app: Option<AppRef>,
    pub(crate) publisher: Option<Publisher>,
    /// Lower-case hex, no separators.
    pub(crate) signing_cert_sha256: Option<String>,
    /// Lower-case hex, no separators.
    pub(crate) code_sha256: Vec<String>,
    pub(crate) action: Action,
    pub(crate) at: Instant,
    pub(crate) known_at: Option<Instant>,
    /// Countries by [`Signal`] order; `None` where the request does not carry it.
    pub(crate) signals: [Option<Country>; 5],
}

impl Request {
    /// The app as the store names it, if the request names one.
    pub fn app(&self) -> Option<&AppRef> {
        self.app.as_ref()
    }
    /// The account the app is published from, if given.
    pub fn publisher(&self) -> Option<&Publisher> {
        self.publisher.as_ref()
    }
    /// What the request asks to do.
    pub fn action(&self) -> Action {
        self.action
    }
    /// The instant the request is judged at.
    pub fn at(&self) -> Instant {
        self.at
    }
    /// The same request at another instant (every instant is a valid one): walking a
    /// request's answer over time needs no new validation.
    pub fn set_at(&mut self, at: Instant) {
        self.at = at;
    }
    /// Judge with the instruments issued by this instant instead of by `at`.
    pub fn known_at(&self) -> Option<Instant> {
        self.known_at
    }
    /// The same request at another instant (for "what would change it").
    pub fn at_instant(&self, at: Instant) -> Request {
        Request { at, ..self.clone() }
    }
    /// The country a signal places the request in, if it carries that signal.
    pub fn signal(&self, s: Signal) -> Option<Country> {
        self.signals[s as usize]
    }

    /// The signals the request carries, in [`Signal`] order.
    pub fn carried_signals(&self) -> impl Iterator<Item = (Signal, Country)> + '_ {
        Signal::ALL
            .into_iter()
            .zip(self.signals.iter())
            .filter_map(|(s, c)| c.map(|c| (s, c)))
    }
}

/// Why a request cannot be decided.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum RequestError {
    /// No jurisdiction signal: deciding would be a silent allow.
    #[error(
        "request carries no jurisdiction signal; give at least one of `storefront`, `device_country`, `ip_country`, `billing_country`, `server_country`"
    )]
    NoSignal,
    /// No way to tell which app.
    #[error(
        "request names no app; give `app` (platform and id), `signing_cert_sha256` or `code_sha256`"
    )]
    NoApp,
    /// A malformed field.
    #[error("`{field}`: {message}")]
    Field {
        field: &'static str,
        message: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{AppRecord, PublisherRecord, RequestRecord};

    /// A valid request: downloading `com.acme.chat` on Android from a US storefront.
    fn record() -> RequestRecord {
        RequestRecord {
            app: Some(AppRecord {
                platform: "android".into(),
                id: "com.acme.chat".into(),
            }),
            action: "download".into(),
            at: "2021-02-10T00:00:00Z".into(),
            storefront: Some("US".into()),
            ..RequestRecord::default()
        }
    }

    /// The field a rejected record is blamed on.
    fn field_of(record: RequestRecord) -> &'static str {
        match record.into_request() {
            Err(RequestError::Field { field, .. }) => field,
            other => panic!("expected a field error, got {other:?}"),
        }
    }

    #[test]
    fn app_ids_are_at_most_255_bytes() {
        let longest = "a".repeat(MAX_APP_ID_LEN);
        assert_eq!(check_app_id(&longest), Ok(()));
        assert_eq!(check_app_id("a"), Ok(()));
        let too_long = "a".repeat(MAX_APP_ID_LEN + 1);
        assert_eq!(
            check_app_id(&too_long),
            Err("is 256 bytes long; an app id has at most 255".to_owned())
        );
        assert_eq!(check_app_id(""), Err("must not be empty".to_owned()));
    }

    #[test]
    fn app_ids_take_letters_digits_dots_underscores_and_hyphens_only() {
        assert_eq!(check_app_id("com.Acme-2_x.chat9"), Ok(()));
        for (bad, what) in [
            ("com.acme chat", "white space"),
            ("com.acme\u{7}chat", "a control character"),
            ("com.acmé.chat", "a non-ASCII character"),
            ("com.acme/chat", "a character"),
            ("com.acme+chat", "a character"),
        ] {
            let error = check_app_id(bad).unwrap_err();
            assert!(error.contains(&format!("has {what} (")), "`{bad}`: {error}");
        }
        for bad in [".com.acme", "com.acme.", "com..acme", "."] {
            let error = check_app_id(bad).unwrap_err();
            assert!(error.contains("empty segment"), "`{bad}`: {error}");
        }
    }

    /// What an app id is, byte by byte: the definition the word-at-a-time check is held to.
    fn well_formed(id: &[u8]) -> bool {
        !id.is_empty()
            && id.len() <= MAX_APP_ID_LEN
            && id
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
            && !id.split(|&b| b == b'.').any(<[u8]>::is_empty)
    }

    #[test]
    fn the_one_pass_check_accepts_exactly_the_well_formed_app_ids() {
        let alphabet = [
            'a', 'Z', '0', '9', '.', '.', '_', '-', ' ', 'é', '/', '\u{7f}',
        ];
        let mut rng = fastrand::Rng::with_seed(3);
        let mut ids: Vec<String> = vec!["a".repeat(255), "a".repeat(256), "a.".repeat(128)];
        for _ in 0..50_000 {
            let len = rng.usize(0..20);
            ids.push(
                (0..len)
                    .map(|_| alphabet[rng.usize(..alphabet.len())])
                    .collect(),
            );
        }
        for id in ids {
            let ok = well_formed(id.as_bytes());
            assert_eq!(is_plain_app_id(id.as_bytes()), ok, "{id:?}");
            assert_eq!(check_app_id(&id).is_ok(), ok, "{id:?}");
        }
    }

    #[test]
    fn every_byte_in_every_place_of_a_word_is_checked_as_byte_by_byte() {
        // Each of the 256 bytes at each place of ids of 1 to 24 bytes (three words, the
        // last of them whole or padded), in ids of letters, and beside a dot (before and
        // after it, across the boundary of two words too).
        for len in 1..=24 {
            for at in 0..len {
                for byte in 0..=u8::MAX {
                    let mut id = vec![b'k'; len];
                    id[at] = byte;
                    assert_eq!(is_plain_app_id(&id), well_formed(&id), "{id:?}");
                    for dot in [at.wrapping_sub(1), at + 1] {
                        if let Some(place) = id.get_mut(dot) {
                            *place = b'.';
                            assert_eq!(is_plain_app_id(&id), well_formed(&id), "{id:?}");
                            id[dot] = b'k';
                        }
                    }
                }
            }
        }
        // Two dots at every pair of places, near and far.
        for len in 1..=24 {
            for a in 0..len {
                for b in a..len {
                    let mut id = vec![b'x'; len];
                    id[a] = b'.';
                    id[b] = b'.';
                    assert_eq!(is_plain_app_id(&id), well_formed(&id), "{id:?}");
                }
            }
        }
        // Runs of three and four dots at every place (a run across two words is flagged
        // twice, once in each).
        for len in 3..=24usize {
            for run in [3, 4] {
                for at in 0..(len + 1).saturating_sub(run) {
                    let mut id = vec![b'x'; len];
                    id[at..at + run].fill(b'.');
                    assert!(!is_plain_app_id(&id), "{id:?}");
                }
            }
        }
    }

    #[test]
    fn apple_team_ids_are_ten_letters_and_digits_in_upper_case() {
        let apple = Store::Apple;
        assert_eq!(
            apple.normalize_account("abcde12345"),
            Ok("ABCDE12345".to_owned())
        );
        assert_eq!(
            apple.normalize_account("ABCDE12345"),
            Ok("ABCDE12345".to_owned())
        );
        for bad in ["ABCDE1234", "ABCDE123456", "ABCDE-1234", "", "ABCDE 1234"] {
            assert!(apple.normalize_account(bad).is_err(), "`{bad}`");
        }
    }

    #[test]
    fn google_accounts_are_one_to_twenty_five_digits() {
        let google = Store::Google;
        assert_eq!(google.normalize_account("7"), Ok("7".to_owned()));
        let longest = "9".repeat(25);
        assert_eq!(google.normalize_account(&longest), Ok(longest.clone()));
        for bad in ["", "12a4", &"9".repeat(26), "1234567890a"] {
            assert!(google.normalize_account(bad).is_err(), "`{bad}`");
        }
    }

    #[test]
    fn stores_and_platforms_are_spelled_in_lower_case() {
        assert_eq!(Store::parse("apple"), Some(Store::Apple));
        assert_eq!(Store::parse("google"), Some(Store::Google));
        assert_eq!(Store::parse("Apple"), None);
        assert_eq!(Store::Apple.as_str(), "apple");
        assert_eq!(Store::Google.as_str(), "google");
        assert_eq!(Platform::Ios.as_str(), "ios");
        assert_eq!(Platform::Android.as_str(), "android");
    }

    #[test]
    fn signals_round_trip_through_their_field_names() {
        for s in Signal::ALL {
            assert_eq!(Signal::parse(s.as_str()), Some(s));
            assert_eq!(s.to_string(), s.as_str());
            assert!(!s.describe().is_empty());
        }
        assert_eq!(Signal::parse("country"), None);
        assert_eq!(Signal::DeviceCountry.as_str(), "device_country");
        assert_eq!(Signal::ServerCountry.describe(), "serving infrastructure");
    }

    #[test]
    fn signal_sets_hold_what_was_inserted() {
        let mut set = SignalSet::default();
        assert!(set.is_empty());
        assert!(set.insert(Signal::IpCountry));
        assert!(!set.insert(Signal::IpCountry));
        assert!(set.insert(Signal::Storefront));
        assert!(!set.is_empty());
        assert!(set.contains(Signal::IpCountry));
        assert!(set.contains(Signal::Storefront));
        assert!(!set.contains(Signal::DeviceCountry));
        assert!(!set.contains(Signal::ServerCountry));
        assert_eq!(
            set.iter().collect::<Vec<_>>(),
            [Signal::Storefront, Signal::IpCountry]
        );
        assert_eq!(SignalSet::ALL.iter().collect::<Vec<_>>(), Signal::ALL);
    }

    #[test]
    fn a_valid_record_keeps_every_field() {
        let request = RequestRecord {
            known_at: Some("2021-02-01T00:00:00Z".into()),
            device_country: Some("CAN".into()),
            publisher: Some(PublisherRecord {
                store: "google".into(),
                id: "4242".into(),
            }),
            code_sha256: vec!["AA".repeat(32)],
            ..record()
        }
        .into_request()
        .unwrap();
        let app = request.app().unwrap();
        assert_eq!(
            (app.platform, app.id()),
            (Platform::Android, "com.acme.chat")
        );
        let publisher = request.publisher().unwrap();
        assert_eq!(
            (publisher.store, publisher.id.as_str()),
            (Store::Google, "4242")
        );
        assert_eq!(request.action(), crate::Action::Download);
        assert_eq!(request.at().to_string(), "2021-02-10T00:00:00Z");
        assert_eq!(
            request.known_at().unwrap().to_string(),
            "2021-02-01T00:00:00Z"
        );
        assert_eq!(request.signal(Signal::Storefront).unwrap().alpha2(), "US");
        assert_eq!(
            request.signal(Signal::DeviceCountry).unwrap().alpha2(),
            "CA"
        );
        assert_eq!(request.signal(Signal::IpCountry), None);
        let carried: Vec<_> = request
            .carried_signals()
            .map(|(s, c)| (s, c.alpha2()))
            .collect();
        assert_eq!(
            carried,
            [(Signal::Storefront, "US"), (Signal::DeviceCountry, "CA")]
        );
        let later = request.at_instant(Instant::parse_rfc3339("2022-01-01T00:00:00Z").unwrap());
        assert_eq!(later.at().to_string(), "2022-01-01T00:00:00Z");
        assert_eq!(later.known_at(), request.known_at());
        // Back to JSON: codes as alpha-2, digests normalized.
        let again = RequestRecord::from(&request);
        assert_eq!(again.device_country.as_deref(), Some("CA"));
        assert_eq!(again.code_sha256, ["aa".repeat(32)]);
        assert_eq!(again.into_request().unwrap(), request);
    }

    #[test]
    fn a_publisher_must_publish_on_the_app_s_platform() {
        let publisher = |store: &str, id: &str| {
            Some(PublisherRecord {
                store: store.into(),
                id: id.into(),
            })
        };
        let wrong = RequestRecord {
            publisher: publisher("apple", "ABCDE12345"),
            ..record()
        };
        assert_eq!(field_of(wrong), "publisher.store");
        let right = RequestRecord {
            publisher: publisher("google", "4242"),
            ..record()
        };
        assert!(right.into_request().is_ok());
        let ios = RequestRecord {
            app: Some(AppRecord {
                platform: "ios".into(),
                id: "com.acme.Chat".into(),
            }),
            publisher: publisher("apple", "abcde12345"),
            ..record()
        };
        let request = ios.into_request().unwrap();
        assert_eq!(request.publisher().unwrap().id, "ABCDE12345");
        assert_eq!(request.app().unwrap().platform, Platform::Ios);
        let unknown = RequestRecord {
            publisher: publisher("steam", "4242"),
            ..record()
        };
        assert_eq!(field_of(unknown), "publisher.store");
        let malformed = RequestRecord {
            publisher: publisher("google", "x"),
            ..record()
        };
        assert_eq!(field_of(malformed), "publisher.id");
    }

    #[test]
    fn malformed_fields_are_blamed_on_their_field() {
        let app = |platform: &str, id: &str| {
            Some(AppRecord {
                platform: platform.into(),
                id: id.into(),
            })
        };
        assert_eq!(
            field_of(RequestRecord {
                app: app("tv", "com.acme.chat"),
                ..record()
            }),
            "app.platform"
        );
        assert_eq!(
            field_of(RequestRecord {
                app: app("android", "com..acme"),
                ..record()
            }),
            "app.id"
        );
        assert_eq!(
            field_of(RequestRecord {
                action: "steal".into(),
                ..record()
            }),
            "action"
        );
        assert_eq!(
            field_of(RequestRecord {
                at: "yesterday".into(),
                ..record()
            }),
            "at"
        );
        assert_eq!(
            field_of(RequestRecord {
                known_at: Some("2021-02-10".into()),
                ..record()
            }),
            "known_at"
        );
        assert_eq!(
            field_of(RequestRecord {
                ip_country: Some("XX".into()),
                ..record()
            }),
            "ip_country"
        );
        assert_eq!(
            field_of(RequestRecord {
                signing_cert_sha256: Some("ab".into()),
                ..record()
            }),
            "signing_cert_sha256"
        );
        assert_eq!(
            field_of(RequestRecord {
                code_sha256: vec!["0".repeat(63)],
                ..record()
            }),
            "code_sha256"
        );
    }

    #[test]
    fn a_request_needs_a_signal_and_a_way_to_name_the_app() {
        let no_signal = RequestRecord {
            storefront: None,
            ..record()
        };
        assert_eq!(no_signal.into_request(), Err(RequestError::NoSignal));
        let no_app = RequestRecord {
            app: None,
            ..record()
        };
        assert_eq!(no_app.clone().into_request(), Err(RequestError::NoApp));
        // Any one way to name the app will do.
        let by_cert = RequestRecord {
            signing_cert_sha256: Some("AB:".repeat(31) + "AB"),
            ..no_app.clone()
        };
        assert!(by_cert.into_request().is_ok());
        let by_code = RequestRecord {
            code_sha256: vec!["1".repeat(64)],
            ..no_app.clone()
        };
        assert!(by_code.into_request().is_ok());
        // A server country alone places a request.
        let server = RequestRecord {
            storefront: None,
            server_country: Some("DE".into()),
            ..record()
        };
        assert!(server.into_request().is_ok());
    }

    /// An app id is held in place whenever it fits, also in an `AppRef` reused after a
    /// longer id; a longer one reuses the memory of the one before.
    #[test]
    fn an_app_id_is_in_place_whenever_it_fits() {
        let mut app = AppRef {
            platform: Platform::Android,
            id: compact_str::CompactString::default(),
        };
        let long = "com.example.a.package.name.longer.than.a.string";
        let short = "com.zhiliaoapp.musically";
        assert_eq!(short.len(), std::mem::size_of::<String>());
        app.set_id(long);
        assert_eq!((app.id(), app.id.is_heap_allocated()), (long, true));
        let memory = app.id.as_ptr();
        app.set_id(&long[..30]);
        assert_eq!((app.id(), app.id.as_ptr()), (&long[..30], memory));
        app.set_id(short);
        assert_eq!((app.id(), app.id.is_heap_allocated()), (short, false));
        app.set_id("");
        assert_eq!(app.id(), "");
    }
}
