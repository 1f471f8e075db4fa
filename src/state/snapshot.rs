//! Snapshots of the applied state, for followers that need entries the log
//! no longer holds.
//!
//! Sending: [`KvState::freeze_snapshot`] copies the active tree into a frozen
//! tree while holding the readers' lock, so the copy is one consistent state
//! (applies wait for the copy). The copy is then streamed at leisure.
//!
//! Receiving: the pairs are written into a new tree; once the core accepts
//! the snapshot, [`KvState::finish_install`] makes it the active tree with one
//! insert and drops the old one. An interrupted transfer leaves the old state
//! untouched.

use super::keys::meta_key;
use super::{applied_value, read_applied, KvState, StateError, ACTIVE_KEY, INSTALLED};
use crate::raft::SnapshotMeta;

const FROZEN_TREE: &[u8] = b"snapshot-out";

/// Stored key-value pairs of the state, in key order.
pub type Chunk = Vec<(Vec<u8>, Vec<u8>)>;

/// A consistent copy of the state, ready to stream.
pub struct FrozenSnapshot {
    tree: sled::Tree,
    /// Where the snapshot ends.
    pub meta: SnapshotMeta,
}

impl FrozenSnapshot {
    /// The pairs in chunks of about `max_bytes`.
    pub fn chunks(&self, max_bytes: usize) -> impl Iterator<Item = Result<Chunk, StateError>> + '_ {
        let mut iter = self.tree.iter();
        let mut done = false;
        std::iter::from_fn(move || {
            if done {
                return None;
            }
            let mut chunk = Vec::new();
            let mut bytes = 0;
            while bytes < max_bytes {
                match iter.next() {
                    Some(Ok((k, v))) => {
                        bytes += k.len() + v.len();
                        chunk.push((k.to_vec(), v.to_vec()));
                    }
                    Some(Err(e)) => return Some(Err(e.into())),
                    None => {
                        done = true;
                        break;
                    }
                }
            }
            if chunk.is_empty() {
                None
            } else {
                Some(Ok(chunk))
            }
        })
    }
}

/// A snapshot being received.
pub struct SnapshotWriter {
    tree: sled::Tree,
    name: Vec<u8>,
}

impl SnapshotWriter {
    /// Stores a chunk of pairs.
    pub fn write(&self, pairs: Vec<(Vec<u8>, Vec<u8>)>) -> Result<(), StateError> {
        let mut batch = sled::Batch::default();
        for (k, v) in pairs {
            batch.insert(k, v);
        }
        self.tree.apply_batch(batch)?;
        Ok(())
    }

    /// Where the received snapshot ends, from its own metadata.
    pub fn meta(&self) -> Result<SnapshotMeta, StateError> {
        let (index, term) = read_applied(&self.tree)?;
        Ok(SnapshotMeta { index, term })
    }
}

impl KvState {
    /// Copies the current state into a frozen tree for sending.
    pub fn freeze_snapshot(&self) -> Result<FrozenSnapshot, StateError> {
        let active = self.read();
        self.db.drop_tree(FROZEN_TREE)?;
        let frozen = self.db.open_tree(FROZEN_TREE)?;
        let mut batch = sled::Batch::default();
        let mut in_batch = 0usize;
        for item in active.tree.iter() {
            let (k, v) = item?;
            in_batch += k.len() + v.len();
            batch.insert(k, v);
            if in_batch > 4 << 20 {
                frozen.apply_batch(std::mem::take(&mut batch))?;
                in_batch = 0;
            }
        }
        frozen.apply_batch(batch)?;
        Ok(FrozenSnapshot {
            tree: frozen,
            meta: SnapshotMeta {
                index: active.applied_index,
                term: active.applied_term,
            },
        })
    }

    /// Starts receiving a snapshot into a new tree.
    pub fn begin_install(&self) -> Result<SnapshotWriter, StateError> {
        // A name no tree has had: the highest state tree number plus one.
        let highest = self
            .db
            .tree_names()
            .iter()
            .filter_map(|name| {
                std::str::from_utf8(name)
                    .ok()?
                    .strip_prefix("kv-")?
                    .parse::<u64>()
                    .ok()
            })
            .max()
            .unwrap_or(1);
        let name = format!("kv-{}", highest + 1).into_bytes();
        let tree = self.db.open_tree(&name)?;
        Ok(SnapshotWriter { tree, name })
    }

    /// Makes a fully received snapshot the state, durably.
    pub fn finish_install(
        &self,
        writer: SnapshotWriter,
        expected: SnapshotMeta,
    ) -> Result<SnapshotMeta, StateError> {
        let meta = writer.meta()?;
        if meta != expected {
            let reason = format!("the snapshot data ends at {meta:?}, not at {expected:?}");
            self.abort_install(writer)?;
            return Err(StateError::Corrupt {
                key: "applied".into(),
                reason,
            });
        }
        // Marks the state as installed from a snapshot at this point: at
        // start-up, an applied index the log does not hold is legitimate
        // only if it is exactly this one (a crash between the install and
        // the log recording it).
        writer.tree.insert(
            meta_key(INSTALLED),
            &applied_value(meta.index, meta.term)[..],
        )?;
        writer.tree.flush()?;
        let mut active = self.write();
        let old = active.name.clone();
        self.db.insert(ACTIVE_KEY, writer.name.as_slice())?;
        *active = Self::load_active(&self.db, writer.name)?;
        self.publish(&active);
        drop(active);
        self.checkpoint()?;
        self.db.drop_tree(old)?;
        Ok(meta)
    }

    /// Drops a snapshot that will not be installed.
    pub fn abort_install(&self, writer: SnapshotWriter) -> Result<(), StateError> {
        drop(writer.tree);
        self.db.drop_tree(writer.name)?;
        Ok(())
    }
}
