//! The write-ahead log: the Raft log and hard state, made durable with
//! `fdatasync`.
//!
//! sled's `flush` ends in `sync_file_range`, which reaches neither the device
//! cache nor the file's metadata, and sled writes large values to blob files
//! it never syncs. A log that acknowledges writes needs a real durable point,
//! so the log and the vote live here, in append-only segment files of our own,
//! and sled holds only the applied state (see `crate::state`).
//!
//! A segment is a sequence of records, each framed as
//! `[payload length: u32 LE][crc32 of payload: u32 LE][payload]`, the payload a
//! protobuf-encoded [`WalRecord`]. Replaying the records in order rebuilds the
//! durable state: a hard-state record replaces the hard state; a snapshot
//! record moves the start of the log; an entry record at index `i` drops every
//! entry at or after `i` and appends itself (which is how a follower's
//! truncation is made durable). One [`Wal::append`] is one write and one
//! `fdatasync`, however many records it holds: that is the group commit.
//!
//! Compaction writes a new segment holding the current hard state, the new
//! snapshot point and the retained entries, makes it durable, and deletes the
//! older segments. A crash at any point leaves either the old segments, or the
//! old and the new (which replay to the same state), or the new alone.
//!
//! A torn record at the end of the last segment (a crash in the middle of a
//! write that was never acknowledged) is cut off at start-up. A bad record
//! anywhere else is corruption and refuses start-up.
//!
//! - `format`: the records and their framing, and segment file names.
//! - `recovery`: replaying the segments at start-up, cutting off a torn
//!   tail, and telling a torn tail from corruption.
//! - `writer`: [`Wal`], which appends with one `fdatasync` per group and
//!   compacts.

mod format;
mod recovery;
#[cfg(test)]
mod tests;
mod writer;

use std::io;
use std::path::{Path, PathBuf};

pub use format::{Record, StoredEntry, StoredHardState, StoredSnapshot, WalRecord};
pub use recovery::WalState;
pub use writer::Wal;

/// Errors of the write-ahead log.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// The disk failed.
    #[error("write-ahead log I/O on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A record that is not at the torn end of the log fails its checksum or
    /// does not decode.
    #[error("write-ahead log {path} is corrupt at byte {offset}: {reason}. The node will not start on a damaged log: entries and votes after that point would be lost silently. To recover, empty this pod's data dir (or delete its PersistentVolumeClaim): the pod then rejoins as a member whose volume was lost, votes only once it has caught up, and is brought back by a snapshot from the leader")]
    Corrupt {
        /// The segment.
        path: PathBuf,
        /// Where the bad record starts.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> WalError + '_ {
    move |source| WalError::Io {
        path: path.to_path_buf(),
        source,
    }
}
