//! One line of the trail, written and read with serde.
//!
//! A decision refers to the policy revision (its first 12 hex digits) and to the ids of
//! what decided it, never to their texts: the revision holds those. Its outcome is one
//! key, named after what the caller was told to do:
//!
//! ```text
//! {"n":0,"id":"…","t":1600776000000,"rev":"9f8c61d0a2b4","deny":["wechat-app-store"],"req":{…}}
//! {"n":1,"id":"…","t":1600776000004,"rev":"9f8c61d0a2b4","allow":"enjoined","by":"marland-v-trump","req":{…}}
//! {"n":2,"id":"…","t":1600776000009,"rev":"9f8c61d0a2b4","shadow-deny":["tiktok-app-store"],"req":{…}}
//! {"n":3,"id":"…","t":1600776000011,"deny":[],"req":{…}}                 (no policy was active)
//! {"n":4,"t":1600776093000,"resumed":{"lost":12,"error":"…"}}          (after a write failure)
//! ```

use policy::RequestRecord;
use serde::{Deserialize, Serialize};

/// A record of the trail. `n` is its position from 0, which is also its leaf index in the
/// Merkle tree; `t` is when it was made, in milliseconds since the Unix epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub n: u64,
    /// The decision id the caller was given (32 hex digits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub t: i64,
    /// The deciding policy's revision, its first 12 hex digits; absent when no policy
    /// was active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rev: Option<String>,
    /// Denied (enforced): the ids of the prohibitions in force; empty when no policy was
    /// active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deny: Option<Vec<String>>,
    /// Would have been denied by these prohibitions; served (shadow mode).
    #[serde(
        default,
        rename = "shadow-deny",
        skip_serializing_if = "Option::is_none"
    )]
    pub shadow_deny: Option<Vec<String>>,
    /// Allowed, and why (`not-covered`, `enjoined`, ... or `no-policy` in open mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow: Option<String>,
    /// The instrument behind the allow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// Non-enforcement orders the operator's posture set aside.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set_aside: Vec<String>,
    /// The request, as validated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub req: Option<RequestRecord>,
    /// The trail resumed after records could not be written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed: Option<Resumed>,
}

/// The gap a write failure left: how many records were lost, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resumed {
    pub lost: u64,
    pub error: String,
}

/// What a decision record told the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Told {
    Allow,
    Deny,
    ShadowDeny,
}

impl Record {
    /// A decision record; the writer sets `n`.
    pub fn decision(id: String, t: i64, rev: Option<String>, req: RequestRecord) -> Record {
        Record {
            n: 0,
            id: Some(id),
            t,
            rev,
            deny: None,
            shadow_deny: None,
            allow: None,
            by: None,
            set_aside: Vec::new(),
            req: Some(req),
            resumed: None,
        }
    }

    /// What the caller was told, for a well-formed decision record.
    pub fn told(&self) -> Option<Told> {
        match (&self.deny, &self.shadow_deny, &self.allow) {
            (Some(_), None, None) => Some(Told::Deny),
            (None, Some(_), None) => Some(Told::ShadowDeny),
            (None, None, Some(_)) => Some(Told::Allow),
            _ => None,
        }
    }

    /// Checks the record's shape beyond its fields' types: a decision has an id, a
    /// request and exactly one outcome; a resumption has none of them.
    pub fn check_shape(&self) -> Result<(), String> {
        if self.resumed.is_some() {
            if self.id.is_some() || self.req.is_some() || self.told().is_some() {
                return Err("a resumption record carries no decision".to_owned());
            }
            return Ok(());
        }
        if self
            .id
            .as_deref()
            .is_none_or(|id| id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err("a decision record needs an `id` of 32 hex digits".to_owned());
        }
        if self.req.is_none() {
            return Err("a decision record needs its request `req`".to_owned());
        }
        if self.told().is_none() {
            return Err(
                "a decision record has exactly one of `deny`, `shadow-deny` and `allow`".to_owned(),
            );
        }
        Ok(())
    }
}
