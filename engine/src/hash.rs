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

impl fmt::Display for CatalogHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Errors building canonical bytes.
#[derive(Debug, thiserror::Error)]
pub enum CanonicalError {
    /// The value could not be represented as JSON.
    #[error("value cannot be serialised as JSON: {0}")]
    Serialize(#[from] serde_json::Error),
    /// RFC 8785 only allows finite numbers; the manifest never holds floats, so this is a bug.
    #[error("non-integer number {0} has no canonical form here")]
    Number(String),
}

/// The RFC 8785 canonical JSON bytes of `value`.
pub fn canonical_json<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CanonicalError> {
    let value = serde_json::to_value(value)?;
    let mut out = Vec::with_capacity(4096);
    write_canonical(&value, &mut out)?;
    Ok(out)
}

/// SHA3-256 of `bytes`, as lower-case hex.
pub fn sha3_256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha3_256::digest(bytes))
}

/// The catalog hash of `catalog`: its canonical JSON, hashed.
pub fn catalog_hash(catalog: &Catalog) -> Result<CatalogHash, CanonicalError> {
    let bytes = canonical_json(catalog)?;
    Ok(CatalogHash(format!(
        "{HASH_PREFIX}{}",
        sha3_256_hex(&bytes)
    )))
}

fn write_canonical(value: &serde_json::Value, out: &mut Vec<u8>) -> Result<(), CanonicalError> {
    use serde_json::Value;
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => {
            // Integers print the same in ES6 number serialisation and in Rust; floats would
            // need the ES6 shortest round-trip algorithm, which nothing here needs.
            if n.is_i64() || n.is_u64() {
                out.extend_from_slice(n.to_string().as_bytes());
            } else {
                return Err(CanonicalError::Number(n.to_string()));
            }
        }
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out)?;
            }
            out.push(b']');
        }
        Value::Object(members) => {
            let mut sorted: Vec<(&String, &Value)> = members.iter().collect();
            // RFC 8785 §3.2.3: sort by UTF-16 code units, which differs from UTF-8 byte order
            // only for characters beyond the BMP versus U+E000..U+FFFF.
            sorted.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
            out.push(b'{');
            for (i, (key, item)) in sorted.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(key, out);
                out.push(b':');
                write_canonical(item, out)?;
            }
            out.push(b'}');
        }
    }
    Ok(())
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
