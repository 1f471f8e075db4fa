//! The replication thread, driven by hand over a real or simulated disk.

use super::*;
use crate::node::applier::Applier;
use crate::node::NoPeers;
use crate::raft::mutations::Mutation;
use crate::raft::NodeId;
use crate::raft::{Config, Entry, EntryKind, HardState, Restored, SnapshotMeta, Voting};
use crate::state::command::{Command, Op};
use crate::state::snapshot::SnapshotWriter;
use tokio::sync::broadcast;

fn state_with(dir: &std::path::Path, last: u64) -> KvState {
    let state = KvState::open(dir, 8 << 20, 10_000).expect("open state");
    let entries: Vec<Entry> = (1..=last)
        .map(|index| Entry {
            index,
            term: 1,
            kind: EntryKind::Normal,
            data: Command::new(Op::Put(crate::proto::kv::PutRequest {
                key: format!("k{index}").into(),
                value: "v".into(),
                prev_kv: false,
            }))
            .encode(),
        })
        .collect();
    state.apply_all(&entries).expect("apply");
    state
}

/// The snapshot of `source`, received into `target`.
fn received(source: &KvState, target: &KvState) -> (SnapshotWriter, SnapshotMeta) {
    let frozen = source.freeze_snapshot().expect("freeze");
    let writer = target.begin_install().expect("begin");
    for chunk in frozen.chunks(1 << 16) {
        writer.write(chunk.expect("chunk")).expect("write");
    }
    (writer, frozen.meta)
}

/// A replication thread for member 1 of 3 (term 1, voting), driven by
/// hand, over `wal`, with a real apply thread; drop the fixture to stop
/// it.
struct Fixture {
    raft: Option<ReplicationThread>,
    state: Arc<KvState>,
    apply_tx: Sender<ApplyMsg>,
    apply_thread:
        Option<std::thread::JoinHandle<std::result::Result<(), crate::state::StateError>>>,
    _dir: tempfile::TempDir,
}

impl Fixture {
    fn new(wal: Wal, peers: Arc<dyn Peers>, mutation: Option<Mutation>) -> Fixture {
        let policy = CompactionPolicy {
            max_entries: 1000,
            max_bytes: 1 << 30,
            keep_entries: 100,
        };
        Fixture::with_policy(wal, peers, mutation, policy)
    }

    fn with_policy(
        wal: Wal,
        peers: Arc<dyn Peers>,
        mutation: Option<Mutation>,
        policy: CompactionPolicy,
    ) -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let state =
            Arc::new(KvState::open(&dir.path().join("state"), 8 << 20, 10_000).expect("open"));
        let restored = Restored {
            hard_state: HardState {
                term: 1,
                vote: None,
                voting: Voting::Enabled,
            },
            ..Restored::fresh()
        };
        let mut cfg = Config::new(1, 3);
        cfg.mutation = mutation;
        let core = RaftCore::new(cfg, restored, 1);
        let (inbox_tx, inbox_rx) = std::sync::mpsc::channel();
        let (apply_tx, apply_rx) = std::sync::mpsc::channel();
        let waiters = Arc::new(Waiters::default());
        let (status_tx, _status_rx) = watch::channel(RaftStatus::of(&core));
        let (applied_tx, _applied_rx) = watch::channel(0);
        let (events, _) = broadcast::channel(16);
        let applier = Applier {
            metrics: Arc::default(),
            state: state.clone(),
            rx: apply_rx,
            inbox: inbox_tx,
            waiters: waiters.clone(),
            applied: applied_tx,
            events,
            cluster_recorded: true,
        };
        let apply_thread = std::thread::spawn(move || applier.run());
        let raft = ReplicationThread::new(
            core,
            wal,
            inbox_rx,
            apply_tx.clone(),
            peers,
            waiters,
            status_tx,
            state.clone(),
            Duration::from_millis(10),
            policy,
            PodName::parse("kvstore-1").expect("name"),
        );
        Fixture {
            raft: Some(raft),
            state,
            apply_tx,
            apply_thread: Some(apply_thread),
            _dir: dir,
        }
    }

    fn raft(&mut self) -> &mut ReplicationThread {
        self.raft.as_mut().expect("running")
    }

    /// Feeds one input and runs the Ready loop.
    fn step(&mut self, input: Input) {
        assert!(self.raft().handle(input).expect("not fatal"));
        self.raft().drive_ready().expect("not fatal");
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.raft = None;
        let _ = self.apply_tx.send(ApplyMsg::Stop);
        if let Some(t) = self.apply_thread.take() {
            let _ = t.join();
        }
    }
}

/// Two snapshots arriving in one batch, the higher first: the lower one
/// is an ordinary rejected snapshot, not a fatal mismatch, and the
/// higher one is installed.
#[test]
fn a_lower_snapshot_after_a_higher_one_in_one_batch_is_rejected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let high = state_with(&dir.path().join("high"), 100);
    let low = state_with(&dir.path().join("low"), 90);
    let (wal, _) = Wal::open(&dir.path().join("wal")).expect("wal");
    let mut fixture = Fixture::new(wal, Arc::new(NoPeers), None);
    let state = fixture.state.clone();
    let raft = fixture.raft();
    let mut answers = Vec::new();
    for source in [&high, &low] {
        let (writer, meta) = received(source, &state);
        let (done, answer) = oneshot::channel();
        let msg = Message {
            from: 0,
            to: 1,
            term: 1,
            body: Body::Snapshot { meta },
        };
        assert!(raft
            .handle(Input::SnapshotReceived { msg, writer, done })
            .expect("not fatal"));
        answers.push(answer);
    }
    raft.drive_ready().expect("not fatal");
    assert_eq!(
        state.applied(),
        (100, 1),
        "the higher snapshot is the state"
    );
    for mut answer in answers {
        assert!(matches!(answer.try_recv(), Ok(Ok(()))));
    }
}

/// A transport that checks, as each message leaves, that what the
/// message promises is already durable: replaying what the simulated
/// disk would keep through a power loss at that instant.
struct DurabilityCheck {
    fs: crate::storage::sim_fs::SimFs,
    sent: std::sync::Mutex<Vec<String>>,
    broken: std::sync::Mutex<Vec<String>>,
}

impl DurabilityCheck {
    fn durable(&self) -> crate::storage::wal::WalState {
        let copy = self.fs.durable_copy();
        Wal::open_on(Arc::new(copy), std::path::Path::new("/wal"))
            .expect("replay the durable log")
            .1
    }
}

impl Peers for DurabilityCheck {
    fn send(&self, msg: Message) {
        let durable = self.durable();
        let hs = durable.hard_state;
        let last = durable.snapshot.index + durable.entries.len() as u64;
        let problem = match &msg.body {
            Body::VoteResponse { granted: true } => (hs.term < msg.term
                || (hs.term == msg.term && hs.vote != Some(msg.to)))
                .then(|| format!("a vote for {} in term {} left while the disk held {hs:?}", msg.to, msg.term)),
            Body::AppendResponse {
                result: crate::raft::AppendResult::Accepted { match_index },
                ..
            } => (last < *match_index).then(|| {
                format!("an acknowledgement of {match_index} left while the disk held entries to {last}")
            }),
            _ => None,
        };
        self.sent
            .lock()
            .expect("lock")
            .push(format!("{:?}", msg.body));
        if let Some(p) = problem {
            self.broken.lock().expect("lock").push(p);
        }
    }
    fn send_snapshot(&self, _to: NodeId, _term: u64) {}
    fn forward_write(
        &self,
        _leader: NodeId,
        _command: Bytes,
    ) -> futures::future::BoxFuture<'static, Result<crate::node::WriteResult>> {
        Box::pin(async { Err(Error::NoLeader) })
    }
    fn forward_read_index(
        &self,
        _leader: NodeId,
    ) -> futures::future::BoxFuture<'static, Result<u64>> {
        Box::pin(async { Err(Error::NoLeader) })
    }
    fn forward_transfer(
        &self,
        _leader: NodeId,
        _to: NodeId,
    ) -> futures::future::BoxFuture<'static, Result<()>> {
        Box::pin(async { Err(Error::NoLeader) })
    }
}

/// Runs a follower through a vote and appends over a simulated disk,
/// checking each message as it leaves; returns what the check found.
fn votes_and_appends(send_before_persist: bool) -> (Vec<String>, Vec<String>) {
    let fs = crate::storage::sim_fs::SimFs::new();
    let (wal, _) = Wal::open_on(Arc::new(fs.clone()), std::path::Path::new("/wal")).expect("wal");
    let check = Arc::new(DurabilityCheck {
        fs,
        sent: Default::default(),
        broken: Default::default(),
    });
    let mutation = send_before_persist.then_some(Mutation::SendBeforePersist);
    let mut fixture = Fixture::new(wal, check.clone(), mutation);
    let from_leader = |term, body| {
        Input::Step(Message {
            from: 0,
            to: 1,
            term,
            body,
        })
    };
    fixture.step(from_leader(
        2,
        Body::Vote {
            last_index: 0,
            last_term: 0,
            transfer: false,
        },
    ));
    let mut prev = 0;
    for batch in 0..5u64 {
        let entries: Vec<Entry> = (prev + 1..=prev + 3)
            .map(|index| Entry {
                index,
                term: 2,
                kind: if index == 1 {
                    EntryKind::Noop
                } else {
                    EntryKind::Normal
                },
                data: if index == 1 {
                    Bytes::new()
                } else {
                    Command::new(Op::Put(crate::proto::kv::PutRequest {
                        key: format!("k{index}").into(),
                        value: "v".into(),
                        prev_kv: false,
                    }))
                    .encode()
                },
            })
            .collect();
        fixture.step(from_leader(
            2,
            Body::Append {
                prev_index: prev,
                prev_term: if prev == 0 { 0 } else { 2 },
                entries,
                commit: batch * 3,
            },
        ));
        prev += 3;
    }
    let sent = check.sent.lock().expect("lock").clone();
    let broken = check.broken.lock().expect("lock").clone();
    (sent, broken)
}

/// The real Ready loop persists before it sends: a granted vote leaves
/// only once the vote is durable, an acknowledgement of entries only
/// once they are; with the order reversed, the check sees it.
#[test]
fn no_message_leaves_before_the_sync_it_depends_on() {
    let (sent, broken) = votes_and_appends(false);
    assert!(broken.is_empty(), "{broken:?}");
    assert!(
        sent.iter()
            .any(|m| m.contains("VoteResponse { granted: true }")),
        "{sent:?}"
    );
    assert_eq!(
        sent.iter().filter(|m| m.contains("Accepted")).count(),
        5,
        "{sent:?}"
    );
    let (_, broken) = votes_and_appends(true);
    assert!(
        broken.len() >= 6,
        "sending before persisting must be caught: {broken:?}"
    );
}

/// A follower receiving large entries: the log and its file stay within a
/// few times the byte limit, although far fewer entries than the entry
/// limit arrive between checkpoints.
#[test]
fn a_log_of_large_entries_is_compacted_by_bytes() {
    const VALUE: usize = 100 << 10;
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, _) = Wal::open(&dir.path().join("wal")).expect("wal");
    let policy = CompactionPolicy {
        max_entries: 1000,
        max_bytes: 1 << 20,
        keep_entries: 500,
    };
    let mut fixture = Fixture::with_policy(wal, Arc::new(NoPeers), None, policy);
    let append = |prev: u64| {
        let data = Command::new(Op::Put(crate::proto::kv::PutRequest {
            key: format!("k{}", prev % 10).into(),
            value: vec![7u8; VALUE].into(),
            prev_kv: false,
        }))
        .encode();
        Input::Step(Message {
            from: 0,
            to: 1,
            term: 1,
            body: Body::Append {
                prev_index: prev,
                prev_term: if prev == 0 { 0 } else { 1 },
                entries: vec![Entry {
                    index: prev + 1,
                    term: 1,
                    kind: EntryKind::Normal,
                    data,
                }],
                commit: prev,
            },
        })
    };
    let mut largest_log = 0;
    let mut largest_file = 0;
    for prev in 0..200u64 {
        fixture.step(append(prev));
        fixture.raft().after_ready().expect("not fatal");
        // Let a checkpoint the thread asked for finish, as the run loop would.
        while fixture.raft().checkpoint_in_flight {
            let input = fixture
                .raft()
                .inbox
                .recv_timeout(Duration::from_secs(10))
                .expect("the apply thread answers");
            fixture.step(input);
            fixture.raft().after_ready().expect("not fatal");
        }
        let raft = fixture.raft();
        largest_log = largest_log.max(raft.core.log().data_bytes());
        largest_file = largest_file.max(raft.wal.active_len());
    }
    let limit = policy.max_bytes;
    assert!(
        largest_log <= 2 * limit,
        "the log held {largest_log} bytes of entries, limit {limit}"
    );
    assert!(
        largest_file <= policy.max_segment_bytes() + 2 * VALUE as u64,
        "the log file grew to {largest_file} bytes"
    );
}

/// Proposal times leave in index order as their entries commit, and a
/// member leading again forgets what it proposed before.
#[test]
fn proposal_times_leave_as_entries_commit() {
    let t0 = Instant::now();
    let mut times = ProposalTimes::default();
    for i in 1..=3 {
        times.proposed(i, t0 + Duration::from_millis(i));
    }
    let done: Vec<Instant> = times.committed(2).collect();
    assert_eq!(
        done,
        vec![t0 + Duration::from_millis(1), t0 + Duration::from_millis(2)]
    );
    assert_eq!(times.committed(2).count(), 0);
    times.proposed(3, t0);
    assert_eq!(
        times.committed(10).count(),
        1,
        "the earlier 3 was forgotten"
    );
}
