//! The write-ahead log's error type.

use std::io;
use std::path::PathBuf;

use crate::Lsn;

/// Everything that can go wrong in the write-ahead log.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// A system call on a log file or directory failed.
    #[error("i/o error on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// Bytes on disk that cannot be a torn write; recovery refuses to guess.
    #[error(
        "write-ahead log is corrupt in {} at byte {offset}: {reason}; refusing to start \
         (move the file aside or restore from a replica)",
        path.display()
    )]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },

    /// The end of the log is damaged the way a torn write leaves it, but records there were
    /// reported durable: cutting them would lose acknowledged data, so recovery refuses and
    /// changes nothing.
    #[error(
        "write-ahead log is damaged in {} at byte {}: {}; records from lsn {} on do not read back, \
         yet every record up to lsn {durable_through} was reported durable, so they are lost \
         data. The last intact record is {}. Nothing was changed",
        damage.path.display(),
        damage.offset,
        damage.reason,
        damage.first_lost_lsn,
        last_intact_lsn.map_or("none (the log is empty before it)".to_owned(), |l| format!("lsn {l}"))
    )]
    LostDurable {
        damage: Box<crate::Damage>,
        last_intact_lsn: Option<Lsn>,
        durable_through: Lsn,
    },

    /// An append did not continue the log with the next consecutive lsn.
    #[error("append expected lsn {expected} but got lsn {got}; records must have consecutive lsns")]
    Gap { expected: Lsn, got: Lsn },

    /// A record's payload is over the format's limit.
    #[error(
        "record at lsn {lsn} has a payload of {payload_bytes} bytes, over the limit of \
         {payload_bytes_max} bytes"
    )]
    PayloadTooLarge {
        lsn: Lsn,
        payload_bytes: u64,
        payload_bytes_max: u64,
    },

    /// The log shut down before the request could be served.
    #[error("write-ahead log is closed")]
    Closed,

    /// An earlier fsync or write failure left the on-disk state unknown, so
    /// the log refuses everything that would claim durability.
    #[error(
        "write-ahead log stopped after an earlier failure ({reason}); restart the process to \
         recover from what is on disk"
    )]
    Poisoned { reason: String },
}

impl WalError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> WalError {
        WalError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corrupt(
        path: impl Into<PathBuf>,
        offset: u64,
        reason: impl Into<String>,
    ) -> WalError {
        WalError::Corrupt {
            path: path.into(),
            offset,
            reason: reason.into(),
        }
    }

    /// A copy for each waiter of a shared group-commit sync; `io::Error` is
    /// not `Clone`, so the copy keeps its kind and message.
    pub(crate) fn duplicate(&self) -> WalError {
        match self {
            WalError::Io { path, source } => WalError::Io {
                path: path.clone(),
                source: io::Error::new(source.kind(), source.to_string()),
            },
            WalError::Corrupt {
                path,
                offset,
                reason,
            } => WalError::Corrupt {
                path: path.clone(),
                offset: *offset,
                reason: reason.clone(),
            },
            WalError::LostDurable {
                damage,
                last_intact_lsn,
                durable_through,
            } => WalError::LostDurable {
                damage: damage.clone(),
                last_intact_lsn: *last_intact_lsn,
                durable_through: *durable_through,
            },
            WalError::Gap { expected, got } => WalError::Gap {
                expected: *expected,
                got: *got,
            },
            WalError::PayloadTooLarge {
                lsn,
                payload_bytes,
                payload_bytes_max,
            } => WalError::PayloadTooLarge {
                lsn: *lsn,
                payload_bytes: *payload_bytes,
                payload_bytes_max: *payload_bytes_max,
            },
            WalError::Closed => WalError::Closed,
            WalError::Poisoned { reason } => WalError::Poisoned {
                reason: reason.clone(),
            },
        }
    }
}
