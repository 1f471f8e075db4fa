//! Writing the whole keyspace before a measured read or compare-and-swap
//! run, so that every key read exists and every compare has a value. Not
//! measured; concurrent puts; a key that fails is tried a few times.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::task::JoinSet;

use super::args::Plan;
use super::backend::{error_kind, Conn, Connections, SetupError};
use super::data;

/// Puts in flight while preloading, at least (more with a higher
/// `--concurrency`): enough that a large keyspace loads in seconds.
const MIN_WRITERS: usize = 64;
/// Tries per key before the preload gives up.
const TRIES: u32 = 3;
/// Pause after a failed put, so that a struggling cluster is not flooded.
const ERROR_PAUSE: Duration = Duration::from_millis(50);

/// Writes every key of the plan's keyspace with a filler value of the
/// plan's size, and gives that value.
pub(crate) async fn preload<C: Conn>(
    plan: &Plan,
    conns: &Connections<C>,
) -> Result<Bytes, SetupError> {
    let value = data::filler(plan.value_size);
    let len = plan.keyspace.len();
    let next = Arc::new(AtomicU64::new(0));
    let writers = plan.concurrency.max(MIN_WRITERS).min(len as usize);
    let mut tasks = JoinSet::new();
    for w in 0..writers {
        let mut conn = conns.for_worker(w);
        let next = next.clone();
        let keyspace = plan.keyspace.clone();
        let value = value.clone();
        let timeout = plan.request_timeout;
        tasks.spawn(async move {
            let mut failed = 0u64;
            let mut last = String::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= len {
                    break;
                }
                let key = keyspace.key(i);
                let mut written = false;
                for _ in 0..TRIES {
                    let put = conn.put(key.clone(), value.clone());
                    match tokio::time::timeout(timeout, put).await {
                        Ok(Ok(())) => {
                            written = true;
                            break;
                        }
                        Ok(Err(status)) => {
                            last = format!("{}: {}", error_kind(&status), status.message())
                        }
                        Err(_) => last = "DeadlineExceeded: put timed out".to_string(),
                    }
                    tokio::time::sleep(ERROR_PAUSE).await;
                }
                if !written {
                    failed += 1;
                }
            }
            (failed, last)
        });
    }
    let mut failed = 0;
    let mut last = String::new();
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok((f, l)) => {
                failed += f;
                if f > 0 {
                    last = l;
                }
            }
            Err(e) => {
                failed += 1;
                last = format!("a preload task failed: {e}");
            }
        }
    }
    if failed > 0 {
        return Err(SetupError::Preload { failed, last });
    }
    Ok(value)
}
