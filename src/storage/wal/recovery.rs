//! Start-up: replaying the segments into the durable state, and cutting
//! off the torn end of the last one (a write that never completed, so was
//! never acknowledged) while refusing damage anywhere else.

use std::path::{Path, PathBuf};

use prost::Message as _;

use super::format::{list_segments, Record, WalRecord, MAX_RECORD_BYTES, RECORD_TAGS};
use super::{io_err, WalError};
use crate::raft::{Entry, EntryKind, HardState, Index, SnapshotMeta, Voting};
use crate::storage::fs::LogFs;

/// What the log holds after replay.
#[derive(Clone, Debug)]
pub struct WalState {
    /// The hard state (fresh if none was ever written).
    pub hard_state: HardState,
    /// The start of the log.
    pub snapshot: SnapshotMeta,
    /// The entries after the snapshot.
    pub entries: Vec<Entry>,
}

impl WalState {
    fn new() -> Self {
        WalState {
            hard_state: HardState::fresh(),
            snapshot: SnapshotMeta::default(),
            entries: Vec::new(),
        }
    }

    fn last_index(&self) -> Index {
        self.snapshot.index + self.entries.len() as Index
    }

    fn apply(&mut self, record: Record) -> Result<(), String> {
        match record {
            Record::HardState(h) => {
                let voting = match h.voting {
                    0 => Voting::Enabled,
                    1 => Voting::AwaitingPeers,
                    2 => Voting::AwaitingLeader {
                        min_term: h.min_term,
                    },
                    other => return Err(format!("unknown voting state {other}")),
                };
                self.hard_state = HardState {
                    term: h.term,
                    vote: h.vote_plus_one.checked_sub(1),
                    voting,
                };
            }
            Record::Snapshot(s) => {
                let keeps_entries = s.index >= self.snapshot.index
                    && s.index <= self.last_index()
                    && self.term(s.index) == Some(s.term);
                if keeps_entries {
                    let drop = (s.index - self.snapshot.index) as usize;
                    self.entries.drain(..drop);
                } else {
                    self.entries.clear();
                }
                self.snapshot = SnapshotMeta {
                    index: s.index,
                    term: s.term,
                    membership: crate::raft::Membership::from_bits(s.voters, s.learners),
                };
            }
            Record::Entry(e) => {
                if e.index <= self.snapshot.index {
                    // Covered by a later snapshot record of a compaction
                    // that rewrote this entry; nothing to do.
                    return Ok(());
                }
                if e.index > self.last_index() + 1 {
                    return Err(format!(
                        "entry {} after a gap (log ends at {})",
                        e.index,
                        self.last_index()
                    ));
                }
                self.entries
                    .truncate((e.index - self.snapshot.index - 1) as usize);
                self.entries.push(Entry {
                    index: e.index,
                    term: e.term,
                    kind: EntryKind::from_flags(e.noop, e.config),
                    data: e.data,
                });
            }
        }
        Ok(())
    }

    fn term(&self, index: Index) -> Option<u64> {
        if index == self.snapshot.index {
            return Some(self.snapshot.term);
        }
        if index < self.snapshot.index {
            return None;
        }
        self.entries
            .get((index - self.snapshot.index - 1) as usize)
            .map(|e| e.term)
    }
}

/// Replays the log in `dir` (which exists): the segments found, oldest
/// first, and the state they hold. A torn tail of the last segment is cut
/// off; damage anywhere else is an error.
pub(super) fn recover(
    fs: &dyn LogFs,
    dir: &Path,
) -> Result<(Vec<(u64, PathBuf)>, WalState), WalError> {
    // A compaction that crashed before its rename left a temporary file.
    for name in fs.list(dir).map_err(io_err(dir))? {
        if name.ends_with(".tmp") {
            let path = dir.join(&name);
            fs.remove(&path).map_err(io_err(&path))?;
        }
    }
    let segments = list_segments(fs, dir)?;
    let mut state = WalState::new();
    let last = segments.len().saturating_sub(1);
    for (i, (_, path)) in segments.iter().enumerate() {
        let (valid, problem) = replay_segment(fs, path, &mut state)?;
        if let Some(reason) = problem {
            if i != last {
                return Err(WalError::Corrupt {
                    path: path.clone(),
                    offset: valid,
                    reason,
                });
            }
            tracing::warn!(path = %path.display(), offset = valid, %reason,
                    "cutting off the torn end of the write-ahead log (a write that was never acknowledged)");
            fs.truncate(path, valid).map_err(io_err(path))?;
        }
    }
    Ok((segments, state))
}

/// Whether an intact record (plausible length, a record's first byte,
/// matching checksum) starts at `off`.
fn intact_record_at(data: &[u8], off: usize) -> bool {
    let Some(header) = data.get(off..off + 8) else {
        return false;
    };
    let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
    len > 0
        && len <= MAX_RECORD_BYTES
        && data.get(off + 8..off + 8 + len).is_some_and(|payload| {
            RECORD_TAGS.contains(&payload[0]) && crc32fast::hash(payload) == crc
        })
}

/// The offset of the first intact record after `off`, if any. A damaged
/// length hides where the next record starts, so every offset is tried.
fn intact_record_after(data: &[u8], off: usize) -> Option<usize> {
    (off + 1..data.len().saturating_sub(8)).find(|&at| intact_record_at(data, at))
}

/// Reads one segment into `state`. Returns the length of its valid prefix,
/// and, if it ends in a torn write, why.
///
/// A damaged record counts as a torn write (a batch whose write never
/// completed, so was never acknowledged) only if no intact record follows it
/// anywhere in the file: a bad length, a bad checksum or a zero header with
/// an intact record after it is corruption, and refuses start-up rather than
/// silently drop durable votes or entries.
fn replay_segment(
    fs: &dyn LogFs,
    path: &Path,
    state: &mut WalState,
) -> Result<(u64, Option<String>), WalError> {
    let data = fs.read(path).map_err(io_err(path))?;
    let corrupt = |offset: usize, reason: String| WalError::Corrupt {
        path: path.to_path_buf(),
        offset: offset as u64,
        reason,
    };
    let mut off = 0usize;
    loop {
        if off == data.len() {
            return Ok((off as u64, None));
        }
        if data.len() - off < 8 {
            return Ok((off as u64, Some("torn record header".into())));
        }
        let len = u32::from_le_bytes(data[off..off + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(data[off + 4..off + 8].try_into().expect("4 bytes"));
        // Only the final record may be torn: damage with an intact record
        // anywhere after it is corruption.
        let torn_or_corrupt = |what: &str| match intact_record_after(&data, off) {
            Some(at) => Err(corrupt(
                off,
                format!("{what}, followed by an intact record at byte {at}"),
            )),
            None => Ok((off as u64, Some(what.to_string()))),
        };
        if len == 0 {
            // No record is empty (each holds one kind of record).
            if data[off..].iter().all(|&b| b == 0) {
                return Ok((off as u64, Some("zero-filled tail".into())));
            }
            return torn_or_corrupt("an empty record before more data");
        }
        let end = off + 8 + len;
        if len > MAX_RECORD_BYTES || end > data.len() {
            return torn_or_corrupt("a record that runs past the end of the file");
        }
        let payload = &data[off + 8..end];
        if crc32fast::hash(payload) != crc {
            return torn_or_corrupt("checksum mismatch");
        }
        let record = WalRecord::decode(payload)
            .ok()
            .and_then(|r| r.record)
            .ok_or_else(|| corrupt(off, "record does not decode".into()))?;
        state.apply(record).map_err(|reason| corrupt(off, reason))?;
        off = end;
    }
}
