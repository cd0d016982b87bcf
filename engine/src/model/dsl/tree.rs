//! A generic, position-carrying tree of the file's values, read from YAML or JSON.
//!
//! The document reader works on this tree rather than on serde-derived structs so that it can
//! report every problem of a file at once (serde stops at the first), with the position of
//! each offending key or value.

use std::fmt;

use super::document::Span;
use super::error::DslError;

/// One value of the file with its position.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub value: Value,
    pub span: Span,
}

/// A YAML/JSON value. Mapping entries keep their order and their duplicates: the reader
/// reports duplicates itself.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Value {
    /// What the value is, for "expected …, found …" messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

/// Source format of a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// YAML 1.2.
    Yaml,
    /// JSON (RFC 8259).
    Json,
}

impl Format {
    /// The format a file name suggests: `.json` is JSON, anything else YAML.
    pub fn from_file_name(name: &str) -> Format {
        if name.to_ascii_lowercase().ends_with(".json") {
            Format::Json
        } else {
            Format::Yaml
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Yaml => "YAML",
            Format::Json => "JSON",
        })
    }
}

/// Reads `text` into a tree, or the syntax error that prevents it.
pub(crate) fn read(file: &str, text: &str, format: Format) -> Result<Node, DslError> {
    match format {
        Format::Yaml => yaml::read(file, text),
        Format::Json => json::read(file, text),
    }
}

mod yaml {
    use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
    use serde_saphyr::Spanned;

    use super::{DslError, Node, Span, Value};

    fn span_of(location: &serde_saphyr::Location) -> Span {
        let span = location.span();
        Span {
            line: u32::try_from(location.line()).unwrap_or(u32::MAX),
            column: u32::try_from(location.column()).unwrap_or(u32::MAX),
            offset: span
                .byte_offset()
                .and_then(|o| usize::try_from(o).ok())
                .unwrap_or(0),
            len: span
                .byte_len()
                .and_then(|o| usize::try_from(o).ok())
                .unwrap_or(0),
        }
    }

    fn node(spanned: Spanned<Value>) -> Node {
        Node {
            span: span_of(&spanned.referenced),
            value: spanned.value,
        }
    }

    impl<'de> Deserialize<'de> for Value {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Value, D::Error> {
            deserializer.deserialize_any(ValueVisitor)
        }
    }

    struct ValueVisitor;

    impl<'de> Visitor<'de> for ValueVisitor {
        type Value = Value;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("any YAML value")
        }
        fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
            Ok(Value::Bool(v))
        }
        fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
            Ok(Value::Int(v.into()))
        }
        fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
            Ok(Value::Int(v.into()))
        }
        fn visit_i128<E>(self, v: i128) -> Result<Value, E> {
            Ok(Value::Int(v))
        }
        fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
            i128::try_from(v)
                .map(Value::Int)
                .map_err(|_| E::custom("integer out of range"))
        }
        fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
            Ok(Value::Float(v))
        }
        fn visit_str<E>(self, v: &str) -> Result<Value, E> {
            Ok(Value::Str(v.to_owned()))
        }
        fn visit_string<E>(self, v: String) -> Result<Value, E> {
            Ok(Value::Str(v))
        }
        fn visit_char<E>(self, v: char) -> Result<Value, E> {
            Ok(Value::Str(v.to_string()))
        }
        fn visit_unit<E>(self) -> Result<Value, E> {
            Ok(Value::Null)
        }
        fn visit_none<E>(self) -> Result<Value, E> {
            Ok(Value::Null)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
            Value::deserialize(d)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
            let mut items = Vec::new();
            while let Some(item) = seq.next_element::<Spanned<Value>>()? {
                items.push(node(item));
            }
            Ok(Value::Seq(items))
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
            let mut entries = Vec::new();
            while let Some(key) = map.next_key::<Spanned<Value>>()? {
                let value = map.next_value::<Spanned<Value>>()?;
                entries.push((node(key), node(value)));
            }
            Ok(Value::Map(entries))
        }
    }

    pub(super) fn read(file: &str, text: &str) -> Result<Node, DslError> {
        let options = serde_saphyr::options! {
            // A schema document grows with the schema (≈ 125 nodes a table in what `introspect`
            // writes): the default budget (250,000 nodes) refused a 2,000-table document. Alias
            // and anchor limits, which stop expansion bombs, keep their defaults.
            budget: serde_saphyr::budget! {
                max_nodes: 50_000_000,
                max_events: 100_000_000,
                max_total_scalar_bytes: 1 << 30,
            },
            // Duplicates reach the reader, which reports all of them with their positions.
            duplicate_keys: serde_saphyr::DuplicateKeyPolicy::PassThrough,
            with_snippet: false,
            // YAML 1.2: `n`, `no`, `off` are names, not booleans (a column named `n`).
            strict_booleans: true,
            // `007` and `1_000` stay the text they look like.
            leading_zero_numbers_as_strings: true,
            underscored_numbers_as_strings: true,
        };
        match serde_saphyr::from_str_with_options::<Option<Spanned<Value>>>(text, options) {
            Ok(Some(root)) => {
                let mut root = node(root);
                big_integers(&mut root, text);
                Ok(root)
            }
            Ok(None) => Ok(Node {
                value: Value::Null,
                span: Span {
                    line: 1,
                    column: 1,
                    offset: 0,
                    len: 0,
                },
            }),
            Err(e) => {
                let span = e.location().map(|l| span_of(&l)).unwrap_or(Span {
                    line: 1,
                    column: 1,
                    offset: 0,
                    len: 0,
                });
                Err(DslError::new(
                    file,
                    "",
                    span,
                    format!("invalid YAML: {}", clean_message(&e.to_string())),
                    None,
                ))
            }
        }
    }

    /// serde-saphyr reads an integer beyond 64 bits as a float; it is an integer, as in JSON,
    /// so that the reader says it does not fit rather than that it is not an integer.
    fn big_integers(node: &mut Node, text: &str) {
        match &mut node.value {
            Value::Float(_) => {
                let written = text
                    .get(node.span.offset..node.span.offset + node.span.len)
                    .unwrap_or_default()
                    .trim();
                let digits = written.strip_prefix(['-', '+']).unwrap_or(written);
                if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
                    if let Ok(i) = written.parse::<i128>() {
                        node.value = Value::Int(i);
                    }
                }
            }
            Value::Seq(items) => items.iter_mut().for_each(|i| big_integers(i, text)),
            Value::Map(entries) => entries.iter_mut().for_each(|(k, v)| {
                big_integers(k, text);
                big_integers(v, text);
            }),
            _ => {}
        }
    }

    /// serde-saphyr appends the position to its messages; ours carry it already. Its advice
    /// about its own API is no use to the author of a document.
    fn clean_message(message: &str) -> String {
        let first = message.lines().next().unwrap_or(message).trim();
        let first = match first.find(" at line ") {
            Some(i) => &first[..i],
            None => first,
        };
        if first.starts_with("multiple YAML documents detected") {
            "more than one document (a second `---`); a schema file holds one".to_owned()
        } else if let Some(detail) = first.strip_prefix("budget breached: ") {
            format!("the document is too large, or its aliases expand too much ({detail})")
        } else {
            first.to_owned()
        }
    }
}

mod json {
    //! A small JSON reader that keeps positions (serde_json does not expose them per value).

    use super::{DslError, Node, Span, Value};

    /// Deeper documents are refused rather than risk the stack: the DSL nests about eight
    /// levels deep.
    const MAX_DEPTH: usize = 128;

    struct Reader<'a> {
        file: &'a str,
        text: &'a str,
        bytes: &'a [u8],
        pos: usize,
        line: u32,
        /// Byte offset where the current line starts, to count columns in characters.
        line_start: usize,
    }

    pub(super) fn read(file: &str, text: &str) -> Result<Node, DslError> {
        let mut r = Reader {
            file,
            text,
            bytes: text.as_bytes(),
            pos: 0,
            line: 1,
            line_start: 0,
        };
        // A byte-order mark is not JSON, but editors write it.
        if text.starts_with('\u{feff}') {
            r.pos = 3;
            r.line_start = 3;
        }
        r.skip_ws();
        let root = r.value(0)?;
        r.skip_ws();
        if r.pos < r.bytes.len() {
            return Err(r.error("unexpected text after the JSON value"));
        }
        Ok(root)
    }

    impl Reader<'_> {
        fn span_at(&self, start: usize) -> Span {
            let column = self.text[self.line_start..start.max(self.line_start)]
                .chars()
                .count();
            Span {
                line: self.line,
                column: u32::try_from(column + 1).unwrap_or(u32::MAX),
                offset: start,
                len: 0,
            }
        }

        fn error(&self, message: &str) -> DslError {
            let mut span = self.span_at(self.pos.min(self.bytes.len()));
            span.len = usize::from(self.pos < self.bytes.len());
            DslError::new(
                self.file,
                "",
                span,
                format!("invalid JSON: {message}"),
                None,
            )
        }

        fn peek(&self) -> Option<u8> {
            self.bytes.get(self.pos).copied()
        }

        fn skip_ws(&mut self) {
            while let Some(b) = self.peek() {
                match b {
                    b' ' | b'\t' | b'\r' => self.pos += 1,
                    b'\n' => {
                        self.pos += 1;
                        self.line += 1;
                        self.line_start = self.pos;
                    }
                    _ => break,
                }
            }
        }

        fn expect(&mut self, b: u8, what: &str) -> Result<(), DslError> {
            if self.peek() == Some(b) {
                self.pos += 1;
                Ok(())
            } else {
                Err(self.error(&format!("expected {what}")))
            }
        }

        fn value(&mut self, depth: usize) -> Result<Node, DslError> {
            if depth > MAX_DEPTH {
                return Err(self.error("nested too deeply"));
            }
            let start = self.pos;
            let span = self.span_at(start);
            let value = match self.peek() {
                Some(b'{') => self.object(depth)?,
                Some(b'[') => self.array(depth)?,
                Some(b'"') => Value::Str(self.string()?),
                Some(b't') => self.word("true", Value::Bool(true))?,
                Some(b'f') => self.word("false", Value::Bool(false))?,
                Some(b'n') => self.word("null", Value::Null)?,
                Some(b'-' | b'0'..=b'9') => self.number()?,
                Some(_) => return Err(self.error("expected a value")),
                None => return Err(self.error("unexpected end of input")),
            };
            let len = self.pos - start;
            Ok(Node {
                value,
                span: Span { len, ..span },
            })
        }

        fn word(&mut self, word: &str, value: Value) -> Result<Value, DslError> {
            if self.bytes[self.pos..].starts_with(word.as_bytes()) {
                self.pos += word.len();
                Ok(value)
            } else {
                Err(self.error("expected a value"))
            }
        }

        fn object(&mut self, depth: usize) -> Result<Value, DslError> {
            self.pos += 1;
            let mut entries = Vec::new();
            self.skip_ws();
            if self.peek() == Some(b'}') {
                self.pos += 1;
                return Ok(Value::Map(entries));
            }
            loop {
                self.skip_ws();
                if self.peek() != Some(b'"') {
                    return Err(self.error("expected a string key"));
                }
                let key = self.value(depth + 1)?;
                self.skip_ws();
                self.expect(b':', "`:`")?;
                self.skip_ws();
                let value = self.value(depth + 1)?;
                entries.push((key, value));
                self.skip_ws();
                match self.peek() {
                    Some(b',') => self.pos += 1,
                    Some(b'}') => {
                        self.pos += 1;
                        return Ok(Value::Map(entries));
                    }
                    _ => return Err(self.error("expected `,` or `}`")),
                }
            }
        }

        fn array(&mut self, depth: usize) -> Result<Value, DslError> {
            self.pos += 1;
            let mut items = Vec::new();
            self.skip_ws();
            if self.peek() == Some(b']') {
                self.pos += 1;
                return Ok(Value::Seq(items));
            }
            loop {
                self.skip_ws();
                items.push(self.value(depth + 1)?);
                self.skip_ws();
                match self.peek() {
                    Some(b',') => self.pos += 1,
                    Some(b']') => {
                        self.pos += 1;
                        return Ok(Value::Seq(items));
                    }
                    _ => return Err(self.error("expected `,` or `]`")),
                }
            }
        }

        fn hex4(&mut self) -> Result<u32, DslError> {
            let digits = self
                .text
                .get(self.pos..self.pos + 4)
                .filter(|d| d.bytes().all(|b| b.is_ascii_hexdigit()))
                .ok_or_else(|| self.error("expected four hex digits after `\\u`"))?;
            let v = u32::from_str_radix(digits, 16)
                .map_err(|_| self.error("expected four hex digits after `\\u`"))?;
            self.pos += 4;
            Ok(v)
        }

        fn string(&mut self) -> Result<String, DslError> {
            self.pos += 1;
            let mut out = String::new();
            loop {
                let Some(b) = self.peek() else {
                    return Err(self.error("unterminated string"));
                };
                match b {
                    b'"' => {
                        self.pos += 1;
                        return Ok(out);
                    }
                    b'\\' => {
                        self.pos += 1;
                        let Some(e) = self.peek() else {
                            return Err(self.error("unterminated string"));
                        };
                        self.pos += 1;
                        match e {
                            b'"' => out.push('"'),
                            b'\\' => out.push('\\'),
                            b'/' => out.push('/'),
                            b'b' => out.push('\u{8}'),
                            b'f' => out.push('\u{c}'),
                            b'n' => out.push('\n'),
                            b'r' => out.push('\r'),
                            b't' => out.push('\t'),
                            b'u' => {
                                let first = self.hex4()?;
                                let code = if (0xD800..0xDC00).contains(&first) {
                                    if !self.bytes[self.pos..].starts_with(b"\\u") {
                                        return Err(
                                            self.error("unpaired surrogate in `\\u` escape")
                                        );
                                    }
                                    self.pos += 2;
                                    let second = self.hex4()?;
                                    if !(0xDC00..0xE000).contains(&second) {
                                        return Err(
                                            self.error("unpaired surrogate in `\\u` escape")
                                        );
                                    }
                                    0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
                                } else {
                                    first
                                };
                                match char::from_u32(code) {
                                    Some(c) => out.push(c),
                                    None => {
                                        return Err(self.error("unpaired surrogate in `\\u` escape"))
                                    }
                                }
                            }
                            _ => {
                                self.pos -= 1;
                                return Err(self.error("invalid escape"));
                            }
                        }
                    }
                    0..=0x1f => return Err(self.error("control character in string")),
                    _ => {
                        // Copy the whole UTF-8 sequence; the input is a `str`, so it is valid.
                        let rest = &self.text[self.pos..];
                        let Some(c) = rest.chars().next() else {
                            return Err(self.error("unterminated string"));
                        };
                        out.push(c);
                        self.pos += c.len_utf8();
                    }
                }
            }
        }

        fn number(&mut self) -> Result<Value, DslError> {
            let start = self.pos;
            if self.peek() == Some(b'-') {
                self.pos += 1;
            }
            let digits = |r: &mut Self| {
                let s = r.pos;
                while r.peek().is_some_and(|b| b.is_ascii_digit()) {
                    r.pos += 1;
                }
                r.pos - s
            };
            let int_start = self.pos;
            let n = digits(self);
            let invalid = |r: &mut Self| {
                r.pos = start;
                r.error("invalid number")
            };
            if n == 0 || (n > 1 && self.bytes[int_start] == b'0') {
                return Err(invalid(self));
            }
            let mut float = false;
            if self.peek() == Some(b'.') {
                float = true;
                self.pos += 1;
                if digits(self) == 0 {
                    return Err(invalid(self));
                }
            }
            if matches!(self.peek(), Some(b'e' | b'E')) {
                float = true;
                self.pos += 1;
                if matches!(self.peek(), Some(b'+' | b'-')) {
                    self.pos += 1;
                }
                if digits(self) == 0 {
                    return Err(invalid(self));
                }
            }
            let text = &self.text[start..self.pos];
            if !float {
                if let Ok(i) = text.parse::<i128>() {
                    return Ok(Value::Int(i));
                }
            }
            match text.parse::<f64>() {
                Ok(f) if f.is_finite() => Ok(Value::Float(f)),
                _ => Err(invalid(self)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(text: &str) -> Node {
        read("t.yaml", text, Format::Yaml).unwrap()
    }

    #[test]
    fn yaml_values_and_positions() {
        let root = yaml("a: 1\nb:\n  - x\n  - 'true'\n  - true\n  - n\n  - off\n  - 007\nc: ~\n");
        let Value::Map(entries) = &root.value else {
            panic!("{root:?}")
        };
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[0].0.value, Value::Str("a".into()));
        assert_eq!(entries[0].1.value, Value::Int(1));
        assert_eq!((entries[0].1.span.line, entries[0].1.span.column), (1, 4));
        let Value::Seq(items) = &entries[1].1.value else {
            panic!()
        };
        assert_eq!(items[1].value, Value::Str("true".into()));
        assert_eq!(items[2].value, Value::Bool(true));
        assert_eq!((items[2].span.line, items[2].span.column), (5, 5));
        assert_eq!(items[3].value, Value::Str("n".into()));
        assert_eq!(items[4].value, Value::Str("off".into()));
        assert_eq!(items[5].value, Value::Str("007".into()));
        assert_eq!(entries[2].1.value, Value::Null);
    }

    #[test]
    fn yaml_duplicates_reach_the_reader() {
        let root = yaml("a: 1\na: 2\n");
        let Value::Map(entries) = &root.value else {
            panic!()
        };
        assert_eq!(entries.len(), 2);
    }

    #[test]
    fn yaml_integers_beyond_64_bits_stay_integers() {
        let root = yaml("a: 99999999999999999999\nb: -99999999999999999999\nc: 1.5e30\n");
        let Value::Map(entries) = &root.value else {
            panic!()
        };
        assert_eq!(entries[0].1.value, Value::Int(99_999_999_999_999_999_999));
        assert_eq!(entries[1].1.value, Value::Int(-99_999_999_999_999_999_999));
        assert_eq!(entries[2].1.value, Value::Float(1.5e30));
    }

    #[test]
    fn yaml_syntax_error_has_position() {
        let e = read("t.yaml", "a: [1, 2\nb: 3\n", Format::Yaml).unwrap_err();
        assert!(e.line >= 1, "{e}");
        assert!(e.message.starts_with("invalid YAML"), "{e}");
    }

    #[test]
    fn json_values_and_positions() {
        let root = read(
            "t.json",
            "{\n  \"a\": [1, -2.5e1, \"x\\u00e9\\ud83d\\ude00\"],\n  \"b\": {\"c\": null, \"d\": false}\n}",
            Format::Json,
        )
        .unwrap();
        let Value::Map(entries) = &root.value else {
            panic!()
        };
        let Value::Seq(items) = &entries[0].1.value else {
            panic!()
        };
        assert_eq!(items[0].value, Value::Int(1));
        assert_eq!(items[1].value, Value::Float(-25.0));
        assert_eq!(items[2].value, Value::Str("xé😀".into()));
        assert_eq!((items[2].span.line, items[2].span.column), (2, 20));
        assert_eq!((entries[1].0.span.line, entries[1].0.span.column), (3, 3));
    }

    #[test]
    fn json_errors_have_positions() {
        for (text, line, column) in [
            ("{\"a\": 1,}", 1, 9),
            ("{\"a\": tru}", 1, 7),
            ("[1,\n 2\n 3]", 3, 2),
            ("{\"a\": 01}", 1, 7),
            ("{} x", 1, 4),
            ("\"\\x\"", 1, 3),
        ] {
            let e = read("t.json", text, Format::Json).unwrap_err();
            assert_eq!((e.line, e.column), (line, column), "{text}: {e}");
        }
        let deep = "[".repeat(500);
        assert!(read("t.json", &deep, Format::Json).is_err());
    }
}
