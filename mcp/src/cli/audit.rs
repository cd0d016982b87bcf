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
    /// Copy a ledger into an empty one (another directory, or a Postgres ledger), record by
    /// record and blob by blob: the copy has the same chain, hash for hash, and is verified
    /// before this reports success. E.g. `lockplane audit copy --from .lockplane/ledger --to
    /// postgres://lockplane@db/control`.
    Copy {
        /// The ledger to copy (directory or `postgres://…` URL).
        #[arg(long, value_name = "PATH_OR_URL")]
        from: String,
        /// The ledger to copy into: empty, or holding a prefix of the source (an earlier copy,
        /// which then continues).
        #[arg(long, value_name = "PATH_OR_URL")]
        to: String,
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
    if let Command::Copy { from, to } = &command {
        return copy(at, from, to);
    }
    // Reading commands don't create a ledger where there is none (a mistyped --ledger).
    if let lockplane_actors::LedgerLocation::Dir(path) = &at.location {
        if !path.join(SLED_DIR_NAME).is_dir() {
            return Err(CliError::Usage(format!(
                "no ledger at {}: nothing has been recorded there (pass --ledger PATH or set \
                 LOCKPLANE_LEDGER to the ledger directory)",
                path.display()
            )));
        }
    }
    let store = ledger::open(at)?;
    let store = store.as_ref();
    match command {
        Command::Checkpoint => checkpoint(store),
        Command::Verify { checkpoint, json } => {
            let checkpoint = checkpoint.as_deref().map(parse_checkpoint).transpose()?;
            verify(store, checkpoint, json)
        }
        Command::Replay { json } => replay(store, json),
        Command::Log { db, since, json } => log(store, db.as_deref(), since, json),
        Command::Show { seq, blobs } => show(store, seq, blobs),
        Command::Export {
            format: ExportFormat::Jsonl,
        } => export_jsonl(store),
        Command::Copy { .. } => Ok(()),
    }
}

/// `audit copy`: appends the source's records to the destination in order, each batch
/// expecting the destination's head, so the destination's chain is built by its own backend
/// (the same bytes, hence the same hashes) and nobody can interleave. Blobs an event refers to
/// go first. Every copied record's hash is compared with the source's, and the copy is
/// verified whole at the end.
fn copy(at: &ledger::LedgerAt, from: &str, to: &str) -> Result<(), CliError> {
    use lockplane_actors::LedgerLocation;
    let (from, to) = (LedgerLocation::parse(from), LedgerLocation::parse(to));
    if from == to {
        return Err(CliError::Usage(
            "--from and --to name the same ledger".into(),
        ));
    }
    if let LedgerLocation::Dir(path) = &from {
        if !path.join(SLED_DIR_NAME).is_dir() {
            return Err(CliError::Usage(format!("no ledger at {}", path.display())));
        }
    }
    let source = ledger::open(&ledger::LedgerAt {
        location: from.clone(),
        wait: at.wait,
    })?;
    let target = ledger::open(&ledger::LedgerAt {
        location: to.clone(),
        wait: at.wait,
    })?;
    let (source, target) = (source.as_ref(), target.as_ref());
    let mut head = target.head()?;
    // A destination that already holds records must hold exactly the source's first ones.
    if head.seq > 0 {
        let theirs = source.read_range(head.seq..head.seq + 1)?;
        if theirs.first().map(|r| r.hash()) != Some(head.hash) {
            return Err(CliError::Refused(format!(
                "{to} already holds a ledger that is not a prefix of {from} (its head {head} is \
                 not the source's record at that seq); copy into an empty ledger"
            )));
        }
    }
    let (mut records, mut blobs) = (0u64, 0u64);
    let mut batch: Vec<(lockplane_store::NewRecord, lockplane_store::Hash)> = Vec::new();
    let flush = |batch: &mut Vec<(lockplane_store::NewRecord, lockplane_store::Hash)>,
                 head: &mut lockplane_store::Head|
     -> Result<(), CliError> {
        if batch.is_empty() {
            return Ok(());
        }
        let expected: Vec<lockplane_store::Hash> = batch.iter().map(|(_, h)| *h).collect();
        let first = head.seq + 1;
        let new: Vec<_> = batch.drain(..).map(|(r, _)| r).collect();
        *head = target.append(Some(*head), new)?;
        for (record, hash) in target.read_range(first..head.seq + 1)?.iter().zip(expected) {
            if record.hash() != hash {
                return Err(CliError::VerifyFailed(format!(
                    "the copy of seq {} hashes to {}, the source's to {hash}: the backends \
                     disagree on the record; nothing after it was copied",
                    record.seq,
                    record.hash()
                )));
            }
        }
        Ok(())
    };
    lockplane_store::for_each_record::<CliError>(source, head.seq + 1, |record| {
        for address in ledger::blob_refs(&record).unwrap_or_default() {
            if target.read_blob_raw(&address)?.is_none() {
                if let Some(bytes) = source.get_blob(&address)? {
                    target.put_blob(&bytes)?;
                    blobs += 1;
                }
            }
        }
        let hash = record.hash();
        batch.push((
            lockplane_store::NewRecord {
                at: record.at,
                stream: record.stream,
                kind: record.kind,
                payload: record.payload,
            },
            hash,
        ));
        records += 1;
        if batch.len() >= 256 {
            flush(&mut batch, &mut head)?;
        }
        Ok(())
    })?;
    flush(&mut batch, &mut head)?;
    let (report, unreadable) = check(target, None);
    if let Some(bad) = report.first_bad {
        return Err(CliError::VerifyFailed(format!(
            "the copy does not verify at seq {}: {}",
            bad.seq, bad.problem
        )));
    }
    if let Some(reason) = unreadable {
        return Err(CliError::VerifyFailed(reason));
    }
    print(&format!(
        "copied {records} records and {blobs} blobs from {from} to {to}; head seq {} ({}), \
         verified",
        head.seq, head.hash
    ))
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
            Change::Online { version, phase } => format!("online {version} {phase}"),
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
