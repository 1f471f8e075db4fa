//! The `kvstore` binary: `kvstore serve` runs one node; `kvstore local`
//! runs a cluster in a box and `kvstore demo` the failover demonstration,
//! when built with the `box` feature (the default; the pod image leaves it
//! out).

use std::process::ExitCode;

use clap::Parser;
use kvstore::config::{Cli, CliCommand};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        CliCommand::Serve(args) => kvstore::cmd::serve::run(*args),
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
