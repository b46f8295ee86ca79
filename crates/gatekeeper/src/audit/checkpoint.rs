//! Checkpoints in the C2SP `tlog-checkpoint` format: the origin line, the tree size, the
//! base64 root hash, signed as a note with the operator's key.
//!
//! ```text
//! audit.example.org/store
//! 1042
//! 4c6sO0D3Zs2I7jGJX7Y7yXx4Hnvs8y7Qk9CjgPeB0Qs=
//!
//! — audit.example.org/store Az3grj...
//! ```

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::merkle::Hash;
use crate::keys::{KeyError, SignerKey, VerifierKey, open_note, sign_note};

/// The origin line of checkpoints written without a key.
pub const UNSIGNED_ORIGIN: &str = "gatekeeper/audit";

/// A tree head: how many records, and the root over them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's name: the signing key's name.
    pub origin: String,
    pub size: u64,
    pub root: Hash,
}

/// Why a checkpoint was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("malformed checkpoint: {0}")]
    Malformed(String),
    #[error("checkpoint signature: {0}")]
    Signature(#[source] KeyError),
    #[error("the checkpoint is not signed by `{0}`")]
    NotSigned(String),
}

impl Checkpoint {
    /// The checkpoint's body: three lines, each ending in a newline.
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            STANDARD.encode(self.root)
        )
    }

    /// The signed note (or, without a key, the body alone).
    pub fn to_note(&self, key: Option<&SignerKey>) -> Result<String, CheckpointError> {
        match key {
            Some(key) => sign_note(&self.body(), &[key]).map_err(CheckpointError::Signature),
            None => Ok(self.body()),
        }
    }

    /// Reads a checkpoint's body, ignoring extension lines and any signatures. Use
    /// [`Checkpoint::open`] where the signature matters.
    pub fn parse_unverified(text: &str) -> Result<Checkpoint, CheckpointError> {
        let body = text.split("\n\n").next().unwrap_or_default();
        let mut lines = body.lines();
        let malformed = |m: &str| CheckpointError::Malformed(m.to_owned());
        let origin = lines
            .next()
            .filter(|o| !o.is_empty())
            .ok_or_else(|| malformed("no origin line"))?;
        let size = lines
            .next()
            .and_then(|s| {
                s.parse::<u64>()
                    .ok()
                    .filter(|_| !s.starts_with('+') && (s == "0" || !s.starts_with('0')))
            })
            .ok_or_else(|| malformed("the second line must be the tree size in decimal"))?;
        let root = lines
            .next()
            .and_then(|r| STANDARD.decode(r).ok())
            .and_then(|r| <Hash>::try_from(r.as_slice()).ok())
            .ok_or_else(|| malformed("the third line must be the base64 of a 32-byte root hash"))?;
        Ok(Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
        })
    }

    /// Reads a signed checkpoint; it must carry a valid signature by `key`, whose name is
    /// its origin.
    pub fn open(note: &str, key: &VerifierKey) -> Result<Checkpoint, CheckpointError> {
        let (text, signed_by) =
            open_note(note, std::slice::from_ref(key)).map_err(CheckpointError::Signature)?;
        if !signed_by.iter().any(|n| n == key.name()) {
            return Err(CheckpointError::NotSigned(key.name().to_owned()));
        }
        let checkpoint = Checkpoint::parse_unverified(&text)?;
        if checkpoint.origin != key.name() {
            return Err(CheckpointError::Malformed(format!(
                "origin `{}` is not the key's name `{}`",
                checkpoint.origin.escape_debug(),
                key.name()
            )));
        }
        Ok(checkpoint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_checkpoint_round_trips_and_a_changed_one_is_refused() {
        let key = SignerKey::generate("audit.example.org/store").unwrap();
        let c = Checkpoint {
            origin: key.name().to_owned(),
            size: 1042,
            root: [7; 32],
        };
        let note = c.to_note(Some(&key)).unwrap();
        assert!(note.starts_with("audit.example.org/store\n1042\n"));
        assert_eq!(Checkpoint::open(&note, &key.verifier()).unwrap(), c);
        let grown = note.replacen("1042", "1043", 1);
        assert!(Checkpoint::open(&grown, &key.verifier()).is_err());
        let other = SignerKey::generate("audit.example.org/store").unwrap();
        assert!(Checkpoint::open(&note, &other.verifier()).is_err());
        assert!(Checkpoint::parse_unverified("o\n012\nAAAA\n").is_err());
    }
}
