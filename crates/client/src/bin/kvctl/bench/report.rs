//! The final report: a table for people, or one JSON object whose fields
//! other tools rely on (see the module docs of `bench`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::args::{consistency_name, OpKind, Plan};
use super::tally::Tally;

/// What a run measured.
#[derive(Debug)]
pub(crate) struct Measured {
    /// Operations answered (for watch: puts acknowledged).
    pub(crate) ops: u64,
    /// From the end of the warm-up to the last answer.
    pub(crate) elapsed: Duration,
    /// Latencies (for watch: of deliveries), errors, failed compares.
    pub(crate) tally: Tally,
    /// For watch: events expected and delivered.
    pub(crate) events: Option<Events>,
}

/// A watch run's deliveries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Events {
    /// Puts acknowledged × watchers.
    pub(crate) expected: u64,
    /// Events received, all watchers together.
    pub(crate) delivered: u64,
}

/// Latency percentiles in milliseconds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct LatencyMs {
    pub(crate) p50: f64,
    pub(crate) p90: f64,
    pub(crate) p99: f64,
    pub(crate) max: f64,
    pub(crate) mean: f64,
}

impl LatencyMs {
    /// The percentiles of a histogram of microseconds (all 0 when empty).
    pub(crate) fn of(hist: &Histogram<u64>) -> LatencyMs {
        if hist.is_empty() {
            return LatencyMs {
                p50: 0.0,
                p90: 0.0,
                p99: 0.0,
                max: 0.0,
                mean: 0.0,
            };
        }
        let ms = |us: f64| round(us / 1000.0, 3);
        LatencyMs {
            p50: ms(hist.value_at_quantile(0.50) as f64),
            p90: ms(hist.value_at_quantile(0.90) as f64),
            p99: ms(hist.value_at_quantile(0.99) as f64),
            max: ms(hist.max() as f64),
            mean: ms(hist.mean()),
        }
    }
}

/// The report, in the order of its JSON fields.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Report {
    pub(crate) backend: &'static str,
    pub(crate) op: &'static str,
    pub(crate) consistency: &'static str,
    pub(crate) concurrency: usize,
    pub(crate) connections: usize,
    pub(crate) ops: u64,
    pub(crate) elapsed_s: f64,
    pub(crate) ops_per_s: f64,
    pub(crate) latency_ms: LatencyMs,
    pub(crate) errors: BTreeMap<String, u64>,
    pub(crate) compare_failed: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) events_expected: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) events_delivered: Option<u64>,
    /// For the table only: where the load went, and the watch settings.
    #[serde(skip)]
    pub(crate) context: Context,
}

/// What the table says beyond the JSON fields.
#[derive(Clone, Debug, Default)]
pub(crate) struct Context {
    /// The endpoints the connections went to, and how they were chosen.
    pub(crate) target: String,
    /// Watch streams (watch only).
    pub(crate) watchers: usize,
    /// The writer's puts per second asked for (watch only).
    pub(crate) rate: f64,
}

impl Report {
    /// The report of a measured run of `plan` over `connections` channels.
    pub(crate) fn new(
        plan: &Plan,
        connections: usize,
        measured: &Measured,
        context: Context,
    ) -> Report {
        let secs = measured.elapsed.as_secs_f64();
        Report {
            backend: plan.backend.name(),
            op: plan.op.name(),
            consistency: consistency_name(plan.consistency),
            concurrency: plan.concurrency,
            connections,
            ops: measured.ops,
            elapsed_s: round(secs, 3),
            ops_per_s: if secs > 0.0 {
                round(measured.ops as f64 / secs, 1)
            } else {
                0.0
            },
            latency_ms: LatencyMs::of(&measured.tally.hist),
            errors: measured.tally.errors.clone(),
            compare_failed: measured.tally.compare_failed,
            events_expected: measured.events.map(|e| e.expected),
            events_delivered: measured.events.map(|e| e.delivered),
            context,
        }
    }

    /// The report as one line of JSON.
    pub(crate) fn json(&self) -> String {
        // A struct of numbers, strings and a string-keyed map always
        // serializes.
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// The report as a table.
    pub(crate) fn table(&self) -> String {
        let mut t = String::new();
        let what = if self.op == OpKind::Get.name() {
            format!("{} {} ({})", self.backend, self.op, self.consistency)
        } else {
            format!("{} {}", self.backend, self.op)
        };
        let _ = writeln!(t, "{what}");
        let _ = writeln!(t, "  target        {}", self.context.target);
        if self.op == OpKind::Watch.name() {
            let _ = writeln!(
                t,
                "  load          {} watchers, 1 writer at {} puts/s, {} connections",
                self.context.watchers, self.context.rate, self.connections
            );
        } else {
            let _ = writeln!(
                t,
                "  load          concurrency {}, connections {}",
                self.concurrency, self.connections
            );
        }
        let _ = writeln!(t, "  ops           {} in {:.3} s", self.ops, self.elapsed_s);
        let _ = writeln!(t, "  ops/s         {:.1}", self.ops_per_s);
        let l = &self.latency_ms;
        let which = if self.op == OpKind::Watch.name() {
            "delivery (ms)"
        } else {
            "latency (ms) "
        };
        let _ = writeln!(
            t,
            "  {which} p50 {:.3}  p90 {:.3}  p99 {:.3}  max {:.3}  mean {:.3}",
            l.p50, l.p90, l.p99, l.max, l.mean
        );
        let errors = if self.errors.is_empty() {
            "none".to_string()
        } else {
            self.errors
                .iter()
                .map(|(kind, n)| format!("{kind} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(t, "  errors        {errors}");
        if self.op == OpKind::Txn.name() {
            let _ = writeln!(t, "  compare failed {}", self.compare_failed);
        }
        if let (Some(expected), Some(delivered)) = (self.events_expected, self.events_delivered) {
            let _ = writeln!(
                t,
                "  events        {delivered} delivered of {expected} expected"
            );
        }
        t
    }
}

/// `x` rounded to `places` decimals.
fn round(x: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (x * f).round() / f
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::args::{BenchArgs, Plan};
    use crate::cli::Consistency;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        args: BenchArgs,
    }

    fn plan(flags: &[&str]) -> Plan {
        let args = Wrap::try_parse_from(std::iter::once("bench").chain(flags.iter().copied()))
            .expect("flags")
            .args;
        Plan::new(&args, vec!["e:1".into()], Consistency::Linearizable, 10).expect("plan")
    }

    fn measured(events: Option<Events>) -> Measured {
        let mut tally = Tally::new();
        for ms in 1..=100 {
            tally.record(Duration::from_millis(ms));
        }
        tally.error("Unavailable".into());
        Measured {
            ops: 100,
            elapsed: Duration::from_millis(2_000),
            tally,
            events,
        }
    }

    #[test]
    fn json_has_exactly_the_contract_fields_in_order() {
        let r = Report::new(
            &plan(&["--concurrency", "64"]),
            1,
            &measured(None),
            Context::default(),
        );
        let json = r.json();
        let keys: Vec<String> = serde_json::from_str::<serde_json::Value>(&json)
            .expect("json")
            .as_object()
            .expect("object")
            .keys()
            .cloned()
            .collect();
        let mut want = vec![
            "backend",
            "op",
            "consistency",
            "concurrency",
            "connections",
            "ops",
            "elapsed_s",
            "ops_per_s",
            "latency_ms",
            "errors",
            "compare_failed",
        ];
        want.sort_unstable();
        assert_eq!(keys, want, "{json}");
        assert!(
            json.starts_with(
                r#"{"backend":"kvstore","op":"put","consistency":"linearizable","concurrency":64,"connections":1,"ops":100,"elapsed_s":2.0,"ops_per_s":50.0,"latency_ms":{"p50":50.015,"#
            ),
            "{json}"
        );
        assert!(
            json.ends_with(r#""errors":{"Unavailable":1},"compare_failed":0}"#),
            "{json}"
        );
    }

    #[test]
    fn watch_json_adds_the_events() {
        let events = Events {
            expected: 200,
            delivered: 199,
        };
        let r = Report::new(
            &plan(&["--op", "watch"]),
            1,
            &measured(Some(events)),
            Context::default(),
        );
        let v: serde_json::Value = serde_json::from_str(&r.json()).expect("json");
        assert_eq!(v["events_expected"], 200);
        assert_eq!(v["events_delivered"], 199);
        assert_eq!(v["op"], "watch");
    }

    #[test]
    fn percentiles_are_milliseconds() {
        let m = measured(None);
        let l = LatencyMs::of(&m.tally.hist);
        assert_eq!((l.p50, l.p90, l.p99), (50.015, 90.047, 99.007));
        assert_eq!(l.max, 100.031);
        assert!((l.mean - 50.5).abs() < 0.1, "{}", l.mean);
        assert_eq!(LatencyMs::of(&Tally::new().hist).p99, 0.0);
    }

    #[test]
    fn the_table_names_the_numbers() {
        let r = Report::new(
            &plan(&["--op", "get", "--concurrency", "64"]),
            2,
            &measured(None),
            Context {
                target: "leader 127.0.0.1:7379".into(),
                ..Context::default()
            },
        );
        let t = r.table();
        assert!(t.starts_with("kvstore get (linearizable)\n"), "{t}");
        assert!(t.contains("target        leader 127.0.0.1:7379"), "{t}");
        assert!(t.contains("concurrency 64, connections 2"), "{t}");
        assert!(t.contains("ops           100 in 2.000 s"), "{t}");
        assert!(t.contains("ops/s         50.0"), "{t}");
        assert!(t.contains("p99 99.007"), "{t}");
        assert!(t.contains("errors        Unavailable 1"), "{t}");
    }
}
