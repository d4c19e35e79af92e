//! plinth's segmented write-ahead log: the durable home of the Raft log, with group commit.
//!
//! Records `(lsn, payload)` are appended with consecutive lsns (the Raft log
//! index) into segment files named after their first lsn. [`Wal::append`]
//! writes without syncing; [`Wal::flush_then`] lets many appenders share one
//! fdatasync done by a background flusher thread. [`Wal::open`] recovers the
//! log, cutting a torn tail and refusing any other damage. See
//! `docs/design/wal.md` for the guarantees and the on-disk format.
//!
//! The crate is synchronous std code; async callers wrap it.

mod error;
#[cfg(feature = "fault-injection")]
mod fault;
mod files;
mod flusher;
mod record;
mod recovery;
mod segment;
mod wal;

pub use error::WalError;
pub use files::{read_file, sync_dir, write_file_atomic};
pub use flusher::IdleSync;
pub use record::PAYLOAD_BYTES_MAX;
pub use recovery::{Damage, Inspection, cut, inspect};
pub use wal::{Wal, WalOptions};

/// Log sequence number: the Raft log index of a record.
pub type Lsn = u64;
