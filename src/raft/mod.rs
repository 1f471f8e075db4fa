//! The replication core: Raft with ordinal priority.
//!
//! This module is a pure state machine. It has no clock, no sockets, no disk
//! and no randomness of its own: its inputs are messages from peers
//! ([`RaftCore::step`]), clock ticks ([`RaftCore::tick`]), client proposals
//! ([`RaftCore::propose`]), read requests ([`RaftCore::read_index`]) and a few
//! events from the driver (a connection reset, a snapshot sent, a compaction);
//! its outputs are collected in a [`Ready`]. The same code runs in the server
//! (driven by `crate::node`) and in the deterministic simulation
//! (`tests/raft_sim.rs`), which is why it must never reach for I/O.
//!
//! The safety rules are Raft's (Ongaro and Ousterhout, "In Search of an
//! Understandable Consensus Algorithm", 2014; Ongaro's thesis, 2014, for
//! pre-vote, leadership transfer and ReadIndex). Nothing here weakens them.
//! What is ours is *who* campaigns first, and what a member with a lost disk
//! may do.
//!
//! # Members, terms and the log
//!
//! A member's id is its StatefulSet ordinal. The *configuration* (voters
//! and learners, by ordinal; see "Membership changes") lives in the log; a
//! new cluster starts with the voters `0..R` (R = the replica count the
//! StatefulSet asks for). A quorum is any V/2+1 of the V voters of the
//! configuration in force; a learner never counts. Time is divided
//! into terms; each term has at most one leader. Each member keeps a log of
//! entries (index, term, command); an entry is *committed* once it is stored
//! on a quorum in a way that no later leader can lose, and committed entries
//! are applied to the state machine in index order. The revision a client sees
//! is the index of the entry that made a change.
//!
//! # The Ready loop: persist, then send, then apply
//!
//! After feeding inputs the driver calls [`RaftCore::handle_ready`] with its
//! [`ReadyHandler`] (the disk, network and state machine it has), which takes
//! a [`Ready`] and carries it out in this order, the same for the server and
//! the simulation:
//!
//! 0. a leader sends its appends and heartbeats of its current term;
//! 1. persist the snapshot (if the leader sent one), the hard state (term,
//!    vote, voting state) and the new entries, ending in an fsync;
//! 2. call [`RaftCore::advance`], telling the core those are durable;
//! 3. send the other messages;
//! 4. start the snapshot transfers asked for;
//! 5. apply the committed entries;
//! 6. serve the reads that became ready.
//!
//! Step 1 before step 3 is the durability rule: a vote, or the acknowledgement
//! of an entry, is never sent before it is on disk, so a crash cannot make a
//! member forget a promise it made. The leader counts its own log towards a
//! quorum only up to what it has persisted (`advance`), which is why step 0
//! is safe (thesis §10.2.1): a leader's append promises nothing, so the
//! leader writes its own log while the followers write theirs, and a put
//! costs one fsync of latency, not two in a row. The same ordering is
//! what lets concurrent proposals share one append, one fsync and one message
//! per follower (group commit): everything proposed between two Ready calls
//! goes out together.
//!
//! # Elections: the lowest live ordinal campaigns first
//!
//! A follower that hears nothing from a leader for its *election timeout*
//! campaigns. The timeout of member n is
//! `election_ticks + n * election_stagger_ticks + jitter`: member 0 times out
//! first, member 1 a stagger later, and so on, so the lowest live ordinal
//! normally wins and the others find a leader before their own timers fire.
//! Staggering only orders who *tries* first; it never decides who wins (votes
//! do), so it cannot affect safety.
//!
//! * **Pre-vote** (thesis §9.6). Before raising its term, a member asks
//!   whether a quorum would vote for it. Peers answer yes only if the
//!   candidate's log is at least as up to date as theirs, they may vote, and
//!   they hear no leader. A member cut off from the others therefore never
//!   raises its term, and cannot disrupt the cluster when it comes back.
//!   Pre-votes change no state, so they are safe to answer freely.
//! * **Leader stickiness** (the "lease", thesis §4.2.3). A member that heard
//!   from a leader within `election_ticks` ignores vote requests of a higher
//!   term, and a leader ignores them while it holds a quorum. Together with
//!   pre-vote, a flapping member cannot depose a healthy leader. A leader
//!   that heard from no quorum for `election_ticks` steps down.
//! * **Fast failure detection.** When a leader's process dies, the kernel
//!   resets its connections at once. The transport reports that as
//!   [`RaftCore::peer_disconnected`]; a follower whose *leader's* connection
//!   reset forgets the leader (dropping the lease) and, for one election
//!   timeout, is in *fast mode*: it campaigns after
//!   `1 + n * fast_election_stagger_ticks` ticks instead of a whole timeout
//!   (and again as soon if its pre-vote fails), and it refuses the pre-vote
//!   of a higher ordinal whose log is no further ahead than its own, so that
//!   the lowest live ordinal is the one that wins. This is safe because it
//!   still goes through pre-vote and ordinary votes: if the leader is in fact
//!   alive, the peers that still hear it refuse; and refusing a pre-vote
//!   changes no state. A silent failure (a partition, a frozen process)
//!   resets nothing and falls back to the election timeout.
//! * **Voting** (§5.2, §5.4.1). A member grants at most one vote per term,
//!   only to a candidate whose log is at least as up to date as its own
//!   (higher last term, or same last term and at least as long). The vote is
//!   durable before the answer leaves (the Ready order). A candidate with a
//!   quorum of votes leads.
//!
//! # Replication and commitment
//!
//! * A new leader appends a **no-op** entry of its term. An entry of an
//!   earlier term is never committed by counting replicas (§5.4.2, figure 8
//!   of the paper); it becomes committed when an entry of the current term
//!   after it is. The no-op makes that happen at once, so a new leader learns
//!   the commit point without waiting for a client write.
//! * Appends carry (prev_index, prev_term); a follower accepts only if its log
//!   holds that entry (the log matching property, §5.3), truncates at the
//!   first conflicting entry, and never truncates a committed one (asserted).
//!   A rejection carries a hint (the highest index at or below the probe whose
//!   term is at most the leader's there) so a leader skips a whole
//!   conflicting term per round trip.
//! * Flow control per follower: *probe* (one append at a time until the match
//!   point is found), *replicate* (up to `max_inflight` appends pipelined),
//!   *snapshot* (the entries it needs are compacted away; the driver streams a
//!   snapshot). Appends lost in replicate state are noticed after a timeout
//!   and the follower is probed again.
//! * A heartbeat carries `min(commit, follower's match)`: a follower must not
//!   commit entries the leader has not confirmed it holds.
//!
//! # Reads
//!
//! [`RaftCore::read_index`] implements ReadIndex (thesis §6.4): the leader
//! records its commit index, confirms it still leads by a heartbeat round
//! acknowledged by a quorum, and then hands out a [`ReadState`]; the read is
//! served once the state machine has applied that index. A leader that has
//! not yet committed an entry of its term holds reads until it has, since it
//! does not know the commit point before that. Reads waiting in one Ready
//! share one heartbeat round.
//!
//! # Leadership transfer and priority return
//!
//! [`RaftCore::transfer_leadership`] (thesis §3.10): the leader stops taking
//! proposals, brings the target fully up to date, and sends it TimeoutNow; the
//! target campaigns at once in a new term, skipping pre-vote, and marks its
//! vote requests as a transfer so that peers still holding the lease vote
//! anyway. If the target has not taken over within `election_ticks`, the
//! transfer is abandoned and proposals resume. The target still needs a
//! quorum of ordinary votes, so a transfer cannot break election safety.
//!
//! *Priority return* uses it: a leader whose ordinal is above that of a
//! follower that may vote, is replicating, has been answering, and has
//! trailed the commit index by at most a few hundred entries for
//! `priority_return_ticks` (under load a healthy follower is always a few
//! entries behind; the transfer brings it fully up to date before
//! TimeoutNow), hands leadership to the lowest such follower. In steady
//! state pod-0 leads. Priority only ever moves leadership
//! downwards, so two members cannot hand it back and forth. Graceful stop and
//! the operators' `TransferLeadership` RPC use the same mechanism.
//!
//! # A member whose data dir is new
//!
//! A member that starts with an empty data dir may be a new member of a new
//! cluster, or an old member whose volume was lost. In the second case it has
//! forgotten its votes and the entries it acknowledged; if it voted again it
//! could give a second vote in one term, or help elect a leader that lacks
//! entries committed with its help. So a new data dir starts with voting
//! [`Voting::AwaitingPeers`]: it does not vote or campaign, and asks every
//! peer for its term and whether its log is empty ([`Body::RejoinProbe`]).
//!
//! * If **all** logs are empty, nothing was ever committed: this is a new
//!   cluster and the member may vote.
//! * Otherwise it waits ([`Voting::AwaitingLeader`]) for a leader whose term
//!   is at least the highest term any peer reported, and votes again once
//!   its commit index has reached (a) the commit index that leader announced
//!   to it (in an append or heartbeat) and (b) an entry of that leader's
//!   term. (b) covers every entry committed before that term (leader
//!   completeness); (a) covers entries committed in that term with this
//!   member's acknowledgement before the loss, which the leader's commit
//!   index already included. By then the member's log holds every entry it
//!   could have helped commit.
//! * In both cases the member records a vote for itself in the highest
//!   reported term. Every term in which it could have voted before the loss
//!   is known to the candidate it voted for, so it is at most that highest
//!   term: the member never votes twice in one term.
//!
//! The answers of every *voter* are needed (only voters campaign, so only
//! they can know a term this member voted in): the voters of the
//! configurations that peers with a non-empty log report in their latest
//! answers (asked again every round, so a voter removed meanwhile stops
//! being waited for), or — while no answer shows a cluster — the bootstrap
//! voters and every ordinal the StatefulSet asks for now
//! ([`Config::probe_peers`]), so that a cluster that grew past its bootstrap
//! voters is never taken for a new one. Until it may vote, its
//! acknowledgements (of appends, and of read-index rounds) do not count
//! toward a leader's quorum either: a stale leader could otherwise commit
//! over an entry it acknowledged, in a later term, before the loss. It
//! still receives the log, so it catches up while another member is down. The cost is liveness
//! only: a member with a lost volume cannot vote while another member is down.
//!
//! # Snapshots and compaction
//!
//! The state machine (sled) is itself the snapshot. When the log grows past
//! its limits the driver makes the applied state durable and calls
//! [`RaftCore::compact`]; the entries up to that index are dropped. A follower
//! that needs a dropped entry gets a snapshot instead: the core asks for it in
//! [`Ready::send_snapshots`], the driver streams the state machine as of its
//! applied index, and when the follower's driver has received all of it, it
//! steps a [`Body::Snapshot`] message; the core replaces its log (unless it
//! already holds that entry) and hands the snapshot point back in
//! [`Ready::snapshot`] for the driver to install.
//!
//! # Membership changes
//!
//! The configuration is a set of voters and a set of learners (ordinals
//! below [`MAX_MEMBERS`]). We change it **one server at a time** (Ongaro's
//! thesis §4.1) rather than by joint consensus: a StatefulSet scales one
//! pod at a time anyway, each single change needs one entry instead of two,
//! and any two configurations one change apart share a voter in every pair
//! of majorities, which is all election safety needs. The rules:
//!
//! 1. **A configuration is a log entry** ([`EntryKind::Config`], the whole
//!    new configuration). Each member uses the *last* config entry in its
//!    log, committed or not — a change takes effect when appended, not when
//!    committed — or, with none held, the configuration its snapshot point
//!    records (a snapshot carries the configuration as of its index), or
//!    the bootstrap voters for a log that never recorded one. Truncating a
//!    config entry reverts to the one before it. The first leader of a log
//!    without a configuration appends the bootstrap configuration in place
//!    of its no-op, so that from then on it is in the log, not in flags.
//! 2. **One change in flight.** The leader appends a change only when the
//!    last config entry in its log is committed, and only once it has
//!    committed an entry of its own term (the fix to the single-server
//!    algorithm, Ongaro 2015: otherwise a change of an earlier, uncommitted
//!    leader and a new one can form disjoint majorities).
//! 3. **Learners** ([`MembershipChange::AddLearner`]) receive the log and
//!    snapshots like any follower but never vote, never campaign, and their
//!    acknowledgements never count toward a commit, a read-index round or a
//!    leader's quorum check. A learner is **promoted**
//!    ([`MembershipChange::Promote`]) only when it is caught up: it trails
//!    the leader's commit index by at most [`CAUGHT_UP_LAG`] entries, has
//!    answered within an election timeout, and may vote (a learner whose
//!    volume was lost catches up first, as in "A member whose data dir is
//!    new").
//! 4. **Removal** ([`MembershipChange::Remove`]) is refused if it would
//!    remove the last voter, or leave fewer live, voting voters than a
//!    quorum of the new configuration needs ([`MembershipError`]).
//! 5. **A leader that removes itself** keeps leading (replicating, not
//!    counting itself in any majority) until the change commits, then sends
//!    TimeoutNow to the lowest fully caught-up voter and steps down.
//! 6. **A removed member never disrupts.** A member answers a (pre-)vote
//!    request only if the candidate is a member (voter or learner) of its
//!    own configuration in force; otherwise it refuses without looking at
//!    the term, so the request raises no term and wins no vote. (A learner
//!    here is let through to the ordinary checks: it may be a voter in a
//!    configuration this member lags behind, and refusing it could leave no
//!    member able to win.) Once a removal is committed,
//!    a majority of the new voters holds it, and every majority of the old
//!    configuration contains one of them, so the removed member cannot win
//!    even with the votes of members that lag. Its own messages of a higher
//!    term are only ever (pre-)vote requests, which never reach the term
//!    check. A member's own place in its configuration is not consulted
//!    when it answers (thesis §4.2.2).
//! 7. **Who campaigns:** a voter of its configuration; and a member whose
//!    last configuration (uncommitted) removed it but the one before made
//!    it a voter — the leader that removed itself and crashed may be the
//!    only member holding that entry, and without it the voter left behind
//!    could never win (its log is behind). As a candidate it counts only
//!    its configuration's voters, never itself.
//! 8. **Ordinal priority is unchanged:** timeouts stagger by ordinal, and
//!    priority return hands leadership to a lower ordinal only if it is a
//!    voter, so the lowest live voting ordinal leads.
//!
//! The simulation (`tests/raft_sim.rs`, `sim_membership_changes`) drives
//! five processes, three of which bootstrap, through random changes
//! interleaved with crashes, partitions, lost volumes, transfers and
//! compaction, and checks election safety across configurations after every
//! step and every acknowledged entry at the end. Each of rules 1 (switching
//! at commit), 2 (two changes in flight) and 3 (a learner counted) switched
//! off makes seeds break a safety property (`tests/raft_mutations.rs`).
//!
//! # Not handled
//!
//! * Joint consensus (changes of more than one voter at once).
//! * Disk corruption inside a log that reads back with valid checksums, and
//!   more simultaneous volume losses than the rules above can absorb (a
//!   majority of volumes lost loses data, as in any Raft).
//! * Byzantine peers. Peers are trusted; the transport rejects messages from
//!   another cluster, nothing more. Messages that could only come from a
//!   broken peer are refused before they change anything, rather than
//!   allowed to bring a member down or break its own log
//!   ([`RaftCore::try_step`] says why, see [`Malformed`]): a sender that is
//!   no ordinal or the member itself; an index past [`MAX_INDEX`] (so index
//!   arithmetic never overflows); append entries that do not follow
//!   `prev_index` one by one, whose terms decrease or pass the message's
//!   term, or a config entry that holds no configuration; a snapshot point
//!   of a later term than its message's; an answer about entries past the
//!   leader's log or a read round it never started; a second leader in one
//!   term. A well-formed message that lies (a forged term, a forged leader
//!   of the current term) is still believed. A term of `u64::MAX` is
//!   well-formed: it is taken, and no election ever starts from it.
//! * A TimeoutNow that arrives after its transfer was abandoned still makes
//!   the target campaign; that costs an election, never safety.

mod config;
mod core;
mod election;
mod log;
mod membership;
#[cfg_attr(not(feature = "testing"), allow(dead_code))]
pub mod mutations;
mod progress;
mod reads;
mod ready;
mod reconfig;
mod rejoin;
mod replication;
mod rng;
mod transfer;
mod types;
mod validate;

pub use self::core::RaftCore;
pub use config::{Config, Restored, CAUGHT_UP_LAG};
pub use log::RaftLog;
pub use membership::{Membership, MembershipChange, MembershipError, MAX_MEMBERS};
pub use progress::{Progress, ReplicationState};
pub use ready::ReadyHandler;
pub use rng::SplitMix64;
pub use types::*;
pub use validate::{Malformed, MAX_INDEX};
#[cfg(test)]
mod tests;
