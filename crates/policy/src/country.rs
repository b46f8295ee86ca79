//! ISO 3166-1 countries and sets of them.

use std::fmt;

use isocountry::CountryCode;

/// A country or territory of ISO 3166-1, parsed from an alpha-2 or alpha-3 code.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Country(CountryCode);

impl Country {
    /// Parses an ISO 3166-1 alpha-2 (`US`) or alpha-3 (`USA`) code, ignoring case.
    pub fn parse(code: &str) -> Result<Country, UnknownCountry> {
        let found = if code.is_ascii() {
            let upper = code.to_ascii_uppercase();
            match upper.len() {
                2 => CountryCode::for_alpha2(&upper).ok(),
                3 => CountryCode::for_alpha3(&upper).ok(),
                _ => None,
            }
        } else {
            None
        };
        found
            .map(Country)
            .ok_or_else(|| UnknownCountry(code.to_owned()))
    }

    /// The alpha-2 code, upper case.
    pub fn alpha2(self) -> &'static str {
        self.0.alpha2()
    }

    /// The alpha-3 code, upper case.
    pub fn alpha3(self) -> &'static str {
        self.0.alpha3()
    }

    /// The English short name.
    pub fn name(self) -> &'static str {
        self.0.name()
    }

    fn bit(self) -> (usize, u64) {
        let index = self.0 as usize;
        (index / 64, 1 << (index % 64))
    }
}

impl fmt::Display for Country {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.alpha2())
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
pub struct CountrySet([u64; 4]);

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alpha2_and_alpha3_any_case_name_the_same_country() {
        let a = Country::parse("pr").unwrap();
        let b = Country::parse("PRI").unwrap();
        let c = Country::parse("Pri").unwrap();
        assert_eq!(a, b);
        assert_eq!(b, c);
        assert_eq!(a.alpha2(), "PR");
        assert_eq!(a.alpha3(), "PRI");
    }

    #[test]
    fn unknown_codes_are_errors() {
        for bad in ["", "U", "XX", "USAA", "ÜS", "ZZZ"] {
            assert!(Country::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn set_membership() {
        let set: CountrySet = ["US", "GU"]
            .iter()
            .map(|c| Country::parse(c).unwrap())
            .collect();
        assert!(set.contains(Country::parse("USA").unwrap()));
        assert!(set.contains(Country::parse("GUM").unwrap()));
        assert!(!set.contains(Country::parse("CA").unwrap()));
        // The last entries of the ISO list must fit the bit set too.
        let zw = Country::parse("ZW").unwrap();
        let set: CountrySet = [zw].into_iter().collect();
        assert!(set.contains(zw));
    }
}
