//! The `kvstore` binary: `kvstore serve` runs one node.

use std::process::ExitCode;

use clap::Parser;
use kvstore::config::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => kvstore::cmd::serve::run(*args),
    }
}
