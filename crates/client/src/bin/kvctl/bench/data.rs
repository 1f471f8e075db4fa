//! The keys and values the bench writes: fixed-size keys that are
//! zero-padded decimal indexes (after an optional prefix), and values of a
//! fixed size that are either filler, unique per write (for compare-and-
//! swap), or carry their send time (for watch).

use bytes::{BufMut, Bytes, BytesMut};

use super::args::{ArgError, TIMESTAMP_DIGITS};

/// `len` keys of `key_size` bytes each: the prefix, then the index as
/// zero-padded decimal digits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Keyspace {
    prefix: Bytes,
    len: u64,
    digits: usize,
}

impl Keyspace {
    /// Keys `0..len` with no prefix, `key_size` digits each.
    pub(crate) fn new(len: u64, key_size: usize) -> Result<Keyspace, ArgError> {
        Keyspace::under_prefix(b"", len, key_size)
    }

    /// Keys `0..len` under `prefix`, `key_size` bytes in all.
    pub(crate) fn under_prefix(
        prefix: &[u8],
        len: u64,
        key_size: usize,
    ) -> Result<Keyspace, ArgError> {
        let needed = prefix.len() + digits(len.saturating_sub(1));
        if key_size < needed {
            return Err(ArgError::KeyTooShort {
                key_size,
                keyspace: len,
                needed,
            });
        }
        Ok(Keyspace {
            prefix: Bytes::copy_from_slice(prefix),
            len,
            digits: key_size - prefix.len(),
        })
    }

    /// The number of keys.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// The prefix every key starts with (empty for the plain keyspace).
    pub(crate) fn prefix(&self) -> &Bytes {
        &self.prefix
    }

    /// Key number `i` (taken modulo the keyspace).
    pub(crate) fn key(&self, i: u64) -> Bytes {
        let mut key = BytesMut::with_capacity(self.prefix.len() + self.digits);
        key.put_slice(&self.prefix);
        key.put_slice(format!("{:0width$}", i % self.len, width = self.digits).as_bytes());
        key.freeze()
    }
}

/// The number of decimal digits of `n`.
fn digits(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |d| d as usize + 1)
}

/// A value of `size` bytes of filler.
pub(crate) fn filler(size: usize) -> Bytes {
    Bytes::from(vec![b'v'; size])
}

/// A value of `size` bytes that no other write of this run has: the worker
/// and its write number, then filler. Compare-and-swap needs values that
/// differ, or a lost race would go unseen (a compare on a value that came
/// back).
pub(crate) fn unique(size: usize, worker: usize, seq: u64) -> Bytes {
    padded(format!("{worker}:{seq}:").as_bytes(), size)
}

/// A value of `size` bytes (at least [`TIMESTAMP_DIGITS`]) that carries
/// `nanos`, the send time in nanoseconds since the UNIX epoch.
pub(crate) fn timestamped(size: usize, nanos: u64) -> Bytes {
    padded(
        format!("{nanos:0width$}", width = TIMESTAMP_DIGITS).as_bytes(),
        size,
    )
}

/// The send time a [`timestamped`] value carries, if it is one.
pub(crate) fn timestamp_of(value: &[u8]) -> Option<u64> {
    let digits = value.get(..TIMESTAMP_DIGITS)?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// `head`, then filler up to `size` bytes (or `head` alone when it is
/// longer).
fn padded(head: &[u8], size: usize) -> Bytes {
    let mut value = BytesMut::with_capacity(size.max(head.len()));
    value.put_slice(head);
    value.resize(size.max(head.len()), b'v');
    value.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_fixed_size_zero_padded_indexes() {
        let ks = Keyspace::new(10_000, 8).expect("keyspace");
        assert_eq!(ks.key(0), Bytes::from_static(b"00000000"));
        assert_eq!(ks.key(9_999), Bytes::from_static(b"00009999"));
        assert_eq!(ks.key(10_000), ks.key(0), "indexes wrap");
        let ks = Keyspace::under_prefix(b"w", 100, 4).expect("keyspace");
        assert_eq!(ks.key(7), Bytes::from_static(b"w007"));
        assert_eq!(ks.prefix(), &Bytes::from_static(b"w"));
    }

    #[test]
    fn a_key_size_must_hold_the_largest_index() {
        assert!(Keyspace::new(10, 1).is_ok(), "0..=9 fit in one digit");
        assert!(Keyspace::new(1, 1).is_ok());
        assert_eq!(
            Keyspace::new(11, 1),
            Err(ArgError::KeyTooShort {
                key_size: 1,
                keyspace: 11,
                needed: 2
            })
        );
        assert!(Keyspace::under_prefix(b"w", 10, 1).is_err());
    }

    #[test]
    fn values_have_the_asked_size() {
        assert_eq!(filler(256).len(), 256);
        assert_eq!(unique(256, 3, 17).len(), 256);
        assert_ne!(unique(256, 3, 17), unique(256, 3, 18));
        assert_ne!(unique(256, 3, 17), unique(256, 31, 7));
        assert_eq!(timestamped(256, 1).len(), 256);
        assert_eq!(unique(2, 3, 17).as_ref(), b"3:17:", "never cut short");
    }

    #[test]
    fn a_timestamp_comes_back() {
        let nanos = 1_764_000_000_123_456_789;
        assert_eq!(timestamp_of(&timestamped(64, nanos)), Some(nanos));
        assert_eq!(timestamp_of(&timestamped(20, 5)), Some(5));
        assert_eq!(timestamp_of(b"short"), None);
        assert_eq!(timestamp_of(&filler(64)), None);
    }
}
