//! tracing setup: shipit's debug lines with `-v`, the SSH library's too with `-vv`, any
//! filter with `SHIPIT_LOG`; always on stderr, always scrubbed of registered secrets, and
//! with `--log-format json` in the one line shape of every JSON log line (docs/json.md).

use std::fmt;
use std::io::Write;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

use crate::printer::json::{self, LogLine};
use crate::printer::{LogFormat, Printer, Verbosity};

/// The variable whose tracing filter (`russh=trace`, `shipit::ssh=debug,russh=info`)
/// replaces the one `-v`/`-vv` select.
pub const FILTER_VAR: &str = "SHIPIT_LOG";

/// What `-q`, nothing, `-v` and `-vv` show.
fn filter_for(verbosity: Verbosity) -> &'static str {
    match verbosity {
        Verbosity::Quiet => "shipit=error",
        Verbosity::Normal => "shipit=warn",
        Verbosity::Verbose => "shipit=debug",
        Verbosity::VeryVerbose => "shipit=debug,russh=debug",
    }
}

/// stderr, scrubbing human lines whole; a JSON line arrives scrubbed (its strings only).
#[derive(Clone, Copy)]
struct Stderr {
    scrub: bool,
}

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let text = if self.scrub {
            crate::redact::scrub(&text)
        } else {
            text
        };
        std::io::stderr().lock().write_all(text.as_bytes())?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl MakeWriter<'_> for Stderr {
    type Writer = Stderr;
    fn make_writer(&self) -> Self::Writer {
        *self
    }
}

pub fn init(printer: &Printer) {
    let selected = filter_for(printer.verbosity);
    let filter = match std::env::var(FILTER_VAR) {
        Ok(v) if !v.trim().is_empty() => EnvFilter::try_new(&v).unwrap_or_else(|e| {
            printer.warn(&format!(
                "{FILTER_VAR}={v:?} is not a tracing filter ({e}); using `{selected}`"
            ));
            EnvFilter::new(selected)
        }),
        _ => EnvFilter::new(selected),
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match printer.format {
        LogFormat::Json => builder
            .with_writer(Stderr { scrub: false })
            .with_ansi(false)
            .event_format(JsonLine)
            .try_init(),
        LogFormat::Human => builder
            .with_writer(Stderr { scrub: true })
            .with_ansi(crate::printer::colors())
            .without_time()
            .try_init(),
    };
}

/// A tracing event as a JSON log line.
struct JsonLine;

impl<S, N> FormatEvent<S, N> for JsonLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let meta = event.metadata();
        let line = LogLine {
            level: level_name(*meta.level()),
            time: json::now(),
            message: &fields.message,
            host: fields.host.as_deref(),
            // An event from the `log` crate (russh's) names its target in a field.
            target: Some(fields.log_target.as_deref().unwrap_or(meta.target())),
            fields: fields.other,
            ..LogLine::default()
        };
        writeln!(writer, "{}", line.render())
    }
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::ERROR => "error",
        Level::WARN => "warn",
        Level::INFO => "info",
        Level::DEBUG => "debug",
        Level::TRACE => "trace",
    }
}

/// An event's fields: its message, its host, and the rest.
#[derive(Default)]
struct Fields {
    message: String,
    host: Option<String>,
    log_target: Option<String>,
    other: serde_json::Map<String, serde_json::Value>,
}

impl Fields {
    fn put(&mut self, field: &Field, value: serde_json::Value) {
        let text = || match &value {
            serde_json::Value::String(s) => s.clone(),
            v => v.to_string(),
        };
        match field.name() {
            "message" => self.message = text(),
            "host" => self.host = Some(text()),
            "log.target" => self.log_target = Some(text()),
            // The rest of what the `log` bridge adds: where in russh's source.
            name if name.starts_with("log.") => {}
            name => {
                self.other.insert(name.to_owned(), value);
            }
        }
    }
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, format!("{value:?}").into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, value.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbosity_selects_the_ssh_library_only_at_vv() {
        assert!(!filter_for(Verbosity::Verbose).contains("russh"));
        assert!(filter_for(Verbosity::VeryVerbose).contains("russh=debug"));
        for v in [
            Verbosity::Quiet,
            Verbosity::Normal,
            Verbosity::Verbose,
            Verbosity::VeryVerbose,
        ] {
            assert!(EnvFilter::try_new(filter_for(v)).is_ok());
        }
    }
}
