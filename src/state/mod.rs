//! The applied state: the key-value data with per-key metadata, the watch
//! history and the identity record, in sled.
//!
//! Layout. sled's default tree holds the identity record and the name of the
//! *active* tree. The active tree holds, under one-byte prefixes, the data
//! (`d` + key), the watch history (`h` + revision) and metadata (`m` + name:
//! the applied index and term, the oldest revision of history, the cluster
//! id). Each apply is one `sled::Batch` on the active tree, so the data and
//! the applied index it covers change together atomically. A snapshot from the
//! leader is written into a new tree and made active by one insert, so a crash
//! in the middle of an install leaves the old state whole.
//!
//! Durability. The data need not be durable at each apply: the write-ahead log
//! is, and a restart re-applies the log after the applied index sled
//! recovered. Only before the log is compacted must the applied state be
//! durable: [`KvState::checkpoint`] flushes sled and fsyncs its files.

pub mod apply;
mod batch;
pub mod command;
pub mod keys;
mod restore;
mod segments;
pub mod snapshot;
pub mod space;

use std::path::{Path, PathBuf};
use std::sync::RwLock;

use bytes::Bytes;
use prost::Message as _;

use crate::proto::kv::{Event, KeyValue, RangeRequest, RangeResponse};
use crate::raft::Entry;
use crate::storage::fsync_tree;
use command::Applied;
use keys::{data_key, history_key, history_revision, meta_key, HISTORY};

/// Errors of the applied state.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// sled failed.
    #[error("state database: {0}")]
    Sled(#[from] sled::Error),
    /// Making the state durable failed.
    #[error("state database sync: {0}")]
    Io(#[from] std::io::Error),
    /// The operation cannot run now; it may later.
    #[error("{0}")]
    Busy(String),
    /// Something stored does not decode.
    #[error("state database is corrupt at key {key:?}: {reason}")]
    Corrupt {
        /// The key (lossy UTF-8).
        key: String,
        /// What failed.
        reason: String,
    },
}

impl StateError {
    /// Whether the state's files cannot be read (as opposed to a failure of
    /// the disk or of the moment).
    pub fn is_unreadable(&self) -> bool {
        matches!(
            self,
            StateError::Sled(sled::Error::Corruption { .. }) | StateError::Corrupt { .. }
        )
    }

    fn corrupt(key: &[u8], reason: impl std::fmt::Display) -> Self {
        StateError::Corrupt {
            key: String::from_utf8_lossy(key).into_owned(),
            reason: reason.to_string(),
        }
    }
}

/// A key's value and metadata as stored.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StoredKv {
    /// The value.
    #[prost(bytes = "bytes", tag = "1")]
    pub value: Bytes,
    /// The revision that created the key.
    #[prost(uint64, tag = "2")]
    pub create_revision: u64,
    /// The revision of the last change.
    #[prost(uint64, tag = "3")]
    pub mod_revision: u64,
    /// Puts since creation.
    #[prost(uint64, tag = "4")]
    pub version: u64,
}

/// The events of one revision as stored.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StoredEvents {
    /// The events, in the order they happened.
    #[prost(message, repeated, tag = "1")]
    pub events: Vec<Event>,
}

/// One revision's events.
pub type RevisionEvents = (u64, Vec<Event>);

/// The stored form of a revision's events: the encoding of
/// [`StoredEvents`], written without copying the events into one.
fn encode_events(events: &[Event]) -> Vec<u8> {
    let mut buf = Vec::new();
    for e in events {
        prost::encoding::message::encode(1, e, &mut buf);
    }
    buf
}

/// Who a data dir belongs to.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Identity {
    /// The StatefulSet name, e.g. "kvstore".
    #[prost(string, tag = "1")]
    pub set_name: String,
    /// The pod's ordinal.
    #[prost(uint32, tag = "2")]
    pub ordinal: u32,
    /// The cluster id, once the member has applied the cluster's first
    /// entry; 0 before.
    #[prost(uint64, tag = "3")]
    pub cluster_id: u64,
}

impl Identity {
    /// `<set>-<ordinal>`.
    pub fn name(&self) -> String {
        format!("{}-{}", self.set_name, self.ordinal)
    }
}

const IDENTITY_KEY: &[u8] = b"identity";
/// One call of [`KvState::apply`] stops after about this many bytes of
/// changes (and log entries): the memory one batch takes is bounded, and
/// the applied index moves with each batch.
pub const APPLY_BATCH_BYTES: usize = 32 << 20;
/// Metadata name of the snapshot point the active tree was installed from.
const INSTALLED: &str = "installed";
const ACTIVE_KEY: &[u8] = b"active";
/// Metadata name of the configuration as of the applied index.
const MEMBERSHIP: &str = "membership";

/// The parts of the active tree readers and the applier share.
struct Active {
    tree: sled::Tree,
    name: Vec<u8>,
    applied_index: u64,
    applied_term: u64,
    history_floor: u64,
    cluster_id: u64,
}

/// The applied state of one member.
pub struct KvState {
    db: sled::Db,
    dir: PathBuf,
    /// Readers hold this for a whole range scan, the applier while it writes a
    /// batch: a scan never sees half of a transaction.
    active: RwLock<Active>,
    history_retention: u64,
    /// Copies of `Active`'s cluster id and history floor that need no lock:
    /// the replication thread and the transport read them on every round and
    /// must never wait behind a snapshot copy.
    cluster: std::sync::atomic::AtomicU64,
    floor: std::sync::atomic::AtomicU64,
    /// Set while a snapshot is frozen: the apply thread saves before images.
    freeze: std::sync::Arc<std::sync::Mutex<Option<std::sync::Arc<snapshot::Freeze>>>>,
    /// Held for a whole apply batch, and while a snapshot is frozen or
    /// installed: a batch sees one freeze state from start to end.
    applying: std::sync::Arc<std::sync::Mutex<()>>,
    /// The space counts and alarms of the active tree, without its lock.
    space: space::Published,
    /// History is trimmed (oldest first) once it holds more bytes than this.
    history_budget: std::sync::atomic::AtomicU64,
}

fn read_u64(tree: &sled::Tree, name: &str) -> Result<Option<u64>, StateError> {
    match tree.get(meta_key(name))? {
        Some(raw) => {
            let bytes: [u8; 8] = raw
                .as_ref()
                .try_into()
                .map_err(|_| StateError::corrupt(name.as_bytes(), "not 8 bytes"))?;
            Ok(Some(u64::from_be_bytes(bytes)))
        }
        None => Ok(None),
    }
}

/// The configuration as of the applied index (empty: none applied yet).
fn read_membership(tree: &sled::Tree) -> Result<crate::raft::Membership, StateError> {
    match tree.get(meta_key(MEMBERSHIP))? {
        Some(raw) => crate::raft::Membership::decode(&raw)
            .ok_or_else(|| StateError::corrupt(MEMBERSHIP.as_bytes(), "not a configuration")),
        None => Ok(crate::raft::Membership::default()),
    }
}

fn read_applied(tree: &sled::Tree) -> Result<(u64, u64), StateError> {
    Ok(read_index_term(tree, "applied")?.unwrap_or((0, 0)))
}

/// A stored (index, term) pair.
fn read_index_term(tree: &sled::Tree, name: &str) -> Result<Option<(u64, u64)>, StateError> {
    match tree.get(meta_key(name))? {
        Some(raw) if raw.len() == 16 => {
            let index = u64::from_be_bytes(raw[..8].try_into().expect("8 bytes"));
            let term = u64::from_be_bytes(raw[8..].try_into().expect("8 bytes"));
            Ok(Some((index, term)))
        }
        Some(_) => Err(StateError::corrupt(name.as_bytes(), "not 16 bytes")),
        None => Ok(None),
    }
}

fn applied_value(index: u64, term: u64) -> [u8; 16] {
    let mut v = [0u8; 16];
    v[..8].copy_from_slice(&index.to_be_bytes());
    v[8..].copy_from_slice(&term.to_be_bytes());
    v
}

impl KvState {
    /// Opens (or creates) the state in `dir` with a sled cache of
    /// `cache_bytes`, keeping `history_retention` revisions of watch history.
    pub fn open(dir: &Path, cache_bytes: u64, history_retention: u64) -> Result<Self, StateError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .segment_size(segments::segment_size_for(dir)?)
            .mode(sled::Mode::HighThroughput)
            .open()?;
        let name = match db.get(ACTIVE_KEY)? {
            Some(name) => name.to_vec(),
            None => {
                let name = b"kv-1".to_vec();
                db.insert(ACTIVE_KEY, name.as_slice())?;
                name
            }
        };
        // Trees left by a crash in the middle of a snapshot install or send.
        for other in db.tree_names() {
            let is_state_tree = other.starts_with(b"kv-")
                || other.as_ref() == b"snapshot-out"
                || other.as_ref() == snapshot::UNDO_TREE;
            if is_state_tree && other.as_ref() != name.as_slice() {
                db.drop_tree(&other)?;
            }
        }
        let active = Self::load_active(&db, name)?;
        let published = space::Published::default();
        published.set(&space::Counts::load(&active.tree)?);
        Ok(KvState {
            db,
            dir: dir.to_path_buf(),
            cluster: std::sync::atomic::AtomicU64::new(active.cluster_id),
            floor: std::sync::atomic::AtomicU64::new(active.history_floor),
            active: RwLock::new(active),
            history_retention: history_retention.max(1),
            freeze: Default::default(),
            applying: Default::default(),
            space: published,
            history_budget: std::sync::atomic::AtomicU64::new(u64::MAX),
        })
    }

    /// Trims the history (oldest revisions first) once it holds more than
    /// `bytes`, as well as beyond its revision count.
    pub fn with_history_budget(self, bytes: u64) -> Self {
        self.history_budget
            .store(bytes.max(1), std::sync::atomic::Ordering::Relaxed);
        self
    }

    /// Bytes stored: the keys and values of the data and the history.
    pub fn stored_bytes(&self) -> u64 {
        self.space.stored()
    }

    /// Bytes of history.
    pub fn history_bytes(&self) -> u64 {
        self.space.history()
    }

    /// The members whose NOSPACE alarm is raised.
    pub fn alarms(&self) -> std::collections::BTreeSet<u32> {
        self.space.alarms()
    }

    fn load_active(db: &sled::Db, name: Vec<u8>) -> Result<Active, StateError> {
        let tree = db.open_tree(&name)?;
        let (applied_index, applied_term) = read_applied(&tree)?;
        Ok(Active {
            history_floor: read_u64(&tree, "floor")?.unwrap_or(1),
            cluster_id: read_u64(&tree, "cluster")?.unwrap_or(0),
            tree,
            name,
            applied_index,
            applied_term,
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Active> {
        // A panic while holding the lock cannot leave the data half-written
        // (sled batches are atomic), so a poisoned lock is still usable.
        self.active.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Active> {
        self.active.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The identity record, if the data dir has one.
    pub fn identity(&self) -> Result<Option<Identity>, StateError> {
        match self.db.get(IDENTITY_KEY)? {
            Some(raw) => Ok(Some(
                Identity::decode(raw.as_ref()).map_err(|e| StateError::corrupt(IDENTITY_KEY, e))?,
            )),
            None => Ok(None),
        }
    }

    /// Writes the identity record durably.
    pub fn set_identity(&self, identity: &Identity) -> Result<(), StateError> {
        self.db.insert(IDENTITY_KEY, identity.encode_to_vec())?;
        self.checkpoint()
    }

    /// The last applied index and its term.
    pub fn applied(&self) -> (u64, u64) {
        let a = self.read();
        (a.applied_index, a.applied_term)
    }

    /// The configuration as of the applied index (empty until a config
    /// entry is applied).
    pub fn applied_membership(&self) -> Result<crate::raft::Membership, StateError> {
        read_membership(&self.read().tree)
    }

    /// The snapshot point the state was installed from, if it came from a
    /// leader's snapshot.
    pub fn installed_snapshot(&self) -> Result<Option<(u64, u64)>, StateError> {
        read_index_term(&self.read().tree, INSTALLED)
    }

    /// The cluster id (0 until the cluster's first entry is applied).
    pub fn cluster_id(&self) -> u64 {
        self.cluster.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The oldest revision a watch can start from.
    pub fn history_floor(&self) -> u64 {
        self.floor.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Publishes the lock-free copies after `active` changed.
    fn publish(&self, active: &Active) {
        use std::sync::atomic::Ordering;
        self.cluster.store(active.cluster_id, Ordering::Release);
        self.floor.store(active.history_floor, Ordering::Release);
    }

    /// Applies every entry, in as many batches as it takes, answering every
    /// transaction's reads.
    pub fn apply_all(&self, entries: &[Entry]) -> Result<Vec<Applied>, StateError> {
        let mut results = Vec::with_capacity(entries.len());
        while results.len() < entries.len() {
            results.extend(self.apply(&entries[results.len()..], |_| apply::Reads::Answer)?);
        }
        Ok(results)
    }

    /// Reads one key; returns it and the applied revision it was read at.
    pub fn get(&self, key: &[u8]) -> Result<(Option<KeyValue>, u64), StateError> {
        let active = self.read();
        let kv = match active.tree.get(data_key(key))? {
            Some(raw) => {
                let s = StoredKv::decode(raw.as_ref()).map_err(|e| StateError::corrupt(key, e))?;
                Some(KeyValue {
                    key: Bytes::copy_from_slice(key),
                    value: s.value,
                    create_revision: s.create_revision,
                    mod_revision: s.mod_revision,
                    version: s.version,
                })
            }
            None => None,
        };
        Ok((kv, active.applied_index))
    }

    /// Whether the keys and values in `range` add up to more than `bytes`
    /// (reading at most that much).
    pub fn range_exceeds(&self, range: &keys::KeyRange, bytes: usize) -> Result<bool, StateError> {
        let active = self.read();
        let overlay = apply::Overlay::new(&active.tree);
        let (kvs, more) = overlay.range(range, usize::MAX, bytes)?;
        let first_alone_over = kvs.len() == 1
            && kvs
                .first()
                .is_some_and(|(k, v)| k.len() + v.value.len() > bytes);
        Ok(more || first_alone_over)
    }

    /// Whether the transaction would be refused by the bounds every replica
    /// applies, judged on this member's state now; the reason if so.
    pub fn dry_run_txn(
        &self,
        req: &crate::proto::kv::TxnRequest,
    ) -> Result<Option<String>, StateError> {
        let active = self.read();
        let mut overlay = apply::Overlay::new(&active.tree);
        let mut events = Vec::new();
        let alarms = self.alarms();
        let nospace = (!alarms.is_empty()).then(|| space::nospace_refusal(&alarms));
        let outcome = apply::txn(
            &mut overlay,
            active.applied_index + 1,
            req,
            apply::Reads::Skip,
            nospace.as_deref(),
            &mut events,
        )?;
        Ok(outcome.err())
    }

    /// Reads a range; returns it and the applied revision it was read at.
    pub fn range(&self, req: &RangeRequest) -> Result<(RangeResponse, u64), StateError> {
        let active = self.read();
        let overlay = apply::Overlay::new(&active.tree);
        let resp = apply::range(&overlay, req)?;
        Ok((resp, active.applied_index))
    }

    /// The history from revision `from` (inclusive), in revision order: the
    /// revisions that have events, at most `max_revisions` of them and about
    /// `max_bytes` (at least one, and never part of one). The flag says
    /// whether the read stopped at a bound with more history after it.
    ///
    /// A record holds one event (or, written by earlier versions, all the
    /// events of its revision).
    pub fn history(
        &self,
        from: u64,
        max_revisions: usize,
        max_bytes: usize,
    ) -> Result<(Vec<RevisionEvents>, bool), StateError> {
        let active = self.read();
        let mut bytes = 0;
        let mut out: Vec<RevisionEvents> = Vec::new();
        for item in active
            .tree
            .range(&history_key(from)[..]..&[HISTORY + 1][..])
        {
            let (k, v) = item?;
            let rev =
                history_revision(&k).ok_or_else(|| StateError::corrupt(&k, "bad history key"))?;
            let stored =
                StoredEvents::decode(v.as_ref()).map_err(|e| StateError::corrupt(&k, e))?;
            match out.last_mut() {
                Some((last, events)) if *last == rev => events.extend(stored.events),
                _ => {
                    if out.len() == max_revisions || (!out.is_empty() && bytes >= max_bytes) {
                        return Ok((out, true));
                    }
                    out.push((rev, stored.events));
                }
            }
            bytes += v.len();
        }
        Ok((out, false))
    }

    /// Makes everything applied so far durable: sled's flush, then an fsync
    /// of every file of the database.
    pub fn checkpoint(&self) -> Result<(), StateError> {
        self.db.flush()?;
        fsync_tree(&self.dir)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
