//! Gatekeeper's integration tests: one binary, one module per concern.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod audit;
mod audit_checkpoints;
mod audit_durability;
mod bundles;
mod cli;
mod corpus;
mod diagnostics;
mod differential;
mod handle;
mod law;
mod layer;
mod loading;
mod observability;
mod properties;
mod proxies;
mod serve;
mod serve_envoy;
mod serve_limits;
mod signing;
mod simulate;
mod support;
