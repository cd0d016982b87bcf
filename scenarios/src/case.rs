//! Reading a case file: the YAML shape, and its conversion into [`Case`] with every problem
//! named by file, step and line.
//!
//! Parsing is two passes on purpose: the file is first read with each step kept as a raw value
//! together with its line, then each step is converted on its own. A typo in step 7 is then
//! reported as "step 7 (line 31)" rather than only as a position deep inside the file.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::ScenarioError;

/// One scenario: a fresh database, the SQL that sets it up, and the steps people take.
#[derive(Debug, Clone)]
pub struct Case {
    /// The file it came from (how errors name it).
    pub file: String,
    /// One sentence: what the scenario proves.
    pub name: String,
    /// SQL run on the fresh database before the runtime attaches.
    pub setup: String,
    /// The steps, in order.
    pub steps: Vec<Step>,
}

/// One step of a case: who does what.
#[derive(Debug, Clone)]
pub struct Step {
    /// Position in the case, counted from 1.
    pub index: usize,
    /// The line of the file where the step starts.
    pub line: u64,
    /// The person or agent acting (the actor recorded in the ledger).
    pub who: Option<String>,
    /// What they do, or what must hold.
    pub action: Action,
}

/// What a step does.
#[derive(Debug, Clone)]
pub enum Action {
    /// Plan a desired schema document against the live database and record it.
    Propose(Propose),
    /// Three-way merge two proposals.
    Merge(Merge),
    /// Record the explicit confirmation of a plan.
    Confirm(Confirm),
    /// Apply a recorded plan.
    Apply(Apply),
    /// A human runs SQL on the database directly, behind Lockplane's back.
    Sql(String),
    /// Compare the live catalog with what the ledger last recorded.
    CheckDrift(CheckDrift),
    /// Assertions about the database, the plans and the ledger.
    Expect(Expect),
}

impl Action {
    /// The step kind as the case file spells it.
    pub fn kind(&self) -> &'static str {
        match self {
            Action::Propose(_) => "propose",
            Action::Merge(_) => "merge",
            Action::Confirm(_) => "confirm",
            Action::Apply(_) => "apply",
            Action::Sql(_) => "sql",
            Action::CheckDrift(_) => "check_drift",
            Action::Expect(_) => "expect",
        }
    }
}

/// How a call must fail: the runtime's error code, and optionally a fragment of its message and
/// the exact set of conflicting object paths it reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Refusal {
    /// [`lockplane_actors::Error::code`], e.g. `stale_plan`.
    pub code: String,
    /// A fragment the error's message must contain.
    pub message_contains: Option<String>,
    /// The conflict paths the error must carry (any order), e.g. `column app.items.price`.
    pub conflicts: Option<Vec<String>>,
}

/// `propose`: plan a document and remember the plan under an alias.
#[derive(Debug, Clone)]
pub struct Propose {
    /// The alias the plan id is remembered under.
    pub alias: String,
    /// The document text (YAML, or JSON when the case gave a mapping).
    pub document: String,
    /// When set, whether the plan must (not) require confirmation.
    pub requires_confirmation: Option<bool>,
    /// When set, the proposal must be refused this way.
    pub refused: Option<Refusal>,
}

/// `merge`: two proposals merged into one, or a conflict.
#[derive(Debug, Clone)]
pub struct Merge {
    /// The two aliases merged (ours, theirs).
    pub plans: [String; 2],
    /// The alias of the merged plan (when it must succeed).
    pub alias: Option<String>,
    /// When set, the merge must be refused this way.
    pub refused: Option<Refusal>,
}

/// `confirm`: one person confirms a plan.
#[derive(Debug, Clone)]
pub struct Confirm {
    /// The alias confirmed.
    pub plan: String,
    /// When set, the confirmation must be refused this way.
    pub refused: Option<Refusal>,
}

/// What an apply passes as its confirmation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Confirmation {
    /// The plan's own id.
    Own,
    /// An alias's plan id, or a literal string when no alias has that name.
    Given(String),
}

/// What an apply must end in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// The plan itself applied.
    Applied,
    /// The plan was stale and a rebased plan applied; the alias names the rebased plan.
    Rebased(Option<String>),
    /// The apply was refused.
    Refused(Refusal),
}

/// `apply`: a plan applied, with the outcome it must have.
#[derive(Debug, Clone)]
pub struct Apply {
    /// The alias applied.
    pub plan: String,
    /// The confirmation passed along, if any.
    pub confirm: Option<Confirmation>,
    /// What must happen.
    pub outcome: ApplyOutcome,
}

/// `check_drift`: what the drift check must find.
#[derive(Debug, Clone)]
pub struct CheckDrift {
    /// Whether the database must have drifted.
    pub drifted: bool,
    /// Fragments that must each appear in some reported difference.
    pub differences_contain: Vec<String>,
}

/// `expect`: what must hold now. Every field is optional; all given ones are checked and
/// reported together.
#[derive(Debug, Clone, Default)]
pub struct Expect {
    /// Table (`schema.table`, `public` when unqualified) → its columns, any order; an empty
    /// list means the table must not exist.
    pub columns: BTreeMap<String, Vec<String>>,
    /// Alias → plan status name (`proposed`, `confirmed`, `stale`, `applying`, `applied`,
    /// `failed`, `merged`).
    pub plans: BTreeMap<String, String>,
    /// Whether the ledger's hash chain must verify.
    pub ledger_verifies: Option<bool>,
    /// The kinds of the database's last audit entries, oldest first.
    pub audit_tail: Option<Vec<String>>,
}

// ---- the file's shape ------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCase {
    name: String,
    #[serde(default)]
    setup: String,
    steps: Vec<Spanned<serde_json::Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    who: Option<String>,
    /// Free text for the reader; not interpreted.
    #[allow(dead_code)]
    note: Option<String>,
    propose: Option<RawPropose>,
    merge: Option<RawMerge>,
    confirm: Option<RawConfirm>,
    apply: Option<RawApply>,
    sql: Option<String>,
    check_drift: Option<RawCheckDrift>,
    expect: Option<RawExpect>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPropose {
    #[serde(rename = "as")]
    alias: String,
    document: Option<serde_json::Value>,
    document_text: Option<String>,
    requires_confirmation: Option<bool>,
    outcome: Option<String>,
    code: Option<String>,
    message_contains: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMerge {
    plans: Vec<String>,
    #[serde(rename = "as")]
    alias: Option<String>,
    expect_conflict: Option<Vec<String>>,
    outcome: Option<String>,
    code: Option<String>,
    message_contains: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfirm {
    plan: String,
    outcome: Option<String>,
    code: Option<String>,
    message_contains: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawConfirmation {
    Flag(bool),
    Given(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApply {
    plan: String,
    confirm: Option<RawConfirmation>,
    outcome: Option<String>,
    #[serde(rename = "as")]
    alias: Option<String>,
    code: Option<String>,
    message_contains: Option<String>,
    conflicts: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCheckDrift {
    drifted: bool,
    #[serde(default)]
    differences_contain: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExpect {
    #[serde(default)]
    columns: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    plans: BTreeMap<String, String>,
    ledger_verifies: Option<bool>,
    audit_tail: Option<Vec<String>>,
}

impl Case {
    /// Reads a case file.
    pub fn load(path: &std::path::Path) -> Result<Case, ScenarioError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ScenarioError::case(&file, format!("cannot read: {e}")))?;
        Case::parse(&file, &text)
    }

    /// Parses the text of a case; `file` is how errors name it.
    pub fn parse(file: &str, text: &str) -> Result<Case, ScenarioError> {
        let raw: RawCase = serde_saphyr::from_str(text)
            .map_err(|e| ScenarioError::case(file, format!("not a case file: {e}")))?;
        if raw.steps.is_empty() {
            return Err(ScenarioError::case(file, "a case needs at least one step"));
        }
        let steps = raw
            .steps
            .into_iter()
            .enumerate()
            .map(|(i, spanned)| {
                let index = i + 1;
                let line = spanned.defined.line();
                let fail = |message: String| ScenarioError {
                    file: file.to_owned(),
                    step: Some(index),
                    line: Some(line),
                    who: None,
                    kind: None,
                    message,
                };
                let raw: RawStep = serde_json::from_value(spanned.value)
                    .map_err(|e| fail(format!("not a step: {e}")))?;
                let who = raw.who.clone();
                let action = action(raw).map_err(fail)?;
                if who.is_none() && !matches!(action, Action::Expect(_)) {
                    return Err(fail(format!(
                        "a `{}` step needs `who:` (the person or agent acting)",
                        action.kind()
                    )));
                }
                Ok(Step {
                    index,
                    line,
                    who,
                    action,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Case {
            file: file.to_owned(),
            name: raw.name,
            setup: raw.setup,
            steps,
        })
    }
}

/// The one action of a raw step.
fn action(raw: RawStep) -> Result<Action, String> {
    let mut actions = Vec::new();
    if let Some(p) = raw.propose {
        actions.push(propose(p).map(Action::Propose));
    }
    if let Some(m) = raw.merge {
        actions.push(merge(m).map(Action::Merge));
    }
    if let Some(c) = raw.confirm {
        actions.push(
            refusal_only(c.outcome, c.code, c.message_contains, None).map(|refused| {
                Action::Confirm(Confirm {
                    plan: c.plan,
                    refused,
                })
            }),
        );
    }
    if let Some(a) = raw.apply {
        actions.push(apply(a).map(Action::Apply));
    }
    if let Some(sql) = raw.sql {
        actions.push(Ok(Action::Sql(sql)));
    }
    if let Some(d) = raw.check_drift {
        actions.push(Ok(Action::CheckDrift(CheckDrift {
            drifted: d.drifted,
            differences_contain: d.differences_contain,
        })));
    }
    if let Some(e) = raw.expect {
        actions.push(Ok(Action::Expect(Expect {
            columns: e.columns,
            plans: e.plans,
            ledger_verifies: e.ledger_verifies,
            audit_tail: e.audit_tail,
        })));
    }
    match actions.len() {
        1 => actions.pop().unwrap_or_else(|| Err("no action".into())),
        0 => Err(
            "a step needs one of propose, merge, confirm, apply, sql, check_drift, \
                  expect"
                .into(),
        ),
        _ => Err("a step does exactly one thing: split it into several steps".into()),
    }
}

fn propose(p: RawPropose) -> Result<Propose, String> {
    let document = match (p.document, p.document_text) {
        (Some(doc), None) => serde_json::to_string_pretty(&doc)
            .map_err(|e| format!("the document cannot be written as JSON: {e}"))?,
        (None, Some(text)) => text,
        _ => return Err("propose needs exactly one of `document` or `document_text`".into()),
    };
    let refused = refusal_only(p.outcome, p.code, p.message_contains, None)?;
    Ok(Propose {
        alias: p.alias,
        document,
        requires_confirmation: p.requires_confirmation,
        refused,
    })
}

fn merge(m: RawMerge) -> Result<Merge, String> {
    let plans: [String; 2] = m
        .plans
        .try_into()
        .map_err(|v: Vec<String>| format!("merge takes exactly two plans, got {}", v.len()))?;
    let refused = match m.expect_conflict {
        Some(conflicts) => {
            if m.outcome.is_some() || m.code.is_some() {
                return Err(
                    "`expect_conflict` already says the merge is refused as a conflict: \
                            drop `outcome`/`code`"
                        .into(),
                );
            }
            Some(Refusal {
                code: "conflict".into(),
                message_contains: m.message_contains,
                conflicts: Some(conflicts),
            })
        }
        None => refusal_only(m.outcome, m.code, m.message_contains, None)?,
    };
    match (&refused, &m.alias) {
        (None, None) => {
            Err("merge needs `as:` (the merged plan's alias) or `expect_conflict:`".into())
        }
        (Some(_), Some(_)) => Err("a refused merge has no plan: drop `as:`".into()),
        _ => Ok(Merge {
            plans,
            alias: m.alias,
            refused,
        }),
    }
}

/// Reads `outcome`/`code`/`message_contains`/`conflicts` of a step that either succeeds or is
/// refused: `None` when it must succeed.
fn refusal_only(
    outcome: Option<String>,
    code: Option<String>,
    message_contains: Option<String>,
    conflicts: Option<Vec<String>>,
) -> Result<Option<Refusal>, String> {
    match (outcome.as_deref(), code) {
        (None, None) if message_contains.is_none() && conflicts.is_none() => Ok(None),
        (Some("refused") | None, Some(code)) => Ok(Some(Refusal {
            code,
            message_contains,
            conflicts,
        })),
        (Some("refused"), None) => Err("`outcome: refused` needs `code:` (an error code such \
                                        as stale_plan)"
            .into()),
        (Some(other), _) => Err(format!(
            "unknown outcome `{other}` here (this step is either done or `refused`)"
        )),
        (None, None) => Err("`message_contains`/`conflicts` describe a refusal: add \
                             `outcome: refused` and `code:`"
            .into()),
    }
}

fn apply(a: RawApply) -> Result<Apply, String> {
    let confirm = match a.confirm {
        None | Some(RawConfirmation::Flag(false)) => None,
        Some(RawConfirmation::Flag(true)) => Some(Confirmation::Own),
        Some(RawConfirmation::Given(s)) => Some(Confirmation::Given(s)),
    };
    let outcome = match a.outcome.as_deref().unwrap_or("applied") {
        "applied" | "rebased" if a.code.is_some() || a.message_contains.is_some() => {
            return Err(
                "`code`/`message_contains` describe a refusal: use `outcome: refused`".into(),
            )
        }
        "applied" if a.alias.is_some() => {
            return Err("`as:` names a rebased plan: use `outcome: rebased`".into())
        }
        "applied" | "rebased" if a.conflicts.is_some() => {
            return Err("`conflicts` describe a refusal: use `outcome: refused`".into())
        }
        "applied" => ApplyOutcome::Applied,
        "rebased" => ApplyOutcome::Rebased(a.alias),
        "refused" => {
            if a.alias.is_some() {
                return Err("a refused apply has no plan: drop `as:`".into());
            }
            refusal_only(
                Some("refused".into()),
                a.code,
                a.message_contains,
                a.conflicts,
            )?
            .map(ApplyOutcome::Refused)
            .ok_or("`outcome: refused` needs `code:`")?
        }
        other => {
            return Err(format!(
                "unknown apply outcome `{other}`: applied, rebased or refused"
            ))
        }
    };
    Ok(Apply {
        plan: a.plan,
        confirm,
        outcome,
    })
}
