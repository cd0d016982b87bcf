//! Agent sessions and policy: what an agent may run, as whom, and what row-level security
//! lets a role see.
//!
//! Invariant: every statement an agent sends, and every expression a plan carries for one, is
//! parsed whole (pg_query) and checked against an allow-list before it reaches a server; what
//! runs, runs under the session's role and settings (`SET LOCAL`) in a transaction that the
//! guard's verdict decides (read-only, rolled back for probes). This stage does not plan or
//! apply schema changes.
//!
//! - [`guard`]: the SQL guard, per access mode; which statements need confirmation;
//! - [`session`]: an agent's context (role, `app.user_id`, `app.tenant_id`), `explain`, `run_sql`;
//! - [`policy`]: the effective RLS predicate of a role and command, and Postgres' verdict.

pub mod guard;
pub mod policy;
pub mod session;
