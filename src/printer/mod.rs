//! Every byte shipit writes goes through here.
//!
//! Data (an artifact path, a JSON document) goes to stdout; messages, logs and progress to
//! stderr. `-q` silences messages but never data or errors; `--log-format json` turns
//! each message into one JSON object per line, of the one shape `json::LogLine`
//! (docs/json.md). Every line is scrubbed of registered secrets on its way out. Progress
//! bars appear only when stderr is a terminal and `--no-progress` was not given.
#![allow(clippy::print_stdout, clippy::print_stderr)]

pub mod json;
pub mod live;
pub mod summary;
pub mod units;

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::exit::Exit;
use crate::redact::scrub;
use json::LogLine;

/// Whether this process has printed its `--json` document: one run prints one.
static DOCUMENT_PRINTED: AtomicBool = AtomicBool::new(false);

/// Whether stderr may carry ANSI colors: only on a terminal, and never when `NO_COLOR`
/// is set to anything but the empty string (no-color.org). The printer's own lines and
/// the live view use none; tracing's human lines (`-v`) follow this.
pub fn colors() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// A line of a test protocol (`@@faultpoint …`) on stderr, whatever the verbosity: a test
/// waits for it.
pub fn test_protocol_line(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verbosity {
    /// `-q`: errors and data only.
    Quiet,
    Normal,
    /// `-v`: shipit's own debug lines too.
    Verbose,
    /// `-vv`: and the SSH library's.
    VeryVerbose,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, Copy)]
pub struct Printer {
    pub verbosity: Verbosity,
    pub format: LogFormat,
    pub progress: bool,
}

#[derive(Debug, Clone, Copy)]
enum Level {
    Info,
    Warn,
    Error,
}

impl Level {
    fn name(self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

impl Printer {
    pub fn new(verbosity: Verbosity, format: LogFormat, no_progress: bool) -> Self {
        let progress =
            !no_progress && format == LogFormat::Human && std::io::stderr().is_terminal();
        Printer {
            verbosity,
            format,
            progress,
        }
    }

    /// Data for stdout: what a script would capture.
    pub fn data(&self, text: &str) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", scrub(text));
        let _ = out.flush();
    }

    pub fn info(&self, text: &str) {
        if self.verbosity > Verbosity::Quiet {
            self.message(Level::Info, text, None);
        }
    }

    pub fn warn(&self, text: &str) {
        if self.verbosity > Verbosity::Quiet {
            self.message(Level::Warn, text, None);
        }
    }

    /// An error, its causes, and a hint line when there is one. Never silenced.
    pub fn error(&self, err: &anyhow::Error) {
        self.message(Level::Error, &error_text(err), crate::exit::hint_for(err));
    }

    /// The `--json` document on stdout (`schema_version` first, docs/json.md).
    pub fn document<T: Serialize>(&self, body: &T) {
        match json::render(body) {
            Ok(text) => {
                DOCUMENT_PRINTED.store(true, Ordering::SeqCst);
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{text}");
                let _ = out.flush();
            }
            Err(e) => self.message(
                Level::Error,
                &format!("internal error: the JSON document could not be written: {e}"),
                None,
            ),
        }
    }

    /// Under `--json`, a run that failed before its document still prints one, saying
    /// why (docs/json.md); a run that printed its document already prints nothing more.
    pub fn failed_document(&self, action: &str, exit: Exit, err: &anyhow::Error) {
        if DOCUMENT_PRINTED.load(Ordering::SeqCst) {
            return;
        }
        let message = error_text(err);
        let config = err
            .chain()
            .find_map(|c| c.downcast_ref::<crate::config::ConfigError>());
        self.document(&json::Failed {
            ok: false,
            exit_code: exit.code(),
            action,
            error: json::ErrorJson {
                message: &message,
                hint: crate::exit::hint_for(err),
                problems: config.map(json::ProblemJson::all),
            },
        });
    }

    /// One step of one host, `elapsed` since the run began: a plain line
    /// (`   1.2s app1: staged release ...`), or with `--log-format json` a line with
    /// `host` and `elapsed_ms`.
    pub fn event(&self, host: &str, elapsed: Duration, text: &str) {
        if self.verbosity == Verbosity::Quiet {
            return;
        }
        match self.format {
            LogFormat::Human => {
                let _ = writeln!(
                    std::io::stderr().lock(),
                    "{}",
                    scrub(&format!("{:>7.1}s {host}: {text}", elapsed.as_secs_f64()))
                );
            }
            LogFormat::Json => write_line(&LogLine {
                level: Level::Info.name(),
                time: json::now(),
                message: text,
                host: Some(host),
                elapsed_ms: Some(elapsed.as_millis() as u64),
                ..LogLine::default()
            }),
        }
    }

    /// A line of output from a child process (a build step, a hook), on stderr.
    pub fn child_line(&self, source: &str, line: &str) {
        if self.verbosity == Verbosity::Quiet {
            return;
        }
        match self.format {
            LogFormat::Human => {
                let _ = writeln!(std::io::stderr().lock(), "{}", scrub(line));
            }
            LogFormat::Json => self.json(Level::Info, line, Some(source), None),
        }
    }

    fn message(&self, level: Level, text: &str, hint: Option<&str>) {
        match self.format {
            LogFormat::Human => {
                let mut err = std::io::stderr().lock();
                let prefix = match level {
                    Level::Info => "",
                    Level::Warn => "warning: ",
                    Level::Error => "error: ",
                };
                let _ = writeln!(err, "{prefix}{}", scrub(text));
                if let Some(hint) = hint {
                    let _ = writeln!(err, "hint: {}", scrub(hint));
                }
            }
            LogFormat::Json => self.json(level, text, None, hint),
        }
    }

    fn json(&self, level: Level, text: &str, source: Option<&str>, hint: Option<&str>) {
        write_line(&LogLine {
            level: level.name(),
            time: json::now(),
            message: text,
            source,
            hint,
            ..LogLine::default()
        });
    }

    /// A byte-count progress bar, or a hidden one when progress is off. Its length is
    /// unknown (an empty bar) until `set_length`: a length of 0 would show a full one.
    pub fn bytes_bar(&self, message: &str) -> ProgressBar {
        if !self.progress || self.verbosity == Verbosity::Quiet {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(10));
        let style = ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_message(message.to_owned());
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    }
}

/// An error and its causes (those its message does not already include), one per line.
fn error_text(err: &anyhow::Error) -> String {
    let mut text = err.to_string();
    for cause in err.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(&format!("\n  caused by: {cause}"));
        }
    }
    text
}

/// A `--log-format json` line on stderr.
fn write_line(line: &LogLine) {
    let _ = writeln!(std::io::stderr().lock(), "{}", line.render());
}
