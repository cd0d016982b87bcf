//! Canonical bytes and hashes.
//!
//! [`canonical_json`] is the one place that turns a value into the bytes that get hashed, and
//! [`sha3_256_hex`] the one place that hashes them. The canonical form is RFC 8785 (JSON
//! Canonicalization Scheme): object members sorted by the UTF-16 code units of their names, no
//! insignificant whitespace, strings with the minimal escapes, so anyone can recompute a
//! [`CatalogHash`] with standard tools (`jq -cS` agrees for the ASCII keys the manifest uses).

use std::fmt;

use serde::{Deserialize, Serialize};
use sha3::{Digest, Sha3_256};

use crate::catalog::Catalog;

/// Prefix naming the hash algorithm, so the format can change without ambiguity.
pub const HASH_PREFIX: &str = "sha3-256:";

/// `"sha3-256:" + hex(SHA3-256(canonical JSON of the catalog))`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CatalogHash(pub String);

impl CatalogHash {
    /// `text` as a catalog hash when it is one: [`HASH_PREFIX`] then 64 lower-case hex digits,
    /// exactly as [`catalog_hash`] writes it. Nothing else is accepted (no upper case, no
    /// whitespace), so a hash read back compares equal to the one computed.
    pub fn parse(text: &str) -> Option<CatalogHash> {
        let hex = text.strip_prefix(HASH_PREFIX)?;
        (hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .then(|| CatalogHash(text.to_owned()))
    }
}

impl fmt::Display for CatalogHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Errors building canonical bytes.
#[derive(Debug, thiserror::Error)]
pub enum CanonicalError {
    /// The value's `Serialize` implementation failed.
    #[error("value cannot be serialised: {0}")]
    Serialize(String),
    /// RFC 8785 only allows finite numbers; the manifest never holds floats, so this is a bug.
    #[error("non-integer number {0} has no canonical form here")]
    Number(String),
    /// JSON object keys are strings.
    #[error("map key is not a string")]
    KeyNotString,
}

impl serde::ser::Error for CanonicalError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        CanonicalError::Serialize(msg.to_string())
    }
}

/// The RFC 8785 canonical JSON bytes of `value`.
///
/// Written by a serde serializer of its own rather than through `serde_json::Value`: the
/// manifest of a large database is megabytes, and building a value tree only to sort it cost
/// more than the whole catalog read. Objects are written in place and reordered only when their
/// keys did not arrive sorted (struct fields arrive in declaration order).
pub fn canonical_json<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CanonicalError> {
    let mut out = Vec::with_capacity(64 * 1024);
    value.serialize(Canonical { out: &mut out })?;
    Ok(out)
}

/// SHA3-256 of `bytes`, as lower-case hex.
pub fn sha3_256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha3_256::digest(bytes))
}

/// The catalog hash of `catalog`: its canonical JSON, hashed.
#[tracing::instrument(level = "debug", name = "hash", skip_all)]
pub fn catalog_hash(catalog: &Catalog) -> Result<CatalogHash, CanonicalError> {
    let bytes = canonical_json(catalog)?;
    Ok(CatalogHash(format!(
        "{HASH_PREFIX}{}",
        sha3_256_hex(&bytes)
    )))
}

/// RFC 8785 §3.2.3 orders members by the UTF-16 code units of their names. That equals UTF-8
/// byte order unless a name holds a character at or above U+E000 (surrogate pairs sort below
/// it in UTF-16, above it in UTF-8), so bytes are compared unless such a character is present.
fn key_order(a: &str, b: &str) -> std::cmp::Ordering {
    // Manifest keys are field names and object names, nearly always ASCII: a vectorised check.
    if a.is_ascii() && b.is_ascii() {
        return a.cmp(b);
    }
    let high = |s: &str| s.chars().any(|c| c >= '\u{E000}');
    if high(a) || high(b) {
        a.encode_utf16().cmp(b.encode_utf16())
    } else {
        a.cmp(b)
    }
}

struct Canonical<'a> {
    out: &'a mut Vec<u8>,
}

/// An array being written: elements go straight to the output.
struct CanonicalSeq<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
    /// Closing text: `]`, or `]}` for a tuple variant.
    close: &'static [u8],
}

/// An object being written. Members are written in arrival order; `end` reorders them if
/// their names did not arrive sorted.
struct CanonicalMap<'a> {
    out: &'a mut Vec<u8>,
    /// Offset just after `{`.
    start: usize,
    /// Each member's name and the byte range of `"name":value` (without the comma).
    members: Vec<(std::borrow::Cow<'static, str>, std::ops::Range<usize>)>,
    pending_key: Option<String>,
    /// Closing text: `}`, or `}}` for a struct variant.
    close: &'static [u8],
}

impl CanonicalMap<'_> {
    fn member<T: Serialize + ?Sized>(
        &mut self,
        key: std::borrow::Cow<'static, str>,
        value: &T,
    ) -> Result<(), CanonicalError> {
        if !self.members.is_empty() {
            self.out.push(b',');
        }
        let begin = self.out.len();
        write_string(&key, self.out);
        self.out.push(b':');
        value.serialize(Canonical { out: self.out })?;
        self.members.push((key, begin..self.out.len()));
        Ok(())
    }

    fn finish(self) -> Result<(), CanonicalError> {
        let sorted = self
            .members
            .windows(2)
            .all(|w| key_order(&w[0].0, &w[1].0) == std::cmp::Ordering::Less);
        if !sorted {
            let written = self.out.split_off(self.start);
            let mut members = self.members;
            members.sort_by(|a, b| key_order(&a.0, &b.0));
            for (i, (_, range)) in members.into_iter().enumerate() {
                if i > 0 {
                    self.out.push(b',');
                }
                let (from, to) = (range.start - self.start, range.end - self.start);
                self.out.extend_from_slice(&written[from..to]);
            }
        }
        self.out.extend_from_slice(self.close);
        Ok(())
    }
}

impl<'a> Canonical<'a> {
    fn map(self, close: &'static [u8]) -> CanonicalMap<'a> {
        self.out.push(b'{');
        let start = self.out.len();
        CanonicalMap {
            out: self.out,
            start,
            members: Vec::new(),
            pending_key: None,
            close,
        }
    }

    fn seq(self, close: &'static [u8]) -> CanonicalSeq<'a> {
        self.out.push(b'[');
        CanonicalSeq {
            out: self.out,
            first: true,
            close,
        }
    }

    /// `{"variant":` — the opening of an externally tagged enum value.
    fn variant_open(&mut self, variant: &str) {
        self.out.push(b'{');
        write_string(variant, self.out);
        self.out.push(b':');
    }

    fn integer(self, text: String) -> Result<(), CanonicalError> {
        self.out.extend_from_slice(text.as_bytes());
        Ok(())
    }
}

impl<'a> serde::Serializer for Canonical<'a> {
    type Ok = ();
    type Error = CanonicalError;
    type SerializeSeq = CanonicalSeq<'a>;
    type SerializeTuple = CanonicalSeq<'a>;
    type SerializeTupleStruct = CanonicalSeq<'a>;
    type SerializeTupleVariant = CanonicalSeq<'a>;
    type SerializeMap = CanonicalMap<'a>;
    type SerializeStruct = CanonicalMap<'a>;
    type SerializeStructVariant = CanonicalMap<'a>;

    fn serialize_bool(self, v: bool) -> Result<(), CanonicalError> {
        self.out
            .extend_from_slice(if v { b"true" as &[u8] } else { b"false" });
        Ok(())
    }
    fn serialize_i8(self, v: i8) -> Result<(), CanonicalError> {
        self.integer(v.to_string())
    }
    fn serialize_i16(self, v: i16) -> Result<(), CanonicalError> {
        self.integer(v.to_string())
    }
    fn serialize_i32(self, v: i32) -> Result<(), CanonicalError> {
        self.integer(v.to_string())
    }
    fn serialize_i64(self, v: i64) -> Result<(), CanonicalError> {
        self.integer(v.to_string())
    }
    fn serialize_u8(self, v: u8) -> Result<(), CanonicalError> {
        self.integer(v.to_string())
    }
    fn serialize_u16(self, v: u16) -> Result<(), CanonicalError> {
        self.integer(v.to_string())
    }
    fn serialize_u32(self, v: u32) -> Result<(), CanonicalError> {
        self.integer(v.to_string())
    }
    fn serialize_u64(self, v: u64) -> Result<(), CanonicalError> {
        self.integer(v.to_string())
    }
    fn serialize_f32(self, v: f32) -> Result<(), CanonicalError> {
        Err(CanonicalError::Number(v.to_string()))
    }
    fn serialize_f64(self, v: f64) -> Result<(), CanonicalError> {
        Err(CanonicalError::Number(v.to_string()))
    }
    fn serialize_char(self, v: char) -> Result<(), CanonicalError> {
        write_string(v.encode_utf8(&mut [0u8; 4]), self.out);
        Ok(())
    }
    fn serialize_str(self, v: &str) -> Result<(), CanonicalError> {
        write_string(v, self.out);
        Ok(())
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<(), CanonicalError> {
        use serde::ser::SerializeSeq;
        let mut seq = self.seq(b"]");
        for b in v {
            seq.serialize_element(b)?;
        }
        seq.end()
    }
    fn serialize_none(self) -> Result<(), CanonicalError> {
        self.out.extend_from_slice(b"null");
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), CanonicalError> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), CanonicalError> {
        self.serialize_none()
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), CanonicalError> {
        self.serialize_none()
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<(), CanonicalError> {
        self.serialize_str(variant)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), CanonicalError> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        mut self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), CanonicalError> {
        self.variant_open(variant);
        value.serialize(Canonical { out: self.out })?;
        self.out.push(b'}');
        Ok(())
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<CanonicalSeq<'a>, CanonicalError> {
        Ok(self.seq(b"]"))
    }
    fn serialize_tuple(self, _: usize) -> Result<CanonicalSeq<'a>, CanonicalError> {
        Ok(self.seq(b"]"))
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<CanonicalSeq<'a>, CanonicalError> {
        Ok(self.seq(b"]"))
    }
    fn serialize_tuple_variant(
        mut self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<CanonicalSeq<'a>, CanonicalError> {
        self.variant_open(variant);
        Ok(self.seq(b"]}"))
    }
    fn serialize_map(self, _: Option<usize>) -> Result<CanonicalMap<'a>, CanonicalError> {
        Ok(self.map(b"}"))
    }
    fn serialize_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<CanonicalMap<'a>, CanonicalError> {
        Ok(self.map(b"}"))
    }
    fn serialize_struct_variant(
        mut self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<CanonicalMap<'a>, CanonicalError> {
        self.variant_open(variant);
        Ok(self.map(b"}}"))
    }
}

impl CanonicalSeq<'_> {
    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), CanonicalError> {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        value.serialize(Canonical { out: self.out })
    }

    fn close(self) -> Result<(), CanonicalError> {
        self.out.extend_from_slice(self.close);
        Ok(())
    }
}

macro_rules! seq_impl {
    ($trait:ident, $method:ident) => {
        impl serde::ser::$trait for CanonicalSeq<'_> {
            type Ok = ();
            type Error = CanonicalError;
            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), CanonicalError> {
                self.element(value)
            }
            fn end(self) -> Result<(), CanonicalError> {
                self.close()
            }
        }
    };
}
seq_impl!(SerializeSeq, serialize_element);
seq_impl!(SerializeTuple, serialize_element);
seq_impl!(SerializeTupleStruct, serialize_field);
seq_impl!(SerializeTupleVariant, serialize_field);

impl serde::ser::SerializeMap for CanonicalMap<'_> {
    type Ok = ();
    type Error = CanonicalError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), CanonicalError> {
        self.pending_key = Some(key.serialize(KeyText)?);
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), CanonicalError> {
        let key = self
            .pending_key
            .take()
            .ok_or(CanonicalError::KeyNotString)?;
        self.member(key.into(), value)
    }
    fn end(self) -> Result<(), CanonicalError> {
        self.finish()
    }
}

macro_rules! struct_impl {
    ($trait:ident) => {
        impl serde::ser::$trait for CanonicalMap<'_> {
            type Ok = ();
            type Error = CanonicalError;
            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                key: &'static str,
                value: &T,
            ) -> Result<(), CanonicalError> {
                self.member(key.into(), value)
            }
            fn end(self) -> Result<(), CanonicalError> {
                self.finish()
            }
        }
    };
}
struct_impl!(SerializeStruct);
struct_impl!(SerializeStructVariant);

/// Turns a map key into its text: strings as they are, integers in decimal (as serde_json
/// does); anything else is not a JSON object key.
struct KeyText;

impl serde::Serializer for KeyText {
    type Ok = String;
    type Error = CanonicalError;
    type SerializeSeq = serde::ser::Impossible<String, CanonicalError>;
    type SerializeTuple = serde::ser::Impossible<String, CanonicalError>;
    type SerializeTupleStruct = serde::ser::Impossible<String, CanonicalError>;
    type SerializeTupleVariant = serde::ser::Impossible<String, CanonicalError>;
    type SerializeMap = serde::ser::Impossible<String, CanonicalError>;
    type SerializeStruct = serde::ser::Impossible<String, CanonicalError>;
    type SerializeStructVariant = serde::ser::Impossible<String, CanonicalError>;

    fn serialize_str(self, v: &str) -> Result<String, CanonicalError> {
        Ok(v.to_owned())
    }
    fn serialize_char(self, v: char) -> Result<String, CanonicalError> {
        Ok(v.to_string())
    }
    fn serialize_i64(self, v: i64) -> Result<String, CanonicalError> {
        Ok(v.to_string())
    }
    fn serialize_u64(self, v: u64) -> Result<String, CanonicalError> {
        Ok(v.to_string())
    }
    fn serialize_i32(self, v: i32) -> Result<String, CanonicalError> {
        Ok(v.to_string())
    }
    fn serialize_u32(self, v: u32) -> Result<String, CanonicalError> {
        Ok(v.to_string())
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<String, CanonicalError> {
        Ok(variant.to_owned())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<String, CanonicalError> {
        value.serialize(self)
    }
    fn serialize_bool(self, _: bool) -> Result<String, CanonicalError> {
        Err(CanonicalError::KeyNotString)
    }
    fn serialize_i8(self, v: i8) -> Result<String, CanonicalError> {
        Ok(v.to_string())
    }
    fn serialize_i16(self, v: i16) -> Result<String, CanonicalError> {
        Ok(v.to_string())
    }
    fn serialize_u8(self, v: u8) -> Result<String, CanonicalError> {
        Ok(v.to_string())
    }
    fn serialize_u16(self, v: u16) -> Result<String, CanonicalError> {
        Ok(v.to_string())
    }
    fn serialize_f32(self, _: f32) -> Result<String, CanonicalError> {
        Err(CanonicalError::KeyNotString)
    }
    fn serialize_f64(self, _: f64) -> Result<String, CanonicalError> {
        Err(CanonicalError::KeyNotString)
    }
    fn serialize_bytes(self, _: &[u8]) -> Result<String, CanonicalError> {
        Err(CanonicalError::KeyNotString)
    }
    fn serialize_none(self) -> Result<String, CanonicalError> {
        Err(CanonicalError::KeyNotString)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<String, CanonicalError> {
        Err(CanonicalError::KeyNotString)
    }
    fn serialize_unit(self) -> Result<String, CanonicalError> {
        Err(CanonicalError::KeyNotString)
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<String, CanonicalError> {
        Err(CanonicalError::KeyNotString)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<String, CanonicalError> {
        Err(CanonicalError::KeyNotString)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, CanonicalError> {
        Err(CanonicalError::KeyNotString)
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, CanonicalError> {
        Err(CanonicalError::KeyNotString)
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, CanonicalError> {
        Err(CanonicalError::KeyNotString)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, CanonicalError> {
        Err(CanonicalError::KeyNotString)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, CanonicalError> {
        Err(CanonicalError::KeyNotString)
    }
    fn serialize_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStruct, CanonicalError> {
        Err(CanonicalError::KeyNotString)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, CanonicalError> {
        Err(CanonicalError::KeyNotString)
    }
}

fn write_string(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\u{08}' => out.extend_from_slice(b"\\b"),
            '\u{09}' => out.extend_from_slice(b"\\t"),
            '\u{0A}' => out.extend_from_slice(b"\\n"),
            '\u{0C}' => out.extend_from_slice(b"\\f"),
            '\u{0D}' => out.extend_from_slice(b"\\r"),
            c if (c as u32) < 0x20 => {
                out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes());
            }
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_only_hashes_as_written() {
        let good = format!("{HASH_PREFIX}{}", "0a".repeat(32));
        assert_eq!(CatalogHash::parse(&good), Some(CatalogHash(good.clone())));
        for bad in [
            String::new(),
            "sha3-256:".into(),
            "0a".repeat(32),
            format!("{HASH_PREFIX}{}", "0A".repeat(32)),
            format!("{HASH_PREFIX}{}", "0a".repeat(31)),
            format!("{HASH_PREFIX}{}0", "0a".repeat(32)),
            format!("sha256:{}", "0a".repeat(32)),
            format!("{good} "),
        ] {
            assert_eq!(CatalogHash::parse(&bad), None, "{bad:?}");
        }
    }

    #[test]
    fn sorts_keys_and_strips_whitespace() {
        let v = json!({"b": 1, "a": [true, null, "x"], "c": {"z": 1, "y": 2}});
        let bytes = canonical_json(&v).unwrap();
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            r#"{"a":[true,null,"x"],"b":1,"c":{"y":2,"z":1}}"#
        );
    }

    #[test]
    fn escapes_like_rfc_8785() {
        let v = json!("a\"b\\c\n\u{1}é€😀/");
        let bytes = canonical_json(&v).unwrap();
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            "\"a\\\"b\\\\c\\n\\u0001é€😀/\""
        );
    }

    #[test]
    fn sorts_by_utf16_code_units() {
        // U+FF61 sorts after U+1F600 in UTF-8 byte order but before it in UTF-16.
        let v = json!({"\u{1F600}": 1, "\u{FF61}": 2});
        let s = String::from_utf8(canonical_json(&v).unwrap()).unwrap();
        assert!(s.find('\u{1F600}') < s.find('\u{FF61}'), "{s}");
    }

    #[test]
    fn structs_enums_and_maps_match_a_sorted_value_tree() {
        #[derive(Serialize)]
        #[serde(tag = "type", rename_all = "snake_case")]
        enum Tagged {
            Zeta { b: u8, a: Vec<i64> },
        }
        #[derive(Serialize)]
        enum External {
            New(u8),
            Tuple(u8, bool),
            Struct { y: u8, x: u8 },
            Unit,
        }
        #[derive(Serialize)]
        struct Outer {
            zz: Option<String>,
            map: std::collections::BTreeMap<String, Tagged>,
            ext: Vec<External>,
            aa: (u8, &'static str),
        }
        let mut map = std::collections::BTreeMap::new();
        map.insert(
            "q".to_string(),
            Tagged::Zeta {
                b: 1,
                a: vec![-5, 7],
            },
        );
        let value = Outer {
            zz: None,
            map,
            ext: vec![
                External::New(1),
                External::Tuple(2, true),
                External::Struct { y: 3, x: 4 },
                External::Unit,
            ],
            aa: (9, "s"),
        };
        let ours = String::from_utf8(canonical_json(&value).unwrap()).unwrap();
        assert_eq!(
            ours,
            r#"{"aa":[9,"s"],"ext":[{"New":1},{"Tuple":[2,true]},{"Struct":{"x":4,"y":3}},"Unit"],"map":{"q":{"a":[-5,7],"b":1,"type":"zeta"}},"zz":null}"#
        );
    }

    #[test]
    fn rejects_floats() {
        assert!(canonical_json(&json!(1.5)).is_err());
    }

    #[test]
    fn hash_has_prefix_and_length() {
        let h = catalog_hash(&Catalog::default()).unwrap();
        assert!(h.0.starts_with(HASH_PREFIX));
        assert_eq!(h.0.len(), HASH_PREFIX.len() + 64);
    }
}
