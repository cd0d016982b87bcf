//! `lockplane plan` and `lockplane apply`: desired DSL vs live database → an explicit plan,
//! proven on a shadow database; then applied with confirmation, every step recorded.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lockplane_actors::{ApplyControl, Config, DatabaseId, Lockplane, ShadowConfig};
use lockplane_engine::connect;
use lockplane_engine::events;
use lockplane_engine::exec::{ProgressSink, StepProgress};
use lockplane_engine::plan::Plan;
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
    /// Write the plan (JSON) here, for `lockplane apply` (whatever --format prints).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print the plan as JSON instead of the readable form (same as --format json).
    #[arg(long, conflicts_with = "format")]
    json: bool,
    /// What to print: the readable plan, the plan as JSON, or the plan as pgroll migrations
    /// (a JSON array of migrations in the order to run them, each the content of one pgroll
    /// migration file).
    #[arg(long, value_enum)]
    format: Option<PlanFormat>,
    /// With --format pgroll: the schema pgroll manages (`pgroll --schema`); changes elsewhere
    /// become raw SQL operations.
    #[arg(long, default_value = "public", value_name = "SCHEMA")]
    pgroll_schema: String,
    /// Shadow server for the dry run (a role that may create databases); default: a throwaway
    /// cluster started from the local Postgres binaries.
    #[arg(long)]
    shadow_url: Option<String>,
    /// Keep live's reproduction on the --shadow-url server, so that the next plan against
    /// the same live schema restores nothing (for a shadow server that is Lockplane's alone:
    /// kept databases name live's roles there).
    #[arg(long, env = "LOCKPLANE_KEEP_SHADOW")]
    keep_shadow: bool,
    /// Skip the shadow dry run (not recommended). A shadow is still used to materialise the
    /// document (a throwaway cluster, or --shadow-url).
    #[arg(long)]
    no_shadow: bool,
    /// The database's id in the ledger; default `host:port/dbname`.
    #[arg(long, env = "LOCKPLANE_DB_ID", value_name = "ID")]
    db_id: Option<String>,
    /// Plan an online (expand/contract) migration instead: the document's column renames,
    /// type changes and new NOT NULLs of one table (with their `up:`/`down:`), rolled out
    /// while old and new applications run side by side. `--out` writes the file `apply`
    /// starts it from.
    #[arg(long, requires = "version")]
    online: bool,
    /// The online migration's version: its version schema is `<schema>_<version>`.
    #[arg(long, value_name = "NAME")]
    version: Option<String>,
}

/// What `lockplane plan` prints on standard output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum PlanFormat {
    /// The readable plan: steps, locks, hazards.
    #[default]
    Text,
    /// The plan as JSON (what --out writes).
    Json,
    /// The plan as pgroll migrations (JSON).
    Pgroll,
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
    #[command(flatten)]
    locks: LockArgs,
    /// The database's id in the ledger; default `host:port/dbname`.
    #[arg(long, env = "LOCKPLANE_DB_ID", value_name = "ID")]
    db_id: Option<String>,
    /// Continue an apply of this plan that stopped in its steps run alone (after its
    /// transaction committed), after the last step the ledger records as applied.
    #[arg(long)]
    resume: bool,
    /// For an online migration: rows per backfill batch (one short transaction each).
    #[arg(long, default_value_t = 5_000, value_name = "ROWS")]
    batch_size: u32,
}

/// How applies wait for locks and bound statements: the flags of `apply` and `serve`.
#[derive(clap::Args)]
pub(crate) struct LockArgs {
    /// `lock_timeout` of every statement an apply runs, in milliseconds: how long the
    /// application's queries on a table may queue behind a statement waiting for its lock.
    #[arg(long, default_value_t = 500)]
    lock_timeout_ms: u64,
    /// How many more times a phase that could not get its lock is tried (rolled back whole,
    /// after a growing pause, each wait reported with who blocks it).
    #[arg(long, default_value_t = 10)]
    lock_retries: u32,
    /// `statement_timeout` of each statement of an apply's transaction (table rewrites
    /// included) and of `apply_sql`, in seconds.
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    statement_timeout: u64,
    /// Seconds to wait for the database's apply lock while other applies (of any process,
    /// any ledger) run; each is serialised, and a plan whose base moved is rebased once it
    /// gets the lock.
    #[arg(
        long,
        env = "LOCKPLANE_LOCK_WAIT",
        default_value_t = 30,
        value_name = "SECONDS"
    )]
    lock_wait: u64,
}

impl LockArgs {
    /// Sets these in the runtime's configuration.
    pub(crate) fn configure(&self, config: &mut Config) {
        config.lock_timeout = Duration::from_millis(self.lock_timeout_ms);
        config.lock_retries = self.lock_retries;
        config.statement_timeout = Duration::from_secs(self.statement_timeout);
        config.lock_wait = Duration::from_secs(self.lock_wait);
    }
}

/// A runtime for one CLI command: the same one `serve` and embedding programs use, on the
/// ledger of record, with the CLI's own settings (an operator's credentials: plans are not
/// passed through the agents' SQL guard).
pub(crate) async fn runtime(
    at: &ledger::LedgerAt,
    settings: Settings<'_>,
) -> Result<Lockplane, CliError> {
    let mut config = Config::new(at.location.clone());
    config.ledger_wait = at.wait;
    config.guard_plans = false;
    config.dry_run = settings.dry_run;
    config.keep_reproductions = settings.keep_shadow;
    if let Some(url) = settings.shadow_url {
        config.shadow = ShadowConfig::Url(url.to_owned());
    }
    if let Some(locks) = settings.locks {
        locks.configure(&mut config);
    }
    Ok(Lockplane::open(config).await?)
}

/// [`runtime`] with the database of `--database-url` attached ([`attach`]).
pub(crate) async fn attached(
    at: &ledger::LedgerAt,
    settings: Settings<'_>,
    url: Option<&str>,
    db_id: Option<&str>,
) -> Result<(Lockplane, DatabaseId), CliError> {
    let runtime = runtime(at, settings).await?;
    let db = attach(&runtime, url, db_id).await?;
    Ok((runtime, db))
}

/// What a CLI command sets in its runtime.
pub(crate) struct Settings<'a> {
    /// `--shadow-url`.
    pub(crate) shadow_url: Option<&'a str>,
    /// Prove plans on the shadow.
    pub(crate) dry_run: bool,
    /// `--keep-shadow`.
    pub(crate) keep_shadow: bool,
    /// `lockplane apply`'s timeouts and retries.
    pub(crate) locks: Option<&'a LockArgs>,
}

impl Default for Settings<'_> {
    fn default() -> Self {
        Settings {
            shadow_url: None,
            dry_run: true,
            keep_shadow: false,
            locks: None,
        }
    }
}

/// Attaches the database of `--database-url` (else `DATABASE_URL`, else the `PG*` variables).
pub(crate) async fn attach(
    runtime: &Lockplane,
    url: Option<&str>,
    db_id: Option<&str>,
) -> Result<DatabaseId, CliError> {
    attach_with(runtime, url, db_id, true).await
}

/// [`attach`], recording the first look at the database as its baseline or not.
pub(crate) async fn attach_with(
    runtime: &Lockplane,
    url: Option<&str>,
    db_id: Option<&str>,
    baseline: bool,
) -> Result<DatabaseId, CliError> {
    let target = super::resolve_target(url)?;
    let url = match url {
        Some(url) => url.to_owned(),
        None => crate::serve::database_target(None).map_err(|e| CliError::Usage(e.to_string()))?,
    };
    runtime
        .attach_with(&url, db_id, baseline)
        .await
        .map_err(|e| match e {
            lockplane_actors::Error::Database { message, .. } => CliError::Database(format!(
                "cannot use the database {}: {message}",
                target.describe()
            )),
            other => other.into(),
        })
}

/// A runtime error of `apply` as the CLI class it belongs to, with what to run next.
fn apply_error(e: lockplane_actors::Error, plan_file: &Path, plan_id: &str) -> CliError {
    use lockplane_actors::Error as E;
    match e {
        E::NeedsConfirmation {
            plan_id: ref needed,
            ..
        } => {
            let short = events::short(needed);
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
        E::WrongConfirmation { .. } => CliError::NeedsConfirmation {
            message: e.to_string(),
            help: format!(
                "drop --confirm, or pass this plan's id ({})",
                events::short(plan_id)
            ),
        },
        E::UnknownPlan { database, .. } => CliError::Refused(format!(
            "plan {plan_id} was never proposed for {database} in this ledger: Lockplane applies \
             only plans it made and proved against this database; plan it here first \
             (lockplane plan -f DOCUMENT --out PLAN.json)"
        )),
        other => other.into(),
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
    let name = args.file.display().to_string();
    if args.online {
        return super::online::plan(
            at,
            actor,
            &name,
            &text,
            args.version.as_deref().unwrap_or_default(),
            args.database_url.as_deref(),
            args.db_id.as_deref(),
            args.out.as_deref(),
            args.json || args.format == Some(PlanFormat::Json),
        )
        .await;
    }
    // Read here first: its problems are shown with their places in the file. A large
    // document takes a second or more to read: meanwhile the runtime starts and attaches.
    let checked = {
        let (name, text) = (name.clone(), text.clone());
        tokio::task::spawn_blocking(move || {
            lockplane_engine::dsl::load_file_text(&name, &text).map(|_| ())
        })
    };
    let settings = Settings {
        shadow_url: args.shadow_url.as_deref(),
        dry_run: !args.no_shadow,
        keep_shadow: args.keep_shadow,
        locks: None,
    };
    let attached = attached(
        at,
        settings,
        args.database_url.as_deref(),
        args.db_id.as_deref(),
    );
    let (checked, attached) = tokio::join!(checked, attached);
    checked.map_err(|e| CliError::Usage(format!("reading {name}: {e}")))??;
    let (runtime, db) = attached?;
    eprintln!(
        "lockplane: reproducing the database on a shadow (pg_dump), materialising the document{}…",
        if args.no_shadow {
            ""
        } else {
            ", proving the plan and its reverse"
        }
    );
    let shadow_given = args.shadow_url.is_some();
    let proposal = runtime
        .propose(&db, &name, &text, actor)
        .await
        .map_err(|e| match e {
            lockplane_actors::Error::Shadow(text)
                if !shadow_given && text.contains("no Postgres server binaries") =>
            {
                // Even without the dry run, the document is materialised on a shadow: that
                // is how it becomes a catalog exactly as Postgres would store it.
                CliError::Usage(format!(
                    "{text}\nplanning needs a shadow server even with --no-shadow (which skips \
                     only the dry run): the document is created there to read it back as \
                     Postgres stores it. Pass --shadow-url postgres://USER@HOST/postgres (a \
                     role that may create databases) to use an existing server instead"
                ))
            }
            lockplane_actors::Error::Shadow(text) => CliError::Usage(text),
            other => other.into(),
        })?;
    let plan = proposal.plan;
    let shadow_line = if plan.steps.is_empty() {
        "shadow: nothing to prove".to_owned()
    } else if args.no_shadow {
        "shadow dry run: skipped (--no-shadow)".to_owned()
    } else {
        format!("shadow dry run: ok — {}", proposal.shadow)
    };
    eprintln!(
        "lockplane: recorded the proposal as seq {} in {}",
        proposal.seq, at.location
    );
    if let Some(out) = &args.out {
        let json = serde_json::to_string_pretty(&plan).map_err(failed)?;
        std::fs::write(out, json).map_err(|source| CliError::Read {
            path: out.clone(),
            source,
        })?;
    }
    let format = if args.json {
        PlanFormat::Json
    } else {
        args.format.unwrap_or_default()
    };
    match format {
        PlanFormat::Text => print(&readable(&plan, &shadow_line, args.out.as_deref())),
        PlanFormat::Json => print(&serde_json::to_string_pretty(&plan).map_err(failed)?),
        PlanFormat::Pgroll => {
            let migrations = pgroll_migrations(
                &runtime,
                &db,
                at,
                &plan,
                args.database_url.as_deref(),
                &args.pgroll_schema,
            )
            .await?;
            print(&serde_json::to_string_pretty(&migrations).map_err(failed)?)
        }
    }
}

/// The proposal as pgroll migrations: exported from what the ledger recorded with the plan
/// (its base and target catalogs, its renames) and live's table statistics, which decide the
/// SQL the plan's raw steps carry (`export_plan` checks the export is that very plan).
// TODO(actors): one call on the runtime once it can hand out a plan's recorded catalogs; the
// CLI reads them from the ledger meanwhile.
async fn pgroll_migrations(
    runtime: &Lockplane,
    db: &DatabaseId,
    at: &ledger::LedgerAt,
    plan: &Plan,
    url: Option<&str>,
    schema: &str,
) -> Result<Vec<lockplane_engine::pgroll::Migration>, CliError> {
    use lockplane_engine::pgroll::{export_plan, PgrollOptions};
    let view = runtime
        .list_plans(db)
        .await?
        .into_iter()
        .find(|v| v.plan.plan_id == plan.plan_id)
        .ok_or_else(|| CliError::Runtime(format!("plan {} is not in the ledger", plan.plan_id)))?;
    let (Some(base), Some(target)) = (&view.plan.base_manifest, &view.plan.target_manifest) else {
        return Err(CliError::Runtime(format!(
            "the ledger holds plan {} without its catalogs",
            plan.plan_id
        )));
    };
    let store = ledger::open(at)?;
    let catalog = |blob: &events::BlobRef| -> Result<lockplane_engine::Catalog, CliError> {
        let missing = || {
            CliError::Runtime(format!(
                "the ledger at {} lacks the catalog {blob} recorded with plan {}",
                at.location, plan.plan_id
            ))
        };
        let address = blob.as_str().parse().map_err(|_| missing())?;
        let bytes = store.get_blob(&address)?.ok_or_else(missing)?;
        let manifest: lockplane_engine::Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| CliError::Runtime(format!("catalog {blob} does not decode: {e}")))?;
        Ok(manifest.catalog)
    };
    let (base, target) = (catalog(base)?, catalog(target)?);
    let client = connect::connect(&super::resolve_target(url)?).await?;
    let stats = lockplane_engine::plan::read_stats(&client)
        .await
        .map_err(|e| CliError::Database(format!("cannot read table statistics: {e}")))?;
    let options = PgrollOptions {
        schema: schema.to_owned(),
    };
    export_plan(plan, &base, &target, &view.plan.renames, &stats, &options)
        .map_err(|e| CliError::Refused(e.to_string()))
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
    if super::online::is_online_file(&text) {
        return super::online::start(
            at,
            actor,
            &args.plan,
            &text,
            args.database_url.as_deref(),
            args.db_id.as_deref(),
            &args.locks,
            args.batch_size,
        )
        .await;
    }
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
    let settings = Settings {
        locks: Some(&args.locks),
        ..Settings::default()
    };
    // Attaching reconciles an apply a stopped process left open (recorded as applied when its
    // target is live).
    let (runtime, db) = attached(
        at,
        settings,
        args.database_url.as_deref(),
        args.db_id.as_deref(),
    )
    .await?;
    let view = runtime
        .list_plans(&db)
        .await?
        .into_iter()
        .find(|v| v.plan.plan_id == plan.plan_id);
    let Some(view) = view else {
        return Err(apply_error(
            lockplane_actors::Error::UnknownPlan {
                database: db.0.clone(),
                plan_id: plan.plan_id.clone(),
            },
            &args.plan,
            &plan.plan_id,
        ));
    };
    if let lockplane_engine::projection::PlanStatus::Applied { seq, .. } = &view.status {
        if !args.resume {
            return print(&format!(
                "plan {} is already applied (recorded at seq {seq}): nothing to do",
                plan.plan_id
            ));
        }
    }
    if !args.resume {
        // Refuse before changing anything (or recording) when confirmation is missing.
        if view.approval.is_none() {
            if let Err(e) = lockplane_engine::exec::check_confirmation(&plan, confirm.as_deref()) {
                return Err(CliError::NeedsConfirmation {
                    message: e.to_string(),
                    help: format!(
                        "review the hazards (lockplane plan prints them), then apply with the \
                         plan's id (its first 12 digits, as audit log shows it, are enough):\n\n  \
                         lockplane apply {} --confirm {}\n",
                        args.plan.display(),
                        events::short(&plan.plan_id)
                    ),
                });
            }
        }
    }

    let shown = Arc::new(ApplyProgress::new(&plan, std::io::stderr().is_terminal()));
    let stop = Arc::new(tokio::sync::Notify::new());
    let watcher: Arc<std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>> = Arc::default();
    let control = {
        let (shown, watcher) = (shown.clone(), watcher.clone());
        let target = super::resolve_target(args.database_url.as_deref())?;
        let handle = tokio::runtime::Handle::current();
        let watched = shown.clone();
        ApplyControl {
            progress: Some(shown as Arc<dyn ProgressSink>),
            stop: Some(stop.clone()),
            on_start: Some(Arc::new(move |pid: i32| {
                let (target, watched) = (target.clone(), watched.clone());
                let task = handle.spawn(async move {
                    if let Ok(client) = connect::connect(&target).await {
                        watch(client, pid, watched).await;
                    }
                });
                if let Ok(mut slot) = watcher.lock() {
                    *slot = Some(task);
                }
            })),
        }
    };
    shown.start();
    let was_interrupted = Arc::new(AtomicBool::new(false));
    let outcome = {
        let apply = async {
            if args.resume {
                runtime
                    .resume_with(&db, &plan.plan_id, confirm.as_deref(), actor, control)
                    .await
            } else {
                runtime
                    .apply_with(&db, &plan.plan_id, confirm.as_deref(), actor, control)
                    .await
            }
        };
        tokio::pin!(apply);
        let mut interrupt = std::pin::pin!(interrupted());
        loop {
            tokio::select! {
                outcome = &mut apply => break outcome,
                () = &mut interrupt, if !was_interrupted.load(Ordering::SeqCst) => {
                    // The first interrupt stops the apply cleanly: the running statement is
                    // cancelled on the server (a dropped client would leave it running), a
                    // transaction rolls back, a failed index build is cleaned up, and the
                    // outcome is recorded. A second one exits at once.
                    was_interrupted.store(true, Ordering::SeqCst);
                    eprintln!(
                        "lockplane: interrupted: cancelling the running statement on the server \
                         and stopping; interrupt again to exit without waiting"
                    );
                    stop.notify_one();
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
    if let Some(task) = watcher.lock().ok().and_then(|mut w| w.take()) {
        task.abort();
    }
    shown.finish(outcome.is_ok());
    match outcome {
        Ok(applied) if applied.recovered => print(&format!(
            "plan {} is already applied: the database is at its target {}; recorded as applied \
             at seq {} (an earlier apply finished on the server after its process stopped, or \
             the change was made another way)",
            plan.plan_id, applied.resulting_hash, applied.seq
        )),
        Ok(applied) => {
            let mut s = format!("applied {}\n", applied.plan_id);
            if let Some(from) = &applied.rebased_from {
                s.push_str(&format!(
                    "  (rebased from {from}: the database had moved on since it was planned)\n"
                ));
            }
            for r in applied.receipts.iter().flat_map(|r| r.steps.iter()) {
                s.push_str(&format!(
                    "  {:>6} ms  {:?}  {}\n",
                    r.duration_ms,
                    r.outcome,
                    r.sql.lines().next().unwrap_or("")
                ));
            }
            s.push_str(&format!("resulting hash {}", applied.resulting_hash));
            print(&s)
        }
        Err(lockplane_actors::Error::NotPending {
            status: "applied",
            hint,
            ..
        }) => print(&format!("plan {}: {hint}", plan.plan_id)),
        Err(error) if was_interrupted.load(Ordering::SeqCst) => {
            Err(CliError::Interrupted(format!("apply interrupted: {error}")))
        }
        Err(error) => Err(apply_error(error, &args.plan, &plan.plan_id)),
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

    fn lock_waited(&self, wait: &lockplane_engine::exec::LockWait) {
        let who = lockplane_engine::exec::blockers_text(&wait.blockers);
        let line = format!(
            "step {} could not get its lock (try {} of {}), blocked by {who}; trying again \
             in {:.1} s",
            wait.step_id,
            wait.attempt,
            wait.attempts,
            wait.retry_in.as_secs_f64()
        );
        match &self.bar {
            Some(bar) => bar.println(format!("  … {line}")),
            None => eprintln!("lockplane: {line}"),
        }
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
