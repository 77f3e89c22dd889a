//! Reading the pages the web frontend renders: the one scraper every test uses (form
//! fields, links, URLs), undoing the template engine's HTML escaping.

/// Undoes HTML escaping: the named entities templates emit (`&amp;`, `&lt;`, `&gt;`,
/// `&quot;`, `&apos;`) and every numeric one (`&#39;`, `&#x2f;`). Anything else is kept
/// as it is.
pub fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        match tail.find(';').filter(|&end| end <= 10).and_then(|end| {
            let entity = &tail[1..end];
            decode_entity(entity).map(|c| (c, end))
        }) {
            Some((c, end)) => {
                out.push(c);
                rest = &tail[end + 1..];
            }
            None => {
                out.push('&');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn decode_entity(e: &str) -> Option<char> {
    match e {
        "amp" => Some('&'),
        "lt" => Some('<'),
        "gt" => Some('>'),
        "quot" => Some('"'),
        "apos" => Some('\''),
        _ => {
            let n = if let Some(hex) = e.strip_prefix("#x").or_else(|| e.strip_prefix("#X")) {
                u32::from_str_radix(hex, 16).ok()?
            } else {
                e.strip_prefix('#')?.parse().ok()?
            };
            char::from_u32(n)
        }
    }
}

/// The value of the `<input … name="NAME" … value="…">` tag in a page (attributes in any
/// order), unescaped.
pub fn input_value(html: &str, name: &str) -> Option<String> {
    let needle = format!("name=\"{name}\"");
    let mut from = 0;
    while let Some(at) = html[from..].find(&needle).map(|i| i + from) {
        let start = html[..at].rfind('<')?;
        let end = at + html[at..].find('>')?;
        let tag = &html[start..end];
        if tag.starts_with("<input") {
            return attr(tag, "value").map(|v| unescape(&v));
        }
        from = at + needle.len();
    }
    None
}

/// An attribute's raw (still escaped) value inside one tag.
fn attr(tag: &str, name: &str) -> Option<String> {
    let needle = format!(" {name}=\"");
    let v = tag.find(&needle)? + needle.len();
    let end = tag[v..].find('"')?;
    Some(tag[v..v + end].to_owned())
}

/// Every `href` (unescaped) that starts with `prefix`, in page order.
pub fn hrefs(html: &str, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(i) = rest.find("href=\"") {
        let tail = &rest[i + 6..];
        let Some(end) = tail.find('"') else { break };
        let h = unescape(&tail[..end]);
        if h.starts_with(prefix) {
            out.push(h);
        }
        rest = &tail[end..];
    }
    out
}

/// Every distinct `SCHEME://…` URL in a page (in attributes or text), unescaped, in page
/// order.
pub fn urls(html: &str, scheme: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = html;
    let needle = format!("{scheme}://");
    while let Some(i) = rest.find(&needle) {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| c == '"' || c == '<' || c == '\'' || c.is_whitespace())
            .unwrap_or(tail.len());
        let u = unescape(&tail[..end]);
        if !out.contains(&u) {
            out.push(u);
        }
        rest = &tail[end..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_named_and_numeric_entities() {
        assert_eq!(
            unescape("a&amp;b &lt;i&gt; &quot;q&quot; &#39;s&#x27; &#x2F;p&#47; &#x3a;"),
            "a&b <i> \"q\" 's' /p/ :"
        );
        assert_eq!(unescape("AT&T & &bogus; &#xZZ;"), "AT&T & &bogus; &#xZZ;");
    }

    #[test]
    fn finds_inputs_in_any_attribute_order() {
        let page = r#"<form><input type="hidden" name="csrf" value="a&#x2f;b">
            <input value="x&amp;y" name="product" type="hidden"><a name="csrf">no</a></form>"#;
        assert_eq!(input_value(page, "csrf").as_deref(), Some("a/b"));
        assert_eq!(input_value(page, "product").as_deref(), Some("x&y"));
        assert_eq!(input_value(page, "missing"), None);
    }

    #[test]
    fn finds_links_and_urls() {
        let page = r#"<a href="/prepare?p=a&amp;v=1">x</a><a href="/logout">y</a>
            <code>ftp://u:p@h:2121/</code> <a href="https://h/d/t/f&#x2f;g">f</a>
            <a href="https://h/d/t/f&#x2f;g">again</a>"#;
        assert_eq!(hrefs(page, "/prepare"), vec!["/prepare?p=a&v=1"]);
        assert_eq!(hrefs(page, "/").len(), 2);
        assert_eq!(urls(page, "ftp"), vec!["ftp://u:p@h:2121/"]);
        assert_eq!(urls(page, "https"), vec!["https://h/d/t/f/g"]);
    }
}
