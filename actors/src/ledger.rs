//! The ledger's two actors: the single writer, and the projections folded from what it wrote.
//!
//! The writer is a sync actor on its own thread because an append blocks until the store has
//! made it durable (DESIGN §5: durable before acknowledged). After each append it hands the
//! event to the projection actor *before* replying, and mailboxes are FIFO, so a caller that
//! has its append acknowledged and then queries the projections always sees its own event.
//!
//! Other processes append to the same ledger (a Postgres ledger, or a directory this process
//! holds or joined, see `lockplane_store::hub`). So the writer also folds what they wrote:
//! every record between the last one it handed over and the head, before its own append's and
//! on [`CatchUp`], which every projection read sends first. The projections therefore answer
//! for the whole ledger as of the read, whoever wrote it.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use lockplane_engine::events::{self, Event};
use lockplane_engine::projection::Projections;
use lockplane_store::{Head, MemoryStore, NewRecord, Store};

use crate::config::LedgerLocation;
use crate::Error;

/// The one writer of a runtime's ledger.
pub(crate) struct LedgerWriter {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) projection: Addr<ProjectionActor>,
    /// The last seq handed to the projections.
    pub(crate) folded: u64,
}

impl LedgerWriter {
    /// Hands the projections every record after `folded` up to `upto` (exclusive), in order.
    fn fold_upto(&mut self, upto: u64) -> Result<(), Error> {
        while self.folded + 1 < upto {
            let end = upto.min(self.folded + 1 + 1024);
            let records = self.store.read_range(self.folded + 1..end)?;
            if records.is_empty() {
                break;
            }
            for record in records {
                // An event this build cannot decode is an anomaly `audit verify` reports.
                if let Ok(event) =
                    events::decode_record_payload(&record.kind, &record.stream, &record.payload)
                {
                    self.projection.do_send(Fold {
                        seq: record.seq,
                        at: record.at,
                        event,
                    });
                }
                self.folded = record.seq;
            }
        }
        Ok(())
    }
}

/// Folds what other processes appended since the last fold; answers once the projections
/// have been handed every record up to the head.
pub(crate) struct CatchUp;

impl Message for CatchUp {
    type Result = Result<(), Error>;
}

impl Handler<CatchUp> for LedgerWriter {
    type Result = Result<(), Error>;

    fn handle(&mut self, _: CatchUp, _: &mut SyncContext<Self>) -> Self::Result {
        let head = self.store.head()?;
        self.fold_upto(head.seq + 1)
    }
}

/// The name of the ledger a `postgres://` location holds (one control database may hold
/// several, see `lockplane_store::pg_store`).
pub const POSTGRES_LEDGER_NAME: &str = "default";

/// Opens the ledger at `location` as the store every part of the runtime (and the CLI's audit
/// commands) uses.
pub fn open_ledger(location: &LedgerLocation, wait: Duration) -> Result<Arc<dyn Store>, Error> {
    match location {
        LedgerLocation::Dir(path) => Ok(Arc::new(lockplane_store::open_dir(path, wait)?)),
        LedgerLocation::Memory => Ok(Arc::new(MemoryStore::new())),
        LedgerLocation::Postgres(url) => {
            let target = lockplane_engine::connect::resolve(Some(url)).map_err(|e| {
                Error::Ledger(lockplane_store::StoreError::Remote(format!(
                    "the ledger URL: {e}"
                )))
            })?;
            // Lockplane's own connect (TLS per sslmode, passfile, connect_timeout), run on the
            // store's runtime, which drives the connection it spawns.
            let connector: lockplane_store::PgConnector = Box::new(move || {
                let target = target.clone();
                Box::pin(async move {
                    lockplane_engine::connect::connect(&target)
                        .await
                        .map_err(|e| -> lockplane_store::pg_store::ConnectError { Box::new(e) })
                })
            });
            Ok(Arc::new(lockplane_store::PgStore::open(
                connector,
                POSTGRES_LEDGER_NAME,
            )?))
        }
    }
}

impl Actor for LedgerWriter {
    type Context = SyncContext<Self>;
}

/// Store `blobs`, then append `event`; answers the new head once it is durable.
pub(crate) struct Append {
    pub(crate) event: Event,
    pub(crate) blobs: Vec<Vec<u8>>,
}

impl Message for Append {
    type Result = Result<Head, Error>;
}

impl Handler<Append> for LedgerWriter {
    type Result = Result<Head, Error>;

    fn handle(&mut self, msg: Append, _: &mut SyncContext<Self>) -> Self::Result {
        for blob in &msg.blobs {
            self.store.put_blob(blob)?;
        }
        let record = NewRecord::now(
            msg.event.database(),
            msg.event.kind(),
            events::encode(&msg.event),
        );
        let at = record.at;
        let head = self.store.append(None, vec![record])?;
        // Others' records before ours first, so the projections fold the log in order.
        self.fold_upto(head.seq)?;
        self.projection.do_send(Fold {
            seq: head.seq,
            at,
            event: msg.event,
        });
        self.folded = head.seq;
        Ok(head)
    }
}

/// The projections of the whole ledger, kept current by the writer.
pub(crate) struct ProjectionActor {
    pub(crate) projections: Projections,
}

impl Actor for ProjectionActor {
    type Context = Context<Self>;
}

/// An event the writer appended.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Fold {
    seq: u64,
    at: i64,
    event: Event,
}

impl Handler<Fold> for ProjectionActor {
    type Result = ();

    fn handle(&mut self, msg: Fold, _: &mut Context<Self>) {
        let stream = msg.event.database().to_owned();
        self.projections.apply(msg.seq, msg.at, &stream, &msg.event);
    }
}

/// A read of the projections: the closure runs on the projection actor and its result is
/// sent back, so readers never hold a lock and never wait behind an apply.
pub(crate) struct Read<R>(pub(crate) Box<dyn FnOnce(&Projections) -> R + Send>);

impl<R: 'static> Message for Read<R> {
    type Result = R;
}

impl<R: Send + 'static> Handler<Read<R>> for ProjectionActor {
    type Result = MessageResult<Read<R>>;

    fn handle(&mut self, msg: Read<R>, _: &mut Context<Self>) -> Self::Result {
        MessageResult((msg.0)(&self.projections))
    }
}

/// Rebuilds the projections from every record of `store` (start-up); also answers the last
/// seq folded.
pub(crate) fn rebuild(store: &dyn Store) -> Result<(Projections, u64), Error> {
    let mut projections = Projections::new();
    let mut last = 0;
    lockplane_store::for_each_record(store, 1, |record| {
        last = record.seq;
        // An event this build cannot decode is an anomaly `audit verify` reports; the
        // projections skip it rather than refuse to start.
        if let Ok(event) =
            events::decode_record_payload(&record.kind, &record.stream, &record.payload)
        {
            projections.apply(record.seq, record.at, &record.stream, &event);
        }
        Ok::<_, Error>(())
    })?;
    Ok((projections, last))
}
