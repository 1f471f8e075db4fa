//! The in-memory Raft log: a snapshot point followed by entries, with the
//! commit index and the boundary between what is durable and what is not.

use super::membership::Membership;
use super::types::{Entry, EntryKind, Index, SnapshotMeta, Term};

/// The log as the core sees it. Every entry after the snapshot is held in
/// memory; compaction keeps that bounded.
#[derive(Debug, Clone)]
pub struct RaftLog {
    /// Everything up to and including this point is covered by a snapshot.
    snapshot: SnapshotMeta,
    /// The entries after the snapshot: `entries[i].index == snapshot.index + 1 + i`.
    entries: Vec<Entry>,
    /// The highest index known to be committed.
    commit: Index,
    /// The highest index known to be durable.
    stable: Index,
    /// A snapshot received but not yet handed to the driver.
    pending_snapshot: Option<SnapshotMeta>,
    /// The next index to hand to the state machine.
    apply_next: Index,
    /// Bytes of entry data held (for size-based compaction).
    data_bytes: u64,
    /// The config entries held, in index order: the configuration in force
    /// is the last one (or the snapshot's), found without a scan.
    configs: Vec<(Index, Membership)>,
}

fn data_len(entries: &[Entry]) -> u64 {
    entries.iter().map(|e| e.data.len() as u64).sum()
}

/// The configuration an entry carries, if it is a config entry. A config
/// entry whose data does not decode (never written by this code) counts as
/// none.
fn config_of(e: &Entry) -> Option<(Index, Membership)> {
    (e.kind == EntryKind::Config)
        .then(|| Membership::decode(&e.data))
        .flatten()
        .map(|m| (e.index, m))
}

impl RaftLog {
    /// A log restored from durable storage: the snapshot, the entries after
    /// it, and the index the state machine has applied (all of it committed).
    pub fn restore(snapshot: SnapshotMeta, entries: Vec<Entry>, applied: Index) -> Self {
        let last = snapshot.index + entries.len() as Index;
        assert!(
            entries
                .iter()
                .enumerate()
                .all(|(i, e)| e.index == snapshot.index + 1 + i as Index),
            "restored entries must follow the snapshot without gaps"
        );
        assert!(
            applied >= snapshot.index && applied <= last,
            "applied index {applied} outside the restored log ({}..={last})",
            snapshot.index
        );
        RaftLog {
            configs: entries.iter().filter_map(config_of).collect(),
            data_bytes: data_len(&entries),
            snapshot,
            entries,
            commit: applied,
            stable: last,
            pending_snapshot: None,
            apply_next: applied + 1,
        }
    }

    /// The snapshot point.
    pub fn snapshot(&self) -> SnapshotMeta {
        self.snapshot
    }

    /// The first index held as an entry (snapshot index + 1).
    pub fn first_index(&self) -> Index {
        self.snapshot.index + 1
    }

    /// The last index in the log (the snapshot's if there are no entries).
    pub fn last_index(&self) -> Index {
        self.snapshot.index + self.entries.len() as Index
    }

    /// The term of the last entry.
    pub fn last_term(&self) -> Term {
        self.entries.last().map_or(self.snapshot.term, |e| e.term)
    }

    /// The commit index.
    pub fn commit(&self) -> Index {
        self.commit
    }

    /// The highest durable index.
    pub fn stable(&self) -> Index {
        self.stable
    }

    /// The configuration in force: the last config entry, committed or not
    /// (a change takes effect when appended), else the snapshot's. Empty
    /// when the log never recorded one.
    pub fn membership(&self) -> Membership {
        self.configs
            .last()
            .map_or(self.snapshot.membership, |&(_, m)| m)
    }

    /// The index of the last config entry held (the snapshot's index when
    /// the configuration comes from it).
    pub fn membership_index(&self) -> Index {
        self.configs.last().map_or(self.snapshot.index, |&(i, _)| i)
    }

    /// The configuration as of `index` (at least the snapshot's index).
    pub fn membership_at(&self, index: Index) -> Membership {
        self.configs
            .iter()
            .rev()
            .find(|&&(i, _)| i <= index)
            .map_or(self.snapshot.membership, |&(_, m)| m)
    }

    /// Whether nothing was ever appended or installed.
    pub fn is_empty(&self) -> bool {
        self.last_index() == 0
    }

    /// The term of the entry at `index`, if the log still knows it.
    pub fn term(&self, index: Index) -> Option<Term> {
        if index == self.snapshot.index {
            return Some(self.snapshot.term);
        }
        self.get(index).map(|e| e.term)
    }

    /// The entry at `index`, if held.
    pub fn get(&self, index: Index) -> Option<&Entry> {
        if index <= self.snapshot.index {
            return None;
        }
        self.entries.get((index - self.snapshot.index - 1) as usize)
    }

    /// Whether the log holds an entry (or snapshot point) at `index` of `term`.
    pub fn matches(&self, index: Index, term: Term) -> bool {
        self.term(index) == Some(term)
    }

    /// Whether a log ending at (`last_index`, `last_term`) is at least as
    /// up-to-date as this one (Raft §5.4.1).
    pub fn is_up_to_date(&self, last_index: Index, last_term: Term) -> bool {
        last_term > self.last_term()
            || (last_term == self.last_term() && last_index >= self.last_index())
    }

    /// Entries from `lo` up to at most `max_count` entries and about
    /// `max_bytes` bytes (at least one entry when any exists). `None` when
    /// `lo` is compacted away.
    pub fn entries_from(
        &self,
        lo: Index,
        max_count: usize,
        max_bytes: usize,
    ) -> Option<Vec<Entry>> {
        if lo <= self.snapshot.index {
            return None;
        }
        let start = (lo - self.snapshot.index - 1) as usize;
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for entry in self.entries.iter().skip(start).take(max_count) {
            if !out.is_empty() && bytes + entry.data.len() > max_bytes {
                break;
            }
            bytes += entry.data.len();
            out.push(entry.clone());
        }
        Some(out)
    }

    /// Bytes of entry data held.
    pub fn data_bytes(&self) -> u64 {
        self.data_bytes
    }

    /// All entries held, for inspection.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Appends an entry at the end (leader side).
    pub fn append(&mut self, entry: Entry) {
        assert_eq!(entry.index, self.last_index() + 1, "append out of order");
        self.data_bytes += entry.data.len() as u64;
        self.configs.extend(config_of(&entry));
        self.entries.push(entry);
    }

    /// The follower side of AppendEntries: if the log holds
    /// (`prev_index`, `prev_term`), merge `entries` (truncating at the first
    /// conflict) and return the index of the last new entry.
    pub fn try_append(
        &mut self,
        prev_index: Index,
        prev_term: Term,
        entries: &[Entry],
    ) -> Option<Index> {
        if !self.matches(prev_index, prev_term) {
            return None;
        }
        let last_new = prev_index + entries.len() as Index;
        let conflict = entries
            .iter()
            .find(|e| !self.matches(e.index, e.term))
            .map(|e| e.index);
        if let Some(conflict) = conflict {
            assert!(
                conflict > self.commit,
                "entry {conflict} conflicts with the committed prefix (commit {})",
                self.commit
            );
            self.truncate_after(conflict - 1);
            let skip = (conflict - prev_index - 1) as usize;
            self.data_bytes += data_len(&entries[skip..]);
            self.configs
                .extend(entries[skip..].iter().filter_map(config_of));
            self.entries.extend(entries[skip..].iter().cloned());
        }
        Some(last_new)
    }

    /// Drops every entry after `index`.
    fn truncate_after(&mut self, index: Index) {
        let keep = (index - self.snapshot.index) as usize;
        self.data_bytes -= data_len(&self.entries[keep.min(self.entries.len())..]);
        self.entries.truncate(keep);
        self.configs.retain(|&(i, _)| i <= index);
        self.stable = self.stable.min(index);
    }

    /// The largest index at or below `index` whose term is at most `term`,
    /// with that term (0 when the log no longer knows it). Used to skip a run
    /// of conflicting entries in one round trip.
    pub fn find_conflict_by_term(&self, index: Index, term: Term) -> (Index, Term) {
        let mut i = index.min(self.last_index());
        loop {
            match self.term(i) {
                Some(t) if t > term => i -= 1,
                Some(t) => return (i, t),
                None => return (i, 0),
            }
        }
    }

    /// Raises the commit index (never lowers it).
    pub fn commit_to(&mut self, index: Index) {
        if index > self.commit {
            assert!(
                index <= self.last_index(),
                "commit {index} beyond the last index {}",
                self.last_index()
            );
            self.commit = index;
        }
    }

    /// Replaces the log with a snapshot received from the leader. Returns
    /// false (and only commits) when the log already holds the snapshot's
    /// last entry.
    pub fn restore_snapshot(&mut self, meta: SnapshotMeta) -> bool {
        if meta.index <= self.commit {
            return false;
        }
        if self.matches(meta.index, meta.term) {
            self.commit_to(meta.index);
            return false;
        }
        self.snapshot = meta;
        self.entries.clear();
        self.configs.clear();
        self.data_bytes = 0;
        self.commit = meta.index;
        self.stable = meta.index;
        self.apply_next = meta.index + 1;
        self.pending_snapshot = Some(meta);
        true
    }

    /// Drops the entries up to `index`, which the state machine has applied
    /// and made durable.
    pub fn compact(&mut self, index: Index) {
        if index <= self.snapshot.index {
            return;
        }
        assert!(
            index < self.apply_next && index <= self.stable,
            "compaction to {index} beyond what is applied ({}) or durable ({})",
            self.apply_next - 1,
            self.stable
        );
        let term = self.term(index).expect("compaction point is in the log");
        let membership = self.membership_at(index);
        let drop = (index - self.snapshot.index) as usize;
        self.data_bytes -= data_len(&self.entries[..drop]);
        self.entries.drain(..drop);
        self.configs.retain(|&(i, _)| i > index);
        self.snapshot = SnapshotMeta {
            index,
            term,
            membership,
        };
    }

    /// Takes the received snapshot that must be installed.
    pub fn take_pending_snapshot(&mut self) -> Option<SnapshotMeta> {
        self.pending_snapshot.take()
    }

    /// The entries not yet durable.
    pub fn unstable_entries(&self) -> Vec<Entry> {
        self.entries_from(self.stable + 1, usize::MAX, usize::MAX)
            .unwrap_or_default()
    }

    /// Marks everything up to `index` durable.
    pub fn stable_to(&mut self, index: Index) {
        self.stable = self.stable.max(index.min(self.last_index()));
    }

    /// Takes the committed entries that are not yet handed to the state
    /// machine.
    pub fn take_committed(&mut self) -> Vec<Entry> {
        if self.apply_next > self.commit {
            return Vec::new();
        }
        let out = self
            .entries_from(
                self.apply_next,
                (self.commit + 1 - self.apply_next) as usize,
                usize::MAX,
            )
            .expect("entries to apply are never compacted");
        self.apply_next = self.commit + 1;
        out
    }

    /// The highest index handed to the state machine.
    pub fn handed_out(&self) -> Index {
        self.apply_next - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::types::EntryKind;
    use bytes::Bytes;

    fn entry(index: Index, term: Term) -> Entry {
        Entry {
            index,
            term,
            kind: EntryKind::Normal,
            data: Bytes::new(),
        }
    }

    fn log_with(terms: &[Term]) -> RaftLog {
        let entries = terms
            .iter()
            .enumerate()
            .map(|(i, t)| entry(i as Index + 1, *t))
            .collect();
        RaftLog::restore(SnapshotMeta::default(), entries, 0)
    }

    /// A conflicting suffix is replaced; a matching one is left alone.
    #[test]
    fn try_append_truncates_only_on_conflict() {
        let mut log = log_with(&[1, 1, 2, 2]);
        assert_eq!(log.try_append(2, 1, &[entry(3, 2)]), Some(3));
        assert_eq!(log.last_index(), 4, "a matching append must not truncate");
        assert_eq!(log.try_append(2, 1, &[entry(3, 3)]), Some(3));
        assert_eq!(log.last_index(), 3);
        assert_eq!(log.term(3), Some(3));
        assert_eq!(log.stable(), 2, "truncation moves the durable point back");
        assert_eq!(log.try_append(5, 3, &[]), None, "a gap is rejected");
        assert_eq!(
            log.try_append(3, 2, &[]),
            None,
            "a term mismatch is rejected"
        );
    }

    /// The hint skips every entry of a term the leader does not have there.
    #[test]
    fn find_conflict_by_term_skips_a_term() {
        let log = log_with(&[1, 1, 3, 3, 3]);
        assert_eq!(log.find_conflict_by_term(5, 2), (2, 1));
        assert_eq!(log.find_conflict_by_term(5, 3), (5, 3));
        assert_eq!(log.find_conflict_by_term(9, 3), (5, 3));
    }

    /// Compaction keeps the terms of the snapshot point and what follows.
    #[test]
    fn compact_and_snapshot_restore() {
        let mut log = log_with(&[1, 1, 2, 2]);
        log.commit_to(3);
        assert_eq!(log.take_committed().len(), 3);
        log.compact(2);
        assert_eq!(log.first_index(), 3);
        assert_eq!(log.term(2), Some(1));
        assert_eq!(log.term(1), None);
        assert!(log.entries_from(2, 10, usize::MAX).is_none());
        assert!(log.restore_snapshot(SnapshotMeta::at(9, 4)));
        assert_eq!(log.last_index(), 9);
        assert_eq!(log.commit(), 9);
        assert_eq!(log.take_pending_snapshot(), Some(SnapshotMeta::at(9, 4)));
    }
}
