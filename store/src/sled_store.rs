//! [`SledStore`]: the default, embedded, on-disk backend.
//!
//! # Layout on disk
//!
//! The ledger directory (the caller's choice, by default `./.lockplane/ledger`) holds:
//!
//! - `lockplane.lock`: the holder's pid and command line, `flock`ed while a process has the
//!   ledger open (see [Locking](#locking));
//! - `sled/`: the sled database, with two trees:
//!   - `log`: `b"r" ‖ seq (u64 BE)` → encoded record; `b"h"` → encoded head;
//!     `b"s" ‖ len(stream) (u64 BE) ‖ stream ‖ seq (u64 BE)` → empty (per-stream index);
//!   - `blobs`: SHA3-256 (32 bytes) → blob bytes.
//!
//! Records, their index entries and the head of one commit group go into `log` with one
//! `apply_batch`, which sled applies atomically, so after a crash the head always matches the
//! records.
//!
//! # Group commit
//!
//! All appends go through one writer thread per open ledger. It takes the first waiting request,
//! drains every other request already queued, checks each against the running head in arrival
//! order (a request whose expected head is stale gets [`StoreError::Conflict`]), writes all the
//! accepted batches with one `apply_batch`, calls `flush` (one fsync) once, and only then replies
//! to every request in the group. Concurrent appenders therefore share a flush, and since only
//! this thread assigns seqs, two appenders can never both extend the same head.
//!
//! # Locking
//!
//! sled lets one process open a database. Before opening sled, [`SledStore::open`] takes an
//! exclusive, non-blocking `flock` on `lockplane.lock` and writes its pid and command line into
//! it. A second process gets [`StoreError::Locked`] naming that holder, instead of sled's
//! untyped error. The kernel drops the lock when the holder exits, even on `SIGKILL`, so a
//! stale file never blocks anyone.
//!
//! Within one process, opening the same directory again returns another handle to the same
//! open ledger (same writer thread), so two handles can't fork the chain either.
//!
//! The CLI, when a Lockplane server holds the ledger, must reach the ledger through that server
//! (its API) rather than open it; or wait for it to exit ([`SledStore::open_waiting`]).

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{Holder, StoreError};
use crate::hash::{sha3_256, BlobHash};
use crate::record::{chain_batch, decode_head, encode_head, Head, NewRecord, RawRecord, Record};
use crate::store::{decode_raw, Store};

/// Name of the lock/holder file in the ledger directory.
pub const LOCK_FILE_NAME: &str = "lockplane.lock";
/// Name of the sled database directory inside the ledger directory.
pub const SLED_DIR_NAME: &str = "sled";

const LOG_TREE: &str = "log";
const BLOB_TREE: &str = "blobs";
const HEAD_KEY: &[u8] = b"h";
const RECORD_PREFIX: u8 = b'r';
const STREAM_PREFIX: u8 = b's';
/// Bounds one commit group, so one fsync's worth of replies isn't held back indefinitely
/// under a constant stream of appends.
const MAX_GROUP: usize = 1024;

/// A ledger in a sled database on disk. Cheap to clone: clones share the open database and its
/// writer thread.
#[derive(Clone)]
pub struct SledStore {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore")
            .field("path", &self.shared.path)
            .finish_non_exhaustive()
    }
}

/// What every handle of one open ledger shares (named for the hub, which keeps it weakly).
pub(crate) type SharedHandle = Shared;

pub(crate) struct Shared {
    path: PathBuf,
    /// The listener serving this ledger to other processes ([`crate::hub`]); stopped first
    /// when the ledger closes.
    hub: Mutex<Option<crate::hub::HubServer>>,
    head: Arc<Mutex<HeadState>>,
    /// Commit groups made durable (one flush each), for [`SledStore::commit_groups`].
    commits: Arc<AtomicU64>,
    tx: Option<mpsc::Sender<Request>>,
    writer: Option<JoinHandle<()>>,
    /// `Option` only so `Drop` can close sled and release the lock file while it still holds
    /// the registry lock; always `Some` otherwise.
    engine: Option<Engine>,
}

struct Engine {
    db: sled::Db,
    log: sled::Tree,
    blobs: sled::Tree,
    _lock: LockFile,
}

/// The acknowledged head, as the writer last made durable.
struct HeadState {
    head: Head,
    /// Set when the stored head could not be read at open: reads still work (so `verify` can
    /// report the damage) but the head is unknown.
    broken: Option<String>,
}

struct Request {
    expected: Option<Head>,
    batch: Vec<NewRecord>,
    reply: mpsc::SyncSender<Result<Head, StoreError>>,
}

/// Ledgers open in this process, by canonical path, so a second `open` shares the first.
static OPEN: Mutex<BTreeMap<PathBuf, Weak<Shared>>> = Mutex::new(BTreeMap::new());

fn registry() -> MutexGuard<'static, BTreeMap<PathBuf, Weak<Shared>>> {
    // The map is only ever inserted into or removed from whole; a panic elsewhere can't leave
    // it inconsistent, so recover from poisoning.
    OPEN.lock().unwrap_or_else(|p| p.into_inner())
}

fn lock_head(head: &Mutex<HeadState>) -> MutexGuard<'_, HeadState> {
    // Written with one assignment; poisoning can't leave it torn.
    head.lock().unwrap_or_else(|p| p.into_inner())
}

impl SledStore {
    /// Opens (creating if needed) the ledger in directory `path`.
    ///
    /// Fails with [`StoreError::Locked`] if another process has it open. Opening a path this
    /// process already has open returns a handle to the same ledger.
    pub fn open(path: impl AsRef<Path>) -> Result<SledStore, StoreError> {
        let path = path.as_ref();
        fs::create_dir_all(path)
            .map_err(|e| StoreError::io(format!("creating {}", path.display()), e))?;
        let path = fs::canonicalize(path)
            .map_err(|e| StoreError::io(format!("resolving {}", path.display()), e))?;

        let mut open = registry();
        if let Some(shared) = open.get(&path).and_then(Weak::upgrade) {
            return Ok(SledStore { shared });
        }

        let lock = LockFile::acquire(&path)?;
        let db = open_sled(&path)?;
        let log = db
            .open_tree(LOG_TREE)
            .map_err(|e| StoreError::backend("opening the log tree", e))?;
        let blobs = db
            .open_tree(BLOB_TREE)
            .map_err(|e| StoreError::backend("opening the blob tree", e))?;

        let head_state = read_head(&log)?;
        let head = Arc::new(Mutex::new(head_state));
        let commits = Arc::new(AtomicU64::new(0));
        let (tx, rx) = mpsc::channel();
        let writer = {
            let (db, log) = (db.clone(), log.clone());
            let (head, commits) = (Arc::clone(&head), Arc::clone(&commits));
            std::thread::Builder::new()
                .name("lockplane-ledger-writer".into())
                .spawn(move || run_writer(rx, db, log, head, commits))
                .map_err(|e| StoreError::io("starting the ledger writer thread", e))?
        };

        let shared = Arc::new(Shared {
            path: path.clone(),
            hub: Mutex::new(None),
            head,
            commits,
            tx: Some(tx),
            writer: Some(writer),
            engine: Some(Engine {
                db,
                log,
                blobs,
                _lock: lock,
            }),
        });
        open.insert(path.clone(), Arc::downgrade(&shared));
        let hub = crate::hub::HubServer::start(&path, Arc::downgrade(&shared));
        *shared.hub.lock().unwrap_or_else(|p| p.into_inner()) = hub;
        Ok(SledStore { shared })
    }

    /// A handle from the hub's weak reference, while the ledger is still open.
    pub(crate) fn from_weak(shared: &Weak<Shared>) -> Option<SledStore> {
        shared.upgrade().map(|shared| SledStore { shared })
    }

    /// Like [`SledStore::open`], but while another process holds the ledger, retries until
    /// `timeout` has passed (then returns its [`StoreError::Locked`]).
    pub fn open_waiting(
        path: impl AsRef<Path>,
        timeout: Duration,
    ) -> Result<SledStore, StoreError> {
        let deadline = Instant::now() + timeout;
        loop {
            match Self::open(path.as_ref()) {
                Err(StoreError::Locked { .. }) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                other => return other,
            }
        }
    }

    /// How many commit groups (each one `flush`) this process has made durable since the
    /// ledger was opened; appends divided by this is the average group size.
    pub fn commit_groups(&self) -> u64 {
        self.shared.commits.load(Ordering::Relaxed)
    }

    /// The ledger directory (canonical).
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    fn engine(&self) -> Result<&Engine, StoreError> {
        self.shared.engine.as_ref().ok_or(StoreError::Closed)
    }

    /// The raw sled trees `(log, blobs)`, so tests can tamper with the real on-disk bytes.
    /// Key layout: see the [module docs](self) and [`SledStore::record_key_for_tests`].
    #[cfg(feature = "test-support")]
    #[doc(hidden)]
    pub fn raw_trees_for_tests(&self) -> Result<(sled::Tree, sled::Tree), StoreError> {
        let engine = self.engine()?;
        Ok((engine.log.clone(), engine.blobs.clone()))
    }

    /// The `log` tree key of record `seq`.
    #[cfg(feature = "test-support")]
    #[doc(hidden)]
    pub fn record_key_for_tests(seq: u64) -> [u8; 9] {
        record_key(seq)
    }

    /// The `log` tree key of the stored head.
    #[cfg(feature = "test-support")]
    #[doc(hidden)]
    pub const HEAD_KEY_FOR_TESTS: &'static [u8] = HEAD_KEY;
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Hold the registry while closing, so a concurrent `open` of this path waits until the
        // sled files and our lock are released instead of failing on them.
        let mut open = registry();
        if open.get(&self.path).is_some_and(|w| w.strong_count() == 0) {
            open.remove(&self.path);
        }
        // No other process reaches the ledger once this one lets go of it.
        drop(self.hub.get_mut().unwrap_or_else(|p| p.into_inner()).take());
        // Closing the channel ends the writer after it has answered everything queued.
        drop(self.tx.take());
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
        if let Some(engine) = self.engine.take() {
            // Appends are already durable; this covers blobs stored since the last append.
            let _ = engine.db.flush();
            drop(engine);
        }
    }
}

/// How long [`open_sled`] waits for a just-closed sled instance of this process to let go.
const SLED_RELEASE_WAIT: Duration = Duration::from_secs(10);

/// Opens the sled database, given that we hold the ledger's lock file.
///
/// Holding our lock means no other Lockplane process has the ledger, yet sled may still refuse:
/// after the last handle of a sled database is dropped, sled's background threads finish
/// pending I/O and only then close the file that carries sled's own lock. So a lock failure is
/// retried for a while before it is reported (then as held by an unidentified process: some
/// program opened the sled files without going through Lockplane).
fn open_sled(path: &Path) -> Result<sled::Db, StoreError> {
    if !path.join(SLED_DIR_NAME).exists() {
        create_sled(path)?;
    }
    let deadline = Instant::now() + SLED_RELEASE_WAIT;
    loop {
        match sled::Config::new().path(path.join(SLED_DIR_NAME)).open() {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(io)) if io.to_string().contains("could not acquire lock") => {
                if Instant::now() >= deadline {
                    return Err(StoreError::Locked {
                        path: path.to_path_buf(),
                        holder: Holder::default(),
                    });
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(other) => return Err(StoreError::backend("opening the sled database", other)),
        }
    }
}

/// Creates the sled database under a temporary name and moves it into place only once sled
/// has written and flushed its files. sled 0.34 reports `Corruption` on opening a database whose
/// creation was cut short (a process killed while sled wrote its first files); this way a kill
/// during creation leaves only the temporary directory, which the next open discards (it can
/// hold nothing acknowledged). The caller holds the ledger's lock file, so no other process
/// creates concurrently.
fn create_sled(path: &Path) -> Result<(), StoreError> {
    let creating = path.join(format!("{SLED_DIR_NAME}.creating"));
    if creating.exists() {
        fs::remove_dir_all(&creating).map_err(|e| {
            StoreError::io(format!("removing the unfinished {}", creating.display()), e)
        })?;
    }
    {
        let db = sled::Config::new()
            .path(&creating)
            .open()
            .map_err(|e| StoreError::backend("creating the sled database", e))?;
        for tree in [LOG_TREE, BLOB_TREE] {
            db.open_tree(tree)
                .map_err(|e| StoreError::backend("creating the ledger trees", e))?;
        }
        db.flush()
            .map_err(|e| StoreError::backend("flushing the new sled database", e))?;
    }
    let target = path.join(SLED_DIR_NAME);
    fs::rename(&creating, &target)
        .map_err(|e| StoreError::io(format!("moving the new ledger to {}", target.display()), e))?;
    // The rename is durable once the directory holding it is synced.
    fs::File::open(path)
        .and_then(|dir| dir.sync_all())
        .map_err(|e| StoreError::io(format!("syncing {}", path.display()), e))
}

fn read_head(log: &sled::Tree) -> Result<HeadState, StoreError> {
    let stored = log
        .get(HEAD_KEY)
        .map_err(|e| StoreError::backend("reading the head", e))?;
    Ok(match stored {
        Some(bytes) => match decode_head(&bytes) {
            Ok(head) => HeadState { head, broken: None },
            Err(e) => HeadState {
                head: Head::GENESIS,
                broken: Some(format!("stored head is unreadable: {e}")),
            },
        },
        None => {
            let any_record = log
                .scan_prefix([RECORD_PREFIX])
                .next()
                .transpose()
                .map_err(|e| StoreError::backend("reading the log", e))?
                .is_some();
            HeadState {
                head: Head::GENESIS,
                broken: any_record.then(|| "stored head is missing but records exist".into()),
            }
        }
    })
}

fn record_key(seq: u64) -> [u8; 9] {
    let mut key = [RECORD_PREFIX; 9];
    key[1..].copy_from_slice(&seq.to_be_bytes());
    key
}

fn seq_of_record_key(key: &[u8]) -> Option<u64> {
    match key {
        [RECORD_PREFIX, rest @ ..] => Some(u64::from_be_bytes(rest.try_into().ok()?)),
        _ => None,
    }
}

fn stream_prefix(stream: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(9 + stream.len() + 8);
    key.push(STREAM_PREFIX);
    key.extend_from_slice(&(stream.len() as u64).to_be_bytes());
    key.extend_from_slice(stream.as_bytes());
    key
}

fn stream_key(stream: &str, seq: u64) -> Vec<u8> {
    let mut key = stream_prefix(stream);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// The single writer: see "Group commit" in the module docs.
fn run_writer(
    rx: mpsc::Receiver<Request>,
    db: sled::Db,
    log: sled::Tree,
    shared_head: Arc<Mutex<HeadState>>,
    commits: Arc<AtomicU64>,
) {
    let (mut head, mut poisoned) = {
        let state = lock_head(&shared_head);
        (state.head, state.broken.clone())
    };
    let mut group = Vec::new();
    while let Ok(first) = rx.recv() {
        group.push(first);
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(request) => group.push(request),
                Err(_) => break,
            }
        }

        if let Some(reason) = &poisoned {
            for request in group.drain(..) {
                let _ = request
                    .reply
                    .send(Err(StoreError::Poisoned(reason.clone())));
            }
            continue;
        }

        let group_start = head;
        let mut batch = sled::Batch::default();
        let mut replies = Vec::with_capacity(group.len());
        for request in group.drain(..) {
            if let Some(expected) = request.expected {
                if expected != head {
                    let conflict = StoreError::Conflict {
                        expected,
                        actual: head,
                    };
                    replies.push((request.reply, Err(conflict)));
                    continue;
                }
            }
            let (records, new_head) = chain_batch(head, request.batch);
            for record in records {
                batch.insert(&stream_key(&record.stream, record.seq)[..], &[][..]);
                batch.insert(&record_key(record.seq)[..], record.bytes);
            }
            head = new_head;
            replies.push((request.reply, Ok(new_head)));
        }

        if head != group_start {
            batch.insert(HEAD_KEY, encode_head(&head));
            let written = log
                .apply_batch(batch)
                .map_err(|e| e.to_string())
                .and_then(|()| db.flush().map(drop).map_err(|e| e.to_string()));
            if let Err(reason) = written {
                // The batch may or may not reach disk; acknowledging nothing and refusing
                // further appends keeps every acknowledgement true. Reopening recovers.
                let reason = format!("writing to the ledger failed: {reason}");
                for (reply, _) in replies {
                    let _ = reply.send(Err(StoreError::Poisoned(reason.clone())));
                }
                poisoned = Some(reason);
                continue;
            }
            lock_head(&shared_head).head = head;
            commits.fetch_add(1, Ordering::Relaxed);
        }
        for (reply, outcome) in replies {
            let _ = reply.send(outcome);
        }
    }
}

impl Store for SledStore {
    fn append(&self, expected: Option<Head>, batch: Vec<NewRecord>) -> Result<Head, StoreError> {
        let tx = self.shared.tx.as_ref().ok_or(StoreError::Closed)?;
        let (reply, outcome) = mpsc::sync_channel(1);
        tx.send(Request {
            expected,
            batch,
            reply,
        })
        .map_err(|_| StoreError::Closed)?;
        outcome.recv().map_err(|_| StoreError::Closed)?
    }

    fn head(&self) -> Result<Head, StoreError> {
        let state = lock_head(&self.shared.head);
        match &state.broken {
            Some(reason) => Err(StoreError::Corrupt {
                seq: None,
                reason: reason.clone(),
            }),
            None => Ok(state.head),
        }
    }

    fn read_raw(&self, seqs: Range<u64>) -> Result<Vec<RawRecord>, StoreError> {
        if seqs.is_empty() {
            return Ok(Vec::new());
        }
        let log = &self.engine()?.log;
        log.range(record_key(seqs.start)..record_key(seqs.end))
            .map(|entry| {
                let (key, value) = entry.map_err(|e| StoreError::backend("reading records", e))?;
                let seq = seq_of_record_key(&key).ok_or_else(|| StoreError::Corrupt {
                    seq: None,
                    reason: format!("malformed record key {}", hex::encode(&key)),
                })?;
                Ok(RawRecord {
                    seq,
                    bytes: value.to_vec(),
                })
            })
            .collect()
    }

    fn read_stream(
        &self,
        stream: &str,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        let log = &self.engine()?.log;
        // Records past the acknowledged head may be mid-commit; don't expose them.
        let head = lock_head(&self.shared.head).head.seq;
        let prefix = stream_prefix(stream);
        let mut out = Vec::new();
        for entry in log.range(stream_key(stream, from_seq)..) {
            let (key, _) = entry.map_err(|e| StoreError::backend("reading the stream index", e))?;
            let Some(seq_bytes) = key.strip_prefix(&prefix[..]) else {
                break;
            };
            let seq = <[u8; 8]>::try_from(seq_bytes)
                .map(u64::from_be_bytes)
                .map_err(|_| StoreError::Corrupt {
                    seq: None,
                    reason: format!("malformed stream index key {}", hex::encode(&key)),
                })?;
            if seq > head || out.len() >= limit {
                break;
            }
            let bytes = log
                .get(record_key(seq))
                .map_err(|e| StoreError::backend("reading a record", e))?
                .ok_or_else(|| StoreError::Corrupt {
                    seq: Some(seq),
                    reason: format!("stream {stream:?} index lists a missing record"),
                })?;
            let record = decode_raw(RawRecord {
                seq,
                bytes: bytes.to_vec(),
            })?;
            if record.stream != stream {
                return Err(StoreError::Corrupt {
                    seq: Some(seq),
                    reason: format!("stream {stream:?} index lists a record of another stream"),
                });
            }
            out.push(record);
        }
        Ok(out)
    }

    fn put_blob(&self, bytes: &[u8]) -> Result<BlobHash, StoreError> {
        let blobs = &self.engine()?.blobs;
        let hash = sha3_256(bytes);
        let existing = blobs
            .get(hash.0)
            .map_err(|e| StoreError::backend("reading a blob", e))?;
        // Rewriting when the stored copy differs repairs a damaged blob with the genuine bytes.
        if existing.as_deref() != Some(bytes) {
            blobs
                .insert(hash.0, bytes)
                .map_err(|e| StoreError::backend("storing a blob", e))?;
        }
        Ok(hash)
    }

    fn read_blob_raw(&self, hash: &BlobHash) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .engine()?
            .blobs
            .get(hash.0)
            .map_err(|e| StoreError::backend("reading a blob", e))?
            .map(|v| v.to_vec()))
    }
}

/// The `flock`ed holder file that turns "sled is locked" into "held by pid N (command)".
struct LockFile {
    file: File,
}

impl LockFile {
    fn acquire(dir: &Path) -> Result<LockFile, StoreError> {
        let path = dir.join(LOCK_FILE_NAME);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| StoreError::io(format!("opening {}", path.display()), e))?;
        if let Err(e) = try_lock_exclusive(&file) {
            if e.kind() == std::io::ErrorKind::WouldBlock {
                return Err(StoreError::Locked {
                    path: dir.to_path_buf(),
                    holder: read_holder(&mut file),
                });
            }
            return Err(StoreError::io(format!("locking {}", path.display()), e));
        }
        let command: Vec<String> = std::env::args_os()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let text = format!(
            "pid: {}\ncommand: {}\n",
            std::process::id(),
            command.join(" ").replace('\n', " ")
        );
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(text.as_bytes()))
            .map_err(|e| StoreError::io(format!("writing {}", path.display()), e))?;
        Ok(LockFile { file })
    }
}

impl Drop for LockFile {
    fn drop(&mut self) {
        // Clear the holder so nobody reads a stale name; closing the file releases the lock.
        let _ = self.file.set_len(0);
    }
}

fn read_holder(file: &mut File) -> Holder {
    let mut text = String::new();
    // The holder may not have written its name yet; an unknown holder is still an answer.
    let _ = file.read_to_string(&mut text);
    let mut holder = Holder::default();
    for line in text.lines() {
        if let Some(pid) = line.strip_prefix("pid: ") {
            holder.pid = pid.trim().parse().ok();
        } else if let Some(cmd) = line.strip_prefix("command: ") {
            holder.command = Some(cmd.to_owned());
        }
    }
    holder
}

#[cfg(unix)]
fn try_lock_exclusive(file: &File) -> std::io::Result<()> {
    use std::os::unix::io::AsRawFd;
    // SAFETY: flock only reads the descriptor, which `file` keeps open for the call's duration.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(unix))]
fn try_lock_exclusive(_file: &File) -> std::io::Result<()> {
    // sled's own lock still keeps a second process out; only the holder's name is lost.
    Ok(())
}
