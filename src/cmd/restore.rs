//! `kvstore restore`: the command line of [`crate::restore`]. Exit codes:
//! 0 seeded; 1 the backup is damaged or unusable; 2 bad flags or a data
//! dir that is not empty; 3 the disk failed.

use std::process::ExitCode;

use crate::config::RestoreArgs;
use crate::identity::PodName;
use crate::restore::{restore, RestoreError, RestoreOptions};

/// sled's cache while the state is written.
const CACHE_BYTES: u64 = 64 << 20;

/// Runs `kvstore restore`.
pub fn run(args: RestoreArgs) -> ExitCode {
    let node_name = args
        .node_name
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let name = match PodName::parse(&node_name) {
        Ok(name) => name,
        Err(e) => {
            eprintln!("kvstore restore: {e} (give --node-name, e.g. kvstore-0)");
            return ExitCode::from(2);
        }
    };
    let opts = RestoreOptions {
        snapshot: args.snapshot,
        data_dir: args.data_dir,
        name: name.clone(),
        cluster_id: args.cluster_id,
        cache_bytes: CACHE_BYTES,
    };
    match restore(&opts) {
        Ok(done) => {
            let s = &done.summary;
            println!(
                "restored {} into {} as {name}, the only voter of new cluster {:016x}",
                opts.snapshot.display(),
                opts.data_dir.display(),
                done.cluster_id
            );
            println!("revision   {}", s.info.revision);
            println!("keys       {}", s.keys);
            println!("bytes      {}", s.bytes);
            println!("sha256     {}", s.sha256);
            println!(
                "taken from {} of cluster {:016x}",
                s.info.member, s.info.cluster_id
            );
            println!(
                "start the other members on empty data dirs: they join {name} and catch up from it"
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kvstore restore: {e}");
            ExitCode::from(match e {
                RestoreError::Snapshot(..) | RestoreError::Unusable(..) => 1,
                RestoreError::NotEmpty(_) => 2,
                RestoreError::DataDir(..) | RestoreError::State(_) | RestoreError::Wal(_) => 3,
            })
        }
    }
}
