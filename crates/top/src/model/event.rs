//! What changed between two polls.

use std::fmt;

/// One change between two polls. Shown as a kind, the pod it is about,
/// then `key=value` figures (`elected kvstore-1 term=2`), so that the log
/// can be read by people and parsed by scripts alike.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// `leader` leads `term`: the first leader seen, one elected after the
    /// last leader went away, or the same one re-elected in a later term.
    Elected {
        /// The pod that leads.
        leader: String,
        /// Its term.
        term: u64,
    },
    /// Leadership moved from `from`, which still answers, to `to` (a
    /// transfer: the lower ordinal taking leadership back, or one asked
    /// for).
    Transfer {
        /// The pod that led.
        from: String,
        /// The pod that leads now.
        to: String,
        /// The new leader's term.
        term: u64,
    },
    /// No pod that answers leads any more.
    NoLeader {
        /// The highest term known: the lost leader's, or a later one a
        /// pod that answers reports.
        term: u64,
    },
    /// `pod` stopped answering.
    Down {
        /// The pod (or its endpoint, before it ever answered).
        pod: String,
        /// Why it did not answer.
        reason: String,
    },
    /// `pod` answers again.
    Back {
        /// The pod.
        pod: String,
    },
    /// `pod` reports itself ready (health SERVING: it has caught up with
    /// the leader) after it was not, or after it was down.
    CaughtUp {
        /// The pod.
        pod: String,
        /// Its applied revision then.
        applied: u64,
    },
    /// The configuration the leader reports changed (or was first seen).
    Members {
        /// The voters' ordinals.
        voters: Vec<u32>,
        /// The learners' ordinals.
        learners: Vec<u32>,
        /// The replica count the StatefulSet asks for (0: not known).
        desired: u32,
    },
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Elected { leader, term } => write!(f, "elected {leader} term={term}"),
            Event::Transfer { from, to, term } => {
                write!(f, "transfer {to} term={term} from={from}")
            }
            Event::NoLeader { term } => write!(f, "no-leader term={term}"),
            Event::Down { pod, reason } => write!(f, "down {pod} ({reason})"),
            Event::Back { pod } => write!(f, "back {pod}"),
            Event::CaughtUp { pod, applied } => write!(f, "caught-up {pod} applied={applied}"),
            Event::Members {
                voters,
                learners,
                desired,
            } => write!(
                f,
                "members voters={} learners={} desired={desired}",
                ordinals(voters),
                ordinals(learners)
            ),
        }
    }
}

/// Ordinals as `0,1,2`, or `-` for none.
fn ordinals(list: &[u32]) -> String {
    if list.is_empty() {
        return "-".into();
    }
    let names: Vec<String> = list.iter().map(u32::to_string).collect();
    names.join(",")
}
