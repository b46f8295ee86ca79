//! The compiled form of a policy: its model and index as bytes, so that a policy of a
//! large catalogue loads without parsing, validating and compiling its TOML again.
//!
//! An image is `GKIMAGE\n`, then (postcard) the build that wrote it (see [`image_build`]),
//! then the model and the index. Its layout is that of this crate's types, so an image
//! names its build and one of another build is refused before anything else is read.
//! What is read is checked as the compiler would have made it, as far as a decision
//! depends on it: every index within its table, every range within its array, the
//! identifier table's buckets well formed, chains of owners and of instruments made
//! under others without cycles. A damaged image is an error, never a panic or a hang;
//! an image whose contents are well formed but false is as trustworthy as its signer,
//! like the TOML it was compiled from.

use serde::{Deserialize, Serialize};

use super::{
    ENTITY, Entry, Index, Lane, MAX_GROUPS, MAX_INDEXED_TESTS, MAX_WIDE_TESTS, NONE, Policy,
    Segment, Timelines,
};
use crate::instant::Instant;
use crate::law::{Outcome, Posture};
use crate::model::*;
use crate::validate::Model;

const MAGIC: &[u8; 8] = b"GKIMAGE\n";

/// The build of the engine images are written for: this crate's version and a
/// fingerprint of its source. An image is read only by the build that wrote it.
pub fn image_build() -> &'static str {
    concat!(
        env!("CARGO_PKG_VERSION"),
        "+",
        env!("POLICY_IMAGE_FINGERPRINT")
    )
}

/// Why an image was not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    #[error("not a compiled policy image (it does not start with `GKIMAGE`)")]
    NotAnImage,
    #[error(
        "the image was written by engine build {found}; this is build {expected}, which reads only its own images: compile the policy files instead"
    )]
    Build { found: String, expected: String },
    #[error("damaged image: {0}")]
    Malformed(String),
    #[error("inconsistent image: {0}")]
    Inconsistent(String),
}

#[derive(Serialize)]
struct Written<'a> {
    model: &'a Model,
    index: &'a Index,
}

#[derive(Deserialize)]
struct Read {
    model: Model,
    index: Index,
}

impl Policy {
    /// The compiled policy as bytes, for [`Policy::from_image`] of the same build:
    /// what a bundle carries beside the TOML, so that loading it needs no parse,
    /// validation or compile. The same policy always gives the same bytes.
    pub fn to_image(&self) -> Vec<u8> {
        let out = MAGIC.to_vec();
        let written = postcard::to_extend(image_build(), out).and_then(|out| {
            postcard::to_extend(
                &Written {
                    model: &self.model,
                    index: &self.index,
                },
                out,
            )
        });
        // Serializing plain data into a vector has no way to fail.
        written.unwrap_or_default()
    }

    /// A policy from [`Policy::to_image`]'s bytes, written by this build of the engine
    /// (see [`image_build`]). Everything a decision reads is checked first: a damaged
    /// image is an error.
    pub fn from_image(bytes: &[u8]) -> Result<Policy, ImageError> {
        let rest = bytes.strip_prefix(MAGIC).ok_or(ImageError::NotAnImage)?;
        let (build, rest): (&str, &[u8]) =
            postcard::take_from_bytes(rest).map_err(|e| ImageError::Malformed(e.to_string()))?;
        if build != image_build() {
            return Err(ImageError::Build {
                found: build.chars().take(80).collect(),
                expected: image_build().to_owned(),
            });
        }
        let (read, rest): (Read, &[u8]) =
            postcard::take_from_bytes(rest).map_err(|e| ImageError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(ImageError::Malformed(format!(
                "{} bytes after the index",
                rest.len()
            )));
        }
        check_model(&read.model).map_err(ImageError::Inconsistent)?;
        check_index(&read.model, &read.index).map_err(ImageError::Inconsistent)?;
        let mut index = read.index;
        index.complete();
        Ok(Policy {
            model: read.model,
            index,
        })
    }
}

/// Fails with `what` unless `i < len`.
fn within(i: u32, len: usize, what: impl FnOnce() -> String) -> Result<(), String> {
    if (i as usize) < len {
        Ok(())
    } else {
        Err(format!("{} is {i}, of {len}", what()))
    }
}

fn all_within(items: &[u32], len: usize, what: &dyn Fn() -> String) -> Result<(), String> {
    items.iter().try_for_each(|&i| within(i, len, what))
}

/// Every reference of the model within its table; no cycle among owners or among the
/// instruments made under others.
fn check_model(m: &Model) -> Result<(), String> {
    let (ni, ne, na, np, nr) = (
        m.instruments.len(),
        m.entities.len(),
        m.apps.len(),
        m.prohibitions.len(),
        m.regions.len(),
    );
    for (i, x) in m.instruments.iter().enumerate() {
        all_within(&x.pursuant_to, ni, &|| {
            format!("instrument {i}: an instrument it is made under")
        })?;
    }
    for (i, x) in m.entities.iter().enumerate() {
        if let Some(p) = x.parent {
            within(p, ne, || format!("entity {i}: its parent"))?;
        }
    }
    for (i, x) in m.apps.iter().enumerate() {
        within(x.owner, ne, || format!("app {i}: its owner"))?;
    }
    for (i, x) in m.prohibitions.iter().enumerate() {
        within(x.instrument, ni, || {
            format!("prohibition {i}: its instrument")
        })?;
        within(x.region, nr, || format!("prohibition {i}: its region"))?;
        all_within(&x.apps, na, &|| format!("prohibition {i}: an app"))?;
        all_within(&x.covered, na, &|| {
            format!("prohibition {i}: a covered app")
        })?;
        all_within(&x.owners, ne, &|| format!("prohibition {i}: an owner"))?;
    }
    for (i, x) in m.changes.iter().enumerate() {
        within(x.instrument, ni, || format!("change {i}: its instrument"))?;
        all_within(&x.targets, np, &|| format!("change {i}: a prohibition"))?;
        if let ChangeKind::Exemption { apps, .. } = &x.kind {
            all_within(apps, na, &|| format!("change {i}: an exempted app"))?;
        }
    }
    // Owners: a parent chain longer than the entities has a cycle.
    for (i, mut x) in m.entities.iter().enumerate() {
        let mut steps = 0;
        while let Some(p) = x.parent {
            steps += 1;
            if steps > ne {
                return Err(format!("entity {i}: its parents form a cycle"));
            }
            x = &m.entities[p as usize];
        }
    }
    // Instruments made under others: depth-first, 0 unseen, 1 on the path, 2 done.
    let mut state = vec![0u8; ni];
    for root in 0..ni {
        if state[root] != 0 {
            continue;
        }
        let mut stack = vec![(root, 0usize)];
        state[root] = 1;
        while let Some((i, next)) = stack.pop() {
            match m.instruments[i].pursuant_to.get(next) {
                None => state[i] = 2,
                Some(&j) => {
                    stack.push((i, next + 1));
                    match state[j as usize] {
                        0 => {
                            state[j as usize] = 1;
                            stack.push((j as usize, 0));
                        }
                        1 => return Err(format!("instrument {i}: made under itself, in a cycle")),
                        _ => {}
                    }
                }
            }
        }
    }
    Ok(())
}

/// The lines a lane or an entry's hindsight reaches: `count` from `first`.
fn lines_within(first: u32, count: usize, len: usize, what: &str) -> Result<(), String> {
    if first == NONE
        || (first as usize)
            .checked_add(count)
            .is_some_and(|end| end <= len)
    {
        Ok(())
    } else {
        Err(format!("{what}: {count} time lines from {first}, of {len}"))
    }
}

/// Every time line's segments within the array, each segment's judgement within the
/// judgements, and what it says of its judgement (whether it denies, the prohibition it
/// reports) what the judgement says: `said[j]` is judgement `j`'s segment (see
/// [`Segment::new`]), whatever its start.
fn check_timelines(t: &Timelines, said: &[Segment], what: &str) -> Result<(), String> {
    for (i, l) in t.lines.iter().enumerate() {
        let end = (l.start as usize).checked_add(l.len as usize);
        if l.len == 0 || end.is_none_or(|end| end > t.segments.len()) {
            return Err(format!("{what}time line {i}: segments outside the array"));
        }
    }
    for (i, s) in t.segments.iter().enumerate() {
        within(s.judgement(), said.len(), || {
            format!("{what}segment {i}: its judgement")
        })?;
        let expected = Segment {
            start: s.start,
            ..said[s.judgement() as usize]
        };
        if *s != expected {
            return Err(format!(
                "{what}segment {i}: it says otherwise than its judgement"
            ));
        }
    }
    Ok(())
}

/// How many time lines an entry's lane has for each posture (and epoch): one per mask
/// of its tests, or per mask of its [`super::Wide`], whose tests must be the entry's.
fn lane_lines(x: &Index, e: &Entry, lane: &Lane) -> Result<usize, String> {
    let n = usize::from(lane.tests_len);
    if lane.lines == NONE {
        return Ok(0);
    }
    if n <= MAX_INDEXED_TESTS {
        if lane.tests[..n] != e.tests[..] {
            return Err("its lane's tests".to_owned());
        }
        return Ok(1 << n);
    }
    if n > MAX_WIDE_TESTS {
        // A mask is a `u64`: a bit per test.
        return Err(format!(
            "its lane has {n} tests, of at most {MAX_WIDE_TESTS}"
        ));
    }
    let w = x.wide.get(lane.tests[0] as usize).ok_or_else(|| {
        format!(
            "its lane's tests are {}, of {}",
            lane.tests[0],
            x.wide.len()
        )
    })?;
    let tests = x.wide_tests.get(w.tests.0 as usize..w.tests.1 as usize);
    let masks = x.masks.get(w.masks.0 as usize..w.masks.1 as usize);
    match (tests, masks) {
        (Some(tests), Some(masks))
            if tests == &e.tests[..] && tests.len() == n && !masks.is_empty() =>
        {
            Ok(masks.len())
        }
        _ => Err("its lane's tests or masks".to_owned()),
    }
}

/// Everything a decision reads of the index within its table, given the model.
fn check_index(m: &Model, x: &Index) -> Result<(), String> {
    let (ni, ne, na, np, nr, nc) = (
        m.instruments.len(),
        m.entities.len(),
        m.apps.len(),
        m.prohibitions.len(),
        m.regions.len(),
        m.changes.len(),
    );
    let nt = x.tests.len();
    let (nl, nh) = (x.timelines.lines.len(), x.hindsight_timelines.lines.len());
    let ncov = x.coverages.len();
    x.ids
        .check(&|t| {
            if t.target & ENTITY != 0 {
                within(t.target & !ENTITY, ne, || "an account's entity".to_owned())?;
            } else {
                within(t.target, na, || "its app".to_owned())?;
            }
            within(t.coverage, ncov, || "its coverage".to_owned())?;
            within(t.owner, ne, || "its owner".to_owned())
        })
        .map_err(|e| format!("identifier table: {e}"))?;
    for (i, c) in x.coverages.iter().enumerate() {
        all_within(c, x.entries.len(), &|| format!("coverage {i}: an entry"))?;
    }
    if x.lanes.len() != x.entries.len() || x.hindsight.len() != x.entries.len() {
        return Err(format!(
            "{} lanes and {} hindsights for {} entries",
            x.lanes.len(),
            x.hindsight.len(),
            x.entries.len()
        ));
    }
    let postures = Posture::ALL.len();
    for (i, (e, lane)) in x.entries.iter().zip(&x.lanes).enumerate() {
        let what = || format!("entry {i}");
        all_within(&e.covering, np, &|| {
            format!("{}: a covering prohibition", what())
        })?;
        all_within(&e.with_action, np, &|| format!("{}: a prohibition", what()))?;
        all_within(&e.tests, nt, &|| format!("{}: a test", what()))?;
        if let Some(a) = e.app {
            within(a, na, || format!("{}: its app", what()))?;
        }
        if e.test_of.len() != e.with_action.len()
            || e.test_of.iter().any(|&t| t as usize >= e.tests.len())
        {
            return Err(format!("{}: tests of its prohibitions", what()));
        }
        let per_posture = lane_lines(x, e, lane).map_err(|why| format!("{}: {why}", what()))?;
        lines_within(lane.lines, postures * per_posture, nl, &what())?;
        let h = &x.hindsight[i];
        if h.epochs.0 > h.epochs.1 || h.epochs.1 as usize > x.epochs.len() {
            return Err(format!("{}: its epochs", what()));
        }
        let epochs = (h.epochs.1 - h.epochs.0) as usize + 1;
        lines_within(h.lines, epochs * postures * per_posture, nh, &what())?;
        if (h.lines == NONE) != (lane.lines == NONE) {
            return Err(format!("{}: time lines for some judgements only", what()));
        }
    }
    for (i, t) in x.tests.iter().enumerate() {
        within(t.region, nr, || format!("test {i}: its region"))?;
        if t.groups.0 > t.groups.1 || t.groups.1 as usize > x.groups.len() {
            return Err(format!("test {i}: its groups"));
        }
        if (t.groups.1 - t.groups.0) as usize > MAX_GROUPS {
            return Err(format!("test {i}: more than {MAX_GROUPS} groups"));
        }
    }
    if x.prohibition_tests.len() != np {
        return Err(format!(
            "tests of {} prohibitions, of {np}",
            x.prohibition_tests.len()
        ));
    }
    all_within(&x.prohibition_tests, nt, &|| {
        "a prohibition's test".to_owned()
    })?;
    for (i, j) in x.judgements.iter().enumerate() {
        let what = || format!("judgement {i}");
        match &j.outcome {
            Outcome::Deny {
                prohibitions,
                set_aside,
            } => {
                all_within(prohibitions, np, &|| format!("{}: a prohibition", what()))?;
                all_within(set_aside, ni, &|| format!("{}: an order set aside", what()))?;
            }
            Outcome::Allow { by, judged, .. } => {
                if let Some(b) = by {
                    within(*b, ni, || format!("{}: its instrument", what()))?;
                }
                if let Some(p) = judged {
                    within(*p, np, || format!("{}: its prohibition", what()))?;
                }
            }
        }
    }
    // (The judgements' outcomes are checked above.)
    let said: Vec<Segment> = x
        .judgements
        .iter()
        .enumerate()
        .map(|(j, judgement)| Segment::new(Instant::MIN, j as u32, &judgement.outcome))
        .collect();
    check_timelines(&x.timelines, &said, "")?;
    check_timelines(&x.hindsight_timelines, &said, "in hindsight: ")?;
    if x.changes_of.len() != np {
        return Err(format!(
            "changes of {} prohibitions, of {np}",
            x.changes_of.len()
        ));
    }
    for (i, c) in x.changes_of.iter().enumerate() {
        all_within(c, nc, &|| format!("prohibition {i}: a change"))?;
    }
    // What an entry's time lines report is one of the entry's prohibitions.
    for (i, (e, lane)) in x.entries.iter().zip(&x.lanes).enumerate() {
        if lane.lines == NONE {
            continue;
        }
        let per_posture = lane_lines(x, e, lane)?;
        let h = &x.hindsight[i];
        let epochs = (h.epochs.1 - h.epochs.0) as usize + 1;
        let ranges = [
            (&x.timelines, lane.lines as usize, postures * per_posture),
            (
                &x.hindsight_timelines,
                h.lines as usize,
                epochs * postures * per_posture,
            ),
        ];
        for (timelines, first, count) in ranges {
            for line in &timelines.lines[first..first + count] {
                let (start, len) = (line.start as usize, line.len as usize);
                for segment in &timelines.segments[start..start + len] {
                    let reports = segment.reports;
                    if reports != NONE && !e.with_action.contains(&reports) {
                        return Err(format!(
                            "entry {i}: a time line reports prohibition {reports}, not the entry's"
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::diagnostic::Source;
    use crate::engine::Line;

    fn policy() -> Policy {
        let text = "[instrument]\nid = \"o\"\nkind = \"statute\"\ntitle = \"O\"\nauthority = \"A\"\ncitation = \"1 XR 1\"\nsource = \"https://example.org/o\"\nissued = 2021-01-01T00:00:00Z\n\n[[region]]\nid = \"US\"\nname = \"US\"\ncountries = [\"US\"]\n\n[[entity]]\nid = \"e\"\nname = \"E\"\n\n[[entity]]\nid = \"f\"\nname = \"F\"\nparent = \"e\"\n\n[[app]]\nid = \"a\"\nname = \"A\"\nowner = \"f\"\nandroid = [\"app.a\"]\n\n[[prohibition]]\nid = \"p\"\napps = [\"a\"]\nactions = [\"download\"]\nregion = \"US\"\neffective = 2021-02-01T00:00:00Z\ntext = \"t\"\n";
        Policy::from_sources([Source::new("o.toml", text)]).unwrap()
    }

    fn refused(policy: &Policy) -> String {
        match Policy::from_image(&policy.to_image()) {
            Err(ImageError::Inconsistent(why)) => why,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_policy_reads_back_from_its_image() {
        let p = policy();
        let read = Policy::from_image(&p.to_image()).unwrap();
        assert_eq!(read.to_image(), p.to_image());
    }

    #[test]
    fn cycles_of_owners_or_instruments_are_refused() {
        let mut p = policy();
        p.model.entities[0].parent = Some(1);
        assert_eq!(refused(&p), "entity 0: its parents form a cycle");
        let mut p = policy();
        p.model.instruments[0].pursuant_to = vec![0];
        assert_eq!(refused(&p), "instrument 0: made under itself, in a cycle");
    }

    #[test]
    fn references_outside_their_tables_are_refused() {
        let mut p = policy();
        p.model.apps[0].owner = 2;
        assert_eq!(refused(&p), "app 0: its owner is 2, of 2");
        let mut p = policy();
        p.index.timelines.segments[0].judged = 99;
        let n = p.index.judgements.len();
        assert_eq!(
            refused(&p),
            format!("segment 0: its judgement is 99, of {n}")
        );
        let mut p = policy();
        p.index.timelines.segments[0].judged = crate::engine::DENIES | 99;
        assert_eq!(
            refused(&p),
            format!("segment 0: its judgement is 99, of {n}")
        );
        let mut p = policy();
        let line = p.index.timelines.lines.len() as u32;
        p.index.lanes[0].lines = line;
        let why = refused(&p);
        assert!(
            why.starts_with("entry 0: ")
                && why.ends_with(&format!("time lines from {line}, of {line}")),
            "{why}"
        );
        for (start, len) in [(0, 0), (1, u32::MAX), (u32::MAX, 1)] {
            let mut p = policy();
            p.index.hindsight_timelines.lines[0] = Line { start, len };
            assert_eq!(
                refused(&p),
                "in hindsight: time line 0: segments outside the array"
            );
        }
        let mut p = policy();
        let n = p.index.timelines.segments.len();
        p.index.timelines.segments[n - 1].judged ^= crate::engine::DENIES;
        assert_eq!(
            refused(&p),
            format!("segment {}: it says otherwise than its judgement", n - 1)
        );
        let mut p = policy();
        let reports = &mut p.index.hindsight_timelines.segments[0].reports;
        *reports = if *reports == NONE { 0 } else { NONE };
        assert_eq!(
            refused(&p),
            "in hindsight: segment 0: it says otherwise than its judgement"
        );
        let mut p = policy();
        p.index.prohibition_tests.clear();
        assert_eq!(refused(&p), "tests of 0 prohibitions, of 1");
        // Six groups, where a signal is in one at most: more than a test's word holds.
        let mut p = policy();
        let from = p.index.groups.len() as u32;
        let group = p.index.groups[0];
        p.index.groups.extend([group; MAX_GROUPS + 1]);
        p.index.tests[0].groups = (from, from + MAX_GROUPS as u32 + 1);
        assert_eq!(refused(&p), "test 0: more than 5 groups");
    }
}
