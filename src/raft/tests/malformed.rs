//! Malformed peer messages (the acceptance line "malformed peer messages
//! are dropped and logged, and never panic"): members in every role are fed
//! thousands of generated messages with any field values a gRPC peer could
//! send, and must neither panic nor break their own invariants, and must
//! still take the real leader's next message.
//!
//! Two generators, both seeded by [`SplitMix64`] so that a failure names
//! the seed that reproduces it (`MALFORMED_SEED=<n>` reruns only that one):
//! * *malformed*: every message is one a correct peer never sends; the core
//!   must refuse it ([`RaftCore::try_step`] says why) and change nothing at
//!   all, so the member then answers the leader's next message exactly as a
//!   member that never saw it;
//! * *anything*: every field drawn from values around the edges (0, the
//!   member's own indexes, `u64::MAX`, random), well-formed or not; the
//!   member must keep its invariants whatever it makes of them.

use std::fmt::Write as _;
use std::panic::{catch_unwind, AssertUnwindSafe};

use super::*;

/// The real leader's term in every fixture.
const T: Term = 5;

/// How many seeds per fixture and generator, and messages per seed.
const SEEDS: u64 = 500;
const MESSAGES_PER_SEED: usize = 12;

/// The roles the fixtures put a member in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fixture {
    /// Member 1 following leader 0 in `T`, its log compacted behind a
    /// snapshot.
    Follower,
    /// Member 1 asking for pre-votes for `T + 1`.
    PreCandidate,
    /// Member 1 asking for votes in `T`.
    Candidate,
    /// Member 0 leading `T`, a proposal not yet acknowledged, its log
    /// compacted.
    Leader,
    /// Member 3, a learner, following leader 0 in `T`.
    Learner,
    /// Member 1 with a new data dir, probing its peers.
    LostVolume,
}

const FIXTURES: [Fixture; 6] = [
    Fixture::Follower,
    Fixture::PreCandidate,
    Fixture::Candidate,
    Fixture::Leader,
    Fixture::Learner,
    Fixture::LostVolume,
];

/// The real leader's log in the fixtures that follow one (terms by index).
const LEADER_LOG: [Term; 6] = [1, 1, 2, 3, 5, 5];

fn learner_config() -> Membership {
    Membership::new([0, 1, 2], [3])
}

impl Fixture {
    /// The member, with every Ready of its set-up taken.
    fn build(self) -> RaftCore {
        match self {
            Fixture::Follower => {
                let mut n = member_with(config(1, 3), T, &LEADER_LOG, 4);
                n.compact(3);
                step(&mut n, 0, T, heartbeat(4));
                n
            }
            Fixture::PreCandidate => {
                let mut n = member(1, 3, T, &LEADER_LOG[..5]);
                n.tick_until_campaign();
                ready(&mut n);
                assert_eq!(n.role(), Role::PreCandidate);
                n
            }
            Fixture::Candidate => {
                let mut n = member(1, 3, T - 1, &LEADER_LOG[..4]);
                n.tick_until_campaign();
                ready(&mut n);
                step(&mut n, 2, T, Body::PreVoteResponse { granted: true });
                assert_eq!((n.role(), n.term()), (Role::Candidate, T));
                n
            }
            Fixture::Leader => {
                let mut n = leader(0, 3, T, &LEADER_LOG[..4]);
                n.propose(Bytes::from_static(b"p")).expect("leads");
                ready(&mut n);
                n.compact(3);
                n
            }
            Fixture::Learner => {
                let entries = vec![
                    Entry {
                        index: 1,
                        term: 1,
                        kind: EntryKind::Config,
                        data: learner_config().encode(),
                    },
                    entry(2, 1),
                    entry(3, 2),
                ];
                let restored = Restored {
                    hard_state: HardState {
                        term: T,
                        vote: None,
                        voting: Voting::Enabled,
                    },
                    snapshot: SnapshotMeta::default(),
                    entries,
                    applied: 2,
                };
                let mut n = RaftCore::new(config(3, 3), restored, 7);
                ready(&mut n);
                step(&mut n, 0, T, heartbeat(2));
                assert!(n.membership().is_learner(3));
                n
            }
            Fixture::LostVolume => {
                let mut n = RaftCore::new(config(1, 3), Restored::fresh(), 7);
                ready(&mut n);
                n
            }
        }
    }

    /// The real cluster's next well-formed message(s) to this member.
    fn continuation(self, n: &RaftCore) -> Vec<Message> {
        let to = n.id();
        match self {
            Fixture::Follower | Fixture::PreCandidate | Fixture::Learner => {
                let last = n.log().last_index();
                let prev_term = n.log().last_term();
                vec![msg(
                    0,
                    to,
                    T,
                    Body::Append {
                        prev_index: last,
                        prev_term,
                        entries: vec![entry(last + 1, T)],
                        commit: last,
                    },
                )]
            }
            Fixture::Candidate => vec![msg(2, to, T, Body::VoteResponse { granted: true })],
            Fixture::Leader => {
                let last = n.log().last_index();
                vec![
                    msg(1, to, T, accepted(last)),
                    msg(2, to, T, heartbeat_response(0)),
                ]
            }
            Fixture::LostVolume => [0, 2]
                .into_iter()
                .map(|from| {
                    msg(
                        from,
                        to,
                        T,
                        Body::RejoinProbeResponse {
                            empty_log: false,
                            members: Membership::first(3),
                        },
                    )
                })
                .collect(),
        }
    }
}

fn heartbeat(commit: Index) -> Body {
    Body::Heartbeat {
        commit,
        leader_commit: commit,
        read_round: 0,
    }
}

/// What the member has promised or handed out so far, to check that a
/// message never takes any of it back.
#[derive(Clone, Debug)]
struct Watch {
    term: Term,
    vote: Option<NodeId>,
    commit: Index,
    /// The last index handed to the state machine (or installed).
    applied: Index,
}

impl Watch {
    fn of(n: &RaftCore) -> Self {
        Watch {
            term: n.term(),
            vote: n.vote(),
            commit: n.log().commit(),
            applied: n.log().commit(),
        }
    }

    /// Takes the Ready as a driver does, checks it, and checks the member's
    /// invariants.
    fn drive(&mut self, n: &mut RaftCore) -> Ready {
        let rd = ready(n);
        if let Some(s) = rd.snapshot {
            assert!(s.index > self.applied, "a snapshot behind what is applied");
            self.applied = s.index;
        }
        for (i, e) in rd.entries.iter().enumerate() {
            if i > 0 {
                assert_eq!(e.index, rd.entries[i - 1].index + 1, "Ready entries gap");
            }
        }
        for e in &rd.committed {
            assert_eq!(e.index, self.applied + 1, "applied out of order");
            self.applied = e.index;
        }
        self.check(n);
        rd
    }

    /// The member's own invariants, and that nothing promised went back.
    fn check(&mut self, n: &RaftCore) {
        let log = n.log();
        let snap = log.snapshot();
        for (i, e) in log.entries().iter().enumerate() {
            assert_eq!(e.index, snap.index + 1 + i as Index, "the log has a gap");
        }
        let mut prev = snap.term;
        for e in log.entries() {
            assert!(e.term >= prev, "log terms decrease at {}", e.index);
            prev = e.term;
        }
        assert!(log.last_term() <= n.term(), "an entry of a future term");
        assert!(
            snap.index <= log.commit() && log.commit() <= log.last_index(),
            "commit {} outside the log {}..={}",
            log.commit(),
            snap.index,
            log.last_index()
        );
        assert!(log.stable() <= log.last_index(), "stable beyond the log");
        assert!(log.commit() >= self.commit, "the commit index went back");
        assert!(n.term() >= self.term, "the term went back");
        if n.term() == self.term && self.vote.is_some() {
            assert_eq!(n.vote(), self.vote, "a second vote in term {}", self.term);
        }
        if n.role() == Role::Leader {
            assert_eq!(n.leader(), Some(n.id()));
            assert!(n.voting() == Voting::Enabled, "leads without a vote");
        }
        *self = Watch {
            term: n.term(),
            vote: n.vote(),
            commit: log.commit(),
            applied: self.applied,
        };
    }
}

// ----- generators -----

/// Draws values with a bias for the edges.
struct Gen {
    rng: SplitMix64,
}

impl Gen {
    fn below(&mut self, n: u64) -> u64 {
        self.rng.below(n)
    }
    fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }
    fn pick<T: Copy>(&mut self, of: &[T]) -> T {
        of[self.below(of.len() as u64) as usize]
    }

    /// An index: 0, small, around the member's own, around `u64::MAX`
    /// and the largest index accepted, or anything.
    fn index(&mut self, n: &RaftCore) -> Index {
        let last = n.log().last_index();
        let commit = n.log().commit();
        match self.below(8) {
            0 => 0,
            1 => self.below(12),
            2 => last
                .saturating_sub(self.below(3))
                .saturating_add(self.below(3)),
            3 => commit.saturating_sub(1).saturating_add(self.below(3)),
            4 => u64::MAX - self.below(3),
            5 => MAX_INDEX - 1 + self.below(3),
            6 => self.rng.next_u64(),
            _ => n.log().snapshot().index.saturating_add(self.below(3)),
        }
    }

    /// A term: 0, around the member's and the leader's, the last there is,
    /// or anything.
    fn term(&mut self, n: &RaftCore) -> Term {
        match self.below(7) {
            0 => 0,
            1 => n.term().saturating_sub(1).saturating_add(self.below(3)),
            2 => T - 1 + self.below(3),
            3 => u64::MAX - self.below(2),
            4 => self.rng.next_u64(),
            _ => self.below(8),
        }
    }

    /// A member: mostly a real peer, sometimes itself or no member at all.
    fn node(&mut self, n: &RaftCore) -> NodeId {
        match self.below(20) {
            0 => n.id(),
            1 => MAX_MEMBERS + self.below(3) as u32,
            2 => u32::MAX,
            3 => self.rng.next_u64() as u32,
            _ => (n.id() + 1 + self.below(3) as u32) % 4,
        }
    }

    fn data(&mut self) -> Bytes {
        match self.below(5) {
            0 => Bytes::new(),
            1 => learner_config().encode(),
            2 => Bytes::from_static(&[0; 16]),
            3 => Membership::new([], [1, 2]).encode(),
            _ => {
                let len = self.below(24) as usize;
                Bytes::from(
                    (0..len)
                        .map(|_| self.rng.next_u64() as u8)
                        .collect::<Vec<u8>>(),
                )
            }
        }
    }

    fn kind(&mut self) -> EntryKind {
        self.pick(&[EntryKind::Normal, EntryKind::Noop, EntryKind::Config])
    }

    /// Entries after `prev_index`: contiguous or not, terms of any order.
    fn entries(&mut self, n: &RaftCore, prev_index: Index, msg_term: Term) -> Vec<Entry> {
        let count = self.below(5) as usize;
        let index_shape = self.below(6);
        let term_shape = self.below(5);
        let base_term = self.term(n);
        (0..count)
            .map(|i| {
                let i = i as u64;
                let index = match index_shape {
                    0 => self.index(n),
                    1 => prev_index
                        .wrapping_add(1 + i)
                        .wrapping_sub(u64::from(i == 2)),
                    2 => prev_index.wrapping_sub(i),
                    3 => 0,
                    _ => prev_index.wrapping_add(1 + i),
                };
                let term = match term_shape {
                    0 => self.term(n),
                    1 => base_term.wrapping_sub(i),
                    2 => msg_term,
                    _ => base_term.max(1).min(msg_term),
                };
                Entry {
                    index,
                    term,
                    kind: self.kind(),
                    data: self.data(),
                }
            })
            .collect()
    }

    fn membership(&mut self) -> Membership {
        Membership::from_bits(self.rng.next_u64() & 0xf, self.rng.next_u64() & 0xf)
    }

    /// Any body, field values anywhere.
    fn body(&mut self, n: &RaftCore, msg_term: Term) -> Body {
        match self.below(15) {
            13 | 14 => {
                // An append that matches the member's log somewhere, of
                // entries that a leader could send (or nearly).
                let log = n.log();
                let lo = log.snapshot().index;
                let prev_index = lo + self.below(log.last_index() - lo + 1);
                let prev_term = log.term(prev_index).unwrap_or(0);
                let count = self.below(4);
                let mut t = prev_term.max(1);
                let entries = (0..count)
                    .map(|i| {
                        if self.chance(3) {
                            t = t.saturating_add(1).min(msg_term.max(1));
                        }
                        Entry {
                            index: prev_index + 1 + i,
                            term: t,
                            kind: self.kind(),
                            data: self.data(),
                        }
                    })
                    .collect();
                Body::Append {
                    prev_index,
                    prev_term,
                    entries,
                    commit: self.index(n),
                }
            }
            0 => Body::PreVote {
                last_index: self.index(n),
                last_term: self.term(n),
            },
            1 => Body::PreVoteResponse {
                granted: self.chance(2),
            },
            2 => Body::Vote {
                last_index: self.index(n),
                last_term: self.term(n),
                transfer: self.chance(2),
            },
            3 => Body::VoteResponse {
                granted: self.chance(2),
            },
            4 | 5 => {
                let prev_index = self.index(n);
                Body::Append {
                    prev_index,
                    prev_term: self.term(n),
                    entries: self.entries(n, prev_index, msg_term),
                    commit: self.index(n),
                }
            }
            6 => Body::AppendResponse {
                result: if self.chance(2) {
                    AppendResult::Accepted {
                        match_index: self.index(n),
                    }
                } else {
                    AppendResult::Rejected {
                        rejected_index: self.index(n),
                        hint_index: self.index(n),
                        hint_term: self.term(n),
                    }
                },
                voter: self.chance(2),
            },
            7 => Body::Heartbeat {
                commit: self.index(n),
                leader_commit: self.index(n),
                read_round: self.pick(&[0, 1, 2, u64::MAX]),
            },
            8 => Body::HeartbeatResponse {
                read_round: self.pick(&[0, 1, 2, u64::MAX]),
                voter: self.chance(2),
            },
            9 => Body::TimeoutNow,
            10 => Body::Snapshot {
                meta: SnapshotMeta {
                    index: self.index(n),
                    term: self.term(n),
                    membership: self.membership(),
                },
            },
            11 => Body::RejoinProbe,
            _ => Body::RejoinProbeResponse {
                empty_log: self.chance(2),
                members: self.membership(),
            },
        }
    }

    /// Any message to `n`, mostly addressed to it.
    fn anything(&mut self, n: &RaftCore) -> Message {
        let term = self.term(n);
        Message {
            from: self.node(n),
            to: if self.chance(12) {
                self.node(n)
            } else {
                n.id()
            },
            term,
            body: self.body(n, term),
        }
    }

    /// A message no correct peer sends, whatever the state of `n`: each
    /// kind of defect the core refuses.
    fn malformed(&mut self, n: &RaftCore, fixture: Fixture) -> Message {
        let me = n.id();
        let term = self.term(n);
        let from = self.pick(&[0, 1, 2, 3].map(|p| if p == me { 2 } else { p }));
        let mut m = Message {
            from,
            to: me,
            term,
            body: self.body(n, term),
        };
        let leads = fixture == Fixture::Leader;
        match self.below(if leads { 9 } else { 7 }) {
            0 => self.bad_sender(n, &mut m),
            1 => self.bad_recipient(n, &mut m),
            2 => self.unreachable_index(&mut m),
            3 => self.misnumbered_entries(n, &mut m),
            4 => self.impossible_entry_terms(n, &mut m),
            5 => self.config_entry_garbage(n, &mut m),
            6 => self.impossible_snapshot_point(n, &mut m),
            7 => self.answer_beyond_log(n, &mut m),
            _ => self.second_leader_or_read_round(&mut m),
        }
        m
    }

    /// A sender that is no other member.
    fn bad_sender(&mut self, n: &RaftCore, m: &mut Message) {
        let me = n.id();
        m.from = self.pick(&[me, MAX_MEMBERS, MAX_MEMBERS + 1, u32::MAX]);
    }

    /// A recipient that is not this member.
    fn bad_recipient(&mut self, n: &RaftCore, m: &mut Message) {
        let me = n.id();
        m.to = self.pick(&[me + 1, MAX_MEMBERS, u32::MAX]);
    }

    /// An index no log can reach.
    fn unreachable_index(&mut self, m: &mut Message) {
        let huge = self.pick(&[MAX_INDEX + 1, u64::MAX - 1, u64::MAX]);
        m.body = match self.below(6) {
            0 => Body::Vote {
                last_index: huge,
                last_term: 1,
                transfer: false,
            },
            1 => Body::PreVote {
                last_index: huge,
                last_term: T,
            },
            2 => Body::Heartbeat {
                commit: self.pick(&[huge, 1]),
                leader_commit: huge,
                read_round: 0,
            },
            3 => Body::Snapshot {
                meta: SnapshotMeta::at(huge, m.term.min(T)),
            },
            4 => Body::AppendResponse {
                result: AppendResult::Accepted { match_index: huge },
                voter: true,
            },
            _ => Body::Append {
                prev_index: huge,
                prev_term: 1,
                entries: vec![],
                commit: 0,
            },
        };
    }

    /// Entries that do not follow prev_index one by one.
    fn misnumbered_entries(&mut self, n: &RaftCore, m: &mut Message) {
        let prev_index = self.index(n).min(MAX_INDEX - 8);
        let mut entries: Vec<Entry> = (0..=self.below(3))
            .map(|i| entry(prev_index + 1 + i, 1))
            .collect();
        let at = self.below(entries.len() as u64) as usize;
        let far = self.rng.next_u64() | (1 << 63);
        entries[at].index = self.pick(&[0, prev_index, prev_index + 3 + at as u64, u64::MAX, far]);
        m.body = Body::Append {
            prev_index,
            prev_term: 1,
            entries,
            commit: 0,
        };
    }

    /// Entry terms no leader writes: above the message's term, zero,
    /// decreasing, or below the entry they follow.
    fn impossible_entry_terms(&mut self, n: &RaftCore, m: &mut Message) {
        let msg_term = m.term.clamp(2, u64::MAX - 1);
        m.term = msg_term;
        let prev_index = n.log().last_index();
        let prev_term = self.pick(&[msg_term, msg_term - 1]);
        let terms = match self.below(4) {
            0 => vec![msg_term + 1],
            1 => vec![0],
            2 => vec![msg_term, msg_term - 1],
            _ => vec![prev_term - 1],
        };
        m.body = Body::Append {
            prev_index,
            prev_term,
            entries: terms
                .iter()
                .enumerate()
                .map(|(i, &t)| entry(prev_index + 1 + i as Index, t))
                .collect(),
            commit: 0,
        };
    }

    /// A config entry that is no configuration.
    fn config_entry_garbage(&mut self, n: &RaftCore, m: &mut Message) {
        let prev_index = n.log().last_index();
        m.term = m.term.max(1);
        m.body = Body::Append {
            prev_index,
            prev_term: n.log().last_term(),
            entries: vec![Entry {
                index: prev_index + 1,
                term: m.term,
                kind: EntryKind::Config,
                data: [
                    Bytes::new(),
                    Bytes::from_static(b"garbage"),
                    Bytes::from_static(&[0; 16]),
                    Membership::new([], [1]).encode(),
                    Bytes::from_static(&[1; 17]),
                ][self.below(5) as usize]
                    .clone(),
            }],
            commit: 0,
        };
    }

    /// A snapshot point no leader has: of a later term than the leader's,
    /// of term 0, or a configuration without voters.
    fn impossible_snapshot_point(&mut self, n: &RaftCore, m: &mut Message) {
        let index = n.log().commit() + 1 + self.below(5);
        let t = m.term.min(u64::MAX - 1);
        m.term = t;
        m.body = Body::Snapshot {
            meta: match self.below(3) {
                0 => SnapshotMeta::at(index, t + 1),
                1 => SnapshotMeta::at(index, 0),
                _ => SnapshotMeta {
                    index,
                    term: t.min(1),
                    membership: Membership::new([], [1, 2]),
                },
            },
        };
    }

    /// An answer about entries the leader never had.
    fn answer_beyond_log(&mut self, n: &RaftCore, m: &mut Message) {
        let last = n.log().last_index();
        let beyond = last + 1 + self.below(3);
        m.term = T;
        m.body = Body::AppendResponse {
            result: match self.below(3) {
                0 => AppendResult::Accepted {
                    match_index: beyond,
                },
                1 => AppendResult::Rejected {
                    rejected_index: beyond,
                    hint_index: 0,
                    hint_term: 0,
                },
                _ => AppendResult::Rejected {
                    rejected_index: last,
                    hint_index: beyond,
                    hint_term: 0,
                },
            },
            voter: true,
        };
    }

    /// A read round, or a second leader, in the leader's term.
    fn second_leader_or_read_round(&mut self, m: &mut Message) {
        m.term = T;
        m.body = match self.below(3) {
            0 => Body::HeartbeatResponse {
                read_round: 1 + self.below(3),
                voter: true,
            },
            1 => heartbeat(0),
            _ => Body::Append {
                prev_index: 0,
                prev_term: 0,
                entries: vec![],
                commit: 0,
            },
        };
    }
}

// ----- the runs -----

/// One seed of the *malformed* generator on `fixture`: every message is
/// refused and changes nothing; the leader's next message is then answered
/// as by a member that never saw them.
fn run_malformed(fixture: Fixture, seed: u64, trace: &mut String) {
    let mut g = Gen {
        rng: SplitMix64::new(seed),
    };
    let mut n = fixture.build();
    let before = format!("{n:?}");
    for _ in 0..MESSAGES_PER_SEED {
        let m = g.malformed(&n, fixture);
        let _ = writeln!(trace, "  {m:?}");
        let refused = n.try_step(m.clone());
        assert!(refused.is_err(), "taken: {m:?}");
        assert!(!n.has_ready(), "a refused message left output: {m:?}");
        assert_eq!(format!("{n:?}"), before, "a refused message changed {m:?}");
    }
    let mut pristine = fixture.build();
    for m in fixture.continuation(&n) {
        n.try_step(m.clone())
            .expect("the leader's message is taken");
        pristine.step(m);
    }
    let (rd, expected) = (ready(&mut n), ready(&mut pristine));
    assert_eq!(format!("{rd:?}"), format!("{expected:?}"));
}

/// One seed of the *anything* generator on `fixture`: whatever the member
/// takes or refuses, it keeps its invariants, and the real cluster's next
/// message (when the member is still in its term) is handled.
fn run_anything(fixture: Fixture, seed: u64, trace: &mut String) {
    let mut g = Gen {
        rng: SplitMix64::new(seed),
    };
    let mut n = fixture.build();
    let mut watch = Watch::of(&n);
    watch.check(&n);
    for _ in 0..MESSAGES_PER_SEED {
        let m = g.anything(&n);
        let _ = writeln!(trace, "  {m:?}");
        let _ = n.try_step(m);
        watch.drive(&mut n);
        if g.chance(4) {
            n.tick();
            watch.drive(&mut n);
        }
        if g.chance(6) {
            n.compact(n.log().commit());
            watch.check(&n);
        }
    }
    if n.term() == T {
        for m in fixture.continuation(&n) {
            let _ = writeln!(trace, "  then {m:?}");
            let _ = n.try_step(m);
            watch.drive(&mut n);
        }
    }
    for _ in 0..100 {
        n.tick();
        watch.drive(&mut n);
    }
}

/// Runs `run` for every fixture and seed (or only `MALFORMED_SEED`),
/// naming the fixture, the seed and the messages of the first failure.
fn for_every_seed(name: &str, run: fn(Fixture, u64, &mut String)) {
    let seeds: Vec<u64> = match std::env::var("MALFORMED_SEED") {
        Ok(s) => vec![s.parse().expect("MALFORMED_SEED is a number")],
        Err(_) => (0..SEEDS).collect(),
    };
    for fixture in FIXTURES {
        for &seed in &seeds {
            let mut trace = String::new();
            if let Err(e) = catch_unwind(AssertUnwindSafe(|| run(fixture, seed, &mut trace))) {
                let why = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                panic!(
                    "{name} {fixture:?} seed {seed} failed: {why}\nafter these messages:\n{trace}\
                     rerun with MALFORMED_SEED={seed}"
                );
            }
        }
    }
}

/// Messages no correct peer sends are refused, in every role, and change
/// nothing: not the term, the vote, the log nor the timers, so the leader's
/// next message is answered exactly as without them.
#[test]
fn malformed_messages_are_refused_and_change_nothing() {
    for_every_seed("malformed", run_malformed);
}

/// Messages with any field values, in every role, never panic the member
/// nor break its invariants (a contiguous log of non-decreasing terms no
/// later than its own, commit within the log and never lowered, one vote
/// per term, entries applied in order), and the real leader's next message
/// is still handled.
#[test]
fn any_message_keeps_the_members_invariants() {
    for_every_seed("anything", run_anything);
}

/// The edges by hand: each of these panicked ("attempt to add with
/// overflow") before the core checked its messages.
#[test]
fn edge_values_are_refused() {
    let cases: Vec<(Fixture, Body, Term)> = vec![
        // `prev_index + 1 + i` in the contiguity check (core.rs).
        (
            Fixture::Follower,
            Body::Append {
                prev_index: u64::MAX,
                prev_term: 1,
                entries: vec![entry(0, 1)],
                commit: 0,
            },
            T,
        ),
        // `meta.index + 1` for the next index to apply
        // (`RaftLog::restore_snapshot`).
        (
            Fixture::Follower,
            Body::Snapshot {
                meta: SnapshotMeta::at(u64::MAX, 1),
            },
            T,
        ),
        // Taken, it let an append of entry `u64::MAX` committing it
        // through, and then `commit + 1` overflowed when applying
        // (`RaftLog::take_committed`).
        (
            Fixture::Follower,
            Body::Snapshot {
                meta: SnapshotMeta::at(u64::MAX - 1, T),
            },
            T,
        ),
        // `match_index + 1` for the next index to send (`Progress::accepted`).
        (Fixture::Leader, accepted(u64::MAX), T),
        // `probe_at + 1` with the hint as the probe point
        // (`on_append_response`).
        (
            Fixture::Leader,
            Body::AppendResponse {
                result: AppendResult::Rejected {
                    rejected_index: u64::MAX,
                    hint_index: u64::MAX,
                    hint_term: 0,
                },
                voter: true,
            },
            T,
        ),
    ];
    for (fixture, body, term) in cases {
        let mut n = fixture.build();
        let to = n.id();
        let m = msg(if to == 0 { 1 } else { 0 }, to, term, body);
        assert!(n.try_step(m.clone()).is_err(), "taken: {m:?}");
        for _ in 0..100 {
            n.tick();
            ready(&mut n);
        }
    }
}
