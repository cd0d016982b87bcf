//! Opening the ledger and reading events out of it, for the CLI commands that read the ledger
//! itself (`audit`); everything that records goes through the runtime.

use std::sync::Arc;

use lockplane_actors::LedgerLocation;
use lockplane_engine::events::{self, Event};
use lockplane_store::{BlobHash, Record, Store};

use super::CliError;

/// Opens the ledger (creating it if needed): a directory another process holds is reached
/// through that process; a Postgres ledger is shared by everyone.
pub(crate) fn open(at: &LedgerAt) -> Result<Arc<dyn Store>, CliError> {
    lockplane_actors::open_ledger(&at.location, at.wait).map_err(CliError::from)
}

/// Where the ledger is, and how long to wait for it to be reachable.
#[derive(Clone)]
pub(crate) struct LedgerAt {
    /// The ledger of record.
    pub(crate) location: LedgerLocation,
    /// How long to retry while the ledger is not reachable yet.
    pub(crate) wait: std::time::Duration,
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
