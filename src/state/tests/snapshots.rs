//! Freezing a snapshot and installing it elsewhere.

use super::*;
use crate::proto::kv::DeleteRequest;
use crate::raft::SnapshotMeta;

/// A frozen snapshot installed elsewhere reproduces the state.
#[test]
fn snapshot_round_trip() {
    let a_dir = tempfile::tempdir().expect("tempdir");
    let b_dir = tempfile::tempdir().expect("tempdir");
    let a = open(a_dir.path());
    let b = open(b_dir.path());
    let entries: Vec<Entry> = (0..50)
        .map(|i| entry(i + 1, put(&format!("k{i}"), "v")))
        .collect();
    a.apply_all(&entries).expect("apply");
    b.apply_all(&[entry(1, put("stale", "x"))]).expect("apply");
    let frozen = a.freeze_snapshot().expect("freeze");
    let writer = b.begin_install().expect("begin");
    for chunk in frozen.chunks(256) {
        writer.write(chunk.expect("chunk")).expect("write");
    }
    let meta = b.finish_install(writer, frozen.meta).expect("install");
    assert_eq!(meta.index, 50);
    assert_eq!(b.applied(), (50, 1));
    assert!(b.get(b"stale").expect("get").0.is_none());
    assert!(b.get(b"k49").expect("get").0.is_some());
    drop(b);
    let b = open(b_dir.path());
    assert_eq!(b.applied(), (50, 1), "the install is durable");
    assert_eq!(
        b.installed_snapshot().expect("read"),
        Some((50, 1)),
        "the install point is recorded for start-up's check"
    );
}

/// A frozen snapshot streams the state exactly as it was at the freeze,
/// each pair once, while applies go on during the stream: overwrites,
/// deletes and new keys after the freeze are invisible in it, and nothing
/// is copied.
#[test]
fn a_frozen_snapshot_is_the_state_at_the_freeze_while_applies_go_on() {
    let a_dir = tempfile::tempdir().expect("tempdir");
    let b_dir = tempfile::tempdir().expect("tempdir");
    let a = open(a_dir.path());
    let b = open(b_dir.path());
    let entries: Vec<Entry> = (0..100)
        .map(|i| entry(i + 1, put(&format!("k{i:02}"), "old")))
        .collect();
    a.apply_all(&entries).expect("apply");
    let expected = a.range(&RangeRequest::default()).expect("range").0;
    let frozen = a.freeze_snapshot().expect("freeze");
    assert_eq!(frozen.meta.index, 100);
    assert!(
        a.freeze_snapshot().is_err(),
        "one frozen snapshot at a time"
    );
    let writer = b.begin_install().expect("begin");
    let mut index = 100;
    let mut sent = std::collections::BTreeSet::new();
    for (n, chunk) in frozen.chunks(64).enumerate() {
        let chunk = chunk.expect("chunk");
        for (k, _) in &chunk {
            assert!(sent.insert(k.clone()), "{k:?} sent twice");
        }
        writer.write(chunk).expect("write");
        // Change the state between every chunk of the stream.
        let i = n as u64 % 100;
        index += 1;
        let change = match n % 3 {
            0 => put(&format!("k{i:02}"), "new"),
            1 => Op::Delete(DeleteRequest {
                key: Bytes::from(format!("k{i:02}")),
                ..Default::default()
            }),
            _ => put(&format!("n{n}"), "added"),
        };
        a.apply_all(&[entry(index, change)])
            .expect("apply during the stream");
    }
    drop(frozen);
    assert!(index > 110, "the stream had {} chunks", index - 100);
    let meta = b
        .finish_install(writer, SnapshotMeta::at(100, 1))
        .expect("install");
    assert_eq!(meta.index, 100);
    let got = b.range(&RangeRequest::default()).expect("range").0;
    assert_eq!(got.kvs, expected.kvs, "the state at the freeze");
    let (history, _) = b.history(1, 1000, usize::MAX).expect("history");
    assert_eq!(history.len(), 100, "history up to the freeze only");
    let names: Vec<_> = a.db.tree_names();
    assert!(
        !names
            .iter()
            .any(|n| n.as_ref() == snapshot::UNDO_TREE || n.as_ref() == b"snapshot-out"),
        "no copy or before images left: {names:?}"
    );
    a.freeze_snapshot()
        .expect("a new snapshot after the first is dropped");
}

/// A snapshot installed from the leader while a frozen snapshot streams
/// (a backup on a follower, or a follower's own catch-up) ends the stream
/// with a retryable refusal, never a panic on the dropped tree, and a new
/// freeze works afterwards.
#[test]
fn an_install_during_a_stream_ends_it_cleanly() {
    let a_dir = tempfile::tempdir().expect("tempdir");
    let l_dir = tempfile::tempdir().expect("tempdir");
    let a = open(a_dir.path());
    let leader = open(l_dir.path());
    let entries: Vec<Entry> = (0..400)
        .map(|i| entry(i + 1, put(&format!("k{i:03}"), &big(100))))
        .collect();
    a.apply_all(&entries[..200]).expect("apply");
    leader.apply_all(&entries).expect("apply");
    let frozen = a.freeze_snapshot().expect("freeze");
    let mut chunks = frozen.chunks(256);
    chunks.next().expect("a first chunk").expect("chunk");
    // The leader's state replaces this member's while the stream is open.
    let from_leader = leader.freeze_snapshot().expect("freeze the leader");
    let writer = a.begin_install().expect("begin");
    for chunk in from_leader.chunks(4096) {
        writer.write(chunk.expect("chunk")).expect("write");
    }
    a.finish_install(writer, from_leader.meta).expect("install");
    let rest: Vec<_> = chunks.collect();
    assert!(
        matches!(rest.last(), Some(Err(StateError::Busy(_)))),
        "the stream ends refused, with {} more chunks",
        rest.len()
    );
    assert!(!frozen.still_frozen());
    drop(frozen);
    assert_eq!(a.applied(), (400, 1));
    let again = a.freeze_snapshot().expect("a new freeze after the install");
    let pairs: usize = again.chunks(4096).map(|c| c.expect("chunk").len()).sum();
    assert!(pairs >= 400, "{pairs} pairs");
}
