//! Policy revisions: the SHA-256 of the loaded content.

use std::fmt;

use sha2::{Digest, Sha256};

/// Hex SHA-256 of a byte string.
pub fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// The revision of a loaded policy set: the SHA-256 over the sorted SHA-256 digests of
/// its files' contents. It depends on what the files say, not on where they are, so
/// the same set loaded from a folder or from a bundle has the same revision.
#[derive(Clone, PartialEq, Eq, Hash, Debug, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Revision(pub String);

impl Revision {
    /// The revision of a set of file contents, in any order.
    pub fn of_texts<'a>(texts: impl IntoIterator<Item = &'a str>) -> Revision {
        let digests: Vec<String> = texts
            .into_iter()
            .map(|t| sha256_hex(t.as_bytes()))
            .collect();
        Revision::of_digests(digests.iter().map(String::as_str))
    }

    /// The revision of a set of files given by their hex SHA-256 digests, in any order (a
    /// verified bundle manifest's): the same as [`Revision::of_texts`] of their texts.
    pub fn of_digests<'a>(digests: impl IntoIterator<Item = &'a str>) -> Revision {
        let mut digests: Vec<String> = digests.into_iter().map(str::to_ascii_lowercase).collect();
        digests.sort();
        let mut hasher = Sha256::new();
        for d in &digests {
            hasher.update(d.as_bytes());
            hasher.update(b"\n");
        }
        Revision(format!("{:x}", hasher.finalize()))
    }

    /// The first 12 hex digits, for logs and headers.
    pub fn short(&self) -> &str {
        self.0.get(..12).unwrap_or(&self.0)
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
