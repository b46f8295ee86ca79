//! Requests: which app, which action, when, and where.

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

/// An app as a store names it.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct AppRef {
    pub platform: Platform,
    /// The iOS bundle id or Android package name.
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

/// A validated request. Build one from its JSON form with
/// [`crate::wire::RequestRecord::into_request`], or directly.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Request {
    pub app: Option<AppRef>,
    /// Lower-case hex, no separators.
    pub signing_cert_sha256: Option<String>,
    /// Lower-case hex, no separators.
    pub code_sha256: Vec<String>,
    pub action: Action,
    /// The instant the request is judged at.
    pub at: Instant,
    /// Judge with the instruments issued by this instant instead of by `at`.
    pub known_at: Option<Instant>,
    /// Countries by [`Signal`] order; `None` where the request does not carry it.
    pub signals: [Option<Country>; 5],
}

impl Request {
    /// A request for an app by platform and id, with no signal yet.
    pub fn new(platform: Platform, id: impl Into<String>, action: Action, at: Instant) -> Request {
        Request {
            app: Some(AppRef {
                platform,
                id: id.into(),
            }),
            signing_cert_sha256: None,
            code_sha256: Vec::new(),
            action,
            at,
            known_at: None,
            signals: [None; 5],
        }
    }

    /// Sets a jurisdiction signal.
    pub fn with_signal(mut self, signal: Signal, country: Country) -> Request {
        self.signals[signal as usize] = Some(country);
        self
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
