//! The stored history of changes, and the applied index, across reopens.

use super::*;
use crate::proto::kv::DeleteRequest;

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
