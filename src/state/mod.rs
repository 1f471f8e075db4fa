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
pub mod command;
pub mod keys;
pub mod snapshot;

use std::path::{Path, PathBuf};
use std::sync::RwLock;

use bytes::Bytes;
use prost::Message as _;

use crate::proto::kv::{Event, KeyValue, RangeRequest, RangeResponse};
use crate::raft::{Entry, EntryKind};
use crate::storage::fsync_tree;
use command::{Applied, Command, Op, Output};
use keys::{data_key, history_event_key, history_key, history_revision, meta_key, HISTORY};

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
        Ok(KvState {
            db,
            dir: dir.to_path_buf(),
            cluster: std::sync::atomic::AtomicU64::new(active.cluster_id),
            floor: std::sync::atomic::AtomicU64::new(active.history_floor),
            active: RwLock::new(active),
            history_retention: history_retention.max(1),
            freeze: Default::default(),
            applying: Default::default(),
        })
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

    /// Applies the first of `entries` in one atomic batch, with the applied
    /// index of the last one applied, and returns what each produced: as
    /// many as make about [`APPLY_BATCH_BYTES`] of changes, and at least one.
    /// `reads` tells, per index, whether a transaction's reads are answered
    /// here. Call again with the rest.
    pub fn apply(
        &self,
        entries: &[Entry],
        reads: impl Fn(u64) -> apply::Reads,
    ) -> Result<Vec<Applied>, StateError> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let _applying = self.applying.lock().unwrap_or_else(|e| e.into_inner());
        let tree = self.read().tree.clone();
        let mut overlay = apply::Overlay::new(&tree);
        let mut results = Vec::with_capacity(entries.len());
        let mut cluster_id = None;
        let known_cluster = self.cluster_id();
        let mut change_bytes = 0usize;
        for entry in entries {
            if change_bytes >= APPLY_BATCH_BYTES {
                break;
            }
            overlay.keep_command();
            let mut events = Vec::new();
            let output = match entry.kind {
                EntryKind::Noop => Output::None,
                EntryKind::Normal => {
                    match Command::decode(entry.data.as_ref()).ok().and_then(|c| c.op) {
                        Some(Op::Put(req)) => {
                            Output::Put(apply::put(&mut overlay, entry.index, &req, &mut events)?)
                        }
                        Some(Op::Delete(req)) => {
                            let (response, more) =
                                apply::delete(&mut overlay, entry.index, &req, &mut events)?;
                            Output::Delete { response, more }
                        }
                        Some(Op::Txn(req)) => {
                            match apply::txn(
                                &mut overlay,
                                entry.index,
                                &req,
                                reads(entry.index),
                                &mut events,
                            )? {
                                Ok(resp) => Output::Txn(resp),
                                Err(refusal) => Output::Refused(refusal),
                            }
                        }
                        Some(Op::Bootstrap(b)) => {
                            // The first bootstrap wins; one from a leader that
                            // did not know of it changes nothing.
                            if known_cluster == 0 && cluster_id.is_none() {
                                cluster_id = Some(b.cluster_id);
                            }
                            Output::None
                        }
                        None => {
                            tracing::error!(
                                index = entry.index,
                                "log entry does not decode; it changes nothing"
                            );
                            Output::Undecodable
                        }
                    }
                }
            };
            change_bytes += events.iter().map(apply::event_bytes).sum::<usize>() + entry.data.len();
            results.push(Applied {
                index: entry.index,
                term: entry.term,
                output,
                events,
            });
        }
        let last = results
            .last()
            .map(|r| (r.index, r.term))
            .expect("one entry applied");
        // Every key the batch writes, for a frozen snapshot's before images.
        let freeze = self
            .freeze
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut changed: Vec<Vec<u8>> = Vec::new();
        let mut batch = sled::Batch::default();
        let mut write = |batch: &mut sled::Batch, key: Vec<u8>, value: Option<Vec<u8>>| {
            if freeze.is_some() {
                changed.push(key.clone());
            }
            match value {
                Some(v) => batch.insert(key, v),
                None => batch.remove(key),
            }
        };
        for (key, value) in overlay.into_changes() {
            write(&mut batch, data_key(&key), value.map(|v| v.encode_to_vec()));
        }
        for r in &results {
            for (n, event) in r.events.iter().enumerate() {
                write(
                    &mut batch,
                    history_event_key(r.index, n as u32).to_vec(),
                    Some(encode_events(std::slice::from_ref(event))),
                );
            }
        }
        write(
            &mut batch,
            meta_key("applied"),
            Some(applied_value(last.0, last.1).to_vec()),
        );
        if let Some(id) = cluster_id {
            write(
                &mut batch,
                meta_key("cluster"),
                Some(id.to_be_bytes().to_vec()),
            );
        }
        let floor = self.history_floor();
        let new_floor = (last.0 + 1)
            .saturating_sub(self.history_retention)
            .max(floor);
        // Trim history in chunks, not at every apply, and not while a
        // snapshot is frozen (it would need before images of all of it).
        let trim = new_floor >= floor + 1024 && freeze.is_none();
        if trim {
            for item in tree.range(&history_key(0)[..]..&history_key(new_floor)[..]) {
                let (k, _) = item?;
                batch.remove(k);
            }
            batch.insert(meta_key("floor"), &new_floor.to_be_bytes()[..]);
        }
        if let Some(freeze) = &freeze {
            for key in &changed {
                freeze.save_before_image(&tree, key)?;
            }
        }
        let mut active = self.write();
        active.tree.apply_batch(batch)?;
        active.applied_index = last.0;
        active.applied_term = last.1;
        if let Some(id) = cluster_id {
            active.cluster_id = id;
        }
        if trim {
            active.history_floor = new_floor;
        }
        self.publish(&active);
        Ok(results)
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
        let outcome = apply::txn(
            &mut overlay,
            active.applied_index + 1,
            req,
            apply::Reads::Skip,
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
mod tests {
    use super::*;
    use crate::proto::kv::{
        request_op, response_op, Compare, CompareResult, CompareTarget, DeleteRequest, PutRequest,
        RequestOp, TxnRequest,
    };
    use crate::raft::SnapshotMeta;

    fn open(dir: &Path) -> KvState {
        // sled releases its file lock from a background thread after the
        // previous handle is dropped: a reopen in the same process may have
        // to wait for it (a restarted pod is a new process and never does).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match KvState::open(dir, 8 << 20, 10_000) {
                Ok(state) => return state,
                Err(e) if std::time::Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => panic!("open state: {e}"),
            }
        }
    }

    fn entry(index: u64, op: Op) -> Entry {
        Entry {
            index,
            term: 1,
            kind: EntryKind::Normal,
            data: Command::new(op).encode(),
        }
    }

    fn put(key: &str, value: &str) -> Op {
        Op::Put(PutRequest {
            key: Bytes::from(key.to_string()),
            value: Bytes::from(value.to_string()),
            prev_kv: true,
        })
    }

    /// Versions count puts; a delete resets them; revisions are log indexes.
    #[test]
    fn put_and_delete_keep_etcd_metadata() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = open(dir.path());
        s.apply_all(&[entry(1, put("a", "1")), entry(2, put("a", "2"))])
            .expect("apply");
        let (kv, rev) = s.get(b"a").expect("get");
        let kv = kv.expect("present");
        assert_eq!(
            (kv.create_revision, kv.mod_revision, kv.version, rev),
            (1, 2, 2, 2)
        );
        let del = Op::Delete(DeleteRequest {
            key: Bytes::from("a"),
            ..Default::default()
        });
        let out = s
            .apply_all(&[entry(3, del), entry(4, put("a", "3"))])
            .expect("apply");
        assert!(
            matches!(&out[0].output, Output::Delete { response, more: false } if response.deleted == 1)
        );
        let kv = s.get(b"a").expect("get").0.expect("present");
        assert_eq!(
            (kv.create_revision, kv.version),
            (4, 1),
            "recreated after delete"
        );
    }

    /// A transaction's compares decide which branch runs, atomically.
    #[test]
    fn txn_compare_and_swap() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = open(dir.path());
        let cas = |expected: &str, new: &str| {
            Op::Txn(TxnRequest {
                compare: vec![Compare {
                    key: Bytes::from("c"),
                    target: CompareTarget::Value as i32,
                    result: CompareResult::Equal as i32,
                    value: Bytes::from(expected.to_string()),
                    number: 0,
                }],
                success: vec![RequestOp {
                    request: Some(request_op::Request::Put(PutRequest {
                        key: Bytes::from("c"),
                        value: Bytes::from(new.to_string()),
                        prev_kv: false,
                    })),
                }],
                failure: vec![],
            })
        };
        let out = s.apply_all(&[entry(1, cas("0", "1"))]).expect("apply");
        assert!(
            matches!(&out[0].output, Output::Txn(t) if !t.succeeded),
            "a missing key has no value"
        );
        s.apply_all(&[entry(2, put("c", "0"))]).expect("apply");
        let out = s
            .apply_all(&[entry(3, cas("0", "1")), entry(4, cas("0", "2"))])
            .expect("apply");
        assert!(matches!(&out[0].output, Output::Txn(t) if t.succeeded));
        assert!(
            matches!(&out[1].output, Output::Txn(t) if !t.succeeded),
            "sees the earlier write of its batch"
        );
        assert_eq!(
            s.get(b"c").expect("get").0.expect("present").value,
            Bytes::from("1")
        );
    }

    /// Ranges page in key order; a prefix delete removes exactly its keys.
    #[test]
    fn range_paging_and_prefix_delete() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = open(dir.path());
        let entries: Vec<Entry> = (0..5)
            .map(|i| entry(i + 1, put(&format!("p/{i}"), "v")))
            .collect();
        s.apply_all(&entries).expect("apply");
        s.apply_all(&[entry(6, put("q", "v"))]).expect("apply");
        let req = RangeRequest {
            key: Bytes::from("p/"),
            prefix: true,
            limit: 3,
            ..Default::default()
        };
        let (page, _) = s.range(&req).expect("range");
        assert_eq!(page.kvs.len(), 3);
        assert!(page.more);
        let del = Op::Delete(DeleteRequest {
            key: Bytes::from("p/"),
            prefix: true,
            ..Default::default()
        });
        let out = s.apply_all(&[entry(7, del)]).expect("apply");
        assert_eq!(out[0].events.len(), 5);
        let (all, _) = s.range(&RangeRequest::default()).expect("range");
        assert_eq!(all.kvs.len(), 1);
    }

    /// The events are stored exactly as `StoredEvents` encodes them.
    #[test]
    fn stored_events_encoding() {
        let events = vec![Event {
            revision: 3,
            ..Default::default()
        }];
        let expected = StoredEvents {
            events: events.clone(),
        }
        .encode_to_vec();
        assert_eq!(encode_events(&events), expected);
    }

    /// History is kept per revision and survives a reopen with the applied
    /// index.
    #[test]
    fn history_and_applied_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let s = open(dir.path());
            s.apply_all(&[entry(1, put("a", "1")), entry(2, put("b", "1"))])
                .expect("apply");
            s.checkpoint().expect("checkpoint");
        }
        let s = open(dir.path());
        assert_eq!(s.applied(), (2, 1));
        let (h, cut) = s.history(2, 10, 1 << 20).expect("history");
        assert!(!cut);
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].0, 2);
    }

    /// A frozen snapshot installed elsewhere reproduces the state.
    #[test]
    fn snapshot_round_trip() {
        let a_dir = tempfile::tempdir().expect("tempdir");
        let b_dir = tempfile::tempdir().expect("tempdir");
        let a = open(a_dir.path());
        let b = open(b_dir.path());
        let entries: Vec<Entry> = (0..50)
            .map(|i| entry(i + 1, put(&format!("k{i}"), "v")))
            .collect();
        a.apply_all(&entries).expect("apply");
        b.apply_all(&[entry(1, put("stale", "x"))]).expect("apply");
        let frozen = a.freeze_snapshot().expect("freeze");
        let writer = b.begin_install().expect("begin");
        for chunk in frozen.chunks(256) {
            writer.write(chunk.expect("chunk")).expect("write");
        }
        let meta = b.finish_install(writer, frozen.meta).expect("install");
        assert_eq!(meta.index, 50);
        assert_eq!(b.applied(), (50, 1));
        assert!(b.get(b"stale").expect("get").0.is_none());
        assert!(b.get(b"k49").expect("get").0.is_some());
        drop(b);
        let b = open(b_dir.path());
        assert_eq!(b.applied(), (50, 1), "the install is durable");
        assert_eq!(
            b.installed_snapshot().expect("read"),
            Some((50, 1)),
            "the install point is recorded for start-up's check"
        );
    }

    fn big(n: usize) -> String {
        "x".repeat(n)
    }

    fn range_op(prefix: &str) -> RequestOp {
        RequestOp {
            request: Some(request_op::Request::Range(RangeRequest {
                key: Bytes::from(prefix.to_string()),
                prefix: true,
                ..Default::default()
            })),
        }
    }

    /// 128 range reads over 1,000 keys of 8 KiB share one bound: the answer
    /// holds about `TXN_RANGE_BYTES`, not 128 times 8 MiB; a member that does
    /// not answer the client reads nothing.
    #[test]
    fn txn_reads_share_one_bound() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = open(dir.path());
        let value = big(8 << 10);
        let entries: Vec<Entry> = (0..1000)
            .map(|i| entry(i + 1, put(&format!("p/{i:04}"), &value)))
            .collect();
        s.apply_all(&entries).expect("apply");
        let txn = Op::Txn(TxnRequest {
            success: (0..128).map(|_| range_op("p/")).collect(),
            ..Default::default()
        });
        let out = s.apply_all(&[entry(1001, txn.clone())]).expect("apply");
        let Output::Txn(resp) = &out[0].output else {
            panic!("{:?}", out[0].output)
        };
        let bytes: usize = resp
            .responses
            .iter()
            .filter_map(|r| match &r.response {
                Some(response_op::Response::Range(r)) => Some(r),
                _ => None,
            })
            .flat_map(|r| r.kvs.iter())
            .map(|kv| kv.key.len() + kv.value.len())
            .sum();
        assert!(bytes <= apply::TXN_RANGE_BYTES, "{bytes} bytes of reads");
        assert!(bytes > apply::TXN_RANGE_BYTES / 2, "{bytes} bytes of reads");
        let skipped = s
            .apply(&[entry(1002, txn)], |_| apply::Reads::Skip)
            .expect("apply");
        let Output::Txn(resp) = &skipped[0].output else {
            panic!("{:?}", skipped[0].output)
        };
        assert!(resp.responses.iter().all(|r| matches!(
            &r.response,
            Some(response_op::Response::Range(r)) if r.kvs.is_empty()
        )));
    }

    /// A delete step stops at its byte bound and says there is more; a
    /// transaction over the bounds changes nothing and says which bound.
    #[test]
    fn deletes_step_and_transactions_over_bounds_change_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = open(dir.path());
        let value = big(1 << 20);
        let entries: Vec<Entry> = (0..20)
            .map(|i| entry(i + 1, put(&format!("b/{i:02}"), &value)))
            .collect();
        s.apply_all(&entries).expect("apply");
        let delete_all = DeleteRequest {
            key: Bytes::from("b/"),
            prefix: true,
            ..Default::default()
        };
        // Inside a transaction, a delete over one step is refused whole.
        let txn = Op::Txn(TxnRequest {
            success: vec![
                RequestOp {
                    request: Some(request_op::Request::Put(PutRequest {
                        key: Bytes::from("c"),
                        value: Bytes::from("1"),
                        prev_kv: false,
                    })),
                },
                RequestOp {
                    request: Some(request_op::Request::Delete(delete_all.clone())),
                },
            ],
            ..Default::default()
        });
        let out = s.apply_all(&[entry(21, txn)]).expect("apply");
        assert!(
            matches!(&out[0].output, Output::Refused(r) if r.contains("at most 2000 keys")),
            "{:?}",
            out[0].output
        );
        assert!(out[0].events.is_empty());
        assert!(s.get(b"c").expect("get").0.is_none(), "nothing changed");
        // Overwriting 12 values of 1 MiB with prev_kv returns too much.
        let overwrite = Op::Txn(TxnRequest {
            success: (0..12)
                .map(|i| RequestOp {
                    request: Some(request_op::Request::Put(PutRequest {
                        key: Bytes::from(format!("b/{i:02}")),
                        value: Bytes::from("small"),
                        prev_kv: true,
                    })),
                })
                .collect(),
            ..Default::default()
        });
        let out = s.apply_all(&[entry(22, overwrite)]).expect("apply");
        assert!(
            matches!(&out[0].output, Output::Refused(r) if r.contains("previous values")),
            "{:?}",
            out[0].output
        );
        assert_eq!(
            s.get(b"b/00").expect("get").0.expect("kept").value.len(),
            1 << 20
        );
        // Outside a transaction, a delete goes in steps of about 8 MiB.
        let mut steps = Vec::new();
        for index in 23.. {
            let out = s
                .apply_all(&[entry(index, Op::Delete(delete_all.clone()))])
                .expect("apply");
            let Output::Delete { response, more } = &out[0].output else {
                panic!("{:?}", out[0].output)
            };
            steps.push(response.deleted);
            if !*more {
                break;
            }
        }
        assert_eq!(steps.iter().sum::<u64>(), 20, "{steps:?}");
        assert!(steps.len() == 3 && steps[0] < 10, "{steps:?}");
        let (all, _) = s.range(&RangeRequest::default()).expect("range");
        assert!(all.kvs.is_empty());
    }

    /// One apply call stops after about `APPLY_BATCH_BYTES` of changes, with
    /// the applied index of the last entry it applied.
    #[test]
    fn one_apply_call_is_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = open(dir.path());
        let value = big(1 << 20);
        let entries: Vec<Entry> = (0..40)
            .map(|i| entry(i + 1, put(&format!("k{i}"), &value)))
            .collect();
        let first = s.apply(&entries, |_| apply::Reads::Answer).expect("apply");
        assert!(first.len() < 40, "{} entries in one batch", first.len());
        assert_eq!(s.applied().0, first.len() as u64);
        let rest = s.apply_all(&entries[first.len()..]).expect("apply");
        assert_eq!(first.len() + rest.len(), 40);
        assert_eq!(s.applied().0, 40);
    }

    /// History is stored one event per record and read back whole
    /// revisions, never part of one, however small the byte bound; records of
    /// earlier versions (a whole revision in one record) read the same.
    #[test]
    fn history_is_read_in_whole_revisions_from_either_layout() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = open(dir.path());
        let entries: Vec<Entry> = (0..5)
            .map(|i| entry(i + 1, put(&format!("p/{i}"), "v")))
            .collect();
        s.apply_all(&entries).expect("apply");
        let del = Op::Delete(DeleteRequest {
            key: Bytes::from("p/"),
            prefix: true,
            ..Default::default()
        });
        s.apply_all(&[entry(6, del)]).expect("apply");
        // Revision 7 as an earlier version stored it: one record.
        let old = StoredEvents {
            events: vec![
                Event {
                    revision: 7,
                    ..Default::default()
                },
                Event {
                    revision: 7,
                    ..Default::default()
                },
            ],
        };
        s.read()
            .tree
            .insert(&history_key(7)[..], old.encode_to_vec())
            .expect("insert");
        let (h, cut) = s.history(6, 10, 1).expect("history");
        assert_eq!(h.len(), 1, "one revision per call at this bound");
        assert_eq!(
            (h[0].0, h[0].1.len()),
            (6, 5),
            "all five deletes of revision 6"
        );
        assert!(cut);
        let (h, cut) = s.history(7, 10, 1 << 20).expect("history");
        assert_eq!((h[0].0, h[0].1.len(), cut), (7, 2, false));
    }

    /// A frozen snapshot streams the state exactly as it was at the freeze,
    /// while applies go on during the stream: overwrites, deletes and new
    /// keys after the freeze are invisible in it, and nothing is copied.
    #[test]
    fn a_frozen_snapshot_is_the_state_at_the_freeze_while_applies_go_on() {
        let a_dir = tempfile::tempdir().expect("tempdir");
        let b_dir = tempfile::tempdir().expect("tempdir");
        let a = open(a_dir.path());
        let b = open(b_dir.path());
        let entries: Vec<Entry> = (0..100)
            .map(|i| entry(i + 1, put(&format!("k{i:02}"), "old")))
            .collect();
        a.apply_all(&entries).expect("apply");
        let expected = a.range(&RangeRequest::default()).expect("range").0;
        let frozen = a.freeze_snapshot().expect("freeze");
        assert_eq!(frozen.meta.index, 100);
        assert!(
            a.freeze_snapshot().is_err(),
            "one frozen snapshot at a time"
        );
        let writer = b.begin_install().expect("begin");
        let mut index = 100;
        for (n, chunk) in frozen.chunks(64).enumerate() {
            writer.write(chunk.expect("chunk")).expect("write");
            // Change the state between every chunk of the stream.
            let i = n as u64 % 100;
            index += 1;
            let change = match n % 3 {
                0 => put(&format!("k{i:02}"), "new"),
                1 => Op::Delete(DeleteRequest {
                    key: Bytes::from(format!("k{i:02}")),
                    ..Default::default()
                }),
                _ => put(&format!("n{n}"), "added"),
            };
            a.apply_all(&[entry(index, change)])
                .expect("apply during the stream");
        }
        drop(frozen);
        assert!(index > 110, "the stream had {} chunks", index - 100);
        let meta = b
            .finish_install(
                writer,
                SnapshotMeta {
                    index: 100,
                    term: 1,
                },
            )
            .expect("install");
        assert_eq!(meta.index, 100);
        let got = b.range(&RangeRequest::default()).expect("range").0;
        assert_eq!(got.kvs, expected.kvs, "the state at the freeze");
        let (history, _) = b.history(1, 1000, usize::MAX).expect("history");
        assert_eq!(history.len(), 100, "history up to the freeze only");
        let names: Vec<_> = a.db.tree_names();
        assert!(
            !names
                .iter()
                .any(|n| n.as_ref() == snapshot::UNDO_TREE || n.as_ref() == b"snapshot-out"),
            "no copy or before images left: {names:?}"
        );
        a.freeze_snapshot()
            .expect("a new snapshot after the first is dropped");
    }
}
