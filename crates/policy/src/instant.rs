//! Instants on the time line, and the ways a policy file may write them.

use std::fmt;

use chrono::{DateTime, LocalResult, NaiveDateTime, Offset as _, SecondsFormat, TimeZone, Utc};
use chrono_tz::Tz;

/// An instant in UTC, as nanoseconds since the Unix epoch (years 1678 to 2261).
///
/// Comparisons are one integer compare, which keeps time-line searches cheap.
///
/// With serde, an instant is its nanoseconds (the compact form of compiled images);
/// decision records write RFC 3339.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct Instant(i64);

impl Instant {
    /// The earliest representable instant; time lines start here.
    pub const MIN: Instant = Instant(i64::MIN);

    /// Converts from a chrono UTC date-time; `None` outside the representable years.
    pub fn from_utc(dt: DateTime<Utc>) -> Option<Instant> {
        dt.timestamp_nanos_opt().map(Instant)
    }

    /// The instant as a chrono UTC date-time.
    pub fn to_utc(self) -> DateTime<Utc> {
        DateTime::from_timestamp_nanos(self.0)
    }

    /// Parses an RFC 3339 timestamp, which always carries an offset.
    pub fn parse_rfc3339(text: &str) -> Result<Instant, InstantError> {
        let dt = DateTime::parse_from_rfc3339(text.trim()).map_err(|_| {
            if NaiveDateTime::parse_from_str(text.trim(), "%Y-%m-%dT%H:%M:%S%.f").is_ok() {
                InstantError::NoOffset(text.to_owned())
            } else {
                InstantError::Malformed(text.to_owned())
            }
        })?;
        Instant::from_utc(dt.with_timezone(&Utc))
            .ok_or_else(|| InstantError::OutOfRange(text.to_owned()))
    }

    /// Nanoseconds since the Unix epoch.
    pub fn as_nanos(self) -> i64 {
        self.0
    }

    /// Builds an instant from nanoseconds since the Unix epoch.
    pub fn from_nanos(nanos: i64) -> Instant {
        Instant(nanos)
    }
}

impl fmt::Display for Instant {
    /// RFC 3339 in UTC, with fractional seconds only when there are any.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_utc().to_rfc3339_opts(SecondsFormat::AutoSi, true))
    }
}

/// Why a written instant was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InstantError {
    /// A date with a time but neither offset nor zone.
    #[error("time `{0}` has no UTC offset or zone")]
    NoOffset(String),
    /// A date alone.
    #[error("bare date `{0}` has no time and no UTC offset or zone")]
    BareDate(String),
    /// A time of day alone.
    #[error("bare time `{0}` has no date")]
    BareTime(String),
    /// A zone name outside the IANA database.
    #[error("unknown time zone `{0}`")]
    UnknownZone(String),
    /// A local time that the zone skips (a daylight-saving gap).
    #[error("`{0}` does not exist in its zone (a daylight-saving gap)")]
    Nonexistent(String, Box<ClockChange>),
    /// A local time that the zone repeats (a daylight-saving overlap).
    #[error("`{0}` is ambiguous in its zone (a daylight-saving overlap)")]
    Ambiguous(String, Box<ClockChange>),
    /// Outside the years 1678 to 2261.
    #[error("instant `{0}` is out of range")]
    OutOfRange(String),
    /// Anything else.
    #[error("`{0}` is not an instant")]
    Malformed(String),
}

impl InstantError {
    /// A fix hint for a person editing a policy file.
    pub fn hint(&self) -> String {
        match self {
            InstantError::NoOffset(_) | InstantError::BareDate(_) | InstantError::BareTime(_) => {
                "write an offset (`2020-09-20T00:00:00-04:00`, `2020-09-20T04:00:00Z`) or a zone (`\"2020-09-20T00:00:00 America/New_York\"`)".to_owned()
            }
            InstantError::UnknownZone(_) => {
                "use an IANA zone name such as `America/New_York`, `America/Los_Angeles` or `UTC`"
                    .to_owned()
            }
            InstantError::Nonexistent(_, change) => change.gap_hint(),
            InstantError::Ambiguous(_, change) => change.overlap_hint(),
            InstantError::OutOfRange(_) => {
                "instants must fall between the years 1678 and 2261".to_owned()
            }
            InstantError::Malformed(_) => {
                "write `2020-09-20T00:00:00-04:00` or `\"2020-09-20T00:00:00 America/New_York\"`"
                    .to_owned()
            }
        }
    }
}

/// A daylight-saving change that skips or repeats a local time: the local time written,
/// and the two instants that bound the gap or the two readings of the repeated time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClockChange {
    /// The zone's name (`America/New_York`).
    zone: String,
    /// The local date and time written, as written but with seconds
    /// (`2021-03-14T02:30:00`).
    local: NaiveDateTime,
    /// For a gap, the last instant before it; for an overlap, the earlier reading.
    first: DateTime<Tz>,
    /// For a gap, the first instant after it; for an overlap, the later reading.
    second: DateTime<Tz>,
}

impl ClockChange {
    /// ``02:30:00 does not exist on 2021-03-14 in America/New_York: clocks went from
    /// 01:59:59 EST (06:59:59Z) to 03:00:00 EDT (07:00:00Z); ...``
    fn gap_hint(&self) -> String {
        format!(
            "{} does not exist on {} in {}: clocks went from {} to {}; write the instant meant with its UTC offset, such as `{}` (the first instant after the change)",
            self.local.format("%H:%M:%S"),
            self.local.format("%Y-%m-%d"),
            self.zone,
            self.reading(&self.first),
            self.reading(&self.second),
            self.second.format("%Y-%m-%dT%H:%M:%S%:z"),
        )
    }

    /// ``01:30:00 happens twice on 2020-11-01 in America/New_York: first 01:30:00 EDT
    /// (05:30:00Z), then 01:30:00 EST (06:30:00Z); ...``
    fn overlap_hint(&self) -> String {
        let written = self.local.format("%Y-%m-%dT%H:%M:%S%.f");
        format!(
            "{} happens twice on {} in {}: first {}, then {}; pick one with an explicit UTC offset: `{written}{}` or `{written}{}`",
            self.local.format("%H:%M:%S"),
            self.local.format("%Y-%m-%d"),
            self.zone,
            self.reading(&self.first),
            self.reading(&self.second),
            self.first.format("%:z"),
            self.second.format("%:z"),
        )
    }

    /// `01:59:59 EST (06:59:59Z)`: local time and zone abbreviation, and the UTC time, with
    /// its date when that differs from the local date.
    fn reading(&self, at: &DateTime<Tz>) -> String {
        let utc = at.with_timezone(&Utc);
        let utc_text = if utc.date_naive() == self.local.date() {
            utc.format("%H:%M:%SZ").to_string()
        } else {
            utc.format("%Y-%m-%dT%H:%M:%SZ").to_string()
        };
        format!("{} ({utc_text})", at.format("%H:%M:%S %Z"))
    }
}

/// The last instant before, and the first after, the daylight-saving gap that skips
/// `local` in `tz`: the offset changes once within a day of it, found by bisection to the
/// second.
fn gap_around(tz: Tz, local: NaiveDateTime) -> Option<(DateTime<Tz>, DateTime<Tz>)> {
    const DAY: i64 = 86_400;
    let at = |seconds: i64| DateTime::from_timestamp(seconds, 0).map(|t| t.with_timezone(&tz));
    let offset = |seconds: i64| at(seconds).map(|t| t.offset().fix());
    // Seconds since the epoch, as if the local time were UTC: within a day of the gap.
    let mut before = local.and_utc().timestamp() - DAY;
    let mut after = before + 2 * DAY;
    let start = offset(before)?;
    if offset(after)? == start {
        return None;
    }
    // Invariant: the offset at `before` is the starting one, at `after` it is not. Two
    // days are bisected to the second in 18 steps: bounded, so that a mistake ends, not spins.
    for _ in 0..64 {
        if after - before <= 1 {
            break;
        }
        let mid = before + (after - before) / 2;
        if offset(mid)? == start {
            before = mid;
        } else {
            after = mid;
        }
    }
    Some((at(before)?, at(after)?))
}

/// Parses the text form a policy file may use in a string: RFC 3339 with an offset,
/// or a local date-time followed by an IANA zone, either after a space or in brackets
/// (`2020-09-20T00:00:00 America/New_York`, `2020-09-20T00:00:00[America/New_York]`).
pub fn parse_policy_instant(text: &str) -> Result<Instant, InstantError> {
    let text = text.trim();
    let (local, zone) = if let Some(stripped) = text.strip_suffix(']') {
        match stripped.split_once('[') {
            Some((local, zone)) => (local.trim(), Some(zone.trim())),
            None => return Err(InstantError::Malformed(text.to_owned())),
        }
    } else if let Some((local, zone)) = text.split_once(' ') {
        (local.trim(), Some(zone.trim()))
    } else {
        (text, None)
    };
    let Some(zone) = zone else {
        if chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").is_ok() {
            return Err(InstantError::BareDate(text.to_owned()));
        }
        return Instant::parse_rfc3339(text);
    };
    let tz: Tz = zone
        .parse()
        .map_err(|_| InstantError::UnknownZone(zone.to_owned()))?;
    let naive = ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(local, f).ok())
        .ok_or_else(|| {
            if chrono::NaiveDate::parse_from_str(local, "%Y-%m-%d").is_ok() {
                InstantError::BareDate(text.to_owned())
            } else {
                InstantError::Malformed(text.to_owned())
            }
        })?;
    match tz.from_local_datetime(&naive) {
        LocalResult::Single(dt) => Instant::from_utc(dt.with_timezone(&Utc))
            .ok_or_else(|| InstantError::OutOfRange(text.to_owned())),
        LocalResult::Ambiguous(first, second) => Err(InstantError::Ambiguous(
            text.to_owned(),
            Box::new(ClockChange {
                zone: zone.to_owned(),
                local: naive,
                first,
                second,
            }),
        )),
        LocalResult::None => match gap_around(tz, naive) {
            Some((first, second)) => Err(InstantError::Nonexistent(
                text.to_owned(),
                Box::new(ClockChange {
                    zone: zone.to_owned(),
                    local: naive,
                    first,
                    second,
                }),
            )),
            None => Err(InstantError::Malformed(text.to_owned())),
        },
    }
}

/// Parses a TOML value that a policy file gives as an instant.
pub(crate) fn from_toml(value: &toml::Value) -> Result<Instant, InstantError> {
    match value {
        toml::Value::Datetime(dt) => {
            let text = dt.to_string();
            match (&dt.date, &dt.time, &dt.offset) {
                (Some(_), Some(_), Some(_)) => Instant::parse_rfc3339(&text),
                (Some(_), None, _) => Err(InstantError::BareDate(text)),
                (None, _, _) => Err(InstantError::BareTime(text)),
                (Some(_), Some(_), None) => Err(InstantError::NoOffset(text)),
            }
        }
        toml::Value::String(s) => parse_policy_instant(s),
        other => Err(InstantError::Malformed(other.to_string())),
    }
}

/// Formats an instant in US Eastern time, with the zone abbreviation (`EDT`/`EST`).
pub fn format_eastern(instant: Instant) -> String {
    instant
        .to_utc()
        .with_timezone(&chrono_tz::America::New_York)
        .format("%Y-%m-%d %H:%M:%S %Z")
        .to_string()
}

/// Formats an instant in UTC for people (`2020-09-20 04:00:00 UTC`).
pub fn format_utc(instant: Instant) -> String {
    instant.to_utc().format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<String, InstantError> {
        parse_policy_instant(s).map(|i| i.to_string())
    }

    #[test]
    fn zones_follow_daylight_saving() {
        assert_eq!(
            p("2020-09-20T00:00:00 America/New_York").unwrap(),
            "2020-09-20T04:00:00Z"
        );
        assert_eq!(
            p("2020-11-12T23:59[America/New_York]").unwrap(),
            "2020-11-13T04:59:00Z"
        );
        assert_eq!(
            p("2020-09-27T23:59:00-05:00").unwrap(),
            "2020-09-28T04:59:00Z"
        );
    }

    #[test]
    fn bare_and_broken_forms_are_refused() {
        assert!(matches!(p("2020-09-20"), Err(InstantError::BareDate(_))));
        assert!(matches!(
            p("2020-09-20T00:00:00"),
            Err(InstantError::NoOffset(_))
        ));
        assert!(matches!(
            p("2020-09-20T00:00:00 Mars/Olympus"),
            Err(InstantError::UnknownZone(_))
        ));
        assert!(matches!(
            p("2020-03-08T02:30:00 America/New_York"),
            Err(InstantError::Nonexistent(..))
        ));
        assert!(matches!(
            p("2020-11-01T01:30:00 America/New_York"),
            Err(InstantError::Ambiguous(..))
        ));
        assert!(matches!(p("soon"), Err(InstantError::Malformed(_))));
    }

    #[test]
    fn a_gap_names_the_instants_on_either_side() {
        let e = parse_policy_instant("2021-03-14T02:30:00 America/New_York").unwrap_err();
        assert_eq!(
            e.hint(),
            "02:30:00 does not exist on 2021-03-14 in America/New_York: clocks went from 01:59:59 EST (06:59:59Z) to 03:00:00 EDT (07:00:00Z); write the instant meant with its UTC offset, such as `2021-03-14T03:00:00-04:00` (the first instant after the change)"
        );
        // Sydney moves its clocks while it is still the day before in UTC.
        let e = parse_policy_instant("2021-10-03T02:00[Australia/Sydney]").unwrap_err();
        assert!(
            e.hint().contains("clocks went from 01:59:59 AEST (2021-10-02T15:59:59Z) to 03:00:00 AEDT (2021-10-02T16:00:00Z)"),
            "{}",
            e.hint()
        );
    }

    #[test]
    fn an_overlap_names_both_readings_and_their_offsets() {
        let e = parse_policy_instant("2020-11-01T01:30:00 America/New_York").unwrap_err();
        assert_eq!(
            e.hint(),
            "01:30:00 happens twice on 2020-11-01 in America/New_York: first 01:30:00 EDT (05:30:00Z), then 01:30:00 EST (06:30:00Z); pick one with an explicit UTC offset: `2020-11-01T01:30:00-04:00` or `2020-11-01T01:30:00-05:00`"
        );
        // Both suggested forms parse, to the two readings.
        assert_eq!(
            p("2020-11-01T01:30:00-04:00").unwrap(),
            "2020-11-01T05:30:00Z"
        );
        assert_eq!(
            p("2020-11-01T01:30:00-05:00").unwrap(),
            "2020-11-01T06:30:00Z"
        );
    }

    #[test]
    fn eastern_formatting_names_the_abbreviation() {
        let i = p("2020-09-20T04:00:00Z")
            .map(|_| parse_policy_instant("2020-09-20T04:00:00Z").unwrap())
            .unwrap();
        assert_eq!(format_eastern(i), "2020-09-20 00:00:00 EDT");
        assert_eq!(format_utc(i), "2020-09-20 04:00:00 UTC");
    }
}
