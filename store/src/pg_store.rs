//! [`PgStore`]: the ledger kept in Postgres, shared by every process and machine that can
//! reach the control database (DESIGN §5, "the ledger of record").
//!
//! Records are built exactly as by the other backends ([`crate::record::chain_batch`]), so a
//! `PgStore` holds byte-identical records and [`crate::verify`] works on it unchanged.
//!
//! # Layout
//!
//! Everything lives in the schema `lockplane_ledger` of the control database; several named
//! ledgers share it (the `ledger` column), and blobs are shared by all of them (they are
//! content-addressed):
//!
//! - `heads(ledger text PRIMARY KEY, seq bigint, hash bytea)`: one row per ledger, created at
//!   [`Head::GENESIS`] by the first open. It is what appenders lock, and what
//!   [`Store::head`] reads;
//! - `records(ledger, seq, prev_hash bytea, hash bytea, stream text, kind text, bytes bytea,
//!   PRIMARY KEY (ledger, seq), UNIQUE (ledger, prev_hash))`, plus an index on
//!   `(ledger, stream, seq)` for [`Store::read_stream`]. `bytes` is the exact stored encoding
//!   ([`crate::record`]); the other columns repeat fields of it for constraints and indexes.
//!   `verify` reads only `bytes`, so a column that disagrees with them changes nothing it
//!   checks;
//! - `blobs(hash bytea PRIMARY KEY, bytes bytea)`.
//!
//! The schema is created at [`PgStore::open`] when it is missing, in one transaction that
//! holds a transaction-level advisory lock (so concurrent first opens wait for each other
//! instead of failing on `CREATE SCHEMA`). The role therefore needs `CREATE` on the control
//! database the first time; later opens only check that the triggers exist and need just
//! `SELECT`, `INSERT` and `UPDATE` on the three tables (`UPDATE` on `heads` only).
//!
//! # Triggers
//!
//! - `records` and `blobs`: `UPDATE`, `DELETE` and `TRUNCATE` raise
//!   `lockplane ledger: UPDATE on lockplane_ledger.records refused: the ledger is append-only`.
//! - `records` on `INSERT`: the record must sit above its ledger's head, and link to the
//!   record below it (`prev_hash` is that record's `hash`, or the genesis hash at seq 1).
//! - `heads`: a new row starts at seq 0 with the genesis hash; an `UPDATE` must keep the ledger,
//!   move the seq strictly forward, and name a stored record (seq and hash); `DELETE` and
//!   `TRUNCATE` are refused. So the head is stored (one row to lock) but can only move
//!   forward, consistently with the records.
//!
//! The triggers are `ENABLE ALWAYS`, so `SET session_replication_role = replica` does not
//! bypass them; only the tables' owner or a superuser can (`ALTER TABLE … DISABLE TRIGGER`),
//! and what they change then is what [`crate::verify`] is for: it names the first record whose
//! bytes no longer check out.
//!
//! # Why the chain cannot fork
//!
//! An append is one `READ COMMITTED` transaction: `SELECT … FROM heads … FOR UPDATE` (the row
//! lock serialises every appender of the ledger, in any process on any machine), the expected
//! head is compared with the locked row (a mismatch is [`StoreError::Conflict`] and nothing is
//! written), the records are chained from the locked head, inserted, the head row moved, and
//! `COMMIT`. A second appender expecting the same head waits for the lock and then reads the
//! new head, so it gets a conflict. Independently of that protocol, the table itself cannot
//! hold a fork: `(ledger, seq)` and `(ledger, prev_hash)` are unique, and the insert trigger
//! checks the link.
//!
//! # Durability
//!
//! An append is acknowledged only after `COMMIT` returned. Each connection sets
//! `synchronous_commit = on` (unless the server already asks for `remote_apply`), so `COMMIT`
//! returns once the WAL is flushed on the primary and, when `synchronous_standby_names` names a
//! standby, flushed on that standby too: an acknowledged append then survives losing the
//! primary (fail over to the synchronous standby). Without synchronous replication,
//! acknowledged means durable on the primary only; a failover to an asynchronous standby can
//! lose the last acknowledged records, and the next append would then build a different record
//! at their seq (a checkpoint kept outside the ledger, [`crate::Checkpoint`], detects it).
//! Postgres reports a synchronous-replication wait that an administrator cancelled as a
//! `WARNING` and a successful `COMMIT`; such an append is durable on the primary only.
//! If the connection breaks while `COMMIT` is in flight, the append's outcome is unknown and it
//! fails with [`StoreError::CommitUnknown`].
//!
//! # Threads
//!
//! A `PgStore` owns one connection, driven by a dedicated thread running a current-thread
//! tokio runtime. The [`Store`] methods send a request over a channel and block for the reply,
//! so they can be called from any thread (sync actors, `spawn_blocking`) and never nest
//! runtimes (calling them on an async worker thread blocks that thread, as any blocking call
//! does). Requests are served in order; appends queued together are committed in one
//! transaction (group commit: each is checked against the running head in arrival order, as in
//! [`crate::sled_store`]). Reads that hit a broken connection reconnect once and retry; an
//! append never retries on its own. Clones share the connection and thread; separate
//! [`PgStore::open`]s get separate connections (they contend through the head row lock).

use std::collections::VecDeque;
use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc};
use std::thread::JoinHandle;

use tokio::sync::mpsc;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Statement};

use crate::error::StoreError;
use crate::hash::{sha3_256, BlobHash, Hash, GENESIS_HASH};
use crate::record::{chain_batch, Head, NewRecord, RawRecord, Record};
use crate::store::{decode_raw, Store};

/// The schema holding every ledger of a control database.
pub const SCHEMA: &str = "lockplane_ledger";

/// What a [`PgConnector`] fails with.
pub type ConnectError = Box<dyn std::error::Error + Send + Sync>;

/// The future a [`PgConnector`] returns: a connected client. It runs on the store's own
/// current-thread runtime, so it need not be `Send`.
pub type ConnectFuture = Pin<Box<dyn Future<Output = Result<Client, ConnectError>>>>;

/// Makes a new connection for a [`PgStore`]: called on the store's thread, inside its
/// current-thread tokio runtime, at open and whenever the connection broke. It must spawn the
/// connection's task on the current runtime (`tokio::spawn(connection)`) and return the
/// client. Lockplane passes its libpq-style TLS connect; [`PgStore::open_url`] builds one for a
/// plain `postgres://` URL.
pub type PgConnector = Box<dyn FnMut() -> ConnectFuture + Send>;

/// Commit groups are bounded so one transaction's worth of replies isn't held back
/// indefinitely under a constant stream of appends.
const MAX_GROUP: usize = 256;

/// The advisory lock key serialising schema installation (`'lockplane_ledger'` read as
/// ASCII, truncated to 8 bytes).
const INSTALL_LOCK_KEY: i64 = 0x6c6f_636b_706c_616e;

/// Triggers the schema installs; an open finding all of them skips installation.
const TRIGGERS: [&str; 7] = [
    "records.lockplane_append_only",
    "records.lockplane_no_truncate",
    "records.lockplane_link",
    "blobs.lockplane_append_only",
    "blobs.lockplane_no_truncate",
    "heads.lockplane_forward_only",
    "heads.lockplane_no_truncate",
];

/// The ledger's tables and triggers, idempotent (run under the install lock).
fn schema_sql() -> String {
    let genesis = GENESIS_HASH.to_hex();
    let mut sql = format!(
        r#"
CREATE SCHEMA IF NOT EXISTS lockplane_ledger;
COMMENT ON SCHEMA lockplane_ledger IS 'Lockplane''s hash-chained ledgers (lockplane_store::PgStore); append-only';

CREATE TABLE IF NOT EXISTS lockplane_ledger.heads (
    ledger text PRIMARY KEY,
    seq bigint NOT NULL CHECK (seq >= 0),
    hash bytea NOT NULL CHECK (octet_length(hash) = 32)
);

CREATE TABLE IF NOT EXISTS lockplane_ledger.records (
    ledger text NOT NULL,
    seq bigint NOT NULL CHECK (seq >= 1),
    prev_hash bytea NOT NULL CHECK (octet_length(prev_hash) = 32),
    hash bytea NOT NULL CHECK (octet_length(hash) = 32),
    stream text NOT NULL,
    kind text NOT NULL,
    bytes bytea NOT NULL,
    PRIMARY KEY (ledger, seq),
    UNIQUE (ledger, prev_hash)
);
CREATE INDEX IF NOT EXISTS records_by_stream ON lockplane_ledger.records (ledger, stream, seq);

CREATE TABLE IF NOT EXISTS lockplane_ledger.blobs (
    hash bytea PRIMARY KEY CHECK (octet_length(hash) = 32),
    bytes bytea NOT NULL
);

CREATE OR REPLACE FUNCTION lockplane_ledger.refuse_change() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog AS $fn$
BEGIN
    RAISE EXCEPTION 'lockplane ledger: % on %.% refused: the ledger is append-only',
        TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME
        USING HINT = 'records, blobs and heads are never changed or removed; see lockplane_store::pg_store';
END
$fn$;

CREATE OR REPLACE FUNCTION lockplane_ledger.check_link() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog AS $fn$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM lockplane_ledger.heads h
                   WHERE h.ledger = NEW.ledger AND h.seq < NEW.seq) THEN
        RAISE EXCEPTION 'lockplane ledger %: record % is not above the head', NEW.ledger, NEW.seq;
    END IF;
    IF NEW.seq = 1 THEN
        IF NEW.prev_hash <> '\x{genesis}'::bytea THEN
            RAISE EXCEPTION 'lockplane ledger %: record 1 must link to the genesis hash', NEW.ledger;
        END IF;
    ELSIF NOT EXISTS (SELECT 1 FROM lockplane_ledger.records r
                      WHERE r.ledger = NEW.ledger AND r.seq = NEW.seq - 1
                        AND r.hash = NEW.prev_hash) THEN
        RAISE EXCEPTION 'lockplane ledger %: record % does not link to record %',
            NEW.ledger, NEW.seq, NEW.seq - 1;
    END IF;
    RETURN NEW;
END
$fn$;

CREATE OR REPLACE FUNCTION lockplane_ledger.check_head() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog AS $fn$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.seq <> 0 OR NEW.hash <> '\x{genesis}'::bytea THEN
            RAISE EXCEPTION 'lockplane ledger %: a head starts at seq 0 with the genesis hash',
                NEW.ledger;
        END IF;
        RETURN NEW;
    ELSIF TG_OP = 'UPDATE' THEN
        IF NEW.ledger <> OLD.ledger THEN
            RAISE EXCEPTION 'lockplane ledger %: a head cannot be renamed', OLD.ledger;
        END IF;
        IF NEW.seq <= OLD.seq THEN
            RAISE EXCEPTION 'lockplane ledger %: the head may only move forward (seq % to %)',
                OLD.ledger, OLD.seq, NEW.seq;
        END IF;
        IF NOT EXISTS (SELECT 1 FROM lockplane_ledger.records r
                       WHERE r.ledger = NEW.ledger AND r.seq = NEW.seq AND r.hash = NEW.hash) THEN
            RAISE EXCEPTION 'lockplane ledger %: the head must name a stored record (seq %)',
                NEW.ledger, NEW.seq;
        END IF;
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'lockplane ledger: % on %.% refused: the ledger is append-only',
        TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME;
END
$fn$;

CREATE OR REPLACE TRIGGER lockplane_append_only BEFORE UPDATE OR DELETE ON lockplane_ledger.records
    FOR EACH ROW EXECUTE FUNCTION lockplane_ledger.refuse_change();
CREATE OR REPLACE TRIGGER lockplane_no_truncate BEFORE TRUNCATE ON lockplane_ledger.records
    FOR EACH STATEMENT EXECUTE FUNCTION lockplane_ledger.refuse_change();
CREATE OR REPLACE TRIGGER lockplane_link BEFORE INSERT ON lockplane_ledger.records
    FOR EACH ROW EXECUTE FUNCTION lockplane_ledger.check_link();
CREATE OR REPLACE TRIGGER lockplane_append_only BEFORE UPDATE OR DELETE ON lockplane_ledger.blobs
    FOR EACH ROW EXECUTE FUNCTION lockplane_ledger.refuse_change();
CREATE OR REPLACE TRIGGER lockplane_no_truncate BEFORE TRUNCATE ON lockplane_ledger.blobs
    FOR EACH STATEMENT EXECUTE FUNCTION lockplane_ledger.refuse_change();
CREATE OR REPLACE TRIGGER lockplane_forward_only BEFORE INSERT OR UPDATE OR DELETE ON lockplane_ledger.heads
    FOR EACH ROW EXECUTE FUNCTION lockplane_ledger.check_head();
CREATE OR REPLACE TRIGGER lockplane_no_truncate BEFORE TRUNCATE ON lockplane_ledger.heads
    FOR EACH STATEMENT EXECUTE FUNCTION lockplane_ledger.refuse_change();
"#
    );
    // Always, so `session_replication_role = replica` does not switch them off.
    for trigger in TRIGGERS {
        if let Some((table, name)) = trigger.split_once('.') {
            sql.push_str(&format!(
                "ALTER TABLE lockplane_ledger.{table} ENABLE ALWAYS TRIGGER {name};\n"
            ));
        }
    }
    sql
}

/// Whether every trigger (hence, installed in the same transaction, every table) exists.
const INSTALLED_SQL: &str = "SELECT count(*) FROM pg_catalog.pg_trigger t \
     JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid \
     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
     WHERE n.nspname = 'lockplane_ledger' \
       AND c.relname || '.' || t.tgname = ANY($1::text[])";

const LOCK_HEAD_SQL: &str =
    "SELECT seq, hash FROM lockplane_ledger.heads WHERE ledger = $1 FOR UPDATE";
const HEAD_SQL: &str = "SELECT seq, hash FROM lockplane_ledger.heads WHERE ledger = $1";
const INSERT_SQL: &str = "INSERT INTO lockplane_ledger.records \
     (ledger, seq, prev_hash, hash, stream, kind, bytes) \
     SELECT $1, r.seq, r.prev_hash, r.hash, r.stream, r.kind, r.bytes \
     FROM unnest($2::bigint[], $3::bytea[], $4::bytea[], $5::text[], $6::text[], $7::bytea[]) \
          AS r(seq, prev_hash, hash, stream, kind, bytes) \
     ORDER BY r.seq";
const MOVE_HEAD_SQL: &str =
    "UPDATE lockplane_ledger.heads SET seq = $2, hash = $3 WHERE ledger = $1";
const READ_RAW_SQL: &str = "SELECT seq, bytes FROM lockplane_ledger.records \
     WHERE ledger = $1 AND seq >= $2 AND seq < $3 ORDER BY seq";
const READ_STREAM_SQL: &str = "SELECT seq, bytes FROM lockplane_ledger.records \
     WHERE ledger = $1 AND stream = $2 AND seq >= $3 ORDER BY seq LIMIT $4";
const PUT_BLOB_SQL: &str =
    "INSERT INTO lockplane_ledger.blobs (hash, bytes) VALUES ($1, $2) ON CONFLICT (hash) DO NOTHING";
const READ_BLOB_SQL: &str = "SELECT bytes FROM lockplane_ledger.blobs WHERE hash = $1";

/// A ledger in a Postgres database (see the [module docs](self)). Cheap to clone: clones share
/// the connection and its thread.
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("ledger", &self.inner.ledger)
            .finish_non_exhaustive()
    }
}

struct Inner {
    ledger: String,
    /// Append transactions committed (one per commit group), for [`PgStore::commit_groups`].
    commits: Arc<AtomicU64>,
    tx: Option<mpsc::UnboundedSender<Request>>,
    worker: Option<JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the channel ends the worker once it has answered everything queued; its
        // runtime, and with it the connection, goes away with it.
        drop(self.tx.take());
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

type Reply<T> = std_mpsc::SyncSender<Result<T, StoreError>>;

struct AppendRequest {
    expected: Option<Head>,
    batch: Vec<NewRecord>,
    reply: Reply<Head>,
}

enum Request {
    Append(AppendRequest),
    Head(Reply<Head>),
    ReadRaw(Range<u64>, Reply<Vec<RawRecord>>),
    ReadStream {
        stream: String,
        from_seq: u64,
        limit: usize,
        reply: Reply<Vec<RawRecord>>,
    },
    PutBlob(Vec<u8>, Reply<BlobHash>),
    ReadBlob(BlobHash, Reply<Option<Vec<u8>>>),
}

impl PgStore {
    /// Opens ledger `ledger` in the database `connector` connects to: connects, creates the
    /// schema if it is missing (see the [module docs](self)) and the ledger's head row if it
    /// is new.
    pub fn open(connector: PgConnector, ledger: &str) -> Result<PgStore, StoreError> {
        let ledger = ledger.to_owned();
        let (tx, rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = std_mpsc::sync_channel(1);
        let commits = Arc::new(AtomicU64::new(0));
        let worker = {
            let (ledger, commits) = (ledger.clone(), Arc::clone(&commits));
            std::thread::Builder::new()
                .name("lockplane-pg-ledger".into())
                .spawn(move || run_worker(connector, ledger, commits, rx, ready_tx))
                .map_err(|e| StoreError::io("starting the Postgres ledger thread", e))?
        };
        let opened = ready_rx.recv().unwrap_or(Err(StoreError::Closed));
        let store = PgStore {
            inner: Arc::new(Inner {
                ledger,
                commits,
                tx: Some(tx),
                worker: Some(worker),
            }),
        };
        // On failure, dropping the store joins the (finished) worker.
        opened.map(|()| store)
    }

    /// [`PgStore::open`] with a plain `postgres://` URL (or key/value connection string),
    /// without TLS: for tests and tools. A URL asking for TLS (`sslmode=require`) fails to
    /// connect; the product passes its own TLS-capable connector.
    pub fn open_url(url: &str, ledger: &str) -> Result<PgStore, StoreError> {
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| pg_error("parsing the ledger's connection string", &e))?;
        let connector: PgConnector = Box::new(move || {
            let config = config.clone();
            Box::pin(async move {
                let (client, connection) = config.connect(NoTls).await?;
                tokio::spawn(connection);
                Ok(client)
            })
        });
        PgStore::open(connector, ledger)
    }

    /// How many append transactions this handle (and its clones) has committed; appends
    /// divided by this is the average commit group size.
    pub fn commit_groups(&self) -> u64 {
        self.inner.commits.load(Ordering::Relaxed)
    }

    /// The ledger's name (its key in the shared tables).
    pub fn ledger(&self) -> &str {
        &self.inner.ledger
    }

    fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Request) -> Result<T, StoreError> {
        let (reply, rx) = std_mpsc::sync_channel(1);
        let tx = self.inner.tx.as_ref().ok_or(StoreError::Closed)?;
        tx.send(make(reply)).map_err(|_| StoreError::Closed)?;
        rx.recv().unwrap_or(Err(StoreError::Closed))
    }
}

impl Store for PgStore {
    fn append(&self, expected: Option<Head>, batch: Vec<NewRecord>) -> Result<Head, StoreError> {
        self.call(|reply| {
            Request::Append(AppendRequest {
                expected,
                batch,
                reply,
            })
        })
    }

    fn head(&self) -> Result<Head, StoreError> {
        self.call(Request::Head)
    }

    fn read_raw(&self, seqs: Range<u64>) -> Result<Vec<RawRecord>, StoreError> {
        if seqs.is_empty() {
            return Ok(Vec::new());
        }
        self.call(|reply| Request::ReadRaw(seqs, reply))
    }

    fn put_blob(&self, bytes: &[u8]) -> Result<BlobHash, StoreError> {
        self.call(|reply| Request::PutBlob(bytes.to_vec(), reply))
    }

    fn read_blob_raw(&self, hash: &BlobHash) -> Result<Option<Vec<u8>>, StoreError> {
        self.call(|reply| Request::ReadBlob(*hash, reply))
    }

    fn read_stream(
        &self,
        stream: &str,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let raws = self.call(|reply| Request::ReadStream {
            stream: stream.to_owned(),
            from_seq,
            limit,
            reply,
        })?;
        raws.into_iter()
            .map(|raw| {
                let seq = raw.seq;
                let record = decode_raw(raw)?;
                if record.stream != stream {
                    return Err(StoreError::Corrupt {
                        seq: Some(seq),
                        reason: format!(
                            "indexed under stream {stream:?} but the record says {:?}",
                            record.stream
                        ),
                    });
                }
                Ok(record)
            })
            .collect()
    }
}

/// One connection and its prepared statements.
struct Conn {
    client: Client,
    lock_head: Statement,
    head: Statement,
    insert: Statement,
    move_head: Statement,
    read_raw: Statement,
    read_stream: Statement,
    put_blob: Statement,
    read_blob: Statement,
}

struct Worker {
    connector: PgConnector,
    ledger: String,
    commits: Arc<AtomicU64>,
    conn: Option<Rc<Conn>>,
}

fn run_worker(
    connector: PgConnector,
    ledger: String,
    commits: Arc<AtomicU64>,
    rx: mpsc::UnboundedReceiver<Request>,
    ready: std_mpsc::SyncSender<Result<(), StoreError>>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(StoreError::io(
                "starting the Postgres ledger's runtime",
                e,
            )));
            return;
        }
    };
    runtime.block_on(async move {
        let mut worker = Worker {
            connector,
            ledger,
            commits,
            conn: None,
        };
        match worker.open().await {
            Ok(()) => {
                let _ = ready.send(Ok(()));
            }
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        }
        worker.serve(rx).await;
    });
}

/// Runs a read (or an idempotent write) on the worker's connection; if the connection turns
/// out broken, reconnects once and runs it again.
macro_rules! retry {
    ($worker:ident, $context:expr, |$conn:ident| $body:expr) => {{
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let $conn = $worker.connection().await?;
            match $body.await {
                Ok(value) => break Ok(value),
                Err(e) => {
                    if broken(&$conn, &e) {
                        $worker.conn = None;
                        if attempt < 2 {
                            continue;
                        }
                    }
                    break Err(pg_error($context, &e));
                }
            }
        }
    }};
}

/// How a failed operation left the connection.
fn broken(conn: &Conn, e: &tokio_postgres::Error) -> bool {
    e.as_db_error().is_none() || conn.client.is_closed()
}

impl Worker {
    /// First connection: install the schema if needed, create the head row.
    async fn open(&mut self) -> Result<(), StoreError> {
        let conn = self.connection().await?;
        conn.client
            .execute(
                "INSERT INTO lockplane_ledger.heads (ledger, seq, hash) VALUES ($1, 0, $2) \
                 ON CONFLICT (ledger) DO NOTHING",
                &[&self.ledger, &GENESIS_HASH.0.as_slice()],
            )
            .await
            .map_err(|e| pg_error("creating the ledger's head", &e))?;
        Ok(())
    }

    /// The open connection, or a new one (set up, schema checked, statements prepared).
    async fn connection(&mut self) -> Result<Rc<Conn>, StoreError> {
        if let Some(conn) = self.conn.as_ref().filter(|c| !c.client.is_closed()) {
            return Ok(Rc::clone(conn));
        }
        self.conn = None;
        let client = (self.connector)()
            .await
            .map_err(|e| connect_error(e.as_ref()))?;
        let conn = Rc::new(prepare(client).await?);
        self.conn = Some(Rc::clone(&conn));
        Ok(conn)
    }

    async fn serve(&mut self, mut rx: mpsc::UnboundedReceiver<Request>) {
        let mut pending: VecDeque<Request> = VecDeque::new();
        loop {
            let request = match pending.pop_front() {
                Some(r) => r,
                None => match rx.recv().await {
                    Some(r) => r,
                    None => return,
                },
            };
            match request {
                Request::Append(first) => {
                    let mut group = vec![first];
                    while group.len() < MAX_GROUP {
                        match rx.try_recv() {
                            Ok(Request::Append(next)) => group.push(next),
                            Ok(other) => {
                                pending.push_back(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    self.append_group(group).await;
                }
                Request::Head(reply) => {
                    let _ = reply.send(self.head().await);
                }
                Request::ReadRaw(seqs, reply) => {
                    let _ = reply.send(self.read_raw(seqs).await);
                }
                Request::ReadStream {
                    stream,
                    from_seq,
                    limit,
                    reply,
                } => {
                    let _ = reply.send(self.read_stream(&stream, from_seq, limit).await);
                }
                Request::PutBlob(bytes, reply) => {
                    let _ = reply.send(self.put_blob(&bytes).await);
                }
                Request::ReadBlob(hash, reply) => {
                    let _ = reply.send(self.read_blob(&hash).await);
                }
            }
        }
    }

    /// Appends every batch of `group` that expects the running head, in one transaction, and
    /// replies to each only after `COMMIT` returned.
    async fn append_group(&mut self, group: Vec<AppendRequest>) {
        let mut replies = Vec::with_capacity(group.len());
        let mut batches = Vec::with_capacity(group.len());
        for request in group {
            replies.push(request.reply);
            batches.push((request.expected, request.batch));
        }
        let outcomes = match self.connection().await {
            Ok(conn) => {
                let outcome = append_in_transaction(&conn, &self.ledger, batches).await;
                if outcome.is_err() && conn.client.is_closed() {
                    self.conn = None;
                }
                outcome
            }
            Err(e) => Err(e),
        };
        match outcomes {
            Ok(outcomes) => {
                if outcomes.iter().any(Result::is_ok) {
                    self.commits.fetch_add(1, Ordering::Relaxed);
                }
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(outcome);
                }
            }
            Err(e) => {
                for reply in replies {
                    let _ = reply.send(Err(duplicate(&e)));
                }
            }
        }
    }

    async fn head(&mut self) -> Result<Head, StoreError> {
        let ledger = self.ledger.clone();
        let row = retry!(self, "reading the head", |conn| conn
            .client
            .query_opt(&conn.head, &[&ledger]))?;
        match row {
            Some(row) => head_from_row(&ledger, &row),
            None => Err(StoreError::Corrupt {
                seq: None,
                reason: format!("the head row of ledger {ledger:?} is missing"),
            }),
        }
    }

    async fn read_raw(&mut self, seqs: Range<u64>) -> Result<Vec<RawRecord>, StoreError> {
        let ledger = self.ledger.clone();
        let (start, end) = (to_i64(seqs.start), to_i64(seqs.end));
        let rows = retry!(self, "reading records", |conn| conn
            .client
            .query(&conn.read_raw, &[&ledger, &start, &end]))?;
        rows.iter().map(raw_from_row).collect()
    }

    async fn read_stream(
        &mut self,
        stream: &str,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<RawRecord>, StoreError> {
        let ledger = self.ledger.clone();
        let from = to_i64(from_seq);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = retry!(self, "reading a stream", |conn| conn
            .client
            .query(&conn.read_stream, &[&ledger, &stream, &from, &limit]))?;
        rows.iter().map(raw_from_row).collect()
    }

    async fn put_blob(&mut self, bytes: &[u8]) -> Result<BlobHash, StoreError> {
        let hash = sha3_256(bytes);
        let key = hash.0.as_slice();
        retry!(self, "storing a blob", |conn| conn
            .client
            .execute(&conn.put_blob, &[&key, &bytes]))?;
        Ok(hash)
    }

    async fn read_blob(&mut self, hash: &BlobHash) -> Result<Option<Vec<u8>>, StoreError> {
        let key = hash.0.as_slice();
        let row = retry!(self, "reading a blob", |conn| conn
            .client
            .query_opt(&conn.read_blob, &[&key]))?;
        row.map(|row| {
            row.try_get::<_, Vec<u8>>(0)
                .map_err(|e| pg_error("reading a blob", &e))
        })
        .transpose()
    }
}

/// Sets up a new connection: durable commits, the schema, prepared statements.
async fn prepare(client: Client) -> Result<Conn, StoreError> {
    let setting = client
        .query_one("SELECT current_setting('synchronous_commit')", &[])
        .await
        .map_err(|e| pg_error("reading synchronous_commit", &e))?;
    let setting: String = setting
        .try_get(0)
        .map_err(|e| pg_error("reading synchronous_commit", &e))?;
    if setting != "remote_apply" && setting != "on" {
        client
            .batch_execute("SET synchronous_commit = on")
            .await
            .map_err(|e| pg_error("setting synchronous_commit", &e))?;
    }
    install(&client).await?;
    let p = |sql: &'static str| {
        let client = &client;
        async move {
            client
                .prepare(sql)
                .await
                .map_err(|e| pg_error("preparing the ledger's statements", &e))
        }
    };
    Ok(Conn {
        lock_head: p(LOCK_HEAD_SQL).await?,
        head: p(HEAD_SQL).await?,
        insert: p(INSERT_SQL).await?,
        move_head: p(MOVE_HEAD_SQL).await?,
        read_raw: p(READ_RAW_SQL).await?,
        read_stream: p(READ_STREAM_SQL).await?,
        put_blob: p(PUT_BLOB_SQL).await?,
        read_blob: p(READ_BLOB_SQL).await?,
        client,
    })
}

/// Whether every trigger (hence every table, created in the same transaction) exists.
async fn installed(client: &Client) -> Result<bool, StoreError> {
    let names: Vec<&str> = TRIGGERS.to_vec();
    let row = client
        .query_one(INSTALLED_SQL, &[&names])
        .await
        .map_err(|e| pg_error("checking the ledger schema", &e))?;
    let found: i64 = row
        .try_get(0)
        .map_err(|e| pg_error("checking the ledger schema", &e))?;
    Ok(found == TRIGGERS.len() as i64)
}

/// Creates the schema unless every trigger is there already.
async fn install(client: &Client) -> Result<(), StoreError> {
    if installed(client).await? {
        return Ok(());
    }
    let context = "creating the ledger schema (the role needs CREATE on the database)";
    client
        .batch_execute("BEGIN")
        .await
        .map_err(|e| pg_error(context, &e))?;
    let result = async {
        client
            .execute(
                "SELECT pg_catalog.pg_advisory_xact_lock($1)",
                &[&INSTALL_LOCK_KEY],
            )
            .await
            .map_err(|e| pg_error(context, &e))?;
        if !installed(client).await? {
            client
                .batch_execute(&schema_sql())
                .await
                .map_err(|e| pg_error(context, &e))?;
        }
        client
            .batch_execute("COMMIT")
            .await
            .map_err(|e| pg_error(context, &e))
    }
    .await;
    if result.is_err() {
        let _ = client.batch_execute("ROLLBACK").await;
    }
    result
}

type Outcomes = Vec<Result<Head, StoreError>>;

/// One append transaction for a commit group (see "Why the chain cannot fork" in the module
/// docs). Returns each batch's outcome, or the error that failed them all.
///
/// Three round trips: `BEGIN` with the head lock, the inserts with the head move, `COMMIT`.
async fn append_in_transaction(
    conn: &Conn,
    ledger: &str,
    batches: Vec<(Option<Head>, Vec<NewRecord>)>,
) -> Result<Outcomes, StoreError> {
    const CONTEXT: &str = "appending to the ledger";
    let client = &conn.client;
    let lock_params: [&(dyn ToSql + Sync); 1] = [&ledger];
    let (begun, locked) = tokio::join!(
        client.batch_execute("BEGIN ISOLATION LEVEL READ COMMITTED"),
        client.query_opt(&conn.lock_head, &lock_params),
    );
    let result = async {
        begun.map_err(|e| pg_error(CONTEXT, &e))?;
        let row = locked.map_err(|e| pg_error(CONTEXT, &e))?;
        let start = match row {
            Some(row) => head_from_row(ledger, &row)?,
            None => {
                return Err(StoreError::Corrupt {
                    seq: None,
                    reason: format!("the head row of ledger {ledger:?} is missing"),
                })
            }
        };

        let mut head = start;
        let mut outcomes = Vec::with_capacity(batches.len());
        let mut records = Vec::new();
        for (expected, batch) in batches {
            match expected {
                Some(expected) if expected != head => {
                    outcomes.push(Err(StoreError::Conflict {
                        expected,
                        actual: head,
                    }));
                }
                _ => {
                    let (encoded, next) = chain_batch(head, batch);
                    records.extend(encoded);
                    head = next;
                    outcomes.push(Ok(next));
                }
            }
        }
        if head != start {
            let mut seqs = Vec::with_capacity(records.len());
            for r in &records {
                seqs.push(seq_to_i64(r.seq)?);
            }
            let prev: Vec<&[u8]> = records.iter().map(|r| r.prev_hash.0.as_slice()).collect();
            let hashes: Vec<&[u8]> = records.iter().map(|r| r.hash.0.as_slice()).collect();
            let streams: Vec<&str> = records.iter().map(|r| r.stream.as_str()).collect();
            let kinds: Vec<&str> = records.iter().map(|r| r.kind.as_str()).collect();
            let bytes: Vec<&[u8]> = records.iter().map(|r| r.bytes.as_slice()).collect();
            let head_seq = seq_to_i64(head.seq)?;
            let head_hash = head.hash.0.as_slice();
            let insert_params: [&(dyn ToSql + Sync); 7] =
                [&ledger, &seqs, &prev, &hashes, &streams, &kinds, &bytes];
            let move_params: [&(dyn ToSql + Sync); 3] = [&ledger, &head_seq, &head_hash];
            let (inserted, moved) = tokio::join!(
                client.execute(&conn.insert, &insert_params),
                client.execute(&conn.move_head, &move_params),
            );
            let inserted = inserted.map_err(|e| pg_error(CONTEXT, &e))?;
            let moved = moved.map_err(|e| pg_error(CONTEXT, &e))?;
            if inserted != records.len() as u64 || moved != 1 {
                return Err(StoreError::Corrupt {
                    seq: None,
                    reason: format!(
                        "an append inserted {inserted} of {} records and moved {moved} head rows",
                        records.len()
                    ),
                });
            }
        }
        Ok(outcomes)
    }
    .await;

    let outcomes = match result {
        Ok(outcomes) => outcomes,
        Err(e) => {
            // Nothing was committed; a broken connection is dropped by the caller.
            let _ = client.batch_execute("ROLLBACK").await;
            return Err(e);
        }
    };
    match client.batch_execute("COMMIT").await {
        Ok(()) => Ok(outcomes),
        Err(e) if e.as_db_error().is_some() && !client.is_closed() => Err(pg_error(CONTEXT, &e)),
        Err(e) => Err(StoreError::CommitUnknown {
            message: describe(&e),
        }),
    }
}

fn head_from_row(ledger: &str, row: &tokio_postgres::Row) -> Result<Head, StoreError> {
    let seq: i64 = row
        .try_get(0)
        .map_err(|e| pg_error("reading the head", &e))?;
    let hash: Vec<u8> = row
        .try_get(1)
        .map_err(|e| pg_error("reading the head", &e))?;
    let corrupt = |reason: String| StoreError::Corrupt { seq: None, reason };
    let seq = u64::try_from(seq)
        .map_err(|_| corrupt(format!("the head of ledger {ledger:?} has seq {seq}")))?;
    let hash: [u8; 32] = hash.try_into().map_err(|h: Vec<u8>| {
        corrupt(format!(
            "the head of ledger {ledger:?} has a {}-byte hash",
            h.len()
        ))
    })?;
    Ok(Head {
        seq,
        hash: Hash(hash),
    })
}

fn raw_from_row(row: &tokio_postgres::Row) -> Result<RawRecord, StoreError> {
    let seq: i64 = row
        .try_get(0)
        .map_err(|e| pg_error("reading records", &e))?;
    let bytes: Vec<u8> = row
        .try_get(1)
        .map_err(|e| pg_error("reading records", &e))?;
    let seq = u64::try_from(seq).map_err(|_| StoreError::Corrupt {
        seq: None,
        reason: format!("a record is stored under seq {seq}"),
    })?;
    Ok(RawRecord { seq, bytes })
}

/// A seq bound for a query: seqs are `bigint`, so anything beyond `i64::MAX` reads as it.
fn to_i64(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

/// A seq to store, which must fit a `bigint`.
fn seq_to_i64(seq: u64) -> Result<i64, StoreError> {
    i64::try_from(seq).map_err(|_| StoreError::Corrupt {
        seq: Some(seq),
        reason: "seq does not fit a Postgres bigint".into(),
    })
}

/// The server's message with its detail and hint, or the client's description.
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut message = db.message().to_owned();
            if let Some(detail) = db.detail() {
                message.push_str(&format!("; detail: {detail}"));
            }
            if let Some(hint) = db.hint() {
                message.push_str(&format!("; hint: {hint}"));
            }
            message
        }
        None => {
            let mut message = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                message.push_str(&format!(": {s}"));
                source = s.source();
            }
            message
        }
    }
}

fn pg_error(context: &'static str, e: &tokio_postgres::Error) -> StoreError {
    StoreError::Postgres {
        context,
        sqlstate: e.code().map(|c| c.code().to_owned()),
        message: describe(e),
    }
}

fn connect_error(e: &(dyn std::error::Error + Send + Sync + 'static)) -> StoreError {
    match e.downcast_ref::<tokio_postgres::Error>() {
        Some(pg) => pg_error("connecting to the ledger database", pg),
        None => {
            let mut message = e.to_string();
            let mut source = e.source();
            while let Some(s) = source {
                message.push_str(&format!(": {s}"));
                source = s.source();
            }
            StoreError::Postgres {
                context: "connecting to the ledger database",
                sqlstate: None,
                message,
            }
        }
    }
}

/// An equal error for the other members of a failed commit group (`StoreError` is not
/// `Clone`: it can carry an `io::Error`).
fn duplicate(e: &StoreError) -> StoreError {
    match e {
        StoreError::Postgres {
            context,
            sqlstate,
            message,
        } => StoreError::Postgres {
            context,
            sqlstate: sqlstate.clone(),
            message: message.clone(),
        },
        StoreError::CommitUnknown { message } => StoreError::CommitUnknown {
            message: message.clone(),
        },
        StoreError::Corrupt { seq, reason } => StoreError::Corrupt {
            seq: *seq,
            reason: reason.clone(),
        },
        StoreError::Closed => StoreError::Closed,
        other => StoreError::Postgres {
            context: "appending to the ledger",
            sqlstate: None,
            message: other.to_string(),
        },
    }
}
