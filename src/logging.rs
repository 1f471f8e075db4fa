//! Log output: every line names the node; `--log-format json` writes one
//! JSON object per line for Kubernetes log collectors.

use std::fmt;

use clap::ValueEnum;
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{DefaultFields, Format, Full, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// The log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Formats events with the node's name in each one.
struct NodeFormat {
    node: String,
    format: LogFormat,
    text: Format<Full>,
}

struct JsonFields(Map<String, Value>);

impl Visit for JsonFields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(
            field.name().to_string(),
            Value::String(format!("{value:?}")),
        );
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .insert(field.name().to_string(), Value::String(value.to_string()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_string(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_string(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_string(), Value::from(value));
    }
}

impl<S, N> FormatEvent<S, N> for NodeFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        match self.format {
            LogFormat::Text => {
                write!(writer, "[{}] ", self.node)?;
                self.text.format_event(ctx, writer, event)
            }
            LogFormat::Json => {
                let mut fields = JsonFields(Map::new());
                event.record(&mut fields);
                let mut line = Map::new();
                line.insert("timestamp".into(), Value::String(timestamp()));
                line.insert(
                    "level".into(),
                    Value::String(event.metadata().level().to_string()),
                );
                line.insert("node".into(), Value::String(self.node.clone()));
                line.insert(
                    "target".into(),
                    Value::String(event.metadata().target().to_string()),
                );
                if let Some(message) = fields.0.remove("message") {
                    line.insert("message".into(), message);
                }
                let mut spans = Vec::new();
                if let Some(scope) = ctx.event_scope() {
                    for span in scope.from_root() {
                        let ext = span.extensions();
                        let recorded = ext
                            .get::<FormattedFields<N>>()
                            .map(|f| f.fields.as_str().to_string())
                            .unwrap_or_default();
                        spans.push(Value::String(format!("{}{{{}}}", span.name(), recorded)));
                    }
                }
                if !spans.is_empty() {
                    line.insert("spans".into(), Value::Array(spans));
                }
                line.insert("fields".into(), Value::Object(fields.0));
                writeln!(writer, "{}", Value::Object(line))
            }
        }
    }
}

/// The current time as RFC 3339 UTC with microseconds.
fn timestamp() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        now.subsec_micros()
    )
}

/// The filter of a process that embeds the DNS server (`kvstore local`):
/// `level`, with the DNS server's own targets at `warn` unless `level`
/// names them. At `info`, hickory logs every query it answers, thousands
/// of lines a minute in a box whose pods re-resolve their peers.
pub fn with_quiet_dns(level: &str) -> String {
    if level.contains("hickory") {
        level.to_string()
    } else {
        format!("{level},hickory_server=warn,hickory_proto=warn")
    }
}

/// Installs the global subscriber. `level` is an env-filter directive such as
/// `info` or `kvstore=debug,h2=warn`.
pub fn init(node: &str, format: LogFormat, level: &str) -> Result<(), String> {
    let filter =
        EnvFilter::try_new(level).map_err(|e| format!("bad --log-level {level:?}: {e}"))?;
    let event_format = NodeFormat {
        node: node.to_string(),
        format,
        text: Format::default(),
    };
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let ansi = format == LogFormat::Text && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let layer = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .fmt_fields(DefaultFields::new())
        .event_format(event_format)
        .with_writer(std::io::stderr);
    tracing_subscriber::registry()
        .with(filter)
        .with(layer)
        .try_init()
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    /// Timestamps are RFC 3339.
    #[test]
    fn timestamp_shape() {
        let t = super::timestamp();
        assert_eq!(t.len(), "2026-11-25T19:32:53.000000Z".len(), "{t}");
        assert!(t.starts_with("20") && t.ends_with('Z'), "{t}");
    }
}

#[cfg(test)]
mod quiet_dns_tests {
    use super::with_quiet_dns;

    #[test]
    fn the_dns_server_is_at_warn_unless_the_level_names_it() {
        assert_eq!(
            with_quiet_dns("info"),
            "info,hickory_server=warn,hickory_proto=warn"
        );
        assert_eq!(
            with_quiet_dns("kvstore=debug"),
            "kvstore=debug,hickory_server=warn,hickory_proto=warn"
        );
        assert_eq!(
            with_quiet_dns("info,hickory_server=debug"),
            "info,hickory_server=debug"
        );
        // What it makes is a valid filter.
        assert!(tracing_subscriber::EnvFilter::try_new(with_quiet_dns("warn")).is_ok());
    }
}
