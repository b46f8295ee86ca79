//! What is prohibited when, as a picture: apps and actions down the side, time along the
//! bottom, spans coloured by answer, and a mark at each instrument's issue with its citation.
//!
//! The rows are the policy's own time lines (from [`crate::domain::walk`]), under one
//! posture; rows that nothing ever touches are left out, and apps or actions whose rows are
//! identical share one. SVG stands alone (hover a span for its details: every element
//! carries a `<title>`); the HTML page embeds the SVG with a details panel and the list of
//! instruments, and needs nothing from the network.

use std::fmt::Write as _;

use chrono::{Datelike, TimeZone, Utc};
use policy::{Action, Instant, Policy, Posture};

use crate::domain::{self, Answer, Domain, Segment};

/// How to draw.
#[derive(Clone, Debug)]
pub struct Options {
    /// The posture whose answers are drawn.
    pub posture: Posture,
    /// The start of the time axis; by default a little before the first instrument.
    pub from: Option<Instant>,
    /// The end of the time axis; by default a little after the last instant any
    /// instrument fixes.
    pub until: Option<Instant>,
    /// The heading.
    pub title: String,
    /// How time maps to width.
    pub scale: Scale,
}

/// How time maps to width.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Scale {
    /// Each stretch between two instants the picture shows gets a width that grows with the
    /// logarithm of its length, so that days around a flurry of orders stay visible next to
    /// years of calm. Ticks show where the dates fall.
    #[default]
    Events,
    /// Width proportional to time.
    Linear,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            posture: Posture::default(),
            from: None,
            until: None,
            title: "What is prohibited when".to_owned(),
            scale: Scale::default(),
        }
    }
}

/// The colour classes of the picture, in legend order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Denied.
    Deny,
    /// The readings of a window disagree.
    Uncertain,
    /// A court order bars the prohibition.
    Enjoined,
    /// An executive order defers enforcement.
    NotEnforced,
    /// Announced, not yet in force.
    Pending,
    /// Exempt, revoked or lapsed.
    Ended,
}

impl Class {
    const ALL: [Class; 6] = [
        Class::Deny,
        Class::Uncertain,
        Class::Enjoined,
        Class::NotEnforced,
        Class::Pending,
        Class::Ended,
    ];

    fn of(answer: &Answer) -> Option<Class> {
        if answer.uncertain {
            return Some(Class::Uncertain);
        }
        if answer.decision == "deny" {
            return Some(Class::Deny);
        }
        match answer.because {
            Some("enjoined") => Some(Class::Enjoined),
            Some("not-enforced") => Some(Class::NotEnforced),
            Some("not-yet-in-force") => Some(Class::Pending),
            Some("exempt" | "revoked" | "lapsed") => Some(Class::Ended),
            _ => None,
        }
    }

    /// The CSS class.
    pub fn name(self) -> &'static str {
        match self {
            Class::Deny => "deny",
            Class::Uncertain => "uncertain",
            Class::Enjoined => "enjoined",
            Class::NotEnforced => "not-enforced",
            Class::Pending => "pending",
            Class::Ended => "ended",
        }
    }

    fn legend(self) -> &'static str {
        match self {
            Class::Deny => "denied",
            Class::Uncertain => "uncertain (the readings of a window disagree)",
            Class::Enjoined => "enjoined",
            Class::NotEnforced => "not enforced",
            Class::Pending => "announced, not yet in force",
            Class::Ended => "exempt, revoked or lapsed",
        }
    }
}

/// A row: apps and actions with one time line at one place.
#[derive(Clone, Debug)]
pub struct Row {
    /// The apps (listed app ids, or owners' unlisted apps).
    pub apps: Vec<String>,
    /// The actions.
    pub actions: Vec<Action>,
    /// The place, as people read it.
    pub place: String,
    /// The time line.
    pub segments: Vec<Segment>,
}

/// A mark at an instrument's issue.
#[derive(Clone, Debug)]
pub struct Mark {
    /// Issued (the earliest reading of a window).
    pub at: Instant,
    /// The latest reading, when the time of issue is a window.
    pub latest: Option<Instant>,
    /// The instrument's id.
    pub id: String,
    /// Its title.
    pub title: String,
    /// Its citation.
    pub citation: String,
    /// Where to read it.
    pub source: String,
}

/// A picture of a policy set.
#[derive(Clone, Debug)]
pub struct Timeline {
    /// The heading.
    pub title: String,
    /// The posture drawn.
    pub posture: Posture,
    /// The time axis.
    pub from: Instant,
    /// The time axis.
    pub until: Instant,
    /// The rows, by app group, place, action.
    pub rows: Vec<Row>,
    /// The instruments, by time of issue.
    pub marks: Vec<Mark>,
    /// The axis: instants and their positions (0 to 1), increasing.
    axis: Vec<(i64, f64)>,
    scale: Scale,
}

const DAY_NANOS: i64 = 86_400 * 1_000_000_000;

/// Builds the picture of `policy`.
pub fn build(policy: &Policy, options: &Options) -> Timeline {
    let domain = Domain::new(&[policy]);
    let mut rows: Vec<Row> = Vec::new();
    for group in &domain.groups {
        for place in domain.places.iter().filter(|p| !p.is_elsewhere()) {
            let mut by_line: Vec<(Vec<Segment>, Vec<Action>)> = Vec::new();
            for action in Action::ALL {
                let Some(mut request) = group.request(action, place.country(), &domain.unlisted)
                else {
                    continue;
                };
                let line = domain::walk(policy, &mut request, options.posture);
                if line.iter().all(|s| s.answer.is_untouched()) {
                    continue;
                }
                match by_line.iter_mut().find(|(l, _)| *l == line) {
                    Some((_, actions)) => actions.push(action),
                    None => by_line.push((line, vec![action])),
                }
            }
            for (segments, actions) in by_line {
                let place = place.label();
                match rows
                    .iter_mut()
                    .find(|r| r.actions == actions && r.place == place && r.segments == segments)
                {
                    Some(row) => {
                        let known: std::collections::HashSet<String> =
                            row.apps.iter().cloned().collect();
                        row.apps
                            .extend(group.labels().into_iter().filter(|a| !known.contains(a)));
                    }
                    None => rows.push(Row {
                        apps: group.labels(),
                        actions,
                        place,
                        segments,
                    }),
                }
            }
        }
    }
    let mut marks: Vec<Mark> = policy
        .instruments()
        .iter()
        .map(|i| Mark {
            at: i.issued.earliest,
            latest: i.issued.is_window().then_some(i.issued.latest),
            id: i.id.clone(),
            title: i.title.clone(),
            citation: i.citation.clone(),
            source: i.source.clone(),
        })
        .collect();
    marks.sort_by(|a, b| (a.at, &a.id).cmp(&(b.at, &b.id)));
    let events = domain::events(policy);
    let first = events.first().map_or(Instant::from_nanos(0), |e| e.at);
    let last = events.last().map_or(first, |e| e.at);
    let span = (last.as_nanos() - first.as_nanos()).max(DAY_NANOS);
    let from = options
        .from
        .unwrap_or(Instant::from_nanos(first.as_nanos() - span / 20));
    let until = options
        .until
        .unwrap_or(Instant::from_nanos(last.as_nanos() + span / 10));
    let until = if until > from {
        until
    } else {
        Instant::from_nanos(from.as_nanos() + DAY_NANOS)
    };
    let mut stops: Vec<i64> = vec![from.as_nanos(), until.as_nanos()];
    stops.extend(
        rows.iter()
            .flat_map(|r| r.segments.iter().map(|s| s.from.as_nanos())),
    );
    stops.extend(marks.iter().map(|m| m.at.as_nanos()));
    Timeline {
        title: options.title.clone(),
        posture: options.posture,
        from,
        until,
        rows,
        marks,
        axis: axis(stops, from.as_nanos(), until.as_nanos(), options.scale),
        scale: options.scale,
    }
}

/// The positions of the axis' stops: linear, or each stretch weighted by the logarithm of
/// its length in days (with a floor, so that an hour's window is still a sliver).
fn axis(mut stops: Vec<i64>, from: i64, until: i64, scale: Scale) -> Vec<(i64, f64)> {
    if scale == Scale::Linear {
        return vec![(from, 0.0), (until, 1.0)];
    }
    stops.retain(|&t| t >= from && t <= until);
    stops.sort_unstable();
    stops.dedup();
    let weights: Vec<f64> = stops
        .windows(2)
        .map(|w| 0.12 + ((w[1] - w[0]) as f64 / DAY_NANOS as f64).ln_1p())
        .collect();
    let total: f64 = weights.iter().sum();
    let mut out = Vec::with_capacity(stops.len());
    let mut at = 0.0;
    out.push((stops[0], 0.0));
    for (w, &t) in weights.iter().zip(&stops[1..]) {
        at += w / total;
        out.push((t, at));
    }
    out
}

/// XML text and attribute escaping.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `2020-09-21 03:59Z`.
fn short(at: Instant) -> String {
    at.to_utc().format("%Y-%m-%d %H:%MZ").to_string()
}

const WIDTH: f64 = 1400.0;
const LABEL: f64 = 380.0;
const RIGHT: f64 = 30.0;
const ROW: f64 = 22.0;
const TOP: f64 = 78.0;
const CHAR: f64 = 6.2;

impl Timeline {
    fn x(&self, at: Instant) -> f64 {
        let t = at
            .as_nanos()
            .clamp(self.from.as_nanos(), self.until.as_nanos());
        let i = self
            .axis
            .partition_point(|(s, _)| *s <= t)
            .clamp(1, self.axis.len() - 1);
        let ((t0, x0), (t1, x1)) = (self.axis[i - 1], self.axis[i]);
        let f = if t1 > t0 {
            (t - t0) as f64 / (t1 - t0) as f64
        } else {
            0.0
        };
        LABEL + (x0 + f * (x1 - x0)) * (WIDTH - LABEL - RIGHT)
    }

    fn row_label(row: &Row) -> String {
        let apps = if row.apps.len() > 3 {
            format!(
                "{} and {} more",
                row.apps[..3].join(", "),
                row.apps.len() - 3
            )
        } else {
            row.apps.join(", ")
        };
        let actions: Vec<&str> = row.actions.iter().map(|a| a.as_str()).collect();
        format!("{apps} · {}", actions.join(", "))
    }

    /// The picture as a standalone SVG document.
    pub fn to_svg(&self) -> String {
        let mut svg = String::new();
        let rows_bottom = TOP + ROW * self.rows.len() as f64;
        // Instrument labels go in lanes below the axis, each in the first lane where it
        // does not overlap the previous label.
        let mut lanes: Vec<f64> = Vec::new();
        let mut placed: Vec<(usize, f64)> = Vec::new();
        for m in &self.marks {
            let x = self.x(m.at);
            let (start, end) = label_extent(x, &m.id);
            let lane = match lanes.iter().position(|&taken| taken < start) {
                Some(l) => l,
                None => {
                    lanes.push(f64::MIN);
                    lanes.len() - 1
                }
            };
            lanes[lane] = end + 8.0;
            placed.push((lane, x));
        }
        let axis = rows_bottom + 8.0;
        let height = axis + 34.0 + 16.0 * lanes.len() as f64 + 12.0;
        let _ = write!(
            svg,
            r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height:.0}" width="{WIDTH}" height="{height:.0}" font-family="system-ui, -apple-system, 'Segoe UI', sans-serif" font-size="12">
<title>{title}</title>
<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="6" height="6" fill="#f4b4b4"/><rect width="3" height="6" fill="#c62828"/></pattern></defs>
<style>
.deny{{fill:#c62828}} .uncertain{{fill:url(#hatch)}} .enjoined{{fill:#1565c0}} .not-enforced{{fill:#ef8c00}} .pending{{fill:#cfcfcf}} .ended{{fill:#a5d6a7}}
.label{{fill:#222}} .place{{fill:#777}} .axis{{stroke:#444}} .tick{{fill:#444}} .mark{{stroke:#555;stroke-dasharray:2 3}} .mark-label{{fill:#333;font-size:11px}} .band{{fill:#f5f5f5}}
</style>
<rect width="100%" height="100%" fill="#fff"/>
<text x="12" y="24" font-size="17" font-weight="600">{title}</text>
<text x="12" y="44" class="place">posture: {boundaries} reading of windows, non-enforcement orders {ne}; times in UTC; {scale}</text>
"##,
            title = esc(&self.title),
            boundaries = self.posture.boundaries.as_str(),
            scale = match self.scale {
                Scale::Events =>
                    "time stretched around events (widths grow with the logarithm of durations)",
                Scale::Linear => "time to scale",
            },
            ne = match self.posture.non_enforcement {
                policy::NonEnforcement::Honour => "honoured",
                policy::NonEnforcement::Ignore => "ignored",
            },
        );
        // Legend.
        let mut lx = 12.0;
        for class in Class::ALL {
            let _ = writeln!(
                svg,
                r#"<rect x="{lx:.1}" y="54" width="14" height="12" class="{}"/><text x="{:.1}" y="64">{}</text>"#,
                class.name(),
                lx + 18.0,
                esc(class.legend())
            );
            lx += 18.0 + CHAR * class.legend().len() as f64 + 18.0;
        }
        // Rows.
        for (i, row) in self.rows.iter().enumerate() {
            let y = TOP + ROW * i as f64;
            if i % 2 == 0 {
                let _ = writeln!(
                    svg,
                    r#"<rect x="0" y="{y:.1}" width="{WIDTH}" height="{ROW}" class="band"/>"#
                );
            }
            let label = Self::row_label(row);
            let _ = writeln!(
                svg,
                r#"<text x="12" y="{:.1}" class="label">{}<title>{}</title></text>"#,
                y + 15.0,
                esc(&clip(&label, 52)),
                esc(&format!("{}\n{}", label, row.place))
            );
            for (k, s) in row.segments.iter().enumerate() {
                let Some(class) = Class::of(&s.answer) else {
                    continue;
                };
                let end = row.segments.get(k + 1).map(|n| n.from);
                let x0 = self.x(s.from);
                let x1 = end.map_or(WIDTH - RIGHT, |e| self.x(e));
                if x1 <= LABEL || x0 >= WIDTH - RIGHT {
                    continue;
                }
                let detail = format!(
                    "{}\n{}\nfrom {} until {}\n{}",
                    label,
                    row.place,
                    if s.from == Instant::MIN {
                        "the beginning".to_owned()
                    } else {
                        short(s.from)
                    },
                    end.map_or_else(|| "for ever".to_owned(), short),
                    s.answer.describe()
                );
                let _ = writeln!(
                    svg,
                    r#"<rect x="{x0:.2}" y="{:.1}" width="{:.2}" height="{:.1}" class="{}" data-detail="{}"><title>{}</title></rect>"#,
                    y + 3.0,
                    (x1 - x0).max(1.5),
                    ROW - 6.0,
                    class.name(),
                    esc(&detail),
                    esc(&detail)
                );
            }
        }
        // Axis and ticks.
        let _ = writeln!(
            svg,
            r#"<line x1="{LABEL}" y1="{axis:.1}" x2="{:.1}" y2="{axis:.1}" class="axis"/>"#,
            WIDTH - RIGHT
        );
        for (at, text) in self.ticks() {
            let x = self.x(at);
            let _ = writeln!(
                svg,
                r#"<line x1="{x:.2}" y1="{axis:.1}" x2="{x:.2}" y2="{:.1}" class="axis"/><text x="{x:.2}" y="{:.1}" text-anchor="middle" class="tick">{}</text>"#,
                axis + 5.0,
                axis + 18.0,
                esc(&text)
            );
        }
        // Instrument marks.
        for (m, (lane, x)) in self.marks.iter().zip(&placed) {
            if m.at < self.from || m.at > self.until {
                continue;
            }
            let ly = axis + 36.0 + 16.0 * *lane as f64;
            let (start, _) = label_extent(*x, &m.id);
            let (tx, anchor) = if start < *x {
                (x - 2.0, "end")
            } else {
                (x + 2.0, "start")
            };
            let issued = match m.latest {
                Some(l) => format!("issued between {} and {}", short(m.at), short(l)),
                None => format!("issued {}", short(m.at)),
            };
            let detail = format!(
                "{}\n{}\n{}\n{}\n{}",
                m.id, m.title, m.citation, issued, m.source
            );
            let _ = writeln!(
                svg,
                r#"<g data-detail="{d}"><title>{d}</title><line x1="{x:.2}" y1="{TOP}" x2="{x:.2}" y2="{:.1}" class="mark"/><text x="{tx:.2}" y="{ly:.1}" text-anchor="{anchor}" class="mark-label">{}</text></g>"#,
                ly - 10.0,
                esc(&m.id),
                d = esc(&detail),
            );
        }
        svg.push_str("</svg>\n");
        svg
    }

    /// Year ticks, or month ticks on an axis shorter than three years.
    fn ticks(&self) -> Vec<(Instant, String)> {
        let (a, b) = (self.from.to_utc(), self.until.to_utc());
        let monthly = (b - a).num_days() < 3 * 365;
        let mut out = Vec::new();
        let (mut y, mut m) = (a.year(), if monthly { a.month() } else { 1 });
        while let Some(t) = Utc.with_ymd_and_hms(y, m, 1, 0, 0, 0).single() {
            if t > b {
                break;
            }
            if t >= a
                && let Some(at) = Instant::from_utc(t)
            {
                let text = if monthly {
                    t.format("%b %Y").to_string()
                } else {
                    y.to_string()
                };
                out.push((at, text));
            }
            if monthly {
                m += 1;
                if m > 12 {
                    m = 1;
                    y += 1;
                }
            } else {
                y += 1;
            }
        }
        // Keep labels apart: at most one tick per 70 pixels.
        let mut kept: Vec<(Instant, String)> = Vec::new();
        for (at, text) in out {
            if kept
                .last()
                .is_none_or(|(k, _)| self.x(at) - self.x(*k) >= 70.0)
            {
                kept.push((at, text));
            }
        }
        kept
    }

    /// A self-contained HTML page: the SVG, a details panel that follows the pointer, and
    /// the instruments with their citations.
    pub fn to_html(&self) -> String {
        let mut html = String::new();
        let _ = write!(
            html,
            r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body{{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:16px;color:#222}}
#detail{{position:fixed;pointer-events:none;background:#fffbe6;border:1px solid #bbb;padding:6px 8px;font-size:13px;white-space:pre-line;display:none;max-width:520px;box-shadow:0 2px 6px rgba(0,0,0,.2)}}
table{{border-collapse:collapse;margin-top:16px;font-size:13px}} td,th{{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}}
[data-detail]:hover{{opacity:.8;cursor:default}}
</style>
</head>
<body>
"#,
            title = esc(&self.title)
        );
        html.push_str(&self.to_svg());
        html.push_str("<div id=\"detail\"></div>\n<table>\n<tr><th>Issued (UTC)</th><th>Instrument</th><th>Title</th><th>Citation</th></tr>\n");
        for m in &self.marks {
            let issued = match m.latest {
                Some(l) => format!("{} .. {}", short(m.at), short(l)),
                None => short(m.at),
            };
            let _ = writeln!(
                html,
                r#"<tr><td>{}</td><td><a href="{}">{}</a></td><td>{}</td><td>{}</td></tr>"#,
                esc(&issued),
                esc(&m.source),
                esc(&m.id),
                esc(&m.title),
                esc(&m.citation)
            );
        }
        html.push_str(
            r#"</table>
<script>
const panel = document.getElementById('detail');
document.querySelectorAll('[data-detail]').forEach(el => {
  el.querySelectorAll('title').forEach(t => t.remove());
  el.addEventListener('mousemove', e => {
    panel.textContent = el.getAttribute('data-detail');
    panel.style.display = 'block';
    panel.style.left = Math.min(e.clientX + 14, window.innerWidth - 540) + 'px';
    panel.style.top = (e.clientY + 14) + 'px';
  });
  el.addEventListener('mouseleave', () => { panel.style.display = 'none'; });
});
</script>
</body>
</html>
"#,
        );
        html
    }
}

/// Where an instrument's label at `x` starts and ends: to the right of its mark, or to the
/// left where it would run off the picture.
fn label_extent(x: f64, text: &str) -> (f64, f64) {
    let width = CHAR * text.chars().count() as f64;
    if x + 2.0 + width > WIDTH - 4.0 {
        (x - 2.0 - width, x)
    } else {
        (x, x + 2.0 + width)
    }
}

fn clip(text: &str, n: usize) -> String {
    if text.chars().count() <= n {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(n - 1).collect();
    out.push('…');
    out
}
