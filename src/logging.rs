//! tracing setup: debug logs with `-v`, JSON with `--log-format json`, always on stderr
//! and always scrubbed of registered secrets.

use std::io::Write;

use tracing_subscriber::fmt::MakeWriter;

use crate::printer::{LogFormat, Printer, Verbosity};

struct ScrubbedStderr;

impl Write for ScrubbedStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        std::io::stderr()
            .lock()
            .write_all(crate::redact::scrub(&text).as_bytes())?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl MakeWriter<'_> for ScrubbedStderr {
    type Writer = ScrubbedStderr;
    fn make_writer(&self) -> Self::Writer {
        ScrubbedStderr
    }
}

pub fn init(printer: &Printer) {
    let level = match printer.verbosity {
        Verbosity::Verbose => "shipit=debug",
        _ => "shipit=warn",
    };
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("SHIPIT_LOG").unwrap_or_else(|_| level.into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(ScrubbedStderr)
        .with_target(false);
    let _ = match printer.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Human => builder.without_time().try_init(),
    };
}
