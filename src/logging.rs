//! The node's log: where it goes and in what form ([`init`]: text for
//! people, or one JSON object per line for log pipelines), and log lines a
//! peer can trigger at will, kept to a budget: a refused connection or a
//! misbehaving stream logs its first lines, then one line per window saying
//! how many were held back. A script that opens thousands of bad
//! connections fills no disk.

/// How log lines are written (`[log] format`).
#[derive(Clone, Copy, Debug, serde::Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// For people reading a terminal or the journal.
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

/// What a printed config (`rungs config check`) shows instead of a secret.
pub const REDACTED: &str = "<redacted>";

/// `value` with any password and query values replaced by [`REDACTED`]; a
/// value that does not parse as a URL is redacted whole.
pub fn redact_url(value: &str) -> String {
    if value.is_empty() {
        return String::new();
    }
    let Ok(mut url) = url::Url::parse(value) else {
        return REDACTED.into();
    };
    let had_password = url.password().is_some();
    if !had_password && url.query().is_none() && url.fragment().is_none() {
        // As written: re-serializing would normalize it (a trailing slash).
        return value.to_string();
    }
    let query: Vec<String> = url
        .query_pairs()
        .map(|(k, _)| format!("{k}={REDACTED}"))
        .collect();
    // Cannot fail for a URL that has a host (one with a password has one).
    let _ = url.set_password(None);
    url.set_query(None);
    url.set_fragment(None);
    let mut out = url.to_string();
    if had_password {
        // The marker is written as is: the url crate would percent-encode it.
        let at = url.scheme().len() + "://".len() + url.username().len();
        out.insert_str(at, &format!(":{REDACTED}"));
    }
    if !query.is_empty() {
        out.push('?');
        out.push_str(&query.join("&"));
    }
    out
}
use serde_json::{Map, Value};
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// Logs to stderr in `format`, at `level` unless `RUST_LOG` says otherwise.
/// Once per process; a second call changes nothing.
pub fn init(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // Already set (a test, or a library user's own) is theirs to keep.
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder
            .with_ansi(false)
            .fmt_fields(JsonFields::new())
            .event_format(JsonLines::default())
            .try_init(),
    };
}

/// One JSON object per event: `timestamp` (RFC 3339, UTC), `level`,
/// `target`, `message`, then the event's fields and those of the spans it
/// is in, all at the top level, so that a log pipeline can filter on
/// `channel` or `session` without knowing where they were recorded. A name
/// present twice keeps the innermost value: the event's own, then the
/// nearest span's. Needs [`JsonFields`] as the span field formatter.
#[derive(Default)]
pub struct JsonLines {
    timer: SystemTime,
}

/// Keys every line has; a field of the same name is left out rather than
/// written twice.
const FIXED: [&str; 3] = ["timestamp", "level", "target"];

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let mut timestamp = String::new();
        self.timer.format_time(&mut Writer::new(&mut timestamp))?;
        let meta = event.metadata();
        let mut line = Map::new();
        line.insert("timestamp".into(), timestamp.into());
        line.insert("level".into(), meta.level().as_str().into());
        line.insert("target".into(), meta.target().into());
        let mut fields = Map::new();
        event.record(&mut Fields(&mut fields));
        if let Some(scope) = ctx.event_scope() {
            // Innermost first: the first value recorded for a name stays.
            for span in scope {
                let ext = span.extensions();
                let Some(f) = ext.get::<FormattedFields<N>>() else {
                    continue;
                };
                if let Ok(Value::Object(m)) = serde_json::from_str::<Value>(&f.fields) {
                    for (k, v) in m {
                        fields.entry(k).or_insert(v);
                    }
                }
            }
        }
        for (k, v) in fields {
            if !FIXED.contains(&k.as_str()) {
                line.insert(k, v);
            }
        }
        // The order above (timestamp, level, target, message, fields) is
        // not kept by `Map`: write the fixed keys first by hand.
        let mut out = String::from("{");
        for k in FIXED.iter().copied().chain(["message"]) {
            if let Some(v) = line.remove(k) {
                if out.len() > 1 {
                    out.push(',');
                }
                let _ = write!(out, "{}:{v}", Value::from(k));
            }
        }
        for (k, v) in line {
            let _ = write!(out, ",{}:{v}", Value::from(k));
        }
        out.push('}');
        writeln!(writer, "{out}")
    }
}

/// An event's fields as JSON values: numbers and booleans as such, the
/// rest as text.
struct Fields<'a>(&'a mut Map<String, Value>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // JSON has no NaN or infinity: those go as text.
        let v = serde_json::Number::from_f64(value)
            .map_or_else(|| Value::from(value.to_string()), Value::Number);
        self.0.insert(field.name().into(), v);
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.insert(field.name().into(), value.to_string().into());
    }
}

/// One log site's budget: at most `burst` lines per `window`.
#[derive(Debug)]
pub struct LogBudget {
    burst: u32,
    window: Duration,
    state: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    started: Option<Instant>,
    written: u32,
    held: u64,
}

impl LogBudget {
    pub const fn new(burst: u32, window: Duration) -> Self {
        LogBudget {
            burst,
            window,
            state: Mutex::new(Window {
                started: None,
                written: 0,
                held: 0,
            }),
        }
    }

    /// Whether a line may be written at `now`: `Some(n)` with the number of
    /// lines held back since the last one written (say so in the line), or
    /// `None` to stay silent.
    pub fn admit(&self, now: Instant) -> Option<u64> {
        // A poisoned lock only means another thread panicked mid-count.
        let mut w = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if w.started
            .is_none_or(|s| now.duration_since(s) >= self.window)
        {
            w.started = Some(now);
            w.written = 0;
        }
        if w.written >= self.burst {
            w.held += 1;
            return None;
        }
        w.written += 1;
        Some(std::mem::take(&mut w.held))
    }

    /// [`LogBudget::admit`] at the current time.
    pub fn admit_now(&self) -> Option<u64> {
        self.admit(Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// What a subscriber wrote, shared with the test.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn json_lines_carry_event_and_span_fields_at_the_top_level() {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .fmt_fields(JsonFields::new())
            .event_format(JsonLines::default())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let span =
                tracing::info_span!("channel", channel = "ch1", session = tracing::field::Empty);
            let _in = span.enter();
            tracing::info!(bytes = 42u64, ok = true, "before \"the\" session");
            span.record("session", 7);
            let inner = tracing::info_span!("rung", rung = "720p", channel = "shadowed");
            inner.in_scope(|| tracing::warn!(channel = "own", ratio = 0.5, "inside"));
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        let first = &lines[0];
        assert!(text.starts_with("{\"timestamp\":"), "{text}");
        assert!(
            first["timestamp"].as_str().unwrap().ends_with('Z'),
            "{first}"
        );
        assert_eq!(first["level"], "INFO");
        assert_eq!(first["target"], module_path!());
        assert_eq!(first["message"], "before \"the\" session");
        assert_eq!(first["bytes"], 42);
        assert_eq!(first["ok"], true);
        assert_eq!(first["channel"], "ch1");
        assert!(first.get("session").is_none(), "{first}");
        let second = &lines[1];
        assert_eq!(second["level"], "WARN");
        assert_eq!(second["session"], 7);
        assert_eq!(second["rung"], "720p");
        // The event's own value, then the nearest span's.
        assert_eq!(second["channel"], "own");
        assert_eq!(second["ratio"], 0.5);
    }

    #[test]
    fn a_flood_writes_the_burst_then_one_line_per_window_with_the_count_held() {
        let budget = LogBudget::new(3, Duration::from_secs(10));
        let t0 = Instant::now();
        let written: Vec<Option<u64>> = (0..1000).map(|_| budget.admit(t0)).collect();
        assert_eq!(written.iter().flatten().count(), 3);
        assert_eq!(written[..3], [Some(0), Some(0), Some(0)]);
        assert_eq!(budget.admit(t0 + Duration::from_secs(9)), None);
        assert_eq!(budget.admit(t0 + Duration::from_secs(10)), Some(998));
        assert_eq!(budget.admit(t0 + Duration::from_secs(11)), Some(0));
    }
}
