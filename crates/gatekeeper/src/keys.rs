//! Ed25519 keys and signed notes in the format of the Go `note` package, which C2SP
//! checkpoints use: one key format for bundle signatures and audit checkpoints.
//!
//! - A verifier key is `<name>+<hash>+<base64(0x01 || public key)>`.
//! - A signer key is `PRIVATE+KEY+<name>+<hash>+<base64(0x01 || seed)>`.
//! - `<hash>` is eight hex digits: the first four bytes of
//!   `SHA-256(name || "\n" || 0x01 || public key)`.
//! - A signed note is its text (ending in a newline), a blank line, then one line per
//!   signature: `— <name> <base64(key hash || signature)>`.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signer as _, Verifier as _};
use sha2::{Digest, Sha256};

/// The algorithm byte of Ed25519 keys in note keys.
const ED25519: u8 = 0x01;
const PRIVATE: &str = "PRIVATE+KEY+";

/// Why a key or note was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("malformed key: {0}")]
    Malformed(String),
    #[error("malformed signed note: {0}")]
    MalformedNote(String),
    #[error("cannot draw random bytes for a key: {0}")]
    Random(String),
}

fn key_hash(name: &str, public: &[u8; 32]) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([ED25519]);
    h.update(public);
    let d = h.finalize();
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

fn check_name(name: &str) -> Result<(), KeyError> {
    if name.is_empty()
        || name.contains('+')
        || name.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(KeyError::Malformed(format!(
            "key name `{}` must be non-empty, without `+`, spaces or control characters",
            name.escape_debug()
        )));
    }
    Ok(())
}

/// Splits `<name>+<hash>+<base64 key data>` and checks the algorithm byte.
fn split(text: &str) -> Result<(&str, u32, [u8; 32]), KeyError> {
    let mut parts = text.trim().splitn(3, '+');
    let (Some(name), Some(hash), Some(data)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(KeyError::Malformed(
            "expected `<name>+<hash>+<key data>`".to_owned(),
        ));
    };
    check_name(name)?;
    let hash = u32::from_str_radix(hash, 16)
        .ok()
        .filter(|_| hash.len() == 8)
        .ok_or_else(|| KeyError::Malformed(format!("`{hash}` is not eight hex digits")))?;
    let bytes = STANDARD
        .decode(data)
        .map_err(|e| KeyError::Malformed(format!("key data is not base64: {e}")))?;
    match bytes.split_first() {
        Some((&ED25519, rest)) if rest.len() == 32 => {
            let mut key = [0u8; 32];
            key.copy_from_slice(rest);
            Ok((name, hash, key))
        }
        Some((&ED25519, _)) => Err(KeyError::Malformed(
            "an Ed25519 key has 32 bytes".to_owned(),
        )),
        _ => Err(KeyError::Malformed(
            "not an Ed25519 key (algorithm byte 0x01)".to_owned(),
        )),
    }
}

/// A public key that checks signatures, with its name.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifierKey {
    name: String,
    hash: u32,
    key: ed25519_dalek::VerifyingKey,
}

impl VerifierKey {
    /// Parses `<name>+<hash>+<base64>`; the hash must match the name and key.
    pub fn parse(text: &str) -> Result<VerifierKey, KeyError> {
        let (name, hash, bytes) = split(text)?;
        let key = ed25519_dalek::VerifyingKey::from_bytes(&bytes)
            .map_err(|e| KeyError::Malformed(format!("not an Ed25519 public key: {e}")))?;
        if key_hash(name, &bytes) != hash {
            return Err(KeyError::Malformed(format!(
                "key hash `{hash:08x}` does not match the name and key"
            )));
        }
        Ok(VerifierKey {
            name: name.to_owned(),
            hash,
            key,
        })
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key hash that names it in signatures.
    pub fn hash(&self) -> u32 {
        self.hash
    }

    /// Whether `signature` is this key's signature of `message` (strict verification).
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        let Ok(sig) = <[u8; 64]>::try_from(signature) else {
            return false;
        };
        let sig = ed25519_dalek::Signature::from_bytes(&sig);
        self.key.verify_strict(message, &sig).is_ok() && self.key.verify(message, &sig).is_ok()
    }
}

impl fmt::Display for VerifierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut data = vec![ED25519];
        data.extend_from_slice(self.key.as_bytes());
        write!(
            f,
            "{}+{:08x}+{}",
            self.name,
            self.hash,
            STANDARD.encode(data)
        )
    }
}

impl fmt::Debug for VerifierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerifierKey({self})")
    }
}

/// A private key that signs, with its name. Its `Debug` form hides the key.
#[derive(Clone)]
pub struct SignerKey {
    name: String,
    hash: u32,
    key: ed25519_dalek::SigningKey,
}

impl SignerKey {
    /// A new key from the operating system's random source.
    pub fn generate(name: &str) -> Result<SignerKey, KeyError> {
        check_name(name)?;
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(SignerKey::from_seed(name, seed))
    }

    fn from_seed(name: &str, seed: [u8; 32]) -> SignerKey {
        let key = ed25519_dalek::SigningKey::from_bytes(&seed);
        let hash = key_hash(name, key.verifying_key().as_bytes());
        SignerKey {
            name: name.to_owned(),
            hash,
            key,
        }
    }

    /// Parses `PRIVATE+KEY+<name>+<hash>+<base64>`.
    pub fn parse(text: &str) -> Result<SignerKey, KeyError> {
        let rest = text
            .trim()
            .strip_prefix(PRIVATE)
            .ok_or_else(|| KeyError::Malformed(format!("a signer key starts with `{PRIVATE}`")))?;
        let (name, hash, seed) = split(rest)?;
        let key = SignerKey::from_seed(name, seed);
        if key.hash != hash {
            return Err(KeyError::Malformed(format!(
                "key hash `{hash:08x}` does not match the name and key"
            )));
        }
        Ok(key)
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The public half.
    pub fn verifier(&self) -> VerifierKey {
        VerifierKey {
            name: self.name.clone(),
            hash: self.hash,
            key: self.key.verifying_key(),
        }
    }

    /// Signs a message.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message).to_bytes()
    }

    /// The private key's text form, for its file.
    pub fn to_private_text(&self) -> String {
        let mut data = vec![ED25519];
        data.extend_from_slice(self.key.as_bytes());
        format!(
            "{PRIVATE}{}+{:08x}+{}",
            self.name,
            self.hash,
            STANDARD.encode(data)
        )
    }
}

impl fmt::Debug for SignerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SignerKey({}, public {})", self.name, self.verifier())
    }
}

/// Signs a note's text (which must end with a newline) with every key.
pub fn sign_note(text: &str, signers: &[&SignerKey]) -> Result<String, KeyError> {
    if !text.ends_with('\n') || text.contains("\n\n") {
        return Err(KeyError::MalformedNote(
            "a note's text ends with a newline and has no blank line".to_owned(),
        ));
    }
    let mut out = format!("{text}\n");
    for s in signers {
        let mut sig = s.hash.to_be_bytes().to_vec();
        sig.extend_from_slice(&s.sign(text.as_bytes()));
        out.push_str(&format!("\u{2014} {} {}\n", s.name, STANDARD.encode(sig)));
    }
    Ok(out)
}

/// A note's text, and the names of the known keys whose signatures on it are valid.
/// Signatures by unknown keys are ignored; a signature that names a known key but does
/// not verify is an error.
pub fn open_note(note: &str, verifiers: &[VerifierKey]) -> Result<(String, Vec<String>), KeyError> {
    let Some(split) = note.rfind("\n\n") else {
        return Err(KeyError::MalformedNote(
            "no blank line before the signatures".to_owned(),
        ));
    };
    let text = &note[..split + 1];
    let mut verified = Vec::new();
    for line in note[split + 2..].lines() {
        let rest = line.strip_prefix("\u{2014} ").ok_or_else(|| {
            KeyError::MalformedNote(format!(
                "signature line `{}` does not start with `— `",
                line.escape_debug()
            ))
        })?;
        let (name, sig) = rest
            .split_once(' ')
            .ok_or_else(|| KeyError::MalformedNote("signature line has no signature".to_owned()))?;
        let bytes = STANDARD
            .decode(sig)
            .map_err(|e| KeyError::MalformedNote(format!("signature is not base64: {e}")))?;
        if bytes.len() != 68 {
            return Err(KeyError::MalformedNote(
                "an Ed25519 signature line holds 68 bytes".to_owned(),
            ));
        }
        let hash = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        let Some(key) = verifiers.iter().find(|k| k.name == name && k.hash == hash) else {
            continue;
        };
        if !key.verify(text.as_bytes(), &bytes[4..]) {
            return Err(KeyError::MalformedNote(format!(
                "the signature by `{name}` does not verify"
            )));
        }
        if !verified.contains(&key.name) {
            verified.push(key.name.clone());
        }
    }
    Ok((text.to_owned(), verified))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_sign() {
        let signer = SignerKey::generate("example.org/log").unwrap();
        let again = SignerKey::parse(&signer.to_private_text()).unwrap();
        let verifier = VerifierKey::parse(&again.verifier().to_string()).unwrap();
        assert_eq!(verifier, signer.verifier());
        let sig = signer.sign(b"hello");
        assert!(verifier.verify(b"hello", &sig));
        assert!(!verifier.verify(b"hellp", &sig));
        assert!(format!("{signer:?}").contains("public"));
        assert!(!format!("{signer:?}").contains(&signer.to_private_text()));
    }

    /// A known vector from the Go `note` package's documentation.
    #[test]
    fn reads_the_go_note_example_key() {
        let vkey = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
        let skey = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
        let v = VerifierKey::parse(vkey).unwrap();
        let s = SignerKey::parse(skey).unwrap();
        assert_eq!(s.verifier(), v);
        assert_eq!(v.to_string(), vkey);
        let note = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n\n\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
        let (text, by) = open_note(note, &[v]).unwrap();
        assert!(text.starts_with("If you think"));
        assert_eq!(by, vec!["PeterNeumann".to_owned()]);
    }

    #[test]
    fn a_tampered_note_or_key_is_refused() {
        let signer = SignerKey::generate("k").unwrap();
        let note = sign_note("a\nb\n", &[&signer]).unwrap();
        let (_, by) = open_note(&note, &[signer.verifier()]).unwrap();
        assert_eq!(by, vec!["k".to_owned()]);
        assert!(open_note(&note.replacen("a\n", "c\n", 1), &[signer.verifier()]).is_err());
        // An unknown key's signature is not counted.
        let other = SignerKey::generate("k2").unwrap();
        assert!(open_note(&note, &[other.verifier()]).unwrap().1.is_empty());
        assert!(VerifierKey::parse("k+00000000+AQ==").is_err());
        assert!(SignerKey::parse(&signer.verifier().to_string()).is_err());
    }
}
