//! Applying: running a proven plan against a managed database.
//!
//! Invariant: the only stage that changes a managed database's schema, and only with a plan
//! whose content hashes to its id, under the database's advisory lock, from the plan's base,
//! with timeouts, committing only when the catalog reached is the one the shadow proved.
//! It reports each committed phase to a caller-supplied sink and never records anything
//! itself (the ledger is the runtime's).
//!
//! - [`exec`]: confirmation, lock, base/target checks, transaction and steps run alone,
//!   retries, cancellation, receipts, resume.

pub mod exec;
