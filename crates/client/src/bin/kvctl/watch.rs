//! `kvctl watch`: prints changes as they happen, resuming on another node
//! when the one answering goes away.

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use kvstore_client::{Client, ClientError};
use kvstore_proto::kv::{RangeRequest, WatchRequest};

use crate::exit::{exit_code, fail};
use crate::output::print_event;

/// What `kvctl watch` was asked to do.
pub(crate) struct WatchOptions {
    /// Stop after this many events (0: run until interrupted).
    pub(crate) count: u64,
    /// Print JSON instead of text.
    pub(crate) json_out: bool,
    /// How long to keep trying to reopen a broken watch, in seconds.
    pub(crate) timeout_s: u64,
}

/// Prints the changes `req` asks for until `count` (0: forever). When the
/// stream ends or breaks (its node stopped), it is opened again, on any
/// endpoint, from the revision after the last one printed; a watch "from
/// now" first reads the current revision, so that the resumed watch misses
/// nothing in between.
pub(crate) async fn watch(
    client: &mut Client,
    out: &mut impl Write,
    mut req: WatchRequest,
    opts: WatchOptions,
) -> ExitCode {
    if req.start_revision == 0 {
        match current_revision(client, &req).await {
            Ok(revision) => req.start_revision = revision + 1,
            Err(e) => return fail(e),
        }
    }
    let mut seen = 0u64;
    let mut broken_since: Option<Instant> = None;
    loop {
        let mut stream = match client.watch(req.clone()).await {
            Ok(s) => s,
            Err(e)
                if exit_code(&e, false) == 3
                    && broken_since
                        .is_some_and(|t| t.elapsed() < Duration::from_secs(opts.timeout_s)) =>
            {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            Err(e) => return fail(e),
        };
        loop {
            match stream.message().await {
                Ok(Some(resp)) => {
                    for ev in resp.events {
                        print_event(out, &ev, opts.json_out);
                        req.start_revision = req.start_revision.max(ev.revision + 1);
                        seen += 1;
                        if opts.count > 0 && seen >= opts.count {
                            return ExitCode::SUCCESS;
                        }
                    }
                }
                Ok(None) => break,
                Err(status) if status.code() == tonic::Code::OutOfRange => {
                    return fail(ClientError::Status(status))
                }
                Err(_) => break,
            }
        }
        eprintln!(
            "kvctl: the watch's node went away; resuming on another from revision {}",
            req.start_revision
        );
        broken_since = Some(Instant::now());
    }
}

/// The cluster's revision now, read with the smallest range on the watched
/// key.
async fn current_revision(client: &mut Client, req: &WatchRequest) -> Result<u64, ClientError> {
    let resp = client
        .range(RangeRequest {
            key: req.key.clone(),
            limit: 1,
            keys_only: true,
            ..Default::default()
        })
        .await?;
    Ok(resp.header.map_or(0, |h| h.revision))
}
