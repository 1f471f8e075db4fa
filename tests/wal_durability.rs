//! Durability that needs `fdatasync`: the real write-ahead log over a
//! simulated disk (`storage::sim_fs`) whose power fails at random moments,
//! dropping whatever was not synced and tearing the last write. Every
//! append and compaction the log acknowledged (returned Ok) must be there
//! after the power comes back; one that failed may be there in part (a
//! prefix of its records), whole, or not at all. With the sync of appends
//! switched off, acknowledged entries and votes are lost and the test
//! fails: a SIGKILL keeps the page cache, so only this test can tell.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use kvstore::raft::{Entry, EntryKind, HardState, SnapshotMeta, SplitMix64, Voting};
use kvstore::storage::sim_fs::SimFs;
use kvstore::storage::wal::{Wal, WalState};

/// The log as the appends and compactions acknowledged so far make it.
#[derive(Clone, Debug, PartialEq)]
struct Model {
    hard_state: HardState,
    snapshot: SnapshotMeta,
    entries: Vec<Entry>,
}

impl Model {
    fn last_index(&self) -> u64 {
        self.snapshot.index + self.entries.len() as u64
    }

    fn term_at(&self, index: u64) -> u64 {
        if index == self.snapshot.index {
            return self.snapshot.term;
        }
        self.entries[(index - self.snapshot.index - 1) as usize].term
    }

    fn set_hard_state(&mut self, hs: HardState) {
        self.hard_state = hs;
    }

    fn append(&mut self, e: &Entry) {
        self.entries
            .truncate((e.index - self.snapshot.index - 1) as usize);
        self.entries.push(e.clone());
    }

    fn compact(&mut self, to: u64) {
        let term = self.term_at(to);
        let drop = (to - self.snapshot.index) as usize;
        self.entries.drain(..drop);
        self.snapshot = SnapshotMeta::at(to, term);
    }

    fn of(state: &WalState) -> Model {
        Model {
            hard_state: state.hard_state,
            snapshot: state.snapshot,
            entries: state.entries.clone(),
        }
    }
}

/// One operation of the log, as the model applies it record by record.
enum Step {
    HardState(HardState),
    Entry(Entry),
}

fn entry(index: u64, term: u64, rng: &mut SplitMix64) -> Entry {
    let len = rng.below(64) as usize;
    Entry {
        index,
        term,
        kind: EntryKind::Normal,
        data: Bytes::from(vec![(index % 251) as u8; len]),
    }
}

/// Runs one seeded schedule; panics if the log loses what it acknowledged.
fn run(seed: u64, skip_sync: bool) {
    let mut rng = SplitMix64::new(seed);
    let fs = SimFs::new();
    let dir = Path::new("/wal");
    let open = |fs: &SimFs| {
        let (mut wal, state) = Wal::open_on(Arc::new(fs.clone()), dir).expect("open");
        if skip_sync {
            wal.skip_sync_for_tests();
        }
        (wal, state)
    };
    let (mut wal, state) = open(&fs);
    let mut model = Model::of(&state);
    for op in 0..60 {
        // Sometimes the power fails during this operation's sync.
        let fails = rng.below(8) == 0;
        if fails {
            fs.fail_sync(1 + rng.below(2));
        }
        let before = model.clone();
        // The states the log may come back in if this operation fails.
        let mut maybe = vec![before.clone()];
        let ok = if rng.below(6) == 0 && model.last_index() > model.snapshot.index {
            let to =
                model.snapshot.index + 1 + rng.below(model.last_index() - model.snapshot.index);
            let mut after = model.clone();
            after.compact(to);
            let ok = wal
                .compact(after.hard_state, after.snapshot, &after.entries)
                .is_ok();
            maybe.push(after.clone());
            if ok {
                model = after;
            }
            ok
        } else {
            let mut steps = Vec::new();
            let mut hs = model.hard_state;
            if rng.below(3) == 0 {
                hs.term += 1 + rng.below(2);
                hs.vote = (rng.below(2) == 0).then(|| rng.below(3) as u32);
                hs.voting = Voting::Enabled;
                steps.push(Step::HardState(hs));
            }
            // Append after a random point past the snapshot (a follower's
            // truncation when it is before the end).
            let from =
                model.snapshot.index + 1 + rng.below(model.last_index() - model.snapshot.index + 1);
            let n = rng.below(5);
            let entries: Vec<Entry> = (from..from + n)
                .map(|i| entry(i, hs.term.max(1), &mut rng))
                .collect();
            steps.extend(entries.iter().cloned().map(Step::Entry));
            let changed = if steps.iter().any(|s| matches!(s, Step::HardState(_))) {
                Some(hs)
            } else {
                None
            };
            let ok = wal.append(changed, None, &entries).is_ok();
            let mut partial = model.clone();
            for step in &steps {
                match step {
                    Step::HardState(hs) => partial.set_hard_state(*hs),
                    Step::Entry(e) => partial.append(e),
                }
                maybe.push(partial.clone());
            }
            if ok {
                model = partial;
            }
            ok
        };
        if ok && !fails {
            continue;
        }
        // The power fails: what was synced survives, the rest is torn.
        fs.power_loss(&mut rng);
        let (reopened, state) = open(&fs);
        wal = reopened;
        let got = Model::of(&state);
        let candidates: &[Model] = if ok {
            std::slice::from_ref(&model)
        } else {
            &maybe
        };
        assert!(
            candidates.contains(&got),
            "seed {seed}, operation {op}: after a power loss the log holds {} entries to {} (hard state {:?}), but it acknowledged {} to {} (hard state {:?})",
            got.entries.len(),
            got.last_index(),
            got.hard_state,
            model.entries.len(),
            model.last_index(),
            model.hard_state
        );
        model = got;
    }
    // And a power loss at the very end keeps everything acknowledged.
    fs.power_loss(&mut rng);
    let (_, state) = open(&fs);
    assert_eq!(
        Model::of(&state),
        model,
        "seed {seed}: after the final power loss"
    );
}

/// 500 schedules of appends (votes, entries, truncations) and compactions
/// with power failures, some in the middle of a sync: nothing acknowledged
/// is lost.
#[test]
fn acknowledged_entries_and_votes_survive_power_loss() {
    for seed in 0..500 {
        run(seed, false);
    }
}

/// The same schedules with the sync of appends switched off lose
/// acknowledged entries or votes: the test above depends on the sync.
#[test]
fn without_the_sync_power_loss_loses_acknowledged_writes() {
    let lost = (0..500).find(|&seed| std::panic::catch_unwind(|| run(seed, true)).is_err());
    let seed = lost.expect("500 schedules without the sync lost nothing");
    println!("without the sync, seed {seed} lost acknowledged writes");
}
