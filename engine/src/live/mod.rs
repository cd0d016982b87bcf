//! Reading live: reaching a server and turning what it holds into the model.
//!
//! Invariant: I/O only through explicit handles (a connection target, a `Client`, a
//! `Cluster`); nothing here writes to a managed database. Introspection reads in one
//! read-only snapshot. Throwaway clusters are the only servers this stage starts, and it stops
//! and deletes every one it starts.
//!
//! - [`connect`]: libpq-style resolution (URL, `PG*`, passfile) and TLS connections;
//! - [`introspect`](mod@introspect): live database → `Catalog`;
//! - [`cluster`]: throwaway Postgres clusters from local server binaries (shadows, tests);
//! - [`testkit`]: one shared throwaway cluster per process, fresh databases on it.

pub mod cluster;
pub mod connect;
pub mod introspect;
pub mod testkit;
