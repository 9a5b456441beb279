//! The health check of a freshly restarted release (SPEC "What a deploy does on each
//! host", step 8), run over one host's existing SSH [`Session`]: poll until every
//! configured check passes and keeps passing for the settle window, or until the timeout.
//!
//! The checks of one attempt run at the same time, each on its own channel:
//! - **unit state** (service manager systemd / systemd-user): one `systemctl show` round
//!   trip. Passing means `ActiveState=active` with `SubState=running` (`exited` for
//!   `Type=oneshot`) and `NRestarts` not above the [`Baseline`] read right after the
//!   restart. `systemctl restart`'s exit code proves nothing: an app that exits at once
//!   reads `active`, then `activating (auto-restart)`, then `failed` within ~1.5 s.
//! - **http**: shipit's own `GET` through a direct-tcpip tunnel to the URL's host:port as
//!   seen from the server ([`http`]); the status must match and the body (first 64 KiB)
//!   must contain `contains` when set.
//! - **command**: run with `sh -c` in the release dir with the release's `.env` exported;
//!   exit 0 passes, otherwise its last output line is the reason.
//!
//! Decisions (see [`wait_healthy`] for the whole contract):
//! - Each attempt's HTTP request and state read get [`attempt_timeout`] (twice the
//!   interval, clamped to 1-5 s); the command gets up to [`COMMAND_TIMEOUT`] (enforced on
//!   the host with `timeout` so no process is left behind). Neither runs past the overall
//!   timeout.
//! - A unit that is `failed`, `inactive`, waiting to restart (`auto-restart`), not loaded,
//!   or whose `NRestarts` grew is unhealthy at once: waiting cannot make it healthy.
//! - No check configured at all (manager none, no http, no command) is healthy at once.
//!
//! Layout: `poll` is the loop (tested without hosts), `probe` one attempt over SSH, which
//! runs the checks of `unit`, `http_check` and `command`; `journal` reads the journal for
//! a failed check; `spec` holds the types and helpers they share. Their shell text is in
//! [`crate::remote::unit`].

mod command;
pub mod http;
mod http_check;
mod journal;
mod poll;
mod probe;
mod spec;
mod unit;

use std::time::Duration;

pub use journal::journal_tail;
pub use spec::{
    ATTEMPT_TIMEOUT_MAX, ATTEMPT_TIMEOUT_MIN, Attempt, Baseline, COMMAND_TIMEOUT, Error, Outcome,
    Spec, attempt_timeout, human,
};
pub use unit::{baseline, baseline_from};

use crate::config::ServiceManager;
use crate::ssh::Session;
use poll::{Timing, poll};
use probe::SshProbe;

/// Polls the checks of `spec` until the release is healthy or `spec.timeout` runs out.
///
/// - Attempts start every `interval` (at once if one took longer). All configured checks
///   must pass in the same attempt. The first full pass opens the settle window; a failed
///   attempt inside it closes it, and the next full pass opens a new one. Healthy = an
///   attempt passes at least `settle` after the first pass of an unbroken run (with
///   `settle` 0: the first full pass).
/// - Unhealthy at once, with the unit's story as the reason: the unit is failed, inactive,
///   waiting to be restarted, not loaded, or restarted by systemd since `baseline`
///   (`hello.service restarted 2 times since the deploy (NRestarts 0 -> 2)`). Also when
///   the SSH connection is lost.
/// - A unit restarted by someone else (`NRestarts` went down, or the main process was
///   started again without `NRestarts` growing) fails that attempt only; the baseline
///   moves to the new process.
/// - On timeout: Unhealthy with `timed out after 30s: ` and the last failure (`GET
///   http://127.0.0.1:8080/healthz: 500 Internal Server Error (expected 200)`), or how much
///   of the settle window had passed.
/// - No check configured: Healthy at once, with 0 attempts.
pub async fn wait_healthy(
    session: &Session,
    spec: &Spec<'_>,
    baseline: &Baseline,
    mut on_attempt: impl FnMut(&Attempt) + Send,
) -> Outcome {
    if spec.manager == ServiceManager::None && spec.http.is_none() && spec.command.is_none() {
        return Outcome::Healthy {
            attempts: 0,
            elapsed: Duration::ZERO,
        };
    }
    let mut probe = SshProbe {
        session,
        spec,
        baseline: baseline.clone(),
    };
    poll(
        Timing {
            timeout: spec.timeout,
            interval: spec.interval,
            settle: spec.settle,
        },
        &mut probe,
        &mut on_attempt,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_healthy_is_send() {
        fn is_send<T: Send>(_: &T) {}
        #[allow(unreachable_code, unused_variables, clippy::diverging_sub_expression)]
        fn check() {
            let session: &Session = unimplemented!();
            let spec: &Spec = unimplemented!();
            let fut = wait_healthy(session, spec, &Baseline::default(), |_| {});
            is_send(&fut);
        }
        let _ = check;
    }
}
