//! tobj: the SGML-style tagged-object message format carried inside every packet.
//!
//! ```text
//! <tobj type="agent.login" id="17"><login>alice</login><password>a&lt;b</password></tobj>
//! ```
//!
//! A [`Tobj`] has a `type` (what the message is), an `id` (which request a reply belongs to)
//! and an ordered list of [`Fields`]. A field's value is either text or a nested list of
//! fields; a repeated field is the same name given more than once, which is how lists are
//! carried (`<files><file>…</file><file>…</file></files>`).
//!
//! Text is escaped so that any UTF-8 string round-trips exactly: `&` `<` `>` `"` become
//! entities, and every control character (including CR and LF) becomes `&#N;`. The encoder
//! emits no whitespace between tags; the parser is strict (no mixed content, no unknown
//! entities, no attributes other than `type` and `id` on the root) and enforces the limits in
//! [`Limits`]. This module does no I/O.

/// Limits the parser enforces, so a hostile peer cannot make us allocate without bound.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Maximum nesting depth of fields (the root's fields are depth 1).
    pub max_depth: usize,
    /// Maximum number of fields in the whole message, at every depth.
    pub max_fields: usize,
    /// Maximum size of the encoded message in bytes.
    pub max_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: 16,
            max_fields: 100_000,
            max_bytes: 1 << 20,
        }
    }
}

/// Why a tobj could not be parsed or a field could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TobjError {
    /// The text is not a well-formed tobj; `at` is the byte offset.
    #[error("malformed tobj at byte {at}: {what}")]
    Syntax {
        /// Byte offset of the problem.
        at: usize,
        /// What was wrong.
        what: &'static str,
    },
    /// A limit in [`Limits`] was exceeded.
    #[error("tobj exceeds the {0} limit")]
    Limit(&'static str),
    /// A required field is absent.
    #[error("field <{0}> is missing")]
    Missing(String),
    /// A field is present but its value is not what the message type needs.
    #[error("field <{field}> is invalid: {why}")]
    Invalid {
        /// The field's name.
        field: String,
        /// Why it is invalid.
        why: String,
    },
    /// The message is of another type than the one expected.
    #[error("expected a tobj of type {expected:?}, got {got:?}")]
    WrongType {
        /// The type the caller wanted.
        expected: String,
        /// The type that arrived.
        got: String,
    },
}

type Result<T, E = TobjError> = std::result::Result<T, E>;

/// A field's value: text, or nested fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A text value; any UTF-8 string.
    Text(String),
    /// Nested fields (an object, or a list when the names repeat).
    Fields(Fields),
}

/// An ordered list of named fields. Names may repeat (that is how lists are carried).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fields(pub Vec<(String, Value)>);

impl Fields {
    /// No fields.
    pub fn new() -> Self {
        Fields(Vec::new())
    }

    /// Appends a text field (builder style).
    pub fn text(mut self, name: &str, value: impl Into<String>) -> Self {
        self.push_text(name, value);
        self
    }

    /// Appends a text field only when `value` is `Some`.
    pub fn opt_text(mut self, name: &str, value: Option<impl Into<String>>) -> Self {
        if let Some(v) = value {
            self.push_text(name, v);
        }
        self
    }

    /// Appends a number as a text field.
    pub fn num(self, name: &str, value: impl std::fmt::Display) -> Self {
        self.text(name, value.to_string())
    }

    /// Appends a boolean as `true`/`false`.
    pub fn flag(self, name: &str, value: bool) -> Self {
        self.text(name, if value { "true" } else { "false" })
    }

    /// Appends a nested object.
    pub fn object(mut self, name: &str, value: Fields) -> Self {
        self.0.push((name.to_owned(), Value::Fields(value)));
        self
    }

    /// Appends a list: a field `name` holding one `item` field per element.
    pub fn list(mut self, name: &str, item: &str, items: impl IntoIterator<Item = Fields>) -> Self {
        let inner = Fields(
            items
                .into_iter()
                .map(|f| (item.to_owned(), Value::Fields(f)))
                .collect(),
        );
        self.0.push((name.to_owned(), Value::Fields(inner)));
        self
    }

    /// Appends a list of text values: a field `name` holding one `item` text field each.
    pub fn text_list(
        mut self,
        name: &str,
        item: &str,
        items: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        let inner = Fields(
            items
                .into_iter()
                .map(|t| (item.to_owned(), Value::Text(t.into())))
                .collect(),
        );
        self.0.push((name.to_owned(), Value::Fields(inner)));
        self
    }

    /// Appends a text field in place.
    pub fn push_text(&mut self, name: &str, value: impl Into<String>) {
        self.0.push((name.to_owned(), Value::Text(value.into())));
    }

    /// The first field called `name`, if any.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// The text of the required field `name`.
    pub fn req_text(&self, name: &str) -> Result<&str> {
        match self.get(name) {
            Some(Value::Text(t)) => Ok(t),
            Some(Value::Fields(f)) if f.0.is_empty() => Ok(""),
            Some(Value::Fields(_)) => Err(invalid(name, "expected text, found nested fields")),
            None => Err(TobjError::Missing(name.to_owned())),
        }
    }

    /// The text of the optional field `name`.
    pub fn opt_str(&self, name: &str) -> Result<Option<&str>> {
        match self.get(name) {
            None => Ok(None),
            Some(_) => self.req_text(name).map(Some),
        }
    }

    /// The required field `name` parsed with `FromStr` (numbers, for example).
    pub fn req_parse<T: std::str::FromStr>(&self, name: &str) -> Result<T>
    where
        T::Err: std::fmt::Display,
    {
        let t = self.req_text(name)?;
        t.parse().map_err(|e: T::Err| invalid(name, e.to_string()))
    }

    /// The optional field `name` parsed with `FromStr`.
    pub fn opt_parse<T: std::str::FromStr>(&self, name: &str) -> Result<Option<T>>
    where
        T::Err: std::fmt::Display,
    {
        match self.get(name) {
            None => Ok(None),
            Some(_) => self.req_parse(name).map(Some),
        }
    }

    /// The required boolean field `name` (`true` or `false`).
    pub fn req_flag(&self, name: &str) -> Result<bool> {
        match self.req_text(name)? {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(invalid(name, "expected true or false")),
        }
    }

    /// The nested fields of the required field `name`.
    pub fn req_object(&self, name: &str) -> Result<&Fields> {
        match self.get(name) {
            Some(Value::Fields(f)) => Ok(f),
            Some(Value::Text(t)) if t.is_empty() => Ok(EMPTY),
            Some(Value::Text(_)) => Err(invalid(name, "expected nested fields, found text")),
            None => Err(TobjError::Missing(name.to_owned())),
        }
    }

    /// The elements of the list field `name` (each `item`'s nested fields). A missing list
    /// field is an empty list.
    pub fn list_items<'a>(&'a self, name: &str, item: &str) -> Result<Vec<&'a Fields>> {
        let inner = match self.get(name) {
            None => return Ok(Vec::new()),
            Some(_) => self.req_object(name)?,
        };
        inner
            .0
            .iter()
            .map(|(n, v)| match v {
                Value::Fields(f) if n == item => Ok(f),
                Value::Text(t) if n == item && t.is_empty() => Ok(EMPTY),
                _ => Err(invalid(name, format!("expected only <{item}> objects"))),
            })
            .collect()
    }

    /// The elements of the text-list field `name`. A missing list field is an empty list.
    pub fn text_items(&self, name: &str, item: &str) -> Result<Vec<String>> {
        let inner = match self.get(name) {
            None => return Ok(Vec::new()),
            Some(_) => self.req_object(name)?,
        };
        inner
            .0
            .iter()
            .map(|(n, v)| match v {
                Value::Text(t) if n == item => Ok(t.clone()),
                _ => Err(invalid(name, format!("expected only <{item}> text"))),
            })
            .collect()
    }
}

static EMPTY: &Fields = &Fields(Vec::new());

fn invalid(field: &str, why: impl Into<String>) -> TobjError {
    TobjError::Invalid {
        field: field.to_owned(),
        why: why.into(),
    }
}

/// One tagged object: a type, a request id and fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tobj {
    /// What the message is, e.g. `agent.login`. Names starting `ffs.` are the link's own.
    pub kind: String,
    /// The request id; a reply carries its request's id.
    pub id: u64,
    /// The fields, in order.
    pub fields: Fields,
}

impl Tobj {
    /// A tobj with no fields.
    pub fn new(kind: impl Into<String>, id: u64) -> Self {
        Tobj {
            kind: kind.into(),
            id,
            fields: Fields::new(),
        }
    }

    /// A tobj with the given fields.
    pub fn with_fields(kind: impl Into<String>, id: u64, fields: Fields) -> Self {
        Tobj {
            kind: kind.into(),
            id,
            fields,
        }
    }

    /// Encodes to the canonical text form (no whitespace between tags).
    pub fn encode(&self) -> String {
        // Sized for the whole message at once when no text needs escaping (the common case),
        // rather than grown in doublings from a guess.
        let mut out = String::with_capacity(self.encoded_len_hint());
        self.encode_into(&mut out);
        out
    }

    /// Appends the canonical text form to `out` (what [`Tobj::encode`] returns).
    pub fn encode_into(&self, out: &mut String) {
        out.push_str("<tobj type=\"");
        escape_into(out, &self.kind);
        out.push_str("\" id=\"");
        push_decimal(out, self.id);
        out.push_str("\">");
        encode_fields(out, &self.fields);
        out.push_str("</tobj>");
    }

    /// The encoded length when no text needs escaping (a lower bound otherwise).
    fn encoded_len_hint(&self) -> usize {
        // `<tobj type="` `" id="` (up to 20 digits) `">` `</tobj>`
        12 + self.kind.len() + 6 + 20 + 2 + 7 + fields_len_hint(&self.fields)
    }

    /// Parses the canonical text form, enforcing `limits`.
    pub fn parse(text: &str, limits: &Limits) -> Result<Tobj> {
        if text.len() > limits.max_bytes {
            return Err(TobjError::Limit("size"));
        }
        let mut p = Parser {
            text,
            s: text.as_bytes(),
            pos: 0,
            limits,
            fields: 0,
        };
        let tobj = p.root()?;
        if p.pos != p.s.len() {
            return Err(p.err("trailing bytes after </tobj>"));
        }
        Ok(tobj)
    }
}

/// [`Tobj::encoded_len_hint`] of some fields.
fn fields_len_hint(fields: &Fields) -> usize {
    fields
        .0
        .iter()
        .map(|(name, value)| {
            2 * name.len()
                + 5
                + match value {
                    Value::Text(t) => t.len(),
                    Value::Fields(f) => fields_len_hint(f),
                }
        })
        .sum()
}

/// Appends `n` in decimal (what `write!(out, "{n}")` writes, without the formatter).
fn push_decimal(out: &mut String, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // Only ASCII digits were written.
    for &d in &buf[i..] {
        out.push(char::from(d));
    }
}

fn encode_fields(out: &mut String, fields: &Fields) {
    for (name, value) in &fields.0 {
        out.push('<');
        out.push_str(name);
        out.push('>');
        match value {
            Value::Text(t) => escape_into(out, t),
            Value::Fields(f) => encode_fields(out, f),
        }
        out.push_str("</");
        out.push_str(name);
        out.push('>');
    }
}

/// Whether byte `b` of a text must be escaped: `&` `<` `>` `"` and the control characters.
#[inline(always)]
fn needs_escape(b: u8) -> bool {
    // `|` rather than `||`, so that `find_byte` compiles to vector compares.
    (b < 0x20) | (b == 0x7f) | (b == b'&') | (b == b'<') | (b == b'>') | (b == b'"')
}

/// The index of the first byte of `bytes` for which `hit` holds. Looks at 16 bytes at a
/// time without branching inside them (so the compiler vectorizes it): most text is short
/// and has no byte of interest.
#[inline(always)]
fn find_byte(bytes: &[u8], hit: impl Fn(u8) -> bool) -> Option<usize> {
    let mut chunks = bytes.chunks_exact(16);
    let mut at = 0;
    for chunk in &mut chunks {
        if chunk.iter().fold(false, |seen, &b| seen | hit(b)) {
            return chunk.iter().position(|&b| hit(b)).map(|i| at + i);
        }
        at += 16;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| hit(b))
        .map(|i| at + i)
}

/// Escapes `text` so it can stand as a tobj text value or attribute.
pub fn escape_into(out: &mut String, text: &str) {
    // Most text needs no escaping: found at once, and copied whole.
    let Some(first) = find_byte(text.as_bytes(), needs_escape) else {
        out.push_str(text);
        return;
    };
    // Copied in runs between the characters that need escaping; all of those are ASCII,
    // so each run ends on a character boundary.
    let mut run = 0;
    for (i, b) in text.bytes().enumerate().skip(first) {
        // `None`: a control character, written as a numeric reference.
        let entity = match b {
            b'&' => Some("&amp;"),
            b'<' => Some("&lt;"),
            b'>' => Some("&gt;"),
            b'"' => Some("&quot;"),
            b if b < 0x20 || b == 0x7f => None,
            _ => continue,
        };
        out.push_str(&text[run..i]);
        match entity {
            Some(e) => out.push_str(e),
            None => {
                out.push_str("&#");
                push_decimal(out, u64::from(b));
                out.push(';');
            }
        }
        run = i + 1;
    }
    out.push_str(&text[run..]);
}

/// Whether `name` is a valid field or type name: `[a-z][a-z0-9_.-]{0,63}`.
pub fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_lowercase()
        && b.iter().all(|&c| is_name_byte(c))
}

/// Whether `c` may stand in a name: `[a-z0-9_.-]`.
#[inline(always)]
fn is_name_byte(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'.' || c == b'-'
}

struct Parser<'a> {
    /// The text being parsed, and the same as bytes.
    text: &'a str,
    s: &'a [u8],
    pos: usize,
    limits: &'a Limits,
    fields: usize,
}

impl<'a> Parser<'a> {
    fn err(&self, what: &'static str) -> TobjError {
        TobjError::Syntax { at: self.pos, what }
    }

    #[inline]
    fn expect(&mut self, lit: &[u8]) -> Result<()> {
        if self.s[self.pos..].starts_with(lit) {
            self.pos += lit.len();
            Ok(())
        } else {
            Err(self.err("unexpected bytes"))
        }
    }

    #[inline]
    fn expect_byte(&mut self, b: u8) -> Result<()> {
        if self.s.get(self.pos) == Some(&b) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.err("unexpected bytes"))
        }
    }

    fn root(&mut self) -> Result<Tobj> {
        self.expect(b"<tobj type=\"")?;
        let kind = self.text_until(b'"')?;
        if !valid_name(&kind) {
            return Err(self.err("invalid type name"));
        }
        self.expect(b"\" id=\"")?;
        let start = self.pos;
        while self.pos < self.s.len() && self.s[self.pos].is_ascii_digit() {
            self.pos += 1;
        }
        let digits = &self.s[start..self.pos];
        if digits.is_empty() || digits.len() > 20 || (digits.len() > 1 && digits[0] == b'0') {
            return Err(self.err("invalid id"));
        }
        // At most 20 ASCII digits; a value past u64::MAX is a parse error.
        let id = digits
            .iter()
            .try_fold(0u64, |n, &d| {
                n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
            })
            .ok_or_else(|| self.err("id out of range"))?;
        self.expect(b"\">")?;
        let fields = self.fields(1)?;
        self.expect(b"</tobj>")?;
        Ok(Tobj { kind, id, fields })
    }

    /// Parses fields until the next closing tag (`</`), which is left unconsumed.
    fn fields(&mut self, depth: usize) -> Result<Fields> {
        let mut out = Vec::new();
        loop {
            if self.s[self.pos..].starts_with(b"</") {
                return Ok(Fields(out));
            }
            if self.pos >= self.s.len() {
                return Err(self.err("unexpected end"));
            }
            if depth > self.limits.max_depth {
                return Err(TobjError::Limit("depth"));
            }
            self.fields += 1;
            if self.fields > self.limits.max_fields {
                return Err(TobjError::Limit("field count"));
            }
            self.expect_byte(b'<')?;
            let name = self.name()?;
            self.expect_byte(b'>')?;
            let value =
                if self.s.get(self.pos) == Some(&b'<') && self.s.get(self.pos + 1) != Some(&b'/') {
                    Value::Fields(self.fields(depth + 1)?)
                } else {
                    Value::Text(self.text_until(b'<')?)
                };
            self.expect(b"</")?;
            self.close(name)?;
            if out.capacity() == 0 {
                // Room for a typical message's fields at once (rather than 4, then 8).
                out.reserve(8);
            }
            out.push((name.to_owned(), value));
        }
    }

    /// Reads the name of a closing tag, which must be `open`, and its `>`.
    fn close(&mut self, open: &str) -> Result<()> {
        // The usual case, checked directly: the open tag's name, then `>`. `open` is a valid
        // name, so `name` below would read exactly it and stop at that `>`.
        let end = self.pos + open.len();
        // Compared byte by byte: names are short, shorter than a call to `memcmp` costs.
        if let Some(close) = self.s.get(self.pos..end)
            && close.iter().zip(open.as_bytes()).all(|(a, b)| a == b)
            && self.s.get(end) == Some(&b'>')
        {
            self.pos = end + 1;
            return Ok(());
        }
        let close = self.name()?;
        if close != open {
            return Err(self.err("closing tag does not match"));
        }
        self.expect_byte(b'>')
    }

    /// Reads a field name up to the next `<` or `>` (left unconsumed).
    #[inline]
    fn name(&mut self) -> Result<&'a str> {
        // The usual case in one pass: a valid name, then `<` or `>`. Anything else (and every
        // error) is left to `name_checked`, which reads the same name when it is valid.
        let start = self.pos;
        let rest = &self.s[start..];
        let len = rest
            .iter()
            .take(64)
            .position(|&c| !is_name_byte(c))
            .unwrap_or(64);
        if len > 0
            && rest[0].is_ascii_lowercase()
            && matches!(rest.get(len), Some(b'<' | b'>'))
            && let Some(name) = self.text.get(start..start + len)
        {
            self.pos = start + len;
            return Ok(name);
        }
        self.name_checked()
    }

    /// [`Parser::name`] with every check, in the order that picks the error.
    #[cold]
    fn name_checked(&mut self) -> Result<&'a str> {
        let start = self.pos;
        // A name longer than 64 bytes is refused at its 65th byte, before it is checked.
        let window = &self.s[start..self.s.len().min(start + 65)];
        let len = match window.iter().position(|&c| c == b'>' || c == b'<') {
            Some(len) => len,
            None if window.len() > 64 => {
                self.pos = start + 65;
                return Err(self.err("name too long"));
            }
            None => window.len(),
        };
        self.pos = start + len;
        // Ends at `<`, `>` or the end of the text, so on a character boundary.
        let name = self
            .text
            .get(start..self.pos)
            .ok_or_else(|| self.err("bad name"))?;
        if !valid_name(name) {
            return Err(TobjError::Syntax {
                at: start,
                what: "invalid field name",
            });
        }
        Ok(name)
    }

    /// Reads escaped text up to (not including) `stop`, unescaping it.
    #[inline]
    fn text_until(&mut self, stop: u8) -> Result<String> {
        // The usual case in one pass: `stop` comes before anything `unescape` would look at,
        // so the text is copied as it stands. Otherwise `text_checked` does it all again.
        let start = self.pos;
        if let Some(len) = find_byte(&self.s[start..], |b| (b == stop) | is_unescape_special(b))
            && self.s[start + len] == stop
            && let Some(raw) = self.text.get(start..start + len)
        {
            self.pos = start + len;
            return Ok(raw.to_owned());
        }
        self.text_checked(stop)
    }

    /// [`Parser::text_until`] with every check, in the order that picks the error.
    fn text_checked(&mut self, stop: u8) -> Result<String> {
        let start = self.pos;
        let end = memchr::memchr(stop, &self.s[start..])
            .map(|i| start + i)
            .ok_or_else(|| self.err("unterminated text"))?;
        // `start` follows an ASCII byte and `end` is one: both are character boundaries.
        let raw = self
            .text
            .get(start..end)
            .ok_or_else(|| self.err("invalid UTF-8"))?;
        let text = unescape(raw).map_err(|off| TobjError::Syntax {
            at: start + off,
            what: "invalid escape or raw control character",
        })?;
        self.pos = end;
        Ok(text)
    }
}

/// The bytes [`unescape`] stops at: an entity's `&`, and the raw characters it refuses.
#[inline(always)]
fn is_unescape_special(b: u8) -> bool {
    // `|` rather than `||` or `matches!`, so that `find_byte` compiles to vector compares.
    // CR and LF are among the control characters.
    (b == b'&') | (b == b'>') | (b == b'"') | (b < 0x20) | (b == 0x7f)
}

/// Unescapes tobj text; on error returns the byte offset of the problem. (Text with nothing
/// to unescape never gets here: [`Parser::text_until`] copies it whole.)
fn unescape(raw: &str) -> std::result::Result<String, usize> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    let mut off = 0;
    while let Some(i) = rest.bytes().position(is_unescape_special) {
        let c = rest.as_bytes()[i];
        out.push_str(&rest[..i]);
        if c != b'&' {
            return Err(off + i);
        }
        let semi = rest[i..].find(';').filter(|&j| j <= 9).ok_or(off + i)?;
        let ent = &rest[i + 1..i + semi];
        let ch = match ent {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            _ => {
                let digits = ent.strip_prefix('#').ok_or(off + i)?;
                if digits.is_empty()
                    || digits.len() > 7
                    || !digits.bytes().all(|b| b.is_ascii_digit())
                    || (digits.len() > 1 && digits.starts_with('0'))
                {
                    return Err(off + i);
                }
                let n: u32 = digits.parse().map_err(|_| off + i)?;
                char::from_u32(n).ok_or(off + i)?
            }
        };
        out.push(ch);
        rest = &rest[i + semi + 1..];
        off += i + semi + 1;
    }
    out.push_str(rest);
    Ok(out)
}

/// A message type with a fixed tobj `type`, convertible to and from fields.
pub trait Message: Sized {
    /// The tobj `type` attribute for this message.
    const TYPE: &'static str;
    /// The message's fields.
    fn to_fields(&self) -> Fields;
    /// Reads the message from fields; a missing or malformed field is an error.
    fn from_fields(fields: &Fields) -> Result<Self>;

    /// Wraps the message in a tobj with the given id.
    fn to_tobj(&self, id: u64) -> Tobj {
        Tobj::with_fields(Self::TYPE, id, self.to_fields())
    }

    /// Reads the message from a tobj, checking its type.
    fn from_tobj(t: &Tobj) -> Result<Self> {
        if t.kind != Self::TYPE {
            return Err(TobjError::WrongType {
                expected: Self::TYPE.to_owned(),
                got: t.kind.clone(),
            });
        }
        Self::from_fields(&t.fields)
    }
}

/// A request message, the message type that answers it, and the link it travels on.
///
/// The link is part of the type, so code that holds one client per peer can pick the client
/// from the request and a request cannot be sent to the wrong peer: a function that takes
/// only stager requests refuses an agent request at compile time.
///
/// ```
/// use commlink::Request;
/// use commlink::msg::stager::{StagerLink, StatsRequest};
/// fn to_stager<R: Request<Link = StagerLink>>(_: &R) {}
/// to_stager(&StatsRequest {});
/// ```
///
/// ```compile_fail,E0271
/// use commlink::Request;
/// use commlink::msg::agent::Customers;
/// use commlink::msg::stager::StagerLink;
/// fn to_stager<R: Request<Link = StagerLink>>(_: &R) {}
/// to_stager(&Customers {});
/// ```
pub trait Request: Message {
    /// The reply's type.
    type Response: Message;
    /// The link (peer pair) this request travels on.
    type Link: Link;
}

/// A commlink link between two roles, as a marker type ([`crate::msg::agent::AgentLink`],
/// [`crate::msg::stager::StagerLink`]); each [`Request`] names the one it travels on.
pub trait Link {}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The parser and encoder as they were before they were made faster, kept as the
    /// definition: the fast ones must accept, refuse (with the same error) and write exactly
    /// what these do.
    mod reference {
        use super::super::{Fields, Limits, Result, Tobj, TobjError, Value, valid_name};
        use std::fmt::Write as _;

        pub fn encode(t: &Tobj) -> String {
            let mut out = String::with_capacity(64);
            out.push_str("<tobj type=\"");
            escape_into(&mut out, &t.kind);
            let _ = write!(out, "\" id=\"{}\">", t.id);
            encode_fields(&mut out, &t.fields);
            out.push_str("</tobj>");
            out
        }

        fn escape_into(out: &mut String, text: &str) {
            for c in text.chars() {
                match c {
                    '&' => out.push_str("&amp;"),
                    '<' => out.push_str("&lt;"),
                    '>' => out.push_str("&gt;"),
                    '"' => out.push_str("&quot;"),
                    c if (c as u32) < 0x20 || c == '\u{7f}' => {
                        let _ = write!(out, "&#{};", c as u32);
                    }
                    c => out.push(c),
                }
            }
        }

        pub fn parse(text: &str, limits: &Limits) -> Result<Tobj> {
            if text.len() > limits.max_bytes {
                return Err(TobjError::Limit("size"));
            }
            let mut p = Parser {
                s: text.as_bytes(),
                pos: 0,
                limits,
                fields: 0,
            };
            let tobj = p.root()?;
            if p.pos != p.s.len() {
                return Err(p.err("trailing bytes after </tobj>"));
            }
            Ok(tobj)
        }

        fn encode_fields(out: &mut String, fields: &Fields) {
            for (name, value) in &fields.0 {
                out.push('<');
                out.push_str(name);
                out.push('>');
                match value {
                    Value::Text(t) => escape_into(out, t),
                    Value::Fields(f) => encode_fields(out, f),
                }
                out.push_str("</");
                out.push_str(name);
                out.push('>');
            }
        }

        struct Parser<'a> {
            s: &'a [u8],
            pos: usize,
            limits: &'a Limits,
            fields: usize,
        }

        impl Parser<'_> {
            fn err(&self, what: &'static str) -> TobjError {
                TobjError::Syntax { at: self.pos, what }
            }

            fn expect(&mut self, lit: &str) -> Result<()> {
                if self.s[self.pos..].starts_with(lit.as_bytes()) {
                    self.pos += lit.len();
                    Ok(())
                } else {
                    Err(self.err("unexpected bytes"))
                }
            }

            fn root(&mut self) -> Result<Tobj> {
                self.expect("<tobj type=\"")?;
                let kind = self.text_until(b'"')?;
                if !valid_name(&kind) {
                    return Err(self.err("invalid type name"));
                }
                self.expect("\" id=\"")?;
                let start = self.pos;
                while self.pos < self.s.len() && self.s[self.pos].is_ascii_digit() {
                    self.pos += 1;
                }
                let digits = &self.s[start..self.pos];
                if digits.is_empty() || digits.len() > 20 || (digits.len() > 1 && digits[0] == b'0')
                {
                    return Err(self.err("invalid id"));
                }
                // Digits are ASCII, so this is valid UTF-8; overflow is a parse error.
                let id = std::str::from_utf8(digits)
                    .ok()
                    .and_then(|d| d.parse::<u64>().ok())
                    .ok_or_else(|| self.err("id out of range"))?;
                self.expect("\">")?;
                let fields = self.fields(1)?;
                self.expect("</tobj>")?;
                Ok(Tobj { kind, id, fields })
            }

            /// Parses fields until the next closing tag (`</`), which is left unconsumed.
            fn fields(&mut self, depth: usize) -> Result<Fields> {
                let mut out = Vec::new();
                loop {
                    if self.s[self.pos..].starts_with(b"</") {
                        return Ok(Fields(out));
                    }
                    if self.pos >= self.s.len() {
                        return Err(self.err("unexpected end"));
                    }
                    if depth > self.limits.max_depth {
                        return Err(TobjError::Limit("depth"));
                    }
                    self.fields += 1;
                    if self.fields > self.limits.max_fields {
                        return Err(TobjError::Limit("field count"));
                    }
                    self.expect("<")?;
                    let name = self.name()?;
                    self.expect(">")?;
                    let value = if self.s.get(self.pos) == Some(&b'<')
                        && self.s.get(self.pos + 1) != Some(&b'/')
                    {
                        Value::Fields(self.fields(depth + 1)?)
                    } else {
                        Value::Text(self.text_until(b'<')?)
                    };
                    self.expect("</")?;
                    let close = self.name()?;
                    if close != name {
                        return Err(self.err("closing tag does not match"));
                    }
                    self.expect(">")?;
                    if out.capacity() == 0 {
                        // Room for a typical message's fields at once (rather than 4, then 8).
                        out.reserve(8);
                    }
                    out.push((name, value));
                }
            }

            fn name(&mut self) -> Result<String> {
                let start = self.pos;
                while self.pos < self.s.len() && !matches!(self.s[self.pos], b'>' | b'<') {
                    self.pos += 1;
                    if self.pos - start > 64 {
                        return Err(self.err("name too long"));
                    }
                }
                let name = std::str::from_utf8(&self.s[start..self.pos])
                    .map_err(|_| self.err("bad name"))?;
                if !valid_name(name) {
                    return Err(TobjError::Syntax {
                        at: start,
                        what: "invalid field name",
                    });
                }
                Ok(name.to_owned())
            }

            /// Reads escaped text up to (not including) `stop`, unescaping it.
            fn text_until(&mut self, stop: u8) -> Result<String> {
                let start = self.pos;
                let end = memchr::memchr(stop, &self.s[start..])
                    .map(|i| start + i)
                    .ok_or_else(|| self.err("unterminated text"))?;
                let raw = std::str::from_utf8(&self.s[start..end])
                    .map_err(|_| self.err("invalid UTF-8"))?;
                let text = unescape(raw).map_err(|off| TobjError::Syntax {
                    at: start + off,
                    what: "invalid escape or raw control character",
                })?;
                self.pos = end;
                Ok(text)
            }
        }

        /// Unescapes tobj text; on error returns the byte offset of the problem.
        fn unescape(raw: &str) -> std::result::Result<String, usize> {
            // Most text has nothing to unescape: one pass (vectorized) to see, then one copy.
            let special = |b: u8| matches!(b, b'&' | b'>' | b'"') || b < 0x20 || b == 0x7f;
            if !raw.bytes().fold(false, |seen, b| seen | special(b)) {
                return Ok(raw.to_owned());
            }
            let mut out = String::with_capacity(raw.len());
            let mut rest = raw;
            let mut off = 0;
            while let Some(i) = rest.bytes().position(&special) {
                let c = rest.as_bytes()[i];
                out.push_str(&rest[..i]);
                if c != b'&' {
                    return Err(off + i);
                }
                let semi = rest[i..].find(';').filter(|&j| j <= 9).ok_or(off + i)?;
                let ent = &rest[i + 1..i + semi];
                let ch = match ent {
                    "amp" => '&',
                    "lt" => '<',
                    "gt" => '>',
                    "quot" => '"',
                    _ => {
                        let digits = ent.strip_prefix('#').ok_or(off + i)?;
                        if digits.is_empty()
                            || digits.len() > 7
                            || !digits.bytes().all(|b| b.is_ascii_digit())
                            || (digits.len() > 1 && digits.starts_with('0'))
                        {
                            return Err(off + i);
                        }
                        let n: u32 = digits.parse().map_err(|_| off + i)?;
                        char::from_u32(n).ok_or(off + i)?
                    }
                };
                out.push(ch);
                rest = &rest[i + semi + 1..];
                off += i + semi + 1;
            }
            out.push_str(rest);
            Ok(out)
        }
    }

    fn sample() -> Tobj {
        Tobj::with_fields(
            "agent.login",
            17,
            Fields::new()
                .text("login", "alice")
                .text("password", "a<b&c>\"d\r\n\té")
                .list(
                    "files",
                    "file",
                    [
                        Fields::new().text("name", "x.iso").num("size", 3),
                        Fields::new().text("name", "").num("size", 0),
                    ],
                ),
        )
    }

    #[test]
    fn encodes_canonical_bytes() {
        let t = Tobj::with_fields("t", 1, Fields::new().text("v", "a<b&\r\n"));
        assert_eq!(
            t.encode(),
            "<tobj type=\"t\" id=\"1\"><v>a&lt;b&amp;&#13;&#10;</v></tobj>"
        );
    }

    #[test]
    fn round_trips_nested_lists() {
        let t = sample();
        let back = Tobj::parse(&t.encode(), &Limits::default()).unwrap();
        assert_eq!(back, t);
        let files = back.fields.list_items("files", "file").unwrap();
        assert_eq!(files.len(), 2);
        assert_eq!(files[0].req_parse::<u64>("size").unwrap(), 3);
        assert_eq!(files[1].req_text("name").unwrap(), "");
    }

    #[test]
    fn rejects_malformed() {
        let l = Limits::default();
        for bad in [
            "",
            "<tobj type=\"a\" id=\"1\">",
            "<tobj type=\"a\" id=\"01\"></tobj>",
            "<tobj type=\"A\" id=\"1\"></tobj>",
            "<tobj type=\"a\" id=\"1\"><x>1</y></tobj>",
            "<tobj type=\"a\" id=\"1\"><x>a&bogus;</x></tobj>",
            "<tobj type=\"a\" id=\"1\"><x>a\nb</x></tobj>",
            "<tobj type=\"a\" id=\"1\"><x>a>b</x></tobj>",
            "<tobj type=\"a\" id=\"1\"><x><y>1</y>text</x></tobj>",
            "<tobj type=\"a\" id=\"1\"></tobj>junk",
            "<tobj type=\"a\" id=\"99999999999999999999\"></tobj>",
            "<tobj type=\"a\" id=\"1\"><x>&#55296;</x></tobj>",
        ] {
            assert!(Tobj::parse(bad, &l).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn enforces_limits() {
        let deep = format!(
            "<tobj type=\"a\" id=\"1\">{}x{}</tobj>",
            "<a>".repeat(20),
            "</a>".repeat(20)
        );
        let l = Limits::default();
        assert_eq!(Tobj::parse(&deep, &l), Err(TobjError::Limit("depth")));
        let many = format!("<tobj type=\"a\" id=\"1\">{}</tobj>", "<a>1</a>".repeat(50));
        let small = Limits {
            max_fields: 10,
            ..l
        };
        assert_eq!(
            Tobj::parse(&many, &small),
            Err(TobjError::Limit("field count"))
        );
        let tiny = Limits { max_bytes: 10, ..l };
        assert_eq!(Tobj::parse(&many, &tiny), Err(TobjError::Limit("size")));
    }

    fn arb_fields(depth: u32) -> impl Strategy<Value = Fields> {
        let leaf =
            ("[a-z][a-z0-9_.-]{0,8}", any::<String>()).prop_map(|(n, t)| (n, Value::Text(t)));
        let leaves = proptest::collection::vec(leaf, 0..4).prop_map(Fields);
        leaves.prop_recursive(depth, 32, 4, |inner| {
            proptest::collection::vec(
                prop_oneof![
                    ("[a-z][a-z0-9_.-]{0,8}", any::<String>())
                        .prop_map(|(n, t)| (n, Value::Text(t))),
                    ("[a-z][a-z0-9_]{0,8}", inner).prop_map(|(n, f)| (n, Value::Fields(f))),
                ],
                0..4,
            )
            .prop_map(Fields)
        })
    }

    /// Empty nested fields encode like empty text; normalise before comparing.
    fn normalise(f: &Fields) -> Fields {
        Fields(
            f.0.iter()
                .map(|(n, v)| match v {
                    Value::Fields(inner) if inner.0.is_empty() => {
                        (n.clone(), Value::Text(String::new()))
                    }
                    Value::Fields(inner) => (n.clone(), Value::Fields(normalise(inner))),
                    t => (n.clone(), t.clone()),
                })
                .collect(),
        )
    }

    /// Parses with both parsers and requires the same result, errors included.
    fn same_as_reference(text: &str, limits: &Limits) -> Result<Tobj> {
        let fast = Tobj::parse(text, limits);
        assert_eq!(fast, reference::parse(text, limits), "on {text:?}");
        fast
    }

    /// PROTOCOL.md §7: a raw control character in text (U+0000–U+001F, U+007F) is refused
    /// wherever it stands, before, between or after entities, and the error points at it;
    /// the same character written as `&#N;` is accepted.
    #[test]
    fn raw_control_characters_in_text_are_refused_at_their_offset() {
        let l = Limits::default();
        let prefix = "<tobj type=\"a.b\" id=\"7\">";
        let wrap = |inner: &str| format!("{prefix}<x>{inner}</x></tobj>");
        for (inner, at) in [
            ("a\tb", 1),
            ("\u{1}", 0),
            ("\u{0}", 0),
            ("\u{7f}x", 0),
            ("\t&amp;", 0),
            ("&amp;\u{1f}", 5),
            ("&amp;x\u{1b}&lt;", 6),
            ("é\r", 2),
            ("ok\n", 2),
        ] {
            let err = Tobj::parse(&wrap(inner), &l).unwrap_err();
            assert_eq!(
                err,
                TobjError::Syntax {
                    at: prefix.len() + "<x>".len() + at,
                    what: "invalid escape or raw control character",
                },
                "{inner:?}"
            );
        }
        let t = Tobj::parse(&wrap("a&#9;b&#1;&#127;"), &l).unwrap();
        assert_eq!(
            t.fields.get("x"),
            Some(&Value::Text("a\tb\u{1}\u{7f}".into()))
        );
    }

    /// Text with and without entities, numeric references for control characters, and the
    /// cases the fast paths (unescaped text copied whole, closing tags compared directly)
    /// must hand to the slow ones.
    #[test]
    fn fast_paths_agree_with_the_reference() {
        let l = Limits::default();
        let wrap = |inner: &str| format!("<tobj type=\"a.b\" id=\"7\">{inner}</tobj>");
        let ok = [
            "<x>plain text, no entities</x>",
            "<x>a&amp;b&lt;c&gt;d&quot;e</x>",
            "<x>&#0;&#9;&#13;&#10;&#31;&#127;</x>",
            "<x>é😀 ü</x>",
            "<x></x><y><z>1</z><z></z></y>",
            "<x><y><z>deep &amp; nested</z></y><w>after</w></x>",
            "<a-b.c_9>v</a-b.c_9>",
        ];
        for inner in ok {
            let text = wrap(inner);
            let t = same_as_reference(&text, &l).unwrap_or_else(|e| panic!("{inner}: {e}"));
            assert_eq!(t.encode(), text, "canonical input re-encodes to itself");
        }
        let got = same_as_reference(&wrap("<x>a&amp;b&#10;c</x>"), &l).unwrap();
        assert_eq!(got.fields.req_text("x").unwrap(), "a&b\nc");
        // Any scalar value may be written as a reference, not only the ones that must be.
        let got = same_as_reference(&wrap("<x>&#233;&#128512;é</x>"), &l).unwrap();
        assert_eq!(got.fields.req_text("x").unwrap(), "é😀é");
        let long = "n".repeat(64);
        let too_long = "n".repeat(65);
        for inner in [
            "<x>a&amp</x>",
            "<x>a&amp;b&c</x>",
            "<x>&#01;</x>",
            "<x>&#;</x>",
            "<x>&#x41;</x>",
            "<x>&#1114112;</x>",
            "<x>&#12345678;</x>",
            "<x>a\"b</x>",
            "<x>a\rb</x>",
            "<x>&amp;\u{1}</x>",
            "<x>\u{1}</x>",
            "<x>\t&amp;</x>",
            "<x>1</xy>",
            "<xy>1</x>",
            "<x>1</x",
            "<x>1</X>",
            "<x>1</>",
            "<x>1</x >",
            "<x>1<x>",
            "<x><y>1</y></z>",
            "<x><y>1</y>",
            "<>1</>",
            "<X>1</X>",
            &format!("<{long}>1</{long}>"),
            &format!("<{too_long}>1</{too_long}>"),
            &format!("<{long}>1</{too_long}>"),
            &format!("<x>1</{too_long}"),
        ] {
            let _ = same_as_reference(&wrap(inner), &l);
        }
        let _ = same_as_reference(&format!("<tobj type=\"{long}\" id=\"1\"></tobj>"), &l);
        for id in [
            "0",
            "18446744073709551615",
            "18446744073709551616",
            "099",
            "",
            "1a",
        ] {
            let _ = same_as_reference(&format!("<tobj type=\"a\" id=\"{id}\"></tobj>"), &l);
        }
        for kind in ["a&amp;b", "a&lt;", "a>b", "", "a\nb"] {
            let _ = same_as_reference(&format!("<tobj type=\"{kind}\" id=\"1\"></tobj>"), &l);
        }
        // Limits: depth and field count exactly at and one past the limit.
        let nest = |n: usize| wrap(&format!("{}x{}", "<a>".repeat(n), "</a>".repeat(n)));
        assert!(same_as_reference(&nest(16), &l).is_ok());
        assert_eq!(
            same_as_reference(&nest(17), &l),
            Err(TobjError::Limit("depth"))
        );
        let ten = Limits {
            max_fields: 10,
            ..l
        };
        assert!(same_as_reference(&wrap(&"<a>1</a>".repeat(10)), &ten).is_ok());
        assert_eq!(
            same_as_reference(&wrap(&"<a>1</a>".repeat(11)), &ten),
            Err(TobjError::Limit("field count"))
        );
    }

    /// Strings that are almost tobjs: an encoded message with one byte changed, inserted or
    /// removed, from the characters the grammar cares about.
    fn near_tobj() -> impl Strategy<Value = String> {
        let edit = (
            any::<prop::sample::Index>(),
            0..3u8,
            prop::sample::select(vec![
                '<', '>', '/', '&', ';', '#', '"', '\r', '\n', '\t', '\u{1}', 'a', '0', ' ', 'é',
            ]),
        );
        (
            "[a-z][a-z0-9_.-]{0,8}",
            any::<u64>(),
            arb_fields(3),
            proptest::collection::vec(edit, 0..3),
        )
            .prop_map(|(kind, id, fields, edits)| {
                let mut text = Tobj::with_fields(kind, id, fields).encode();
                for (at, op, c) in edits {
                    let mut i = at.index(text.len() + 1);
                    while !text.is_char_boundary(i) {
                        i -= 1;
                    }
                    match op {
                        0 => text.insert(i, c),
                        1 if i < text.len() => {
                            text.remove(i);
                        }
                        _ if i < text.len() => {
                            text.remove(i);
                            text.insert(i, c);
                        }
                        _ => {}
                    }
                }
                text
            })
    }

    proptest! {
        #[test]
        fn any_tobj_round_trips(kind in "[a-z][a-z0-9_.-]{0,20}", id in any::<u64>(), fields in arb_fields(4)) {
            let t = Tobj::with_fields(kind, id, fields);
            let text = t.encode();
            prop_assert!(!text.contains('\r') && !text.contains('\n'));
            let back = Tobj::parse(&text, &Limits::default()).unwrap();
            prop_assert_eq!(back.kind, t.kind);
            prop_assert_eq!(back.id, t.id);
            prop_assert_eq!(normalise(&back.fields), normalise(&t.fields));
        }

        /// Escaping in runs writes exactly the canonical form, character by character.
        #[test]
        fn escaping_is_the_canonical_form(text in any::<String>(), ascii in "[ -~\\t\\x00\\x7f&<>\"]{0,40}") {
            for t in [&text, &ascii] {
                let mut fast = String::from("x");
                escape_into(&mut fast, t);
                let mut slow = String::from("x");
                for c in t.chars() {
                    match c {
                        '&' => slow.push_str("&amp;"),
                        '<' => slow.push_str("&lt;"),
                        '>' => slow.push_str("&gt;"),
                        '"' => slow.push_str("&quot;"),
                        c if (c as u32) < 0x20 || c == '\u{7f}' => slow.push_str(&format!("&#{};", c as u32)),
                        c => slow.push(c),
                    }
                }
                prop_assert_eq!(fast, slow);
            }
        }

        #[test]
        fn parser_never_panics(s in any::<String>()) {
            let _ = Tobj::parse(&s, &Limits::default());
        }

        /// The parser accepts and refuses exactly what the reference parser does, with the
        /// same error.
        #[test]
        fn parser_agrees_with_the_reference(near in near_tobj(), any_text in any::<String>()) {
            let l = Limits::default();
            let small = Limits { max_depth: 2, max_fields: 5, max_bytes: 200 };
            for text in [&near, &any_text] {
                prop_assert_eq!(Tobj::parse(text, &l), reference::parse(text, &l));
                prop_assert_eq!(Tobj::parse(text, &small), reference::parse(text, &small));
            }
        }

        /// The encoder writes exactly what the reference encoder does.
        #[test]
        fn encoder_agrees_with_the_reference(kind in any::<String>(), id in any::<u64>(), fields in arb_fields(4)) {
            let t = Tobj::with_fields(kind, id, fields);
            let want = reference::encode(&t);
            prop_assert_eq!(&t.encode(), &want);
            let mut appended = String::from("x");
            t.encode_into(&mut appended);
            prop_assert_eq!(&appended[1..], &want[..]);
        }
    }
}
