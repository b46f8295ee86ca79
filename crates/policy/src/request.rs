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
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize)]
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
        match self {
            Store::Apple => {
                let upper = id.to_ascii_uppercase();
                if upper.len() == 10 && upper.bytes().all(|b| b.is_ascii_alphanumeric()) {
                    Ok(upper)
                } else {
                    Err(format!(
                        "`{id}` is not an Apple team id (10 letters and digits)"
                    ))
                }
            }
            Store::Google => {
                if (1..=25).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_digit()) {
                    Ok(id.to_owned())
                } else {
                    Err(format!(
                        "`{id}` is not a Google Play developer account id (1 to 25 digits)"
                    ))
                }
            }
        }
    }
}

/// The longest app identifier accepted.
pub const MAX_APP_ID_LEN: usize = 255;

/// Checks that `id` is a well-formed iOS bundle id or Android package name: 1 to 255
/// ASCII letters, digits, `.`, `_` and `-`, with no empty segment between dots.
pub fn check_app_id(id: &str) -> Result<(), String> {
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

/// An app as a store names it.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct AppRef {
    pub platform: Platform,
    /// The iOS bundle id or Android package name, as the request spelled it.
    pub id: String,
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
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct SignalSet(u8);

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
