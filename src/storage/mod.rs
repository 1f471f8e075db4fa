//! The data dir: the write-ahead log (`wal/`), the applied state (`state/`,
//! a sled database) and the helpers that make files durable.
//!
//! ```text
//! <data-dir>/
//!   wal/      Raft log and hard state, fdatasync'ed per group commit
//!   state/    sled: identity record, applied data, watch history
//! ```

pub mod fs;
#[cfg(any(test, feature = "testing"))]
pub mod sim_fs;
pub mod wal;

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// The size and free bytes of the filesystem holding `path`.
pub fn volume(path: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: statvfs writes into the struct it is given and reads the
    // NUL-terminated path; both live for the call.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let unit = st.f_frsize as u64;
    Ok((st.f_blocks as u64 * unit, st.f_bavail as u64 * unit))
}

/// Makes a directory's entries (files created, renamed or removed in it)
/// durable.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Makes every file and directory under `root` durable: sled's own flush
/// stops at `sync_file_range` and never syncs its blob files.
///
/// sled deletes files of its own in the background (blobs of overwritten
/// values, rewritten segments), so a file listed a moment ago may be gone
/// when it is opened: a file that no longer exists needs no sync.
pub fn fsync_tree(root: &Path) -> io::Result<()> {
    vanished_is_ok(fsync_entry(root))
}

fn fsync_entry(path: &Path) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    if meta.is_dir() {
        for item in std::fs::read_dir(path)? {
            fsync_tree(&item?.path())?;
        }
        fsync_dir(path)
    } else if meta.is_file() {
        File::open(path)?.sync_all()
    } else {
        Ok(())
    }
}

fn vanished_is_ok(result: io::Result<()>) -> io::Result<()> {
    match result {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
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

    /// The marker of a restore in progress: `kvstore restore` writes it
    /// before it seeds the dir and removes it once the dir is whole, so a
    /// restore cut short (a kill, a crash) is never started as a member.
    pub fn restoring(&self) -> PathBuf {
        self.root.join("restore-incomplete")
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Files that sled deletes while the tree is being synced are skipped,
    /// not reported: a deleting thread races the sync over many rounds.
    #[test]
    fn files_deleted_during_a_sync_are_not_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().to_path_buf();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let churn = {
            let (root, stop) = (root.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let path = root.join(format!("blob-{}", i % 64));
                    let _ = std::fs::write(&path, b"x");
                    let _ = std::fs::remove_file(root.join(format!("blob-{}", (i + 32) % 64)));
                    i += 1;
                }
            })
        };
        for _ in 0..300 {
            fsync_tree(&root).expect("a vanished file is not an error");
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        churn.join().expect("churn thread");
        assert!(fsync_tree(&root.join("never-existed")).is_ok());
    }
}
