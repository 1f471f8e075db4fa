//! Start-up refusals and repairs, on real data dirs.

use std::time::Duration;

use bytes::Bytes;

use super::*;
use crate::identity::PodName;
use crate::node::{space, CompactionPolicy, Timing};
use crate::raft::{Entry, EntryKind, HardState};

fn log_of(last: u64) -> (tempfile::TempDir, Wal, crate::storage::wal::WalState) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut wal, _) = Wal::open(dir.path()).expect("open");
    let entries: Vec<Entry> = (1..=last)
        .map(|index| Entry {
            index,
            term: 1,
            kind: EntryKind::Normal,
            data: Bytes::from_static(b"x"),
        })
        .collect();
    wal.append(None, None, &entries).expect("append");
    drop(wal);
    let (wal, state) = Wal::open(dir.path()).expect("reopen");
    (dir, wal, state)
}

fn config_for(dir: &Path, name: &str, cluster_id: Option<u64>) -> NodeConfig {
    NodeConfig {
        name: PodName::parse(name).expect("name"),
        replicas: 3,
        probe_peers: 3,
        data_dir: dir.to_path_buf(),
        cache_bytes: 1 << 20,
        history_revisions: 100,
        timing: Timing::default(),
        compaction: CompactionPolicy {
            max_entries: 100,
            max_bytes: 1 << 20,
            keep_entries: 10,
        },
        priority_return: true,
        wal_sync_delay: Duration::ZERO,
        cluster_id,
        space: space::SpacePolicy {
            quota: 1 << 30,
            min_free: 0,
            reserve: 0,
        },
    }
}

/// A state that applied the bootstrap of cluster `id`.
fn state_of_cluster(dir: &Path, id: u64) -> KvState {
    let state = KvState::open(dir, 1 << 20, 100).expect("open");
    let bootstrap = crate::state::command::Command::new(crate::state::command::Op::Bootstrap(
        crate::state::command::Bootstrap { cluster_id: id },
    ));
    state
        .apply_all(&[Entry {
            index: 1,
            term: 1,
            kind: EntryKind::Normal,
            data: bootstrap.encode(),
        }])
        .expect("apply");
    state
}

/// A data dir is refused when its identity record and its data name
/// different clusters, or when either differs from a pinned cluster id;
/// the message names both ids.
#[test]
fn data_of_another_cluster_is_refused_at_start_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = state_of_cluster(dir.path(), 0xa);
    let cfg = config_for(dir.path(), "kvstore-1", None);
    check_identity(&state, &cfg).expect("a new identity is written");
    check_identity(&state, &cfg).expect("the same pod and cluster");
    let pinned = config_for(dir.path(), "kvstore-1", Some(0xb));
    match check_identity(&state, &pinned) {
        Err(e @ StartError::OtherCluster { found: 0xa, .. }) => {
            let text = e.to_string();
            assert!(text.contains("000000000000000b"), "{text}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    state
        .set_identity(&Identity {
            set_name: "kvstore".into(),
            ordinal: 1,
            cluster_id: 0xc,
        })
        .expect("identity");
    assert!(matches!(
        check_identity(&state, &cfg),
        Err(StartError::OtherCluster { found: 0xa, .. })
    ));
}

/// An applied state ahead of the log is accepted only when it was
/// installed from a snapshot at exactly that point; otherwise the log
/// lost entries, and start-up is refused with what to do.
#[test]
fn state_ahead_of_the_log_needs_a_recorded_install() {
    let (dir, mut wal, state) = log_of(5);
    match restore(
        dir.path(),
        &mut wal,
        state,
        (8, 2),
        None,
        Default::default(),
    ) {
        Err(StartError::Inconsistent { reason, .. }) => {
            assert!(reason.contains("log ends at 5"), "{reason}");
            assert!(reason.contains("empty this pod's data dir"), "{reason}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let (dir, mut wal, state) = log_of(5);
    let restored = restore(
        dir.path(),
        &mut wal,
        state,
        (8, 2),
        Some((8, 2)),
        Default::default(),
    )
    .expect("an install");
    assert_eq!(restored.snapshot, SnapshotMeta::at(8, 2));
    assert!(restored.entries.is_empty());
    let (dir, mut wal, state) = log_of(5);
    let restored = restore(
        dir.path(),
        &mut wal,
        state,
        (4, 1),
        None,
        Default::default(),
    )
    .expect("in the log");
    assert_eq!((restored.applied, restored.entries.len()), (4, 5));
}

/// Damages the state's sled files the way a full disk did: the middle
/// of its data file overwritten.
fn damage_state(dir: &Path) {
    {
        let state = KvState::open(&dir.join("state"), 1 << 20, 100).expect("open");
        let entries: Vec<Entry> = (1..=50)
            .map(|index| Entry {
                index,
                term: 1,
                kind: EntryKind::Normal,
                data: crate::state::command::Command::new(crate::state::command::Op::Put(
                    crate::proto::kv::PutRequest {
                        key: format!("k{index}").into(),
                        value: vec![b'v'; 4000].into(),
                        prev_kv: false,
                    },
                ))
                .encode(),
            })
            .collect();
        state.apply_all(&entries).expect("apply");
        state.checkpoint().expect("checkpoint");
    }
    let db = dir.join("state").join("db");
    let mut bytes = std::fs::read(&db).expect("read db");
    // Every segment's second half: whatever sled reads first is hit.
    let segment = 512 << 10;
    for start in (segment / 2..bytes.len()).step_by(segment) {
        let end = (start + segment / 2).min(bytes.len());
        for b in &mut bytes[start..end] {
            *b = 0xa5;
        }
    }
    std::fs::write(&db, &bytes).expect("damage db");
    // sled either reports the damage or recovers to an earlier point.
    match KvState::open(&dir.join("state"), 1 << 20, 100) {
        Err(e) if e.is_unreadable() => {}
        Err(e) => panic!("the damage gave another error: {e:?}"),
        Ok(s) => assert!(s.applied().0 < 50, "the damage went unnoticed"),
    }
}

/// An applied state that cannot be read is rebuilt instead of keeping
/// the member down: from the log when it holds every entry, else from
/// the leader as a lost volume (the term and vote kept); a one-member
/// cluster, with no one to rebuild from, refuses to start.
#[test]
fn an_unreadable_state_is_rebuilt() {
    // The log holds every entry: replayed.
    let dir = tempfile::tempdir().expect("tempdir");
    damage_state(dir.path());
    let (mut wal, _) = Wal::open(&dir.path().join("wal")).expect("wal");
    wal.append(
        Some(HardState {
            term: 3,
            vote: Some(1),
            voting: Voting::Enabled,
        }),
        None,
        &(1..=5)
            .map(|index| Entry {
                index,
                term: 1,
                kind: EntryKind::Normal,
                data: Bytes::from_static(b"x"),
            })
            .collect::<Vec<_>>(),
    )
    .expect("append");
    drop(wal);
    let cfg = config_for(dir.path(), "kvstore-1", None);
    let (state, _, log) = open_storage(&cfg, &DataDir::new(dir.path())).expect("rebuilt");
    assert_eq!(state.applied().0, 0, "a new state, to be replayed");
    assert_eq!(log.entries.len(), 5, "from the whole log");
    drop(state);
    // The log was compacted: a lost volume that keeps its term and vote.
    let dir = tempfile::tempdir().expect("tempdir");
    damage_state(dir.path());
    let (mut wal, _) = Wal::open(&dir.path().join("wal")).expect("wal");
    let hs = HardState {
        term: 3,
        vote: Some(1),
        voting: Voting::Enabled,
    };
    wal.compact(hs, SnapshotMeta::at(40, 1), &[])
        .expect("compact");
    drop(wal);
    let (state, _, log) = open_storage(&cfg, &DataDir::new(dir.path())).expect("rebuilt");
    assert_eq!(state.applied().0, 0);
    assert_eq!(log.snapshot, SnapshotMeta::default());
    assert_eq!(
        log.hard_state,
        HardState {
            voting: Voting::AwaitingPeers,
            ..hs
        }
    );
    drop(state);
    let (_, again) = Wal::open(&dir.path().join("wal")).expect("wal");
    assert_eq!(again.hard_state.voting, Voting::AwaitingPeers, "durably");
    // One member: refused.
    let dir = tempfile::tempdir().expect("tempdir");
    damage_state(dir.path());
    let (mut wal, _) = Wal::open(&dir.path().join("wal")).expect("wal");
    wal.compact(hs, SnapshotMeta::at(40, 1), &[])
        .expect("compact");
    drop(wal);
    let mut single = config_for(dir.path(), "kvstore-0", None);
    single.replicas = 1;
    match open_storage(&single, &DataDir::new(dir.path())) {
        Err(StartError::Inconsistent { reason, .. }) => {
            assert!(reason.contains("cannot be rebuilt"), "{reason}")
        }
        other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
    }
}
