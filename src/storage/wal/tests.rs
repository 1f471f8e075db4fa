//! Tests of the write-ahead log.

use std::fs::{self, OpenOptions};

use bytes::Bytes;

use super::format::{list_segments, segment_name};
use super::*;
use crate::raft::{Entry, EntryKind, HardState, Index, SnapshotMeta, Voting};
use crate::storage::fs::RealFs;

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
    wal.compact(hs, SnapshotMeta::at(7, 1), &entries[7..])
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
