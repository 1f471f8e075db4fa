//! `kvctl watch`: prints changes as they happen, resuming on another node
//! when the one answering goes away.

use std::io::Write;
use std::process::ExitCode;

use kvstore_client::Client;
use kvstore_proto::kv::WatchRequest;

use crate::exit::fail;
use crate::output::print_event;

/// What `kvctl watch` was asked to do.
pub(crate) struct WatchOptions {
    /// Stop after this many events (0: run until interrupted).
    pub(crate) count: u64,
    /// Print JSON instead of text.
    pub(crate) json_out: bool,
}

/// Prints the changes `req` asks for until `count` (0: forever). When the
/// node answering goes away, the watch resumes on another from where it
/// left off ([`Client::watch_resuming`]), so nothing is missed or printed
/// twice; a watch "from now" is pinned to the current revision first.
pub(crate) async fn watch(
    client: &mut Client,
    out: &mut impl Write,
    req: WatchRequest,
    opts: WatchOptions,
) -> ExitCode {
    let mut watch = match client.watch_resuming(req).await {
        Ok(w) => w,
        Err(e) => return fail(e),
    };
    let mut seen = 0u64;
    let mut resumes = 0;
    loop {
        let event = match watch.next().await {
            Ok(event) => event,
            Err(e) => return fail(e),
        };
        if watch.resumes() != resumes {
            resumes = watch.resumes();
            eprintln!(
                "kvctl: the watch's node went away; resumed on another at revision {}",
                event.revision
            );
        }
        print_event(out, &event, opts.json_out);
        seen += 1;
        if opts.count > 0 && seen >= opts.count {
            return ExitCode::SUCCESS;
        }
    }
}
