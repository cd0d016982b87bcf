//! The model and its hash: what a schema *is*, independent of any server.
//!
//! Invariant: pure. Nothing here connects to Postgres, reads a file or the clock; the same
//! input gives the same catalog, the same canonical bytes and the same SHA3-256 on every
//! machine and every Postgres version. This stage does not decide what Postgres would store
//! for an expression (that needs a server: `planning::shadow` materialises documents), and it
//! does not diff or plan.
//!
//! - [`catalog`]: the model (`Catalog`, `Table`, `Column`, …) and `Manifest`;
//! - [`hash`]: canonical JSON bytes (RFC 8785) and the SHA3-256 catalog hash;
//! - [`normalize`]: one parser (pg_query) to normalise expressions and queries;
//! - [`ident`]: the one function that quotes identifiers (and one for literals);
//! - [`dsl`]: the YAML/JSON schema documents ⇄ catalogs, with positions for every error.

pub mod catalog;
pub mod dsl;
pub mod hash;
pub mod ident;
pub mod normalize;
