//! What the compare-and-swap workers believe each key holds: the value the
//! last successful swap wrote, or the one a failed compare read back. All
//! workers share it, so two that race on a key see one of them fail its
//! compare, as optimistic writers in a real program would.

use std::sync::Mutex;

use bytes::Bytes;

use super::backend::{Cas, Expected};

/// One belief per key of the keyspace.
pub(crate) struct CasBook {
    keys: Vec<Mutex<Expected>>,
}

impl CasBook {
    /// Every one of `len` keys believed to hold `value` (what the preload
    /// wrote).
    pub(crate) fn new(len: u64, value: &Bytes) -> CasBook {
        CasBook {
            keys: (0..len)
                .map(|_| Mutex::new(Expected::Value(value.clone())))
                .collect(),
        }
    }

    /// What key `i` is believed to hold.
    pub(crate) fn expected(&self, i: u64) -> Expected {
        self.slot(i)
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Learns from a compare-and-swap of key `i` to `new`: a swap wrote
    /// `new`, a failed compare read what the key holds.
    pub(crate) fn learn(&self, i: u64, outcome: &Cas, new: Bytes) {
        let now = match outcome {
            Cas::Swapped => Expected::Value(new),
            Cas::CompareFailed(current) => current.clone(),
        };
        *self.slot(i).lock().unwrap_or_else(|p| p.into_inner()) = now;
    }

    fn slot(&self, i: u64) -> &Mutex<Expected> {
        // `i` comes from the keyspace, whose length this book has.
        &self.keys[(i % self.keys.len() as u64) as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swaps_and_failed_compares_update_the_belief() {
        let book = CasBook::new(3, &Bytes::from_static(b"v0"));
        assert_eq!(book.expected(1), Expected::Value(Bytes::from_static(b"v0")));
        book.learn(1, &Cas::Swapped, Bytes::from_static(b"v1"));
        assert_eq!(book.expected(1), Expected::Value(Bytes::from_static(b"v1")));
        let current = Expected::Value(Bytes::from_static(b"other"));
        book.learn(
            1,
            &Cas::CompareFailed(current.clone()),
            Bytes::from_static(b"v2"),
        );
        assert_eq!(book.expected(1), current);
        book.learn(2, &Cas::CompareFailed(Expected::Absent), Bytes::new());
        assert_eq!(book.expected(2), Expected::Absent);
        assert_eq!(book.expected(0), Expected::Value(Bytes::from_static(b"v0")));
    }
}
