//! The ledger's hashes: the 32-byte [`Hash`](struct@Hash) type, the genesis hash, the record hash input and
//! the single SHA3-256 entry point.
//!
//! # Record hash byte layout
//!
//! `record_hash = SHA3-256(hash_input(record))`, where `hash_input` is the concatenation below.
//! Every integer is big-endian; every variable-length field is preceded by its length in bytes
//! as a `u64`, so no two different records share an input (a `stream` of `"ab"` with a `kind`
//! of `"c"` cannot collide with `"a"` + `"bc"`).
//!
//! | offset          | size | field                                        |
//! |-----------------|------|----------------------------------------------|
//! | 0               | 8    | `seq` (`u64`, big-endian)                    |
//! | 8               | 32   | `prev_hash` (raw bytes)                      |
//! | 40              | 8    | `at` (`i64` unix microseconds, big-endian two's complement) |
//! | 48              | 8    | `S` = byte length of `stream` (`u64` BE)     |
//! | 56              | S    | `stream` (UTF-8)                             |
//! | 56+S            | 8    | `K` = byte length of `kind` (`u64` BE)       |
//! | 64+S            | K    | `kind` (UTF-8)                               |
//! | 64+S+K          | 8    | `P` = byte length of `payload` (`u64` BE)    |
//! | 72+S+K          | P    | `payload` (raw rmp-serde bytes, as stored)   |
//!
//! Total length: `72 + S + K + P`. No domain prefix or padding is added.
//!
//! The first record (`seq = 1`) has `prev_hash = GENESIS_HASH`, where
//! `GENESIS_HASH = SHA3-256("lockplane ledger genesis v1")` (the 27 ASCII bytes, no terminator)
//! `= b799728239ebd74ffd2d803a3dae4110a010e6cbc7474a2c3994b736847d2724`.
//!
//! An auditor can recompute a record's hash in Python with:
//!
//! ```text
//! import hashlib, struct
//! def record_hash(seq, prev, at, stream, kind, payload):
//!     s, k = stream.encode(), kind.encode()
//!     data = (struct.pack(">Q", seq) + prev + struct.pack(">q", at)
//!             + struct.pack(">Q", len(s)) + s + struct.pack(">Q", len(k)) + k
//!             + struct.pack(">Q", len(payload)) + payload)
//!     return hashlib.sha3_256(data).digest()
//! ```
//!
//! Blobs are addressed by `SHA3-256(blob bytes)`, with no prefix.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha3::{Digest, Sha3_256};

use crate::record::Record;

/// Text prefix of a hash in its printed form, shared with the catalog hash (DESIGN §2).
pub const HASH_PREFIX: &str = "sha3-256:";

/// A SHA3-256 digest: a record hash, a chain head or a blob address.
///
/// Printed (and serialised in human-readable formats such as JSON) as `sha3-256:<64 hex>`;
/// in MessagePack it is a 32-byte `bin`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hash(pub [u8; 32]);

/// The address of a content-addressed blob: the SHA3-256 of its bytes.
pub type BlobHash = Hash;

/// `prev_hash` of the first record: `SHA3-256("lockplane ledger genesis v1")`.
///
/// A constant rather than zeroes so that a chain can't be confused with an uninitialised
/// buffer, and derived from a string so an auditor can recompute it.
pub const GENESIS_HASH: Hash = Hash([
    0xb7, 0x99, 0x72, 0x82, 0x39, 0xeb, 0xd7, 0x4f, 0xfd, 0x2d, 0x80, 0x3a, 0x3d, 0xae, 0x41, 0x10,
    0xa0, 0x10, 0xe6, 0xcb, 0xc7, 0x47, 0x4a, 0x2c, 0x39, 0x94, 0xb7, 0x36, 0x84, 0x7d, 0x27, 0x24,
]);

/// The bytes [`GENESIS_HASH`] is the SHA3-256 of.
pub const GENESIS_SEED: &[u8] = b"lockplane ledger genesis v1";

/// Computes SHA3-256 of `bytes`. Every hash in the ledger goes through this function.
pub fn sha3_256(bytes: &[u8]) -> Hash {
    Hash(Sha3_256::digest(bytes).into())
}

/// Builds the exact bytes a record's hash covers (layout in the [module docs](self)).
pub fn hash_input(record: &Record) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(72 + record.stream.len() + record.kind.len() + record.payload.len());
    out.extend_from_slice(&record.seq.to_be_bytes());
    out.extend_from_slice(&record.prev_hash.0);
    out.extend_from_slice(&record.at.to_be_bytes());
    for field in [
        record.stream.as_bytes(),
        record.kind.as_bytes(),
        &record.payload[..],
    ] {
        // usize -> u64 is lossless on every platform Rust supports.
        out.extend_from_slice(&(field.len() as u64).to_be_bytes());
        out.extend_from_slice(field);
    }
    out
}

/// The hash of a record: `SHA3-256(hash_input(record))`.
pub fn record_hash(record: &Record) -> Hash {
    sha3_256(&hash_input(record))
}

impl Hash {
    /// Lower-case hex of the 32 bytes, without the `sha3-256:` prefix.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{HASH_PREFIX}{}", self.to_hex())
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why a string is not a [`Hash`](struct@Hash).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a sha3-256 hash (expected `sha3-256:` followed by 64 hex digits): {0:?}")]
pub struct ParseHashError(pub String);

impl FromStr for Hash {
    type Err = ParseHashError;

    /// Accepts `sha3-256:<64 hex>` or the bare 64 hex digits.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let digits = s.strip_prefix(HASH_PREFIX).unwrap_or(s);
        let mut out = [0u8; 32];
        hex::decode_to_slice(digits, &mut out).map_err(|_| ParseHashError(s.to_owned()))?;
        Ok(Hash(out))
    }
}

impl Serialize for Hash {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.collect_str(self)
        } else {
            serializer.serialize_bytes(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Hash {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct HashVisitor;

        impl<'de> Visitor<'de> for HashVisitor {
            type Value = Hash;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("32 bytes or a `sha3-256:<hex>` string")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Hash, E> {
                v.parse().map_err(E::custom)
            }

            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Hash, E> {
                let bytes: [u8; 32] = v
                    .try_into()
                    .map_err(|_| E::invalid_length(v.len(), &self))?;
                Ok(Hash(bytes))
            }
        }

        if deserializer.is_human_readable() {
            deserializer.deserialize_str(HashVisitor)
        } else {
            deserializer.deserialize_bytes(HashVisitor)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn genesis_is_the_hash_of_its_seed() {
        assert_eq!(sha3_256(GENESIS_SEED), GENESIS_HASH);
    }

    #[test]
    fn hash_input_layout_is_as_documented() {
        let r = Record {
            seq: 0x0102030405060708,
            prev_hash: Hash([0xaa; 32]),
            at: -2,
            stream: "db".into(),
            kind: "k".into(),
            payload: vec![9, 8, 7],
        };
        let mut want = vec![1, 2, 3, 4, 5, 6, 7, 8];
        want.extend_from_slice(&[0xaa; 32]);
        want.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe]);
        want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 2, b'd', b'b']);
        want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 1, b'k']);
        want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 3, 9, 8, 7]);
        assert_eq!(hash_input(&r), want);
        assert_eq!(want.len(), 72 + 2 + 1 + 3);
        assert_eq!(record_hash(&r), sha3_256(&want));
    }

    #[test]
    fn length_prefixes_separate_fields() {
        let a = Record {
            seq: 1,
            prev_hash: GENESIS_HASH,
            at: 0,
            stream: "ab".into(),
            kind: "c".into(),
            payload: vec![],
        };
        let b = Record {
            stream: "a".into(),
            kind: "bc".into(),
            ..a.clone()
        };
        assert_ne!(record_hash(&a), record_hash(&b));
    }

    #[test]
    fn hash_prints_parses_and_serialises() {
        let h = sha3_256(b"x");
        let s = h.to_string();
        assert!(s.starts_with("sha3-256:"));
        assert_eq!(s.parse::<Hash>(), Ok(h));
        assert_eq!(h.to_hex().parse::<Hash>(), Ok(h));
        assert!("sha3-256:zz".parse::<Hash>().is_err());
        let json = serde_json::to_string(&h).unwrap_or_default();
        assert_eq!(json, format!("\"{s}\""));
        assert_eq!(serde_json::from_str::<Hash>(&json).ok(), Some(h));
        let mp = rmp_serde::to_vec(&h).unwrap_or_default();
        assert_eq!(mp.len(), 2 + 32, "a 32-byte msgpack bin8");
        assert_eq!(rmp_serde::from_slice::<Hash>(&mp).ok(), Some(h));
    }
}
