//! The key-value commands and leadership transfer: one request each, one
//! answer printed.

use std::io::Write;
use std::process::ExitCode;

use bytes::Bytes;
use serde_json::{json, Value};

use kvstore_client::Client;
use kvstore_proto::kv::{
    response_op, Consistency as ProtoConsistency, DeleteRequest, GetRequest, KeyValue, PutRequest,
};

use crate::exit::{fail, fail_write};
use crate::output::{kv_json, text};

/// `kvctl put`: sets `key` to `value`, printing the revision (and the
/// previous value with `prev`).
pub(crate) async fn put(
    client: &mut Client,
    out: &mut impl Write,
    json_out: bool,
    key: String,
    value: String,
    prev: bool,
) -> ExitCode {
    let req = PutRequest {
        key: key.into(),
        value: value.into(),
        prev_kv: prev,
    };
    let resp = match client.put_request(req).await {
        Ok(resp) => resp,
        Err(e) => return fail_write(e),
    };
    let rev = resp.header.as_ref().map_or(0, |h| h.revision);
    if json_out {
        let _ = writeln!(
            out,
            "{}",
            json!({ "revision": rev, "prev_kv": resp.prev_kv.as_ref().map(kv_json) })
        );
    } else {
        if let Some(p) = &resp.prev_kv {
            let _ = writeln!(out, "previous: {}", text(&p.value));
        }
        let _ = writeln!(out, "OK (revision {rev})");
    }
    ExitCode::SUCCESS
}

/// `kvctl get`: prints the value of `key`; a key not found exits 1.
pub(crate) async fn get(
    client: &mut Client,
    out: &mut impl Write,
    json_out: bool,
    consistency: ProtoConsistency,
    key: String,
    min_revision: u64,
) -> ExitCode {
    let req = GetRequest {
        key: key.clone().into(),
        consistency: consistency as i32,
        min_revision,
    };
    let resp = match client.get_request(req).await {
        Ok(resp) => resp,
        Err(e) => return fail(e),
    };
    match resp.kv {
        Some(kv) => {
            if json_out {
                let _ = writeln!(out, "{}", kv_json(&kv));
            } else {
                let _ = writeln!(out, "{}", text(&kv.value));
            }
            ExitCode::SUCCESS
        }
        None => {
            if json_out {
                let _ = writeln!(out, "null");
            }
            eprintln!("kvctl: key {key:?} not found");
            ExitCode::from(1)
        }
    }
}

/// `kvctl del`: deletes `key` (or every key under it with `prefix`),
/// printing how many keys went.
pub(crate) async fn del(
    client: &mut Client,
    out: &mut impl Write,
    json_out: bool,
    key: String,
    prefix: bool,
) -> ExitCode {
    let req = DeleteRequest {
        key: key.into(),
        prefix,
        ..Default::default()
    };
    let resp = match client.delete(req).await {
        Ok(resp) => resp,
        Err(e) => return fail_write(e),
    };
    if json_out {
        let _ = writeln!(out, "{}", json!({ "deleted": resp.deleted }));
    } else {
        let _ = writeln!(out, "{}", resp.deleted);
    }
    ExitCode::SUCCESS
}

/// Which keys `kvctl range` lists, and how.
pub(crate) struct RangeQuery {
    /// First key, or the prefix when `prefix` is set.
    pub(crate) start: Option<String>,
    /// End key, exclusive (ignored with `prefix`).
    pub(crate) end: Option<String>,
    /// List the keys under `start` instead of [start, end).
    pub(crate) prefix: bool,
    /// Most keys to print (0: all of them).
    pub(crate) limit: u64,
    /// Print only keys.
    pub(crate) keys_only: bool,
}

/// `kvctl range` (`ls`): prints the keys asked for in key order, read page
/// by page.
pub(crate) async fn range(
    client: &mut Client,
    out: &mut impl Write,
    json_out: bool,
    consistency: ProtoConsistency,
    query: RangeQuery,
) -> ExitCode {
    let start: Bytes = query.start.unwrap_or_default().into();
    // A prefix is read as the explicit range [prefix, prefix_end).
    let end: Bytes = if query.prefix {
        kvstore_proto::prefix_end(&start)
            .map(Bytes::from)
            .unwrap_or_default()
    } else {
        query.end.unwrap_or_default().into()
    };
    let limit = if query.limit == 0 {
        u64::MAX
    } else {
        query.limit
    };
    let kvs = match client
        .scan(start, end, limit, consistency, query.keys_only)
        .await
    {
        Ok(kvs) => kvs,
        Err(e) => return fail(e),
    };
    let mut items = Vec::new();
    for kv in &kvs {
        if json_out {
            items.push(kv_json(kv));
        } else if query.keys_only {
            let _ = writeln!(out, "{}", text(&kv.key));
        } else {
            let _ = writeln!(out, "{} = {}", text(&kv.key), text(&kv.value));
        }
    }
    if json_out {
        let _ = writeln!(out, "{}", Value::Array(items));
    }
    ExitCode::SUCCESS
}

/// `kvctl cas`: sets `key` to `new` only if its value is `expected` (or,
/// with `absent`, only if it does not exist); a compare that fails prints
/// the current value and exits 1.
pub(crate) async fn cas(
    client: &mut Client,
    out: &mut impl Write,
    json_out: bool,
    key: String,
    expected: Option<String>,
    new: Option<String>,
    absent: bool,
) -> ExitCode {
    let (expected, new) = match (absent, expected, new) {
        (true, Some(new), None) => (None, new),
        (false, Some(expected), Some(new)) => (Some(Bytes::from(expected)), new),
        _ => {
            eprintln!("kvctl: usage: kvctl cas KEY EXPECTED NEW, or kvctl cas --absent KEY NEW");
            return ExitCode::from(2);
        }
    };
    let resp = match client.compare_and_swap(key, expected, new).await {
        Ok(resp) => resp,
        Err(e) => return fail_write(e),
    };
    let rev = resp.header.as_ref().map_or(0, |h| h.revision);
    // A failed compare answers with the key as it is now.
    let current: Option<KeyValue> = resp.responses.first().and_then(|r| match &r.response {
        Some(response_op::Response::Range(range)) => range.kvs.first().cloned(),
        _ => None,
    });
    if json_out {
        let _ = writeln!(
            out,
            "{}",
            json!({ "succeeded": resp.succeeded, "revision": rev, "current": current.as_ref().map(kv_json) })
        );
    } else if resp.succeeded {
        let _ = writeln!(out, "OK (revision {rev})");
    } else {
        let now = current.map_or("<absent>".to_string(), |kv| text(&kv.value));
        let _ = writeln!(out, "FAILED: current value is {now}");
    }
    if resp.succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// `kvctl transfer-leader`: moves leadership to the member `ordinal`.
pub(crate) async fn transfer_leader(
    client: &mut Client,
    out: &mut impl Write,
    ordinal: u32,
) -> ExitCode {
    match client.transfer_leadership(ordinal).await {
        Ok(()) => {
            let _ = writeln!(out, "leadership moved to ordinal {ordinal}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}
