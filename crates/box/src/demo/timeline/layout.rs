//! What the timeline picture shows, worked out without drawing anything:
//! the write rate per 10 ms, each pod's role as lanes of segments, which
//! panels there are, and on which row each label goes so that none
//! overlaps another.

/// The write-rate bucket: acknowledged writes are counted per 10 ms.
pub(super) const BUCKET: f64 = 0.010;

/// Pixels one character of a label takes, at the label's font size; an
/// upper bound for the sans-serif faces a viewer picks.
pub(super) const CHAR_WIDTH: f64 = 6.6;

/// A pod's state as a lane shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PodState {
    /// Leading.
    Leader,
    /// Following, caught up (health SERVING).
    Follower,
    /// Following, not yet caught up with the leader.
    CatchingUp,
    /// A member that does not vote yet.
    Learner,
    /// Campaigning.
    Candidate,
    /// Not answering: killed, stopping, restarting, or not created.
    Down,
}

impl PodState {
    /// Every state, in the legend's order.
    pub(super) const ALL: [PodState; 6] = [
        PodState::Leader,
        PodState::Follower,
        PodState::CatchingUp,
        PodState::Learner,
        PodState::Candidate,
        PodState::Down,
    ];

    /// The legend's word for it.
    pub(super) fn name(self) -> &'static str {
        match self {
            PodState::Leader => "leader",
            PodState::Follower => "follower",
            PodState::CatchingUp => "catching up",
            PodState::Learner => "learner",
            PodState::Candidate => "candidate",
            PodState::Down => "down or no pod",
        }
    }
}

/// A mark, in seconds since the demo started.
#[derive(Clone, Debug)]
pub(super) struct MarkAt {
    pub(super) at: f64,
    pub(super) label: String,
    /// A fault the demo caused (else the cluster's answer).
    pub(super) fault: bool,
}

/// Everything recorded, in seconds since the demo started.
pub(super) struct Inputs {
    pub(super) title: String,
    pub(super) end: f64,
    pub(super) acks: Vec<f64>,
    pub(super) samples: Vec<(f64, u32, PodState)>,
    pub(super) marks: Vec<MarkAt>,
    pub(super) gaps: Vec<(f64, f64)>,
    pub(super) episodes: Vec<(String, f64, f64)>,
}

/// A stretch of one pod's lane in one state.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Segment {
    pub(super) from: f64,
    pub(super) to: f64,
    pub(super) state: PodState,
}

/// One panel: a stretch of time with its write rate, its lanes, and
/// either every mark labelled or (on an overview of many episodes) only
/// the episodes' titles.
#[derive(Clone, Debug)]
pub(super) struct Panel {
    pub(super) title: String,
    pub(super) from: f64,
    pub(super) to: f64,
    /// The labels drawn in this panel: (time, text, is a fault).
    pub(super) labels: Vec<(f64, String, bool)>,
}

/// The picture to draw.
pub(super) struct Picture {
    pub(super) title: String,
    /// Sorted acknowledgement times.
    pub(super) acks: Vec<f64>,
    pub(super) lanes: Vec<Vec<Segment>>,
    pub(super) gaps: Vec<(f64, f64)>,
    /// The whole run first, then one zoomed panel per episode when there
    /// are several.
    pub(super) panels: Vec<Panel>,
}

/// Time shown before an episode's start and after its end in its panel.
const BEFORE: f64 = 0.25;
const AFTER: f64 = 0.35;

impl Picture {
    /// Lays out what was recorded.
    pub(super) fn new(mut inputs: Inputs) -> Picture {
        inputs.acks.sort_by(f64::total_cmp);
        inputs.marks.sort_by(|a, b| a.at.total_cmp(&b.at));
        let all_labels = |from: f64, to: f64| -> Vec<(f64, String, bool)> {
            inputs
                .marks
                .iter()
                .filter(|m| m.at >= from && m.at <= to)
                .map(|m| (m.at, m.label.clone(), m.fault))
                .collect()
        };
        let whole = (0.0, inputs.end.max(BUCKET));
        let mut panels = Vec::new();
        if inputs.episodes.len() <= 1 {
            panels.push(Panel {
                title: "the whole run".into(),
                from: whole.0,
                to: whole.1,
                labels: all_labels(whole.0, whole.1),
            });
        } else {
            panels.push(Panel {
                title: "the whole run (each episode is zoomed below)".into(),
                from: whole.0,
                to: whole.1,
                labels: inputs
                    .episodes
                    .iter()
                    .map(|(title, from, _)| (*from, title.clone(), true))
                    .collect(),
            });
            inputs.episodes.sort_by(|a, b| a.1.total_cmp(&b.1));
            for (i, (title, from, to)) in inputs.episodes.iter().enumerate() {
                // A panel shows its own episode: it ends before the next
                // one's fault, and labels nothing from before its own.
                let next = inputs.episodes.get(i + 1).map_or(whole.1, |e| e.1 - 0.02);
                let end = (to + AFTER).min(next).min(whole.1).max(*to);
                panels.push(Panel {
                    title: title.clone(),
                    from: (from - BEFORE).max(0.0),
                    to: end,
                    labels: all_labels(from - 0.001, end),
                });
            }
        }
        Picture {
            title: inputs.title,
            lanes: lanes(&inputs.samples, inputs.end),
            acks: inputs.acks,
            gaps: inputs.gaps,
            panels,
        }
    }

    /// Acknowledged writes per 10 ms bucket from `from` to `to`: (bucket
    /// start, count).
    pub(super) fn buckets(&self, from: f64, to: f64) -> Vec<(f64, u32)> {
        let n = ((to - from) / BUCKET).ceil().max(1.0) as usize;
        let mut counts = vec![0u32; n];
        let first = self.acks.partition_point(|&t| t < from);
        for &t in self.acks[first..].iter().take_while(|&&t| t < to) {
            let i = ((t - from) / BUCKET) as usize;
            if let Some(c) = counts.get_mut(i) {
                *c += 1;
            }
        }
        counts
            .into_iter()
            .enumerate()
            .map(|(i, c)| (from + i as f64 * BUCKET, c))
            .collect()
    }
}

/// Each pod's lane from its samples: a sample's state holds until the
/// pod's next sample (the last until `end`), and runs of one state merge.
pub(super) fn lanes(samples: &[(f64, u32, PodState)], end: f64) -> Vec<Vec<Segment>> {
    let pods = samples.iter().map(|&(_, n, _)| n + 1).max().unwrap_or(0);
    (0..pods)
        .map(|pod| {
            let mut own: Vec<(f64, PodState)> = samples
                .iter()
                .filter(|&&(_, n, _)| n == pod)
                .map(|&(t, _, s)| (t, s))
                .collect();
            own.sort_by(|a, b| a.0.total_cmp(&b.0));
            let mut lane: Vec<Segment> = Vec::new();
            for (i, &(t, state)) in own.iter().enumerate() {
                let to = own.get(i + 1).map_or(end.max(t), |next| next.0);
                match lane.last_mut() {
                    Some(last) if last.state == state => last.to = to,
                    _ => lane.push(Segment { from: t, to, state }),
                }
            }
            lane
        })
        .collect()
}

/// A label's place along the chart, in pixels: its line's position and
/// the stretch its text covers (to the right of the line, or to its left
/// when the text would run off the chart's right edge).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Span {
    pub(super) line: f64,
    pub(super) left: f64,
    pub(super) right: f64,
}

impl Span {
    /// The span of a label `width` wide whose line is at `line`, on a
    /// chart `plot` wide.
    pub(super) fn new(line: f64, width: f64, plot: f64) -> Span {
        if line + width <= plot {
            Span {
                line,
                left: line,
                right: line + width,
            }
        } else {
            Span {
                line,
                left: line - width,
                right: line,
            }
        }
    }

    /// Whether the text ends at the line.
    pub(super) fn right_aligned(&self) -> bool {
        self.right == self.line && self.left < self.line
    }

    fn covers(&self, x: f64) -> bool {
        const SPACING: f64 = 6.0;
        x >= self.left - SPACING && x <= self.right + SPACING
    }
}

/// The row (0 = nearest the chart) of each label, so that no two labels
/// on a row overlap and no label's line (drawn down from it to the chart)
/// crosses a label on a lower row. Labels are placed from the right, each
/// on the lowest row where it fits; where none does, above all the others.
pub(super) fn label_rows(spans: &[Span]) -> Vec<usize> {
    let mut rows = vec![0; spans.len()];
    let mut placed: Vec<usize> = Vec::new();
    let mut order: Vec<usize> = (0..spans.len()).collect();
    order.sort_by(|&a, &b| spans[b].line.total_cmp(&spans[a].line));
    for i in order {
        let me = spans[i];
        let fits = |r: usize| {
            placed.iter().all(|&j| {
                let other = spans[j];
                let overlaps =
                    other.covers(me.left) || other.covers(me.right) || me.covers(other.left);
                match rows[j].cmp(&r) {
                    std::cmp::Ordering::Equal => !overlaps,
                    // My line would cross a label below me.
                    std::cmp::Ordering::Less => !other.covers(me.line),
                    // Its line would cross me.
                    std::cmp::Ordering::Greater => !me.covers(other.line),
                }
            })
        };
        let top = placed.iter().map(|&j| rows[j] + 1).max().unwrap_or(0);
        rows[i] = (0..=top).find(|&r| fits(r)).unwrap_or(top);
        placed.push(i);
    }
    rows
}

/// A label's width in pixels.
pub(super) fn label_width(text: &str) -> f64 {
    text.chars().count() as f64 * CHAR_WIDTH
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_never_overlap_nor_cover_a_line() {
        let spans = |v: &[(f64, f64)]| -> Vec<Span> {
            v.iter()
                .map(|&(line, w)| Span::new(line, w, 600.0))
                .collect()
        };
        // Three labels 100 px wide, 20 px apart, then one far to the right:
        // the earliest goes highest, so the later ones' lines pass under it.
        let rows = label_rows(&spans(&[
            (0.0, 100.0),
            (20.0, 100.0),
            (40.0, 100.0),
            (300.0, 100.0),
        ]));
        assert_eq!(rows, vec![2, 1, 0, 0]);
        // Near the right edge text ends at its line; a label left of it
        // whose text reaches that line goes above it.
        let s = spans(&[(450.0, 100.0), (560.0, 100.0)]);
        assert!(s[1].right_aligned() && !s[0].right_aligned());
        assert_eq!(label_rows(&s), vec![1, 0]);
        // Every pair on one row is apart, and no line crosses a lower label.
        let many = spans(&[
            (0.0, 90.0),
            (5.0, 120.0),
            (200.0, 150.0),
            (260.0, 80.0),
            (520.0, 150.0),
            (590.0, 60.0),
        ]);
        let rows = label_rows(&many);
        for (i, a) in many.iter().enumerate() {
            for (j, b) in many.iter().enumerate() {
                if i != j && rows[i] == rows[j] {
                    assert!(
                        a.right < b.left || b.right < a.left,
                        "{a:?} and {b:?} overlap"
                    );
                }
                if rows[j] < rows[i] {
                    assert!(
                        !(a.line >= b.left && a.line <= b.right),
                        "{a:?}'s line crosses {b:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn lanes_merge_runs_and_hold_each_state_until_the_next_sample() {
        let samples = vec![
            (0.0, 0, PodState::Leader),
            (0.1, 0, PodState::Leader),
            (0.2, 0, PodState::Down),
            (0.0, 1, PodState::Follower),
            (0.25, 1, PodState::Leader),
        ];
        let lanes = lanes(&samples, 1.0);
        assert_eq!(
            lanes[0],
            vec![
                Segment {
                    from: 0.0,
                    to: 0.2,
                    state: PodState::Leader
                },
                Segment {
                    from: 0.2,
                    to: 1.0,
                    state: PodState::Down
                },
            ]
        );
        assert_eq!(lanes[1].len(), 2);
        assert_eq!(lanes[1][1].to, 1.0);
    }

    #[test]
    fn writes_are_counted_per_10_ms_bucket() {
        let pic = Picture::new(Inputs {
            title: String::new(),
            end: 0.05,
            acks: vec![0.001, 0.009, 0.011, 0.049, 0.2],
            samples: Vec::new(),
            marks: Vec::new(),
            gaps: Vec::new(),
            episodes: Vec::new(),
        });
        let counts: Vec<u32> = pic.buckets(0.0, 0.05).iter().map(|b| b.1).collect();
        assert_eq!(counts, vec![2, 1, 0, 0, 1]);
    }

    #[test]
    fn several_episodes_get_a_zoomed_panel_each_with_their_own_marks() {
        let mark = |at: f64, label: &str| MarkAt {
            at,
            label: label.into(),
            fault: false,
        };
        let pic = Picture::new(Inputs {
            title: String::new(),
            end: 10.0,
            acks: Vec::new(),
            samples: Vec::new(),
            marks: vec![
                mark(1.9, "before"),
                mark(2.0, "kill 1"),
                mark(2.1, "elected"),
                mark(3.2, "kill 2"),
            ],
            gaps: Vec::new(),
            episodes: vec![("one".into(), 2.0, 3.0), ("two".into(), 3.2, 4.0)],
        });
        assert_eq!(pic.panels.len(), 3);
        assert_eq!(
            pic.panels[0].labels.len(),
            2,
            "the overview names the episodes"
        );
        let labels: Vec<&str> = pic.panels[1].labels.iter().map(|l| l.1.as_str()).collect();
        assert_eq!(labels, vec!["kill 1", "elected"], "only its own episode's");
        assert!(pic.panels[1].from < 2.0 && pic.panels[1].to > 3.0);
        assert!(pic.panels[1].to < 3.2, "it ends before the next episode");
    }
}
