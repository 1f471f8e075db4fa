//! The `kvstore` binary: `kvstore serve` runs one node; `kvstore local`
//! runs a cluster in a box.

use std::process::ExitCode;

use clap::Parser;
use kvstore::config::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => kvstore::cmd::serve::run(*args),
        Command::Local(args) => kvstore::cmd::local::run(args),
        Command::Demo(args) => kvstore::cmd::demo::run(args),
    }
}
