//! Lockplane's domain: the catalog model and its canonical hash, introspection of a live
//! database, and the throwaway clusters used for shadow runs and tests.
//!
//! The engine holds no global state and no runtime of its own. Pure functions take catalogs
//! and return catalogs, hashes and plans; I/O happens only through explicit handles (a
//! `tokio_postgres::Client`, a [`cluster::Cluster`]).
//!
//! The modules are grouped by stage of the one data flow (document → catalog → plan → apply →
//! events → projections), each stage stating its invariant and what it will not do:
//!
//! - [`model`] (pure): [`catalog`], [`hash`], [`normalize`], [`ident`], [`dsl`];
//! - [`live`] (reading live, throwaway servers): [`connect`], [`introspect`](mod@introspect),
//!   [`cluster`], [`testkit`];
//! - [`planning`] (plans as values, proofs on shadows): [`diff`], [`compile`], [`plan`],
//!   [`merge`], [`online`], [`review`], [`pgroll`], [`shadow`], [`proposal`];
//! - [`applying`] (the only writer of a managed schema): [`exec`];
//! - [`agent`] (agents' statements and RLS): [`guard`], [`session`], [`policy`];
//! - [`ledger`] (events and pure folds over them): [`events`], [`projection`].
//!
//! Every module is also reachable under its own name at the crate root
//! (`lockplane_engine::diff`), which is how the other crates use them.

#![warn(missing_docs)]

pub mod agent;
pub mod applying;
pub mod ledger;
pub mod live;
pub mod model;
pub mod planning;

// Every module under its own name too, so a concept is found at the first guess (and the
// paths callers use stay short).
pub use agent::{guard, policy, session};
pub use applying::{exec, init, rollout};
pub use ledger::{events, projection};
pub use live::{cluster, connect, introspect, testkit};
pub use model::{catalog, dsl, hash, ident, normalize};
pub(crate) use planning::viewdeps;
pub use planning::{compile, diff, merge, online, pgroll, plan, proposal, review, shadow};

pub use catalog::{Catalog, Manifest};
pub use hash::{catalog_hash, CatalogHash};
pub use introspect::{introspect, introspect_parallel, IntrospectError, IntrospectOptions};
