//! Puts, deletes, transactions and ranges: what they change and answer.

use super::*;
use crate::proto::kv::{
    request_op, Compare, CompareResult, CompareTarget, DeleteRequest, RequestOp, TxnRequest,
};
use command::Output;

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
