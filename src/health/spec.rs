//! What one health check is given and what it gives back, and the helpers every check
//! shares: the time bounds and how durations and exit statuses read in messages.

use std::fmt;
use std::time::Duration;

use crate::config::{HttpCheck, ServiceManager};
use crate::ssh;

/// Per-attempt bound of the HTTP request and the state read: `2 × interval`, clamped.
pub const ATTEMPT_TIMEOUT_MIN: Duration = Duration::from_secs(1);
pub const ATTEMPT_TIMEOUT_MAX: Duration = Duration::from_secs(5);
/// Longest a `health.command` may run in one attempt.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on the baseline read and on [`journal_tail`](super::journal_tail).
pub(super) const ONE_SHOT_TIMEOUT: Duration = Duration::from_secs(10);

/// What to check on one host.
#[derive(Debug, Clone, Copy)]
pub struct Spec<'a> {
    pub http: Option<&'a HttpCheck>,
    /// Shell text, run in `release_dir` with the release's `.env` exported.
    pub command: Option<&'a str>,
    /// Absolute path of the release on the host.
    pub release_dir: &'a str,
    pub manager: ServiceManager,
    /// The unit (`hello` or `hello.service`).
    pub service: &'a str,
    /// Bounds the whole check.
    pub timeout: Duration,
    /// From the start of one attempt to the start of the next.
    pub interval: Duration,
    /// After the first full pass, every attempt must keep passing this long.
    pub settle: Duration,
}

/// The unit as it was right after the restart; later reads are compared with it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Baseline {
    /// systemd's count of automatic restarts (a manual restart resets it to 0).
    pub n_restarts: u64,
    /// `ExecMainStartTimestampMonotonic` (µs): changes whenever the main process is
    /// started again. `None` when no main process was started.
    pub main_start: Option<u64>,
}

/// One finished attempt, for progress output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// 1-based.
    pub number: u32,
    /// From the start of [`wait_healthy`](super::wait_healthy) to the end of this attempt.
    pub elapsed: Duration,
    /// `None`: every check passed.
    pub failure: Option<String>,
    /// How long the checks have passed without a break, counted from the start of the
    /// first passing attempt of the run (zero when this attempt failed).
    pub passing_for: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Healthy {
        attempts: u32,
        elapsed: Duration,
    },
    Unhealthy {
        reason: String,
        attempts: u32,
        elapsed: Duration,
    },
}

impl Outcome {
    pub fn is_healthy(&self) -> bool {
        matches!(self, Outcome::Healthy { .. })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Ssh(#[from] ssh::Error),
    #[error("host `{host}`: cannot read the state of {service}: {detail}")]
    State {
        host: String,
        service: String,
        detail: String,
    },
}

/// The per-attempt bound of the HTTP request and the state read for `interval`.
pub fn attempt_timeout(interval: Duration) -> Duration {
    interval
        .saturating_mul(2)
        .clamp(ATTEMPT_TIMEOUT_MIN, ATTEMPT_TIMEOUT_MAX)
}

/// `250ms`, `2s`, `1.5s`: for measured and configured durations in messages.
pub fn human(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Healthy { attempts, elapsed } => {
                write!(
                    f,
                    "healthy after {} ({attempts} attempt(s))",
                    human(*elapsed)
                )
            }
            Outcome::Unhealthy { reason, .. } => write!(f, "unhealthy: {reason}"),
        }
    }
}

/// How a command on the host ended, for messages: `exited with status 3`.
pub(super) fn ssh_status(out: &ssh::ExecOutput) -> String {
    match (&out.signal, out.status) {
        (Some(sig), _) => format!("was killed by signal {sig}"),
        (None, Some(0)) => "succeeded".into(),
        (None, Some(code)) => format!("exited with status {code}"),
        (None, None) => "ended without an exit status".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timing_helpers() {
        assert_eq!(
            attempt_timeout(Duration::from_millis(100)),
            Duration::from_secs(1)
        );
        assert_eq!(
            attempt_timeout(Duration::from_millis(1500)),
            Duration::from_secs(3)
        );
        assert_eq!(
            attempt_timeout(Duration::from_secs(10)),
            Duration::from_secs(5)
        );
        assert_eq!(human(Duration::from_millis(250)), "250ms");
        assert_eq!(human(Duration::from_secs(30)), "30s");
        assert_eq!(human(Duration::from_millis(1540)), "1.5s");
    }
}
