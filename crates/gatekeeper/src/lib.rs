//! The embeddable Gatekeeper: what a store links in to decide requests for covered apps.
//!
//! For now it loads policy sets from folders on disk, following their `include` keys,
//! and hands them to the pure [`policy`] engine.
//!
//! ```no_run
//! let loaded = gatekeeper::load_dirs(&["policies/us-2020"]).unwrap();
//! println!("{} files, {} prohibitions", loaded.files.len(), loaded.policy.prohibitions().len());
//! ```

#![forbid(unsafe_code)]

mod source;

pub use policy;
pub use source::{LoadedPolicy, load_dirs};
