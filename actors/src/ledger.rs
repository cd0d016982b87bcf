//! The ledger's two actors: the single writer, and the projections folded from what it wrote.
//!
//! The writer is a sync actor on its own thread because an append blocks until sled has
//! flushed it (DESIGN §5: durable before acknowledged). After each append it hands the event
//! to the projection actor *before* replying, and mailboxes are FIFO, so a caller that has its
//! append acknowledged and then queries the projections always sees its own event.

use std::sync::Arc;

use actix::prelude::*;
use lockplane_engine::events::{self, Event};
use lockplane_engine::projection::Projections;
use lockplane_store::{Head, NewRecord, SledStore, Store};

use crate::Error;

/// The one writer of a runtime's ledger.
pub(crate) struct LedgerWriter {
    pub(crate) store: Arc<SledStore>,
    pub(crate) projection: Addr<ProjectionActor>,
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
        self.projection.do_send(Fold {
            seq: head.seq,
            at,
            event: msg.event,
        });
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

/// Rebuilds the projections from every record of `store` (start-up).
pub(crate) fn rebuild(store: &dyn Store) -> Result<Projections, Error> {
    let mut projections = Projections::new();
    lockplane_store::for_each_record(store, 1, |record| {
        // An event this build cannot decode is an anomaly `audit verify` reports; the
        // projections skip it rather than refuse to start.
        if let Ok(event) =
            events::decode_record_payload(&record.kind, &record.stream, &record.payload)
        {
            projections.apply(record.seq, record.at, &record.stream, &event);
        }
        Ok::<_, Error>(())
    })?;
    Ok(projections)
}
