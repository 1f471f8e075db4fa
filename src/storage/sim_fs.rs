//! A simulated disk for tests (the `testing` feature): it keeps, for every
//! file, what was written and what was made durable, and a power loss
//! ([`SimFs::power_loss`]) drops whatever was not synced, tearing the last
//! unsynced write at a random byte; directory changes (files created,
//! renamed, removed) survive only if their directory was synced.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::fs::{LogFile, LogFs};
use crate::raft::SplitMix64;

#[derive(Clone, Debug, Default)]
struct Contents {
    /// What reads see.
    data: Vec<u8>,
    /// What survives a power loss.
    durable: usize,
}

#[derive(Debug, Default)]
struct Disk {
    /// File contents, by id.
    files: BTreeMap<u64, Contents>,
    /// The directory entries as they are.
    names: BTreeMap<PathBuf, u64>,
    /// The directory entries as a power loss leaves them.
    durable_names: BTreeMap<PathBuf, u64>,
    next_id: u64,
    /// Syncs done, for tests that count them.
    syncs: u64,
    /// The sync that fails as if the power went at that moment (counted
    /// down on every file sync).
    fail_sync_in: Option<u64>,
}

/// A simulated disk shared by every handle of it.
#[derive(Clone, Debug, Default)]
pub struct SimFs {
    disk: Arc<Mutex<Disk>>,
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, path.display().to_string())
}

impl SimFs {
    /// An empty disk.
    pub fn new() -> Self {
        Self::default()
    }

    fn disk(&self) -> std::sync::MutexGuard<'_, Disk> {
        self.disk.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The power fails: every file keeps what was synced plus a random part
    /// (a torn write) of what was not, and the directories lose the changes
    /// that were not synced.
    pub fn power_loss(&self, rng: &mut SplitMix64) {
        let mut disk = self.disk();
        disk.names = disk.durable_names.clone();
        for contents in disk.files.values_mut() {
            let unsynced = contents.data.len() - contents.durable;
            let kept = rng.below(unsynced as u64 + 1) as usize;
            contents.data.truncate(contents.durable + kept);
            contents.durable = contents.data.len();
        }
    }

    /// A new disk holding only what this one holds durably now (what a
    /// power loss this instant, tearing nothing, would leave).
    pub fn durable_copy(&self) -> SimFs {
        let disk = self.disk();
        let mut copy = Disk {
            names: disk.durable_names.clone(),
            durable_names: disk.durable_names.clone(),
            next_id: disk.next_id,
            ..Disk::default()
        };
        for (&id, c) in &disk.files {
            copy.files.insert(
                id,
                Contents {
                    data: c.data[..c.durable].to_vec(),
                    durable: c.durable,
                },
            );
        }
        SimFs {
            disk: Arc::new(Mutex::new(copy)),
        }
    }

    /// The `n`th file sync from now (1: the next) fails, as if the power
    /// went just before it; call [`SimFs::power_loss`] after.
    pub fn fail_sync(&self, n: u64) {
        self.disk().fail_sync_in = Some(n.max(1));
    }

    /// How many syncs (of files and directories) were done.
    pub fn syncs(&self) -> u64 {
        self.disk().syncs
    }
}

/// A handle on a simulated file.
struct SimFile {
    fs: SimFs,
    id: u64,
}

impl LogFile for SimFile {
    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        let mut disk = self.fs.disk();
        let contents = disk
            .files
            .get_mut(&self.id)
            .ok_or_else(|| not_found(Path::new("file")))?;
        contents.data.extend_from_slice(data);
        Ok(())
    }
    fn sync_data(&mut self) -> io::Result<()> {
        let mut disk = self.fs.disk();
        if let Some(n) = disk.fail_sync_in {
            if n <= 1 {
                disk.fail_sync_in = None;
                return Err(io::Error::other("the power failed"));
            }
            disk.fail_sync_in = Some(n - 1);
        }
        disk.syncs += 1;
        let contents = disk
            .files
            .get_mut(&self.id)
            .ok_or_else(|| not_found(Path::new("file")))?;
        contents.durable = contents.data.len();
        Ok(())
    }
    fn size(&self) -> io::Result<u64> {
        let disk = self.fs.disk();
        Ok(disk.files.get(&self.id).map_or(0, |c| c.data.len()) as u64)
    }
}

impl LogFs for SimFs {
    fn create_dir_all(&self, _dir: &Path) -> io::Result<()> {
        Ok(())
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let disk = self.disk();
        Ok(disk
            .names
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
            .collect())
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let disk = self.disk();
        let id = disk.names.get(path).ok_or_else(|| not_found(path))?;
        Ok(disk
            .files
            .get(id)
            .map(|c| c.data.clone())
            .unwrap_or_default())
    }
    fn create(&self, path: &Path) -> io::Result<Box<dyn LogFile>> {
        let mut disk = self.disk();
        let id = disk.next_id;
        disk.next_id += 1;
        disk.files.insert(id, Contents::default());
        disk.names.insert(path.to_path_buf(), id);
        Ok(Box::new(SimFile {
            fs: self.clone(),
            id,
        }))
    }
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn LogFile>> {
        let disk = self.disk();
        let id = *disk.names.get(path).ok_or_else(|| not_found(path))?;
        Ok(Box::new(SimFile {
            fs: self.clone(),
            id,
        }))
    }
    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        let mut disk = self.disk();
        disk.syncs += 1;
        let id = *disk.names.get(path).ok_or_else(|| not_found(path))?;
        if let Some(c) = disk.files.get_mut(&id) {
            c.data.truncate(len as usize);
            c.durable = c.data.len();
        }
        Ok(())
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut disk = self.disk();
        let id = disk.names.remove(from).ok_or_else(|| not_found(from))?;
        disk.names.insert(to.to_path_buf(), id);
        Ok(())
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut disk = self.disk();
        disk.names.remove(path).ok_or_else(|| not_found(path))?;
        Ok(())
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut disk = self.disk();
        disk.syncs += 1;
        let names: Vec<(PathBuf, u64)> = disk
            .names
            .iter()
            .filter(|(p, _)| p.parent() == Some(dir))
            .map(|(p, &id)| (p.clone(), id))
            .collect();
        disk.durable_names.retain(|p, _| p.parent() != Some(dir));
        disk.durable_names.extend(names);
        Ok(())
    }
}
