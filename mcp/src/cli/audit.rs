//! `lockplane audit …`: read, check and export the ledger.
//!
//! - `checkpoint`: verify, then print the head as `{"seq":…,"head_hash":"…"}` to keep outside
//!   the ledger (an auditor's later `verify --checkpoint` proves the log still holds it);
//! - `verify [--checkpoint FILE_OR_JSON]`: walk the chain, check blobs and that every event is
//!   readable; report the first bad record and exit non-zero on failure;
//! - `replay`: rebuild the projections from the log and print each database's state and
//!   history;
//! - `log [--db ID] [--since SEQ] [--json]`: the events, one per line (or a JSON array);
//! - `show SEQ [--blobs]`: one record in full, as JSON;
//! - `export --format jsonl`: every record as one JSON line, with its hashes and payload bytes,
//!   so the chain can be rechecked with other tools.

use std::cell::RefCell;

use clap::{Subcommand, ValueEnum};
use lockplane_engine::events::{short, Event};
use lockplane_engine::projection::{Change, DatabaseView, Outcome, PlanStatus, Projections};
use lockplane_store::{verify_with_blobs, Checkpoint, Record, Store, VerifyReport, SLED_DIR_NAME};
use serde_json::{json, Value};

use super::time::rfc3339;
use super::{ledger, print, CliError};

/// The `audit` subcommands.
#[derive(Subcommand)]
pub(crate) enum Command {
    /// Verify the ledger, then print its head as a checkpoint (`{"seq":…,"head_hash":"…"}`)
    /// to keep outside the ledger.
    Checkpoint,
    /// Walk the hash chain and report the first bad record; exit non-zero on failure.
    Verify {
        /// A checkpoint (JSON, or a file holding it) the ledger must still contain.
        #[arg(long, value_name = "FILE_OR_JSON")]
        checkpoint: Option<String>,
        /// Print the full report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Rebuild the projections (plans, live hashes, history) from the log and print them.
    Replay {
        /// Print the projections as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List events in order.
    Log {
        /// Only this database (ledger stream).
        #[arg(long, value_name = "ID")]
        db: Option<String>,
        /// Start at this seq.
        #[arg(long, value_name = "SEQ", default_value_t = 1)]
        since: u64,
        /// Print a JSON array instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Show one record in full, as JSON.
    Show {
        /// The record's seq.
        seq: u64,
        /// Include the content of the blobs it refers to (JSON blobs such as manifests).
        #[arg(long)]
        blobs: bool,
    },
    /// Export every record.
    Export {
        /// Output format.
        #[arg(long, value_enum)]
        format: ExportFormat,
    },
}

/// Formats `audit export` writes.
#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum ExportFormat {
    /// One JSON object per line per record.
    Jsonl,
}

/// Runs an `audit` subcommand against the ledger at `path`.
pub(crate) fn run(at: &ledger::LedgerAt, command: Command) -> Result<(), CliError> {
    let path = at.path.as_path();
    // Reading commands don't create a ledger where there is none (a mistyped --ledger).
    if !path.join(SLED_DIR_NAME).is_dir() {
        return Err(CliError::Usage(format!(
            "no ledger at {}: nothing has been recorded there (pass --ledger PATH or set \
             LOCKPLANE_LEDGER to the ledger directory)",
            path.display()
        )));
    }
    let store = ledger::open(at)?;
    match command {
        Command::Checkpoint => checkpoint(&store),
        Command::Verify { checkpoint, json } => {
            let checkpoint = checkpoint.as_deref().map(parse_checkpoint).transpose()?;
            verify(&store, checkpoint, json)
        }
        Command::Replay { json } => replay(&store, json),
        Command::Log { db, since, json } => log(&store, db.as_deref(), since, json),
        Command::Show { seq, blobs } => show(&store, seq, blobs),
        Command::Export {
            format: ExportFormat::Jsonl,
        } => export_jsonl(&store),
    }
}

/// The chain report, and the first record whose event couldn't be read (among those checked).
fn check(store: &dyn Store, checkpoint: Option<Checkpoint>) -> (VerifyReport, Option<String>) {
    let unreadable: RefCell<Option<String>> = RefCell::new(None);
    let refs = |record: &Record| match ledger::blob_refs(record) {
        Ok(refs) => refs,
        Err(reason) => {
            let mut first = unreadable.borrow_mut();
            if first.is_none() {
                *first = Some(format!(
                    "ledger chain is intact, but the event at seq {} cannot be read: {reason}",
                    record.seq
                ));
            }
            Vec::new()
        }
    };
    let report = verify_with_blobs(store, checkpoint, &refs);
    (report, unreadable.into_inner())
}

fn verify(store: &dyn Store, checkpoint: Option<Checkpoint>, json: bool) -> Result<(), CliError> {
    let (report, unreadable) = check(store, checkpoint);
    if json {
        let mut value =
            serde_json::to_value(&report).map_err(|e| CliError::Output(e.to_string()))?;
        value["ok"] = json!(report.is_ok() && unreadable.is_none());
        value["unreadable_event"] = json!(unreadable);
        print(&to_pretty(&value)?)?;
    } else if report.is_ok() && unreadable.is_none() {
        print(&report.to_string())?;
    }
    if !report.is_ok() {
        return Err(CliError::VerifyFailed(report.to_string()));
    }
    match unreadable {
        Some(message) => Err(CliError::VerifyFailed(message)),
        None => Ok(()),
    }
}

fn checkpoint(store: &dyn Store) -> Result<(), CliError> {
    let (report, unreadable) = check(store, None);
    if !report.is_ok() {
        return Err(CliError::VerifyFailed(format!(
            "no checkpoint issued: {report}"
        )));
    }
    if let Some(message) = unreadable {
        return Err(CliError::VerifyFailed(format!(
            "no checkpoint issued: {message}"
        )));
    }
    // Verify read the head it checked; use that one, not a later one.
    let head = match report.head {
        Some(head) => head,
        None => store.head()?,
    };
    print(&Checkpoint::from(head).to_json())
}

/// A checkpoint given as JSON, or as the path of a file holding it.
fn parse_checkpoint(arg: &str) -> Result<Checkpoint, CliError> {
    let text = if arg.trim_start().starts_with('{') {
        arg.to_owned()
    } else {
        std::fs::read_to_string(arg).map_err(|e| {
            CliError::Usage(format!(
                "--checkpoint {arg:?} is neither checkpoint JSON nor a readable file: {e}"
            ))
        })?
    };
    Checkpoint::from_json(text.trim()).map_err(|e| {
        CliError::Usage(format!(
            "--checkpoint: not a checkpoint (expected {{\"seq\":N,\"head_hash\":\"sha3-256:…\"}}): {e}"
        ))
    })
}

fn replay(store: &dyn Store, json: bool) -> Result<(), CliError> {
    let mut projections = Projections::new();
    lockplane_store::for_each_record::<CliError>(store, 1, |record| {
        let event = ledger::decode(&record)?;
        projections.apply(record.seq, record.at, &record.stream, &event);
        Ok(())
    })?;
    if json {
        let value =
            serde_json::to_value(&projections).map_err(|e| CliError::Output(e.to_string()))?;
        return print(&to_pretty(&value)?);
    }
    let mut out = format!(
        "ledger: {} events, {} databases, last seq {}\n",
        projections.events,
        projections.databases.len(),
        projections.last_seq
    );
    for db in projections.databases.values() {
        render_database(db, &mut out);
    }
    if !projections.anomalies.is_empty() {
        out.push_str("anomalies:\n");
        for a in &projections.anomalies {
            out.push_str(&format!(
                "  seq {} [{}]: {}\n",
                a.seq, a.database, a.message
            ));
        }
    }
    print(out.trim_end())
}

fn render_database(db: &DatabaseView, out: &mut String) {
    out.push_str(&format!(
        "\ndatabase {} ({} events, {} introspections)\n",
        db.database, db.events, db.introspections
    ));
    match &db.live {
        Some(live) => out.push_str(&format!(
            "  live catalog: {} (seq {}, {}, {})\n",
            live.hash,
            live.seq,
            live.source,
            rfc3339(live.at)
        )),
        None => out.push_str("  live catalog: unknown\n"),
    }
    out.push_str(&format!("  history ({} changes):\n", db.history.len()));
    for entry in &db.history {
        let what = match &entry.change {
            Change::Plan { plan_id } => format!("plan {}", short(plan_id)),
            Change::Sql { input } => format!("sql {input:?}"),
        };
        let outcome = match &entry.outcome {
            Outcome::Applied => "applied".to_owned(),
            Outcome::Failed { error } => format!("FAILED ({error})"),
        };
        let hashes = format!(
            "{} -> {}",
            entry
                .before_hash
                .as_ref()
                .map_or("?".into(), |h| short(&h.0)),
            entry
                .after_hash
                .as_ref()
                .map_or("?".into(), |h| short(&h.0))
        );
        let approval = entry
            .approval
            .as_ref()
            .map(|a| format!(", approved by {} (seq {})", a.by, a.seq))
            .unwrap_or_default();
        out.push_str(&format!(
            "    seq {:>6}  {}  {what} by {}: {outcome}, {hashes}{approval}\n",
            entry.seq,
            rfc3339(entry.at),
            entry.actor
        ));
    }
    out.push_str(&format!("  plans ({}):\n", db.plans.len()));
    for (id, plan) in &db.plans {
        let detail = match &plan.status {
            PlanStatus::Stale { live_hash } => format!(" (live is {})", short(&live_hash.0)),
            PlanStatus::Applying { started_seq } => format!(" (since seq {started_seq})"),
            PlanStatus::Applied { seq, .. } => format!(" (seq {seq})"),
            PlanStatus::Failed { seq, error } => format!(" (seq {seq}: {error})"),
            PlanStatus::Merged { into } => format!(" (into {})", short(into)),
            PlanStatus::Proposed | PlanStatus::Confirmed => String::new(),
        };
        out.push_str(&format!(
            "    {}  {}{detail}; proposed by {} at seq {}, {} -> {}\n",
            short(id),
            plan.status.name(),
            plan.proposed_by,
            plan.proposed_seq,
            short(&plan.plan.base_hash.0),
            short(&plan.plan.target_hash.0)
        ));
    }
    if let Some(open) = &db.open_apply {
        out.push_str(&format!(
            "  open apply: plan {} started at seq {} by {} has no outcome \
             (reconcile by introspecting the database)\n",
            short(&open.plan_id),
            open.seq,
            open.actor
        ));
    }
    if let Some(drift) = &db.drift {
        out.push_str(&format!(
            "  last drift: seq {}, expected {}, found {}\n",
            drift.seq,
            short(&drift.expected_hash.0),
            short(&drift.live_hash.0)
        ));
    }
    if let Some(ctx) = &db.context {
        out.push_str(&format!(
            "  context: role={} user_id={} tenant_id={} (seq {}, by {})\n",
            ctx.role.as_deref().unwrap_or("-"),
            ctx.user_id.as_deref().unwrap_or("-"),
            ctx.tenant_id.as_deref().unwrap_or("-"),
            ctx.seq,
            ctx.actor
        ));
    }
}

fn log(store: &dyn Store, db: Option<&str>, since: u64, json: bool) -> Result<(), CliError> {
    let mut entries = Vec::new();
    let mut lines = String::new();
    let mut first_unreadable: Option<CliError> = None;
    let mut each = |record: Record| -> Result<(), CliError> {
        let event = ledger::decode(&record);
        if json {
            entries.push(record_json(&record, event.as_ref(), false));
        } else {
            let (actor, summary) = match &event {
                Ok(e) => (e.actor().to_owned(), e.summary()),
                Err(e) => ("?".to_owned(), format!("(cannot read the event: {e})")),
            };
            lines.push_str(&format!(
                "{:>6}  {}  {}  {:<19}  {actor}  {summary}\n",
                record.seq,
                rfc3339(record.at),
                record.stream,
                record.kind
            ));
        }
        if let Err(e) = event {
            first_unreadable.get_or_insert(e);
        }
        Ok(())
    };
    match db {
        Some(db) => {
            for record in store.read_stream(db, since, usize::MAX)? {
                each(record)?;
            }
        }
        None => lockplane_store::for_each_record::<CliError>(store, since, each)?,
    }
    if json {
        print(&to_pretty(&Value::Array(entries))?)?;
    } else if !lines.is_empty() {
        print(lines.trim_end())?;
    }
    match first_unreadable {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn show(store: &dyn Store, seq: u64, with_blobs: bool) -> Result<(), CliError> {
    let head = store.head()?;
    let record = store
        .read_range(seq..seq.saturating_add(1))?
        .into_iter()
        .next()
        .ok_or_else(|| {
            CliError::Usage(format!(
                "no record at seq {seq}: the ledger's records are 1..={}",
                head.seq
            ))
        })?;
    let event = ledger::decode(&record);
    let mut value = record_json(&record, event.as_ref(), true);
    if let Ok(event) = &event {
        let mut blobs = Vec::new();
        for address in event.blob_refs() {
            let mut blob = json!({ "address": address.as_str() });
            let bytes = match address.as_str().parse() {
                Ok(hash) => store.get_blob(&hash)?,
                Err(_) => None,
            };
            blob["present"] = json!(bytes.is_some());
            if let Some(bytes) = bytes {
                blob["size"] = json!(bytes.len());
                if with_blobs {
                    blob["content"] = serde_json::from_slice::<Value>(&bytes)
                        .unwrap_or_else(|_| json!(hex::encode(&bytes)));
                }
            }
            blobs.push(blob);
        }
        value["blobs"] = Value::Array(blobs);
    }
    print(&to_pretty(&value)?)?;
    event.map(|_| ())
}

fn export_jsonl(store: &dyn Store) -> Result<(), CliError> {
    use std::io::Write;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    lockplane_store::for_each_record::<CliError>(store, 1, |record| {
        let event = ledger::decode(&record);
        let mut value = record_json(&record, event.as_ref(), true);
        value["payload"] = json!(hex::encode(&record.payload));
        let line = serde_json::to_string(&value).map_err(|e| CliError::Output(e.to_string()))?;
        writeln!(out, "{line}").map_err(|e| CliError::Output(e.to_string()))
    })?;
    out.flush().map_err(|e| CliError::Output(e.to_string()))
}

/// A record as JSON: position, time, stream, kind, actor, summary and the event's fields
/// (`event`; `null` with `error` when the payload can't be read). With `hashes`, also the
/// chain fields `prev_hash` and `hash`.
fn record_json(record: &Record, event: Result<&Event, &CliError>, hashes: bool) -> Value {
    let mut value = json!({
        "seq": record.seq,
        "at": rfc3339(record.at),
        "at_us": record.at,
        "stream": record.stream,
        "kind": record.kind,
    });
    match event {
        Ok(event) => {
            value["actor"] = json!(event.actor());
            value["summary"] = json!(event.summary());
            value["event"] = event.body_json();
        }
        Err(e) => {
            value["event"] = Value::Null;
            value["error"] = json!(e.to_string());
        }
    }
    if hashes {
        value["prev_hash"] = json!(record.prev_hash.to_string());
        value["hash"] = json!(record.hash().to_string());
    }
    value
}

fn to_pretty(value: &Value) -> Result<String, CliError> {
    serde_json::to_string_pretty(value).map_err(|e| CliError::Output(e.to_string()))
}
