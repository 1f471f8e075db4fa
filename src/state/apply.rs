//! Applying commands: the semantics of put, delete and transactions, computed
//! over the stored data plus the writes already made in the same batch.

use std::collections::BTreeMap;
use std::ops::Bound;

use bytes::Bytes;
use prost::Message as _;

use crate::proto::kv::{
    request_op, response_op, Compare, CompareResult, CompareTarget, DeleteRequest, DeleteResponse,
    Event, EventType, KeyValue, PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp,
    ResponseOp, TxnRequest, TxnResponse,
};

use super::keys::{data_key, KeyRange};
use super::{StateError, StoredKv};

/// The default and largest page of a range.
pub const DEFAULT_RANGE_LIMIT: u64 = 1000;
/// A range page stops after about this many bytes of keys and values (with
/// `more` set), so a response always fits a gRPC message.
pub const RANGE_MAX_BYTES: usize = 8 << 20;

// Limits every replica applies in the same way. They bound the memory one
// log entry can take to apply, the size of its history record (which must
// fit a peer message, for snapshots) and the size of the response to the
// client (which must fit a gRPC message). They are part of the replicated
// semantics, so they are constants: a flag could differ between members and
// make their states diverge.

/// One step of a delete removes at most this many keys...
pub const DELETE_STEP_KEYS: usize = 2_000;
/// ...or about this many bytes of keys and values, whichever comes first.
pub const DELETE_STEP_BYTES: usize = 8 << 20;
/// The most bytes of changes (keys, values and previous values, as the
/// watch history stores them) one transaction may make.
pub const TXN_CHANGE_BYTES: usize = 32 << 20;
/// The most bytes of previous values (`prev_kv`) one transaction may return:
/// one value at the largest value limit always fits.
pub const TXN_PREV_KV_BYTES: usize = (8 << 20) + (128 << 10);
/// The range reads of one transaction share this many bytes of results; a
/// read cut short says `more`, as a range page does.
pub const TXN_RANGE_BYTES: usize = 4 << 20;

/// Some keys of a range with their values, and whether the range holds more.
pub type Page = (Vec<(Vec<u8>, StoredKv)>, bool);

/// The value a key had in the overlay before a change, for undoing it.
type Undo = (Vec<u8>, Option<Option<StoredKv>>);

/// A batch of applies in progress: the stored tree plus the changes made so
/// far, which later commands of the batch must see.
pub struct Overlay<'a> {
    tree: &'a sled::Tree,
    changes: BTreeMap<Vec<u8>, Option<StoredKv>>,
    /// The changes of the command being applied, newest last, so that a
    /// command refused half-way changes nothing.
    undo: Vec<Undo>,
    /// The stored size (key and value) each changed key had in the tree
    /// before the batch, 0 if absent: for the space accounting.
    originals: BTreeMap<Vec<u8>, u64>,
}

/// The stored size of a user key and its value.
pub fn stored_size(key: &[u8], value: &StoredKv) -> u64 {
    (1 + key.len() + value.encoded_len()) as u64
}

impl<'a> Overlay<'a> {
    /// An empty batch over `tree`.
    pub fn new(tree: &'a sled::Tree) -> Self {
        Overlay {
            tree,
            changes: BTreeMap::new(),
            undo: Vec::new(),
            originals: BTreeMap::new(),
        }
    }

    /// The changed user keys and their new values (`None`: deleted), and by
    /// how many bytes they change the stored size.
    pub fn into_changes(self) -> (BTreeMap<Vec<u8>, Option<StoredKv>>, i64) {
        let mut delta = 0i64;
        for (key, value) in &self.changes {
            let before = self.originals.get(key).copied().unwrap_or(0);
            let after = value.as_ref().map_or(0, |v| stored_size(key, v));
            delta += after as i64 - before as i64;
        }
        (self.changes, delta)
    }

    /// Keeps the changes of the command applied since the last call.
    pub fn keep_command(&mut self) {
        self.undo.clear();
    }

    /// Undoes the changes of the command applied since the last
    /// [`Overlay::keep_command`].
    pub fn undo_command(&mut self) {
        while let Some((key, before)) = self.undo.pop() {
            match before {
                Some(value) => self.changes.insert(key, value),
                None => self.changes.remove(&key),
            };
        }
    }

    fn get(&self, key: &[u8]) -> Result<Option<StoredKv>, StateError> {
        if let Some(change) = self.changes.get(key) {
            return Ok(change.clone());
        }
        match self.tree.get(data_key(key))? {
            Some(raw) => Ok(Some(
                StoredKv::decode(raw.as_ref()).map_err(|e| StateError::corrupt(key, e))?,
            )),
            None => Ok(None),
        }
    }

    /// Up to `limit` keys of `range` in key order, with at most about
    /// `max_bytes` of keys and values (the first key whatever its size), and
    /// whether there are more.
    pub fn range(
        &self,
        range: &KeyRange,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Page, StateError> {
        let (lo, hi) = range.stored_bounds();
        let mut stored = self.tree.range(lo..hi).peekable();
        let end_bound = match &range.end {
            Some(e) => Bound::Excluded(e.clone()),
            None => Bound::Unbounded,
        };
        let mut changed = self
            .changes
            .range((Bound::Included(range.start.clone()), end_bound))
            .peekable();
        let mut out = Vec::new();
        let mut bytes = 0usize;
        loop {
            let next_stored = match stored.peek() {
                Some(Ok((k, _))) => Some(k[1..].to_vec()),
                Some(Err(_)) => {
                    let err = stored
                        .next()
                        .and_then(Result::err)
                        .expect("peeked an error");
                    return Err(err.into());
                }
                None => None,
            };
            let next_changed = changed.peek().map(|(k, _)| (*k).clone());
            let (key, value) = match (next_stored, next_changed) {
                (None, None) => break,
                (Some(s), Some(c)) if c <= s => {
                    if c == s {
                        stored.next();
                    }
                    let (_, v) = changed.next().expect("peeked");
                    (c, v.clone())
                }
                (Some(s), _) => {
                    let (_, raw) = stored.next().expect("peeked").map_err(StateError::from)?;
                    (
                        s.clone(),
                        Some(
                            StoredKv::decode(raw.as_ref())
                                .map_err(|e| StateError::corrupt(&s, e))?,
                        ),
                    )
                }
                (None, Some(c)) => {
                    let (_, v) = changed.next().expect("peeked");
                    (c, v.clone())
                }
            };
            let Some(value) = value else { continue };
            let size = key.len() + value.value.len();
            if out.len() == limit || (!out.is_empty() && bytes + size > max_bytes) {
                return Ok((out, true));
            }
            bytes += size;
            out.push((key, value));
        }
        Ok((out, false))
    }

    fn set(&mut self, key: Vec<u8>, value: Option<StoredKv>) -> Result<(), StateError> {
        if !self.originals.contains_key(&key) {
            let size = match self.tree.get(data_key(&key))? {
                Some(raw) => (1 + key.len() + raw.len()) as u64,
                None => 0,
            };
            self.originals.insert(key.clone(), size);
        }
        let before = self.changes.insert(key.clone(), value);
        self.undo.push((key, before));
        Ok(())
    }
}

fn key_value(key: &[u8], kv: &StoredKv, keys_only: bool) -> KeyValue {
    KeyValue {
        key: Bytes::copy_from_slice(key),
        value: if keys_only {
            Bytes::new()
        } else {
            kv.value.clone()
        },
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
    }
}

/// Applies a put at `revision`.
pub fn put(
    batch: &mut Overlay<'_>,
    revision: u64,
    req: &PutRequest,
    events: &mut Vec<Event>,
) -> Result<PutResponse, StateError> {
    let prev = batch.get(&req.key)?;
    let stored = StoredKv {
        value: req.value.clone(),
        create_revision: prev.as_ref().map_or(revision, |p| p.create_revision),
        mod_revision: revision,
        version: prev.as_ref().map_or(1, |p| p.version + 1),
    };
    let prev_kv = prev.as_ref().map(|p| key_value(&req.key, p, false));
    events.push(Event {
        r#type: EventType::Put as i32,
        kv: Some(key_value(&req.key, &stored, false)),
        prev_kv: prev_kv.clone(),
        revision,
    });
    batch.set(req.key.to_vec(), Some(stored))?;
    Ok(PutResponse {
        header: None,
        prev_kv: if req.prev_kv { prev_kv } else { None },
    })
}

/// The bytes an event takes in the watch history (and in memory).
pub fn event_bytes(event: &Event) -> usize {
    let kv = |kv: &Option<KeyValue>| kv.as_ref().map_or(0, |kv| kv.key.len() + kv.value.len());
    kv(&event.kv) + kv(&event.prev_kv) + 32
}

/// Applies one step of a delete at `revision`: the first keys of the range,
/// at most [`DELETE_STEP_KEYS`] of them and about [`DELETE_STEP_BYTES`] of
/// keys and values (at least one key). Returns the response and whether the
/// range holds more.
///
/// A delete of a huge range would otherwise load every victim with its
/// value on every replica, and put all of them in one history record.
pub fn delete(
    batch: &mut Overlay<'_>,
    revision: u64,
    req: &DeleteRequest,
    events: &mut Vec<Event>,
) -> Result<(DeleteResponse, bool), StateError> {
    let range = KeyRange::from_request(&req.key, &req.range_end, req.prefix, true);
    let (victims, more) = batch.range(&range, DELETE_STEP_KEYS, DELETE_STEP_BYTES)?;
    Ok((remove(batch, revision, req.prev_kv, victims, events)?, more))
}

/// Deletes `victims` at `revision`.
fn remove(
    batch: &mut Overlay<'_>,
    revision: u64,
    prev_kv: bool,
    victims: Vec<(Vec<u8>, StoredKv)>,
    events: &mut Vec<Event>,
) -> Result<DeleteResponse, StateError> {
    let deleted = victims.len() as u64;
    let mut prev_kvs = Vec::new();
    for (key, prev) in victims {
        let prev_value = key_value(&key, &prev, false);
        events.push(Event {
            r#type: EventType::Delete as i32,
            kv: Some(KeyValue {
                key: Bytes::copy_from_slice(&key),
                mod_revision: revision,
                ..Default::default()
            }),
            prev_kv: Some(prev_value.clone()),
            revision,
        });
        if prev_kv {
            prev_kvs.push(prev_value);
        }
        batch.set(key, None)?;
    }
    Ok(DeleteResponse {
        header: None,
        deleted,
        prev_kvs,
    })
}

/// Reads a range (inside a batch, seeing its earlier writes).
pub fn range(batch: &Overlay<'_>, req: &RangeRequest) -> Result<RangeResponse, StateError> {
    let budget = if req.keys_only {
        usize::MAX
    } else {
        RANGE_MAX_BYTES
    };
    range_within(batch, req, budget, true)
}

/// Reads a range of at most about `budget` bytes of keys and values; the
/// first key is included whatever its size only if `at_least_one`.
fn range_within(
    batch: &Overlay<'_>,
    req: &RangeRequest,
    budget: usize,
    at_least_one: bool,
) -> Result<RangeResponse, StateError> {
    let range = KeyRange::from_request(&req.key, &req.range_end, req.prefix, false);
    let limit = match req.limit {
        0 => DEFAULT_RANGE_LIMIT,
        n => n.min(DEFAULT_RANGE_LIMIT),
    } as usize;
    let (mut kvs, mut more) = batch.range(&range, limit, budget)?;
    if !at_least_one
        && kvs
            .first()
            .is_some_and(|(k, v)| k.len() + v.value.len() > budget)
    {
        kvs.clear();
        more = true;
    }
    Ok(RangeResponse {
        header: None,
        kvs: kvs
            .iter()
            .map(|(k, v)| key_value(k, v, req.keys_only))
            .collect(),
        more,
    })
}

fn compare_holds(batch: &Overlay<'_>, c: &Compare) -> Result<bool, StateError> {
    let current = batch.get(&c.key)?;
    let result = CompareResult::try_from(c.result).unwrap_or(CompareResult::Unspecified);
    let target = CompareTarget::try_from(c.target).unwrap_or(CompareTarget::Unspecified);
    let ordering = match target {
        CompareTarget::Value => match &current {
            // A missing key has no value: every value comparison fails.
            None => return Ok(false),
            Some(kv) => kv.value.as_ref().cmp(c.value.as_ref()),
        },
        CompareTarget::Version => current.as_ref().map_or(0, |kv| kv.version).cmp(&c.number),
        CompareTarget::CreateRevision => current
            .as_ref()
            .map_or(0, |kv| kv.create_revision)
            .cmp(&c.number),
        CompareTarget::ModRevision => current
            .as_ref()
            .map_or(0, |kv| kv.mod_revision)
            .cmp(&c.number),
        // Rejected at the edge; a log entry from a newer version fails safe.
        CompareTarget::Unspecified => return Ok(false),
    };
    Ok(match result {
        CompareResult::Equal => ordering.is_eq(),
        CompareResult::NotEqual => ordering.is_ne(),
        CompareResult::Greater => ordering.is_gt(),
        CompareResult::Less => ordering.is_lt(),
        CompareResult::Unspecified => false,
    })
}

/// What one transaction has used of its bounds so far.
#[derive(Default)]
struct TxnBudget {
    /// Bytes of changes (events).
    changes: usize,
    /// Bytes of previous values returned.
    prev_kv: usize,
    /// Bytes of range results returned.
    ranges: usize,
}

impl TxnBudget {
    /// Counts what one operation did; refuses once a bound is passed.
    fn charge(&mut self, events: &[Event], prev_kv: usize) -> Result<(), String> {
        self.changes += events.iter().map(event_bytes).sum::<usize>();
        self.prev_kv += prev_kv;
        if self.changes > TXN_CHANGE_BYTES {
            return Err(format!(
                "the transaction would change more than {} MiB of keys and values (with their previous values); split it",
                TXN_CHANGE_BYTES >> 20
            ));
        }
        if self.prev_kv > TXN_PREV_KV_BYTES {
            return Err(format!(
                "the transaction would return more than {} MiB of previous values (prev_kv); ask for fewer",
                TXN_PREV_KV_BYTES >> 20
            ));
        }
        Ok(())
    }
}

fn prev_kv_bytes(kvs: &[KeyValue]) -> usize {
    kvs.iter().map(|kv| kv.key.len() + kv.value.len()).sum()
}

/// How a transaction's range reads are answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reads {
    /// Read them: this member answers the client that proposed it.
    Answer,
    /// Skip them: nobody here waits for the answer (a follower, or a
    /// restart replaying the log). Reads change nothing, so skipping them
    /// cannot make replicas diverge.
    Skip,
}

/// Applies a transaction at `revision`. A transaction that passes one of
/// the bounds ([`TXN_CHANGE_BYTES`], [`TXN_PREV_KV_BYTES`], a delete of more
/// than one delete step) changes nothing and returns the reason: every
/// replica decides that the same way, from the same state; so does one that
/// puts while writes that add data are refused (`refuse_puts`, the NOSPACE
/// alarm). Range reads share [`TXN_RANGE_BYTES`] and are cut short with
/// `more`.
pub fn txn(
    batch: &mut Overlay<'_>,
    revision: u64,
    req: &TxnRequest,
    reads: Reads,
    refuse_puts: Option<&str>,
    events: &mut Vec<Event>,
) -> Result<Result<TxnResponse, String>, StateError> {
    let mut succeeded = true;
    for c in &req.compare {
        if !compare_holds(batch, c)? {
            succeeded = false;
            break;
        }
    }
    let ops: &[RequestOp] = if succeeded {
        &req.success
    } else {
        &req.failure
    };
    let first_event = events.len();
    let mut budget = TxnBudget::default();
    let mut responses = Vec::with_capacity(ops.len());
    for op in ops {
        let before = events.len();
        let response = match &op.request {
            Some(request_op::Request::Put(_)) if refuse_puts.is_some() => {
                Err(refuse_puts.unwrap_or_default().to_string())
            }
            Some(request_op::Request::Put(p)) => {
                let resp = put(batch, revision, p, events)?;
                let returned = resp
                    .prev_kv
                    .as_ref()
                    .map_or(0, |kv| kv.key.len() + kv.value.len());
                budget
                    .charge(&events[before..], returned)
                    .map(|()| response_op::Response::Put(resp))
            }
            Some(request_op::Request::Delete(d)) => {
                let range = KeyRange::from_request(&d.key, &d.range_end, d.prefix, true);
                let (victims, more) = batch.range(&range, DELETE_STEP_KEYS, DELETE_STEP_BYTES)?;
                if more {
                    Err(format!(
                        "a delete inside a transaction may remove at most {DELETE_STEP_KEYS} keys and {} MiB; delete the range outside a transaction (it is then done in steps)",
                        DELETE_STEP_BYTES >> 20
                    ))
                } else {
                    let resp = remove(batch, revision, d.prev_kv, victims, events)?;
                    budget
                        .charge(&events[before..], prev_kv_bytes(&resp.prev_kvs))
                        .map(|()| response_op::Response::Delete(resp))
                }
            }
            Some(request_op::Request::Range(r)) => Ok(response_op::Response::Range(match reads {
                Reads::Skip => RangeResponse::default(),
                Reads::Answer => {
                    let left = TXN_RANGE_BYTES.saturating_sub(budget.ranges);
                    let resp = range_within(batch, r, left, budget.ranges == 0)?;
                    budget.ranges += resp
                        .kvs
                        .iter()
                        .map(|kv| kv.key.len() + kv.value.len())
                        .sum::<usize>();
                    resp
                }
            })),
            None => continue,
        };
        match response {
            Ok(response) => responses.push(ResponseOp {
                response: Some(response),
            }),
            Err(refusal) => {
                batch.undo_command();
                events.truncate(first_event);
                return Ok(Err(refusal));
            }
        }
    }
    Ok(Ok(TxnResponse {
        header: None,
        succeeded,
        responses,
    }))
}
