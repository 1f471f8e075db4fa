//! Tests of the applied state, by topic.

mod bounds;
mod disk_space;
mod history;
mod ops;
mod snapshots;

use super::*;
use crate::proto::kv::PutRequest;
use crate::raft::EntryKind;
use command::{Command, Op};

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

fn big(n: usize) -> String {
    "x".repeat(n)
}
