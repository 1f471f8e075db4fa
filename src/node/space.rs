//! Keeping the volume from filling up.
//!
//! A full disk is the one failure sled does not survive: a write that meets
//! ENOSPC can leave its files unreadable. So the node never lets it come to
//! that in normal operation:
//!
//! * a **quota** on the bytes the state holds (data and history, counted
//!   exactly by the state), by default a fifth of the volume: the rest is
//!   room for sled's own overhead, a second copy of the state while a
//!   snapshot is installed, and the write-ahead log;
//! * a **free-space floor**: a tenth of the volume (at most 1 GiB) must stay
//!   free, whatever the quota says (the volume may be shared, or sled may
//!   grow more than expected);
//! * a **reserve file** (a twentieth of the volume, at most 64 MiB) that
//!   holds space back, released when the volume is nearly full so that the
//!   node can still start, recover and compact.
//!
//! Past either bound the member raises the NOSPACE alarm through the log
//! (see [`crate::state::space`]): every member then refuses writes that add
//! data, with RESOURCE_EXHAUSTED, while reads, deletes and compaction go on.
//! The member clears its alarm once it is back under 90% of its quota with
//! room to spare. The leader also refuses such writes itself as soon as it
//! is past its own quota, before the alarm has gone round.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::state::command::{Command, Op};
use crate::state::space::Alarm;

use super::NodeHandle;

/// The name of the reserve file in the data dir.
const RESERVE_FILE: &str = "reserve";

/// How often the monitor looks at the volume.
const CHECK_EVERY: Duration = Duration::from_millis(250);

/// The bounds a member keeps to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpacePolicy {
    /// Bytes of data and history past which writes that add data stop.
    pub quota: u64,
    /// Free bytes on the volume below which writes that add data stop.
    pub min_free: u64,
    /// Bytes the reserve file holds back.
    pub reserve: u64,
}

pub use crate::storage::volume;

impl SpacePolicy {
    /// The policy for the volume holding `dir`: `quota` if given, else a
    /// fifth of the volume.
    pub fn for_volume(dir: &Path, quota: Option<u64>) -> std::io::Result<SpacePolicy> {
        let (size, _) = volume(dir)?;
        Ok(SpacePolicy {
            quota: quota.unwrap_or(size / 5),
            min_free: (size / 10).min(1 << 30),
            reserve: (size / 20).min(64 << 20),
        })
    }

    /// Whether a member holding `stored` bytes with `free` bytes free must
    /// stop taking writes that add data.
    pub fn exceeded(&self, stored: u64, free: u64) -> bool {
        stored > self.quota || free < self.min_free
    }

    /// Whether a member whose alarm is raised is far enough back within the
    /// bounds to clear it (hysteresis, so that it does not flap).
    pub fn recovered(&self, stored: u64, free: u64) -> bool {
        stored < self.quota / 10 * 9 && free > self.min_free + self.min_free / 2
    }
}

/// The reserve file of a data dir.
pub struct Reserve {
    path: PathBuf,
    bytes: u64,
}

impl Reserve {
    /// The reserve of `dir`, holding back `bytes`.
    pub fn new(dir: &Path, bytes: u64) -> Reserve {
        Reserve {
            path: dir.join(RESERVE_FILE),
            bytes,
        }
    }

    /// Releases the reserve when the volume is nearly full (`free` below
    /// `min_free`), takes it again when there is room for it; returns what
    /// it did, if anything.
    pub fn adjust(&self, free: u64, min_free: u64) -> std::io::Result<Option<&'static str>> {
        let held = self.path.exists();
        if held && free < min_free / 2 {
            std::fs::remove_file(&self.path)?;
            return Ok(Some("released the reserve file: the volume is nearly full"));
        }
        if !held && free > min_free + 2 * self.bytes {
            let file = std::fs::File::create(&self.path)?;
            allocate(&file, self.bytes)?;
            file.sync_all()?;
            return Ok(Some("took the reserve file again"));
        }
        Ok(None)
    }
}

/// Allocates `bytes` of disk to `file` (not a sparse file: the blocks are
/// really taken).
fn allocate(file: &std::fs::File, bytes: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: fallocate on a file descriptor we own.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, bytes as libc::off_t) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Watches the volume and the state's size, raising and clearing this
/// member's NOSPACE alarm, until the node stops.
pub async fn monitor(node: NodeHandle, policy: SpacePolicy) {
    let reserve = Reserve::new(node.data_dir(), policy.reserve);
    let me = node.name().ordinal;
    let mut stopping = node.stopping();
    loop {
        if let Ok((_, free)) = volume(node.data_dir()) {
            match reserve.adjust(free, policy.min_free) {
                Ok(Some(what)) => tracing::warn!(free, "{what}"),
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "the reserve file"),
            }
            let stored = node.state().stored_bytes();
            let raised = node.state().alarms().contains(&me);
            let change = if !raised && policy.exceeded(stored, free) {
                tracing::warn!(
                    stored,
                    quota = policy.quota,
                    free,
                    min_free = policy.min_free,
                    "over the space bounds: raising the NOSPACE alarm (writes that add data stop)"
                );
                Some(true)
            } else if raised && policy.recovered(stored, free) {
                tracing::info!(
                    stored,
                    free,
                    "back within the space bounds: clearing the NOSPACE alarm"
                );
                Some(false)
            } else {
                None
            };
            if let Some(raise) = change {
                let command = Command::new(Op::Alarm(Alarm { member: me, raise }));
                if let Err(e) = node.write(&command, Duration::from_secs(5)).await {
                    tracing::warn!(error = %e, raise, "could not change the NOSPACE alarm; will retry");
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(CHECK_EVERY) => {}
            _ = stopping.wait_for(|&s| s) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bounds and their hysteresis.
    #[test]
    fn bounds_and_hysteresis() {
        let p = SpacePolicy {
            quota: 1000,
            min_free: 100,
            reserve: 10,
        };
        assert!(!p.exceeded(1000, 100));
        assert!(p.exceeded(1001, 1000));
        assert!(p.exceeded(0, 99));
        assert!(!p.recovered(950, 1000), "not yet under 90% of the quota");
        assert!(!p.recovered(800, 120), "not yet enough room");
        assert!(p.recovered(800, 200));
    }

    /// The reserve is released on a nearly full volume and taken again when
    /// there is room, with real blocks.
    #[test]
    fn the_reserve_file_gives_way() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = Reserve::new(dir.path(), 1 << 20);
        assert!(r.adjust(100 << 20, 10 << 20).expect("take").is_some());
        let meta = std::fs::metadata(dir.path().join(RESERVE_FILE)).expect("reserve");
        use std::os::unix::fs::MetadataExt;
        assert!(meta.blocks() * 512 >= 1 << 20, "allocated, not sparse");
        assert!(r.adjust(100 << 20, 10 << 20).expect("hold").is_none());
        assert!(r.adjust(4 << 20, 10 << 20).expect("release").is_some());
        assert!(!dir.path().join(RESERVE_FILE).exists());
    }
}
