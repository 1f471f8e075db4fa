//! Logging the peer messages the core refused as malformed: at most one
//! warning per peer per interval, with how many were dropped meanwhile, so
//! that a broken peer sending the same thing at every heartbeat cannot
//! flood the log.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::raft::{Malformed, NodeId, MAX_MEMBERS};

/// The shortest time between two warnings about one peer.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Per peer: when it was last warned about, and the drops since.
#[derive(Debug, Default)]
pub(super) struct MalformedLog {
    peers: BTreeMap<NodeId, (Instant, u64)>,
}

impl MalformedLog {
    /// Records that a message from `from` was dropped, and warns if this
    /// peer was not warned about within [`WARN_EVERY`].
    pub(super) fn dropped(&mut self, from: NodeId, why: &Malformed, now: Instant) {
        // Every sender that cannot be a member shares one slot, so that
        // forged ordinals cannot grow the map.
        let slot = from.min(MAX_MEMBERS);
        match self.peers.get_mut(&slot) {
            Some((last, suppressed)) if now.duration_since(*last) < WARN_EVERY => {
                *suppressed += 1;
            }
            entry => {
                let suppressed = entry.map_or(0, |(_, n)| *n);
                tracing::warn!(
                    peer = from,
                    reason = %why,
                    dropped_since_last_warning = suppressed,
                    "dropped a malformed peer message"
                );
                self.peers.insert(slot, (now, 0));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One warning per peer per interval; the count of the others is kept
    /// for the next one; forged ordinals share a slot.
    #[test]
    fn warnings_are_rate_limited_per_peer() {
        let mut log = MalformedLog::default();
        let t0 = Instant::now();
        let why = Malformed::FromSelf;
        log.dropped(1, &why, t0);
        log.dropped(1, &why, t0 + Duration::from_secs(1));
        log.dropped(2, &why, t0 + Duration::from_secs(1));
        assert_eq!(log.peers[&1], (t0, 1));
        assert_eq!(log.peers[&2].1, 0);
        log.dropped(1, &why, t0 + WARN_EVERY);
        assert_eq!(log.peers[&1], (t0 + WARN_EVERY, 0));
        log.dropped(u32::MAX, &why, t0);
        log.dropped(700, &why, t0);
        assert_eq!(log.peers[&MAX_MEMBERS], (t0, 1));
        assert_eq!(log.peers.len(), 3);
    }
}
