//! The actions a request can ask for.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// What a request asks to do with an app.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// A new install or a re-download.
    Download,
    /// Maintenance: delivering a new version to an installed app.
    Update,
    /// Internet hosting of the app's backend.
    Host,
    /// Content delivery network service for the app.
    Cdn,
    /// Directly contracted or arranged internet transit or peering.
    Peering,
    /// Transferring funds or processing payments through the app.
    Payment,
    /// Shipping software that embeds the app's constituent code.
    CodeUse,
}

impl Action {
    /// Every action, in declaration order.
    pub const ALL: [Action; 7] = [
        Action::Download,
        Action::Update,
        Action::Host,
        Action::Cdn,
        Action::Peering,
        Action::Payment,
        Action::CodeUse,
    ];

    /// The exact string used in policies and requests.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Download => "download",
            Action::Update => "update",
            Action::Host => "host",
            Action::Cdn => "cdn",
            Action::Peering => "peering",
            Action::Payment => "payment",
            Action::CodeUse => "code-use",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// The accepted spellings, for hints.
    pub fn expected() -> String {
        Action::ALL
            .iter()
            .map(|a| format!("`{}`", a.as_str()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is not one of the actions.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown action `{0}`; expected one of {expected}", expected = Action::expected())]
pub struct UnknownAction(pub String);

impl FromStr for Action {
    type Err = UnknownAction;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Action::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| UnknownAction(s.to_owned()))
    }
}

/// A set of actions.
///
/// With serde, its bits; a set with bits of no action is refused.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Debug, Serialize, serde::Deserialize)]
#[serde(into = "u8", try_from = "u8")]
pub struct ActionSet(u8);

impl From<ActionSet> for u8 {
    fn from(s: ActionSet) -> u8 {
        s.0
    }
}

impl TryFrom<u8> for ActionSet {
    type Error = String;

    fn try_from(bits: u8) -> Result<ActionSet, String> {
        if u32::from(bits) >> Action::ALL.len() == 0 {
            Ok(ActionSet(bits))
        } else {
            Err(format!("action set {bits:#b} has bits of no action"))
        }
    }
}

impl ActionSet {
    /// Adds an action.
    pub fn insert(&mut self, action: Action) {
        self.0 |= 1 << action.index();
    }

    /// Whether the set holds the action.
    pub fn contains(self, action: Action) -> bool {
        self.0 & (1 << action.index()) != 0
    }

    /// The actions in the set, in declaration order.
    pub fn iter(self) -> impl Iterator<Item = Action> {
        Action::ALL.into_iter().filter(move |a| self.contains(*a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_round_trips_through_its_string() {
        for a in Action::ALL {
            assert_eq!(a.as_str().parse::<Action>().unwrap(), a);
        }
        assert!("Update".parse::<Action>().is_err());
        assert!("code_use".parse::<Action>().is_err());
    }
}
