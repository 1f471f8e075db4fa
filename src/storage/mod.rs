//! The data dir: the write-ahead log (`wal/`), the applied state (`state/`,
//! a sled database) and the helpers that make files durable.
//!
//! ```text
//! <data-dir>/
//!   wal/      Raft log and hard state, fdatasync'ed per group commit
//!   state/    sled: identity record, applied data, watch history
//! ```

pub mod wal;

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// Makes a directory's entries (files created, renamed or removed in it)
/// durable.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Makes every file and directory under `root` durable: sled's own flush
/// stops at `sync_file_range` and never syncs its blob files.
pub fn fsync_tree(root: &Path) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(root)?;
    if meta.is_dir() {
        for item in std::fs::read_dir(root)? {
            fsync_tree(&item?.path())?;
        }
        fsync_dir(root)
    } else if meta.is_file() {
        File::open(root)?.sync_all()
    } else {
        Ok(())
    }
}

/// Bytes used by the files under `root`.
pub fn disk_usage(root: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(root) else {
        return 0;
    };
    if meta.is_dir() {
        std::fs::read_dir(root)
            .map(|items| {
                items
                    .filter_map(Result::ok)
                    .map(|i| disk_usage(&i.path()))
                    .sum()
            })
            .unwrap_or(0)
    } else {
        meta.len()
    }
}

/// The paths inside a data dir.
#[derive(Clone, Debug)]
pub struct DataDir {
    /// The data dir itself.
    pub root: PathBuf,
}

impl DataDir {
    /// The layout under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DataDir { root: root.into() }
    }

    /// The write-ahead log's directory.
    pub fn wal(&self) -> PathBuf {
        self.root.join("wal")
    }

    /// The sled database's directory.
    pub fn state(&self) -> PathBuf {
        self.root.join("state")
    }
}
