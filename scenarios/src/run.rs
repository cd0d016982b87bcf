//! Running a [`Case`]: a fresh database on the shared test cluster, a runtime with its own
//! ledger, then each step in order. The first step that does not go as written stops the case:
//! later steps build on earlier ones, so what follows a failure would only add noise.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use lockplane_actors::{Config, DatabaseId, Error, Lockplane, ShadowConfig};
use lockplane_engine::testkit;

use crate::case::{
    Action, Apply, ApplyOutcome, Case, CheckDrift, Confirm, Confirmation, Expect, Merge, Propose,
    Refusal, Step,
};
use crate::ScenarioError;

/// What a case did, step by step, for a reader (printed by the test with `--nocapture`).
#[derive(Debug, Clone)]
pub struct Report {
    /// The case's file.
    pub file: String,
    /// The case's name.
    pub name: String,
    /// One line per step: who did what, and what came of it.
    pub transcript: Vec<String>,
    /// Wall time of the whole case, setup included.
    pub elapsed: Duration,
}

/// Runs `case` against a fresh database on the shared test cluster (which is also the shadow
/// server), with a new ledger under `work_dir`.
pub async fn run(case: &Case, work_dir: &Path) -> Result<Report, ScenarioError> {
    let began = Instant::now();
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        ScenarioError::case(&case.file, format!("{what}: {e}"))
    };
    let cluster = testkit::shared_cluster().map_err(|e| fail("test cluster", &e))?;
    let name = testkit::fresh_database("scenario")
        .await
        .map_err(|e| fail("creating the database", &e))?;
    let client = cluster
        .connect(&name)
        .await
        .map_err(|e| fail("connecting", &e))?;
    if !case.setup.trim().is_empty() {
        client
            .batch_execute(&case.setup)
            .await
            .map_err(|e| fail("setup SQL", &pg_error(&e)))?;
    }
    let mut config = Config::new(work_dir.join("ledger"));
    // The shared test cluster is the shadow server: no cluster start per case.
    config.shadow = ShadowConfig::Url(cluster.url("postgres"));
    config.lock_wait = Duration::from_secs(5);
    let lockplane = Lockplane::open(config)
        .await
        .map_err(|e| fail("opening the runtime", &e))?;
    let db = lockplane
        .attach(&cluster.url(&name), None)
        .await
        .map_err(|e| fail("attaching the database", &e))?;

    let mut world = World {
        lockplane,
        db,
        client,
        aliases: BTreeMap::new(),
    };
    let mut transcript = Vec::with_capacity(case.steps.len());
    for step in &case.steps {
        let who = step.who.as_deref().unwrap_or("(check)");
        let line = world
            .step(who, &step.action)
            .await
            .map_err(|message| ScenarioError::step(case, step, message))?;
        transcript.push(format!("{:>2}. {who} {line}", step.index));
    }
    Ok(Report {
        file: case.file.clone(),
        name: case.name.clone(),
        transcript,
        elapsed: began.elapsed(),
    })
}

/// The state a case carries from step to step.
struct World {
    lockplane: Lockplane,
    db: DatabaseId,
    /// A direct connection: the human's `sql` steps and the `columns` checks go around
    /// Lockplane on purpose.
    client: tokio_postgres::Client,
    /// Alias → plan id.
    aliases: BTreeMap<String, String>,
}

impl World {
    /// Runs one step; `Ok` is its transcript line, `Err` says what did not go as written.
    async fn step(&mut self, who: &str, action: &Action) -> Result<String, String> {
        match action {
            Action::Propose(p) => self.propose(who, p).await,
            Action::Merge(m) => self.merge(who, m).await,
            Action::Confirm(c) => self.confirm(who, c).await,
            Action::Apply(a) => self.apply(who, a).await,
            Action::Sql(sql) => {
                self.client
                    .batch_execute(sql)
                    .await
                    .map_err(|e| format!("the SQL failed: {}", pg_error(&e)))?;
                Ok(format!(
                    "runs SQL behind Lockplane's back: {}",
                    one_line(sql)
                ))
            }
            Action::CheckDrift(d) => self.check_drift(who, d).await,
            Action::Expect(e) => self.expect(e).await,
        }
    }

    fn plan_id(&self, alias: &str) -> Result<String, String> {
        self.aliases.get(alias).cloned().ok_or_else(|| {
            let known: Vec<&str> = self.aliases.keys().map(String::as_str).collect();
            format!(
                "no plan is called `{alias}` (known: {})",
                if known.is_empty() {
                    "none yet".to_owned()
                } else {
                    known.join(", ")
                }
            )
        })
    }

    fn bind(&mut self, alias: &str, plan_id: &str) -> Result<(), String> {
        if let Some(old) = self.aliases.get(alias) {
            return Err(format!(
                "`{alias}` already names plan {}: pick a new alias",
                short(old)
            ));
        }
        self.aliases.insert(alias.to_owned(), plan_id.to_owned());
        Ok(())
    }

    async fn propose(&mut self, who: &str, p: &Propose) -> Result<String, String> {
        let name = format!("{}.yaml", p.alias);
        let result = self
            .lockplane
            .propose(&self.db, &name, &p.document, who)
            .await;
        if let Some(refusal) = &p.refused {
            return refused(result, refusal)
                .map(|e| format!("proposes `{}`: refused, {e}", p.alias));
        }
        let proposal = result.map_err(|e| failed("propose", &e))?;
        let plan = &proposal.plan;
        if let Some(wanted) = p.requires_confirmation {
            if plan.requires_confirmation != wanted {
                return Err(format!(
                    "plan {} requires confirmation: {}, expected {wanted}",
                    short(&plan.plan_id),
                    plan.requires_confirmation
                ));
            }
        }
        self.bind(&p.alias, &plan.plan_id)?;
        Ok(format!(
            "proposes `{}` = {} ({} steps{})",
            p.alias,
            short(&plan.plan_id),
            plan.steps.len(),
            if plan.requires_confirmation {
                ", needs confirmation"
            } else {
                ""
            }
        ))
    }

    async fn merge(&mut self, who: &str, m: &Merge) -> Result<String, String> {
        let a = self.plan_id(&m.plans[0])?;
        let b = self.plan_id(&m.plans[1])?;
        let result = self.lockplane.merge(&self.db, &a, &b, who).await;
        let what = format!("merges `{}` + `{}`", m.plans[0], m.plans[1]);
        if let Some(refusal) = &m.refused {
            return refused(result, refusal).map(|e| format!("{what}: refused, {e}"));
        }
        let merged = result.map_err(|e| failed("merge", &e))?;
        // `Merge::parse` guarantees an alias when no refusal is expected.
        let alias = m.alias.as_deref().unwrap_or("merged");
        self.bind(alias, &merged.plan.plan_id)?;
        Ok(format!(
            "{what} into `{alias}` = {}",
            short(&merged.plan.plan_id)
        ))
    }

    async fn confirm(&mut self, who: &str, c: &Confirm) -> Result<String, String> {
        let id = self.plan_id(&c.plan)?;
        let result = self.lockplane.confirm(&self.db, &id, who).await;
        if let Some(refusal) = &c.refused {
            return refused(result, refusal)
                .map(|e| format!("confirms `{}`: refused, {e}", c.plan));
        }
        result.map_err(|e| failed("confirm", &e))?;
        Ok(format!("confirms `{}`", c.plan))
    }

    async fn apply(&mut self, who: &str, a: &Apply) -> Result<String, String> {
        let id = self.plan_id(&a.plan)?;
        let confirmation = match &a.confirm {
            None => None,
            Some(Confirmation::Own) => Some(id.clone()),
            Some(Confirmation::Given(given)) => Some(
                self.aliases
                    .get(given)
                    .cloned()
                    .unwrap_or_else(|| given.clone()),
            ),
        };
        let result = self
            .lockplane
            .apply(&self.db, &id, confirmation.as_deref(), who)
            .await;
        let what = format!("applies `{}`", a.plan);
        match &a.outcome {
            ApplyOutcome::Refused(refusal) => {
                refused(result, refusal).map(|e| format!("{what}: refused, {e}"))
            }
            ApplyOutcome::Applied => {
                let applied = result.map_err(|e| failed("apply", &e))?;
                if let Some(from) = applied.rebased_from {
                    return Err(format!(
                        "expected the plan itself to apply, but it was rebased from {} into {}",
                        short(&from),
                        short(&applied.plan_id)
                    ));
                }
                Ok(format!(
                    "{what}: applied, now at {}",
                    short(&applied.resulting_hash.0)
                ))
            }
            ApplyOutcome::Rebased(alias) => {
                let applied = result.map_err(|e| failed("apply", &e))?;
                if applied.rebased_from.as_deref() != Some(id.as_str()) {
                    return Err(format!(
                        "expected a rebase of {}, but plan {} applied as it was",
                        short(&id),
                        short(&applied.plan_id)
                    ));
                }
                if let Some(alias) = alias {
                    self.bind(alias, &applied.plan_id)?;
                }
                Ok(format!(
                    "{what}: rebased into `{}` = {} and applied",
                    alias.as_deref().unwrap_or("(unnamed)"),
                    short(&applied.plan_id)
                ))
            }
        }
    }

    async fn check_drift(&mut self, who: &str, d: &CheckDrift) -> Result<String, String> {
        let drift = self
            .lockplane
            .check_drift(&self.db, who)
            .await
            .map_err(|e| failed("check_drift", &e))?;
        let mut problems = Vec::new();
        if drift.drifted != d.drifted {
            problems.push(format!(
                "drifted is {}, expected {} (differences: {:?})",
                drift.drifted, d.drifted, drift.differences
            ));
        }
        for fragment in &d.differences_contain {
            if !drift
                .differences
                .iter()
                .any(|x| x.contains(fragment.as_str()))
            {
                problems.push(format!(
                    "no difference mentions `{fragment}` (differences: {:?})",
                    drift.differences
                ));
            }
        }
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        Ok(format!(
            "checks drift: {}",
            if drift.drifted {
                format!("drifted ({})", drift.differences.join("; "))
            } else {
                "none".to_owned()
            }
        ))
    }

    /// Checks everything the step lists and reports every mismatch at once.
    async fn expect(&mut self, e: &Expect) -> Result<String, String> {
        let mut problems = Vec::new();
        let mut held = Vec::new();
        for (table, wanted) in &e.columns {
            let (schema, name) = table.split_once('.').unwrap_or(("public", table.as_str()));
            let rows = self
                .client
                .query(
                    "SELECT column_name::text FROM information_schema.columns \
                     WHERE table_schema = $1 AND table_name = $2 ORDER BY column_name",
                    &[&schema, &name],
                )
                .await
                .map_err(|e| format!("reading the columns of {table}: {}", pg_error(&e)))?;
            let live: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
            let mut wanted = wanted.clone();
            wanted.sort();
            if live == wanted {
                held.push(format!("{table} has [{}]", live.join(", ")));
            } else {
                problems.push(format!(
                    "{table} has columns [{}], expected [{}]",
                    live.join(", "),
                    wanted.join(", ")
                ));
            }
        }
        if !e.plans.is_empty() {
            let plans = self
                .lockplane
                .list_plans(&self.db)
                .await
                .map_err(|e| failed("list_plans", &e))?;
            for (alias, wanted) in &e.plans {
                let id = self.plan_id(alias)?;
                match plans.iter().find(|p| p.plan.plan_id == id) {
                    Some(view) if view.status.name() == wanted => {
                        held.push(format!("`{alias}` is {wanted}"));
                    }
                    Some(view) => problems.push(format!(
                        "plan `{alias}` is {}, expected {wanted}",
                        view.status.name()
                    )),
                    None => problems.push(format!(
                        "plan `{alias}` ({}) is not in list_plans",
                        short(&id)
                    )),
                }
            }
        }
        if let Some(wanted) = e.ledger_verifies {
            let verified = self
                .lockplane
                .verify_ledger()
                .await
                .map_err(|e| failed("verify_ledger", &e))?;
            if verified.ok == wanted {
                held.push(format!(
                    "the ledger {} ({} records)",
                    if wanted {
                        "verifies"
                    } else {
                        "does not verify"
                    },
                    verified.records_checked
                ));
            } else {
                problems.push(format!(
                    "ledger verifies: {}, expected {wanted} (problems: {:?})",
                    verified.ok, verified.problems
                ));
            }
        }
        if let Some(wanted) = &e.audit_tail {
            let log = self
                .lockplane
                .audit_log(Some(&self.db), wanted.len())
                .await
                .map_err(|e| failed("audit_log", &e))?;
            let kinds: Vec<&str> = log.iter().map(|entry| entry.kind.as_str()).collect();
            if kinds == *wanted {
                held.push(format!("the audit log ends [{}]", kinds.join(", ")));
            } else {
                problems.push(format!(
                    "the audit log ends [{}], expected [{}]",
                    kinds.join(", "),
                    wanted.join(", ")
                ));
            }
        }
        if problems.is_empty() {
            Ok(format!("sees: {}", held.join("; ")))
        } else {
            Err(problems.join("; "))
        }
    }
}

/// Checks that `result` is the refusal described; `Ok` is a short description of it.
fn refused<T>(result: Result<T, Error>, refusal: &Refusal) -> Result<String, String> {
    let error = match result {
        Ok(_) => {
            return Err(format!(
                "expected a refusal `{}`, but the call succeeded",
                refusal.code
            ))
        }
        Err(error) => error,
    };
    let message = error.to_string();
    if error.code() != refusal.code {
        return Err(format!(
            "expected a refusal `{}`, got `{}`: {message}",
            refusal.code,
            error.code()
        ));
    }
    if let Some(fragment) = &refusal.message_contains {
        if !message.contains(fragment.as_str()) {
            return Err(format!(
                "the `{}` message does not contain `{fragment}`: {message}",
                refusal.code
            ));
        }
    }
    let carried = match &error {
        Error::Conflict { conflicts, .. } | Error::Stale { conflicts, .. } => {
            let mut paths: Vec<String> = conflicts.iter().map(|c| c.path.clone()).collect();
            paths.sort();
            paths
        }
        _ => Vec::new(),
    };
    if let Some(wanted) = &refusal.conflicts {
        let mut wanted = wanted.clone();
        wanted.sort();
        if carried != wanted {
            return Err(format!(
                "the refusal names conflicts [{}], expected [{}]: {message}",
                carried.join(", "),
                wanted.join(", ")
            ));
        }
    }
    Ok(if carried.is_empty() {
        format!("`{}`", refusal.code)
    } else {
        format!("`{}` on {}", refusal.code, carried.join(", "))
    })
}

fn failed(call: &str, error: &Error) -> String {
    format!("{call} failed ({}): {error}", error.code())
}

/// A Postgres error with the server's message, which `Display` of tokio-postgres hides.
fn pg_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

/// Enough of an id or hash to tell them apart in a transcript.
fn short(id: &str) -> &str {
    let body = id.split_once(':').map_or(id, |(_, hex)| hex);
    body.get(..12).unwrap_or(body)
}

fn one_line(sql: &str) -> String {
    sql.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl ScenarioError {
    fn step(case: &Case, step: &Step, message: String) -> ScenarioError {
        ScenarioError {
            file: case.file.clone(),
            step: Some(step.index),
            line: Some(step.line),
            who: step.who.clone(),
            kind: Some(step.action.kind()),
            message,
        }
    }
}
