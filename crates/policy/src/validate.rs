//! Stage two: raw items from every file to the validated model, reporting every
//! problem at once. One function per item kind; ids are collected first, so that
//! references resolve whatever the file order.

use std::collections::HashSet;
use std::ops::Range;

use rustc_hash::FxHashMap as HashMap;
use toml::Spanned;

use crate::action::{Action, ActionSet};
use crate::country::{Country, CountrySet};
use crate::diagnostic::{Diagnostic, nearest, typo_distance};
use crate::instant::{self, Instant};
use crate::model::*;
use crate::raw::{
    ParsedFile, RawApp, RawEntity, RawExemption, RawInstrument, RawProhibition, RawRegion,
    RawRelief, RawTargets, S,
};
use crate::request::{Signal, SignalSet, Store, check_app_id};

/// The validated model, before indexing.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct Model {
    pub instruments: Vec<Instrument>,
    pub regions: Vec<Region>,
    pub entities: Vec<Entity>,
    pub apps: Vec<App>,
    pub prohibitions: Vec<Prohibition>,
    pub changes: Vec<Change>,
}

/// How many unknown references get a "did you mean" search: the search compares with
/// every known id, and a file with thousands of broken references must still fail fast.
const SUGGESTIONS: usize = 64;

/// Where an id was first defined, for duplicate reports.
type Defined = HashMap<String, (usize, Range<usize>)>;

/// The ids of each kind, by name.
#[derive(Default)]
struct Ids {
    instruments: HashMap<String, u32>,
    regions: HashMap<String, u32>,
    entities: HashMap<String, u32>,
    apps: HashMap<String, u32>,
    prohibitions: HashMap<String, u32>,
    /// The file that defines each instrument.
    file_instrument: Vec<Option<InstrumentIdx>>,
}

struct Validator<'f> {
    files: &'f [ParsedFile],
    diagnostics: Vec<Diagnostic>,
    broken: HashSet<&'f str>,
    ids: Ids,
    suggestions_left: usize,
    /// Identifiers claimed by an app or entity: (kind, normal form) -> (owner, file, span).
    claimed: HashMap<(&'static str, String), (String, usize, Range<usize>)>,
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
        ids: Ids::default(),
        suggestions_left: SUGGESTIONS,
        claimed: HashMap::default(),
    };
    v.collect_ids();
    let mut model = Model::default();
    for (fi, f) in files.iter().enumerate() {
        if let Some(raw) = &f.instrument
            && v.ids.file_instrument[fi].is_some()
        {
            let instrument = v.instrument(fi, raw);
            model.instruments.push(instrument);
        }
    }
    for (fi, f) in files.iter().enumerate() {
        for raw in &f.regions {
            let region = v.region(fi, raw);
            model.regions.push(region);
        }
    }
    for (fi, f) in files.iter().enumerate() {
        for raw in &f.entities {
            let entity = v.entity(fi, raw);
            model.entities.push(entity);
        }
    }
    v.ownership_cycles(&model.entities);
    for (fi, f) in files.iter().enumerate() {
        for raw in &f.apps {
            let app = v.app(fi, raw);
            model.apps.push(app);
        }
    }
    for (fi, f) in files.iter().enumerate() {
        for raw in &f.prohibitions {
            let prohibition = v.prohibition(fi, raw, &model);
            model.prohibitions.push(prohibition);
        }
    }
    for (fi, f) in files.iter().enumerate() {
        v.changes(fi, f, &mut model);
    }
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

    /// An error that refers to another place: where a duplicate was first written.
    fn error_related(
        &mut self,
        file: usize,
        span: Range<usize>,
        message: String,
        hint: String,
        (first_file, first_span, what): (usize, Range<usize>, &str),
    ) {
        let source = &self.files[file].source;
        let first = &self.files[first_file].source;
        self.diagnostics.push(
            Diagnostic::at(source, span, message)
                .with_hint(hint)
                .with_related(first, first_span, what),
        );
    }

    /// A hint naming where something was first written.
    fn first_at(&self, file: usize, span: Range<usize>) -> String {
        let first = Diagnostic::at(&self.files[file].source, span, "");
        let (line, column) = first.line_column().unwrap_or((0, 0));
        format!("{}:{line}:{column}", first.file)
    }

    fn collect_ids(&mut self) {
        let files = self.files;
        let mut d_ins = Defined::default();
        let (mut d_reg, mut d_ent, mut d_app, mut d_pro) = (
            Defined::default(),
            Defined::default(),
            Defined::default(),
            Defined::default(),
        );
        let mut ids = Ids {
            file_instrument: vec![None; files.len()],
            ..Ids::default()
        };
        for (fi, f) in files.iter().enumerate() {
            if let Some(ins) = &f.instrument
                && self.define(&mut d_ins, "instrument", fi, &ins.id)
            {
                let idx = ids.instruments.len() as u32;
                ids.instruments.insert(ins.id.get_ref().clone(), idx);
                ids.file_instrument[fi] = Some(idx);
            }
            type Kind<'k, 's> = (
                &'k mut Defined,
                &'static str,
                &'k mut HashMap<String, u32>,
                Vec<&'s S>,
            );
            let kinds: [Kind<'_, '_>; 4] = [
                (
                    &mut d_reg,
                    "region",
                    &mut ids.regions,
                    f.regions.iter().map(|r| &r.id).collect(),
                ),
                (
                    &mut d_ent,
                    "entity",
                    &mut ids.entities,
                    f.entities.iter().map(|e| &e.id).collect(),
                ),
                (
                    &mut d_app,
                    "app",
                    &mut ids.apps,
                    f.apps.iter().map(|a| &a.id).collect(),
                ),
                (
                    &mut d_pro,
                    "prohibition",
                    &mut ids.prohibitions,
                    f.prohibitions.iter().map(|p| &p.id).collect(),
                ),
            ];
            for (defined, what, map, names) in kinds {
                for id in names {
                    // Every entry gets an index, in file order, even when its id is bad,
                    // so that indices match the model's vectors.
                    let idx = map.len() as u32;
                    if self.define(defined, what, fi, id) {
                        map.insert(id.get_ref().clone(), idx);
                    } else {
                        map.insert(format!("\u{0}{what}{idx}"), idx);
                    }
                }
            }
        }
        self.ids = ids;
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
            let hint = format!(
                "`{name}` is first defined at {}; ids must be unique across the loaded files",
                self.first_at(*first_file, first_span.clone())
            );
            self.error_related(
                file,
                id.span(),
                format!("duplicate {what} id `{name}`"),
                hint,
                (*first_file, first_span.clone(), "first defined here"),
            );
            return false;
        }
        defined.insert(name.clone(), (file, id.span()));
        true
    }

    /// Resolves a reference to an id, reporting unknown ones with a suggestion.
    fn resolve(&mut self, file: usize, what: &str, name: &S) -> Option<u32> {
        let ids = match what {
            "instrument" => &self.ids.instruments,
            "region" => &self.ids.regions,
            "entity" => &self.ids.entities,
            "app" => &self.ids.apps,
            _ => &self.ids.prohibitions,
        };
        if let Some(i) = ids.get(name.get_ref()) {
            return Some(*i);
        }
        if self.broken.contains(name.get_ref().as_str()) {
            // The target failed to parse and was reported already.
            return None;
        }
        let hint = if self.suggestions_left > 0 {
            self.suggestions_left -= 1;
            suggest(
                name.get_ref(),
                ids.keys()
                    .map(String::as_str)
                    .filter(|k| !k.starts_with('\u{0}')),
                what,
            )
        } else {
            format!("no {what} with that id is defined in the loaded files")
        };
        self.error(
            file,
            name.span(),
            format!("unknown {what} `{}`", name.get_ref()),
            hint,
        );
        None
    }

    /// An instant or a window `{ earliest, latest, note }`.
    fn moment(&mut self, file: usize, value: &Spanned<toml::Value>) -> Option<Moment> {
        let span = value.span();
        let toml::Value::Table(table) = value.get_ref() else {
            return self.instant(file, span, value.get_ref()).map(Moment::exact);
        };
        const WINDOW: &str = "write a window as `{ earliest = ..., latest = ..., note = \"why the instant is open\" }`";
        if let Some(key) = table
            .keys()
            .find(|k| !matches!(k.as_str(), "earliest" | "latest" | "note"))
        {
            let hint = match nearest(key, ["earliest", "latest", "note"], typo_distance).first() {
                Some(k) => format!("did you mean `{k}`? {WINDOW}"),
                None => WINDOW.to_owned(),
            };
            self.error(
                file,
                span,
                format!("unknown field `{key}` in a window"),
                hint,
            );
            return None;
        }
        let edge = |this: &mut Self, key: &str| match table.get(key) {
            Some(v) => this.instant(file, span.clone(), v),
            None => {
                this.error(file, span.clone(), format!("window has no `{key}`"), WINDOW);
                None
            }
        };
        let earliest = edge(self, "earliest");
        let latest = edge(self, "latest");
        let note = match table.get("note") {
            Some(toml::Value::String(n)) if !n.trim().is_empty() => Some(n.clone()),
            _ => {
                self.error(
                    file,
                    span.clone(),
                    "window has no `note`".to_owned(),
                    "say in words why the instrument leaves the instant open",
                );
                None
            }
        };
        let (earliest, latest, note) = (earliest?, latest?, note?);
        if latest <= earliest {
            self.error(
                file,
                span,
                format!("window's latest reading {latest} is not after its earliest {earliest}"),
                "give `latest` after `earliest`, or write a single instant when the record fixes it",
            );
            return None;
        }
        Some(Moment {
            earliest,
            latest,
            note: Some(note),
        })
    }

    fn instant(&mut self, file: usize, span: Range<usize>, value: &toml::Value) -> Option<Instant> {
        match instant::from_toml(value) {
            Ok(i) => Some(i),
            Err(e) => {
                let hint = e.hint();
                self.error(file, span, e.to_string(), hint);
                None
            }
        }
    }

    fn instrument(&mut self, fi: usize, raw: &RawInstrument) -> Instrument {
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
            .filter_map(|p| self.resolve(fi, "instrument", p))
            .collect();
        let issued = self.moment(fi, &raw.issued);
        Instrument {
            id: raw.id.get_ref().clone(),
            kind: kind.unwrap_or(InstrumentKind::Statute),
            title: raw.title.clone(),
            authority: raw.authority.clone(),
            pursuant_to,
            citation: raw.citation.clone(),
            source: src.clone(),
            issued: issued.unwrap_or(Moment::exact(Instant::MIN)),
            notes: raw.notes.clone(),
            file: self.files[fi].source.name.clone(),
        }
    }

    fn region(&mut self, fi: usize, raw: &RawRegion) -> Region {
        let mut countries = Vec::new();
        for c in raw.countries.get_ref() {
            match Country::parse(c.get_ref()) {
                Ok(country) => countries.push(country),
                Err(e) => {
                    // The alias table's advice, or a near code or name; else the formats.
                    let hint = e.advice().unwrap_or_else(|| {
                        "use ISO 3166-1 alpha-2 (`PR`) or alpha-3 (`PRI`) codes".to_owned()
                    });
                    self.error(
                        fi,
                        c.span(),
                        format!("unknown country code `{}`", e.0),
                        hint,
                    );
                }
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
        Region {
            id: raw.id.get_ref().clone(),
            name: raw.name.clone(),
            set: countries.iter().copied().collect::<CountrySet>(),
            countries,
            notes: raw.notes.clone(),
        }
    }

    fn entity(&mut self, fi: usize, raw: &RawEntity) -> Entity {
        let parent = raw
            .parent
            .as_ref()
            .and_then(|p| self.resolve(fi, "entity", p));
        let mut publisher_accounts = Vec::new();
        for account in &raw.publisher_accounts {
            let a = account.get_ref();
            let Some(store) = Store::parse(a.store.get_ref()) else {
                self.error(
                    fi,
                    a.store.span(),
                    format!("unknown store `{}`", a.store.get_ref()),
                    "expected `apple` (Apple team id) or `google` (Google Play developer account id)",
                );
                continue;
            };
            match store.normalize_account(a.id.get_ref()) {
                Ok(id) => {
                    if self.claim(fi, "publisher account", id.clone(), raw.id.get_ref(), &a.id) {
                        publisher_accounts.push(PublisherAccount { store, id });
                    }
                }
                Err(message) => self.error(
                    fi,
                    a.id.span(),
                    message,
                    "copy the account id from the store's developer console",
                ),
            }
        }
        Entity {
            id: raw.id.get_ref().clone(),
            name: raw.name.clone(),
            parent,
            publisher_accounts,
            notes: raw.notes.clone(),
        }
    }

    fn ownership_cycles(&mut self, entities: &[Entity]) {
        let mut at_entity = 0;
        for (fi, f) in self.files.iter().enumerate() {
            for raw in &f.entities {
                let start = at_entity;
                at_entity += 1;
                let mut at = entities[start].parent;
                let mut steps = 0;
                while let Some(p) = at {
                    if p as usize == start || steps > entities.len() {
                        let span = raw.parent.as_ref().map_or(raw.id.span(), |p| p.span());
                        self.error(
                            fi,
                            span,
                            format!("entity `{}` is its own ancestor", entities[start].id),
                            "an entity's `parent` chain must end at an entity without a parent",
                        );
                        break;
                    }
                    at = entities[p as usize].parent;
                    steps += 1;
                }
            }
        }
    }

    /// Claims an identifier for one owner; reports it when another already has it.
    fn claim(&mut self, fi: usize, kind: &'static str, key: String, owner: &str, at: &S) -> bool {
        match self.claimed.get(&(kind, key.clone())) {
            Some((other, ofi, ospan)) if other == owner => {
                let hint = format!(
                    "first listed at {}; list each identifier once (letter case aside: identifiers match whatever their case)",
                    self.first_at(*ofi, ospan.clone())
                );
                let message = format!("{kind} `{}` is listed twice for `{owner}`", at.get_ref());
                let first = (*ofi, ospan.clone(), "first listed here");
                self.error_related(fi, at.span(), message, hint, first);
                false
            }
            Some((other, ofi, ospan)) => {
                let hint = format!(
                    "`{other}` claims it at {}; an identifier names one app or owner (letter case aside)",
                    self.first_at(*ofi, ospan.clone())
                );
                let message = format!(
                    "{kind} `{}` is claimed by `{other}` and `{owner}`",
                    at.get_ref()
                );
                let first = (*ofi, ospan.clone(), "first claimed here");
                self.error_related(fi, at.span(), message, hint, first);
                false
            }
            None => {
                self.claimed
                    .insert((kind, key), (owner.to_owned(), fi, at.span()));
                true
            }
        }
    }

    fn app(&mut self, fi: usize, raw: &RawApp) -> App {
        let owner = self.resolve(fi, "entity", &raw.owner);
        let app_id = raw.id.get_ref();
        let mut lists: [Vec<String>; 4] = Default::default();
        // (what, values, whether they are SHA-256 digests)
        let kinds = [
            ("iOS bundle id", &raw.ios, false),
            ("Android package", &raw.android, false),
            ("signing certificate", &raw.signing_cert_sha256, true),
            ("constituent-code digest", &raw.code_sha256, true),
        ];
        for (list, (kind, values, digest)) in lists.iter_mut().zip(kinds) {
            for value in values {
                let checked = if digest {
                    normalize_sha256(value.get_ref()).ok_or_else(|| {
                        "write 64 hexadecimal digits, optionally in colon-separated pairs"
                            .to_owned()
                    })
                } else {
                    check_app_id(value.get_ref()).map(|()| value.get_ref().clone())
                };
                let normal = match checked {
                    Ok(n) => n,
                    Err(why) => {
                        self.error(
                            fi,
                            value.span(),
                            format!("invalid {kind} `{}`", value.get_ref().escape_debug()),
                            why,
                        );
                        continue;
                    }
                };
                // Identifiers are matched ignoring letter case: claim the folded form.
                if self.claim(fi, kind, normal.to_ascii_lowercase(), app_id, value) {
                    list.push(normal);
                }
            }
        }
        for team in &raw.apple_team_ids {
            if let Err(message) = Store::Apple.normalize_account(team.get_ref()) {
                self.error(
                    fi,
                    team.span(),
                    message,
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
                "give at least one of `ios`, `android`, `signing_cert_sha256` or `code_sha256`; an app known only by its publisher account is covered through its owner's `publisher_accounts`",
            );
        }
        let [ios, android, signing_cert_sha256, code_sha256] = lists;
        let lists = AppLists {
            ios,
            android,
            apple_team_ids: raw
                .apple_team_ids
                .iter()
                .map(|t| t.get_ref().clone())
                .collect(),
            signing_cert_sha256,
            code_sha256,
            notes: raw.notes.clone(),
        };
        App::new(app_id, &raw.name, owner.unwrap_or(0), &lists).unwrap_or_else(|e| {
            self.error(
                fi,
                raw.id.span(),
                format!("app `{app_id}`: {e}"),
                "describe an app with more identifiers than that as several apps",
            );
            App::default()
        })
    }

    fn prohibition(&mut self, fi: usize, raw: &RawProhibition, model: &Model) -> Prohibition {
        let instrument = self.owning_instrument(fi, "prohibition", raw.id.span(), raw.id.get_ref());
        let apps: Vec<AppIdx> = raw
            .apps
            .iter()
            .filter_map(|a| self.resolve(fi, "app", a))
            .collect();
        let owners: Vec<EntityIdx> = raw
            .owners
            .iter()
            .filter_map(|o| self.resolve(fi, "entity", o))
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
        let region = self.resolve(fi, "region", &raw.region);
        let jurisdiction = match &raw.jurisdiction {
            Some(groups) => self.jurisdiction(fi, groups),
            None => vec![SignalSet::ALL],
        };
        let effective = self.moment(fi, &raw.effective);
        let end = raw.end.as_ref().and_then(|e| self.moment(fi, e));
        if let (Some(start), Some(stop), Some(end_raw)) = (&effective, &end, &raw.end)
            && stop.earliest <= start.latest
        {
            self.error(
                fi,
                end_raw.span(),
                format!(
                    "end {} is not after the effective instant {}",
                    stop.earliest, start.latest
                ),
                "a prohibition must end after it takes effect, under every reading of a window",
            );
        }
        let mut covered = apps.clone();
        if !owners.is_empty() {
            // The entities under the owners, each found once, then their apps.
            let under: Vec<bool> = (0..model.entities.len())
                .map(|e| {
                    owners
                        .iter()
                        .any(|&o| descends_from(&model.entities, e as EntityIdx, o))
                })
                .collect();
            for (ai, app) in model.apps.iter().enumerate() {
                if under.get(app.owner as usize).copied().unwrap_or(false) {
                    covered.push(ai as AppIdx);
                }
            }
        }
        covered.sort_unstable();
        covered.dedup();
        Prohibition {
            id: raw.id.get_ref().clone(),
            item: raw.item.clone(),
            instrument: instrument.unwrap_or(0),
            apps,
            owners,
            covered,
            actions,
            region: region.unwrap_or(0),
            jurisdiction,
            effective: effective.unwrap_or(Moment::exact(Instant::MIN)),
            end,
            text: raw.text.clone(),
            notes: raw.notes.clone(),
        }
    }

    /// `jurisdiction = [["server_country"], ["storefront", ...]]`.
    fn jurisdiction(
        &mut self,
        fi: usize,
        groups: &Spanned<Vec<Spanned<Vec<S>>>>,
    ) -> Vec<SignalSet> {
        let names = Signal::ALL.map(|s| format!("`{}`", s.as_str())).join(", ");
        if groups.get_ref().is_empty() {
            self.error(
                fi,
                groups.span(),
                "`jurisdiction` has no group".to_owned(),
                format!("give one or more groups of signals, e.g. `[[\"server_country\"], [\"storefront\", \"ip_country\"]]`, or leave the key out to accept any signal; signals: {names}"),
            );
        }
        let mut seen = SignalSet::default();
        let mut out = Vec::new();
        for group in groups.get_ref() {
            let mut set = SignalSet::default();
            if group.get_ref().is_empty() {
                self.error(
                    fi,
                    group.span(),
                    "empty signal group".to_owned(),
                    format!("a group lists one or more of {names}"),
                );
            }
            for name in group.get_ref() {
                match Signal::parse(name.get_ref()) {
                    Some(s) if seen.contains(s) => self.error(
                        fi,
                        name.span(),
                        format!("signal `{s}` is in two groups"),
                        "each signal belongs to at most one group of a jurisdiction test",
                    ),
                    Some(s) => {
                        seen.insert(s);
                        set.insert(s);
                    }
                    None => {
                        let hint = suggest(
                            name.get_ref(),
                            Signal::ALL.iter().map(|s| s.as_str()),
                            "signal",
                        );
                        self.error(
                            fi,
                            name.span(),
                            format!("unknown signal `{}`", name.get_ref()),
                            hint,
                        );
                    }
                }
            }
            if !set.is_empty() {
                out.push(set);
            }
        }
        out
    }

    fn owning_instrument(
        &mut self,
        fi: usize,
        what: &str,
        span: Range<usize>,
        id: &str,
    ) -> Option<InstrumentIdx> {
        let found = self.ids.file_instrument[fi];
        if found.is_none() && self.files[fi].instrument.is_none() {
            self.error(
                fi,
                span,
                format!("{what} `{id}` is not in an instrument's file"),
                "add an `[instrument]` table to this file, or move the entry into the file of the instrument that makes it",
            );
        }
        found
    }

    /// Every change item of one file: delays, injunctions, non-enforcement orders,
    /// revocations and exemptions.
    fn changes(&mut self, fi: usize, f: &ParsedFile, model: &mut Model) {
        for d in &f.delays {
            let kind = self
                .moment(fi, &d.effective)
                .map(|effective| ChangeKind::Delay { effective });
            self.change(
                fi,
                model,
                "delay",
                &d.targets(),
                &d.effective,
                kind,
                &d.text,
                &d.notes,
            );
        }
        for (items, relief, what) in [
            (&f.injunctions, Relief::Injunction, "injunction"),
            (
                &f.non_enforcements,
                Relief::NonEnforcement,
                "non-enforcement",
            ),
        ] {
            for r in items {
                let kind = self.relief(fi, r, relief);
                self.change(
                    fi,
                    model,
                    what,
                    &r.targets(),
                    &r.from,
                    kind,
                    &r.text,
                    &r.notes,
                );
            }
        }
        for r in &f.revocations {
            let kind = self
                .moment(fi, &r.from)
                .map(|from| ChangeKind::Revocation { from });
            self.change(
                fi,
                model,
                "revocation",
                &r.targets(),
                &r.from,
                kind,
                &r.text,
                &r.notes,
            );
        }
        for e in &f.exemptions {
            let kind = self.exemption(fi, e);
            self.change(
                fi,
                model,
                "exemption",
                &e.targets(),
                &e.from,
                kind,
                &e.text,
                &e.notes,
            );
        }
    }

    fn relief(&mut self, fi: usize, raw: &RawRelief, relief: Relief) -> Option<ChangeKind> {
        let from = self.moment(fi, &raw.from);
        let until = match &raw.until {
            Some(u) => Some(self.moment(fi, u)?),
            None => None,
        };
        if let (Some(f), Some(u), Some(ur)) = (&from, &until, &raw.until)
            && u.earliest <= f.latest
        {
            self.error(
                fi,
                ur.span(),
                format!("relief ends at {}, not after it starts at {}", u.earliest, f.latest),
                "`until` must be after `from` under every reading of a window; leave `until` out for open-ended relief",
            );
            return None;
        }
        Some(ChangeKind::Relief {
            relief,
            from: from?,
            until,
        })
    }

    fn exemption(&mut self, fi: usize, raw: &RawExemption) -> Option<ChangeKind> {
        if raw.apps.get_ref().is_empty() {
            self.error(
                fi,
                raw.apps.span(),
                "exemption names no app".to_owned(),
                "list the exempted apps' ids in `apps = [...]`",
            );
        }
        let mut apps: Vec<AppIdx> = raw
            .apps
            .get_ref()
            .iter()
            .filter_map(|a| self.resolve(fi, "app", a))
            .collect();
        apps.sort_unstable();
        apps.dedup();
        let from = self.moment(fi, &raw.from)?;
        Some(ChangeKind::Exemption { apps, from })
    }

    #[allow(clippy::too_many_arguments)]
    fn change(
        &mut self,
        fi: usize,
        model: &mut Model,
        what: &str,
        targets: &RawTargets,
        instant: &Spanned<toml::Value>,
        kind: Option<ChangeKind>,
        text: &Option<String>,
        notes: &[String],
    ) {
        let anchor = targets
            .prohibitions
            .first()
            .or(targets.instruments.first())
            .map_or(instant.span(), |s| s.span());
        let instrument = self.ids.file_instrument[fi];
        if instrument.is_none() {
            self.error(
                fi,
                anchor.clone(),
                format!("{what} is not in an instrument's file"),
                "add an `[instrument]` table to this file, or move the change into the file of the instrument that makes it",
            );
        }
        let mut resolved: Vec<ProhibitionIdx> = targets
            .prohibitions
            .iter()
            .filter_map(|p| self.resolve(fi, "prohibition", p))
            .collect();
        for name in &targets.instruments {
            if let Some(root) = self.resolve(fi, "instrument", name) {
                for (pi, p) in model.prohibitions.iter().enumerate() {
                    if made_under(&model.instruments, p.instrument, root) {
                        resolved.push(pi as ProhibitionIdx);
                    }
                }
            }
        }
        if targets.prohibitions.is_empty() && targets.instruments.is_empty() {
            self.error(
                fi,
                anchor,
                format!("{what} names no target"),
                "name the prohibitions with `prohibitions = [...]` or whole instruments with `instruments = [...]`",
            );
        }
        resolved.sort_unstable();
        resolved.dedup();
        if let (Some(instrument), Some(kind)) = (instrument, kind) {
            model.changes.push(Change {
                instrument,
                kind,
                targets: resolved,
                text: text.clone(),
                notes: notes.to_vec(),
            });
        }
    }
}

/// Whether an entity is `ancestor` or one of its subsidiaries, at any depth.
pub(crate) fn descends_from(
    entities: &[Entity],
    mut entity: EntityIdx,
    ancestor: EntityIdx,
) -> bool {
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
    is_sha256(text).then(|| {
        let mut hex = String::with_capacity(64);
        write_sha256(text, &mut hex);
        hex
    })
}

/// Whether [`normalize_sha256`] accepts `text`: 64 hex digits once `:` separators are
/// left out. Allocates nothing.
pub(crate) fn is_sha256(text: &str) -> bool {
    let mut digits = 0usize;
    for b in text.bytes() {
        match b {
            b':' => {}
            b if b.is_ascii_hexdigit() => digits += 1,
            _ => return false,
        }
    }
    digits == 64
}

/// Writes the normal form of a digest [`is_sha256`] accepts into `out` (cleared first),
/// reusing its memory: lower-case hex, no separators.
pub(crate) fn write_sha256(text: &str, out: &mut String) {
    out.clear();
    out.extend(
        text.bytes()
            .filter(|&b| b != b':')
            .map(|b| char::from(b.to_ascii_lowercase())),
    );
}

fn suggest<'a>(name: &str, known: impl Iterator<Item = &'a str>, what: &str) -> String {
    let known: Vec<&str> = known.collect();
    let best = nearest(name, known.iter().copied(), typo_distance)
        .into_iter()
        .min();
    match best {
        Some(k) => format!("did you mean `{k}`?"),
        None if known.is_empty() => format!("no {what} is defined in the loaded files"),
        None if known.len() <= 8 => {
            let mut few = known;
            few.sort_unstable();
            format!(
                "known {what} ids: {}",
                few.iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
        None => format!("no {what} with that id is defined in the loaded files"),
    }
}

#[cfg(test)]
mod tests {
    use super::{is_sha256, normalize_sha256, write_sha256};
    use crate::{Policy, Source};

    /// A policy whose one app lists `android` packages.
    fn app_with_packages(android: usize) -> Result<Policy, crate::Diagnostics> {
        let packages: Vec<String> = (0..android).map(|i| format!("\"a.p{i}\"")).collect();
        let text = format!(
            "[instrument]\nid = \"o\"\nkind = \"statute\"\ntitle = \"O\"\nauthority = \"A\"\ncitation = \"1 XR 1\"\nsource = \"https://example.org/o\"\nissued = 2021-01-01T00:00:00Z\n\n[[region]]\nid = \"US\"\nname = \"US\"\ncountries = [\"US\"]\n\n[[entity]]\nid = \"e\"\nname = \"E\"\n\n[[app]]\nid = \"a\"\nname = \"A\"\nowner = \"e\"\nandroid = [{}]\n",
            packages.join(", ")
        );
        Policy::from_sources([Source::new("many.toml", text)])
    }

    #[test]
    fn an_app_lists_at_most_65535_identifiers_of_a_kind() {
        let most = app_with_packages(crate::model::MAX_APP_LIST).unwrap();
        let app = &most.apps()[0];
        assert_eq!(app.android().len(), 65_535);
        assert_eq!(app.android().next_back(), Some("a.p65534"));
        let d = app_with_packages(crate::model::MAX_APP_LIST + 1).unwrap_err();
        let rendered = d.render();
        assert!(
            rendered.contains(
                "app `a`: it lists 65536 Android packages; an app lists at most 65535 of each"
            ),
            "{rendered}"
        );
        assert!(rendered.contains("many.toml:"), "{rendered}");
    }

    #[test]
    fn digests_are_64_hex_digits_in_lower_case_with_colons_left_out() {
        let upper = "AB".repeat(32);
        assert_eq!(normalize_sha256(&upper), Some("ab".repeat(32)));
        let colons = vec!["Ab"; 32].join(":");
        assert_eq!(normalize_sha256(&colons), Some("ab".repeat(32)));
        let mut kept = "stale".to_owned();
        write_sha256(&colons, &mut kept);
        assert_eq!(kept, "ab".repeat(32));
        let a = |n: usize| "a".repeat(n);
        for bad in [
            String::new(),
            a(63),
            a(65),
            a(63) + "g",
            a(62) + "é",
            a(64) + " ",
            a(63) + ":",
        ] {
            assert!(!is_sha256(&bad), "{bad:?}");
            assert_eq!(normalize_sha256(&bad), None, "{bad:?}");
        }
    }
}
