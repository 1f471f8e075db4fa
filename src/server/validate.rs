//! Checks on client requests, before anything is proposed or read. Every
//! failure is INVALID_ARGUMENT naming the rule or limit it broke.

use std::collections::HashSet;

use crate::error::Error;
use crate::proto::kv::{
    request_op, CompareResult, CompareTarget, Consistency, DeleteRequest, PutRequest, RangeRequest,
    TxnRequest,
};
use crate::state::keys::KeyRange;

/// The most operations (compares plus ops) in one transaction.
pub const MAX_TXN_OPS: usize = 128;
/// The largest value `--max-value-bytes` may allow: a put of it, with its
/// previous value, must fit the bounds every replica applies
/// ([`crate::state::apply::TXN_CHANGE_BYTES`]) and a gRPC message.
pub const MAX_VALUE_LIMIT: usize = 8 << 20;
/// The largest key `--max-key-bytes` may allow.
pub const MAX_KEY_LIMIT: usize = 64 << 10;

/// Size limits on keys and values.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// The longest key, in bytes.
    pub max_key_bytes: usize,
    /// The longest value, in bytes.
    pub max_value_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_key_bytes: 4096,
            max_value_bytes: 1 << 20,
        }
    }
}

impl Limits {
    /// Checks the limits a node is started with.
    pub fn check(&self) -> Result<(), String> {
        if self.max_key_bytes == 0 || self.max_key_bytes > MAX_KEY_LIMIT {
            return Err(format!(
                "--max-key-bytes must be between 1 and {MAX_KEY_LIMIT}, not {}",
                self.max_key_bytes
            ));
        }
        if self.max_value_bytes > MAX_VALUE_LIMIT {
            return Err(format!(
                "--max-value-bytes must be at most {MAX_VALUE_LIMIT} (8 MiB), not {}",
                self.max_value_bytes
            ));
        }
        Ok(())
    }

    /// The largest request message the server accepts: one key and one value
    /// at their limits, plus room for framing and a transaction's compares.
    /// A transaction's operations together must fit it too.
    pub fn max_request_bytes(&self) -> usize {
        self.max_key_bytes * 2 + self.max_value_bytes + (64 << 10)
    }

    /// The largest response message: a range page (cut at about 8 MiB, but
    /// its first entry may be a whole value), a transaction's previous
    /// values and reads, or a watch response holding one event with its
    /// previous value.
    pub fn max_response_bytes(&self) -> usize {
        use crate::state::apply::{RANGE_MAX_BYTES, TXN_PREV_KV_BYTES, TXN_RANGE_BYTES};
        let one_pair = self.max_key_bytes + self.max_value_bytes;
        RANGE_MAX_BYTES.max(TXN_PREV_KV_BYTES + TXN_RANGE_BYTES) + 2 * one_pair + (64 << 10)
    }
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::InvalidArgument(msg.into())
}

/// A key that must name one key.
pub fn key(limits: &Limits, key: &[u8]) -> Result<(), Error> {
    if key.is_empty() {
        return Err(invalid(
            "key is empty: every key must have at least one byte",
        ));
    }
    key_len(limits, key)
}

fn key_len(limits: &Limits, key: &[u8]) -> Result<(), Error> {
    if key.len() > limits.max_key_bytes {
        return Err(invalid(format!(
            "key is {} bytes, over the key limit of {} bytes (--max-key-bytes)",
            key.len(),
            limits.max_key_bytes
        )));
    }
    Ok(())
}

/// A value.
pub fn value(limits: &Limits, value: &[u8]) -> Result<(), Error> {
    if value.len() > limits.max_value_bytes {
        return Err(invalid(format!(
            "value is {} bytes, over the value limit of {} bytes (--max-value-bytes)",
            value.len(),
            limits.max_value_bytes
        )));
    }
    Ok(())
}

/// A consistency enum value (unspecified means linearizable).
pub fn consistency(raw: i32) -> Result<Consistency, Error> {
    match Consistency::try_from(raw) {
        Ok(Consistency::Unspecified) => Ok(Consistency::Linearizable),
        Ok(c) => Ok(c),
        Err(_) => Err(invalid(format!(
            "unknown consistency {raw}: use LINEARIZABLE (1) or SERIALIZABLE (2)"
        ))),
    }
}

/// A (key, range_end, prefix) triple.
pub fn key_range(limits: &Limits, key: &[u8], range_end: &[u8], prefix: bool) -> Result<(), Error> {
    key_len(limits, key)?;
    key_len(limits, range_end)?;
    if prefix && !range_end.is_empty() {
        return Err(invalid("prefix and range_end cannot be combined"));
    }
    if !range_end.is_empty() && range_end <= key {
        return Err(invalid(
            "inverted range: range_end must sort after key (the range is [key, range_end))",
        ));
    }
    Ok(())
}

/// A put.
pub fn put(limits: &Limits, req: &PutRequest) -> Result<(), Error> {
    key(limits, &req.key)?;
    value(limits, &req.value)
}

/// A delete.
pub fn delete(limits: &Limits, req: &DeleteRequest) -> Result<(), Error> {
    if req.key.is_empty() && !req.prefix {
        return Err(invalid(
            "key is empty: name a key, or set prefix to delete by prefix",
        ));
    }
    key_range(limits, &req.key, &req.range_end, req.prefix)
}

/// A range read.
pub fn range(limits: &Limits, req: &RangeRequest) -> Result<Consistency, Error> {
    key_range(limits, &req.key, &req.range_end, req.prefix)?;
    consistency(req.consistency)
}

/// Whether a valid transaction could pass the bounds every replica applies
/// (and so needs a dry run before it is proposed): only deletes, or more
/// puts than can overwrite values at their limit within the bounds, can.
pub fn txn_may_pass_bounds(limits: &Limits, req: &TxnRequest) -> bool {
    use crate::state::apply::{TXN_CHANGE_BYTES, TXN_PREV_KV_BYTES};
    let ops = req.success.iter().chain(&req.failure);
    let mut puts = 0usize;
    for op in ops {
        match &op.request {
            Some(request_op::Request::Delete(_)) => return true,
            Some(request_op::Request::Put(_)) => puts += 1,
            _ => {}
        }
    }
    // A put's change holds its key and value and the previous ones.
    let pair = limits.max_key_bytes + limits.max_value_bytes + 64;
    puts * 2 * pair > TXN_CHANGE_BYTES || puts * pair > TXN_PREV_KV_BYTES
}

/// A transaction.
pub fn txn(limits: &Limits, req: &TxnRequest) -> Result<(), Error> {
    let count = req.compare.len() + req.success.len() + req.failure.len();
    if count > MAX_TXN_OPS {
        return Err(invalid(format!(
            "transaction has {count} compares and operations, over the limit of {MAX_TXN_OPS}"
        )));
    }
    for c in &req.compare {
        key(limits, &c.key)?;
        match CompareTarget::try_from(c.target) {
            Ok(CompareTarget::Unspecified) | Err(_) => {
                return Err(invalid(format!(
                "unknown compare target {}: use VALUE, VERSION, CREATE_REVISION or MOD_REVISION",
                c.target
            )))
            }
            Ok(CompareTarget::Value) => value(limits, &c.value)?,
            Ok(_) => {}
        }
        match CompareResult::try_from(c.result) {
            Ok(CompareResult::Unspecified) | Err(_) => {
                return Err(invalid(format!(
                    "unknown compare result {}: use EQUAL, NOT_EQUAL, GREATER or LESS",
                    c.result
                )))
            }
            Ok(_) => {}
        }
    }
    for ops in [&req.success, &req.failure] {
        let mut written = HashSet::new();
        let mut deleted = Vec::new();
        for op in ops {
            match &op.request {
                Some(request_op::Request::Put(p)) => {
                    put(limits, p)?;
                    if !written.insert(p.key.clone()) {
                        return Err(invalid("a transaction may write a key at most once"));
                    }
                }
                Some(request_op::Request::Delete(d)) => {
                    delete(limits, d)?;
                    deleted.push(KeyRange::from_request(&d.key, &d.range_end, d.prefix, true));
                }
                Some(request_op::Request::Range(r)) => {
                    range(limits, r)?;
                }
                None => return Err(invalid("a transaction operation is empty")),
            }
        }
        // As etcd: a key may not be both put and deleted in one branch (the
        // outcome would depend on the order of the operations).
        if let Some(key) = written
            .iter()
            .find(|k| deleted.iter().any(|r| r.contains(k)))
        {
            return Err(invalid(format!(
                "a transaction may not put and delete the same key in one branch ({:?})",
                String::from_utf8_lossy(key)
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    /// Each limit is named in its message.
    #[test]
    fn limits_are_named() {
        let l = Limits {
            max_key_bytes: 4,
            max_value_bytes: 8,
        };
        let e = key(&l, b"12345").expect_err("long key").to_string();
        assert!(e.contains("key limit of 4 bytes"), "{e}");
        let e = value(&l, &[0; 9]).expect_err("long value").to_string();
        assert!(e.contains("value limit of 8 bytes"), "{e}");
        assert!(key(&l, b"").is_err());
        assert!(key_range(&l, b"b", b"a", false).is_err());
        assert!(consistency(7).is_err());
        assert_eq!(consistency(0).expect("default"), Consistency::Linearizable);
    }

    /// A transaction that writes one key twice is refused.
    #[test]
    fn txn_double_write_is_refused() {
        let put = |k: &str| crate::proto::kv::RequestOp {
            request: Some(request_op::Request::Put(PutRequest {
                key: Bytes::from(k.to_string()),
                value: Bytes::new(),
                prev_kv: false,
            })),
        };
        let req = TxnRequest {
            compare: vec![],
            success: vec![put("a"), put("a")],
            failure: vec![],
        };
        assert!(txn(&Limits::default(), &req).is_err());
    }

    /// A branch that puts a key and deletes it (by itself or in a range) is
    /// refused, as etcd refuses it; in different branches it is fine.
    #[test]
    fn txn_put_and_delete_of_one_key_is_refused() {
        let put = |k: &str| crate::proto::kv::RequestOp {
            request: Some(request_op::Request::Put(PutRequest {
                key: Bytes::from(k.to_string()),
                value: Bytes::new(),
                prev_kv: false,
            })),
        };
        let del = |k: &str, prefix: bool| crate::proto::kv::RequestOp {
            request: Some(request_op::Request::Delete(DeleteRequest {
                key: Bytes::from(k.to_string()),
                prefix,
                ..Default::default()
            })),
        };
        let l = Limits::default();
        let same = TxnRequest {
            success: vec![put("a/1"), del("a/1", false)],
            ..Default::default()
        };
        let e = txn(&l, &same).expect_err("put and delete").to_string();
        assert!(e.contains("put and delete the same key"), "{e}");
        let in_prefix = TxnRequest {
            success: vec![del("a/", true), put("a/1")],
            ..Default::default()
        };
        assert!(txn(&l, &in_prefix).is_err());
        let apart = TxnRequest {
            success: vec![put("a/1"), del("b/", true)],
            failure: vec![del("a/1", false)],
            ..Default::default()
        };
        txn(&l, &apart).expect("different keys, or different branches");
    }
}
