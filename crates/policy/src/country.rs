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
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Country(u8);

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
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown country code `{0}`; expected an ISO 3166-1 alpha-2 (`US`) or alpha-3 (`USA`) code"
)]
pub struct UnknownCountry(pub String);

/// A set of countries, as a bit set over the ISO 3166-1 list (membership is one AND).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Debug)]
pub struct CountrySet([u64; SET_BITS / 64]);

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

    /// Every country, in alpha-2 order.
    fn all() -> impl Iterator<Item = Country> {
        // `COUNT < NONE`, so every index fits.
        (0..COUNT as u8).map(Country)
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
