//! Tests of the applied state.

use super::*;
use crate::proto::kv::{
    request_op, response_op, Compare, CompareResult, CompareTarget, DeleteRequest, PutRequest,
    RequestOp, TxnRequest,
};
use crate::raft::EntryKind;
use crate::raft::SnapshotMeta;
use command::{Command, Op, Output};

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
