//! Gatekeeper's integration tests: one binary, one module per concern.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod cli;
mod corpus;
mod diagnostics;
mod properties;
mod support;
