//! Lockplane's domain: the catalog model and its canonical hash, introspection of a live
//! database, and the throwaway clusters used for shadow runs and tests.
//!
//! The engine holds no global state and no runtime of its own. Pure functions take catalogs
//! and return catalogs, hashes and plans; I/O happens only through explicit handles (a
//! `tokio_postgres::Client`, a [`cluster::Cluster`]).
//!
//! Map of the modules:
//! - [`catalog`]: the model (`Catalog`, `Table`, `Column`, …) and `Manifest`.
//! - [`hash`]: canonical JSON bytes (RFC 8785) and the SHA3-256 catalog hash.
//! - [`normalize`]: one parser (pg_query) to normalise expressions and queries.
//! - [`ident`]: the one function that quotes identifiers (and one for literals).
//! - [`guard`]: the SQL guard: which statements agents may run, and which need confirmation.
//! - [`introspect`](mod@introspect): live database → `Catalog`.
//! - [`diff`]: live vs desired catalog → the list of changes (with renames).
//! - [`compile`]: changes → ordered SQL steps with locks and graded hazards.
//! - [`plan`]: the hashed `Plan` value tying both together, its reverse, table statistics.
//! - [`exec`]: applying a plan: confirmation, advisory lock, base/target hash checks, one
//!   transaction with timeouts, non-transactional steps with retries, receipts, resuming.
//! - [`review`]: a plan's SQL read back with Postgres' parser (one statement per step, the
//!   planner's kinds only, data loss recomputed from the SQL).
//! - [`proposal`]: a document against a live database → a plan proven on a faithful shadow.
//! - [`shadow`]: proving a plan and its reverse on a shadow database; materialising a desired
//!   catalog as Postgres stores it.
//! - [`dsl`]: the YAML/JSON schema DSL: documents → catalogs and back, its JSON Schema.
//! - [`connect`]: resolving a database URL / `PG*` environment and connecting.
//! - [`cluster`]: throwaway Postgres clusters from local server binaries.
//! - [`testkit`]: one shared throwaway cluster per process, fresh databases on it.
//! - [`events`]: the domain events the ledger records, and their stored encoding.
//! - [`projection`]: what the ledger says now (plans, live hashes, history), as pure folds.
//! - [`merge`]: three-way merge of catalogs (base, ours, theirs) at object granularity.
//! - [`policy`]: row-level security: effective predicates and verdicts computed by Postgres.
//! - [`session`]: an agent's session context (role, user, tenant), `explain_sql`, `apply_sql`.

#![warn(missing_docs)]

pub mod catalog;
pub mod cluster;
pub mod compile;
pub mod connect;
pub mod diff;
pub mod dsl;
pub mod events;
pub mod exec;
pub mod guard;
pub mod hash;
pub mod ident;
pub mod introspect;
pub mod merge;
pub mod normalize;
pub mod plan;
pub mod policy;
pub mod projection;
pub mod proposal;
pub mod review;
pub mod session;
pub mod shadow;
pub mod testkit;
mod viewdeps;

pub use catalog::{Catalog, Manifest};
pub use hash::{catalog_hash, CatalogHash};
pub use introspect::{introspect, introspect_parallel, IntrospectError, IntrospectOptions};
