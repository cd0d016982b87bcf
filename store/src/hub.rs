//! One hub per sled ledger: the process that holds a ledger directory serves it to the others.
//!
//! sled lets one process open a database, yet a team runs `lockplane serve`, CLI commands, a
//! second MCP client window and an embedding program on the same ledger. So the process that
//! holds a ledger (any [`SledStore`]) also listens on a Unix socket in the ledger directory,
//! [`HUB_SOCKET_NAME`], and carries out the [`Store`] operations of every other process that
//! opens the same directory. [`open_dir`] is how every caller opens a ledger directory: it
//! takes the ledger when nobody holds it, and otherwise joins the holder over the socket.
//!
//! Invariants:
//!
//! - **One writer.** Appends arriving over the socket go to the holder's own writer thread,
//!   with the others of its process, so the chain cannot fork and group commit still applies.
//! - **Acknowledged means durable.** The holder replies only after its append returned, which
//!   is after sled's fsync.
//! - **Same user only.** The socket is created with mode 0600 inside the ledger directory.
//! - **No silent duplicates.** A read whose holder went away is retried on whoever holds the
//!   ledger next (this process, if nobody does); an append whose reply was lost is not
//!   retried when it expected no particular head (the error says the outcome is unknown);
//!   with an expected head, the retry is safe (it conflicts if the first one landed).
//!
//! The wire format is private to one build: length-prefixed rmp-serde frames, a version
//! exchanged first. This module does not authenticate beyond file permissions, does not
//! forward across machines (that is the Postgres backend's job), and does not serve
//! anything but the [`Store`] trait.

use std::io::{Read, Write};
use std::ops::Range;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{Holder, StoreError};
use crate::hash::{BlobHash, Hash};
use crate::record::{Head, NewRecord, RawRecord, Record};
use crate::sled_store::SledStore;
use crate::store::Store;

/// Name of the hub's Unix socket in a ledger directory.
pub const HUB_SOCKET_NAME: &str = "hub.sock";

/// Version of the frames below; a client and a holder of different builds refuse each other.
const PROTOCOL: u32 = 1;
/// A frame larger than this is refused (a blob is bounded by what a plan or catalog weighs).
const MAX_FRAME: usize = 512 * 1024 * 1024;
/// How long [`open_dir`] gives a holder that has the lock but no socket yet (it is starting).
const STARTING_GRACE: Duration = Duration::from_secs(3);

#[derive(Debug, Serialize, Deserialize)]
enum Request {
    Hello {
        version: u32,
    },
    Append {
        expected: Option<Head>,
        batch: Vec<NewRecord>,
    },
    Head,
    ReadRaw {
        start: u64,
        end: u64,
    },
    PutBlob(#[serde(with = "serde_bytes")] Vec<u8>),
    ReadBlobRaw(Hash),
    ReadStream {
        stream: String,
        from_seq: u64,
        limit: u64,
    },
}

#[derive(Debug, Serialize, Deserialize)]
enum Reply {
    Hello { version: u32, pid: u32 },
    Head(Head),
    Raw(Vec<(u64, serde_bytes::ByteBuf)>),
    Blob(Hash),
    MaybeBlob(Option<serde_bytes::ByteBuf>),
    Records(Vec<Record>),
    Conflict { expected: Head, actual: Head },
    Failed(String),
}

fn write_frame<T: Serialize>(stream: &mut UnixStream, value: &T) -> std::io::Result<()> {
    let bytes = rmp_serde::to_vec(value)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    let len = u32::try_from(bytes.len())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "frame too large"))?;
    stream.write_all(&len.to_be_bytes())?;
    stream.write_all(&bytes)?;
    stream.flush()
}

fn read_frame<T: for<'de> Deserialize<'de>>(stream: &mut UnixStream) -> std::io::Result<T> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame of {len} bytes is over the limit"),
        ));
    }
    let mut bytes = vec![0u8; len];
    stream.read_exact(&mut bytes)?;
    rmp_serde::from_slice(&bytes)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

// ---- the holder's side ----------------------------------------------------------------------

/// The listener a holder runs; stopped (and its socket removed) when dropped.
pub(crate) struct HubServer {
    socket: PathBuf,
    /// The listening socket's descriptor, owned by the acceptor thread until it exits; only
    /// used to wake it (`shutdown`), which works whatever happened to the socket's path.
    listener_fd: std::os::fd::RawFd,
    closing: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl HubServer {
    /// Serves `store` (the holder's own handle, kept weakly so the hub never keeps a ledger
    /// open) on the socket in `dir`. `None` when the socket cannot be made (a path too long
    /// for a Unix socket, a read-only directory): the ledger then works as before, held by
    /// one process.
    pub(crate) fn start(
        dir: &Path,
        store: std::sync::Weak<crate::sled_store::SharedHandle>,
    ) -> Option<HubServer> {
        let socket = dir.join(HUB_SOCKET_NAME);
        // We hold the ledger's lock: a socket file left here belongs to a holder that died.
        let _ = std::fs::remove_file(&socket);
        let listener = UnixListener::bind(&socket).ok()?;
        let listener_fd = std::os::fd::AsRawFd::as_raw_fd(&listener);
        let _ = std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600));
        let closing = Arc::new(AtomicBool::new(false));
        let stop = closing.clone();
        let acceptor = std::thread::Builder::new()
            .name("lockplane-ledger-hub".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else {
                        // A listener shut down fails every accept: don't spin on it.
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    };
                    let store = store.clone();
                    let _ = std::thread::Builder::new()
                        .name("lockplane-ledger-hub-conn".into())
                        .spawn(move || serve_connection(conn, store));
                }
            })
            .ok()?;
        Some(HubServer {
            socket,
            listener_fd,
            closing,
            acceptor: Some(acceptor),
        })
    }
}

impl Drop for HubServer {
    fn drop(&mut self) {
        self.closing.store(true, Ordering::SeqCst);
        // Wake the acceptor so it sees `closing`: shutting a listening socket down makes a
        // blocked accept(2) return at once.
        // SAFETY: the acceptor thread owns the listener and has not exited (it is joined just
        // below), so the descriptor is still the listener's; shutdown(2) only changes the
        // socket's state and touches no memory.
        unsafe {
            libc::shutdown(self.listener_fd, libc::SHUT_RDWR);
        }
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

fn serve_connection(mut conn: UnixStream, store: std::sync::Weak<crate::sled_store::SharedHandle>) {
    loop {
        let request: Request = match read_frame(&mut conn) {
            Ok(r) => r,
            Err(_) => return,
        };
        let reply = match SledStore::from_weak(&store) {
            None => Reply::Failed("the ledger's holder is closing it; try again".into()),
            Some(store) => answer(&store, request),
        };
        if write_frame(&mut conn, &reply).is_err() {
            return;
        }
    }
}

fn answer(store: &SledStore, request: Request) -> Reply {
    let failed = |e: StoreError| match e {
        StoreError::Conflict { expected, actual } => Reply::Conflict { expected, actual },
        other => Reply::Failed(other.to_string()),
    };
    match request {
        Request::Hello { .. } => Reply::Hello {
            version: PROTOCOL,
            pid: std::process::id(),
        },
        Request::Append { expected, batch } => store
            .append(expected, batch)
            .map_or_else(failed, Reply::Head),
        Request::Head => store.head().map_or_else(failed, Reply::Head),
        Request::ReadRaw { start, end } => store.read_raw(start..end).map_or_else(failed, |raw| {
            Reply::Raw(
                raw.into_iter()
                    .map(|r| (r.seq, serde_bytes::ByteBuf::from(r.bytes)))
                    .collect(),
            )
        }),
        Request::PutBlob(bytes) => store.put_blob(&bytes).map_or_else(failed, Reply::Blob),
        Request::ReadBlobRaw(hash) => store.read_blob_raw(&hash).map_or_else(failed, |b| {
            Reply::MaybeBlob(b.map(serde_bytes::ByteBuf::from))
        }),
        Request::ReadStream {
            stream,
            from_seq,
            limit,
        } => store
            .read_stream(
                &stream,
                from_seq,
                usize::try_from(limit).unwrap_or(usize::MAX),
            )
            .map_or_else(failed, Reply::Records),
    }
}

// ---- everyone else's side -------------------------------------------------------------------

/// A ledger directory, held here or reached through its holder's hub; see [`open_dir`].
pub struct DirLedger {
    path: PathBuf,
    backend: Mutex<Backend>,
}

enum Backend {
    Held(SledStore),
    Joined(Connection),
}

struct Connection {
    stream: UnixStream,
    holder_pid: u32,
}

impl std::fmt::Debug for DirLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirLedger")
            .field("path", &self.path)
            .field("held_here", &self.held_here())
            .finish_non_exhaustive()
    }
}

/// Opens the ledger in directory `path`: takes it when no process holds it (this process then
/// serves it to the others), otherwise joins the process that holds it through its hub. While
/// the holder is starting (lock taken, socket not yet there), waits up to `wait` (at least a
/// few seconds) before failing with [`StoreError::Locked`].
pub fn open_dir(path: impl AsRef<Path>, wait: Duration) -> Result<DirLedger, StoreError> {
    let path = path.as_ref().to_path_buf();
    let backend = open_backend(&path, wait)?;
    Ok(DirLedger {
        path,
        backend: Mutex::new(backend),
    })
}

fn open_backend(path: &Path, wait: Duration) -> Result<Backend, StoreError> {
    let deadline = Instant::now() + wait.max(STARTING_GRACE);
    loop {
        match SledStore::open(path) {
            Ok(store) => return Ok(Backend::Held(store)),
            Err(StoreError::Locked { path: p, holder }) => match join(path) {
                Ok(conn) => return Ok(Backend::Joined(conn)),
                Err(reason) if Instant::now() >= deadline => {
                    return Err(StoreError::Locked {
                        path: p,
                        holder: Holder {
                            command: Some(format!(
                                "{}; its hub did not answer: {reason}",
                                holder.command.as_deref().unwrap_or("a Lockplane process")
                            )),
                            ..holder
                        },
                    })
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            },
            Err(other) => return Err(other),
        }
    }
}

fn join(dir: &Path) -> Result<Connection, String> {
    let mut stream = UnixStream::connect(dir.join(HUB_SOCKET_NAME)).map_err(|e| e.to_string())?;
    write_frame(&mut stream, &Request::Hello { version: PROTOCOL }).map_err(|e| e.to_string())?;
    match read_frame::<Reply>(&mut stream).map_err(|e| e.to_string())? {
        Reply::Hello { version, pid } if version == PROTOCOL => Ok(Connection {
            stream,
            holder_pid: pid,
        }),
        Reply::Hello { version, pid } => Err(format!(
            "pid {pid} speaks hub protocol {version}, this build {PROTOCOL}: run the same \
             Lockplane version"
        )),
        other => Err(format!("unexpected hub greeting {other:?}")),
    }
}

impl DirLedger {
    /// The ledger directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether this process holds the ledger (and serves it to others), rather than reaching
    /// it through another process.
    pub fn held_here(&self) -> bool {
        matches!(*self.backend(), Backend::Held(_))
    }

    /// The pid of the process holding the ledger, when it is another one.
    pub fn holder_pid(&self) -> Option<u32> {
        match &*self.backend() {
            Backend::Held(_) => None,
            Backend::Joined(c) => Some(c.holder_pid),
        }
    }

    fn backend(&self) -> MutexGuard<'_, Backend> {
        // A panic mid-call leaves at worst a connection in an unknown state, which the next
        // call's I/O error replaces.
        self.backend.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `local` on a held ledger, or sends `request` to the holder. `retry_safe` says
    /// whether a request whose answer was lost may be sent again (to the next holder).
    fn call<T>(
        &self,
        retry_safe: bool,
        local: impl Fn(&SledStore) -> Result<T, StoreError>,
        request: impl Fn() -> Request,
        reply: impl Fn(Reply) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut backend = self.backend();
        for attempt in 0..2 {
            let conn = match &mut *backend {
                Backend::Held(store) => return local(store),
                Backend::Joined(conn) => conn,
            };
            let sent = write_frame(&mut conn.stream, &request());
            let outcome = match sent {
                Ok(()) => read_frame::<Reply>(&mut conn.stream).map_err(|e| (true, e)),
                Err(e) => Err((false, e)),
            };
            match outcome {
                Ok(Reply::Failed(message)) => return Err(StoreError::Remote(message)),
                Ok(Reply::Conflict { expected, actual }) => {
                    return Err(StoreError::Conflict { expected, actual })
                }
                Ok(answer) => return reply(answer),
                Err((maybe_done, e)) => {
                    let pid = conn.holder_pid;
                    if attempt == 1 || (maybe_done && !retry_safe) {
                        return Err(StoreError::Remote(format!(
                            "the ledger's holder (pid {pid}) went away: {e}; {}",
                            if maybe_done && !retry_safe {
                                "the outcome of this append is unknown: check `lockplane \
                                 audit log` before repeating it"
                            } else {
                                "run the command again"
                            }
                        )));
                    }
                    // The holder exited: whoever holds the ledger now (perhaps us) carries on.
                    *backend = open_backend(&self.path, Duration::ZERO)?;
                }
            }
        }
        Err(StoreError::Closed)
    }
}

fn unexpected<T>(reply: Reply) -> Result<T, StoreError> {
    Err(StoreError::Remote(format!(
        "unexpected hub reply {reply:?}"
    )))
}

impl Store for DirLedger {
    fn append(&self, expected: Option<Head>, batch: Vec<NewRecord>) -> Result<Head, StoreError> {
        self.call(
            expected.is_some(),
            |s| s.append(expected, batch.clone()),
            || Request::Append {
                expected,
                batch: batch.clone(),
            },
            |r| match r {
                Reply::Head(h) => Ok(h),
                other => unexpected(other),
            },
        )
    }

    fn head(&self) -> Result<Head, StoreError> {
        self.call(
            true,
            |s| s.head(),
            || Request::Head,
            |r| match r {
                Reply::Head(h) => Ok(h),
                other => unexpected(other),
            },
        )
    }

    fn read_raw(&self, seqs: Range<u64>) -> Result<Vec<RawRecord>, StoreError> {
        self.call(
            true,
            |s| s.read_raw(seqs.clone()),
            || Request::ReadRaw {
                start: seqs.start,
                end: seqs.end,
            },
            |r| match r {
                Reply::Raw(raw) => Ok(raw
                    .into_iter()
                    .map(|(seq, bytes)| RawRecord {
                        seq,
                        bytes: bytes.into_vec(),
                    })
                    .collect()),
                other => unexpected(other),
            },
        )
    }

    fn put_blob(&self, bytes: &[u8]) -> Result<BlobHash, StoreError> {
        self.call(
            true,
            |s| s.put_blob(bytes),
            || Request::PutBlob(bytes.to_vec()),
            |r| match r {
                Reply::Blob(h) => Ok(h),
                other => unexpected(other),
            },
        )
    }

    fn read_blob_raw(&self, hash: &BlobHash) -> Result<Option<Vec<u8>>, StoreError> {
        self.call(
            true,
            |s| s.read_blob_raw(hash),
            || Request::ReadBlobRaw(*hash),
            |r| match r {
                Reply::MaybeBlob(b) => Ok(b.map(serde_bytes::ByteBuf::into_vec)),
                other => unexpected(other),
            },
        )
    }

    fn read_stream(
        &self,
        stream: &str,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        self.call(
            true,
            |s| s.read_stream(stream, from_seq, limit),
            || Request::ReadStream {
                stream: stream.to_owned(),
                from_seq,
                limit: limit as u64,
            },
            |r| match r {
                Reply::Records(records) => Ok(records),
                other => unexpected(other),
            },
        )
    }
}
