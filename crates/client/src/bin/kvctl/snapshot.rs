//! `kvctl snapshot save FILE` and `kvctl snapshot status FILE`: a backup of
//! one member's state, and the check of one.
//!
//! `save` streams `Maintenance.Snapshot` into `FILE.part`, checks the
//! stream's SHA-256 against the one its last message carries, appends it,
//! fsyncs, reads the file back and verifies it whole, and only then
//! renames it to FILE (and fsyncs the directory): FILE exists only as a
//! complete, verified backup. Exit codes: 0 saved (or, for `status`, the
//! file is good); 1 `status` of a damaged or truncated file; 2 a local
//! file that cannot be written; 3 the cluster could not be reached or the
//! transfer broke or arrived damaged (retry); others as for every command.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use serde_json::json;
use sha2::{Digest, Sha256};

use kvstore_client::snapshot_file::{self, hex, SnapshotSummary};
use kvstore_client::Client;
use kvstore_proto::kv::Consistency;

use crate::exit::fail;

/// The longest wait for the next message of the stream.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a save failed, and its exit code.
struct Failure {
    message: String,
    code: u8,
}

fn local(path: &Path, e: impl std::fmt::Display) -> Failure {
    Failure {
        message: format!("{}: {e}", path.display()),
        code: 2,
    }
}

fn transfer(message: String) -> Failure {
    Failure { message, code: 3 }
}

/// `kvctl snapshot save FILE`.
pub(crate) async fn save(
    client: &mut Client,
    out: &mut impl Write,
    json_out: bool,
    consistency: Consistency,
    file: PathBuf,
) -> ExitCode {
    let (stream, endpoint) = match client.snapshot(consistency).await {
        Ok(opened) => opened,
        Err(e) => return fail(e),
    };
    let mut part = file.clone().into_os_string();
    part.push(".part");
    let part = PathBuf::from(part);
    match receive(stream, &part, &file).await {
        Ok(summary) => {
            print(out, json_out, &file, &summary, Some(&endpoint));
            ExitCode::SUCCESS
        }
        Err(failure) => {
            let _ = std::fs::remove_file(&part);
            eprintln!("kvctl: snapshot save: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

/// Writes the stream to `part`, verifies it, and renames it to `file`.
async fn receive(
    mut stream: tonic::Streaming<kvstore_proto::kv::SnapshotResponse>,
    part: &Path,
    file: &Path,
) -> Result<SnapshotSummary, Failure> {
    let mut f = std::fs::File::create(part).map_err(|e| local(part, e))?;
    let mut hasher = Sha256::new();
    let recorded = loop {
        let msg = match tokio::time::timeout(IDLE_TIMEOUT, stream.message()).await {
            Ok(Ok(Some(msg))) => msg,
            Ok(Ok(None)) => {
                return Err(transfer("the stream ended before its last message".into()))
            }
            Ok(Err(status)) => {
                return Err(transfer(format!(
                    "the stream broke: {:?}: {}",
                    status.code(),
                    status.message()
                )))
            }
            Err(_) => {
                return Err(transfer(format!(
                    "no message from the server for {IDLE_TIMEOUT:?}"
                )))
            }
        };
        hasher.update(&msg.blob);
        f.write_all(&msg.blob).map_err(|e| local(part, e))?;
        if !msg.sha256.is_empty() {
            break msg.sha256;
        }
    };
    let computed: [u8; 32] = hasher.finalize().into();
    if computed.as_slice() != recorded.as_ref() {
        return Err(transfer(format!(
            "the stream's SHA-256 is {}, its last message says {}: damaged in transit",
            hex(&computed),
            hex(&recorded)
        )));
    }
    f.write_all(&computed).map_err(|e| local(part, e))?;
    f.sync_all().map_err(|e| local(part, e))?;
    drop(f);
    // What is on disk, read back whole: the same checks as `status`.
    let summary = snapshot_file::verify_file(part).map_err(|e| transfer(e.to_string()))?;
    if summary.sha256 != hex(&computed) {
        return Err(transfer(
            "the file read back differs from the stream".into(),
        ));
    }
    std::fs::rename(part, file).map_err(|e| local(file, e))?;
    let dir = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| local(dir, e))?;
    Ok(summary)
}

/// `kvctl snapshot status FILE`.
pub(crate) fn status(out: &mut impl Write, json_out: bool, file: PathBuf) -> ExitCode {
    match snapshot_file::verify_file(&file) {
        Ok(summary) => {
            print(out, json_out, &file, &summary, None);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kvctl: snapshot status: {}: {e}", file.display());
            ExitCode::from(1)
        }
    }
}

/// The figures of a verified snapshot file.
fn print(
    out: &mut impl Write,
    json_out: bool,
    file: &Path,
    s: &SnapshotSummary,
    endpoint: Option<&str>,
) {
    if json_out {
        let _ = writeln!(
            out,
            "{}",
            json!({
                "file": file.display().to_string(),
                "revision": s.info.revision,
                "keys": s.keys,
                "bytes": s.bytes,
                "sha256": s.sha256,
                "member": s.info.member,
                "cluster_id": format!("{:016x}", s.info.cluster_id),
                "taken_unix_ms": s.info.taken_unix_ms,
                "format_version": s.info.format_version,
            })
        );
        return;
    }
    let verb = if endpoint.is_some() {
        "saved"
    } else {
        "verified"
    };
    let _ = writeln!(out, "{verb} {}", file.display());
    let _ = writeln!(out, "revision  {}", s.info.revision);
    let _ = writeln!(out, "keys      {}", s.keys);
    let _ = writeln!(out, "bytes     {}", s.bytes);
    let _ = writeln!(out, "sha256    {}", s.sha256);
    let _ = writeln!(
        out,
        "taken by  {} of cluster {:016x}{}",
        s.info.member,
        s.info.cluster_id,
        endpoint.map(|e| format!(" (at {e})")).unwrap_or_default()
    );
}
