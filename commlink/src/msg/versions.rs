//! Version constraints on entitlements, e.g. `>=2.0, <3` (pure: no I/O).
//!
//! Part of the link vocabulary: the agent stores and enforces these constraints and the web
//! frontend uses the same code to decide what to offer, so the two can never disagree.
//!
//! A version is dotted numbers with an optional pre-release tag: `2`, `2.1`, `2.1.3`,
//! `3.0.0-rc1`. Missing components count as zero (`2.1` = `2.1.0`), and a pre-release sorts
//! before its release (`3.0.0-rc1 < 3.0.0`); tags compare as text.
//!
//! A constraint is a comma-separated list of terms that must all hold:
//! - `>=V`, `>V`, `<=V`, `<V`, `=V` compare as above;
//! - `^V` is "compatible with V": `>=V` and below the next bump of V's first non-zero
//!   component (`^2.1` = `>=2.1, <3`; `^0.4` = `>=0.4, <0.5`);
//! - a bare `V` is a prefix: `2` matches every `2.x.y`, `2.1` matches every `2.1.y`;
//! - `*` (or an empty constraint) matches everything.

use std::cmp::Ordering;
use std::fmt;

/// A parsed version: numeric components plus an optional pre-release tag. Equality is
/// by value (`2.1 == 2.1.0`).
#[derive(Debug, Clone)]
pub struct Version {
    /// The dotted numbers, as written (not padded).
    pub nums: Vec<u64>,
    /// Text after the first `-`, if any.
    pub pre: Option<String>,
}

/// Why a version or constraint could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: {text:?} (expected e.g. \"2.1.3\", \">=2.0, <3\", \"^2\" or \"*\")")]
pub struct ParseError {
    /// What was being parsed.
    pub what: &'static str,
    /// The offending text.
    pub text: String,
}

impl std::str::FromStr for Version {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        let bad = || ParseError {
            what: "invalid version",
            text: s.to_owned(),
        };
        let s = s.trim();
        let s = s.strip_prefix('v').unwrap_or(s);
        let (core, pre) = match s.split_once('-') {
            Some((c, p)) if !p.is_empty() => (c, Some(p.to_owned())),
            Some(_) => return Err(bad()),
            None => (s, None),
        };
        if core.is_empty() || core.split('.').count() > 8 {
            return Err(bad());
        }
        let nums = core
            .split('.')
            .map(|p| {
                if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                    Err(bad())
                } else {
                    p.parse::<u64>().map_err(|_| bad())
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Version { nums, pre })
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.nums.iter().map(u64::to_string).collect();
        f.write_str(&parts.join("."))?;
        if let Some(p) = &self.pre {
            write!(f, "-{p}")?;
        }
        Ok(())
    }
}

impl Version {
    fn num(&self, i: usize) -> u64 {
        self.nums.get(i).copied().unwrap_or(0)
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        let n = self.nums.len().max(other.nums.len());
        for i in 0..n {
            match self.num(i).cmp(&other.num(i)) {
                Ordering::Equal => {}
                o => return o,
            }
        }
        match (&self.pre, &other.pre) {
            (None, None) => Ordering::Equal,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(a), Some(b)) => a.cmp(b),
        }
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Version {}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Term {
    Any,
    Ge(Version),
    Gt(Version),
    Le(Version),
    Lt(Version),
    Eq(Version),
    Caret(Version),
    Prefix(Version),
}

impl Term {
    fn matches(&self, v: &Version) -> bool {
        match self {
            Term::Any => true,
            Term::Ge(b) => v >= b,
            Term::Gt(b) => v > b,
            Term::Le(b) => v <= b,
            Term::Lt(b) => v < b,
            Term::Eq(b) => v == b,
            Term::Caret(b) => {
                if v < b {
                    return false;
                }
                // The first non-zero component may not change; when all are zero, the
                // last written one may not.
                let pivot = b
                    .nums
                    .iter()
                    .position(|&n| n != 0)
                    .unwrap_or(b.nums.len().saturating_sub(1));
                (0..=pivot).all(|i| v.num(i) == b.num(i))
            }
            Term::Prefix(b) => {
                b.nums.iter().enumerate().all(|(i, &n)| v.num(i) == n)
                    && (b.pre.is_none() || b.pre == v.pre)
            }
        }
    }
}

/// A parsed version constraint: all terms must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionSpec {
    text: String,
    terms: Vec<Term>,
}

impl std::str::FromStr for VersionSpec {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        let bad = || ParseError {
            what: "invalid version constraint",
            text: s.to_owned(),
        };
        if s.len() > 200 {
            return Err(bad());
        }
        let trimmed = s.trim();
        if trimmed.is_empty() || trimmed == "*" {
            return Ok(VersionSpec {
                text: "*".to_owned(),
                terms: vec![Term::Any],
            });
        }
        let mut terms = Vec::new();
        for part in trimmed.split(',') {
            let p = part.trim();
            let ver = |rest: &str| rest.trim().parse::<Version>().map_err(|_| bad());
            let term = if p == "*" {
                Term::Any
            } else if let Some(r) = p.strip_prefix(">=") {
                Term::Ge(ver(r)?)
            } else if let Some(r) = p.strip_prefix("<=") {
                Term::Le(ver(r)?)
            } else if let Some(r) = p.strip_prefix('>') {
                Term::Gt(ver(r)?)
            } else if let Some(r) = p.strip_prefix('<') {
                Term::Lt(ver(r)?)
            } else if let Some(r) = p.strip_prefix('=') {
                Term::Eq(ver(r)?)
            } else if let Some(r) = p.strip_prefix('^') {
                Term::Caret(ver(r)?)
            } else {
                Term::Prefix(ver(p)?)
            };
            terms.push(term);
        }
        let text = trimmed
            .split(',')
            .map(str::trim)
            .collect::<Vec<_>>()
            .join(", ");
        Ok(VersionSpec { text, terms })
    }
}

impl fmt::Display for VersionSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl VersionSpec {
    /// The constraint that matches every version.
    pub fn any() -> Self {
        VersionSpec {
            text: "*".to_owned(),
            terms: vec![Term::Any],
        }
    }

    /// Whether `v` satisfies every term.
    pub fn matches(&self, v: &Version) -> bool {
        self.terms.iter().all(|t| t.matches(v))
    }

    /// Parses `version` and checks it; an unparsable version never matches (unless the
    /// constraint is `*`).
    pub fn matches_str(&self, version: &str) -> bool {
        match version.parse::<Version>() {
            Ok(v) => self.matches(&v),
            Err(_) => self.terms.iter().all(|t| *t == Term::Any),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        s.parse().unwrap()
    }

    fn spec(s: &str) -> VersionSpec {
        s.parse().unwrap()
    }

    #[test]
    fn versions_order_numerically_with_zero_padding() {
        assert!(v("2.10") > v("2.9"));
        assert_eq!(v("2.1").cmp(&v("2.1.0")), Ordering::Equal);
        assert!(v("3.0.0-rc1") < v("3.0.0"));
        assert!(v("3.0.0-rc1") < v("3.0.0-rc2"));
        assert!(v("v1.2") == v("1.2"));
        assert_eq!(v("1.02.3").to_string(), "1.2.3");
    }

    #[test]
    fn bad_versions_are_rejected() {
        for s in [
            "",
            ".",
            "1.",
            "a.b",
            "1..2",
            "1.2-",
            "-rc1",
            "1.2.3.4.5.6.7.8.9",
            "99999999999999999999999",
        ] {
            assert!(s.parse::<Version>().is_err(), "{s:?} accepted");
        }
    }

    #[test]
    fn range_with_and() {
        let s = spec(">=2.0, <3");
        assert!(s.matches(&v("2.0")));
        assert!(s.matches(&v("2.9.9")));
        assert!(!s.matches(&v("3.0")));
        assert!(!s.matches(&v("1.9")));
        assert_eq!(s.to_string(), ">=2.0, <3");
    }

    #[test]
    fn each_operator() {
        assert!(spec(">2").matches(&v("2.0.1")));
        assert!(!spec(">2").matches(&v("2.0")));
        assert!(spec("<=2.1").matches(&v("2.1.0")));
        assert!(!spec("<=2.1").matches(&v("2.1.1")));
        assert!(spec("=2.1").matches(&v("2.1.0")));
        assert!(!spec("=2.1").matches(&v("2.1.1")));
    }

    #[test]
    fn caret() {
        let s = spec("^2.1");
        assert!(s.matches(&v("2.1")) && s.matches(&v("2.9.3")));
        assert!(!s.matches(&v("3.0")) && !s.matches(&v("2.0.9")));
        let z = spec("^0.4");
        assert!(z.matches(&v("0.4.7")) && !z.matches(&v("0.5")));
        let zz = spec("^0.0.3");
        assert!(zz.matches(&v("0.0.3")) && !zz.matches(&v("0.0.4")));
    }

    #[test]
    fn bare_version_is_a_prefix() {
        let s = spec("2");
        assert!(s.matches(&v("2")) && s.matches(&v("2.5.1")));
        assert!(!s.matches(&v("3.0")) && !s.matches(&v("1.9")));
        let s = spec("2.1");
        assert!(s.matches(&v("2.1.7")) && !s.matches(&v("2.2")));
    }

    #[test]
    fn star_and_empty_match_everything() {
        for s in ["*", "", "  "] {
            let sp = spec(s);
            assert!(sp.matches(&v("0.0.1")) && sp.matches(&v("99")));
            assert!(sp.matches_str("not-a-version"));
            assert_eq!(sp.to_string(), "*");
        }
    }

    #[test]
    fn unparsable_version_never_matches_a_real_constraint() {
        assert!(!spec(">=1").matches_str("latest"));
    }

    #[test]
    fn bad_constraints_are_rejected() {
        for s in [
            ">=",
            ">=2,",
            "~2",
            "2.x",
            ">= 2 <3",
            "=>2",
            ",",
            &"1,".repeat(150),
        ] {
            assert!(s.parse::<VersionSpec>().is_err(), "{s:?} accepted");
        }
    }

    use proptest::prelude::*;

    fn arb_version() -> impl Strategy<Value = Version> {
        (
            proptest::collection::vec(0u64..20, 1..5),
            proptest::option::of("[a-z][a-z0-9]{0,4}"),
        )
            .prop_map(|(nums, pre)| Version { nums, pre })
    }

    proptest! {
        #[test]
        fn parsers_never_panic(s in any::<String>()) {
            let _ = s.parse::<Version>();
            let _ = s.parse::<VersionSpec>();
        }

        #[test]
        fn display_round_trips(v in arb_version()) {
            prop_assert_eq!(v.to_string().parse::<Version>().unwrap(), v);
        }

        #[test]
        fn operators_agree_with_ordering(a in arb_version(), b in arb_version()) {
            let s = |op: &str| format!("{op}{b}").parse::<VersionSpec>().unwrap();
            prop_assert_eq!(s(">=").matches(&a), a >= b);
            prop_assert_eq!(s(">").matches(&a), a > b);
            prop_assert_eq!(s("<=").matches(&a), a <= b);
            prop_assert_eq!(s("<").matches(&a), a < b);
            prop_assert_eq!(s("=").matches(&a), a == b);
            // A caret range and a bare prefix never admit anything below their version
            // (prefixes of pre-releases aside).
            if s("^").matches(&a) {
                prop_assert!(a >= b);
            }
            prop_assert!(s("^").matches(&b));
            prop_assert!(s("").matches(&b));
        }
    }
}
