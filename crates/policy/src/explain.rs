//! Decisions in plain English, for people.

use std::fmt::Write as _;

use crate::engine::{AllowReason, Decision, Policy, Verdict};
use crate::instant::{Instant, format_eastern, format_utc};
use crate::model::{ChangeKind, ProhibitionIdx};
use crate::request::Request;

fn when(i: Instant) -> String {
    format!("{} ({}, US Eastern)", format_utc(i), format_eastern(i))
}

impl Policy {
    /// A prohibition's effective instant with the delays issued by `known_at`.
    pub fn effective_instant(&self, p: ProhibitionIdx, known_at: Instant) -> Instant {
        let pr = self.prohibition(p);
        let mut effective = pr.effective;
        let mut latest: Option<Instant> = None;
        for c in self.changes() {
            let issued = self.instrument(c.instrument).issued;
            if let ChangeKind::Delay { effective: e } = c.kind
                && c.targets.contains(&p)
                && issued <= known_at
                && latest.is_none_or(|l| issued >= l)
            {
                effective = e;
                latest = Some(issued);
            }
        }
        effective
    }
}

impl Decision<'_> {
    /// The decision in plain English: what was asked, where the request was placed, the
    /// instrument, its citation and wording, the instants in UTC and US Eastern time, and
    /// what would change the answer.
    pub fn explain(&self, request: &Request) -> String {
        let policy = self.policy;
        let mut out = String::new();
        let what = match self.app {
            Some((app, by)) => format!(
                "`{}` of {} (app `{}`, recognised by its {})",
                request.action,
                app.name,
                app.id,
                by.describe()
            ),
            None => {
                let named = request
                    .app
                    .as_ref()
                    .map(|a| format!("{} app `{}`", a.platform.as_str(), a.id))
                    .unwrap_or_else(|| "an unnamed app".to_owned());
                format!("`{}` of {named}", request.action)
            }
        };
        let verb = if self.is_deny() { "DENY" } else { "ALLOW" };
        let _ = writeln!(out, "{verb}: {what}, at {}.", when(self.at));
        if request.known_at.is_some() {
            let _ = writeln!(
                out,
                "Judged in hindsight, with the instruments issued by {}.",
                when(self.known_at)
            );
        } else {
            let _ = writeln!(out, "Judged with the instruments issued by that instant.");
        }
        if let Some(j) = &self.jurisdiction {
            let _ = writeln!(
                out,
                "Where: in region `{}` ({}), because its {} is `{}` ({}).",
                j.region.id,
                j.region.name,
                j.signal.describe(),
                j.value.alpha2(),
                j.value.name()
            );
        }
        match &self.verdict {
            Verdict::Deny { prohibitions } => {
                let _ = writeln!(out, "Why: prohibited by");
                for &p in prohibitions.iter() {
                    let pr = policy.prohibition(p);
                    let ins = policy.instrument(pr.instrument);
                    let item = pr
                        .item
                        .as_ref()
                        .map(|i| format!(" (item {i})"))
                        .unwrap_or_default();
                    let _ = writeln!(
                        out,
                        "  - prohibition `{}`{item} of {} `{}`: {}, {}",
                        pr.id,
                        ins.kind.describe(),
                        ins.id,
                        ins.title,
                        ins.citation
                    );
                    let _ = writeln!(
                        out,
                        "    in force since {}",
                        when(policy.effective_instant(p, self.known_at))
                    );
                    let _ = writeln!(out, "    \"{}\"", pr.text);
                    let _ = writeln!(out, "    source: {}", ins.source);
                }
            }
            Verdict::Allow {
                because,
                by,
                in_force_from,
            } => {
                let by_text = by
                    .map(|b| {
                        let i = policy.instrument(b);
                        format!(
                            "{} `{}`: {}, {}",
                            i.kind.describe(),
                            i.id,
                            i.title,
                            i.citation
                        )
                    })
                    .unwrap_or_default();
                let why = match because {
                    AllowReason::NotCovered if self.app.is_none() => {
                        "the app is not a covered app of the loaded policies".to_owned()
                    }
                    AllowReason::NotCovered => {
                        "no prohibition issued by then covers this app".to_owned()
                    }
                    AllowReason::ActionNotProhibited => format!(
                        "prohibitions cover this app, but none prohibits `{}`",
                        request.action
                    ),
                    AllowReason::OutsideJurisdiction => {
                        let signals: Vec<String> = request
                            .carried_signals()
                            .map(|(s, c)| format!("{} `{}`", s.as_str(), c.alpha2()))
                            .collect();
                        format!(
                            "prohibitions cover `{}` of this app, but no signal of the request ({}) lies in their regions",
                            request.action,
                            signals.join(", ")
                        )
                    }
                    AllowReason::NotYetInForce => format!(
                        "the covering prohibition is not in force yet; it takes effect at {}",
                        in_force_from.map(when).unwrap_or_default()
                    ),
                    AllowReason::Suspended => {
                        format!("the covering prohibition is suspended by {by_text}")
                    }
                    AllowReason::Lapsed => {
                        format!("the covering prohibition, made by {by_text}, has ended")
                    }
                    AllowReason::Revoked => {
                        format!("the covering prohibition was revoked by {by_text}")
                    }
                };
                let _ = writeln!(out, "Why: {} ({}).", why, because.as_str());
                if let Some(b) = by {
                    let _ = writeln!(out, "    source: {}", policy.instrument(*b).source);
                }
            }
        }
        match self.valid_until {
            None => {
                let _ = writeln!(
                    out,
                    "What would change it: nothing in the loaded policies; the answer holds from now on."
                );
            }
            Some(next) => {
                let mut later = request.clone();
                later.at = next;
                let after = policy
                    .decide(&later)
                    .map(|d| match d.verdict {
                        Verdict::Deny { .. } => "denied".to_owned(),
                        Verdict::Allow { because, by, .. } => {
                            let by = by
                                .map(|b| format!(" by `{}`", policy.instrument(b).id))
                                .unwrap_or_default();
                            format!("allowed ({}{by})", because.as_str())
                        }
                    })
                    .unwrap_or_else(|e| e.to_string());
                let _ = writeln!(
                    out,
                    "What would change it: the answer holds until {}; from then the same request is {after}.",
                    when(next)
                );
            }
        }
        out
    }
}
