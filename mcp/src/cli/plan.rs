//! `lockplane plan` and `lockplane apply`: desired DSL vs live database → an explicit plan,
//! proven on a shadow database; then applied with confirmation, every step recorded.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lockplane_engine::connect;
use lockplane_engine::events::{
    self, ApplyFailed, ApplyStarted, Approval, Event, PlanApplied, PlanConfirmed, PlanProposed,
    PlanSummary, Receipt, Timing,
};
use lockplane_engine::exec::{self, ApplyOptions, ProgressSink, StepProgress};
use lockplane_engine::plan::{read_stats, Plan};
use lockplane_engine::proposal::{self, ProposeOptions};
use lockplane_engine::shadow::{LiveSource, ShadowTarget};
use lockplane_engine::{catalog_hash, introspect_parallel, IntrospectOptions};
use tokio_postgres::Client;

use super::{ledger, print, CliError};

/// Flags of `lockplane plan`.
#[derive(clap::Args)]
pub(crate) struct PlanArgs {
    /// The desired schema (YAML or JSON DSL).
    #[arg(short = 'f', long = "file")]
    file: PathBuf,
    /// Database to plan against (else DATABASE_URL, else the PG* variables).
    #[arg(long)]
    database_url: Option<String>,
    /// Write the plan (JSON) here, for `lockplane apply`.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print the plan as JSON instead of the readable form.
    #[arg(long)]
    json: bool,
    /// Shadow server for the dry run (a role that may create databases); default: a throwaway
    /// cluster started from the local Postgres binaries.
    #[arg(long)]
    shadow_url: Option<String>,
    /// Skip the shadow dry run (not recommended). A shadow is still used to materialise the
    /// document (a throwaway cluster, or --shadow-url).
    #[arg(long)]
    no_shadow: bool,
    /// The database's id in the ledger; default `host:port/dbname`.
    #[arg(long, env = "LOCKPLANE_DB_ID", value_name = "ID")]
    db_id: Option<String>,
}

/// Flags of `lockplane apply`.
#[derive(clap::Args)]
pub(crate) struct ApplyArgs {
    /// A plan written by `lockplane plan --out`.
    plan: PathBuf,
    /// Confirms a plan with data-loss hazards: must be its exact plan id.
    #[arg(long, value_name = "PLAN_ID")]
    confirm: Option<String>,
    /// Database to apply to (else DATABASE_URL, else the PG* variables).
    #[arg(long)]
    database_url: Option<String>,
    /// `lock_timeout` of every statement, in milliseconds.
    #[arg(long, default_value_t = 5_000)]
    lock_timeout_ms: u64,
    /// The database's id in the ledger; default `host:port/dbname`.
    #[arg(long, env = "LOCKPLANE_DB_ID", value_name = "ID")]
    db_id: Option<String>,
    /// Continue an apply of this plan that stopped in its steps run alone (after its
    /// transaction committed), after the last step the ledger records as applied.
    #[arg(long)]
    resume: bool,
}

async fn connect_pair(
    url: Option<&str>,
) -> Result<(Client, Client, String, connect::ConnTarget), CliError> {
    let config = super::resolve_target(url)?;
    let one = || connect::connect(&config);
    let (a, b) = tokio::join!(one(), one());
    let id = events::database_id(&config.pg);
    Ok((a?, b?, id, config))
}

/// An executor error as the CLI class it belongs to.
fn apply_error(e: exec::ApplyError, plan_file: &Path, plan_id: &str) -> CliError {
    use exec::ApplyError as A;
    let short = events::short(plan_id);
    match e {
        A::ConfirmationRequired { .. } | A::WrongConfirmation { .. } => {
            CliError::NeedsConfirmation {
                message: e.to_string(),
                help: format!(
                    "review the hazards (lockplane plan prints them), then apply with the \
                     plan's id (its first 12 digits, as audit log shows it, are enough):\n\n  \
                     lockplane apply {} --confirm {short}\n",
                    plan_file.display()
                ),
            }
        }
        A::Stale { .. } => CliError::Stale(e.to_string()),
        A::PlanTampered { .. } | A::Foreign(_) | A::InvalidResume { .. } => {
            CliError::Refused(e.to_string())
        }
        A::Interrupted { .. } => CliError::Interrupted(e.to_string()),
        other => CliError::ApplyFailed(other.to_string()),
    }
}

fn failed(e: impl std::fmt::Display) -> CliError {
    CliError::Usage(e.to_string())
}

/// Runs `lockplane plan`.
pub(crate) async fn run_plan(
    at: &ledger::LedgerAt,
    actor: &str,
    args: PlanArgs,
) -> Result<(), CliError> {
    let text = std::fs::read_to_string(&args.file).map_err(|source| CliError::Read {
        path: args.file.clone(),
        source,
    })?;
    let loaded = lockplane_engine::dsl::load_file_text(&args.file.display().to_string(), &text)?;
    let store = ledger::open(at)?;
    let (mut client, mut helper, default_id, config) =
        connect_pair(args.database_url.as_deref()).await?;
    let database = args.db_id.clone().unwrap_or(default_id);
    let live = introspect_parallel(&mut client, &mut helper, &IntrospectOptions::default()).await?;
    let stats = read_stats(&client).await.map_err(failed)?;
    let target = match &args.shadow_url {
        Some(url) => ShadowTarget::Url(url),
        None => ShadowTarget::Throwaway,
    };
    eprintln!(
        "lockplane: reproducing the database on a shadow (pg_dump), materialising the document{}…",
        if args.no_shadow {
            ""
        } else {
            ", proving the plan and its reverse"
        }
    );
    let renames = lockplane_engine::dsl::renames(&loaded.document);
    let source = LiveSource {
        client: &client,
        config: &config,
        catalog: &live,
    };
    let opts = ProposeOptions {
        created_by: actor.to_owned(),
        prove: !args.no_shadow,
        ..ProposeOptions::default()
    };
    let shadow_given = args.shadow_url.is_some();
    let proposed = proposal::propose(&source, &loaded.catalog, &renames, &stats, target, &opts)
        .await
        .map_err(|e| {
            let text = e.to_string();
            if !shadow_given && text.contains("no Postgres server binaries") {
                // Even without the dry run, the document is materialised on a shadow: that
                // is how it becomes a catalog exactly as Postgres would store it.
                CliError::Usage(format!(
                    "{text}\nplanning needs a shadow server even with --no-shadow (which skips \
                     only the dry run): the document is created there to read it back as \
                     Postgres stores it. Pass --shadow-url postgres://USER@HOST/postgres (a \
                     role that may create databases) to use an existing server instead"
                ))
            } else {
                use proposal::ProposeError as P;
                match e {
                    P::MissingRoles { .. } | P::Unsupported { .. } | P::Guarded(_) | P::Plan(_) => {
                        CliError::Refused(text)
                    }
                    _ => failed(e),
                }
            }
        })?;
    let plan = proposed.plan;
    let shadow_line = match &proposed.report {
        _ if plan.steps.is_empty() => {
            format!("shadow: live reproduced with {}", proposed.dump_tool)
        }
        None => format!(
            "shadow dry run: skipped (--no-shadow); live reproduced with {}",
            proposed.dump_tool
        ),
        Some(report) => format!(
            "shadow dry run: ok — live reproduced with {}, the plan reached {} and {}",
            proposed.dump_tool,
            events::short(&report.target_hash.0),
            match &report.reverse {
                Some(_) => format!(
                    "its reverse came back to {}",
                    events::short(&report.base_hash.0)
                ),
                None => "the plan has no reverse".to_owned(),
            }
        ),
    };

    let body = lockplane_engine::hash::canonical_json(&plan).map_err(failed)?;
    let body_ref = events::BlobRef::of(&body);
    let event = Event::PlanProposed(PlanProposed {
        actor: actor.to_owned(),
        database: database.clone(),
        plan: PlanSummary {
            plan_id: plan.plan_id.clone(),
            base_hash: plan.base_hash.clone(),
            target_hash: plan.target_hash.clone(),
            body: body_ref.clone(),
            step_count: plan.steps.len() as u32,
            hazards: plan.hazard_names(),
            requires_confirmation: plan.requires_confirmation,
            base_manifest: None,
            target_manifest: None,
            renames: renames.clone(),
        },
    });
    ledger::record(&store, &event, &[(&body, &body_ref)])?;

    if let Some(out) = &args.out {
        let json = serde_json::to_string_pretty(&plan).map_err(failed)?;
        std::fs::write(out, json).map_err(|source| CliError::Read {
            path: out.clone(),
            source,
        })?;
    }
    if args.json {
        return print(&serde_json::to_string_pretty(&plan).map_err(failed)?);
    }
    print(&readable(&plan, &shadow_line, args.out.as_deref()))
}

fn readable(plan: &Plan, shadow_line: &str, out: Option<&Path>) -> String {
    let mut s = String::new();
    s.push_str(&format!("plan {}\n", plan.plan_id));
    s.push_str(&format!(
        "  base   {}\n  target {}\n",
        plan.base_hash, plan.target_hash
    ));
    if plan.steps.is_empty() {
        s.push_str("\nNothing to do: the database already matches the document.\n");
        return s;
    }
    for (i, step) in plan.steps.iter().enumerate() {
        let mode = if step.transactional {
            "in transaction"
        } else {
            "alone"
        };
        s.push_str(&format!(
            "\n{}. {}  [{}, {}]\n   {}\n",
            i + 1,
            step.summary,
            step.lock,
            mode,
            step.sql.replace('\n', "\n   ")
        ));
        for h in &step.hazards {
            s.push_str(&format!("   ! {:?} {}: {}\n", h.kind, h.object, h.detail));
        }
    }
    s.push_str(&format!("\n{shadow_line}\n"));
    if plan.requires_confirmation {
        s.push_str(&format!(
            "\nThis plan can lose data or touches what Lockplane cannot see: apply it with\n  \
             lockplane apply {} --confirm {}\n",
            out.map(|p| p.display().to_string())
                .unwrap_or_else(|| "PLAN.json".into()),
            plan.plan_id
        ));
    } else if let Some(out) = out {
        s.push_str(&format!(
            "\nApply it with: lockplane apply {}\n",
            out.display()
        ));
    }
    s
}

/// Runs `lockplane apply`.
pub(crate) async fn run_apply(
    at: &ledger::LedgerAt,
    actor: &str,
    args: ApplyArgs,
) -> Result<(), CliError> {
    let text = std::fs::read_to_string(&args.plan).map_err(|source| CliError::Read {
        path: args.plan.clone(),
        source,
    })?;
    let plan: Plan = serde_json::from_str(&text)
        .map_err(|e| CliError::Usage(format!("{} is not a plan: {e}", args.plan.display())))?;
    let computed = plan.computed_id().map_err(failed)?;
    if computed != plan.plan_id {
        return Err(CliError::Refused(format!(
            "{} was changed after it was planned: its content hashes to {computed}, not to its \
             plan_id {}; plan again",
            args.plan.display(),
            plan.plan_id
        )));
    }
    let store = ledger::open(at)?;
    let (mut client, helper, default_id, _) = connect_pair(args.database_url.as_deref()).await?;
    let database = args.db_id.clone().unwrap_or(default_id);
    if !ledger::was_proposed(&store, &database, &plan.plan_id)? {
        return Err(CliError::Refused(format!(
            "plan {} was never proposed for {database} in this ledger ({}): Lockplane applies \
             only plans it made and proved against this database; plan it here first \
             (lockplane plan -f DOCUMENT --out PLAN.json)",
            plan.plan_id,
            at.path.display()
        )));
    }
    // A plan the ledger records as applied is not applied again. One whose apply the ledger
    // left open (its process stopped) may have finished on the server: if its target is
    // live, that is recorded now. (A target reached any other way shows up as the executor's
    // stale refusal, handled with the outcome below: no extra catalog read on the usual path.)
    let progress = ledger::plan_progress(&store, &database, &plan.plan_id)?;
    if !args.resume {
        if let Some(seq) = progress.applied_at {
            return print(&format!(
                "plan {} is already applied (recorded at seq {seq}): nothing to do",
                plan.plan_id
            ));
        }
        if let Some(open) = progress.open_apply {
            if introspect_parallel_once(&mut client).await.as_ref() == Some(&plan.target_hash) {
                return record_recovered(&store, actor, &database, &plan, open);
            }
        }
    }
    // The id as `audit log` shows it (12 digits), or the bare hex, stands for the plan's id.
    let confirm = args.confirm.as_deref().map(|c| expand_id(c, &plan.plan_id));
    if let Some(given) = &confirm {
        if given != &plan.plan_id {
            return Err(CliError::NeedsConfirmation {
                help: "drop --confirm, or pass this plan's id".into(),
                message: format!(
                    "--confirm {given} is not this plan's id ({}); a confirmation names exactly \
                 the plan it approves",
                    plan.plan_id
                ),
            });
        }
    }
    // Refuse before changing anything (or recording) when confirmation is missing or wrong.
    exec::check_confirmation(&plan, confirm.as_deref())
        .map_err(|e| apply_error(e, &args.plan, &plan.plan_id))?;

    let resume = if args.resume {
        match progress.resume_point {
            Some(point) => Some(point),
            None => {
                return Err(CliError::Usage(format!(
                    "nothing to resume: the ledger records no step of plan {} as applied on \
                     {database} since its last start (or it is applied already); apply it \
                     without --resume",
                    plan.plan_id
                )))
            }
        }
    } else {
        None
    };
    let store = Arc::new(store);

    let approval = match &confirm {
        Some(plan_id) if plan.requires_confirmation => {
            let confirmed = Event::PlanConfirmed(PlanConfirmed {
                actor: actor.to_owned(),
                database: database.clone(),
                plan_id: plan_id.clone(),
                hazards_acknowledged: plan.hazard_names(),
            });
            let head = ledger::record(store.as_ref(), &confirmed, &[])?;
            Some(Approval {
                seq: head.seq,
                by: actor.to_owned(),
            })
        }
        _ => None,
    };
    let started = Event::ApplyStarted(ApplyStarted {
        actor: actor.to_owned(),
        database: database.clone(),
        plan_id: plan.plan_id.clone(),
        base_hash: resume
            .as_ref()
            .map(|r| r.catalog_hash.clone())
            .unwrap_or_else(|| plan.base_hash.clone()),
        approval: approval.clone(),
    });
    let started_seq = ledger::record(store.as_ref(), &started, &[])?.seq;
    let began = events::now_micros();
    let shown = Arc::new(ApplyProgress::new(&plan, std::io::stderr().is_terminal()));
    // Each committed phase is in the ledger before the next one starts: that is where
    // `--resume` continues from.
    let recorder = {
        let (store, shown) = (store.clone(), shown.clone());
        let (actor, database) = (actor.to_owned(), database.clone());
        move |progress: &StepProgress| -> Result<(), String> {
            shown.step_applied(progress)?;
            if let Some(event) = progress.step_applied(&actor, &database) {
                ledger::record(store.as_ref(), &Event::StepApplied(event), &[])
                    .map_err(|e| e.to_string())?;
            }
            Ok(())
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let opts = ApplyOptions {
        lock_timeout: std::time::Duration::from_millis(args.lock_timeout_ms),
        progress: Some(Arc::new(recorder) as Arc<dyn ProgressSink>),
        resume_after: resume.clone(),
        stop: Some(stop.clone()),
        ..ApplyOptions::default()
    };
    let backend: Option<i32> = client
        .query_one("SELECT pg_catalog.pg_backend_pid()", &[])
        .await
        .ok()
        .map(|r| r.get(0));
    shown.start();
    let watcher = backend.map(|pid| tokio::spawn(watch(helper, pid, shown.clone())));
    let cancel = client.cancel_token();
    let outcome = {
        let apply = exec::apply(&mut client, &plan, &opts, confirm.as_deref());
        tokio::pin!(apply);
        let mut interrupt = std::pin::pin!(interrupted());
        loop {
            tokio::select! {
                outcome = &mut apply => break outcome,
                () = &mut interrupt, if !stop.load(Ordering::SeqCst) => {
                    // The first interrupt stops the apply cleanly: the running statement is
                    // cancelled on the server (a dropped client would leave it running), a
                    // transaction rolls back, a failed index build is cleaned up, and the
                    // outcome is recorded below. A second one exits at once.
                    stop.store(true, Ordering::SeqCst);
                    eprintln!(
                        "lockplane: interrupted: cancelling the running statement on the server \
                         and stopping; interrupt again to exit without waiting"
                    );
                    lockplane_engine::connect::cancel_query(&cancel).await;
                    tokio::spawn(async {
                        interrupted().await;
                        eprintln!(
                            "lockplane: exiting; the ledger keeps this apply open: run the same \
                             apply again to record what the database reached"
                        );
                        std::process::exit(130);
                    });
                }
            }
        }
    };
    if let Some(watcher) = watcher {
        watcher.abort();
    }
    let was_interrupted = stop.load(Ordering::SeqCst);
    shown.finish(outcome.is_ok());
    let finished = events::now_micros();
    let timing = Timing::between(began, finished);
    match outcome {
        Ok(report) => {
            let steps = report.step_receipts().cloned().collect();
            let receipt = Receipt::seal(plan.plan_id.clone(), steps, timing).map_err(failed)?;
            let applied = Event::PlanApplied(PlanApplied {
                actor: actor.to_owned(),
                database,
                plan_id: plan.plan_id.clone(),
                started_seq,
                before_hash: plan.base_hash.clone(),
                after_hash: report.resulting_hash.clone(),
                approval,
                receipt: receipt.clone(),
                recovered: false,
            });
            ledger::record(store.as_ref(), &applied, &[])?;
            let mut s = format!("applied {}\n", plan.plan_id);
            for r in &receipt.steps {
                s.push_str(&format!(
                    "  {:>6} ms  {:?}  {}\n",
                    r.duration_ms,
                    r.outcome,
                    r.sql.lines().next().unwrap_or("")
                ));
            }
            s.push_str(&format!("resulting hash {}", report.resulting_hash));
            print(&s)
        }
        Err(exec::ApplyError::Stale { live, .. }) if live == plan.target_hash => {
            record_recovered(store.as_ref(), actor, &database, &plan, started_seq)
        }
        Err(error) => {
            let after_hash = introspect_parallel_once(&mut client).await;
            let receipt =
                Receipt::seal(plan.plan_id.clone(), Vec::new(), timing).map_err(failed)?;
            let failed_event = Event::ApplyFailed(ApplyFailed {
                actor: actor.to_owned(),
                database,
                plan_id: plan.plan_id.clone(),
                started_seq,
                before_hash: plan.base_hash.clone(),
                after_hash,
                error: error.to_string(),
                receipt,
                interrupted: was_interrupted,
            });
            let seq = ledger::record(store.as_ref(), &failed_event, &[])?.seq;
            if was_interrupted {
                return Err(CliError::Interrupted(format!(
                    "apply interrupted (recorded at seq {seq}): {error}"
                )));
            }
            Err(match apply_error(error, &args.plan, &plan.plan_id) {
                CliError::ApplyFailed(message) => CliError::ApplyFailed(format!(
                    "apply failed (recorded at seq {seq}): {message}"
                )),
                other => other,
            })
        }
    }
}

/// How `lockplane apply` shows its progress, on stderr only (stdout carries the result that
/// scripts read): a bar when stderr is a terminal, otherwise plain `lockplane: step i/n …`
/// lines, so logs and `make demo` show it too.
///
/// The executor reports each phase once it has committed (the transaction as a whole, or one
/// step run alone); the phase that starts next is announced from the plan's own layout,
/// which is how the executor groups steps.
struct ApplyProgress {
    /// Summary and transactional flag of every step, in plan order.
    steps: Vec<(String, bool)>,
    /// `None` when stderr is not a terminal.
    bar: Option<indicatif::ProgressBar>,
}

impl ApplyProgress {
    fn new(plan: &Plan, terminal: bool) -> Self {
        let steps: Vec<(String, bool)> = plan
            .steps
            .iter()
            .map(|s| (s.summary.clone(), s.transactional))
            .collect();
        let bar = (terminal && !steps.is_empty()).then(|| {
            let bar = indicatif::ProgressBar::new(steps.len() as u64);
            // The template is a constant: it only fails if it is mistyped, and then the
            // default style is still a progress bar.
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{spinner} {elapsed:>4} [{bar:30}] {pos}/{len} {wide_msg}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar
        });
        ApplyProgress { steps, bar }
    }

    /// `(first, end)` of the phase starting at `first`: consecutive transactional steps run
    /// together, any other step alone.
    fn phase(&self, first: usize) -> (usize, usize) {
        let transactional = self.steps.get(first).is_some_and(|s| s.1);
        let end = if transactional {
            self.steps[first..]
                .iter()
                .position(|s| !s.1)
                .map_or(self.steps.len(), |n| first + n)
        } else {
            first + 1
        };
        (first, end.min(self.steps.len()))
    }

    fn start(&self) {
        if let Some(bar) = &self.bar {
            bar.enable_steady_tick(Duration::from_millis(120));
        }
        self.announce(0);
    }

    fn announce(&self, first: usize) {
        let (first, end) = self.phase(first);
        if first >= end {
            return;
        }
        let n = self.steps.len();
        match &self.bar {
            Some(bar) if end - first > 1 => bar.set_message(format!(
                "steps {}–{end} in one transaction: {}",
                first + 1,
                self.steps[first].0
            )),
            Some(bar) => bar.set_message(format!("step {}: {}", first + 1, self.steps[first].0)),
            // The transaction's steps are announced together: they run back to back and
            // commit (or roll back) as one.
            None if end - first > 1 => {
                eprintln!(
                    "lockplane: steps {} in one transaction (committed together, or rolled \
                     back together):",
                    Self::range(first, end, n)
                );
                for (i, (summary, _)) in self.steps.iter().enumerate().take(end).skip(first) {
                    eprintln!("lockplane:   {}/{n} {summary}", i + 1);
                }
            }
            None => eprintln!("lockplane: step {}/{n} {}", first + 1, self.steps[first].0),
        }
    }

    /// `"3/7"` or `"1–5/7"`.
    fn range(first: usize, end: usize, n: usize) -> String {
        if end - first > 1 {
            format!("{}–{end}/{n}", first + 1)
        } else {
            format!("{end}/{n}")
        }
    }

    /// A line about the step running now.
    fn note(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.set_message(line.to_owned()),
            None => eprintln!("lockplane:   {line}"),
        }
    }

    fn finish(&self, ok: bool) {
        match &self.bar {
            Some(bar) => bar.finish_and_clear(),
            None if ok && !self.steps.is_empty() => {
                eprintln!(
                    "lockplane: applied {n}/{n} steps, target hash verified",
                    n = self.steps.len()
                )
            }
            None if !self.steps.is_empty() => {
                eprintln!("lockplane: the apply stopped; what happened follows")
            }
            None => {}
        }
    }
}

impl ProgressSink for ApplyProgress {
    fn step_applied(&self, progress: &StepProgress) -> Result<(), String> {
        let end = (progress.step_index as usize + 1).min(self.steps.len());
        let first = end.saturating_sub(progress.steps.len().max(1));
        let ms: u64 = progress.receipts.iter().map(|r| r.duration_ms).sum();
        let what = if progress.transactional {
            "committed"
        } else {
            "done"
        };
        let noun = if end - first > 1 { "steps" } else { "step" };
        let line = format!(
            "{noun} {} {what} ({ms} ms)",
            Self::range(first, end, self.steps.len())
        );
        match &self.bar {
            Some(bar) => {
                bar.println(format!("  ✓ {line}"));
                bar.set_position(end as u64);
            }
            None => eprintln!("lockplane: {line}"),
        }
        self.announce(end);
        // Showing progress never stops an apply.
        Ok(())
    }
}

/// While the apply's backend `pid` runs a statement for more than a few seconds, says so every
/// few seconds with how long it has run and, for an index build, Postgres' own progress
/// (`pg_stat_progress_create_index`). Reads on its own connection; stopped by the caller.
async fn watch(client: Client, pid: i32, shown: Arc<ApplyProgress>) {
    const EVERY: Duration = Duration::from_secs(3);
    let query = "SELECT EXTRACT(EPOCH FROM pg_catalog.clock_timestamp() - a.query_start)::float8,                         pg_catalog.left(pg_catalog.regexp_replace(a.query, '\\s+', ' ', 'g'), 60),                         p.phase, p.blocks_done, p.blocks_total, p.tuples_done, p.tuples_total                  FROM pg_catalog.pg_stat_activity a                  LEFT JOIN pg_catalog.pg_stat_progress_create_index p ON p.pid = a.pid                  WHERE a.pid = $1 AND a.state = 'active'";
    loop {
        tokio::time::sleep(EVERY).await;
        let Ok(Some(row)) = client.query_opt(query, &[&pid]).await else {
            continue;
        };
        let seconds: f64 = row.get(0);
        if seconds < EVERY.as_secs_f64() {
            continue;
        }
        let statement: String = row.get(1);
        let phase: Option<String> = row.get(2);
        let mut line = format!("… {seconds:.0} s: {statement}");
        if let Some(phase) = phase {
            let (blocks, blocks_total): (Option<i64>, Option<i64>) = (row.get(3), row.get(4));
            let (tuples, tuples_total): (Option<i64>, Option<i64>) = (row.get(5), row.get(6));
            line.push_str(&format!(" — {phase}"));
            match (blocks, blocks_total, tuples, tuples_total) {
                (Some(done), Some(total), _, _) if total > 0 => {
                    line.push_str(&format!(", {}% of blocks", done * 100 / total));
                }
                (_, _, Some(done), Some(total)) if total > 0 => {
                    line.push_str(&format!(", {}% of tuples", done * 100 / total));
                }
                _ => {}
            }
        }
        shown.note(&line);
    }
}

/// `given` as the full plan id when it is the id's short form (`audit log` shows the first
/// 12 hex digits; at least 8 are needed) or its bare hex; otherwise `given` unchanged.
fn expand_id(given: &str, plan_id: &str) -> String {
    let given = given.trim();
    let hex = plan_id.strip_prefix("sha3-256:").unwrap_or(plan_id);
    let bare = given.strip_prefix("sha3-256:").unwrap_or(given);
    if bare.len() >= 8 && bare.chars().all(|c| c.is_ascii_hexdigit()) && hex.starts_with(bare) {
        plan_id.to_owned()
    } else {
        given.to_owned()
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn interrupted() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
}

/// Records `PlanApplied {recovered}` for the apply started at `started_seq` of a plan whose
/// target is live although nothing here applied it (an earlier apply finished on the server
/// after its process stopped, or the change was made another way).
fn record_recovered(
    store: &dyn lockplane_store::Store,
    actor: &str,
    database: &str,
    plan: &Plan,
    started_seq: u64,
) -> Result<(), CliError> {
    let now = events::now_micros();
    let receipt = Receipt::seal(plan.plan_id.clone(), Vec::new(), Timing::between(now, now))
        .map_err(failed)?;
    let applied = Event::PlanApplied(PlanApplied {
        actor: actor.to_owned(),
        database: database.to_owned(),
        plan_id: plan.plan_id.clone(),
        started_seq,
        before_hash: plan.base_hash.clone(),
        after_hash: plan.target_hash.clone(),
        approval: None,
        receipt,
        recovered: true,
    });
    let seq = ledger::record(store, &applied, &[])?.seq;
    print(&format!(
        "plan {} is already applied: the database is at its target {}; recorded as applied \
         at seq {seq} (an earlier apply finished on the server after its process stopped, or \
         the change was made another way)",
        plan.plan_id, plan.target_hash
    ))
}

/// The live hash after a failed apply, for the ledger (`None` if it cannot be read).
async fn introspect_parallel_once(client: &mut Client) -> Option<lockplane_engine::CatalogHash> {
    let catalog = lockplane_engine::introspect(client, &IntrospectOptions::default())
        .await
        .ok()?;
    catalog_hash(&catalog).ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn short_and_bare_ids_stand_for_the_plan() {
        let id = format!("sha3-256:{}", "ab12".repeat(16));
        assert_eq!(super::expand_id(&id, &id), id);
        assert_eq!(super::expand_id("ab12ab12ab12", &id), id);
        assert_eq!(super::expand_id(&"ab12".repeat(16), &id), id);
        assert_eq!(super::expand_id("sha3-256:ab12ab12", &id), id);
        assert_eq!(
            super::expand_id("ab12", &id),
            "ab12",
            "too short to be unique"
        );
        assert_eq!(super::expand_id("ffffffff", &id), "ffffffff");
    }
}
