//! The policy model encoded for each peer, the way one would write it by hand: a Cedar
//! `forbid` per prohibition over an entity hierarchy of apps and owners, and a data document
//! for one Rego policy (`encodings/gatekeeper.rego`). The encodings are for Gatekeeper's
//! default posture: every window is read conservatively when the encoding is made (the edge
//! that extends prohibitions and shortens relief), and injunctions and non-enforcement orders
//! both relieve; exemptions are per app, and jurisdiction groups are tested signal by signal.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use policy::model::{ChangeKind, Moment, Relief};
use policy::{Action, Policy, Signal, SignalSet};
use serde_json::{Value, json};

use crate::generate::secs;

/// Owners of a prohibition's apps: the apps and owners it names.
fn targets(policy: &Policy, p: &policy::model::Prohibition) -> Vec<(&'static str, String)> {
    let mut t: Vec<(&'static str, String)> = p
        .apps
        .iter()
        .map(|&a| ("App", policy.apps()[a as usize].id().to_owned()))
        .collect();
    t.extend(
        p.owners
            .iter()
            .map(|&o| ("Owner", policy.entities()[o as usize].id.clone())),
    );
    t
}

pub fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// What a change does to a prohibition, its instants read for Gatekeeper's default posture.
enum ReadKind {
    /// Effective from its earliest edge instead.
    Delay { effective: i64 },
    /// An injunction or a non-enforcement order (both relieve under the default posture,
    /// which honours non-enforcement orders): from the latest edge until the earliest.
    Relief {
        kind: &'static str,
        from: i64,
        until: Option<i64>,
    },
    /// From the latest edge.
    Revocation { from: i64 },
    /// From the latest edge, for the apps it names.
    Exemption { from: i64, apps: Vec<String> },
}

/// A change to a prohibition.
struct ReadChange {
    /// The instrument that makes it.
    by: String,
    /// Known from the latest edge of its instrument's issue.
    issued: i64,
    kind: ReadKind,
}

/// One prohibition with every instant read as Gatekeeper's default posture reads it
/// (conservative: at every boundary the edge that extends the prohibition and shortens
/// relief), in seconds since the epoch. Both peers' encodings are made from this.
struct Read {
    /// When the prohibition is known: the earliest edge of its instrument's issue.
    issued: i64,
    /// Effective: the earliest edge.
    effective: i64,
    /// End: the latest edge.
    end: Option<i64>,
    /// Delays in order of issue, then of the policy (the latest issued wins; on a tie,
    /// the later one); the other changes in policy order.
    changes: Vec<ReadChange>,
}

impl Read {
    fn delays(&self) -> impl Iterator<Item = (&ReadChange, i64)> {
        self.changes.iter().filter_map(|c| match c.kind {
            ReadKind::Delay { effective } => Some((c, effective)),
            _ => None,
        })
    }
}

fn early(m: &Moment) -> i64 {
    secs(m.earliest)
}

fn late(m: &Moment) -> i64 {
    secs(m.latest)
}

/// Every prohibition as the peers read it.
fn read_all(policy: &Policy) -> Vec<Read> {
    let mut out: Vec<Read> = policy
        .prohibitions()
        .iter()
        .map(|p| Read {
            issued: early(&policy.instrument(p.instrument).issued),
            effective: early(&p.effective),
            end: p.end.as_ref().map(late),
            changes: Vec::new(),
        })
        .collect();
    for c in policy.changes() {
        let instrument = policy.instrument(c.instrument);
        for &t in &c.targets {
            let Some(r) = out.get_mut(t as usize) else {
                continue;
            };
            let kind = match &c.kind {
                ChangeKind::Delay { effective } => ReadKind::Delay {
                    effective: early(effective),
                },
                ChangeKind::Relief {
                    relief,
                    from,
                    until,
                } => ReadKind::Relief {
                    kind: match relief {
                        Relief::Injunction => "injunction",
                        Relief::NonEnforcement => "non-enforcement",
                    },
                    from: late(from),
                    until: until.as_ref().map(early),
                },
                ChangeKind::Revocation { from } => ReadKind::Revocation { from: late(from) },
                ChangeKind::Exemption { apps, from } => ReadKind::Exemption {
                    from: late(from),
                    apps: apps
                        .iter()
                        .map(|&a| policy.apps()[a as usize].id().to_owned())
                        .collect(),
                },
            };
            r.changes.push(ReadChange {
                by: instrument.id.clone(),
                issued: late(&instrument.issued),
                kind,
            });
        }
    }
    for r in &mut out {
        // Stable: delays by issue (then policy order), the others after them as they were.
        r.changes.sort_by_key(|c| match c.kind {
            ReadKind::Delay { .. } => (0, c.issued),
            _ => (1, 0),
        });
    }
    out
}

/// A Cedar condition placing the request in a region by one group of signals: a signal
/// of the group carried in the region, or none of the group carried (fail closed).
fn cedar_group(group: SignalSet, countries: &str) -> String {
    if group == SignalSet::ALL {
        // Every request carries a signal: the group is met when any country is in the region.
        return format!("context.countries.containsAny([{countries}])");
    }
    let none: Vec<String> = group
        .iter()
        .map(|s| format!("context.{}.isEmpty()", s.as_str()))
        .collect();
    let any: Vec<String> = group
        .iter()
        .map(|s| format!("context.{}.containsAny([{countries}])", s.as_str()))
        .collect();
    format!("(({}) || {})", none.join(" && "), any.join(" || "))
}

/// A Cedar `forbid` per prohibition, and one `permit`.
pub fn cedar_policies(policy: &Policy) -> String {
    let mut out = String::from(
        "// Generated from the policy model: one forbid per prohibition, for Gatekeeper's default\n\
         // posture (windows read conservatively, non-enforcement orders honoured).\n\
         // Context: at and known (seconds since the epoch), countries (alpha-2 codes), and per\n\
         // signal (storefront, device_country, ip_country, billing_country, server_country) the\n\
         // set of its country, empty when the request does not carry it.\n\n\
         permit (principal, action, resource);\n",
    );
    for (p, r) in policy.prohibitions().iter().zip(read_all(policy)) {
        let actions: Vec<String> = p
            .actions
            .iter()
            .map(|a| format!("Gatekeeper::Action::{}", quote(a.as_str())))
            .collect();
        let resources: Vec<String> = targets(policy, p)
            .iter()
            .map(|(t, id)| format!("Gatekeeper::{t}::{}", quote(id)))
            .collect();
        let countries: Vec<String> = policy
            .region(p.region)
            .countries
            .iter()
            .map(|c| quote(c.alpha2()))
            .collect();
        let countries = countries.join(", ");
        // Each condition, with what it stands for.
        let mut conditions: Vec<(String, String)> = vec![
            (
                format!("resource in [{}]", resources.join(", ")),
                String::new(),
            ),
            (
                format!("context.known >= {}", r.issued),
                policy.instrument(p.instrument).id.clone(),
            ),
        ];
        conditions.extend(
            p.jurisdiction
                .iter()
                .map(|g| (cedar_group(*g, &countries), String::new())),
        );
        for c in &r.changes {
            let (condition, what) = match &c.kind {
                ReadKind::Delay { .. } => continue,
                ReadKind::Relief { kind, from, until } => (
                    match until {
                        Some(u) => format!(
                            "!(context.known >= {} && context.at >= {from} && context.at < {u})",
                            c.issued
                        ),
                        None => format!("!(context.known >= {} && context.at >= {from})", c.issued),
                    },
                    *kind,
                ),
                ReadKind::Revocation { from } => (
                    format!("!(context.known >= {} && context.at >= {from})", c.issued),
                    "revocation",
                ),
                ReadKind::Exemption { from, apps } => {
                    let apps: Vec<String> = apps
                        .iter()
                        .map(|a| format!("Gatekeeper::App::{}", quote(a)))
                        .collect();
                    (
                        format!(
                            "!(context.known >= {} && context.at >= {from} && resource in [{}])",
                            c.issued,
                            apps.join(", ")
                        ),
                        "exemption",
                    )
                }
            };
            conditions.push((condition, format!("{}: {what}", c.by)));
        }
        // The latest delay known sets the effective instant.
        let mut effective = format!("context.at >= {}", r.effective);
        let mut by: Vec<&str> = Vec::new();
        for (c, eff) in r.delays() {
            effective = format!(
                "(if context.known >= {} then context.at >= {eff} else {effective})",
                c.issued
            );
            by.push(&c.by);
        }
        let what = if by.is_empty() {
            "effective".to_owned()
        } else {
            format!("effective, or as delayed by {}", by.join(", "))
        };
        conditions.push((effective, what));
        if let Some(end) = r.end {
            conditions.push((format!("context.at < {end}"), "end".to_owned()));
        }
        let last = conditions.len().saturating_sub(1);
        let body: Vec<String> = conditions
            .iter()
            .enumerate()
            .map(|(i, (condition, what))| {
                let and = if i == last { "" } else { " &&" };
                if what.is_empty() {
                    format!("{condition}{and}")
                } else {
                    format!("{condition}{and} // {what}")
                }
            })
            .collect();
        let _ = write!(
            out,
            "\n@id({})\nforbid (principal, action in [{}], resource)\nwhen {{\n  {}\n}};\n",
            quote(&p.id),
            actions.join(", "),
            body.join("\n  ")
        );
    }
    out
}

/// Apps under their owners, owners under their parents.
pub fn cedar_entities(policy: &Policy) -> Value {
    let mut all = Vec::new();
    for e in policy.entities() {
        let parents: Vec<Value> = e
            .parent
            .iter()
            .map(
                |&p| json!({ "type": "Gatekeeper::Owner", "id": policy.entities()[p as usize].id }),
            )
            .collect();
        all.push(json!({ "uid": { "type": "Gatekeeper::Owner", "id": e.id }, "attrs": {}, "parents": parents }));
    }
    for a in policy.apps() {
        let owner = &policy.entities()[a.owner as usize].id;
        all.push(json!({ "uid": { "type": "Gatekeeper::App", "id": a.id() }, "attrs": {}, "parents": [{ "type": "Gatekeeper::Owner", "id": owner }] }));
    }
    Value::Array(all)
}

/// The data document for `gatekeeper.rego`: the apps with their chains of owners, the
/// prohibitions as read for the default posture, and for each app or owner a prohibition
/// names, the positions of those prohibitions (`by_target`), so that the policy looks up the
/// prohibitions naming the app or its owners instead of scanning them all.
pub fn rego_data(policy: &Policy) -> Value {
    let mut by_target: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, p) in policy.prohibitions().iter().enumerate() {
        for (_, id) in targets(policy, p) {
            by_target.entry(id).or_default().push(i);
        }
    }
    let mut apps = serde_json::Map::new();
    for a in policy.apps() {
        let mut ancestors = vec![a.id().to_owned()];
        let mut owner = Some(a.owner);
        while let Some(o) = owner {
            let e = &policy.entities()[o as usize];
            ancestors.push(e.id.clone());
            owner = e.parent;
        }
        apps.insert(a.id().to_owned(), json!({ "ancestors": ancestors }));
    }
    let prohibitions: Vec<Value> = policy
        .prohibitions()
        .iter()
        .zip(read_all(policy))
        .map(|(p, r)| {
            let (mut delays, mut reliefs, mut revocations, mut exemptions) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for c in &r.changes {
                let (by, issued) = (&c.by, c.issued);
                match &c.kind {
                    ReadKind::Delay { effective } => delays.push(
                        json!({ "by": by, "issued": issued, "effective": effective }),
                    ),
                    ReadKind::Relief { kind, from, until } => reliefs.push(
                        json!({ "by": by, "kind": kind, "issued": issued, "from": from, "until": until }),
                    ),
                    ReadKind::Revocation { from } => {
                        revocations.push(json!({ "by": by, "issued": issued, "from": from }))
                    }
                    ReadKind::Exemption { from, apps } => exemptions.push(
                        json!({ "by": by, "issued": issued, "from": from, "apps": apps }),
                    ),
                }
            }
            json!({
                "id": p.id,
                "issued": r.issued,
                "targets": targets(policy, p).into_iter().map(|(_, id)| id).collect::<Vec<_>>(),
                "actions": p.actions.iter().map(Action::as_str).collect::<Vec<_>>(),
                "countries": policy.region(p.region).countries.iter().map(|c| c.alpha2()).collect::<Vec<_>>(),
                "jurisdiction": p.jurisdiction.iter().map(|g| g.iter().map(Signal::as_str).collect::<Vec<_>>()).collect::<Vec<_>>(),
                "effective": r.effective,
                "end": r.end,
                "delays": delays,
                "reliefs": reliefs,
                "revocations": revocations,
                "exemptions": exemptions,
            })
        })
        .collect();
    json!({ "gatekeeper": { "apps": apps, "prohibitions": prohibitions, "by_target": by_target } })
}
