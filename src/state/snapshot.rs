//! Snapshots of the applied state, for followers that need entries the log
//! no longer holds.
//!
//! Sending: [`KvState::freeze_snapshot`] takes no copy. It marks the applied
//! point (under the writers' lock, so between two apply batches: an
//! instant) and from then on the apply thread saves, before it changes a key
//! for the first time, what the key held at that point (its *before image*,
//! or that it was absent) in an undo tree. The snapshot is then streamed
//! from the live tree at leisure: a key found in the undo tree is sent as
//! its before image, any other key as it is; keys deleted since the freeze
//! come from the undo tree. Applies never wait for the stream, and the undo
//! tree holds only what changed while it ran; it is dropped with the
//! [`FrozenSnapshot`].
//!
//! Why it is consistent: a before image is saved before the change it undoes
//! is applied, so whenever the stream reads a key, either the key has not
//! changed since the freeze (its value is right), or its before image is
//! already saved (and is used instead). History trimming waits while a
//! snapshot is frozen, so trimmed records need no before images.
//!
//! Why each pair is sent once: the undo tree is read after the live tree,
//! for the keys deleted before the live pass reached them; a key the live
//! pass already sent must not come again. The live pass records how far it
//! has got (under a lock the applier takes too), and a before image saved
//! for a key at or before that point, or one the live pass used, is marked
//! as sent. So a backup counts its keys exactly.
//!
//! Receiving: the pairs are written into a new tree; once the core accepts
//! the snapshot, [`KvState::finish_install`] makes it the active tree with one
//! insert and drops the old one. An interrupted transfer leaves the old state
//! untouched, and its partial tree is dropped.

use std::sync::{Arc, Mutex};

use super::keys::meta_key;
use super::{
    applied_value, read_applied, read_membership, KvState, StateError, ACTIVE_KEY, INSTALLED,
};
use crate::raft::SnapshotMeta;
use crate::storage::fsync_tree;

/// The tree of before images of a frozen snapshot.
pub(super) const UNDO_TREE: &[u8] = b"snapshot-undo";

/// A stored key-value pair of the state.
pub type Pair = (bytes::Bytes, bytes::Bytes);

/// Stored key-value pairs of the state, in key order.
pub type Chunk = Vec<Pair>;

/// The applier's side of a frozen snapshot: where before images go.
pub(super) struct Freeze {
    undo: sled::Tree,
    /// How far the stream's pass over the live tree has got.
    passed: Mutex<Passed>,
}

/// How far the live pass of a stream has got.
#[derive(Default)]
enum Passed {
    /// It has sent the keys up to and including this one (none yet).
    #[default]
    Nothing,
    /// Up to this key.
    UpTo(sled::IVec),
    /// It is over: every key present at the freeze and not yet changed was
    /// sent.
    All,
}

impl Passed {
    fn covers(&self, key: &[u8]) -> bool {
        match self {
            Passed::Nothing => false,
            Passed::UpTo(last) => key <= last.as_ref(),
            Passed::All => true,
        }
    }
}

impl Freeze {
    /// Saves what `key` holds in `tree` now, unless it was saved already.
    pub(super) fn save_before_image(
        &self,
        tree: &sled::Tree,
        key: &[u8],
    ) -> Result<(), StateError> {
        // Held while the image is written: the live pass reads a key and
        // moves past it under the same lock, so an image is marked sent
        // exactly when the live pass sent its key.
        let passed = self.passed.lock().unwrap_or_else(|e| e.into_inner());
        if self.undo.contains_key(key)? {
            return Ok(());
        }
        let image = match tree.get(key)? {
            Some(value) => {
                let mut image = Vec::with_capacity(value.len() + 1);
                image.push(if passed.covers(key) { SENT } else { PRESENT });
                image.extend_from_slice(&value);
                image
            }
            None => vec![ABSENT],
        };
        self.undo.insert(key, image)?;
        Ok(())
    }
}

const ABSENT: u8 = 0;
const PRESENT: u8 = 1;
/// Present at the freeze, and already sent by the live pass.
const SENT: u8 = 2;

/// The value a before image records, if the key was present.
fn before_value(image: &[u8]) -> Option<&[u8]> {
    match image.split_first() {
        Some((&PRESENT | &SENT, value)) => Some(value),
        _ => None,
    }
}

/// The pair as it was at the freeze, from its before image (`None`: the
/// key did not exist then), sharing sled's buffers.
fn before_pair(key: sled::IVec, image: sled::IVec) -> Option<(bytes::Bytes, bytes::Bytes)> {
    before_value(&image)?;
    let value = bytes::Bytes::from_owner(image).slice(1..);
    Some((bytes::Bytes::from_owner(key), value))
}

/// A consistent view of the state at one applied point, ready to stream.
pub struct FrozenSnapshot {
    tree: sled::Tree,
    undo: sled::Tree,
    /// This snapshot's freeze, as the applier sees it.
    mine: Arc<Freeze>,
    db: sled::Db,
    freeze: Arc<Mutex<Option<Arc<Freeze>>>>,
    applying: Arc<Mutex<()>>,
    /// Where the snapshot ends.
    pub meta: SnapshotMeta,
}

impl FrozenSnapshot {
    /// The pairs in chunks of about `max_bytes`, each pair once. One pass
    /// per freeze: the pass marks what it sent.
    pub fn chunks(&self, max_bytes: usize) -> impl Iterator<Item = Result<Chunk, StateError>> + '_ {
        let mut live = self.tree.iter();
        let mut live_done = false;
        // Keys deleted before the live pass reached them are only in the
        // undo tree; it is read once the live pass is over.
        let mut deleted = self.undo.iter().filter_map(|item| match item {
            Ok((key, image)) if image.first() == Some(&PRESENT) => before_pair(key, image).map(Ok),
            Ok(_) => None,
            Err(e) => Some(Err(e.into())),
        });
        let mut pairs = std::iter::from_fn(move || {
            while !live_done {
                match self.while_frozen(|| self.next_live(&mut live)) {
                    Ok(Some(Some(pair))) => return Some(Ok(pair)),
                    // A key created after the freeze.
                    Ok(Some(None)) => {}
                    Ok(None) => live_done = true,
                    Err(e) => return Some(Err(e)),
                }
            }
            match self.while_frozen(|| Ok(deleted.next())) {
                Ok(next) => next,
                Err(e) => Some(Err(e)),
            }
        });
        let mut done = false;
        std::iter::from_fn(move || {
            if done {
                return None;
            }
            let mut chunk = Vec::new();
            let mut bytes = 0;
            while bytes < max_bytes {
                match pairs.next() {
                    Some(Ok((k, v))) => {
                        bytes += k.len() + v.len();
                        chunk.push((k, v));
                    }
                    // An error ends the stream: what follows it would
                    // not be the frozen state.
                    Some(Err(e)) => {
                        done = true;
                        return Some(Err(e));
                    }
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

    /// The next key of the live pass as it was at the freeze (`Some(None)`:
    /// a key that did not exist then; `None`: the pass is over), recorded
    /// as passed.
    fn next_live(&self, live: &mut sled::Iter) -> Result<Option<Option<Pair>>, StateError> {
        // The tree is read before the lock, so that the applier does not
        // wait for the read: a value read is the frozen one unless the key
        // changed since the freeze, and then its before image, always
        // saved before the change, is found below.
        let item = live.next();
        let mut passed = self.mine.passed.lock().unwrap_or_else(|e| e.into_inner());
        let Some(item) = item else {
            *passed = Passed::All;
            return Ok(None);
        };
        let (key, value) = item?;
        *passed = Passed::UpTo(key.clone());
        match self.undo.get(&key)? {
            Some(image) => {
                if image.first() == Some(&PRESENT) {
                    // Sent now: the undo pass must not send it again.
                    let mut sent = image.to_vec();
                    sent[0] = SENT;
                    self.undo.insert(&key, sent)?;
                }
                Ok(Some(before_pair(key, image)))
            }
            // sled's buffers, shared rather than copied.
            None => Ok(Some(Some((
                bytes::Bytes::from_owner(key),
                bytes::Bytes::from_owner(value),
            )))),
        }
    }

    /// Runs one step of the stream while this freeze is the state's: an
    /// install from the leader ends the freeze and then drops the frozen
    /// trees (sled panics on a dropped tree), and it takes the same lock to
    /// end it, so no step reads a tree being dropped. Once the freeze is
    /// over the stream ends with `Busy` (retry): what it sent may be
    /// incomplete.
    fn while_frozen<T>(
        &self,
        step: impl FnOnce() -> Result<T, StateError>,
    ) -> Result<T, StateError> {
        let slot = self.freeze.lock().unwrap_or_else(|e| e.into_inner());
        if !slot.as_ref().is_some_and(|f| Arc::ptr_eq(f, &self.mine)) {
            return Err(StateError::Busy(
                "this member installed a snapshot from the leader while the snapshot streamed; retry"
                    .into(),
            ));
        }
        step()
    }

    /// Whether the state is still the one frozen: a snapshot installed from
    /// the leader meanwhile replaced it (and ended the freeze), and what was
    /// streamed since may miss pairs.
    pub fn still_frozen(&self) -> bool {
        let slot = self.freeze.lock().unwrap_or_else(|e| e.into_inner());
        slot.as_ref().is_some_and(|f| Arc::ptr_eq(f, &self.mine))
    }
}

impl Drop for FrozenSnapshot {
    /// Stops saving before images and drops them.
    fn drop(&mut self) {
        // Not in the middle of an apply batch that saves before images.
        let _applying = self.applying.lock().unwrap_or_else(|e| e.into_inner());
        let mut slot = self.freeze.lock().unwrap_or_else(|e| e.into_inner());
        if slot.as_ref().is_some_and(|f| !Arc::ptr_eq(f, &self.mine)) {
            // An install ended this freeze and a newer snapshot froze
            // since: the undo tree is that one's now.
            return;
        }
        *slot = None;
        if let Err(e) = self.db.drop_tree(UNDO_TREE) {
            tracing::warn!(error = %e, "dropping a snapshot's before images");
        }
    }
}

/// A snapshot being received.
pub struct SnapshotWriter {
    pub(super) tree: sled::Tree,
    name: Vec<u8>,
    /// Bytes written since they were last made durable.
    unflushed: std::sync::atomic::AtomicU64,
    /// The state's directory.
    dir: std::path::PathBuf,
}

/// A receiving writer makes what it wrote durable after this many bytes:
/// the disk then works while the rest arrives, and the install's final
/// sync has little left to do (it waited 0.45 s for 800 MB before, most of
/// it for sled's blob files, which sled's own flush does not sync).
const WRITE_BEHIND_BYTES: u64 = 64 << 20;

impl SnapshotWriter {
    /// Stores a chunk of pairs.
    pub fn write<K: AsRef<[u8]>, V: AsRef<[u8]>>(
        &self,
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Result<(), StateError> {
        use std::sync::atomic::Ordering;
        let mut batch = sled::Batch::default();
        let mut bytes = 0;
        for (k, v) in pairs {
            bytes += (k.as_ref().len() + v.as_ref().len()) as u64;
            batch.insert(k.as_ref(), v.as_ref());
        }
        self.tree.apply_batch(batch)?;
        if self.unflushed.fetch_add(bytes, Ordering::Relaxed) + bytes >= WRITE_BEHIND_BYTES {
            self.unflushed.store(0, Ordering::Relaxed);
            self.tree.flush()?;
            fsync_tree(&self.dir)?;
        }
        Ok(())
    }

    /// Where the received snapshot ends, from its own metadata.
    pub fn meta(&self) -> Result<SnapshotMeta, StateError> {
        let (index, term) = read_applied(&self.tree)?;
        Ok(SnapshotMeta {
            index,
            term,
            membership: read_membership(&self.tree)?,
        })
    }
}

impl KvState {
    /// Freezes the state at its applied point for sending, without copying
    /// it (see the module documentation). One snapshot is frozen at a time.
    pub fn freeze_snapshot(&self) -> Result<FrozenSnapshot, StateError> {
        // No apply batch is half-way, and the next one sees the freeze.
        let _applying = self.applying.lock().unwrap_or_else(|e| e.into_inner());
        let active = self.read();
        let mut freeze = self.freeze.lock().unwrap_or_else(|e| e.into_inner());
        if freeze.is_some() {
            return Err(StateError::Busy("a snapshot is being sent already".into()));
        }
        self.db.drop_tree(UNDO_TREE)?;
        let undo = self.db.open_tree(UNDO_TREE)?;
        let membership = read_membership(&active.tree)?;
        let mine = Arc::new(Freeze {
            undo: undo.clone(),
            passed: Mutex::default(),
        });
        *freeze = Some(mine.clone());
        Ok(FrozenSnapshot {
            tree: active.tree.clone(),
            undo,
            mine,
            db: self.db.clone(),
            freeze: self.freeze.clone(),
            applying: self.applying.clone(),
            meta: SnapshotMeta {
                index: active.applied_index,
                term: active.applied_term,
                membership,
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
        Ok(SnapshotWriter {
            tree,
            name,
            unflushed: Default::default(),
            dir: self.dir.clone(),
        })
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
        let _applying = self.applying.lock().unwrap_or_else(|e| e.into_inner());
        let mut active = self.write();
        // A snapshot frozen from the state being replaced is over.
        *self.freeze.lock().unwrap_or_else(|e| e.into_inner()) = None;
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
