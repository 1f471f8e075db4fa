//! Space accounting and the NOSPACE alarm.
//!
//! The state counts the bytes it stores (keys and values of the data and of
//! the watch history) in the same atomic batches that change them, so the
//! counts are exact whatever sled does with its files (sled reuses the
//! segments it frees while it runs, and gives them back to the filesystem
//! only at its next start).
//!
//! A member that passes its quota raises the NOSPACE alarm through the log
//! ([`Alarm`]): every member applies it, and while any member's alarm is
//! raised, every member refuses writes that add data, deterministically, at
//! apply (the server refuses them before proposing too). Deletes, reads and
//! compaction go on; the member clears its alarm once it is back under its
//! quota.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use super::keys::{meta_key, DATA, HISTORY};
use super::StateError;

/// Metadata names.
const STORED_BYTES: &str = "bytes";
const HISTORY_BYTES: &str = "history-bytes";
pub(super) const ALARMS: &str = "alarms";

/// Raise or clear the NOSPACE alarm of one member (a log command).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Alarm {
    /// The member's ordinal.
    #[prost(uint32, tag = "1")]
    pub member: u32,
    /// Raise (true) or clear (false).
    #[prost(bool, tag = "2")]
    pub raise: bool,
}

/// The counts of one state tree, as stored in its metadata.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Bytes of keys and values of the data and the history.
    pub stored: u64,
    /// The part of `stored` that is history.
    pub history: u64,
    /// The members whose NOSPACE alarm is raised.
    pub alarms: BTreeSet<u32>,
}

fn read_u64(tree: &sled::Tree, name: &str) -> Result<Option<u64>, StateError> {
    match tree.get(meta_key(name))? {
        Some(raw) => {
            Ok(Some(u64::from_be_bytes(raw.as_ref().try_into().map_err(
                |_| StateError::corrupt(name.as_bytes(), "not 8 bytes"),
            )?)))
        }
        None => Ok(None),
    }
}

impl Counts {
    /// Reads the counts of `tree`; a tree written before they existed is
    /// counted once, by a scan.
    pub fn load(tree: &sled::Tree) -> Result<Counts, StateError> {
        let alarms = match tree.get(meta_key(ALARMS))? {
            Some(raw) => decode_alarms(&raw)?,
            None => BTreeSet::new(),
        };
        if let (Some(stored), Some(history)) = (
            read_u64(tree, STORED_BYTES)?,
            read_u64(tree, HISTORY_BYTES)?,
        ) {
            return Ok(Counts {
                stored,
                history,
                alarms,
            });
        }
        let mut counts = Counts {
            alarms,
            ..Counts::default()
        };
        for prefix in [DATA, HISTORY] {
            for item in tree.scan_prefix([prefix]) {
                let (k, v) = item?;
                let size = (k.len() + v.len()) as u64;
                counts.stored += size;
                if prefix == HISTORY {
                    counts.history += size;
                }
            }
        }
        Ok(counts)
    }

    /// Writes the counts into `batch`.
    pub fn store(&self, batch: &mut impl FnMut(Vec<u8>, Vec<u8>)) {
        batch(meta_key(STORED_BYTES), self.stored.to_be_bytes().to_vec());
        batch(meta_key(HISTORY_BYTES), self.history.to_be_bytes().to_vec());
        batch(meta_key(ALARMS), encode_alarms(&self.alarms));
    }
}

fn encode_alarms(alarms: &BTreeSet<u32>) -> Vec<u8> {
    alarms.iter().flat_map(|m| m.to_be_bytes()).collect()
}

fn decode_alarms(raw: &[u8]) -> Result<BTreeSet<u32>, StateError> {
    if !raw.len().is_multiple_of(4) {
        return Err(StateError::corrupt(
            ALARMS.as_bytes(),
            "not a list of ordinals",
        ));
    }
    Ok(raw
        .chunks(4)
        .map(|c| u32::from_be_bytes(c.try_into().expect("4 bytes")))
        .collect())
}

/// The counts readers see without the state's lock.
#[derive(Default)]
pub struct Published {
    stored: AtomicU64,
    history: AtomicU64,
    alarms: Mutex<BTreeSet<u32>>,
}

impl Published {
    /// Publishes `counts`.
    pub fn set(&self, counts: &Counts) {
        self.stored.store(counts.stored, Ordering::Release);
        self.history.store(counts.history, Ordering::Release);
        *self.alarms.lock().unwrap_or_else(|e| e.into_inner()) = counts.alarms.clone();
    }

    /// Bytes stored (data and history).
    pub fn stored(&self) -> u64 {
        self.stored.load(Ordering::Acquire)
    }

    /// Bytes of history.
    pub fn history(&self) -> u64 {
        self.history.load(Ordering::Acquire)
    }

    /// The members whose NOSPACE alarm is raised.
    pub fn alarms(&self) -> BTreeSet<u32> {
        self.alarms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Why a write that adds data is refused while an alarm is raised.
pub fn nospace_refusal(alarms: &BTreeSet<u32>) -> String {
    let members: Vec<String> = alarms.iter().map(|m| m.to_string()).collect();
    format!(
        "NOSPACE: the space quota is used up on member(s) {} (--quota-bytes): writes that add data are refused until data is deleted and the history compacted; reads and deletes go on",
        members.join(", ")
    )
}
