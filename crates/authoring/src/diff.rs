//! The semantic difference of two versions of a policy set.
//!
//! For every point of the common [`Domain`] (subject, action, place, posture) both versions'
//! time lines are walked and compared at every breakpoint of either, so the difference is
//! exact, not sampled. Points with the same differences are gathered: postures first, then
//! actions, so that a delay that moves one instant for every posture and both app-store
//! actions is one entry.

use std::collections::HashMap;
use std::fmt::Write as _;

use policy::{Action, Instant, Policy, Posture};
use serde::Serialize;

use crate::domain::{self, Answer, Domain, Event, Interval};

/// Every change between two versions.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// How the old version was named.
    pub old: String,
    /// How the new version was named.
    pub new: String,
    /// Whether anything changes.
    pub changed: bool,
    /// The changes, by apps, place, actions.
    pub changes: Vec<Change>,
    /// What was compared.
    pub compared: Compared,
}

/// The size of the domain compared.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Compared {
    /// Groups of subjects with the same coverage in both versions.
    pub app_groups: usize,
    /// Subjects: identifiers and publisher accounts.
    pub subjects: usize,
    /// Places: sets of countries that both versions' regions treat alike.
    pub places: usize,
    /// Time lines walked (both versions).
    pub time_lines: usize,
}

/// Apps whose answers change alike for some actions, at one place, under some postures.
#[derive(Clone, Debug, Serialize)]
pub struct Change {
    /// The apps (listed app ids, owners' unlisted apps, or identifiers that moved).
    pub apps: Vec<String>,
    /// The actions.
    #[serde(serialize_with = "actions")]
    pub actions: Vec<Action>,
    /// The place, as people read it.
    pub place: String,
    /// The place's countries (alpha-2).
    pub countries: Vec<String>,
    /// The postures.
    #[serde(serialize_with = "postures")]
    pub postures: Vec<Posture>,
    /// Where the answers differ.
    pub intervals: Vec<Difference>,
}

/// An interval where the answer changes, and the instruments behind it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Difference {
    /// `None`: since ever.
    #[serde(serialize_with = "domain::serialize_instant_opt")]
    pub from: Option<Instant>,
    /// `None`: for ever.
    #[serde(serialize_with = "domain::serialize_instant_opt")]
    pub until: Option<Instant>,
    /// The old version's answer.
    pub old: Answer,
    /// The new version's answer.
    pub new: Answer,
    /// The instruments responsible: those the answers name, and those that fix either end.
    pub instruments: Vec<String>,
    /// What happens at either end, in either version.
    pub events: Vec<Event>,
}

fn actions<S: serde::Serializer>(actions: &[Action], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(actions.iter().map(|a| a.as_str()))
}

#[derive(Serialize)]
struct PostureRecord {
    boundaries: &'static str,
    non_enforcement: &'static str,
}

fn postures<S: serde::Serializer>(postures: &[Posture], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(postures.iter().map(|p| PostureRecord {
        boundaries: p.boundaries.as_str(),
        non_enforcement: p.non_enforcement.as_str(),
    }))
}

/// Compares two versions over their common domain.
pub fn diff(old: &Policy, new: &Policy, old_label: &str, new_label: &str) -> Report {
    let domain = Domain::new(&[old, new]);
    let mut time_lines = 0;
    // (group, place, intervals) -> postures; then (group, place, postures, intervals) -> actions.
    let mut changes: Vec<Change> = Vec::new();
    for group in &domain.groups {
        for place in &domain.places {
            let mut by_actions: Vec<(Vec<Posture>, Vec<Interval>, Vec<Action>)> = Vec::new();
            for action in Action::ALL {
                let Some(mut request) = group.request(action, place.country(), &domain.unlisted)
                else {
                    continue;
                };
                let mut by_postures: Vec<(Vec<Interval>, Vec<Posture>)> = Vec::new();
                for posture in Posture::ALL {
                    let a = domain::walk(old, &mut request, posture);
                    let b = domain::walk(new, &mut request, posture);
                    time_lines += 2;
                    let d = domain::differences(&a, &b);
                    if d.is_empty() {
                        continue;
                    }
                    match by_postures.iter_mut().find(|(i, _)| *i == d) {
                        Some((_, ps)) => ps.push(posture),
                        None => by_postures.push((d, vec![posture])),
                    }
                }
                for (intervals, ps) in by_postures {
                    match by_actions
                        .iter_mut()
                        .find(|(p, i, _)| *p == ps && *i == intervals)
                    {
                        Some((_, _, acts)) => acts.push(action),
                        None => by_actions.push((ps, intervals, vec![action])),
                    }
                }
            }
            for (postures, intervals, actions) in by_actions {
                // The instants that matter here: those of the prohibitions that may reach
                // these apps for these actions, in either version.
                let events = [(0, old), (1, new)].map(|(side, policy)| {
                    let reaching = &group.prohibitions[side];
                    domain::events_of(policy, |p| {
                        reaching.contains(&p)
                            && actions
                                .iter()
                                .any(|&a| policy.prohibition(p).actions.contains(a))
                    })
                });
                changes.push(Change {
                    apps: group.labels(),
                    actions,
                    place: place.label(),
                    countries: place
                        .countries
                        .iter()
                        .map(|c| c.alpha2().to_owned())
                        .collect(),
                    postures,
                    intervals: intervals
                        .into_iter()
                        .map(|i| difference(i, &events))
                        .collect(),
                });
            }
        }
    }
    merge_apps(&mut changes);
    Report {
        old: old_label.to_owned(),
        new: new_label.to_owned(),
        changed: !changes.is_empty(),
        changes,
        compared: Compared {
            app_groups: domain.groups.len(),
            subjects: domain.groups.iter().map(|g| g.members.len()).sum(),
            places: domain.places.len(),
            time_lines,
        },
    }
}

/// Gathers changes that differ only in their apps (groups apart for reasons that do not
/// matter here, such as an exemption that starts after both versions agree).
fn merge_apps(changes: &mut Vec<Change>) {
    let mut out: Vec<Change> = Vec::with_capacity(changes.len());
    type Key = (Vec<Action>, String, Vec<Posture>, Vec<Difference>);
    let mut index: HashMap<Key, usize> = HashMap::new();
    let mut apps: Vec<std::collections::HashSet<String>> = Vec::new();
    for change in changes.drain(..) {
        let key = (
            change.actions.clone(),
            change.place.clone(),
            change.postures.clone(),
            change.intervals.clone(),
        );
        match index.get(&key) {
            Some(&i) => {
                for app in change.apps {
                    if apps[i].insert(app.clone()) {
                        out[i].apps.push(app);
                    }
                }
            }
            None => {
                index.insert(key, out.len());
                apps.push(change.apps.iter().cloned().collect());
                out.push(change);
            }
        }
    }
    *changes = out;
}

fn difference(i: Interval, events: &[Vec<Event>; 2]) -> Difference {
    let from = (i.from != Instant::MIN).then_some(i.from);
    let mut at_ends: Vec<Event> = Vec::new();
    // The ends, and the instants a `not-yet-in-force` answer waits for: a delay is
    // responsible for the wait it lengthens.
    let waits = [i.old.in_force_from, i.new.in_force_from];
    for side in events {
        for at in from.iter().chain(&i.until).chain(waits.iter().flatten()) {
            for e in domain::events_at(side, *at) {
                if !at_ends.contains(e) {
                    at_ends.push(e.clone());
                }
            }
        }
    }
    at_ends.sort_by_key(|e| e.at);
    let mut instruments: Vec<String> = Vec::new();
    for id in i
        .old
        .instruments()
        .chain(i.new.instruments())
        .chain(at_ends.iter().map(|e| &e.instrument))
    {
        if !instruments.contains(id) {
            instruments.push(id.clone());
        }
    }
    Difference {
        from,
        until: i.until,
        old: i.old,
        new: i.new,
        instruments,
        events: at_ends,
    }
}

fn when(at: Option<Instant>, open: &str) -> String {
    at.map_or_else(|| open.to_owned(), |a| a.to_string())
}

/// `every posture`, or `conservative/honour, permissive/ignore`.
pub fn describe_postures(postures: &[Posture]) -> String {
    if postures.len() == Posture::ALL.len() {
        return "every posture".to_owned();
    }
    postures
        .iter()
        .map(|p| format!("{}/{}", p.boundaries.as_str(), p.non_enforcement.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// At most `n` names, then how many more.
fn some_of(names: &[String], n: usize) -> String {
    if names.len() <= n {
        return names.join(", ");
    }
    format!("{} and {} more", names[..n].join(", "), names.len() - n)
}

fn actions_text(actions: &[Action]) -> String {
    actions
        .iter()
        .map(|a| a.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

impl Report {
    /// For a terminal.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        if !self.changed {
            let _ = writeln!(
                out,
                "no change: `{}` and `{}` answer every request alike ({} subjects in {} groups, {} places, every action and posture; {} time lines compared)",
                self.old,
                self.new,
                self.compared.subjects,
                self.compared.app_groups,
                self.compared.places,
                self.compared.time_lines
            );
            return out;
        }
        let _ = writeln!(
            out,
            "{} change{} from `{}` to `{}`",
            self.changes.len(),
            if self.changes.len() == 1 { "" } else { "s" },
            self.old,
            self.new
        );
        for c in &self.changes {
            let _ = writeln!(
                out,
                "\n{} · {} · {} · {}",
                some_of(&c.apps, 8),
                actions_text(&c.actions),
                c.place,
                describe_postures(&c.postures)
            );
            for d in &c.intervals {
                let _ = writeln!(
                    out,
                    "  from {} until {}",
                    when(d.from, "the beginning"),
                    when(d.until, "for ever")
                );
                let _ = writeln!(out, "    old: {}", d.old.describe());
                let _ = writeln!(out, "    new: {}", d.new.describe());
                if !d.instruments.is_empty() {
                    let _ = writeln!(out, "    instruments: {}", d.instruments.join(", "));
                }
                for e in &d.events {
                    let _ = writeln!(out, "      {}  {}: {}", e.at, e.instrument, e.what);
                }
            }
        }
        out
    }

    /// For a pull-request comment.
    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        if !self.changed {
            let _ = writeln!(
                out,
                "**No change**: `{}` and `{}` answer every request alike ({} subjects, {} places, every action and posture).",
                self.old, self.new, self.compared.subjects, self.compared.places
            );
            return out;
        }
        let _ = writeln!(
            out,
            "### Policy changes from `{}` to `{}`: {}\n",
            self.old,
            self.new,
            self.changes.len()
        );
        let _ = writeln!(
            out,
            "| Apps | Actions | Place | Postures | From | Until | Old answer | New answer | Instruments |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
        for c in &self.changes {
            for d in &c.intervals {
                let cells = [
                    some_of(&c.apps, 8),
                    actions_text(&c.actions),
                    c.place.clone(),
                    describe_postures(&c.postures),
                    when(d.from, "the beginning"),
                    when(d.until, "for ever"),
                    d.old.describe(),
                    d.new.describe(),
                    d.instruments.join(", "),
                ];
                let row: Vec<String> = cells.iter().map(|c| cell(c)).collect();
                let _ = writeln!(out, "| {} |", row.join(" | "));
            }
        }
        out
    }

    /// For machines.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

/// A Markdown table cell: pipes escaped, no line breaks.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use policy::Source;

    const BASE: &str = r#"
[instrument]
id = "order"
kind = "statute"
title = "Order"
authority = "A"
citation = "1 XR 1"
source = "https://example.org/order"
issued = 2021-01-01T00:00:00Z

[[region]]
id = "R"
name = "R"
countries = ["US"]

[[entity]]
id = "owner"
name = "Owner"
publisher_accounts = [{ store = "google", id = "1234567890123456789" }]

[[entity]]
id = "other"
name = "Other"

[[app]]
id = "a"
name = "A"
owner = "other"
android = ["com.example.a"]

[[app]]
id = "b"
name = "B"
owner = "other"
android = ["com.example.b"]
"#;

    fn policy(rest: &str) -> Policy {
        Policy::from_sources([Source::new("p.toml", format!("{BASE}{rest}"))])
            .unwrap_or_else(|d| panic!("{}", d.render()))
    }

    fn prohibition(id: &str, apps: &str, owners: &str, action: &str, day: u32) -> String {
        format!(
            "\n[[prohibition]]\nid = \"{id}\"\napps = [{apps}]\nowners = [{owners}]\nactions = [\"{action}\"]\nregion = \"R\"\neffective = 2021-02-{day:02}T00:00:00Z\ntext = \"t\"\n"
        )
    }

    /// Apps whose coverage differs (here `b` is also covered for hosting) but whose answers
    /// change alike are one entry; the time lines walked are every group, place, action and
    /// posture of both versions; events name only what reaches the apps and actions.
    #[test]
    fn apps_that_change_alike_are_one_entry_and_events_are_the_apps_own() {
        // Hosting `b` is prohibited from the day the new version delays downloads to.
        let host = prohibition("h", "\"b\"", "", "host", 20);
        let old = policy(&(prohibition("p", "\"a\", \"b\"", "", "download", 10) + &host));
        let new = policy(&(prohibition("p", "\"a\", \"b\"", "", "download", 20) + &host));
        let report = diff(&old, &new, "old", "new");
        assert_eq!(report.changes.len(), 1, "{}", report.to_text());
        let change = &report.changes[0];
        assert_eq!(change.apps, ["a", "b"]);
        assert_eq!(change.actions, [Action::Download]);
        assert_eq!(change.postures, Posture::ALL);
        // Announced for the 10th, then for the 20th; denied from the 10th, then not yet.
        let [before, d] = change.intervals.as_slice() else {
            panic!("{:?}", change.intervals)
        };
        assert_eq!(before.new.because, Some("not-yet-in-force"));
        assert_ne!(before.old.in_force_from, before.new.in_force_from);
        assert_eq!(d.old.decision, "deny");
        assert_eq!(d.new.because, Some("not-yet-in-force"));
        // The hosting prohibition's instant is not this change's.
        assert!(
            d.events.iter().all(|e| !e.what.contains("`h`")),
            "{:?}",
            d.events
        );
        assert!(d.events.iter().any(|e| e.what.contains("`p` takes effect")));
        let c = report.compared;
        assert_eq!(c.time_lines, 2 * c.app_groups * c.places * 7 * 4);
        assert!(c.app_groups >= 3 && c.places == 2, "{c:?}");
    }

    /// An owner's unlisted apps, reached by publisher account, are part of the domain; an
    /// identifier that moves between apps is named with both.
    #[test]
    fn unlisted_apps_and_moved_identifiers_are_named() {
        let old = policy(&prohibition("p", "\"a\"", "\"owner\"", "download", 10));
        // `com.example.a` moves from `a` to `b`, which the prohibition now covers, from a
        // later day.
        let base = BASE
            .replace(
                "android = [\"com.example.a\"]",
                "android = [\"com.example.z\"]",
            )
            .replace(
                "android = [\"com.example.b\"]",
                "android = [\"com.example.b\", \"com.example.a\"]",
            );
        let new = Policy::from_sources([Source::new(
            "p.toml",
            format!("{base}{}", prohibition("p", "\"b\"", "", "download", 20)),
        )])
        .unwrap_or_else(|d| panic!("{}", d.render()));
        let report = diff(&old, &new, "old", "new");
        let apps: Vec<&String> = report.changes.iter().flat_map(|c| &c.apps).collect();
        assert!(
            apps.iter().any(|a| *a == "android com.example.a (a -> b)"),
            "{apps:?}"
        );
        assert!(
            apps.iter().any(|a| *a == "unlisted apps of owner"),
            "{apps:?}"
        );
        // `a` itself is covered in neither version under its new identifier.
        assert!(apps.iter().all(|a| *a != "a"), "{apps:?}");
        let unlisted = report
            .changes
            .iter()
            .find(|c| c.apps.iter().any(|a| a == "unlisted apps of owner"))
            .unwrap();
        // Announced, then denied, in the old version; never covered in the new.
        let last = unlisted.intervals.last().unwrap();
        assert!(
            last.events.iter().any(|e| e.what == "`p` takes effect"),
            "{:?}",
            last.events
        );
        assert_eq!(last.old.decision, "deny");
        assert_eq!(last.new.because, Some("not-covered"));
    }
}
