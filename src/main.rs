//! The `kvstore` binary: `kvstore serve` runs one node, `kvstore restore`
//! seeds a data dir from a backup; `kvstore local`
//! runs a cluster in a box and `kvstore demo` the failover demonstration,
//! when built with the `box` feature (the default; the pod image leaves it
//! out).

use std::process::ExitCode;

use clap::Parser;
use kvstore::config::{Cli, CliCommand};

fn main() -> ExitCode {
    one_allocator_arena();
    let cli = Cli::parse();
    match cli.command {
        CliCommand::Serve(args) => kvstore::cmd::serve::run(*args),
        CliCommand::Restore(args) => kvstore::cmd::restore::run(args),
        #[cfg(feature = "box")]
        CliCommand::Local(args) => kvstore::cmd::local::run(args),
        #[cfg(feature = "box")]
        CliCommand::Demo(args) => kvstore::cmd::demo::run(args),
        #[cfg(not(feature = "box"))]
        CliCommand::Local(_) => kvstore::cmd::not_in_this_build("local"),
        #[cfg(not(feature = "box"))]
        CliCommand::Demo(_) => kvstore::cmd::not_in_this_build("demo"),
    }
}

/// Has glibc's malloc use one arena for all threads, unless the operator
/// chose with `MALLOC_ARENA_MAX`.
///
/// By default every thread that allocates while another does gets an arena
/// of its own (up to 8 per core), and each keeps the memory it freed. A
/// member serving random reads of 1 M keys at `--cache-mb 128` grew from
/// 220 to 340 MiB after 20,000 reads and 373 MiB after 100,000; with one
/// arena it stayed at 221 MiB (2 or 4 arenas: 255 and 292 MiB). The cost,
/// on 2 cores: reads of a small keyspace about 5% slower, puts unchanged
/// (docs/performance.md).
fn one_allocator_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets one of malloc's parameters; this runs
        // first in main, before any other thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}
