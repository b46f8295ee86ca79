//! Decisions in plain English, for people.

use std::fmt::Write as _;

use crate::engine::{Decision, Verdict};
use crate::instant::{Instant, format_eastern, format_utc};
use crate::law::{AllowReason, NonEnforcement};
use crate::request::Request;

fn when(i: Instant) -> String {
    format!("{} ({}, US Eastern)", format_utc(i), format_eastern(i))
}

impl Decision<'_> {
    /// The decision in plain English: what was asked, where the request was placed, the
    /// instrument, its citation and wording, the instants in UTC and US Eastern time, and
    /// what would change the answer.
    pub fn explain(&self, request: &Request) -> String {
        let policy = self.policy;
        let mut out = String::new();
        let what = match (self.matched, request.app()) {
            (Some(m), _) if m.app.is_some() => {
                let app = m.app.map_or("", |a| a.name());
                let id = m.app.map_or("", |a| a.id());
                let case = if m.case_insensitive {
                    ", letter case aside"
                } else {
                    ""
                };
                format!(
                    "`{}` of {app} (app `{id}`, recognised by its {}{case})",
                    request.action(),
                    m.by.describe()
                )
            }
            (Some(m), named) => format!(
                "`{}` of {} (not listed; published from an account of {}, `{}`)",
                request.action(),
                named
                    .map(|a| format!("{} app `{}`", a.platform.as_str(), a.id))
                    .unwrap_or_else(|| "an unnamed app".to_owned()),
                m.owner.name,
                m.owner.id
            ),
            (None, named) => {
                let named = named
                    .map(|a| format!("{} app `{}`", a.platform.as_str(), a.id))
                    .unwrap_or_else(|| "an unnamed app".to_owned());
                format!("`{}` of {named}", request.action())
            }
        };
        let verb = if self.is_deny() { "DENY" } else { "ALLOW" };
        let _ = writeln!(out, "{verb}: {what}, at {}.", when(self.at));
        if request.known_at().is_some() {
            let _ = writeln!(
                out,
                "Judged in hindsight, with the instruments issued by {}.",
                when(self.known_at)
            );
        } else {
            let _ = writeln!(out, "Judged with the instruments issued by that instant.");
        }
        let _ = writeln!(
            out,
            "Posture: {} reading of open instants; non-enforcement orders {}.",
            self.posture.boundaries.as_str(),
            match self.posture.non_enforcement {
                NonEnforcement::Honour => "honoured",
                NonEnforcement::Ignore => "set aside",
            }
        );
        if let Some(j) = &self.jurisdiction {
            let because = match j.signal {
                Some((s, c)) => format!(
                    "because its {} is `{}` ({})",
                    s.describe(),
                    c.alpha2(),
                    c.name()
                ),
                None => "by assumption".to_owned(),
            };
            let _ = writeln!(
                out,
                "Where: in region `{}` ({}), {because}.",
                j.region.id, j.region.name,
            );
            for g in j.assumed() {
                let names: Vec<&str> = g.iter().map(|s| s.as_str()).collect();
                let _ = writeln!(
                    out,
                    "    assumed in the region: the request carries none of {} (fail closed)",
                    names.join(", ")
                );
            }
        }
        if let Some(u) = &self.uncertain {
            let edge =
                |i: Option<Instant>, open: &str| i.map(when).unwrap_or_else(|| open.to_owned());
            let _ = writeln!(
                out,
                "Uncertain: from {} until {} the record's open instants read the other way give another answer; this one follows the {} reading.",
                edge(u.from, "the beginning"),
                edge(u.until, "ever after"),
                self.posture.boundaries.as_str()
            );
        }
        match &self.verdict {
            Verdict::Deny {
                prohibitions,
                set_aside,
            } => {
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
                        when(policy.effective_instant(p, self.known_at, self.posture))
                    );
                    let _ = writeln!(out, "    \"{}\"", pr.text);
                    let _ = writeln!(out, "    source: {}", ins.source);
                    let chain: Vec<String> = policy
                        .authority(p)
                        .into_iter()
                        .map(|a| {
                            let a = policy.instrument(a);
                            format!("`{}` ({})", a.id, a.citation)
                        })
                        .collect();
                    let _ = writeln!(out, "    authority: {}", chain.join(" <- "));
                }
                for &i in set_aside.iter() {
                    let ins = policy.instrument(i);
                    let _ = writeln!(
                        out,
                        "Set aside: {} `{}` ({}) defers enforcement, but this store's posture does not honour non-enforcement orders.",
                        ins.kind.describe(),
                        ins.id,
                        ins.citation
                    );
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
                    AllowReason::NotCovered if self.matched.is_none() => {
                        "the app is not a covered app of the loaded policies".to_owned()
                    }
                    AllowReason::NotCovered => {
                        "no prohibition issued by then covers this app".to_owned()
                    }
                    AllowReason::ActionNotProhibited => format!(
                        "prohibitions cover this app, but none prohibits `{}`",
                        request.action()
                    ),
                    AllowReason::OutsideJurisdiction => {
                        let signals: Vec<String> = request
                            .carried_signals()
                            .map(|(s, c)| format!("{} `{}`", s.as_str(), c.alpha2()))
                            .collect();
                        format!(
                            "prohibitions cover `{}` of this app, but the request's signals ({}) do not place it in their regions",
                            request.action(),
                            signals.join(", ")
                        )
                    }
                    AllowReason::NotYetInForce => format!(
                        "the covering prohibition is not in force yet; it takes effect at {}",
                        in_force_from.map(when).unwrap_or_default()
                    ),
                    AllowReason::NotEnforced => format!(
                        "enforcement of the covering prohibition is deferred by {by_text}; the law itself stays in force"
                    ),
                    AllowReason::Enjoined => {
                        format!("the covering prohibition is enjoined by {by_text}")
                    }
                    AllowReason::Exempt => {
                        format!(
                            "the covering prohibition ceased to apply to this app under {by_text}"
                        )
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
                let later = request.at_instant(next);
                let after = match policy.decide(&later, self.posture).verdict {
                    // Named, and said to be still denied when this one is, so that a change
                    // of prohibitions does not read as the same answer.
                    Verdict::Deny { prohibitions, .. } => {
                        let still = if matches!(self.verdict, Verdict::Deny { .. }) {
                            "still "
                        } else {
                            ""
                        };
                        let by: Vec<String> = prohibitions
                            .iter()
                            .map(|&p| format!("`{}`", policy.prohibition(p).id))
                            .collect();
                        format!("{still}denied (by {})", by.join(", "))
                    }
                    Verdict::Allow { because, by, .. } => {
                        let by = by
                            .map(|b| format!(" by `{}`", policy.instrument(b).id))
                            .unwrap_or_default();
                        format!("allowed ({}{by})", because.as_str())
                    }
                };
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
