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

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use prost::Message as _;

use crate::raft::{Entry, EntryKind, HardState, Index, SnapshotMeta, Voting};

use super::fs::{LogFile, LogFs, RealFs};

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
}

impl From<&Entry> for Record {
    fn from(e: &Entry) -> Self {
        Record::Entry(StoredEntry {
            index: e.index,
            term: e.term,
            noop: e.kind == EntryKind::Noop,
            data: e.data.clone(),
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
        Record::Snapshot(StoredSnapshot {
            index: s.index,
            term: s.term,
        })
    }
}

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
                    kind: if e.noop {
                        EntryKind::Noop
                    } else {
                        EntryKind::Normal
                    },
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

/// The open write-ahead log.
pub struct Wal {
    fs: Arc<dyn LogFs>,
    dir: PathBuf,
    /// The segment being appended to, and its sequence number.
    active: Box<dyn LogFile>,
    active_seq: u64,
    /// Bytes in the active segment.
    active_len: u64,
    buf: Vec<u8>,
    /// Slept after every sync (a slow disk, for tests).
    sync_delay: std::time::Duration,
    /// Skip the sync of appends: a mutation, for the test that proves a
    /// power loss then loses acknowledged entries.
    #[cfg(feature = "testing")]
    skip_sync: bool,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.dir)
            .field("active_seq", &self.active_seq)
            .field("active_len", &self.active_len)
            .finish()
    }
}

const SEGMENT_SUFFIX: &str = ".wal";
/// Larger than any record can be (an entry is at most a request message);
/// a length beyond it is damage, not a record.
const MAX_RECORD_BYTES: usize = 256 << 20;

fn segment_name(seq: u64) -> String {
    format!("{seq:016x}{SEGMENT_SUFFIX}")
}

fn list_segments(fs: &dyn LogFs, dir: &Path) -> Result<Vec<(u64, PathBuf)>, WalError> {
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

fn frame(buf: &mut Vec<u8>, record: Record) {
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
const RECORD_TAGS: [u8; 3] = [0x0a, 0x12, 0x1a];

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

impl Wal {
    /// Opens (or creates) the log in `dir` and replays it.
    pub fn open(dir: &Path) -> Result<(Wal, WalState), WalError> {
        Self::open_on(Arc::new(RealFs), dir)
    }

    /// Opens (or creates) the log in `dir` on `fs` and replays it.
    pub fn open_on(fs: Arc<dyn LogFs>, dir: &Path) -> Result<(Wal, WalState), WalError> {
        fs.create_dir_all(dir).map_err(io_err(dir))?;
        // A compaction that crashed before its rename left a temporary file.
        for name in fs.list(dir).map_err(io_err(dir))? {
            if name.ends_with(".tmp") {
                let path = dir.join(&name);
                fs.remove(&path).map_err(io_err(&path))?;
            }
        }
        let segments = list_segments(fs.as_ref(), dir)?;
        let mut state = WalState::new();
        let last = segments.len().saturating_sub(1);
        for (i, (_, path)) in segments.iter().enumerate() {
            let (valid, problem) = replay_segment(fs.as_ref(), path, &mut state)?;
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
        let (active_seq, active_path) = match segments.last() {
            Some((seq, path)) => (*seq, path.clone()),
            None => {
                let path = dir.join(segment_name(1));
                fs.create(&path).map_err(io_err(&path))?;
                fs.sync_dir(dir).map_err(io_err(dir))?;
                (1, path)
            }
        };
        let active = fs.open_append(&active_path).map_err(io_err(&active_path))?;
        let active_len = active.size().map_err(io_err(&active_path))?;
        let wal = Wal {
            fs,
            dir: dir.to_path_buf(),
            active,
            active_seq,
            active_len,
            buf: Vec::new(),
            sync_delay: std::time::Duration::ZERO,
            #[cfg(feature = "testing")]
            skip_sync: false,
        };
        Ok((wal, state))
    }

    /// Appends records and makes them durable: one write, one `fdatasync`.
    pub fn append(
        &mut self,
        hard_state: Option<HardState>,
        snapshot: Option<SnapshotMeta>,
        entries: &[Entry],
    ) -> Result<(), WalError> {
        if hard_state.is_none() && snapshot.is_none() && entries.is_empty() {
            return Ok(());
        }
        self.buf.clear();
        if let Some(s) = snapshot {
            frame(&mut self.buf, s.into());
        }
        if let Some(hs) = hard_state {
            frame(&mut self.buf, hs.into());
        }
        for e in entries {
            frame(&mut self.buf, e.into());
        }
        let path = self.active_path();
        self.active.write_all(&self.buf).map_err(io_err(&path))?;
        #[cfg(feature = "testing")]
        let skip = self.skip_sync;
        #[cfg(not(feature = "testing"))]
        let skip = false;
        if !skip {
            self.active.sync_data().map_err(io_err(&path))?;
        }
        self.slow_disk();
        self.active_len += self.buf.len() as u64;
        Ok(())
    }

    /// Rewrites the log as `hard_state`, `snapshot` and `entries` in a new
    /// segment and deletes the old ones.
    pub fn compact(
        &mut self,
        hard_state: HardState,
        snapshot: SnapshotMeta,
        entries: &[Entry],
    ) -> Result<(), WalError> {
        let seq = self.active_seq + 1;
        let tmp = self.dir.join(format!("{}.tmp", segment_name(seq)));
        let path = self.dir.join(segment_name(seq));
        self.buf.clear();
        frame(&mut self.buf, hard_state.into());
        frame(&mut self.buf, snapshot.into());
        for e in entries {
            frame(&mut self.buf, e.into());
        }
        {
            let mut f = self.fs.create(&tmp).map_err(io_err(&tmp))?;
            f.write_all(&self.buf).map_err(io_err(&tmp))?;
            f.sync_data().map_err(io_err(&tmp))?;
            self.slow_disk();
        }
        self.fs.rename(&tmp, &path).map_err(io_err(&path))?;
        self.fs.sync_dir(&self.dir).map_err(io_err(&self.dir))?;
        self.active = self.fs.open_append(&path).map_err(io_err(&path))?;
        self.active_seq = seq;
        self.active_len = self.buf.len() as u64;
        for (old, old_path) in list_segments(self.fs.as_ref(), &self.dir)? {
            if old < seq {
                self.fs.remove(&old_path).map_err(io_err(&old_path))?;
            }
        }
        self.fs.sync_dir(&self.dir).map_err(io_err(&self.dir))?;
        Ok(())
    }

    /// Skips the sync of appends (a mutation: the test that proves the sync
    /// is needed turns it on).
    #[cfg(feature = "testing")]
    pub fn skip_sync_for_tests(&mut self) {
        self.skip_sync = true;
    }

    /// Plays a slow disk: every sync takes `delay` longer (tests only).
    pub fn set_sync_delay(&mut self, delay: std::time::Duration) {
        self.sync_delay = delay;
    }

    fn slow_disk(&self) {
        if !self.sync_delay.is_zero() {
            std::thread::sleep(self.sync_delay);
        }
    }

    /// Bytes in the active segment.
    pub fn active_len(&self) -> u64 {
        self.active_len
    }

    fn active_path(&self) -> PathBuf {
        self.dir.join(segment_name(self.active_seq))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::{self, OpenOptions};

    fn entry(index: Index, term: u64, data: &str) -> Entry {
        Entry {
            index,
            term,
            kind: EntryKind::Normal,
            data: Bytes::from(data.to_string()),
        }
    }

    /// What is appended comes back after a reopen, with truncations applied.
    #[test]
    fn replay_rebuilds_log_and_hard_state() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (mut wal, state) = Wal::open(dir.path()).expect("open");
            assert!(state.entries.is_empty());
            let hs = HardState {
                term: 2,
                vote: Some(1),
                voting: Voting::Enabled,
            };
            wal.append(
                Some(hs),
                None,
                &[entry(1, 1, "a"), entry(2, 1, "b"), entry(3, 2, "c")],
            )
            .expect("append");
            // A follower truncation: index 2 is overwritten.
            wal.append(None, None, &[entry(2, 2, "B")]).expect("append");
        }
        let (_, state) = Wal::open(dir.path()).expect("reopen");
        assert_eq!(state.hard_state.term, 2);
        assert_eq!(state.hard_state.vote, Some(1));
        let data: Vec<_> = state.entries.iter().map(|e| e.data.clone()).collect();
        assert_eq!(data, vec![Bytes::from("a"), Bytes::from("B")]);
    }

    /// A torn last record (a crash mid-write) is cut off; the rest survives
    /// and appends continue after it.
    #[test]
    fn torn_tail_is_cut_off() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (mut wal, _) = Wal::open(dir.path()).expect("open");
            wal.append(None, None, &[entry(1, 1, "a"), entry(2, 1, "b")])
                .expect("append");
        }
        let seg = dir.path().join(segment_name(1));
        let len = fs::metadata(&seg).expect("meta").len();
        let f = OpenOptions::new().write(true).open(&seg).expect("open");
        f.set_len(len - 3).expect("truncate");
        drop(f);
        let (mut wal, state) = Wal::open(dir.path()).expect("reopen");
        assert_eq!(state.entries.len(), 1);
        wal.append(None, None, &[entry(2, 1, "c")]).expect("append");
        let (_, state) = Wal::open(dir.path()).expect("reopen");
        assert_eq!(state.entries[1].data, Bytes::from("c"));
    }

    /// Compaction keeps the tail and the hard state in a new segment.
    #[test]
    fn compaction_rewrites_the_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut wal, _) = Wal::open(dir.path()).expect("open");
        let entries: Vec<Entry> = (1..=10).map(|i| entry(i, 1, "x")).collect();
        wal.append(None, None, &entries).expect("append");
        let hs = HardState {
            term: 1,
            vote: None,
            voting: Voting::Enabled,
        };
        wal.compact(hs, SnapshotMeta { index: 7, term: 1 }, &entries[7..])
            .expect("compact");
        wal.append(None, None, &[entry(11, 1, "y")])
            .expect("append");
        assert_eq!(list_segments(&RealFs, dir.path()).expect("list").len(), 1);
        let (_, state) = Wal::open(dir.path()).expect("reopen");
        assert_eq!(state.snapshot.index, 7);
        assert_eq!(
            state.entries.iter().map(|e| e.index).collect::<Vec<_>>(),
            vec![8, 9, 10, 11]
        );
    }

    /// A zero-filled tail (a crash while the file grew) is cut off; damage
    /// followed by intact records is corruption, not a torn write.
    #[test]
    fn zero_tail_is_torn_but_damage_before_intact_records_is_corrupt() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (mut wal, _) = Wal::open(dir.path()).expect("open");
            wal.append(None, None, &[entry(1, 1, "a")]).expect("append");
        }
        let seg = dir.path().join(segment_name(1));
        let mut bytes = fs::read(&seg).expect("read");
        bytes.extend_from_slice(&[0u8; 64]);
        fs::write(&seg, &bytes).expect("write");
        let (mut wal, state) = Wal::open(dir.path()).expect("a zero tail is torn");
        assert_eq!(state.entries.len(), 1);
        wal.append(None, None, &[entry(2, 1, "b"), entry(3, 1, "c")])
            .expect("append");
        drop(wal);
        // Flip a byte inside the first record's payload: intact records follow.
        let mut bytes = fs::read(&seg).expect("read");
        bytes[10] ^= 0xff;
        fs::write(&seg, &bytes).expect("write");
        match Wal::open(dir.path()) {
            Err(WalError::Corrupt { .. }) => {}
            other => panic!("expected corruption, got {other:?}"),
        }
    }

    /// A damaged length in the first of three records hides where the next
    /// one starts; the intact records after it make it corruption, not a
    /// torn tail, and start-up is refused naming the file and offset.
    #[test]
    fn damaged_length_before_intact_records_is_corrupt() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (mut wal, _) = Wal::open(dir.path()).expect("open");
            for i in 1..=3 {
                wal.append(None, None, &[entry(i, 1, "payload")])
                    .expect("append");
            }
        }
        let seg = dir.path().join(segment_name(1));
        let mut bytes = fs::read(&seg).expect("read");
        bytes[..4].copy_from_slice(&0xFFFF_FF00u32.to_le_bytes());
        fs::write(&seg, &bytes).expect("write");
        match Wal::open(dir.path()) {
            Err(e @ WalError::Corrupt { offset: 0, .. }) => {
                let text = e.to_string();
                assert!(text.contains(&seg.display().to_string()), "{text}");
                assert!(text.contains("empty this pod's data dir"), "{text}");
            }
            other => panic!("expected corruption at byte 0, got {other:?}"),
        }
        assert_eq!(
            fs::read(&seg).expect("read"),
            bytes,
            "nothing is cut off a corrupt log"
        );
    }

    /// Damage before the end of the log refuses start-up.
    #[test]
    fn corruption_in_an_older_segment_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (mut wal, _) = Wal::open(dir.path()).expect("open");
            wal.append(None, None, &[entry(1, 1, "a")]).expect("append");
            let hs = HardState::fresh();
            wal.compact(hs, SnapshotMeta::default(), &[entry(1, 1, "a")])
                .expect("compact");
        }
        // Recreate an older damaged segment next to the new one.
        fs::write(dir.path().join(segment_name(0)), b"\x05\0\0\0garbage").expect("write");
        match Wal::open(dir.path()) {
            Err(WalError::Corrupt { .. }) => {}
            other => panic!("expected corruption, got {other:?}"),
        }
    }
}
