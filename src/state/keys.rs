//! Key ranges and the layout of keys inside the sled tree.

/// Prefix of user data keys.
pub const DATA: u8 = b'd';
/// Prefix of watch history keys (followed by the big-endian revision).
pub const HISTORY: u8 = b'h';
/// Prefix of metadata keys.
pub const META: u8 = b'm';

/// The stored key of a user key.
pub fn data_key(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(DATA);
    k.extend_from_slice(key);
    k
}

/// The first stored key of a revision's history (every key of it sorts at
/// or after this one, and before the next revision's).
pub fn history_key(revision: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = HISTORY;
    k[1..].copy_from_slice(&revision.to_be_bytes());
    k
}

/// The stored key of the `n`th event of a revision. Each event is its own
/// record: sled keeps large records in memory whatever its cache size, and a
/// revision can hold thousands of events.
pub fn history_event_key(revision: u64, n: u32) -> [u8; 13] {
    let mut k = [0u8; 13];
    k[..9].copy_from_slice(&history_key(revision));
    k[9..].copy_from_slice(&n.to_be_bytes());
    k
}

/// The revision of a history key.
pub fn history_revision(key: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = key.get(1..9)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

/// The stored key of a metadata item.
pub fn meta_key(name: &str) -> Vec<u8> {
    let mut k = vec![META];
    k.extend_from_slice(name.as_bytes());
    k
}

pub use kvstore_proto::prefix_end;

/// A half-open range of user keys: `[start, end)`, `end` `None` meaning the
/// end of the keyspace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRange {
    /// The first key (inclusive).
    pub start: Vec<u8>,
    /// The end (exclusive); `None` is unbounded.
    pub end: Option<Vec<u8>>,
}

impl KeyRange {
    /// Exactly one key.
    pub fn single(key: &[u8]) -> Self {
        let mut end = key.to_vec();
        end.push(0);
        KeyRange {
            start: key.to_vec(),
            end: Some(end),
        }
    }

    /// Every key starting with `prefix`.
    pub fn prefix(prefix: &[u8]) -> Self {
        KeyRange {
            start: prefix.to_vec(),
            end: prefix_end(prefix),
        }
    }

    /// The range a request names with (`key`, `range_end`, `prefix`):
    /// `prefix` wins; otherwise a non-empty `range_end` bounds it; otherwise
    /// `when_no_end` decides (a single key, or to the end of the keyspace).
    pub fn from_request(
        key: &[u8],
        range_end: &[u8],
        prefix: bool,
        single_when_no_end: bool,
    ) -> Self {
        if prefix {
            KeyRange::prefix(key)
        } else if !range_end.is_empty() {
            KeyRange {
                start: key.to_vec(),
                end: Some(range_end.to_vec()),
            }
        } else if single_when_no_end {
            KeyRange::single(key)
        } else {
            KeyRange {
                start: key.to_vec(),
                end: None,
            }
        }
    }

    /// Whether `key` is inside the range.
    pub fn contains(&self, key: &[u8]) -> bool {
        key >= self.start.as_slice() && self.end.as_deref().is_none_or(|end| key < end)
    }

    /// The range of stored data keys.
    pub fn stored_bounds(&self) -> (Vec<u8>, Vec<u8>) {
        let start = data_key(&self.start);
        let end = match &self.end {
            Some(end) => data_key(end),
            None => vec![DATA + 1],
        };
        (start, end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A range holds what it says.
    #[test]
    fn ranges_contain_their_keys() {
        let p = KeyRange::prefix(b"user/");
        assert!(p.contains(b"user/1"));
        assert!(!p.contains(b"users"));
        let s = KeyRange::single(b"k");
        assert!(s.contains(b"k"));
        assert!(!s.contains(b"k\0"));
        let all = KeyRange::from_request(b"", b"", false, false);
        assert!(all.contains(b"\xff\xff"));
    }
}
