//! Printing keys, values and events as text or JSON.

use std::io::Write;

use base64::Engine as _;
use serde_json::{json, Value};

use kvstore_proto::kv::{Event, EventType, KeyValue};

/// Bytes as text, with any invalid UTF-8 replaced.
pub(crate) fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A value as JSON: a string when it is UTF-8, else base64 with a marker.
pub(crate) fn json_bytes(b: &[u8]) -> Value {
    match std::str::from_utf8(b) {
        Ok(s) => Value::String(s.to_string()),
        Err(_) => json!({ "base64": base64::engine::general_purpose::STANDARD.encode(b) }),
    }
}

/// A key-value pair and its revisions as JSON.
pub(crate) fn kv_json(kv: &KeyValue) -> Value {
    json!({
        "key": json_bytes(&kv.key),
        "value": json_bytes(&kv.value),
        "create_revision": kv.create_revision,
        "mod_revision": kv.mod_revision,
        "version": kv.version,
    })
}

/// Prints one watch event as a line, flushed at once so that a reader of
/// the pipe sees each change as it happens.
pub(crate) fn print_event(out: &mut impl Write, ev: &Event, json_out: bool) {
    let kv = ev.kv.clone().unwrap_or_default();
    let kind = if ev.r#type == EventType::Delete as i32 {
        "DELETE"
    } else {
        "PUT"
    };
    if json_out {
        let _ = writeln!(
            out,
            "{}",
            json!({ "type": kind, "revision": ev.revision, "key": json_bytes(&kv.key), "value": json_bytes(&kv.value) })
        );
    } else if kind == "PUT" {
        let _ = writeln!(
            out,
            "{kind} {} = {} (revision {})",
            text(&kv.key),
            text(&kv.value),
            ev.revision
        );
    } else {
        let _ = writeln!(out, "{kind} {} (revision {})", text(&kv.key), ev.revision);
    }
    let _ = out.flush();
}
