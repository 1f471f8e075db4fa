//! [`Wal`]: the open log, which appends (one write and one `fdatasync` per
//! group) and compacts.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::format::{frame, list_segments, segment_name};
use super::recovery::{recover, WalState};
use super::{io_err, WalError};
use crate::raft::{Entry, HardState, SnapshotMeta};
use crate::storage::fs::{LogFile, LogFs, RealFs};

/// The open write-ahead log.
pub struct Wal {
    fs: Arc<dyn LogFs>,
    dir: PathBuf,
    /// The segment being appended to, and its sequence number.
    active: Box<dyn LogFile>,
    active_seq: u64,
    /// Bytes in the active segment.
    active_len: u64,
    buf: Vec<u8>,
    /// Slept after every sync (a slow disk, for tests).
    sync_delay: std::time::Duration,
    /// Skip the sync of appends: a mutation, for the test that proves a
    /// power loss then loses acknowledged entries.
    #[cfg(feature = "testing")]
    skip_sync: bool,
    /// Told how long each sync took (the node's fsync histogram), so that
    /// the log itself knows nothing of metrics.
    on_sync: Option<Box<dyn FnMut(std::time::Duration) + Send>>,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.dir)
            .field("active_seq", &self.active_seq)
            .field("active_len", &self.active_len)
            .finish()
    }
}

impl Wal {
    /// Opens (or creates) the log in `dir` and replays it.
    pub fn open(dir: &Path) -> Result<(Wal, WalState), WalError> {
        Self::open_on(Arc::new(RealFs), dir)
    }

    /// Opens (or creates) the log in `dir` on `fs` and replays it.
    pub fn open_on(fs: Arc<dyn LogFs>, dir: &Path) -> Result<(Wal, WalState), WalError> {
        fs.create_dir_all(dir).map_err(io_err(dir))?;
        let (segments, state) = recover(fs.as_ref(), dir)?;
        let (active_seq, active_path) = match segments.last() {
            Some((seq, path)) => (*seq, path.clone()),
            None => {
                let path = dir.join(segment_name(1));
                fs.create(&path).map_err(io_err(&path))?;
                fs.sync_dir(dir).map_err(io_err(dir))?;
                (1, path)
            }
        };
        let active = fs.open_append(&active_path).map_err(io_err(&active_path))?;
        let active_len = active.size().map_err(io_err(&active_path))?;
        let wal = Wal {
            fs,
            dir: dir.to_path_buf(),
            active,
            active_seq,
            active_len,
            buf: Vec::new(),
            sync_delay: std::time::Duration::ZERO,
            #[cfg(feature = "testing")]
            skip_sync: false,
            on_sync: None,
        };
        Ok((wal, state))
    }

    /// Appends records and makes them durable: one write, one `fdatasync`.
    pub fn append(
        &mut self,
        hard_state: Option<HardState>,
        snapshot: Option<SnapshotMeta>,
        entries: &[Entry],
    ) -> Result<(), WalError> {
        if hard_state.is_none() && snapshot.is_none() && entries.is_empty() {
            return Ok(());
        }
        self.buf.clear();
        if let Some(s) = snapshot {
            frame(&mut self.buf, s.into());
        }
        if let Some(hs) = hard_state {
            frame(&mut self.buf, hs.into());
        }
        for e in entries {
            frame(&mut self.buf, e.into());
        }
        let path = self.active_path();
        self.active.write_all(&self.buf).map_err(io_err(&path))?;
        #[cfg(feature = "testing")]
        let skip = self.skip_sync;
        #[cfg(not(feature = "testing"))]
        let skip = false;
        if !skip {
            let started = std::time::Instant::now();
            self.active.sync_data().map_err(io_err(&path))?;
            self.synced(started);
        }
        self.active_len += self.buf.len() as u64;
        Ok(())
    }

    /// Rewrites the log as `hard_state`, `snapshot` and `entries` in a new
    /// segment and deletes the old ones.
    pub fn compact(
        &mut self,
        hard_state: HardState,
        snapshot: SnapshotMeta,
        entries: &[Entry],
    ) -> Result<(), WalError> {
        let seq = self.active_seq + 1;
        let tmp = self.dir.join(format!("{}.tmp", segment_name(seq)));
        let path = self.dir.join(segment_name(seq));
        self.buf.clear();
        frame(&mut self.buf, hard_state.into());
        frame(&mut self.buf, snapshot.into());
        for e in entries {
            frame(&mut self.buf, e.into());
        }
        {
            let mut f = self.fs.create(&tmp).map_err(io_err(&tmp))?;
            f.write_all(&self.buf).map_err(io_err(&tmp))?;
            let started = std::time::Instant::now();
            f.sync_data().map_err(io_err(&tmp))?;
            self.synced(started);
        }
        self.fs.rename(&tmp, &path).map_err(io_err(&path))?;
        self.fs.sync_dir(&self.dir).map_err(io_err(&self.dir))?;
        self.active = self.fs.open_append(&path).map_err(io_err(&path))?;
        self.active_seq = seq;
        self.active_len = self.buf.len() as u64;
        for (old, old_path) in list_segments(self.fs.as_ref(), &self.dir)? {
            if old < seq {
                self.fs.remove(&old_path).map_err(io_err(&old_path))?;
            }
        }
        self.fs.sync_dir(&self.dir).map_err(io_err(&self.dir))?;
        Ok(())
    }

    /// Skips the sync of appends (a mutation: the test that proves the sync
    /// is needed turns it on).
    #[cfg(feature = "testing")]
    pub fn skip_sync_for_tests(&mut self) {
        self.skip_sync = true;
    }

    /// Plays a slow disk: every sync takes `delay` longer (tests only).
    pub fn set_sync_delay(&mut self, delay: std::time::Duration) {
        self.sync_delay = delay;
    }

    /// Calls `observe` with the duration of every sync from now on.
    pub fn observe_syncs(&mut self, observe: impl FnMut(std::time::Duration) + Send + 'static) {
        self.on_sync = Some(Box::new(observe));
    }

    /// After a sync that began at `started`: the test's slow disk, then the
    /// observer.
    fn synced(&mut self, started: std::time::Instant) {
        if !self.sync_delay.is_zero() {
            std::thread::sleep(self.sync_delay);
        }
        if let Some(observe) = self.on_sync.as_mut() {
            observe(started.elapsed());
        }
    }

    /// Bytes in the active segment.
    pub fn active_len(&self) -> u64 {
        self.active_len
    }

    fn active_path(&self) -> PathBuf {
        self.dir.join(segment_name(self.active_seq))
    }
}
