//! Small display helpers for the templates. Pure.

/// A byte count for people: `1.5 GiB`, `512 B`.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

/// An RFC 3339 time or UNIX seconds as `2026-11-23 12:00 UTC`; other text is returned
/// unchanged.
pub fn time(text: &str) -> String {
    let t = text.trim();
    if let Ok(secs) = t.parse::<i64>() {
        return unix(secs);
    }
    match chrono::DateTime::parse_from_rfc3339(t) {
        Ok(d) => d
            .with_timezone(&chrono::Utc)
            .format("%Y-%m-%d %H:%M UTC")
            .to_string(),
        Err(_) => text.to_string(),
    }
}

/// A UNIX time (seconds) as `2026-11-23 12:00 UTC`.
pub fn unix(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|| secs.to_string())
}

/// Quotes a string for a POSIX shell (single quotes).
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Percent-encodes one URL path segment (RFC 3986 unreserved characters pass).
pub fn url_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Percent-encodes a relative path, keeping `/` separators.
pub fn url_path(s: &str) -> String {
    s.split('/').map(url_segment).collect::<Vec<_>>().join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(1023), "1023 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(10 * 1024 * 1024 * 1024), "10.0 GiB");
    }

    #[test]
    fn quoting_and_urls() {
        assert_eq!(shell_quote("a'b"), r"'a'\''b'");
        assert_eq!(url_path("dir/a b#.iso"), "dir/a%20b%23.iso");
        assert_eq!(time("0"), "1970-01-01 00:00 UTC");
        assert_eq!(time("soon"), "soon");
        assert_eq!(time("2026-11-23T12:34:56+01:00"), "2026-11-23 11:34 UTC");
    }
}
