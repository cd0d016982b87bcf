//! Planning: from a live catalog and a desired one to an explicit, proven plan.
//!
//! Invariant: the plan is a value. `diff`, `compile`, `plan` and `merge` are pure (catalogs
//! in, changes, steps or catalogs out); `shadow` and `proposal` touch only shadow databases
//! (reproductions of live on a throwaway or given server) and read live, never write it.
//! This stage never applies anything to a managed database and records nothing: applying is
//! `applying::exec`, recording is the runtime's.
//!
//! - [`diff`]: live vs desired → changes (with renames);
//! - [`compile`]: changes → ordered SQL steps with locks and graded hazards;
//! - [`plan`]: the hashed `Plan` value, its reverse, table statistics;
//! - [`merge`]: three-way catalog merges (proposals, rebases, documents with a base);
//! - [`review`]: a plan's SQL read back with Postgres' parser;
//! - [`online`]: expand/contract column changes (both shapes live, triggers, backfill);
//! - [`pgroll`]: a plan as pgroll migrations (pure), and pgroll's code-level rules;
//! - [`shadow`]: reproducing live, materialising documents, proving plans and their reverse;
//! - [`proposal`]: the one path from a document to a proven plan.

pub mod compile;
pub mod diff;
pub mod merge;
pub mod online;
pub mod pgroll;
pub mod plan;
pub mod proposal;
pub mod review;
pub mod shadow;
pub(crate) mod viewdeps;
