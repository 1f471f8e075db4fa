//! Restoring a snapshot file made from a real state.

use std::path::Path;

use bytes::Bytes;

use super::*;
use crate::proto::kv::{PutRequest, SnapshotInfo};
use crate::raft::{Entry, EntryKind};
use crate::state::command::{Bootstrap, Command, Op};
use kvstore_client::snapshot_file::{SnapshotEncoder, FORMAT_VERSION};

fn entry(index: u64, op: Op) -> Entry {
    Entry {
        index,
        term: 2,
        kind: EntryKind::Normal,
        data: Command::new(op).encode(),
    }
}

fn put(key: &[u8], value: &[u8]) -> Op {
    Op::Put(PutRequest {
        key: Bytes::copy_from_slice(key),
        value: Bytes::copy_from_slice(value),
        prev_kv: false,
    })
}

/// A state of 40 keys (one of them not UTF-8, one written three times) in
/// cluster 0xabc, saved to `file` as the Maintenance service does.
fn snapshot_file(dir: &Path, file: &Path) -> KvState {
    let state = KvState::open(dir, 8 << 20, 10_000).expect("open");
    let mut entries = vec![entry(1, Op::Bootstrap(Bootstrap { cluster_id: 0xabc }))];
    for i in 0..40u8 {
        entries.push(entry(entries.len() as u64 + 1, put(&[b'k', i], b"v")));
    }
    for _ in 0..2 {
        entries.push(entry(entries.len() as u64 + 1, put(b"k\x05", b"again")));
    }
    entries.push(entry(
        entries.len() as u64 + 1,
        put(b"\xff\xfe binary", b"\x00\x01"),
    ));
    state.apply_all(&entries).expect("apply");
    let frozen = state.freeze_snapshot().expect("freeze");
    let mut enc = SnapshotEncoder::new(SnapshotInfo {
        format_version: FORMAT_VERSION,
        revision: frozen.meta.index,
        term: frozen.meta.term,
        cluster_id: state.cluster_id(),
        member: "kvstore-2".into(),
        taken_unix_ms: 0,
    });
    let mut out = Vec::new();
    for chunk in frozen.chunks(1 << 10) {
        for (k, v) in chunk.expect("chunk") {
            enc.pair(k, v);
        }
        out.extend_from_slice(&enc.take());
    }
    let (last, hash) = enc.finish();
    out.extend_from_slice(&last);
    out.extend_from_slice(&hash);
    std::fs::write(file, out).expect("write the file");
    drop(frozen);
    state
}

fn options(snapshot: &Path, data_dir: &Path) -> RestoreOptions {
    RestoreOptions {
        snapshot: snapshot.to_path_buf(),
        data_dir: data_dir.to_path_buf(),
        name: PodName::parse("kvstore-0").expect("name"),
        cluster_id: Some(0x5eed),
        cache_bytes: 8 << 20,
    }
}

/// A restored data dir holds the source's keys with their revisions, at
/// the source's revision and term, in a new cluster whose only voter is
/// the restored member, with a log that starts there and may vote.
#[test]
fn a_restore_seeds_the_first_member_of_a_new_cluster() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("backup.snap");
    let source = snapshot_file(&tmp.path().join("source"), &file);
    let target = tmp.path().join("target");
    let done = restore(&options(&file, &target)).expect("restore");
    assert_eq!(done.cluster_id, 0x5eed);
    assert_eq!(done.summary.keys, 41);
    assert_eq!(done.summary.info.revision, 44);

    let dirs = DataDir::new(&target);
    let restored = KvState::open(&dirs.state(), 8 << 20, 10_000).expect("open restored");
    assert_eq!(restored.applied(), source.applied());
    assert_eq!(restored.applied(), (44, 2));
    assert_eq!(restored.cluster_id(), 0x5eed, "a new cluster id");
    assert_eq!(
        restored.applied_membership().expect("membership"),
        Membership::new([0], []),
        "the restored member alone votes"
    );
    let identity = restored.identity().expect("identity").expect("recorded");
    assert_eq!(
        (identity.name(), identity.cluster_id),
        ("kvstore-0".to_string(), 0x5eed)
    );
    let all = crate::proto::kv::RangeRequest::default();
    let (want, _) = source.range(&all).expect("range");
    let (got, _) = restored.range(&all).expect("range");
    assert_eq!(got.kvs.len(), 41);
    assert_eq!(got.kvs, want.kvs, "keys, values, revisions and versions");
    let (history, _) = restored.history(1, 1000, usize::MAX).expect("history");
    let (source_history, _) = source.history(1, 1000, usize::MAX).expect("history");
    assert_eq!(history, source_history, "the watch history too");
    drop(restored);

    let (_, log) = Wal::open(&dirs.wal()).expect("open the log");
    assert_eq!((log.snapshot.index, log.snapshot.term), (44, 2));
    assert_eq!(log.snapshot.membership, Membership::new([0], []));
    assert!(log.entries.is_empty());
    assert_eq!(log.hard_state.voting, Voting::Enabled);
    assert_eq!(log.hard_state.vote, None);
}

/// A file cut short or with one bit flipped is refused before anything
/// is written, and the data dir stays empty.
#[test]
fn a_damaged_snapshot_is_refused_and_writes_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("backup.snap");
    drop(snapshot_file(&tmp.path().join("source"), &file));
    let good = std::fs::read(&file).expect("read");
    let truncated = tmp.path().join("truncated.snap");
    std::fs::write(&truncated, &good[..good.len() * 2 / 3]).expect("write");
    let flipped = tmp.path().join("flipped.snap");
    let mut bad = good.clone();
    bad[good.len() / 2] ^= 0x01;
    std::fs::write(&flipped, &bad).expect("write");
    for (n, damaged) in [truncated, flipped].iter().enumerate() {
        let target = tmp.path().join(format!("target-{n}"));
        let err = restore(&options(damaged, &target)).expect_err("a damaged file");
        assert!(matches!(err, RestoreError::Snapshot(..)), "{err}");
        let left: Vec<_> = std::fs::read_dir(&target)
            .expect("the dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert!(left.is_empty(), "nothing written: {left:?}");
    }
}

/// A data dir that holds anything is refused, and left as it was.
#[test]
fn a_data_dir_that_is_not_empty_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("backup.snap");
    drop(snapshot_file(&tmp.path().join("source"), &file));
    let target = tmp.path().join("target");
    std::fs::create_dir_all(target.join("wal")).expect("mkdir");
    let err = restore(&options(&file, &target)).expect_err("not empty");
    assert!(matches!(err, RestoreError::NotEmpty(_)), "{err}");
    assert!(target.join("wal").exists(), "left as it was");
    assert!(!target.join("state").exists());
}

/// A restore cut short (simulated: the marker and half a state left as a
/// kill would leave them) is refused by a node's start-up, and a new
/// restore into the dir starts over and succeeds.
#[test]
fn a_restore_cut_short_is_not_started_and_is_redone() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("backup.snap");
    drop(snapshot_file(&tmp.path().join("source"), &file));
    let target = tmp.path().join("target");
    let dirs = DataDir::new(&target);
    std::fs::create_dir_all(dirs.state()).expect("mkdir");
    std::fs::write(dirs.state().join("half-written"), b"x").expect("write");
    std::fs::write(dirs.restoring(), b"").expect("the marker");

    let cfg = crate::node::NodeConfig {
        name: PodName::parse("kvstore-0").expect("name"),
        replicas: 1,
        probe_peers: 1,
        data_dir: target.clone(),
        cache_bytes: 1 << 20,
        history_revisions: 100,
        timing: crate::node::Timing::default(),
        compaction: crate::node::CompactionPolicy {
            max_entries: 100,
            max_bytes: 1 << 20,
            keep_entries: 10,
        },
        priority_return: true,
        wal_sync_delay: std::time::Duration::ZERO,
        cluster_id: None,
        space: crate::node::space::SpacePolicy {
            quota: 1 << 30,
            min_free: 0,
            reserve: 0,
        },
    };
    let refused = crate::node::Node::start(
        cfg,
        std::sync::Arc::new(crate::node::NoPeers),
        crate::node::NodeInbox::new(),
    );
    match refused {
        Err(e) => assert!(e.to_string().contains("restore"), "{e}"),
        Ok(_) => panic!("a half-restored dir was started"),
    }

    let done = restore(&options(&file, &target)).expect("the restore, again");
    assert_eq!(done.summary.keys, 41);
    assert!(!dirs.restoring().exists(), "the marker is gone");
    assert!(!dirs.state().join("half-written").exists());
}
