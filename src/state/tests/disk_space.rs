//! Space accounting and the NOSPACE alarm.

use super::*;
use crate::proto::kv::{request_op, DeleteRequest, RequestOp, TxnRequest};
use command::Output;

/// The stored bytes of `s`'s tree, counted by a scan.
fn scanned(s: &KvState) -> (u64, u64) {
    let mut stored = 0;
    let mut history = 0;
    for prefix in [keys::DATA, keys::HISTORY] {
        for item in s.read().tree.scan_prefix([prefix]) {
            let (k, v) = item.expect("scan");
            let size = (k.len() + v.len()) as u64;
            stored += size;
            if prefix == keys::HISTORY {
                history += size;
            }
        }
    }
    (stored, history)
}

/// The space counts kept with every batch match a scan of what is stored,
/// through puts, overwrites, deletes, transactions and history trimming,
/// and survive a reopen.
#[test]
fn space_counts_match_what_is_stored() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let s = open(dir.path()).with_history_budget(64 << 10);
        let mut index = 0;
        let mut next = |op: Op| {
            index += 1;
            entry(index, op)
        };
        let mut entries = Vec::new();
        for i in 0..300 {
            entries.push(next(put(&format!("k{}", i % 40), &"v".repeat(i % 700))));
        }
        entries.push(next(Op::Delete(DeleteRequest {
            key: Bytes::from("k1"),
            prefix: true,
            ..Default::default()
        })));
        // In batches of ten, as a busy node applies them (the budget is
        // kept at the end of each batch).
        for batch in entries.chunks(10) {
            s.apply_all(batch).expect("apply");
        }
        assert_eq!((s.stored_bytes(), s.history_bytes()), scanned(&s));
        assert!(s.history_bytes() <= 64 << 10, "the history budget holds");
        assert!(s.history_floor() > 1, "history was trimmed by bytes");
        s.checkpoint().expect("checkpoint");
    }
    let s = open(dir.path());
    assert_eq!((s.stored_bytes(), s.history_bytes()), scanned(&s));
}

/// While a member's NOSPACE alarm is raised, every replica refuses puts and
/// transactions that put, the same way, and still applies deletes; once it
/// is cleared, puts apply again.
#[test]
fn the_nospace_alarm_refuses_writes_that_add_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = open(dir.path());
    let alarm = |raise| Op::Alarm(space::Alarm { member: 2, raise });
    let txn_put = Op::Txn(TxnRequest {
        success: vec![RequestOp {
            request: Some(request_op::Request::Put(PutRequest {
                key: Bytes::from("t"),
                value: Bytes::from("1"),
                prev_kv: false,
            })),
        }],
        ..Default::default()
    });
    let out = s
        .apply_all(&[
            entry(1, put("a", "1")),
            entry(2, alarm(true)),
            entry(3, put("b", "1")),
            entry(4, txn_put.clone()),
            entry(
                5,
                Op::Delete(DeleteRequest {
                    key: Bytes::from("a"),
                    ..Default::default()
                }),
            ),
        ])
        .expect("apply");
    assert_eq!(s.alarms().into_iter().collect::<Vec<_>>(), vec![2]);
    assert!(matches!(&out[2].output, Output::Refused(r) if r.starts_with("NOSPACE")));
    assert!(matches!(&out[3].output, Output::Refused(r) if r.starts_with("NOSPACE")));
    assert!(matches!(&out[4].output, Output::Delete { response, .. } if response.deleted == 1));
    assert!(s.get(b"b").expect("get").0.is_none());
    let out = s
        .apply_all(&[entry(6, alarm(false)), entry(7, put("b", "1"))])
        .expect("apply");
    assert!(s.alarms().is_empty());
    assert!(matches!(&out[1].output, Output::Put(_)));
}
