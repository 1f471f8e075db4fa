//! A linearizability checker for key-value histories (Wing and Gong's
//! search, with Lowe's memoisation, as in Porcupine).
//!
//! Clients record every operation with the time it was invoked and the time
//! it completed. A history is linearizable if every operation can be given a
//! point between its invocation and completion such that, taken in that
//! order, the operations behave like a single register per key. Keys are
//! independent (P-compositionality), so each key's sub-history is checked
//! alone.
//!
//! A write whose outcome is unknown (the client got an error that does not
//! say whether it applied) is recorded with no completion: it may take effect
//! at any point after its invocation, or never (placing it after every other
//! operation is the same as never).

use std::collections::{BTreeMap, HashSet};

/// What an operation did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpKind {
    /// Wrote a value.
    Put(u64),
    /// Read a value (`None`: the key did not exist).
    Get(Option<u64>),
}

/// One client operation.
#[derive(Clone, Debug)]
pub struct Op {
    /// The key.
    pub key: String,
    /// What it did.
    pub kind: OpKind,
    /// When it was invoked (any monotonic clock, e.g. nanoseconds).
    pub invoked: u64,
    /// When it completed; `None` for a write of unknown outcome.
    pub completed: Option<u64>,
}

/// The verdict on a history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every key's history is linearizable.
    Linearizable,
    /// This key's history is not.
    Violation {
        /// The key.
        key: String,
    },
    /// The search for this key took more than the step budget.
    Undecided {
        /// The key.
        key: String,
    },
}

/// Checks a history, spending at most `max_steps` search steps per key.
pub fn check(history: &[Op], max_steps: u64) -> Verdict {
    let mut by_key: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in history {
        by_key.entry(op.key.as_str()).or_default().push(op);
    }
    for (key, ops) in by_key {
        match check_register(&ops, max_steps) {
            Some(true) => {}
            Some(false) => {
                return Verdict::Violation {
                    key: key.to_string(),
                }
            }
            None => {
                return Verdict::Undecided {
                    key: key.to_string(),
                }
            }
        }
    }
    Verdict::Linearizable
}

#[derive(Clone, Copy)]
struct Event {
    call: bool,
    op: usize,
    /// For a call: the index of its return event.
    matching: usize,
    prev: usize,
    next: usize,
}

/// A set of operation indexes.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(n: usize) -> Self {
        Bits(vec![0; n.div_ceil(64)])
    }
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }
}

/// The head of the event list: a sentinel before the first event.
const HEAD: usize = 0;

/// The doubly linked list of calls and returns, sorted by time (at equal
/// times calls first: overlapping operations are concurrent), after the
/// [`HEAD`] sentinel; each call knows its return.
fn event_list(ops: &[&Op]) -> Vec<Event> {
    let n = ops.len();
    let mut order: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * n);
    for (i, op) in ops.iter().enumerate() {
        order.push((op.invoked, true, i));
        order.push((op.completed.unwrap_or(u64::MAX), false, i));
    }
    order.sort_by_key(|&(time, call, op)| (time, !call, op));
    let mut events = vec![Event {
        call: false,
        op: usize::MAX,
        matching: 0,
        prev: usize::MAX,
        next: 1,
    }];
    let mut return_of = vec![0usize; n];
    for (pos, &(_, call, op)) in order.iter().enumerate() {
        let idx = pos + 1;
        events.push(Event {
            call,
            op,
            matching: 0,
            prev: idx - 1,
            next: if idx == order.len() {
                usize::MAX
            } else {
                idx + 1
            },
        });
        if !call {
            return_of[op] = idx;
        }
    }
    if order.is_empty() {
        events[HEAD].next = usize::MAX;
    }
    for e in events.iter_mut().skip(1) {
        if e.call {
            e.matching = return_of[e.op];
        }
    }
    events
}

/// Takes event `i` out of the list (it keeps its links, for [`relink`]).
fn unlink(events: &mut [Event], i: usize) {
    let (p, nx) = (events[i].prev, events[i].next);
    events[p].next = nx;
    if nx != usize::MAX {
        events[nx].prev = p;
    }
}

/// Puts event `i` back where [`unlink`] took it from.
fn relink(events: &mut [Event], i: usize) {
    let (p, nx) = (events[i].prev, events[i].next);
    events[p].next = i;
    if nx != usize::MAX {
        events[nx].prev = i;
    }
}

/// Whether one key's operations linearize as a register that starts absent;
/// `None` if the budget ran out.
fn check_register(ops: &[&Op], max_steps: u64) -> Option<bool> {
    let n = ops.len();
    let mut events = event_list(ops);
    let mut state: Option<u64> = None;
    let mut linearized = Bits::new(n);
    let mut cache: HashSet<(Bits, Option<u64>)> = HashSet::new();
    let mut stack: Vec<(usize, Option<u64>)> = Vec::new();
    let mut entry = events[HEAD].next;
    let mut steps = 0u64;
    while events[HEAD].next != usize::MAX {
        steps += 1;
        if steps > max_steps {
            return None;
        }
        // Every call has its return after it in the list, so the walk meets
        // a return before the end; `usize::MAX` is only a guard.
        let e = events.get(entry).copied().filter(|_| entry != usize::MAX);
        if let Some(e) = e.filter(|e| e.call) {
            let (ok, next_state) = match ops[e.op].kind {
                OpKind::Put(v) => (true, Some(v)),
                OpKind::Get(r) => (r == state, state),
            };
            if ok {
                linearized.set(e.op);
                if cache.insert((linearized.clone(), next_state)) {
                    stack.push((entry, state));
                    state = next_state;
                    unlink(&mut events, entry);
                    unlink(&mut events, e.matching);
                    entry = events[HEAD].next;
                    continue;
                }
                linearized.clear(e.op);
            }
            entry = e.next;
        } else {
            // An operation returned before it could be placed (or the walk
            // ran out): undo the last choice.
            let Some((call, prev_state)) = stack.pop() else {
                return Some(false);
            };
            linearized.clear(events[call].op);
            state = prev_state;
            let ret = events[call].matching;
            relink(&mut events, ret);
            relink(&mut events, call);
            entry = events[call].next;
        }
    }
    Some(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn op(kind: OpKind, invoked: u64, completed: Option<u64>) -> Op {
        Op {
            key: "k".into(),
            kind,
            invoked,
            completed,
        }
    }

    /// Sequential and overlapping histories that a register explains pass.
    #[test]
    fn linearizable_histories_pass() {
        let h = vec![
            op(OpKind::Put(1), 0, Some(10)),
            op(OpKind::Get(Some(1)), 11, Some(12)),
            op(OpKind::Put(2), 13, Some(30)),
            // Overlaps the put of 2: may see either value.
            op(OpKind::Get(Some(1)), 14, Some(15)),
            op(OpKind::Get(Some(2)), 31, Some(32)),
        ];
        assert_eq!(check(&h, 1_000_000), Verdict::Linearizable);
    }

    /// A stale read after a completed write is caught.
    #[test]
    fn stale_read_is_a_violation() {
        let h = vec![
            op(OpKind::Put(1), 0, Some(10)),
            op(OpKind::Put(2), 11, Some(20)),
            op(OpKind::Get(Some(1)), 21, Some(22)),
        ];
        assert!(matches!(check(&h, 1_000_000), Verdict::Violation { .. }));
    }

    /// A read of a value nobody wrote is caught; reading "absent" before any
    /// write is fine.
    #[test]
    fn phantom_read_is_a_violation() {
        assert!(matches!(
            check(&[op(OpKind::Get(Some(9)), 0, Some(1))], 1000),
            Verdict::Violation { .. }
        ));
        assert_eq!(
            check(&[op(OpKind::Get(None), 0, Some(1))], 1000),
            Verdict::Linearizable
        );
    }

    /// A write of unknown outcome may have applied, or not.
    #[test]
    fn unknown_writes_may_or_may_not_apply() {
        let applied = vec![
            op(OpKind::Put(1), 0, Some(5)),
            op(OpKind::Put(2), 6, None),
            op(OpKind::Get(Some(2)), 100, Some(101)),
        ];
        assert_eq!(check(&applied, 1000), Verdict::Linearizable);
        let not_applied = vec![
            op(OpKind::Put(1), 0, Some(5)),
            op(OpKind::Put(2), 6, None),
            op(OpKind::Get(Some(1)), 100, Some(101)),
        ];
        assert_eq!(check(&not_applied, 1000), Verdict::Linearizable);
        // But once it is seen, an older value cannot come back.
        let flip_flop = vec![
            op(OpKind::Put(1), 0, Some(5)),
            op(OpKind::Put(2), 6, None),
            op(OpKind::Get(Some(2)), 100, Some(101)),
            op(OpKind::Get(Some(1)), 102, Some(103)),
        ];
        assert!(matches!(check(&flip_flop, 1000), Verdict::Violation { .. }));
    }

    /// The obvious checker, for small histories: every subset of the
    /// unknown-outcome writes taken as applied, every order of the
    /// operations that keeps real-time order (a before b when a completed
    /// before b was invoked), a register simulated along it.
    fn brute_force(history: &[Op]) -> bool {
        let mut keys: Vec<&str> = history.iter().map(|o| o.key.as_str()).collect();
        keys.sort_unstable();
        keys.dedup();
        keys.into_iter().all(|key| {
            let ops: Vec<&Op> = history.iter().filter(|o| o.key == key).collect();
            let unknown: Vec<usize> = (0..ops.len())
                .filter(|&i| ops[i].completed.is_none())
                .collect();
            (0..1u32 << unknown.len()).any(|mask| {
                let chosen: Vec<&Op> = ops
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| match unknown.iter().position(|u| u == i) {
                        Some(bit) => mask & (1 << bit) != 0,
                        None => true,
                    })
                    .map(|(_, o)| *o)
                    .collect();
                some_order_works(&chosen, &mut Vec::new(), &mut vec![false; chosen.len()])
            })
        })
    }

    fn some_order_works(ops: &[&Op], order: &mut Vec<usize>, used: &mut Vec<bool>) -> bool {
        if order.len() == ops.len() {
            let mut state = None;
            return order.iter().all(|&i| match ops[i].kind {
                OpKind::Put(v) => {
                    state = Some(v);
                    true
                }
                OpKind::Get(r) => r == state,
            });
        }
        for i in 0..ops.len() {
            if used[i] {
                continue;
            }
            // Every operation that completed before `i` was invoked must
            // already be placed.
            let ready = (0..ops.len())
                .all(|j| used[j] || j == i || ops[j].completed.is_none_or(|c| c >= ops[i].invoked));
            if !ready {
                continue;
            }
            used[i] = true;
            order.push(i);
            if some_order_works(ops, order, used) {
                return true;
            }
            order.pop();
            used[i] = false;
        }
        false
    }

    /// A seeded source of small random numbers, so a failing history can be
    /// replayed.
    struct Below(StdRng);

    impl Below {
        fn below(&mut self, n: u64) -> u64 {
            self.0.random_range(0..n)
        }
    }

    fn random_history(rng: &mut Below) -> Vec<Op> {
        let n = 1 + rng.below(7) as usize;
        (0..n)
            .map(|_| {
                let invoked = rng.below(12);
                let completed = match rng.below(6) {
                    0 => None,
                    _ => Some(invoked + rng.below(6)),
                };
                let key = if rng.below(4) == 0 { "j" } else { "k" };
                let kind = if rng.below(2) == 0 {
                    OpKind::Put(1 + rng.below(3))
                } else {
                    OpKind::Get(match rng.below(4) {
                        0 => None,
                        v => Some(v),
                    })
                };
                // Reads always complete: an unfinished read says nothing.
                let completed = if matches!(kind, OpKind::Get(_)) {
                    Some(completed.unwrap_or(invoked + 1))
                } else {
                    completed
                };
                Op {
                    key: key.into(),
                    kind,
                    invoked,
                    completed,
                }
            })
            .collect()
    }

    /// 20,000 random small histories (two keys, overlapping operations,
    /// unknown-outcome writes, reads of absent keys): the search agrees with
    /// the brute-force checker on every one, and with a tiny step budget it
    /// says "undecided" rather than give a wrong answer.
    #[test]
    fn agrees_with_brute_force_on_small_histories() {
        let mut rng = Below(StdRng::seed_from_u64(7));
        let (mut linearizable, mut violations, mut undecided) = (0, 0, 0);
        for case in 0..20_000 {
            let h = random_history(&mut rng);
            let expected = brute_force(&h);
            let got = check(&h, 1_000_000);
            assert_eq!(
                got == Verdict::Linearizable,
                expected,
                "case {case}: the search says {got:?}, brute force says {expected}: {h:?}"
            );
            if expected {
                linearizable += 1;
            } else {
                violations += 1;
            }
            match check(&h, 3) {
                Verdict::Undecided { .. } => undecided += 1,
                v => assert_eq!(
                    v == Verdict::Linearizable,
                    expected,
                    "case {case} at 3 steps: {h:?}"
                ),
            }
        }
        assert!(linearizable > 2_000 && violations > 2_000 && undecided > 1_000,
            "the cases cover every verdict: {linearizable} linearizable, {violations} violations, {undecided} undecided at 3 steps");
    }
}
