//! The stored form of the log: records, their framing in a segment, and
//! segment file names.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use prost::Message as _;

use super::{io_err, WalError};
use crate::raft::{Entry, EntryKind, HardState, SnapshotMeta, Voting};
use crate::storage::fs::LogFs;

/// One record of the log, as stored.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WalRecord {
    /// What the record holds.
    #[prost(oneof = "Record", tags = "1, 2, 3")]
    pub record: Option<Record>,
}

/// The kinds of record.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Record {
    /// A log entry.
    #[prost(message, tag = "1")]
    Entry(StoredEntry),
    /// The hard state.
    #[prost(message, tag = "2")]
    HardState(StoredHardState),
    /// The start of the log after a compaction or snapshot install.
    #[prost(message, tag = "3")]
    Snapshot(StoredSnapshot),
}

/// A log entry as stored.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StoredEntry {
    /// The index.
    #[prost(uint64, tag = "1")]
    pub index: u64,
    /// The term.
    #[prost(uint64, tag = "2")]
    pub term: u64,
    /// True for a leader's no-op.
    #[prost(bool, tag = "3")]
    pub noop: bool,
    /// The command.
    #[prost(bytes = "bytes", tag = "4")]
    pub data: Bytes,
    /// True for a configuration.
    #[prost(bool, tag = "5")]
    pub config: bool,
}

/// The hard state as stored.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StoredHardState {
    /// The current term.
    #[prost(uint64, tag = "1")]
    pub term: u64,
    /// The vote plus one; 0 for none.
    #[prost(uint32, tag = "2")]
    pub vote_plus_one: u32,
    /// 0 enabled, 1 awaiting peers, 2 awaiting a leader.
    #[prost(uint32, tag = "3")]
    pub voting: u32,
    /// With voting 2: the minimum term of that leader.
    #[prost(uint64, tag = "4")]
    pub min_term: u64,
}

/// A snapshot point as stored.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StoredSnapshot {
    /// The last index covered.
    #[prost(uint64, tag = "1")]
    pub index: u64,
    /// Its term.
    #[prost(uint64, tag = "2")]
    pub term: u64,
    /// The configuration's voters as of `index` (an ordinal bit set; with
    /// `learners` both 0: none recorded).
    #[prost(fixed64, tag = "3")]
    pub voters: u64,
    /// The configuration's learners.
    #[prost(fixed64, tag = "4")]
    pub learners: u64,
}

impl From<&Entry> for Record {
    fn from(e: &Entry) -> Self {
        Record::Entry(StoredEntry {
            index: e.index,
            term: e.term,
            noop: e.kind == EntryKind::Noop,
            data: e.data.clone(),
            config: e.kind == EntryKind::Config,
        })
    }
}

impl From<HardState> for Record {
    fn from(hs: HardState) -> Self {
        let (voting, min_term) = match hs.voting {
            Voting::Enabled => (0, 0),
            Voting::AwaitingPeers => (1, 0),
            Voting::AwaitingLeader { min_term } => (2, min_term),
        };
        Record::HardState(StoredHardState {
            term: hs.term,
            vote_plus_one: hs.vote.map_or(0, |v| v + 1),
            voting,
            min_term,
        })
    }
}

impl From<SnapshotMeta> for Record {
    fn from(s: SnapshotMeta) -> Self {
        let (voters, learners) = s.membership.to_bits();
        Record::Snapshot(StoredSnapshot {
            index: s.index,
            term: s.term,
            voters,
            learners,
        })
    }
}

const SEGMENT_SUFFIX: &str = ".wal";
/// Larger than any record can be (an entry is at most a request message);
/// a length beyond it is damage, not a record.
pub(super) const MAX_RECORD_BYTES: usize = 256 << 20;

/// The file name of segment number `seq`: names sort as numbers do.
pub(super) fn segment_name(seq: u64) -> String {
    format!("{seq:016x}{SEGMENT_SUFFIX}")
}

/// The segments in `dir`, oldest first.
pub(super) fn list_segments(fs: &dyn LogFs, dir: &Path) -> Result<Vec<(u64, PathBuf)>, WalError> {
    let mut segments = Vec::new();
    for name in fs.list(dir).map_err(io_err(dir))? {
        let Some(hex) = name.strip_suffix(SEGMENT_SUFFIX) else {
            continue;
        };
        if let Ok(seq) = u64::from_str_radix(hex, 16) {
            segments.push((seq, dir.join(&name)));
        }
    }
    segments.sort();
    Ok(segments)
}

/// Appends `record` to `buf`, framed.
pub(super) fn frame(buf: &mut Vec<u8>, record: Record) {
    let payload = WalRecord {
        record: Some(record),
    }
    .encode_to_vec();
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    buf.extend_from_slice(&payload);
}

/// The first byte of every payload: the protobuf tag of one of
/// [`WalRecord`]'s fields 1 to 3, length-delimited.
pub(super) const RECORD_TAGS: [u8; 3] = [0x0a, 0x12, 0x1a];
