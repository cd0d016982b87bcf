//! The store's typed errors.

use std::path::PathBuf;

use crate::record::Head;

/// Who holds a ledger another process has open, as read from its lock file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Holder {
    /// The holder's process id, if it wrote one.
    pub pid: Option<u32>,
    /// The holder's command line, if it wrote one.
    pub command: Option<String>,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.pid, &self.command) {
            (Some(pid), Some(cmd)) => write!(f, "pid {pid} ({cmd})"),
            (Some(pid), None) => write!(f, "pid {pid}"),
            (None, Some(cmd)) => write!(f, "an unknown pid ({cmd})"),
            (None, None) => f.write_str("an unidentified process"),
        }
    }
}

/// Everything a [`crate::Store`] operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The append's expected head is not the log's head: another writer appended first.
    /// Nothing was written; re-read what changed and retry against `actual`.
    #[error("append conflict: expected head {expected}, but the log's head is {actual}")]
    Conflict {
        /// The head the appender expected.
        expected: Head,
        /// The log's head when the append was considered.
        actual: Head,
    },

    /// Another process has the ledger open (sled allows one process per database).
    #[error(
        "ledger at {} is held by {holder}; reach it through that process \
         (e.g. the running Lockplane server), or wait for it to exit",
        path.display()
    )]
    Locked {
        /// The ledger directory.
        path: PathBuf,
        /// The holder, as it described itself in the lock file.
        holder: Holder,
    },

    /// An operating-system I/O failure outside the storage engine (lock file, directory).
    #[error("{context}: {source}")]
    Io {
        /// What the store was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The storage engine (sled, or another backend's) failed.
    #[error("storage backend failed while {context}: {source}")]
    Backend {
        /// What the store was doing.
        context: &'static str,
        /// The backend's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// Stored data could not be read back as what it should be. Run [`crate::verify`] for the
    /// full picture; this only reports what the failing read hit.
    #[error("corrupt ledger data{}: {reason}", seq.map(|s| format!(" at seq {s}")).unwrap_or_default())]
    Corrupt {
        /// The record concerned, when there is one.
        seq: Option<u64>,
        /// What is wrong.
        reason: String,
    },

    /// A previous write failed in a way that leaves the outcome on disk unknown, so this handle
    /// refuses further appends; reopen the ledger (recovery decides what was kept).
    #[error("ledger refuses appends after an earlier failure: {0}")]
    Poisoned(String),

    /// The process holding the ledger (reached through its hub, see [`crate::hub`]) failed
    /// the operation or went away; the message says which and what to do.
    #[error("ledger holder: {0}")]
    Remote(String),

    /// The store's writer has shut down.
    #[error("ledger writer has stopped")]
    Closed,

    /// Postgres refused a statement of a [`crate::PgStore`], or the connection to it failed
    /// (then `sqlstate` is `None`). Nothing was written by the operation that failed, except
    /// as [`StoreError::CommitUnknown`] says.
    #[error(
        "Postgres failed while {context}: {message}{}",
        sqlstate.as_ref().map(|c| format!(" (SQLSTATE {c})")).unwrap_or_default()
    )]
    Postgres {
        /// What the store was doing.
        context: &'static str,
        /// The server's SQLSTATE, when the server reported the error.
        sqlstate: Option<String>,
        /// The server's message (with its detail and hint), or the client's description of
        /// the connection failure.
        message: String,
    },

    /// The connection to Postgres broke while an append's `COMMIT` was in flight: the append
    /// may or may not have landed. Nothing was acknowledged; read the head to find out (an
    /// append retried with the same expected head gets [`StoreError::Conflict`] if it did).
    #[error(
        "the outcome of the append is unknown: the connection to Postgres broke while COMMIT \
         was in flight ({message}); read the head to see whether it landed"
    )]
    CommitUnknown {
        /// What the client saw.
        message: String,
    },
}

impl StoreError {
    /// Wraps a backend error.
    pub fn backend(
        context: &'static str,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        StoreError::Backend {
            context,
            source: Box::new(source),
        }
    }

    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        StoreError::Io {
            context: context.into(),
            source,
        }
    }
}
