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
//! - [`init`]: the SQL of `lockplane init` (the least-privilege roles, the managed schemas
//!   handed to `lp_migrator`, the helper schema);
//! - [`rollout`]: an online (expand/contract) migration's phases — start (expand, backfill),
//!   complete, rollback — with its state in the database, each phase resumable.

pub mod exec;
pub mod init;
pub mod rollout;
