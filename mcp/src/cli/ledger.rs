//! Opening the ledger and moving events in and out of it, for the CLI commands.

use lockplane_engine::events::{self, Event};
use lockplane_store::{BlobHash, Head, NewRecord, Record, SledStore, Store};

use super::CliError;

/// Opens the ledger at `path` (creating it if needed); a ledger held by another process is a
/// [`CliError::Ledger`] naming the holder, with a hint.
pub(crate) fn open(at: &LedgerAt) -> Result<SledStore, CliError> {
    if at.wait.is_zero() {
        Ok(SledStore::open(&at.path)?)
    } else {
        Ok(SledStore::open_waiting(&at.path, at.wait)?)
    }
}

/// Where the ledger is, and how long to wait for another process that holds it (a running
/// `lockplane` releases it when its command ends).
pub(crate) struct LedgerAt {
    /// The ledger directory.
    pub(crate) path: std::path::PathBuf,
    /// How long to retry while another process holds the ledger.
    pub(crate) wait: std::time::Duration,
}

/// Stores `blobs`, then appends `event` after whatever the head is (for events that don't
/// depend on the log's state, like an introspection). Returns the new head.
pub(crate) fn record(
    store: &dyn Store,
    event: &Event,
    blobs: &[(&[u8], &events::BlobRef)],
) -> Result<Head, CliError> {
    for (bytes, address) in blobs {
        let stored = store.put_blob(bytes)?;
        if stored.to_string() != address.as_str() {
            return Err(CliError::Output(format!(
                "blob stored as {stored}, but the event refers to {address}"
            )));
        }
    }
    let record = NewRecord::now(event.database(), event.kind(), events::encode(event));
    Ok(store.append(None, vec![record])?)
}

/// The record's event, checked against its kind and stream.
pub(crate) fn decode(record: &Record) -> Result<Event, CliError> {
    events::decode_record_payload(&record.kind, &record.stream, &record.payload).map_err(|source| {
        CliError::Event {
            seq: record.seq,
            source,
        }
    })
}

/// The blobs a record's event refers to, as store addresses; an event that doesn't decode
/// (or names a malformed address) yields `Err` with the reason.
pub(crate) fn blob_refs(record: &Record) -> Result<Vec<BlobHash>, String> {
    let event = events::decode_record_payload(&record.kind, &record.stream, &record.payload)
        .map_err(|e| e.to_string())?;
    event
        .blob_refs()
        .into_iter()
        .map(|address| {
            address
                .as_str()
                .parse::<BlobHash>()
                .map_err(|e| format!("blob reference: {e}"))
        })
        .collect()
}

/// Whether the ledger holds a proposal (or merge) of `plan_id` for `database`: a plan file is
/// applied only if it was planned here, against this database.
pub(crate) fn was_proposed(
    store: &dyn Store,
    database: &str,
    plan_id: &str,
) -> Result<bool, CliError> {
    let mut found = false;
    lockplane_store::for_each_record(store, 1, |record| {
        if found || record.stream != database {
            return Ok(());
        }
        match decode(&record)? {
            Event::PlanProposed(p) if p.plan.plan_id == plan_id => found = true,
            Event::PlansMerged(m) if m.merged.plan_id == plan_id => found = true,
            _ => {}
        }
        Ok::<(), CliError>(())
    })?;
    Ok(found)
}

/// Where the applies of `plan_id` on `database` stand, from the ledger (see
/// [`lockplane_engine::projection::PlanProgress`]).
pub(crate) fn plan_progress(
    store: &dyn Store,
    database: &str,
    plan_id: &str,
) -> Result<lockplane_engine::projection::PlanProgress, CliError> {
    let mut progress = lockplane_engine::projection::PlanProgress::default();
    lockplane_store::for_each_record(store, 1, |record| {
        if record.stream == database {
            progress.take(record.seq, &decode(&record)?, plan_id);
        }
        Ok::<(), CliError>(())
    })?;
    Ok(progress)
}
