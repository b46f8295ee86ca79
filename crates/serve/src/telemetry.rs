//! The service's own metrics: names, descriptions (the `# HELP` lines of `/metrics`), and
//! the series registered at zero when the service starts, so that a rate or an alert has a
//! series to read before the first event.

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

pub(crate) const HTTP_REQUESTS: &str = "http_requests_total";
pub(crate) const HTTP_DURATION: &str = "http_request_duration_seconds";
pub(crate) const BODY_REFUSALS: &str = "http_body_budget_refusals_total";
pub(crate) const BODY_BYTES_IN_FLIGHT: &str = "http_body_bytes_in_flight";
pub(crate) const ADMIN_REFUSALS: &str = "http_admin_refusals_total";
pub(crate) const CONNECTIONS_CLOSED: &str = "http_connections_closed_total";

/// Why the service closed a connection itself.
pub(crate) const CLOSE_REASONS: [&str; 3] = ["header-timeout", "idle-timeout", "shutdown-deadline"];

/// Describes every metric of this crate; called once, after the recorder is installed.
pub(crate) fn describe() {
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests answered, by route, method and status"
    );
    describe_histogram!(
        HTTP_DURATION,
        Unit::Seconds,
        "Time from a request's head to its answer, by route"
    );
    describe_counter!(
        BODY_REFUSALS,
        "Request bodies refused with 503 because the bytes of bodies in flight across connections would pass max_body_bytes_in_flight"
    );
    describe_gauge!(
        BODY_BYTES_IN_FLIGHT,
        Unit::Bytes,
        "Request body bytes held (reserved or read) across connections, at the last scrape"
    );
    describe_counter!(
        ADMIN_REFUSALS,
        "Admin requests refused: a missing or wrong token (unauthorized), or an address still waiting after failed attempts (rate-limited)"
    );
    describe_counter!(
        CONNECTIONS_CLOSED,
        "Connections closed by the service: no complete request head in time (header-timeout), no byte moved (idle-timeout), or still open at the shutdown deadline"
    );
}

/// Registers the label-free series (and every value of the fixed labels) at zero.
pub(crate) fn register() {
    metrics::counter!(BODY_REFUSALS).increment(0);
    metrics::gauge!(BODY_BYTES_IN_FLIGHT).set(0.0);
    for reason in ["unauthorized", "rate-limited"] {
        metrics::counter!(ADMIN_REFUSALS, "reason" => reason).increment(0);
    }
    for reason in CLOSE_REASONS {
        metrics::counter!(CONNECTIONS_CLOSED, "reason" => reason).increment(0);
    }
}
