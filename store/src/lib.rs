//! Lockplane's ledger: a hash-chained, append-only event log behind a narrow [`Store`] trait
//! (DESIGN §5).
//!
//! - A [`Record`] is `{ seq, prev_hash, at, stream, kind, payload }`; its hash is SHA3-256 over
//!   an unambiguous, length-prefixed byte layout documented in [`hash`], and the chain starts
//!   at [`GENESIS_HASH`]. Records are stored as versioned, canonical rmp-serde arrays
//!   ([`record`]).
//! - [`Store::append`] takes the expected head (optimistic concurrency): of two writers
//!   expecting the same head exactly one wins, the other gets [`StoreError::Conflict`].
//!   An append returns only once durable.
//! - Large values go in content-addressed blobs ([`Store::put_blob`]), stored once.
//! - [`verify`] / [`verify_with_blobs`] walk the chain and report the first bad record; a
//!   [`Checkpoint`] kept outside the ledger proves the log still holds a prefix.
//!
//! Backends, all storing byte-identical records:
//! - [`SledStore`] (default, on disk; group commit, one process at a time, see its module for
//!   the lock-holder protocol);
//! - [`PgStore`] (the ledger of record in a Postgres control database, shared by every process
//!   and machine: a head row locked per append so the chain cannot fork, append-only triggers,
//!   durable on a synchronous standby when one is configured; see [`pg_store`]);
//! - [`MemoryStore`] (tests).
//!
//! ```
//! use lockplane_store::{verify, Head, MemoryStore, NewRecord, Store, StoreError};
//!
//! let store = MemoryStore::new();
//! let head = store.append(Some(Head::GENESIS), vec![NewRecord::now("db1", "Introspected", vec![])])?;
//! // A writer that still believes the log is empty loses:
//! let stale = store.append(Some(Head::GENESIS), vec![NewRecord::now("db1", "Other", vec![])]);
//! assert!(matches!(stale, Err(StoreError::Conflict { actual, .. }) if actual == head));
//! assert!(verify(&store, Some(head.into())).is_ok());
//! # Ok::<(), StoreError>(())
//! ```

#![forbid(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

mod error;
pub mod hash;
pub mod hub;
mod memory;
pub mod pg_store;
pub mod record;
pub mod sled_store;
mod store;
mod verify;

pub use error::{Holder, StoreError};
pub use hash::{sha3_256, BlobHash, Hash, ParseHashError, GENESIS_HASH};
pub use hub::{open_dir, DirLedger, HUB_SOCKET_NAME};
pub use memory::MemoryStore;
pub use pg_store::{PgConnector, PgStore};
pub use record::{DecodeError, Head, NewRecord, RawRecord, Record, FORMAT_VERSION};
pub use sled_store::{SledStore, LOCK_FILE_NAME, SLED_DIR_NAME};
pub use store::{for_each_record, Store};
pub use verify::{verify, verify_with_blobs, BadRecord, Checkpoint, Problem, VerifyReport};

/// The ledger directory Lockplane uses when none is configured (relative to the working
/// directory), per DESIGN §9.
pub const DEFAULT_LEDGER_DIR: &str = ".lockplane/ledger";
