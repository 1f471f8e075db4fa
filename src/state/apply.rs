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

/// Some keys of a range with their values, and whether the range holds more.
type Page = (Vec<(Vec<u8>, StoredKv)>, bool);

/// A batch of applies in progress: the stored tree plus the changes made so
/// far, which later commands of the batch must see.
pub struct Overlay<'a> {
    tree: &'a sled::Tree,
    changes: BTreeMap<Vec<u8>, Option<StoredKv>>,
}

impl<'a> Overlay<'a> {
    /// An empty batch over `tree`.
    pub fn new(tree: &'a sled::Tree) -> Self {
        Overlay {
            tree,
            changes: BTreeMap::new(),
        }
    }

    /// The changed user keys and their new values (`None`: deleted).
    pub fn into_changes(self) -> BTreeMap<Vec<u8>, Option<StoredKv>> {
        self.changes
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

    /// Up to `limit` keys of `range` in key order, and whether there are more.
    fn range(&self, range: &KeyRange, limit: usize, max_bytes: usize) -> Result<Page, StateError> {
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

    fn set(&mut self, key: Vec<u8>, value: Option<StoredKv>) {
        self.changes.insert(key, value);
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
    batch.set(req.key.to_vec(), Some(stored));
    Ok(PutResponse {
        header: None,
        prev_kv: if req.prev_kv { prev_kv } else { None },
    })
}

/// Applies a delete at `revision`.
pub fn delete(
    batch: &mut Overlay<'_>,
    revision: u64,
    req: &DeleteRequest,
    events: &mut Vec<Event>,
) -> Result<DeleteResponse, StateError> {
    let range = KeyRange::from_request(&req.key, &req.range_end, req.prefix, true);
    let (victims, _) = batch.range(&range, usize::MAX, usize::MAX)?;
    let mut prev_kvs = Vec::new();
    for (key, prev) in &victims {
        let prev_kv = key_value(key, prev, false);
        events.push(Event {
            r#type: EventType::Delete as i32,
            kv: Some(KeyValue {
                key: Bytes::copy_from_slice(key),
                mod_revision: revision,
                ..Default::default()
            }),
            prev_kv: Some(prev_kv.clone()),
            revision,
        });
        if req.prev_kv {
            prev_kvs.push(prev_kv);
        }
        batch.set(key.clone(), None);
    }
    Ok(DeleteResponse {
        header: None,
        deleted: victims.len() as u64,
        prev_kvs,
    })
}

/// Reads a range (inside a batch, seeing its earlier writes).
pub fn range(batch: &Overlay<'_>, req: &RangeRequest) -> Result<RangeResponse, StateError> {
    let range = KeyRange::from_request(&req.key, &req.range_end, req.prefix, false);
    let limit = match req.limit {
        0 => DEFAULT_RANGE_LIMIT,
        n => n.min(DEFAULT_RANGE_LIMIT),
    } as usize;
    let budget = if req.keys_only {
        usize::MAX
    } else {
        RANGE_MAX_BYTES
    };
    let (kvs, more) = batch.range(&range, limit, budget)?;
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

/// Applies a transaction at `revision`.
pub fn txn(
    batch: &mut Overlay<'_>,
    revision: u64,
    req: &TxnRequest,
    events: &mut Vec<Event>,
) -> Result<TxnResponse, StateError> {
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
    let mut responses = Vec::with_capacity(ops.len());
    for op in ops {
        let response = match &op.request {
            Some(request_op::Request::Put(p)) => {
                response_op::Response::Put(put(batch, revision, p, events)?)
            }
            Some(request_op::Request::Delete(d)) => {
                response_op::Response::Delete(delete(batch, revision, d, events)?)
            }
            Some(request_op::Request::Range(r)) => response_op::Response::Range(range(batch, r)?),
            None => continue,
        };
        responses.push(ResponseOp {
            response: Some(response),
        });
    }
    Ok(TxnResponse {
        header: None,
        succeeded,
        responses,
    })
}
