//! ISO 3166-1 countries and sets of them.
//!
//! The codes and English short names are the `rust_iso3166` crate's, which it generates from the
//! iso-codes project's ISO 3166-1 list. At compile time that list is re-sorted by alpha-2 code
//! into `TABLE`, and a country is its index there: it orders by alpha-2 code, and it is the
//! country's bit in a [`CountrySet`].

use std::fmt;

use rust_iso3166::CountryCode;

/// How many countries ISO 3166-1 lists.
const COUNT: usize = rust_iso3166::ALL.len();

/// Countries sorted by alpha-2 code; a [`Country`] is an index into it.
static TABLE: [CountryCode; COUNT] = SORTED;
const SORTED: [CountryCode; COUNT] = sorted_by_alpha2();

/// An alpha-2 code's letter pair (see [`pair`]) to its country's index in [`TABLE`], or [`NONE`].
static BY_ALPHA2: [u8; 26 * 26] = alpha2_index(&SORTED);
const NONE: u8 = u8::MAX;

/// Bits in a [`CountrySet`].
const SET_BITS: usize = 256;

// Every index fits a `u8` below `NONE` and a bit of a `CountrySet`; every entry has well-formed,
// distinct codes.
const _: () = assert!(COUNT < NONE as usize && COUNT <= SET_BITS);
const _: () = assert!(well_formed(&SORTED));

/// A country or territory of ISO 3166-1, parsed from an alpha-2 or alpha-3 code.
///
/// With serde, a country is its position in the ISO list (the compact form of compiled
/// images), checked when read.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(into = "u8", try_from = "u8")]
pub struct Country(u8);

impl From<Country> for u8 {
    fn from(c: Country) -> u8 {
        c.0
    }
}

impl TryFrom<u8> for Country {
    type Error = String;

    fn try_from(i: u8) -> Result<Country, String> {
        if usize::from(i) < COUNT {
            Ok(Country(i))
        } else {
            Err(format!("country {i} is not in the ISO list of {COUNT}"))
        }
    }
}

impl Country {
    /// Parses an ISO 3166-1 alpha-2 (`US`) or alpha-3 (`USA`) code, ignoring case.
    pub fn parse(code: &str) -> Result<Country, UnknownCountry> {
        let found = match *code.as_bytes() {
            [a, b] => by_pair(a, b),
            [a, b, c] if [a, b, c].iter().all(u8::is_ascii_alphabetic) => {
                let upper = [a, b, c].map(|x| x.to_ascii_uppercase());
                std::str::from_utf8(&upper)
                    .ok()
                    .and_then(rust_iso3166::from_alpha3)
                    .and_then(|c| match *c.alpha2.as_bytes() {
                        [a, b] => by_pair(a, b),
                        _ => None,
                    })
            }
            _ => None,
        };
        found.ok_or_else(|| UnknownCountry(code.to_owned()))
    }

    /// Every country of ISO 3166-1, in alpha-2 order.
    pub fn all() -> impl Iterator<Item = Country> {
        // `COUNT < NONE`, so every index fits.
        (0..COUNT as u8).map(Country)
    }

    /// The alpha-2 code, upper case.
    pub fn alpha2(self) -> &'static str {
        self.entry().alpha2
    }

    /// The alpha-3 code, upper case.
    pub fn alpha3(self) -> &'static str {
        self.entry().alpha3
    }

    /// The English short name.
    pub fn name(self) -> &'static str {
        self.entry().name
    }

    fn entry(self) -> &'static CountryCode {
        // A `Country` is only ever made from an index below `COUNT`.
        &TABLE[usize::from(self.0)]
    }

    fn bit(self) -> (usize, u64) {
        let index = usize::from(self.0);
        (index / 64, 1 << (index % 64))
    }
}

impl fmt::Display for Country {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.alpha2())
    }
}

impl fmt::Debug for Country {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Country({})", self.alpha2())
    }
}

/// A code that is not an ISO 3166-1 alpha-2 or alpha-3 code.
///
/// Parsing stays strict; the error only says what was probably meant (see
/// [`UnknownCountry::suggestion`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown country code `{code}`; {advice}",
    code = .0,
    advice = self.advice().as_deref().unwrap_or("expected an ISO 3166-1 alpha-2 (`US`) or alpha-3 (`USA`) code")
)]
pub struct UnknownCountry(pub String);

impl UnknownCountry {
    /// The country probably meant: from [`ALIASES`] (`UK` is `GB`), an alpha-3 code one
    /// edit away (`DUE` is `DEU`), or a country's name, exact or one or two edits away
    /// (`Germany`, `germny`). `None` when nothing is near enough, or several are.
    pub fn suggestion(&self) -> Option<Country> {
        match self.guess()? {
            Guess::Country(c, _) => Some(c),
            Guess::NotACountry(_) => None,
        }
    }

    /// What was probably meant, in words: ``did you mean `GB` (United Kingdom of ...)?``,
    /// or what to write instead of a code that names no country (`EU`). `None` when
    /// nothing is known beyond the code being unknown.
    pub fn advice(&self) -> Option<String> {
        Some(match self.guess()? {
            Guess::Country(c, code) => format!("did you mean `{code}` ({})?", c.name()),
            Guess::NotACountry(why) => why.to_owned(),
        })
    }

    fn guess(&self) -> Option<Guess> {
        let text = self.0.trim();
        // A name is at most a few dozen letters: anything longer is not compared.
        if text.is_empty() || text.chars().count() > 64 {
            return None;
        }
        let upper = text.to_uppercase();
        if let Some(alias) = ALIASES.iter().find(|a| a.code == upper) {
            return Some(match alias.meant {
                Meant::Country(alpha2) => {
                    let c = Country::parse(alpha2).ok()?;
                    Guess::Country(c, c.alpha2())
                }
                Meant::NotACountry(why) => Guess::NotACountry(why),
            });
        }
        if upper.len() == 3 && upper.bytes().all(|b| b.is_ascii_uppercase()) {
            let near = crate::diagnostic::nearest(&upper, TABLE.iter().map(|c| c.alpha3), |_| 1);
            return match near[..] {
                [alpha3] => {
                    let c = Country::parse(alpha3).ok()?;
                    Some(Guess::Country(c, c.alpha3()))
                }
                _ => None,
            };
        }
        let name = fold_name(text);
        if name.chars().count() < 4 {
            return None;
        }
        let names = country_names();
        let exact = |names: &[(String, Country)]| -> Vec<Country> {
            let mut found: Vec<Country> = names
                .iter()
                .filter(|(n, _)| *n == name)
                .map(|&(_, c)| c)
                .collect();
            found.sort();
            found.dedup();
            found
        };
        let mut found = exact(&names);
        if found.is_empty() {
            // One edit for a short name, two for a longer one.
            let within = |k: &str| if k.len() <= 5 { 1 } else { 2 };
            let near =
                crate::diagnostic::nearest(&name, names.iter().map(|(n, _)| n.as_str()), within);
            found = names
                .iter()
                .filter(|(n, _)| near.contains(&n.as_str()))
                .map(|&(_, c)| c)
                .collect();
            found.sort();
            found.dedup();
        }
        match found[..] {
            [c] => Some(Guess::Country(c, c.alpha2())),
            _ => None,
        }
    }
}

enum Guess {
    /// The country, and the code to suggest (alpha-3 for an alpha-3 typo, else alpha-2).
    Country(Country, &'static str),
    NotACountry(&'static str),
}

/// A code that people write for a country but that ISO 3166-1 does not assign to it.
struct Alias {
    /// Upper case, as compared.
    code: &'static str,
    meant: Meant,
}

enum Meant {
    /// The ISO 3166-1 alpha-2 code of the country meant.
    Country(&'static str),
    /// Not a country: what to write instead.
    NotACountry(&'static str),
}

const fn alias(code: &'static str, alpha2: &'static str) -> Alias {
    Alias {
        code,
        meant: Meant::Country(alpha2),
    }
}

/// Well-known confusions: none of these codes is assigned in ISO 3166-1 (a test checks),
/// so a request or a policy that writes one is still refused; the error names the code
/// meant.
///
/// - `UK`: ISO 3166-1 reserves it; the United Kingdom is `GB` (`GBR`).
/// - `EL`: the European Union's code for Greece; ISO's is `GR`.
/// - `UAE`, `KSA`: the usual abbreviations of the United Arab Emirates (`AE`) and Saudi
///   Arabia (`SA`).
/// - `GER`, `SUI`, `NED`, `DEN`, `POR`, `RSA`, `CRO`, `BUL`: Olympic and FIFA codes of
///   Germany, Switzerland, the Netherlands, Denmark, Portugal, South Africa, Croatia and
///   Bulgaria.
/// - `TP`, `ZR`, `BU`, `FX`: codes withdrawn from ISO 3166-1 (East Timor, Zaire, Burma,
///   metropolitan France), now `TL`, `CD`, `MM` and `FR`.
/// - Names: `United States`, `United Kingdom`, `Great Britain`, `Britain`, `Russia`,
///   `Turkey`, `South Korea`, `North Korea`, `Syria`, `Laos`, `Vietnam`, `Czech Republic`,
///   `Holland`, `Ivory Coast`, `Cape Verde`, `Swaziland`, `Burma`, `Macedonia`, `Vatican`.
/// - `EU`, `EUR`, `XK`: not ISO 3166-1 countries at all; the error says what to write.
static ALIASES: [Alias; 38] = [
    alias("UK", "GB"),
    alias("EL", "GR"),
    alias("UAE", "AE"),
    alias("KSA", "SA"),
    alias("GER", "DE"),
    alias("SUI", "CH"),
    alias("NED", "NL"),
    alias("DEN", "DK"),
    alias("POR", "PT"),
    alias("RSA", "ZA"),
    alias("CRO", "HR"),
    alias("BUL", "BG"),
    alias("TP", "TL"),
    alias("ZR", "CD"),
    alias("BU", "MM"),
    alias("FX", "FR"),
    alias("UNITED STATES", "US"),
    alias("UNITED KINGDOM", "GB"),
    alias("GREAT BRITAIN", "GB"),
    alias("BRITAIN", "GB"),
    alias("RUSSIA", "RU"),
    alias("TURKEY", "TR"),
    alias("SOUTH KOREA", "KR"),
    alias("NORTH KOREA", "KP"),
    alias("SYRIA", "SY"),
    alias("LAOS", "LA"),
    alias("VIETNAM", "VN"),
    alias("CZECH REPUBLIC", "CZ"),
    alias("HOLLAND", "NL"),
    alias("IVORY COAST", "CI"),
    alias("CAPE VERDE", "CV"),
    alias("SWAZILAND", "SZ"),
    alias("BURMA", "MM"),
    alias("MACEDONIA", "MK"),
    alias("VATICAN", "VA"),
    not_a_country("EU", EUROPEAN_UNION),
    not_a_country("EUR", EUROPEAN_UNION),
    not_a_country(
        "XK",
        "Kosovo has no ISO 3166-1 code (`XK` is user-assigned, outside the standard)",
    ),
];

const EUROPEAN_UNION: &str =
    "the European Union is not an ISO 3166-1 country: list its member states' codes";

const fn not_a_country(code: &'static str, why: &'static str) -> Alias {
    Alias {
        code,
        meant: Meant::NotACountry(why),
    }
}

/// A name folded for comparison: lower case, letters and digits only, common accents
/// dropped (`Côte d'Ivoire` is `cotedivoire`).
fn fold_name(name: &str) -> String {
    name.chars()
        .flat_map(char::to_lowercase)
        .map(|c| match c {
            'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' => 'a',
            'ç' => 'c',
            'è' | 'é' | 'ê' | 'ë' => 'e',
            'ì' | 'í' | 'î' | 'ï' => 'i',
            'ò' | 'ó' | 'ô' | 'õ' | 'ö' => 'o',
            'ù' | 'ú' | 'û' | 'ü' => 'u',
            other => other,
        })
        .filter(|c| c.is_alphanumeric())
        .collect()
}

/// Every country's folded name, and its short form where the name has one
/// (`Bolivia (Plurinational State of)` is also `bolivia`; `Saint Helena, Ascension and
/// Tristan da Cunha` is also `sainthelena`), with the names of [`ALIASES`].
fn country_names() -> Vec<(String, Country)> {
    let mut names = Vec::with_capacity(2 * COUNT);
    for (i, entry) in TABLE.iter().enumerate() {
        // `COUNT < NONE`, so every index fits.
        let country = Country(i as u8);
        names.push((fold_name(entry.name), country));
        if let Some(short) = entry.name.split([',', '(']).next()
            && short.len() < entry.name.len()
        {
            names.push((fold_name(short), country));
        }
    }
    for a in &ALIASES {
        if let (Meant::Country(alpha2), true) = (&a.meant, a.code.len() > 3)
            && let Ok(c) = Country::parse(alpha2)
        {
            names.push((fold_name(a.code), c));
        }
    }
    names
}

/// A set of countries, as a bit set over the ISO 3166-1 list (membership is one AND).
///
/// With serde, its words; a set naming a country outside the ISO list is refused.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, Default, Debug, serde::Serialize, serde::Deserialize,
)]
#[serde(into = "[u64; SET_BITS / 64]", try_from = "[u64; SET_BITS / 64]")]
pub struct CountrySet([u64; SET_BITS / 64]);

impl From<CountrySet> for [u64; SET_BITS / 64] {
    fn from(s: CountrySet) -> Self {
        s.0
    }
}

impl TryFrom<[u64; SET_BITS / 64]> for CountrySet {
    type Error = String;

    fn try_from(words: [u64; SET_BITS / 64]) -> Result<CountrySet, String> {
        let beyond = (COUNT..SET_BITS).find(|&i| words[i / 64] & 1 << (i % 64) != 0);
        match beyond {
            None => Ok(CountrySet(words)),
            Some(i) => Err(format!(
                "country set names country {i}, not in the ISO list of {COUNT}"
            )),
        }
    }
}

impl CountrySet {
    /// Adds a country.
    pub fn insert(&mut self, country: Country) {
        let (word, mask) = country.bit();
        if let Some(w) = self.0.get_mut(word) {
            *w |= mask;
        }
    }

    /// Whether the set holds the country.
    #[inline]
    pub fn contains(&self, country: Country) -> bool {
        let (word, mask) = country.bit();
        self.0.get(word).is_some_and(|w| w & mask != 0)
    }
}

impl FromIterator<Country> for CountrySet {
    fn from_iter<I: IntoIterator<Item = Country>>(iter: I) -> Self {
        let mut set = CountrySet::default();
        for c in iter {
            set.insert(c);
        }
        set
    }
}

/// The country whose alpha-2 code is these two letters, in any case.
fn by_pair(a: u8, b: u8) -> Option<Country> {
    let index = *BY_ALPHA2.get(pair(a, b)?)?;
    (index != NONE).then_some(Country(index))
}

/// Two ASCII letters, in any case, as a number below 26 × 26.
const fn pair(a: u8, b: u8) -> Option<usize> {
    match (a.to_ascii_uppercase(), b.to_ascii_uppercase()) {
        (a @ b'A'..=b'Z', b @ b'A'..=b'Z') => Some((a - b'A') as usize * 26 + (b - b'A') as usize),
        _ => None,
    }
}

/// The sort key of an alpha-2 code: its letter pair if it is two upper-case ASCII letters, else
/// `usize::MAX` (which [`well_formed`] rejects).
const fn alpha2_key(code: &str) -> usize {
    match *code.as_bytes() {
        [a @ b'A'..=b'Z', b @ b'A'..=b'Z'] => (a - b'A') as usize * 26 + (b - b'A') as usize,
        _ => usize::MAX,
    }
}

/// The crate's list, sorted by alpha-2 code (an insertion sort: it runs once, at compile time).
const fn sorted_by_alpha2() -> [CountryCode; COUNT] {
    let all = rust_iso3166::ALL;
    let mut out = [all[0]; COUNT];
    let mut i = 0;
    while i < COUNT {
        out[i] = all[i];
        let mut j = i;
        while j > 0 && alpha2_key(out[j - 1].alpha2) > alpha2_key(out[j].alpha2) {
            let t = out[j];
            out[j] = out[j - 1];
            out[j - 1] = t;
            j -= 1;
        }
        i += 1;
    }
    out
}

const fn alpha2_index(table: &[CountryCode; COUNT]) -> [u8; 26 * 26] {
    let mut out = [NONE; 26 * 26];
    let mut i = 0;
    while i < COUNT {
        let key = alpha2_key(table[i].alpha2);
        if key < out.len() {
            out[key] = i as u8;
        }
        i += 1;
    }
    out
}

/// Whether every alpha-2 code is two upper-case ASCII letters, in strictly increasing order (so
/// distinct), and every alpha-3 code three.
const fn well_formed(table: &[CountryCode; COUNT]) -> bool {
    let mut i = 0;
    while i < COUNT {
        let key = alpha2_key(table[i].alpha2);
        if key == usize::MAX || (i > 0 && alpha2_key(table[i - 1].alpha2) >= key) {
            return false;
        }
        match *table[i].alpha3.as_bytes() {
            [b'A'..=b'Z', b'A'..=b'Z', b'A'..=b'Z'] => {}
            _ => return false,
        }
        i += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> impl Iterator<Item = Country> {
        Country::all()
    }

    fn country(code: &str) -> Country {
        Country::parse(code).unwrap()
    }

    #[test]
    fn alpha2_and_alpha3_any_case_name_the_same_country() {
        let a = country("pr");
        let b = country("PRI");
        let c = country("Pri");
        assert_eq!(a, b);
        assert_eq!(b, c);
        assert_eq!(a.alpha2(), "PR");
        assert_eq!(a.alpha3(), "PRI");
    }

    #[test]
    fn unknown_codes_are_errors() {
        for bad in [
            "",
            "U",
            "XX",
            "xx",
            "XXX",
            "USAA",
            "ÜS",
            "ÜSA",
            "US\u{301}",
            "ZZZ",
            "U S",
            " US",
            "US ",
            "U-S",
            "U1",
            "12",
            "840",
            "\0US",
        ] {
            assert_eq!(
                Country::parse(bad),
                Err(UnknownCountry(bad.to_owned())),
                "{bad:?}"
            );
        }
    }

    fn suggested(code: &str) -> Option<&'static str> {
        let e = Country::parse(code).unwrap_err();
        e.suggestion().map(Country::alpha2)
    }

    #[test]
    fn unknown_codes_suggest_the_country_meant_but_stay_errors() {
        for (written, meant) in [
            ("UK", "GB"),
            ("uk", "GB"),
            ("EL", "GR"),
            ("UAE", "AE"),
            ("GER", "DE"),
            ("FX", "FR"),
            // An alpha-3 typo with a single code one edit away.
            ("DUE", "DE"),
            // Names, exact or near, in any case, with or without accents.
            ("Germany", "DE"),
            ("germny", "DE"),
            ("GERMANY", "DE"),
            ("Cote d'Ivoire", "CI"),
            ("Turkiye", "TR"),
            ("Bolivia", "BO"),
            ("Viet Nam", "VN"),
            ("Vietnam", "VN"),
            ("United States", "US"),
            ("United Kingdom", "GB"),
            ("Russia", "RU"),
            ("Frnace", "FR"),
        ] {
            assert!(Country::parse(written).is_err(), "{written}");
            assert_eq!(suggested(written), Some(meant), "{written}");
        }
        let uk = Country::parse("UK").unwrap_err().to_string();
        assert_eq!(
            uk,
            "unknown country code `UK`; did you mean `GB` (United Kingdom of Great Britain and Northern Ireland)?"
        );
        // An alpha-3 typo is answered in alpha-3.
        let due = Country::parse("DUE").unwrap_err().to_string();
        assert!(due.ends_with("did you mean `DEU` (Germany)?"), "{due}");
    }

    #[test]
    fn nothing_is_suggested_when_nothing_or_several_are_near() {
        // Two-letter codes are one edit from many others: only the alias table speaks.
        for code in [
            "XX", "ZZ", "U5", "", "ZZZ", "Korea", "Congo", "Atlantis", "12",
        ] {
            assert_eq!(suggested(code), None, "{code}");
        }
        let zz = Country::parse("ZZ").unwrap_err().to_string();
        assert_eq!(
            zz,
            "unknown country code `ZZ`; expected an ISO 3166-1 alpha-2 (`US`) or alpha-3 (`USA`) code"
        );
        // Not a country at all: said so, nothing suggested.
        for code in ["EU", "EUR", "XK"] {
            let e = Country::parse(code).unwrap_err();
            assert_eq!(e.suggestion(), None, "{code}");
            assert!(e.advice().is_some(), "{code}");
        }
        // A long text is not compared with every name.
        assert_eq!(suggested(&"Germany".repeat(100)), None);
    }

    #[test]
    fn no_alias_is_an_assigned_code() {
        for alias in &ALIASES {
            assert!(Country::parse(alias.code).is_err(), "{}", alias.code);
            if let Meant::Country(alpha2) = alias.meant {
                assert!(Country::parse(alpha2).is_ok(), "{alpha2}");
            }
        }
    }

    #[test]
    fn names_are_current() {
        for (code, name) in [
            ("TR", "Türkiye"),
            ("MK", "North Macedonia"),
            ("SZ", "Eswatini"),
            ("CZ", "Czechia"),
            ("CV", "Cabo Verde"),
            ("NL", "Netherlands (Kingdom of the)"),
            ("BO", "Bolivia (Plurinational State of)"),
            ("US", "United States of America"),
            ("PR", "Puerto Rico"),
        ] {
            assert_eq!(country(code).name(), name, "{code}");
        }
    }

    #[test]
    fn us_territories_round_trip_between_alpha2_and_alpha3() {
        for (alpha2, alpha3) in [
            ("US", "USA"),
            ("PR", "PRI"),
            ("GU", "GUM"),
            ("VI", "VIR"),
            ("AS", "ASM"),
            ("MP", "MNP"),
            ("UM", "UMI"),
        ] {
            let a = country(alpha2);
            let b = country(alpha3);
            assert_eq!(a, b, "{alpha2} {alpha3}");
            assert_eq!(a.alpha2(), alpha2);
            assert_eq!(a.alpha3(), alpha3);
            assert_eq!(b.alpha2(), alpha2);
            assert_eq!(country(&alpha3.to_ascii_lowercase()), a);
            assert_eq!(a.to_string(), alpha2);
        }
    }

    #[test]
    fn every_country_parses_back_from_both_codes() {
        let countries: Vec<Country> = all().collect();
        assert_eq!(countries.len(), 249);
        for &c in &countries {
            assert_eq!(country(c.alpha2()), c, "{c:?}");
            assert_eq!(country(c.alpha3()), c, "{c:?}");
            assert_eq!(country(&c.alpha2().to_ascii_lowercase()), c, "{c:?}");
            assert_eq!(country(&c.alpha3().to_ascii_lowercase()), c, "{c:?}");
            assert!(!c.name().is_empty(), "{c:?}");
        }
        // In alpha-2 order, and so all distinct.
        assert!(
            countries
                .windows(2)
                .all(|w| w[0] < w[1] && w[0].alpha2() < w[1].alpha2())
        );
        let alpha3: std::collections::HashSet<_> = countries.iter().map(|c| c.alpha3()).collect();
        assert_eq!(alpha3.len(), countries.len());
    }

    #[test]
    fn debug_and_display_show_the_alpha2_code() {
        assert_eq!(format!("{:?}", country("gum")), "Country(GU)");
        assert_eq!(country("gum").to_string(), "GU");
    }

    #[test]
    fn set_membership() {
        let set: CountrySet = ["US", "GU"].iter().map(|c| country(c)).collect();
        assert!(set.contains(country("USA")));
        assert!(set.contains(country("GUM")));
        assert!(!set.contains(country("CA")));
        assert!(!CountrySet::default().contains(country("US")));
        // The last entries of the list must fit the bit set too.
        let zw = country("ZW");
        let set: CountrySet = [zw].into_iter().collect();
        assert!(set.contains(zw));
        // Every country has a bit of its own.
        let every: CountrySet = all().collect();
        for c in all() {
            assert!(every.contains(c));
            let one: CountrySet = [c].into_iter().collect();
            assert!(all().all(|d| one.contains(d) == (c == d)), "{c:?}");
        }
    }
}
