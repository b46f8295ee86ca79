//! Stage two: raw items from every file to the validated model, reporting every
//! problem at once.

use std::collections::HashSet;

use rustc_hash::FxHashMap as HashMap;
use std::ops::Range;

use toml::Spanned;

use crate::action::{Action, ActionSet};
use crate::country::{Country, CountrySet};
use crate::diagnostic::Diagnostic;
use crate::instant::{self, Instant};
use crate::model::*;
use crate::raw::{ParsedFile, RawTargets, S};

/// The validated model, before indexing.
#[derive(Debug, Default)]
pub(crate) struct Model {
    pub instruments: Vec<Instrument>,
    pub regions: Vec<Region>,
    pub entities: Vec<Entity>,
    pub apps: Vec<App>,
    pub prohibitions: Vec<Prohibition>,
    pub changes: Vec<Change>,
}

/// Where an id was first defined, for duplicate reports.
type Defined = HashMap<String, (usize, Range<usize>)>;

fn new_map<K, V>() -> HashMap<K, V> {
    HashMap::default()
}

struct Validator<'f> {
    files: &'f [ParsedFile],
    diagnostics: Vec<Diagnostic>,
    broken: HashSet<&'f str>,
}

pub(crate) fn validate(files: &[ParsedFile]) -> Result<Model, Vec<Diagnostic>> {
    let mut v = Validator {
        files,
        diagnostics: files
            .iter()
            .flat_map(|f| f.diagnostics.iter().cloned())
            .collect(),
        broken: files
            .iter()
            .flat_map(|f| f.broken_ids.iter().map(String::as_str))
            .collect(),
    };
    let model = v.run();
    if v.diagnostics.is_empty() {
        Ok(model)
    } else {
        // Reading order: by file, then by place in the file.
        let order: std::collections::HashMap<&str, usize> = files
            .iter()
            .enumerate()
            .map(|(i, f)| (f.source.name.as_str(), i))
            .collect();
        v.diagnostics
            .sort_by_key(|d| (order.get(d.file.as_str()).copied(), d.line_column()));
        Err(v.diagnostics)
    }
}

impl<'f> Validator<'f> {
    fn error(&mut self, file: usize, span: Range<usize>, message: String, hint: impl Into<String>) {
        let source = &self.files[file].source;
        self.diagnostics
            .push(Diagnostic::at(source, span, message).with_hint(hint));
    }

    /// Registers an id, reporting duplicates and malformed ids.
    fn define(&mut self, defined: &mut Defined, what: &str, file: usize, id: &S) -> bool {
        let name = id.get_ref();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            self.error(
                file,
                id.span(),
                format!("invalid {what} id `{name}`"),
                "ids are non-empty and use letters, digits, `.`, `_` and `-`",
            );
            return false;
        }
        if let Some((first_file, first_span)) = defined.get(name) {
            let first = Diagnostic::at(&self.files[*first_file].source, first_span.clone(), "");
            let (line, column) = first.line_column().unwrap_or((0, 0));
            let hint = format!(
                "`{name}` is first defined at {}:{line}:{column}; ids must be unique across the loaded files",
                first.file
            );
            self.error(
                file,
                id.span(),
                format!("duplicate {what} id `{name}`"),
                hint,
            );
            return false;
        }
        defined.insert(name.clone(), (file, id.span()));
        true
    }

    /// Resolves a reference to an id, reporting unknown ones with a suggestion.
    fn resolve(
        &mut self,
        file: usize,
        what: &str,
        ids: &HashMap<String, u32>,
        name: &S,
    ) -> Option<u32> {
        if let Some(i) = ids.get(name.get_ref()) {
            return Some(*i);
        }
        if self.broken.contains(name.get_ref().as_str()) {
            // The target failed to parse and was reported already.
            return None;
        }
        let hint = suggest(name.get_ref(), ids.keys().map(String::as_str), what);
        self.error(
            file,
            name.span(),
            format!("unknown {what} `{}`", name.get_ref()),
            hint,
        );
        None
    }

    fn instant(&mut self, file: usize, value: &Spanned<toml::Value>) -> Option<Instant> {
        match instant::from_toml(value.get_ref()) {
            Ok(i) => Some(i),
            Err(e) => {
                let hint = e.hint();
                self.error(file, value.span(), e.to_string(), hint);
                None
            }
        }
    }

    fn run(&mut self) -> Model {
        let files = self.files;
        let mut model = Model::default();

        // Ids first, so that references resolve whatever the file order.
        let mut instrument_ids = new_map();
        let mut region_ids = new_map();
        let mut entity_ids = new_map();
        let mut app_ids = new_map();
        let mut prohibition_ids = new_map();
        let (mut d_ins, mut d_reg, mut d_ent, mut d_app, mut d_pro) =
            (new_map(), new_map(), new_map(), new_map(), new_map());
        for (fi, f) in files.iter().enumerate() {
            if let Some(ins) = &f.instrument
                && self.define(&mut d_ins, "instrument", fi, &ins.id)
            {
                instrument_ids.insert(ins.id.get_ref().clone(), instrument_ids.len() as u32);
            }
            for r in &f.regions {
                if self.define(&mut d_reg, "region", fi, &r.id) {
                    region_ids.insert(r.id.get_ref().clone(), region_ids.len() as u32);
                }
            }
            for e in &f.entities {
                if self.define(&mut d_ent, "entity", fi, &e.id) {
                    entity_ids.insert(e.id.get_ref().clone(), entity_ids.len() as u32);
                }
            }
            for a in &f.apps {
                if self.define(&mut d_app, "app", fi, &a.id) {
                    app_ids.insert(a.id.get_ref().clone(), app_ids.len() as u32);
                }
            }
            for p in &f.prohibitions {
                if self.define(&mut d_pro, "prohibition", fi, &p.id) {
                    prohibition_ids.insert(p.id.get_ref().clone(), prohibition_ids.len() as u32);
                }
            }
        }

        // Instruments.
        let mut file_instrument: Vec<Option<InstrumentIdx>> = vec![None; files.len()];
        for (fi, f) in files.iter().enumerate() {
            let Some(raw) = &f.instrument else { continue };
            let Some(&idx) = instrument_ids.get(raw.id.get_ref()) else {
                continue;
            };
            if d_ins.get(raw.id.get_ref()).map(|d| d.0) != Some(fi) {
                continue;
            }
            file_instrument[fi] = Some(idx);
            let kind = InstrumentKind::ALL
                .into_iter()
                .find(|k| k.as_str() == raw.kind.get_ref());
            if kind.is_none() {
                let expected = InstrumentKind::ALL
                    .map(|k| format!("`{}`", k.as_str()))
                    .join(", ");
                self.error(
                    fi,
                    raw.kind.span(),
                    format!("unknown instrument kind `{}`", raw.kind.get_ref()),
                    format!("expected one of {expected}"),
                );
            }
            let src = raw.source.get_ref();
            if !(src.starts_with("https://") || src.starts_with("http://")) {
                self.error(
                    fi,
                    raw.source.span(),
                    format!("source `{src}` is not an http(s) URL"),
                    "give the URL where the instrument's text can be read",
                );
            }
            let pursuant_to = raw
                .pursuant_to
                .iter()
                .filter_map(|p| self.resolve(fi, "instrument", &instrument_ids, p))
                .collect();
            let issued = self.instant(fi, &raw.issued);
            model.instruments.push(Instrument {
                id: raw.id.get_ref().clone(),
                kind: kind.unwrap_or(InstrumentKind::Statute),
                title: raw.title.clone(),
                authority: raw.authority.clone(),
                pursuant_to,
                citation: raw.citation.clone(),
                source: src.clone(),
                issued: issued.unwrap_or(Instant::MIN),
                notes: raw.notes.clone(),
                file: f.source.name.clone(),
            });
        }

        // Regions.
        for (fi, f) in files.iter().enumerate() {
            for raw in &f.regions {
                let mut countries = Vec::new();
                for c in raw.countries.get_ref() {
                    match Country::parse(c.get_ref()) {
                        Ok(country) => countries.push(country),
                        Err(e) => self.error(
                            fi,
                            c.span(),
                            e.to_string()
                                .split(';')
                                .next()
                                .unwrap_or_default()
                                .to_owned(),
                            "use ISO 3166-1 alpha-2 (`PR`) or alpha-3 (`PRI`) codes",
                        ),
                    }
                }
                if raw.countries.get_ref().is_empty() {
                    self.error(
                        fi,
                        raw.countries.span(),
                        format!("region `{}` has no countries", raw.id.get_ref()),
                        "list at least one ISO 3166-1 code",
                    );
                }
                countries.sort();
                countries.dedup();
                model.regions.push(Region {
                    id: raw.id.get_ref().clone(),
                    name: raw.name.clone(),
                    set: countries.iter().copied().collect::<CountrySet>(),
                    countries,
                    notes: raw.notes.clone(),
                });
            }
        }

        // Entities, then their parent chains.
        let mut parent_spans = Vec::new();
        for (fi, f) in files.iter().enumerate() {
            for raw in &f.entities {
                let parent = raw
                    .parent
                    .as_ref()
                    .and_then(|p| self.resolve(fi, "entity", &entity_ids, p));
                parent_spans.push((fi, raw.parent.as_ref().map(|p| p.span())));
                model.entities.push(Entity {
                    id: raw.id.get_ref().clone(),
                    name: raw.name.clone(),
                    parent,
                    notes: raw.notes.clone(),
                });
            }
        }
        for (start, (fi, span)) in parent_spans.iter().enumerate() {
            let mut at = model.entities[start].parent;
            let mut steps = 0;
            while let Some(p) = at {
                if p as usize == start || steps > model.entities.len() {
                    let id = model.entities[start].id.clone();
                    self.error(
                        *fi,
                        span.clone().unwrap_or(0..0),
                        format!("entity `{id}` is its own ancestor"),
                        "an entity's `parent` chain must end at an entity without a parent",
                    );
                    break;
                }
                at = model.entities[p as usize].parent;
                steps += 1;
            }
        }

        // Apps and their identifiers, each claimed by one app only.
        let mut claimed: HashMap<(&str, String), (&'f str, usize, Range<usize>)> =
            HashMap::default();
        for (fi, f) in files.iter().enumerate() {
            for raw in &f.apps {
                let owner = self.resolve(fi, "entity", &entity_ids, &raw.owner);
                let app_id: &'f str = raw.id.get_ref();
                let mut lists: Vec<Vec<String>> = Vec::new();
                // (what, values, whether they are SHA-256 digests)
                for (kind, values, digest) in [
                    ("iOS bundle id", &raw.ios, false),
                    ("Android package", &raw.android, false),
                    ("signing certificate", &raw.signing_cert_sha256, true),
                    ("constituent-code digest", &raw.code_sha256, true),
                ] {
                    let mut list = Vec::new();
                    for value in values {
                        let normalized = if digest {
                            normalize_sha256(value.get_ref())
                        } else {
                            Some(value.get_ref().clone())
                                .filter(|s| !s.is_empty() && !s.contains(char::is_whitespace))
                        };
                        let Some(normalized) = normalized else {
                            let hint = if digest {
                                "write 64 hexadecimal digits, optionally in colon-separated pairs"
                            } else {
                                "identifiers are non-empty and have no spaces"
                            };
                            self.error(
                                fi,
                                value.span(),
                                format!("invalid {kind} `{}`", value.get_ref()),
                                hint,
                            );
                            continue;
                        };
                        let key = (kind, normalized);
                        match claimed.get(&key) {
                            Some((other, ofi, ospan)) if *other != app_id => {
                                let first = Diagnostic::at(&files[*ofi].source, ospan.clone(), "");
                                let (line, column) = first.line_column().unwrap_or((0, 0));
                                let hint = format!(
                                    "app `{other}` claims it at {}:{line}:{column}; an identifier names one app",
                                    first.file
                                );
                                self.error(
                                    fi,
                                    value.span(),
                                    format!(
                                        "{kind} `{}` is claimed by apps `{other}` and `{app_id}`",
                                        value.get_ref()
                                    ),
                                    hint,
                                );
                            }
                            Some(_) => {}
                            None => {
                                claimed.insert(key.clone(), (app_id, fi, value.span()));
                            }
                        }
                        list.push(key.1);
                    }
                    lists.push(list);
                }
                for team in &raw.apple_team_ids {
                    let t = team.get_ref();
                    if t.len() != 10
                        || !t
                            .chars()
                            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
                    {
                        self.error(
                            fi,
                            team.span(),
                            format!("invalid Apple team id `{t}`"),
                            "an Apple team id is 10 upper-case letters and digits",
                        );
                    }
                }
                if raw.ios.is_empty()
                    && raw.android.is_empty()
                    && raw.signing_cert_sha256.is_empty()
                    && raw.code_sha256.is_empty()
                {
                    self.error(
                        fi,
                        raw.id.span(),
                        format!("app `{app_id}` has no identifier"),
                        "give at least one of `ios`, `android`, `signing_cert_sha256` or `code_sha256`",
                    );
                }
                let mut lists = lists.into_iter();
                model.apps.push(App {
                    id: app_id.to_owned(),
                    name: raw.name.clone(),
                    owner: owner.unwrap_or(0),
                    ios: lists.next().unwrap_or_default(),
                    android: lists.next().unwrap_or_default(),
                    signing_cert_sha256: lists.next().unwrap_or_default(),
                    code_sha256: lists.next().unwrap_or_default(),
                    apple_team_ids: raw
                        .apple_team_ids
                        .iter()
                        .map(|t| t.get_ref().clone())
                        .collect(),
                    notes: raw.notes.clone(),
                });
            }
        }

        // Prohibitions.
        for (fi, f) in files.iter().enumerate() {
            for raw in &f.prohibitions {
                let instrument =
                    self.owning_instrument(fi, &file_instrument, "prohibition", &raw.id);
                let apps: Vec<AppIdx> = raw
                    .apps
                    .iter()
                    .filter_map(|a| self.resolve(fi, "app", &app_ids, a))
                    .collect();
                let owners: Vec<EntityIdx> = raw
                    .owners
                    .iter()
                    .filter_map(|o| self.resolve(fi, "entity", &entity_ids, o))
                    .collect();
                if raw.apps.is_empty() && raw.owners.is_empty() {
                    self.error(
                        fi,
                        raw.id.span(),
                        format!("prohibition `{}` covers no app", raw.id.get_ref()),
                        "name the covered apps with `apps = [...]` or their owners with `owners = [...]`",
                    );
                }
                let mut actions = ActionSet::default();
                for a in raw.actions.get_ref() {
                    match a.get_ref().parse::<Action>() {
                        Ok(action) => actions.insert(action),
                        Err(_) => {
                            let hint = format!("expected one of {}", Action::expected());
                            self.error(
                                fi,
                                a.span(),
                                format!("unknown action `{}`", a.get_ref()),
                                hint,
                            );
                        }
                    }
                }
                if raw.actions.get_ref().is_empty() {
                    self.error(
                        fi,
                        raw.actions.span(),
                        format!("prohibition `{}` prohibits no action", raw.id.get_ref()),
                        format!("list one or more of {}", Action::expected()),
                    );
                }
                let region = self.resolve(fi, "region", &region_ids, &raw.region);
                let effective = self.instant(fi, &raw.effective);
                let end = raw.end.as_ref().and_then(|e| self.instant(fi, e));
                if let (Some(start), Some(stop), Some(end_raw)) = (effective, end, &raw.end)
                    && stop <= start
                {
                    self.error(
                        fi,
                        end_raw.span(),
                        format!("end {stop} is not after the effective instant {start}"),
                        "a prohibition must end after it takes effect",
                    );
                }
                model.prohibitions.push(Prohibition {
                    id: raw.id.get_ref().clone(),
                    item: raw.item.clone(),
                    instrument: instrument.unwrap_or(0),
                    apps,
                    owners,
                    covered: Vec::new(),
                    actions,
                    region: region.unwrap_or(0),
                    effective: effective.unwrap_or(Instant::MIN),
                    end,
                    text: raw.text.clone(),
                    notes: raw.notes.clone(),
                });
            }
        }
        for p in &mut model.prohibitions {
            let mut covered = p.apps.clone();
            for (ai, app) in model.apps.iter().enumerate() {
                if p.owners
                    .iter()
                    .any(|&o| descends_from(&model.entities, app.owner, o))
                {
                    covered.push(ai as AppIdx);
                }
            }
            covered.sort_unstable();
            covered.dedup();
            p.covered = covered;
        }

        // Changes by later instruments.
        for (fi, f) in files.iter().enumerate() {
            let changes = f
                .delays
                .iter()
                .map(|d| {
                    (
                        d.targets(),
                        "delay",
                        d.text.clone(),
                        d.notes.clone(),
                        Kind::Delay(&d.effective),
                    )
                })
                .chain(f.suspensions.iter().map(|s| {
                    (
                        s.targets(),
                        "suspension",
                        s.text.clone(),
                        s.notes.clone(),
                        Kind::Suspension(&s.from, s.until.as_ref()),
                    )
                }))
                .chain(f.revocations.iter().map(|r| {
                    (
                        r.targets(),
                        "revocation",
                        r.text.clone(),
                        r.notes.clone(),
                        Kind::Revocation(&r.from),
                    )
                }));
            for (targets, what, text, notes, kind) in changes {
                let anchor = first_span(&targets, &kind);
                let instrument = match file_instrument[fi] {
                    Some(i) => Some(i),
                    None => {
                        self.error(
                            fi,
                            anchor.clone(),
                            format!("{what} is not in an instrument's file"),
                            "add an `[instrument]` table to this file, or move the change into the file of the instrument that makes it",
                        );
                        None
                    }
                };
                let resolved = self.targets(
                    fi,
                    &targets,
                    &prohibition_ids,
                    &instrument_ids,
                    &model,
                    anchor,
                    what,
                );
                let kind = match kind {
                    Kind::Delay(e) => self
                        .instant(fi, e)
                        .map(|effective| ChangeKind::Delay { effective }),
                    Kind::Revocation(from) => self
                        .instant(fi, from)
                        .map(|from| ChangeKind::Revocation { from }),
                    Kind::Suspension(from_raw, until_raw) => {
                        let from = self.instant(fi, from_raw);
                        let until = until_raw.and_then(|u| self.instant(fi, u));
                        if let (Some(f), Some(u), Some(ur)) = (from, until, until_raw)
                            && u <= f
                        {
                            self.error(
                                fi,
                                ur.span(),
                                format!("suspension ends at {u}, not after it starts at {f}"),
                                "`until` must be after `from`; leave `until` out for an open-ended suspension",
                            );
                        }
                        from.map(|from| ChangeKind::Suspension { from, until })
                    }
                };
                if let (Some(instrument), Some(kind)) = (instrument, kind) {
                    model.changes.push(Change {
                        instrument,
                        kind,
                        targets: resolved,
                        text,
                        notes,
                    });
                }
            }
        }
        model
    }

    fn owning_instrument(
        &mut self,
        fi: usize,
        file_instrument: &[Option<InstrumentIdx>],
        what: &str,
        id: &S,
    ) -> Option<InstrumentIdx> {
        if file_instrument[fi].is_none() && self.files[fi].instrument.is_none() {
            self.error(
                fi,
                id.span(),
                format!("{what} `{}` is not in an instrument's file", id.get_ref()),
                "add an `[instrument]` table to this file, or move the entry into the file of the instrument that makes it",
            );
        }
        file_instrument[fi]
    }

    #[allow(clippy::too_many_arguments)]
    fn targets(
        &mut self,
        fi: usize,
        raw: &RawTargets,
        prohibition_ids: &HashMap<String, u32>,
        instrument_ids: &HashMap<String, u32>,
        model: &Model,
        anchor: Range<usize>,
        what: &str,
    ) -> Vec<ProhibitionIdx> {
        let mut out: Vec<ProhibitionIdx> = raw
            .prohibitions
            .iter()
            .filter_map(|p| self.resolve(fi, "prohibition", prohibition_ids, p))
            .collect();
        for name in &raw.instruments {
            if let Some(root) = self.resolve(fi, "instrument", instrument_ids, name) {
                for (pi, p) in model.prohibitions.iter().enumerate() {
                    if made_under(&model.instruments, p.instrument, root) {
                        out.push(pi as ProhibitionIdx);
                    }
                }
            }
        }
        if raw.prohibitions.is_empty() && raw.instruments.is_empty() {
            self.error(
                fi,
                anchor,
                format!("{what} names no target"),
                "name the prohibitions with `prohibitions = [...]` or whole instruments with `instruments = [...]`",
            );
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}

enum Kind<'a> {
    Delay(&'a Spanned<toml::Value>),
    Suspension(&'a Spanned<toml::Value>, Option<&'a Spanned<toml::Value>>),
    Revocation(&'a Spanned<toml::Value>),
}

fn first_span(targets: &RawTargets, kind: &Kind<'_>) -> Range<usize> {
    let instant = match kind {
        Kind::Delay(v) | Kind::Suspension(v, _) | Kind::Revocation(v) => v.span(),
    };
    targets
        .prohibitions
        .first()
        .or(targets.instruments.first())
        .map_or(instant, |s| s.span())
}

/// Whether an entity is `ancestor` or one of its subsidiaries, at any depth.
fn descends_from(entities: &[Entity], mut entity: EntityIdx, ancestor: EntityIdx) -> bool {
    for _ in 0..=entities.len() {
        if entity == ancestor {
            return true;
        }
        match entities.get(entity as usize).and_then(|e| e.parent) {
            Some(p) => entity = p,
            None => return false,
        }
    }
    false
}

/// Whether an instrument is `root` or was made under it, at any depth.
fn made_under(instruments: &[Instrument], instrument: InstrumentIdx, root: InstrumentIdx) -> bool {
    let mut stack = vec![instrument];
    let mut seen = HashSet::new();
    while let Some(i) = stack.pop() {
        if i == root {
            return true;
        }
        if seen.insert(i)
            && let Some(ins) = instruments.get(i as usize)
        {
            stack.extend(ins.pursuant_to.iter().copied());
        }
    }
    false
}

/// Lower-case hex without separators, when the text is a SHA-256 digest.
pub fn normalize_sha256(text: &str) -> Option<String> {
    let hex: String = text
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase();
    (hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit())).then_some(hex)
}

fn suggest<'a>(name: &str, known: impl Iterator<Item = &'a str>, what: &str) -> String {
    let mut known: Vec<&str> = known.collect();
    known.sort_unstable();
    let best = known
        .iter()
        .map(|k| (strsim::damerau_levenshtein(name, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min();
    match best {
        Some((_, k)) => format!("did you mean `{k}`?"),
        None if known.is_empty() => format!("no {what} is defined in the loaded files"),
        None if known.len() <= 8 => format!(
            "known {what} ids: {}",
            known
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        None => format!("no {what} with that id is defined in the loaded files"),
    }
}
