//! Data-driven scenarios: stories of people and agents working on one database through
//! Lockplane, each written as a YAML file in `cases/` that says who does what and what must
//! hold, run against real Postgres by `tests/cases.rs`.
//!
//! A case is a `name` (what it proves), `setup` SQL run on a fresh database before the runtime
//! attaches, and `steps`. Each step is one mapping with `who:` (the actor recorded in the
//! ledger; optional for `expect`), an optional `note:` for the reader, and exactly one action:
//!
//! | step | fields | must hold |
//! |---|---|---|
//! | `propose` | `as` (alias), `document` (a DSL document as a YAML mapping) or `document_text` (a string), optional `requires_confirmation: bool` | the proposal is recorded; the alias names its plan id |
//! | `merge` | `plans: [a, b]`, then `as` (alias of the merged plan) or `expect_conflict: [paths]` | merged, or refused as `conflict` carrying exactly those object paths (`column app.items.price`, as `lockplane_engine::merge` names them) |
//! | `confirm` | `plan` | the confirmation is recorded |
//! | `apply` | `plan`, optional `confirm` (`true` = the plan's own id, or an alias, or a literal string), `outcome` | `applied` (default: the plan itself applied), `rebased` (its base was stale; optional `as` names the rebased plan), `refused` with `code` (`Error::code`, e.g. `stale_plan`), optional `message_contains`, `conflicts: [paths]` |
//! | `sql` | the SQL text | a human runs it directly, behind Lockplane's back |
//! | `check_drift` | `drifted: bool`, optional `differences_contain: [fragments]` | what `check_drift` reports |
//! | `expect` | any of `columns: {schema.table: [cols]}` (any order, from `information_schema`; `[]` = no such table), `plans: {alias: status}` (`list_plans`), `ledger_verifies: bool`, `audit_tail: [Kind, …]` (the database's last audit kinds, oldest first) | all of them, reported together |
//!
//! `propose`, `merge` and `confirm` also accept `outcome: refused` + `code` (+
//! `message_contains`) when the call must fail. Aliases are names the case gives plans; the
//! interpreter maps them to plan ids, and an alias is bound once.
//!
//! Every error names the file, the step (numbered from 1, with its line), who acted and the
//! step kind, e.g. `cases/05_drift_refuses_stale_plan.yaml, step 6 (line 30, agent, apply):
//! expected a refusal `stale_plan`, but the call succeeded`. A case stops at its first failing
//! step. `cases/README.md` describes the cases and the vocabulary for readers of the cases.

#![warn(missing_docs)]

mod case;
mod run;

pub use case::{
    Action, Apply, ApplyOutcome, Case, CheckDrift, Confirm, Confirmation, Expect, Merge, Propose,
    Refusal, Step,
};
pub use run::{run, Report};

/// Why a case could not be read, or a step did not go as the case says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioError {
    /// The case file.
    pub file: String,
    /// The step, counted from 1 (`None` for the file as a whole or its setup).
    pub step: Option<usize>,
    /// The line of the file where the step starts.
    pub line: Option<u64>,
    /// Who acted in that step.
    pub who: Option<String>,
    /// The step kind (`propose`, `apply`, …), when known.
    pub kind: Option<&'static str>,
    /// What went wrong.
    pub message: String,
}

impl ScenarioError {
    /// An error about the case as a whole (reading it, its setup, the runtime).
    pub fn case(file: &str, message: impl Into<String>) -> ScenarioError {
        ScenarioError {
            file: file.to_owned(),
            step: None,
            line: None,
            who: None,
            kind: None,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(step) = self.step {
            write!(f, ", step {step}")?;
            let mut details = Vec::new();
            if let Some(line) = self.line {
                details.push(format!("line {line}"));
            }
            if let Some(who) = &self.who {
                details.push(who.clone());
            }
            if let Some(kind) = self.kind {
                details.push(kind.to_owned());
            }
            if !details.is_empty() {
                write!(f, " ({})", details.join(", "))?;
            }
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ScenarioError {}

/// Reads every `*.yaml` file of `dir`, sorted by name.
pub fn load_dir(dir: &std::path::Path) -> Result<Vec<Case>, ScenarioError> {
    let name = dir.display().to_string();
    let entries = std::fs::read_dir(dir)
        .map_err(|e| ScenarioError::case(&name, format!("cannot list: {e}")))?;
    let mut paths = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|e| ScenarioError::case(&name, format!("cannot list: {e}")))?
            .path();
        if path.extension().is_some_and(|ext| ext == "yaml") {
            paths.push(path);
        }
    }
    paths.sort();
    // Errors name a case as `cases/x.yaml` (relative to the folder's parent), which is what a
    // reader finds in the repository, rather than an absolute path of one checkout.
    let base = dir.parent().unwrap_or(dir);
    paths
        .iter()
        .map(|path| {
            let file = path
                .strip_prefix(base)
                .unwrap_or(path)
                .display()
                .to_string();
            let text = std::fs::read_to_string(path)
                .map_err(|e| ScenarioError::case(&file, format!("cannot read: {e}")))?;
            Case::parse(&file, &text)
        })
        .collect()
}
