//! The bounds on what one command, one apply call or one read may hold.

use super::*;
use crate::proto::kv::{request_op, response_op, DeleteRequest, RequestOp, TxnRequest};
use command::Output;

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

/// A delete step stops at 2,000 keys however small they are, and says the
/// range holds more.
#[test]
fn a_delete_step_stops_at_its_key_count() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = open(dir.path());
    let entries: Vec<Entry> = (0..2_001)
        .map(|i| entry(i + 1, put(&format!("n/{i:05}"), "v")))
        .collect();
    s.apply_all(&entries).expect("apply");
    let delete = Op::Delete(DeleteRequest {
        key: Bytes::from("n/"),
        prefix: true,
        ..Default::default()
    });
    let out = s.apply_all(&[entry(2_002, delete.clone())]).expect("apply");
    assert!(
        matches!(&out[0].output, Output::Delete { response, more: true } if response.deleted == apply::DELETE_STEP_KEYS as u64),
        "{:?}",
        out[0].output
    );
    let out = s.apply_all(&[entry(2_003, delete)]).expect("apply");
    assert!(
        matches!(&out[0].output, Output::Delete { response, more: false } if response.deleted == 1)
    );
}

/// A transaction whose changes (with the previous values the history
/// keeps) pass 32 MiB is refused whole, even without prev_kv.
#[test]
fn a_transaction_over_its_change_bound_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = open(dir.path());
    let value = big(1 << 20);
    let entries: Vec<Entry> = (0..40)
        .map(|i| entry(i + 1, put(&format!("b/{i:02}"), &value)))
        .collect();
    s.apply_all(&entries).expect("apply");
    let overwrite = Op::Txn(TxnRequest {
        success: (0..40)
            .map(|i| RequestOp {
                request: Some(request_op::Request::Put(PutRequest {
                    key: Bytes::from(format!("b/{i:02}")),
                    value: Bytes::from("small"),
                    prev_kv: false,
                })),
            })
            .collect(),
        ..Default::default()
    });
    let out = s.apply_all(&[entry(41, overwrite)]).expect("apply");
    assert!(
        matches!(&out[0].output, Output::Refused(r) if r.contains("32 MiB")),
        "{:?}",
        out[0].output
    );
    assert_eq!(
        s.get(b"b/39").expect("get").0.expect("kept").value.len(),
        1 << 20
    );
}

/// A range page stops after about 8 MiB of keys and values, with `more`.
#[test]
fn a_range_page_is_bounded_in_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = open(dir.path());
    let value = big(1 << 20);
    let entries: Vec<Entry> = (0..12)
        .map(|i| entry(i + 1, put(&format!("r/{i:02}"), &value)))
        .collect();
    s.apply_all(&entries).expect("apply");
    let (page, _) = s
        .range(&RangeRequest {
            key: Bytes::from("r/"),
            prefix: true,
            ..Default::default()
        })
        .expect("range");
    assert!(page.more);
    assert!(
        (7..=8).contains(&page.kvs.len()),
        "{} values of 1 MiB",
        page.kvs.len()
    );
}
