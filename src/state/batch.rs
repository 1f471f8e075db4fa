//! One apply batch: the commands of consecutive log entries applied over an
//! overlay (later commands see earlier ones), then written to sled in one
//! atomic batch with the applied index, the history, the space counts, and
//! history trimming; a frozen snapshot gets the before images first.

use prost::Message as _;

use super::apply::{self, Overlay, Reads};
use super::command::{Applied, Command, Op, Output};
use super::keys::{data_key, history_event_key, history_key, meta_key, HISTORY};
use super::space::{nospace_refusal, Counts};
use super::{applied_value, encode_events, KvState, StateError, APPLY_BATCH_BYTES, MEMBERSHIP};
use crate::raft::{Entry, EntryKind};

/// What a batch changes besides the data: the cluster id and the counts.
struct Context {
    /// The cluster id before the batch (0: none yet).
    known_cluster: u64,
    /// A cluster id bootstrapped in this batch.
    cluster_id: Option<u64>,
    /// The configuration the batch's config entries leave, if any.
    membership: Option<crate::raft::Membership>,
    /// The counts, alarms included, as the batch goes.
    counts: Counts,
}

impl Context {
    /// Applies one entry's command.
    fn apply_entry(
        &mut self,
        overlay: &mut Overlay<'_>,
        entry: &Entry,
        reads: Reads,
    ) -> Result<Applied, StateError> {
        let mut events = Vec::new();
        let nospace =
            (!self.counts.alarms.is_empty()).then(|| nospace_refusal(&self.counts.alarms));
        let index = entry.index;
        let output = match entry.kind {
            EntryKind::Noop => Output::None,
            EntryKind::Config => {
                // Recorded with the data, so that a snapshot of this state
                // carries the configuration as of its applied index.
                self.membership = crate::raft::Membership::decode(&entry.data).or(self.membership);
                Output::None
            }
            EntryKind::Normal => match Command::decode(entry.data.as_ref()).ok().and_then(|c| c.op)
            {
                Some(Op::Put(_)) if nospace.is_some() => {
                    Output::Refused(nospace.unwrap_or_default())
                }
                Some(Op::Put(req)) => Output::Put(apply::put(overlay, index, &req, &mut events)?),
                Some(Op::Delete(req)) => {
                    let (response, more) = apply::delete(overlay, index, &req, &mut events)?;
                    Output::Delete { response, more }
                }
                Some(Op::Txn(req)) => {
                    match apply::txn(overlay, index, &req, reads, nospace.as_deref(), &mut events)?
                    {
                        Ok(resp) => Output::Txn(resp),
                        Err(refusal) => Output::Refused(refusal),
                    }
                }
                Some(Op::Bootstrap(b)) => {
                    // The first bootstrap wins; one from a leader that did
                    // not know of it changes nothing.
                    if self.known_cluster == 0 && self.cluster_id.is_none() {
                        self.cluster_id = Some(b.cluster_id);
                    }
                    Output::None
                }
                // Turned into a config entry by the leader; a command that
                // reached the log as such changes nothing.
                Some(Op::Member(_)) => Output::None,
                Some(Op::Alarm(alarm)) => {
                    if alarm.raise {
                        self.counts.alarms.insert(alarm.member);
                    } else {
                        self.counts.alarms.remove(&alarm.member);
                    }
                    Output::None
                }
                None => {
                    tracing::error!(index, "log entry does not decode; it changes nothing");
                    Output::Undecodable
                }
            },
        };
        Ok(Applied {
            index,
            term: entry.term,
            output,
            events,
        })
    }
}

/// The writes of a batch, and the keys they touch (for before images).
struct Writes {
    batch: sled::Batch,
    touched: Option<Vec<Vec<u8>>>,
}

impl Writes {
    fn put(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        if let Some(touched) = &mut self.touched {
            touched.push(key.clone());
        }
        match value {
            Some(v) => self.batch.insert(key, v),
            None => self.batch.remove(key),
        }
    }
}

impl KvState {
    /// Applies the first of `entries` in one atomic batch, with the applied
    /// index of the last one applied, and returns what each produced: as
    /// many as make about [`APPLY_BATCH_BYTES`] of changes, and at least one.
    /// `reads` tells, per index, whether a transaction's reads are answered
    /// here. Call again with the rest.
    pub fn apply(
        &self,
        entries: &[Entry],
        reads: impl Fn(u64) -> Reads,
    ) -> Result<Vec<Applied>, StateError> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let _applying = self.applying.lock().unwrap_or_else(|e| e.into_inner());
        let tree = self.read().tree.clone();
        let mut overlay = Overlay::new(&tree);
        let mut ctx = Context {
            known_cluster: self.cluster_id(),
            cluster_id: None,
            membership: None,
            counts: Counts {
                stored: self.space.stored(),
                history: self.space.history(),
                alarms: self.space.alarms(),
            },
        };
        let mut results = Vec::with_capacity(entries.len());
        let mut change_bytes = 0usize;
        for entry in entries {
            if change_bytes >= APPLY_BATCH_BYTES {
                break;
            }
            overlay.keep_command();
            let applied = ctx.apply_entry(&mut overlay, entry, reads(entry.index))?;
            change_bytes +=
                applied.events.iter().map(apply::event_bytes).sum::<usize>() + entry.data.len();
            results.push(applied);
        }
        self.write_batch(&tree, overlay, &results, ctx)?;
        Ok(results)
    }

    /// Writes the batch: data, history, applied index, cluster id, counts,
    /// and history trimming; then makes it the state readers see.
    fn write_batch(
        &self,
        tree: &sled::Tree,
        overlay: Overlay<'_>,
        results: &[Applied],
        mut ctx: Context,
    ) -> Result<(), StateError> {
        let last = results
            .last()
            .map(|r| (r.index, r.term))
            .unwrap_or_default();
        let freeze = self
            .freeze
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut writes = Writes {
            batch: sled::Batch::default(),
            touched: freeze.is_some().then(Vec::new),
        };
        let (changes, data_delta) = overlay.into_changes();
        for (key, value) in changes {
            writes.put(data_key(&key), value.map(|v| v.encode_to_vec()));
        }
        let mut history_added = 0u64;
        for r in results {
            for (n, event) in r.events.iter().enumerate() {
                let key = history_event_key(r.index, n as u32).to_vec();
                let value = encode_events(std::slice::from_ref(event));
                history_added += (key.len() + value.len()) as u64;
                writes.put(key, Some(value));
            }
        }
        ctx.counts.stored = (ctx.counts.stored as i64 + data_delta).max(0) as u64 + history_added;
        ctx.counts.history += history_added;
        writes.put(
            meta_key("applied"),
            Some(applied_value(last.0, last.1).to_vec()),
        );
        if let Some(id) = ctx.cluster_id {
            writes.put(meta_key("cluster"), Some(id.to_be_bytes().to_vec()));
        }
        if let Some(m) = ctx.membership {
            writes.put(meta_key(MEMBERSHIP), Some(m.encode().to_vec()));
        }
        // Not while a snapshot is frozen: it would need before images of
        // all of the trimmed history.
        let new_floor = match freeze {
            None => self.trim_history(tree, last.0, &mut writes.batch, &mut ctx.counts)?,
            Some(_) => None,
        };
        ctx.counts.store(&mut |k, v| writes.put(k, Some(v)));
        if let (Some(freeze), Some(touched)) = (&freeze, &writes.touched) {
            for key in touched {
                freeze.save_before_image(tree, key)?;
            }
        }
        let mut active = self.write();
        active.tree.apply_batch(writes.batch)?;
        active.applied_index = last.0;
        active.applied_term = last.1;
        if let Some(id) = ctx.cluster_id {
            active.cluster_id = id;
        }
        if let Some(floor) = new_floor {
            active.history_floor = floor;
        }
        self.publish(&active);
        self.space.set(&ctx.counts);
        Ok(())
    }

    /// Trims the oldest history, whole revisions at a time, when it holds
    /// more revisions than its retention (in steps of 1,024, not at every
    /// batch) or more bytes than its budget (down to 90% of it). Returns the
    /// new floor, if it moved.
    fn trim_history(
        &self,
        tree: &sled::Tree,
        applied: u64,
        batch: &mut sled::Batch,
        counts: &mut Counts,
    ) -> Result<Option<u64>, StateError> {
        let floor = self.history_floor();
        let by_count = (applied + 1)
            .saturating_sub(self.history_retention)
            .max(floor);
        let budget = self
            .history_budget
            .load(std::sync::atomic::Ordering::Relaxed);
        let over_budget = counts.history > budget;
        if by_count < floor + 1024 && !over_budget {
            return Ok(None);
        }
        let target_bytes = if over_budget {
            budget / 10 * 9
        } else {
            u64::MAX
        };
        let mut new_floor = floor;
        for item in tree.range(&history_key(0)[..]..&[HISTORY + 1][..]) {
            let (k, v) = item?;
            let rev = super::keys::history_revision(&k)
                .ok_or_else(|| StateError::corrupt(&k, "bad history key"))?;
            let needed = rev < by_count || counts.history > target_bytes;
            // Whole revisions: once the bounds are met, stop at the next.
            if !needed && rev >= new_floor {
                break;
            }
            let size = (k.len() + v.len()) as u64;
            counts.history = counts.history.saturating_sub(size);
            counts.stored = counts.stored.saturating_sub(size);
            batch.remove(k);
            new_floor = new_floor.max(rev + 1);
        }
        if new_floor == floor {
            return Ok(None);
        }
        batch.insert(meta_key("floor"), &new_floor.to_be_bytes()[..]);
        Ok(Some(new_floor))
    }
}
