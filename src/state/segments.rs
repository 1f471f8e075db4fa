//! The size of sled's log segments for a data dir.
//!
//! sled 0.34 stores any page write larger than a quarter of a segment as a
//! separate blob file, and frees a blob only when the segment that points
//! to it is reclaimed. At sled's default of 512 KiB, a value of 1 MB is a
//! blob on every write, and a data dir holding 100 MB of such values grew to
//! 38 times that. With 8 MiB segments a write of up to 2 MiB (a value at
//! the default 1 MiB limit with its key and metadata) stays inside a
//! segment, which sled compacts; the same load left 0.5 GB instead of
//! 4.4 GB (figures in docs/performance.md).
//!
//! A segment is the unit sled writes and reclaims, so it keeps a few of them
//! in use at any time: a small volume gets small segments (a 24 MiB volume
//! filled up and stopped its pod with 8 MiB ones). The size is the largest
//! power of two at most 1/128 of the volume, between sled's default and
//! 8 MiB, so 8 MiB from a 1 GiB volume up.
//!
//! sled refuses to open a database with a segment size other than the one it
//! was created with, so a data dir keeps the size recorded in its `conf`
//! file: a member upgraded in place opens its volume as before.

use std::path::Path;

/// The largest segment size, for volumes of 1 GiB and more.
pub const MAX_SEGMENT_SIZE: usize = 8 << 20;
/// sled's default: the smallest size, and the one data dirs created before
/// sizes were chosen use.
pub const LEGACY_SEGMENT_SIZE: usize = 512 << 10;

/// The segment size to open the sled database in `dir` with.
pub fn segment_size_for(dir: &Path) -> std::io::Result<usize> {
    match std::fs::read(dir.join("conf")) {
        Ok(conf) => Ok(recorded_segment_size(&conf).unwrap_or(LEGACY_SEGMENT_SIZE)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let (volume, _) = crate::storage::volume(existing_ancestor(dir))?;
            Ok(segment_size_for_volume(volume))
        }
        Err(e) => Err(e),
    }
}

/// The segment size of a new data dir on a volume of `bytes`.
pub fn segment_size_for_volume(bytes: u64) -> usize {
    let share = usize::try_from(bytes / 128).unwrap_or(usize::MAX);
    let power = share.checked_ilog2().map_or(0, |bits| 1 << bits);
    power.clamp(LEGACY_SEGMENT_SIZE, MAX_SEGMENT_SIZE)
}

/// `dir`, or its nearest ancestor that exists (a new data dir is created
/// by sled itself).
fn existing_ancestor(dir: &Path) -> &Path {
    dir.ancestors()
        .find(|a| a.exists())
        .unwrap_or_else(|| Path::new("/"))
}

/// The `segment_size: N` line of a sled `conf` file (text lines followed by
/// a 4-byte checksum).
fn recorded_segment_size(conf: &[u8]) -> Option<usize> {
    let text = conf.get(..conf.len().checked_sub(4)?)?;
    std::str::from_utf8(text)
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix("segment_size:"))
        .and_then(|n| n.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_state(dir: &Path) -> crate::state::KvState {
        crate::state::KvState::open(dir, 8 << 20, 100).expect("open the state")
    }

    #[test]
    fn the_state_of_a_new_dir_gets_its_volumes_size_and_keeps_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        drop(open_state(dir.path()));
        let recorded = std::fs::read(dir.path().join("conf")).expect("sled's conf");
        let (volume, _) = crate::storage::volume(dir.path()).expect("volume");
        assert_eq!(
            recorded_segment_size(&recorded),
            Some(segment_size_for_volume(volume))
        );
        drop(open_state(dir.path()));
    }

    #[test]
    fn a_state_made_with_the_old_default_opens_with_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        // No background flusher: it holds the db a moment after the drop,
        // and with it the dir's lock the reopen below needs.
        let old = sled::Config::new()
            .path(dir.path())
            .flush_every_ms(None)
            .open()
            .expect("open");
        old.insert(b"k", b"v".as_slice()).expect("insert");
        old.flush().expect("flush");
        drop(old);
        assert_eq!(
            segment_size_for(dir.path()).expect("size"),
            LEGACY_SEGMENT_SIZE
        );
        let state = open_state(dir.path());
        assert_eq!(state.applied(), (0, 0));
        drop(state);
        let recorded = std::fs::read(dir.path().join("conf")).expect("sled's conf");
        assert_eq!(recorded_segment_size(&recorded), Some(LEGACY_SEGMENT_SIZE));
    }

    #[test]
    fn small_volumes_get_small_segments() {
        assert_eq!(segment_size_for_volume(0), LEGACY_SEGMENT_SIZE);
        assert_eq!(segment_size_for_volume(24 << 20), LEGACY_SEGMENT_SIZE);
        assert_eq!(segment_size_for_volume(256 << 20), 2 << 20);
        assert_eq!(segment_size_for_volume((256 << 20) + 1), 2 << 20);
        assert_eq!(segment_size_for_volume(1 << 30), MAX_SEGMENT_SIZE);
        assert_eq!(segment_size_for_volume(u64::MAX), MAX_SEGMENT_SIZE);
    }

    #[test]
    fn an_unreadable_record_falls_back_to_the_old_default() {
        assert_eq!(recorded_segment_size(b""), None);
        assert_eq!(recorded_segment_size(b"segment_size: x\n1234"), None);
        assert_eq!(
            recorded_segment_size(b"segment_size: 4096\n1234"),
            Some(4096)
        );
    }
}
