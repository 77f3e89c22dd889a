//! Release versions: ordering (newest first) and entitlement constraints (`>=2.0, <3`, `^2`,
//! `*`), through the same code the agent enforces them with
//! (`commlink::msg::versions`), so the page never offers what `authorize` refuses. Pure.
//! The agent's `authorize` stays the authority at prepare time.

use std::cmp::Ordering;

use commlink::msg::versions::{Version, VersionSpec};

/// Compares two version strings as the agent does; unparsable ones fall back to comparing
/// dotted parts (numbers numerically, the rest as text).
pub fn compare(a: &str, b: &str) -> Ordering {
    match (a.parse::<Version>(), b.parse::<Version>()) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        _ => compare_text(a, b),
    }
}

fn compare_text(a: &str, b: &str) -> Ordering {
    let pa: Vec<&str> = a.split(['.', '-', '+']).collect();
    let pb: Vec<&str> = b.split(['.', '-', '+']).collect();
    for i in 0..pa.len().max(pb.len()) {
        let x = pa.get(i).copied().unwrap_or("0");
        let y = pb.get(i).copied().unwrap_or("0");
        let o = match (x.parse::<u64>(), y.parse::<u64>()) {
            (Ok(m), Ok(n)) => m.cmp(&n),
            (Ok(_), Err(_)) => Ordering::Greater,
            (Err(_), Ok(_)) => Ordering::Less,
            (Err(_), Err(_)) => x.cmp(y),
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

/// Whether `version` satisfies the constraint `spec` (empty or `*` = everything). Anything
/// unparsable matches nothing (fail closed).
pub fn matches(spec: &str, version: &str) -> bool {
    let spec = if spec.trim().is_empty() { "*" } else { spec };
    match (spec.parse::<VersionSpec>(), version.parse::<Version>()) {
        (Ok(s), Ok(v)) => s.matches(&v),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordering() {
        assert_eq!(compare("2.10", "2.9"), Ordering::Greater);
        assert_eq!(compare("2.0", "2"), Ordering::Equal);
        assert_eq!(compare("1.0.0", "1.0.1"), Ordering::Less);
        let mut v = vec!["1.2", "10.0", "2.0", "2.0.1"];
        v.sort_by(|a, b| compare(b, a));
        assert_eq!(v, ["10.0", "2.0.1", "2.0", "1.2"]);
    }

    #[test]
    fn constraints() {
        assert!(matches(">=2.0, <3", "2.5"));
        assert!(matches(">=2.0, <3", "2.0"));
        assert!(!matches(">=2.0, <3", "3.0"));
        assert!(!matches(">=2.0, <3", "1.9"));
        assert!(matches("", "9"));
        assert!(matches("*", "9"));
        assert!(matches("=1.2.3", "1.2.3"));
        assert!(matches("1.2.3", "1.2.3"));
        assert!(!matches("1.2.3", "1.2.4"));
        assert!(!matches(">=", "1"));
        assert!(matches("^2", "2.9"));
        assert!(!matches("^2", "3.0"));
        assert!(compare("3.0.0-rc1", "3.0.0") == Ordering::Less);
    }
}
