//! Gatekeeper's integration tests: one binary, one module per concern.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod audit;
mod bundles;
mod cli;
mod corpus;
mod diagnostics;
mod differential;
mod handle;
mod layer;
mod loading;
mod properties;
mod serve;
mod simulate;
mod support;
