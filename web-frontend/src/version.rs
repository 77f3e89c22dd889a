//! Release versions: ordering (newest first) and the entitlement constraint language the agent
//! stores (`>=2.0, <3`, `=1.2.3`, `*`). Pure. The web side uses this only to decide what to
//! *show*; the agent's `authorize` is the authority at prepare time.

use std::cmp::Ordering;

/// Compares two version strings: dotted numeric parts numerically, anything else as text.
pub fn compare(a: &str, b: &str) -> Ordering {
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

/// Whether `version` satisfies a comma-separated list of comparators; an empty spec or `*`
/// matches everything. An unparsable comparator matches nothing (fail closed).
pub fn matches(spec: &str, version: &str) -> bool {
    let spec = spec.trim();
    if spec.is_empty() || spec == "*" {
        return true;
    }
    spec.split(',').all(|c| {
        let c = c.trim();
        let (op, v) = if let Some(v) = c.strip_prefix(">=") {
            (">=", v)
        } else if let Some(v) = c.strip_prefix("<=") {
            ("<=", v)
        } else if let Some(v) = c.strip_prefix("==") {
            ("=", v)
        } else if let Some(v) = c.strip_prefix('>') {
            (">", v)
        } else if let Some(v) = c.strip_prefix('<') {
            ("<", v)
        } else if let Some(v) = c.strip_prefix('=') {
            ("=", v)
        } else if c == "*" {
            return true;
        } else {
            ("=", c)
        };
        let v = v.trim();
        if v.is_empty() {
            return false;
        }
        let o = compare(version, v);
        match op {
            ">=" => o != Ordering::Less,
            "<=" => o != Ordering::Greater,
            ">" => o == Ordering::Greater,
            "<" => o == Ordering::Less,
            _ => o == Ordering::Equal,
        }
    })
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
    }
}
