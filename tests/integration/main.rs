//! Gatekeeper's integration tests: one binary, one module per concern.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod audit;
mod audit_checkpoints;
mod audit_durability;
mod bundles;
mod cli;
mod cli_output;
mod corpus;
mod diagnostics;
mod differential;
mod fmt;
mod handle;
mod image;
mod law;
mod layer;
mod loading;
mod maintainers;
mod observability;
mod properties;
mod proxies;
mod schema;
mod serve;
mod serve_envoy;
mod serve_limits;
mod signing;
mod simulate;
mod support;
