//! Events and projections: what the ledger records and what it says now.
//!
//! Invariant: events are immutable values with one versioned encoding (rmp-serde), and
//! projections are pure folds over them in ledger order: the same records give the same
//! answer in every process. Storage, chaining and durability are the store crate's; this
//! stage neither reads nor writes a store.
//!
//! - [`events`]: the domain events, their envelope, receipts;
//! - [`projection`]: plans and their states, live hashes, manifests by hash, history.

pub mod events;
pub mod projection;
