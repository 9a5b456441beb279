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

pub mod http;

use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::{HttpCheck, ServiceManager};
use crate::remote::unit::{
    self, UnitState, command_script, journal_script, show_script, unit_name,
};
use crate::ssh::{self, Session};

/// Per-attempt bound of the HTTP request and the state read: `2 × interval`, clamped.
pub const ATTEMPT_TIMEOUT_MIN: Duration = Duration::from_secs(1);
pub const ATTEMPT_TIMEOUT_MAX: Duration = Duration::from_secs(5);
/// Longest a `health.command` may run in one attempt.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on the baseline read and on [`journal_tail`].
const ONE_SHOT_TIMEOUT: Duration = Duration::from_secs(10);

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
    /// From the start of [`wait_healthy`] to the end of this attempt.
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

/// Reads the unit's restart count and main-process start time; call it right after
/// `systemctl restart` (or reload). With manager none there is nothing to read.
pub async fn baseline(
    session: &Session,
    manager: ServiceManager,
    service: &str,
) -> Result<Baseline, Error> {
    if manager == ServiceManager::None {
        return Ok(Baseline::default());
    }
    let state_error = |detail: String| Error::State {
        host: session.name().to_owned(),
        service: unit_name(service),
        detail,
    };
    let script = show_script(manager, service).map_err(|e| state_error(e.to_string()))?;
    let out = tokio::time::timeout(ONE_SHOT_TIMEOUT, session.exec(&script, |_, _| {}))
        .await
        .map_err(|_| state_error(format!("no answer within {}", human(ONE_SHOT_TIMEOUT))))??;
    let state = UnitState::parse(&out.stdout);
    if !out.success() || state.active_state.is_empty() {
        return Err(state_error(show_failure(&out)));
    }
    Ok(Baseline {
        n_restarts: state.n_restarts,
        main_start: state.main_start,
    })
}

/// The baseline from the output of a script that ran [`unit::baseline_script`] last. `None`
/// when the output holds no readable state (then ask with [`baseline`]).
pub fn baseline_from(manager: ServiceManager, stdout: &str) -> Option<Baseline> {
    if manager == ServiceManager::None {
        return Some(Baseline::default());
    }
    let state = unit::shown_state(stdout);
    (!state.active_state.is_empty()).then_some(Baseline {
        n_restarts: state.n_restarts,
        main_start: state.main_start,
    })
}

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

/// The last `lines` lines of the unit's journal, as text to show under a failed health
/// check. Never fails: on error, says what went wrong instead.
///
/// systemd: `journalctl -u` (through `sudo -n` when `sudo`; without it, a user outside
/// the `adm`/`systemd-journal` groups sees nothing of system units). systemd-user:
/// `journalctl --user -u`, or with `sudo`, the system journal filtered to the user's unit
/// (needed when journald keeps no per-user files, e.g. `Storage=volatile`).
pub async fn journal_tail(
    session: &Session,
    manager: ServiceManager,
    service: &str,
    sudo: bool,
    lines: usize,
) -> String {
    let unit = unit_name(service);
    let script = match journal_script(manager, service, sudo, lines) {
        Ok(Some(script)) => script,
        Ok(None) => {
            return format!("(no journal: service.manager is none, {unit} is not run by systemd)");
        }
        Err(e) => return format!("(cannot read the journal of {unit}: {e})"),
    };
    let mut text = Bounded::default();
    let run = session.exec(&script, |_, line| text.push(line));
    match tokio::time::timeout(ONE_SHOT_TIMEOUT, run).await {
        Err(_) => with_output(
            format!(
                "(cannot read the journal of {unit}: no answer within {})",
                human(ONE_SHOT_TIMEOUT)
            ),
            &text.text,
            "",
        ),
        Ok(Err(e)) => format!("(cannot read the journal of {unit}: {e})"),
        Ok(Ok(out)) if out.success() => text.text,
        Ok(Ok(out)) => {
            let hint = if manager == ServiceManager::SystemdUser && !sudo {
                "(a user's own journal files are missing when journald stores logs in the system journal only, e.g. Storage=volatile; with service.sudo: true shipit reads them from there)"
            } else {
                ""
            };
            with_output(
                format!(
                    "(cannot read the journal of {unit}: journalctl {})",
                    ssh_status(&out)
                ),
                &text.text,
                hint,
            )
        }
    }
}

/// `head`, then what the command printed and `hint`, one per line, without blank ones.
fn with_output(head: String, output: &str, hint: &str) -> String {
    let mut s = head;
    for part in [output.trim_end(), hint.trim()] {
        if !part.is_empty() {
            s.push('\n');
            s.push_str(part);
        }
    }
    s
}

/// Text kept from a command's output, bounded.
#[derive(Default)]
struct Bounded {
    text: String,
}

impl Bounded {
    const LIMIT: usize = 64 * 1024;

    fn push(&mut self, line: &str) {
        if self.text.len() + line.len() < Self::LIMIT {
            self.text.push_str(line);
            self.text.push('\n');
        }
    }
}

fn show_failure(out: &ssh::ExecOutput) -> String {
    let last = out.stderr_tail.lines().rev().find(|l| !l.trim().is_empty());
    match last {
        Some(line) => format!("systemctl show {}: {line}", ssh_status(out)),
        None => format!("systemctl show {} without output", ssh_status(out)),
    }
}

fn ssh_status(out: &ssh::ExecOutput) -> String {
    match (&out.signal, out.status) {
        (Some(sig), _) => format!("was killed by signal {sig}"),
        (None, Some(0)) => "succeeded".into(),
        (None, Some(code)) => format!("exited with status {code}"),
        (None, None) => "ended without an exit status".into(),
    }
}

/// How the last main process ended, e.g. `exited with status 3`.
fn main_exit(s: &UnitState) -> Option<String> {
    let status = s.main_status.unwrap_or(0);
    match s.main_code? {
        1 => Some(format!("exited with status {status}")),
        2 => Some(format!("was killed by {}", signal_name(status))),
        3 => Some(format!("dumped core ({})", signal_name(status))),
        _ => None,
    }
}

fn signal_name(n: i64) -> String {
    let name = match n {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        5 => "SIGTRAP",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        10 => "SIGUSR1",
        11 => "SIGSEGV",
        12 => "SIGUSR2",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        _ => return format!("signal {n}"),
    };
    name.to_owned()
}

fn times(n: u64) -> String {
    if n == 1 {
        "1 time".into()
    } else {
        format!("{n} times")
    }
}

/// What one state read means for the check.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    Pass,
    /// Not (yet) healthy; a later attempt may pass.
    Fail(String),
    /// Cannot become healthy: stop now.
    Fatal(String),
    /// Restarted by someone else: this attempt fails and later reads compare with the
    /// new baseline.
    Rebase(String, Baseline),
}

fn judge(s: &UnitState, baseline: &Baseline, service: &str) -> Verdict {
    let name = s.name(service);
    let exit = main_exit(s);
    let because = |what: &str| match &exit {
        Some(how) => format!("{what}: its main process {how}"),
        None => what.to_owned(),
    };
    match s.load_state.as_str() {
        "loaded" | "" => {}
        "not-found" => {
            return Verdict::Fatal(format!(
                "{name} is not loaded (not-found): systemd does not know this unit"
            ));
        }
        "masked" => return Verdict::Fatal(format!("{name} is masked")),
        other => {
            return Verdict::Fatal(format!(
                "{name} did not load ({other}); see `systemctl status {name}`"
            ));
        }
    }
    let grew = s.n_restarts.saturating_sub(baseline.n_restarts);
    let restarts = format!(
        "restarted {} since the deploy (NRestarts {} -> {})",
        times(grew),
        baseline.n_restarts,
        s.n_restarts
    );
    if s.active_state == "failed" {
        let result = if s.result.is_empty() {
            String::new()
        } else {
            format!("{}: ", s.result)
        };
        let how = exit
            .as_deref()
            .map_or(String::new(), |h| format!("main process {h}"));
        let detail = format!("{result}{how}");
        let detail = detail.trim_end_matches(": ");
        let mut reason = if detail.is_empty() {
            format!("{name} is failed")
        } else {
            format!("{name} is failed ({detail})")
        };
        if grew > 0 {
            reason.push_str(&format!(" after it {restarts}"));
        }
        return Verdict::Fatal(reason);
    }
    if grew > 0 {
        return Verdict::Fatal(match &exit {
            Some(how) => format!("{name} {restarts}; its main process {how}"),
            None => format!("{name} {restarts}"),
        });
    }
    if s.sub_state == "auto-restart" {
        return Verdict::Fatal(
            because(&format!(
                "{name} went down after the deploy and systemd is restarting it (activating (auto-restart))"
            )) + &result_suffix(s),
        );
    }
    let moved = match (baseline.main_start, s.main_start) {
        (Some(before), Some(now)) => before != now,
        _ => false,
    };
    if s.n_restarts < baseline.n_restarts || moved {
        return Verdict::Rebase(
            format!(
                "{name} was restarted during the health check by something other than this deploy; checking the new process from here on"
            ),
            Baseline {
                n_restarts: s.n_restarts,
                main_start: s.main_start,
            },
        );
    }
    match (s.active_state.as_str(), s.sub_state.as_str()) {
        ("active", "running") => Verdict::Pass,
        ("active", "exited") if s.unit_type == "oneshot" => Verdict::Pass,
        ("active", "exited") => Verdict::Fatal(because(&format!(
            "{name} is active (exited) but nothing runs (RemainAfterExit=yes keeps it active)"
        ))),
        ("inactive", sub) => Verdict::Fatal(because(&format!(
            "{name} is inactive ({sub}) and systemd will not restart it"
        ))),
        (active, sub) => Verdict::Fail(format!("{name} is {active} ({sub})")),
    }
}

fn result_suffix(s: &UnitState) -> String {
    if s.result.is_empty() || s.result == "success" {
        String::new()
    } else {
        format!(" (result: {})", s.result)
    }
}

/// What one attempt found.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Pass,
    Fail(String),
    Fatal(String),
}

#[derive(Debug, Clone, Copy)]
struct Timing {
    timeout: Duration,
    interval: Duration,
    settle: Duration,
}

/// Runs the checks of one attempt.
trait Probe {
    /// `budget`: the per-attempt bound; `remaining`: time left before the overall timeout.
    async fn probe(&mut self, budget: Duration, remaining: Duration) -> Step;
}

/// The polling loop, apart from how checks are made (so it can be tested without hosts).
async fn poll<P: Probe>(
    timing: Timing,
    probe: &mut P,
    on_attempt: &mut (dyn FnMut(&Attempt) + Send),
) -> Outcome {
    let start = Instant::now();
    let deadline = start + timing.timeout;
    let per_attempt = attempt_timeout(timing.interval);
    let mut attempts = 0u32;
    let mut passing_since: Option<Instant> = None;
    let mut last_failure: Option<String> = None;
    loop {
        let began = Instant::now();
        if began >= deadline {
            break;
        }
        attempts += 1;
        let remaining = deadline - began;
        let step = probe.probe(per_attempt.min(remaining), remaining).await;
        let elapsed = start.elapsed();
        match step {
            Step::Pass => {
                let since = *passing_since.get_or_insert(began);
                let passing_for = began - since;
                on_attempt(&Attempt {
                    number: attempts,
                    elapsed,
                    failure: None,
                    passing_for,
                });
                if passing_for >= timing.settle {
                    return Outcome::Healthy { attempts, elapsed };
                }
            }
            Step::Fail(reason) => {
                passing_since = None;
                on_attempt(&Attempt {
                    number: attempts,
                    elapsed,
                    failure: Some(reason.clone()),
                    passing_for: Duration::ZERO,
                });
                last_failure = Some(reason);
            }
            Step::Fatal(reason) => {
                on_attempt(&Attempt {
                    number: attempts,
                    elapsed,
                    failure: Some(reason.clone()),
                    passing_for: Duration::ZERO,
                });
                return Outcome::Unhealthy {
                    reason,
                    attempts,
                    elapsed,
                };
            }
        }
        // A zero interval (not valid in deploy.yaml) must not spin.
        let mut next = began + timing.interval.max(Duration::from_millis(10));
        if let Some(since) = passing_since {
            // Check again right when the settle window closes, not an interval later.
            next = next.min(since + timing.settle);
        }
        tokio::time::sleep_until(next.min(deadline)).await;
    }
    let after = human(timing.timeout);
    let reason = match (passing_since, last_failure) {
        (Some(since), _) => format!(
            "timed out after {after}: the checks had passed for {} of the {} settle window",
            human(deadline.saturating_duration_since(since)),
            human(timing.settle)
        ),
        (None, Some(failure)) => format!("timed out after {after}: {failure}"),
        (None, None) => format!("timed out after {after} before any check finished"),
    };
    Outcome::Unhealthy {
        reason,
        attempts,
        elapsed: start.elapsed(),
    }
}

/// The real checks, over SSH.
struct SshProbe<'a> {
    session: &'a Session,
    spec: &'a Spec<'a>,
    baseline: Baseline,
}

impl Probe for SshProbe<'_> {
    async fn probe(&mut self, budget: Duration, remaining: Duration) -> Step {
        let spec = self.spec;
        let session = self.session;
        let state = async {
            match spec.manager {
                ServiceManager::None => None,
                manager => Some(read_state(session, manager, spec.service, budget).await),
            }
        };
        let http = async {
            match spec.http {
                None => None,
                Some(check) => Some(check_http(session, check, budget).await),
            }
        };
        let command = async {
            match spec.command {
                None => None,
                Some(command) => Some(
                    check_command(
                        session,
                        spec.release_dir,
                        command,
                        COMMAND_TIMEOUT.min(remaining),
                    )
                    .await,
                ),
            }
        };
        let (state, http, command) = tokio::join!(state, http, command);
        if session.is_closed() {
            return Step::Fatal(format!(
                "lost the SSH connection to {} during the health check",
                session.name()
            ));
        }
        let mut failures = Vec::new();
        match state {
            None => {}
            Some(Err(reason)) => failures.push(reason),
            Some(Ok(state)) => match judge(&state, &self.baseline, spec.service) {
                Verdict::Pass => {
                    // Read before the main process started (e.g. during ExecStartPre):
                    // its first start is part of the deploy, later ones are not.
                    if self.baseline.main_start.is_none() {
                        self.baseline.main_start = state.main_start;
                    }
                }
                Verdict::Fail(reason) => failures.push(reason),
                Verdict::Fatal(reason) => return Step::Fatal(reason),
                Verdict::Rebase(reason, baseline) => {
                    self.baseline = baseline;
                    failures.push(reason);
                }
            },
        }
        failures.extend(http.and_then(Result::err));
        failures.extend(command.and_then(Result::err));
        if failures.is_empty() {
            Step::Pass
        } else {
            Step::Fail(failures.join("; "))
        }
    }
}

async fn read_state(
    session: &Session,
    manager: ServiceManager,
    service: &str,
    budget: Duration,
) -> Result<UnitState, String> {
    let unit = unit_name(service);
    let script = show_script(manager, service)
        .map_err(|e| format!("cannot read the state of {unit}: {e}"))?;
    let out = tokio::time::timeout(budget, session.exec(&script, |_, _| {}))
        .await
        .map_err(|_| {
            format!(
                "cannot read the state of {unit}: no answer within {}",
                human(budget)
            )
        })?
        .map_err(|e| format!("cannot read the state of {unit}: {e}"))?;
    let state = UnitState::parse(&out.stdout);
    if !out.success() || state.active_state.is_empty() {
        return Err(format!(
            "cannot read the state of {unit}: {}",
            show_failure(&out)
        ));
    }
    Ok(state)
}

async fn check_http(session: &Session, check: &HttpCheck, budget: Duration) -> Result<(), String> {
    let url = check.url.shown();
    let request = async {
        let mut tunnel = session
            .tunnel(&check.host, check.port)
            .await
            .map_err(|e| match e {
                ssh::Error::Tunnel { to, reason, .. } => {
                    format!("cannot connect to {to} on the host: {reason}")
                }
                other => other.to_string(),
            })?;
        http::get(&mut tunnel, &check.host, check.port, &check.path)
            .await
            .map_err(|e| e.to_string())
    };
    let response = tokio::time::timeout(budget, request)
        .await
        .map_err(|_| format!("GET {url}: no complete response within {}", human(budget)))?
        .map_err(|e| format!("GET {url}: {e}"))?;
    judge_response(
        &response,
        check.status,
        check.contains.as_ref().map(|c| (c.expose(), c.shown())),
    )
    .map_err(|e| format!("GET {url}: {e}"))
}

/// Whether a response passes: `contains` is (value, what may be shown of it).
fn judge_response(
    response: &http::Response,
    status: u16,
    contains: Option<(&str, &str)>,
) -> Result<(), String> {
    if response.status != status {
        return Err(format!("{} (expected {status})", response.status_line()));
    }
    if let Some((needle, shown)) = contains {
        let body = String::from_utf8_lossy(&response.body);
        if !body.contains(needle) {
            let cut = if response.truncated {
                format!(" (first {} KiB read)", http::BODY_LIMIT / 1024)
            } else {
                String::new()
            };
            return Err(format!(
                "{}, but the body does not contain `{shown}`{cut}; it starts with {}",
                response.status_line(),
                http::excerpt(&response.body, 100)
            ));
        }
    }
    Ok(())
}

async fn check_command(
    session: &Session,
    release_dir: &str,
    command: &str,
    limit: Duration,
) -> Result<(), String> {
    let script =
        command_script(release_dir, command, limit).map_err(|e| format!("health command: {e}"))?;
    let mut last = String::new();
    let run = session.exec(&script, |_, line| {
        if !line.trim().is_empty() {
            last = line.trim_end().chars().take(500).collect();
        }
    });
    // The host's `timeout` stops the command at the same moment, so nothing is left
    // running there; this bound also covers a host without `timeout`.
    let out = tokio::time::timeout(limit, run).await;
    let out = match out {
        Err(_) => {
            return Err(format!(
                "health command did not finish within {}",
                human(limit)
            ));
        }
        Ok(Err(e)) => return Err(format!("health command: {e}")),
        Ok(Ok(out)) => out,
    };
    if out.success() {
        return Ok(());
    }
    let what = match (out.status, &out.signal) {
        (Some(124), None) => format!("did not finish within {} and was stopped", human(limit)),
        (Some(125), None) => format!("could not start in {release_dir} (cd or .env failed)"),
        _ => ssh_status(&out),
    };
    Err(if last.is_empty() {
        format!("health command {what}, without output")
    } else {
        format!("health command {what}: {last}")
    })
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

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;
    use crate::remote::unit::RUNNING;

    fn state(text: &str) -> UnitState {
        UnitState::parse(text)
    }

    fn with(base: &str, changes: &[(&str, &str)]) -> UnitState {
        let mut text = String::new();
        for line in base.lines() {
            let key = line.split_once('=').map_or(line, |(k, _)| k);
            match changes.iter().find(|(k, _)| *k == key) {
                Some((k, v)) => text.push_str(&format!("{k}={v}\n")),
                None => text.push_str(&format!("{line}\n")),
            }
        }
        state(&text)
    }

    fn base() -> Baseline {
        Baseline {
            n_restarts: 0,
            main_start: Some(100),
        }
    }

    #[test]
    fn running_unit_passes() {
        assert_eq!(judge(&state(RUNNING), &base(), "hello"), Verdict::Pass);
        let oneshot = with(
            RUNNING,
            &[
                ("Type", "oneshot"),
                ("SubState", "exited"),
                ("ExecMainCode", "1"),
            ],
        );
        assert_eq!(judge(&oneshot, &base(), "hello"), Verdict::Pass);
    }

    #[test]
    fn restarts_since_the_baseline_are_fatal() {
        let s = with(
            RUNNING,
            &[
                ("NRestarts", "2"),
                ("ExecMainStartTimestampMonotonic", "300"),
                ("ExecMainCode", "1"),
                ("ExecMainStatus", "3"),
            ],
        );
        assert_eq!(
            judge(&s, &base(), "hello"),
            Verdict::Fatal(
                "hello.service restarted 2 times since the deploy (NRestarts 0 -> 2); its main process exited with status 3".into()
            )
        );
        let s = with(RUNNING, &[("NRestarts", "4")]);
        let b = Baseline {
            n_restarts: 3,
            main_start: Some(100),
        };
        assert_eq!(
            judge(&s, &b, "hello"),
            Verdict::Fatal(
                "hello.service restarted 1 time since the deploy (NRestarts 3 -> 4)".into()
            )
        );
    }

    #[test]
    fn failed_unit_is_fatal_and_says_why() {
        let s = with(
            RUNNING,
            &[
                ("ActiveState", "failed"),
                ("SubState", "failed"),
                ("Result", "exit-code"),
                ("ExecMainCode", "1"),
                ("ExecMainStatus", "3"),
                ("NRestarts", "5"),
            ],
        );
        assert_eq!(
            judge(&s, &base(), "hello"),
            Verdict::Fatal("hello.service is failed (exit-code: main process exited with status 3) after it restarted 5 times since the deploy (NRestarts 0 -> 5)".into())
        );
        let s = with(
            RUNNING,
            &[
                ("ActiveState", "failed"),
                ("SubState", "failed"),
                ("Result", "signal"),
                ("ExecMainCode", "2"),
                ("ExecMainStatus", "9"),
            ],
        );
        assert_eq!(
            judge(&s, &base(), "hello"),
            Verdict::Fatal(
                "hello.service is failed (signal: main process was killed by SIGKILL)".into()
            )
        );
        let s = with(
            RUNNING,
            &[
                ("ActiveState", "failed"),
                ("SubState", "failed"),
                ("Result", "exit-code"),
            ],
        );
        assert_eq!(
            judge(&s, &base(), "hello"),
            Verdict::Fatal("hello.service is failed (exit-code)".into())
        );
    }

    #[test]
    fn waiting_to_restart_is_fatal() {
        // What a crashing app looks like right after `systemctl restart` returned 0.
        let s = with(
            RUNNING,
            &[
                ("ActiveState", "activating"),
                ("SubState", "auto-restart"),
                ("Result", "exit-code"),
                ("ExecMainCode", "1"),
                ("ExecMainStatus", "3"),
            ],
        );
        assert_eq!(
            judge(&s, &base(), "hello"),
            Verdict::Fatal("hello.service went down after the deploy and systemd is restarting it (activating (auto-restart)): its main process exited with status 3 (result: exit-code)".into())
        );
    }

    #[test]
    fn dead_units_are_fatal() {
        let s = with(
            RUNNING,
            &[
                ("ActiveState", "inactive"),
                ("SubState", "dead"),
                ("ExecMainCode", "1"),
            ],
        );
        assert_eq!(
            judge(&s, &base(), "hello"),
            Verdict::Fatal("hello.service is inactive (dead) and systemd will not restart it: its main process exited with status 0".into())
        );
        let s = with(RUNNING, &[("SubState", "exited"), ("ExecMainCode", "1")]);
        assert!(
            matches!(judge(&s, &base(), "hello"), Verdict::Fatal(r) if r.contains("active (exited) but nothing runs"))
        );
        let s =
            state("Id=nope.service\nLoadState=not-found\nActiveState=inactive\nSubState=dead\n");
        assert_eq!(
            judge(&s, &Baseline::default(), "nope"),
            Verdict::Fatal(
                "nope.service is not loaded (not-found): systemd does not know this unit".into()
            )
        );
        let s = with(RUNNING, &[("LoadState", "masked")]);
        assert!(
            matches!(judge(&s, &base(), "hello"), Verdict::Fatal(r) if r == "hello.service is masked")
        );
    }

    #[test]
    fn transitions_are_plain_failures() {
        for (active, sub) in [
            ("activating", "start"),
            ("reloading", "reload"),
            ("deactivating", "stop-sigterm"),
        ] {
            let s = with(RUNNING, &[("ActiveState", active), ("SubState", sub)]);
            assert_eq!(
                judge(&s, &base(), "hello"),
                Verdict::Fail(format!("hello.service is {active} ({sub})"))
            );
        }
    }

    #[test]
    fn restart_by_someone_else_moves_the_baseline() {
        let s = with(RUNNING, &[("ExecMainStartTimestampMonotonic", "555")]);
        match judge(&s, &base(), "hello") {
            Verdict::Rebase(reason, b) => {
                assert!(reason.contains("restarted during the health check by something other"));
                assert_eq!(
                    b,
                    Baseline {
                        n_restarts: 0,
                        main_start: Some(555)
                    }
                );
                assert_eq!(judge(&s, &b, "hello"), Verdict::Pass);
            }
            other => panic!("{other:?}"),
        }
        let b = Baseline {
            n_restarts: 3,
            main_start: Some(100),
        };
        assert!(matches!(
            judge(&state(RUNNING), &b, "hello"),
            Verdict::Rebase(_, Baseline { n_restarts: 0, .. })
        ));
    }

    #[test]
    fn journal_failures_read_well() {
        assert_eq!(with_output("(head)".into(), "", ""), "(head)");
        assert_eq!(
            with_output("(head)".into(), "a\nb\n\n", " (hint) "),
            "(head)\na\nb\n(hint)"
        );
    }

    fn response(status: u16, reason: &str, body: &str) -> http::Response {
        http::Response {
            status,
            reason: reason.into(),
            body: body.as_bytes().to_vec(),
            truncated: false,
        }
    }

    #[test]
    fn http_reasons() {
        assert_eq!(
            judge_response(&response(200, "OK", "ok"), 200, Some(("ok", "ok"))),
            Ok(())
        );
        assert_eq!(judge_response(&response(204, "", ""), 204, None), Ok(()));
        assert_eq!(
            judge_response(
                &response(500, "Internal Server Error", "boom"),
                200,
                Some(("ok", "ok"))
            ),
            Err("500 Internal Server Error (expected 200)".into())
        );
        assert_eq!(
            judge_response(
                &response(200, "OK", "starting\n"),
                200,
                Some(("ready", "ready"))
            ),
            Err(
                r#"200 OK, but the body does not contain `ready`; it starts with "starting\n""#
                    .into()
            )
        );
        // A secret needle is not shown.
        assert_eq!(
            judge_response(
                &response(200, "OK", "nope"),
                200,
                Some(("s3cret", "[redacted]"))
            ),
            Err(
                r#"200 OK, but the body does not contain `[redacted]`; it starts with "nope""#
                    .into()
            )
        );
        let mut big = response(200, "OK", "");
        big.body = vec![b'x'; http::BODY_LIMIT];
        big.truncated = true;
        let e = judge_response(&big, 200, Some(("ok", "ok"))).unwrap_err();
        assert!(e.contains("(first 64 KiB read)"), "{e}");
        assert!(e.ends_with("...\""), "{e}");
    }

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

    /// A probe that replays scripted steps, each after a delay.
    struct Scripted {
        steps: VecDeque<(Duration, Step)>,
        budgets: Vec<Duration>,
    }

    impl Scripted {
        fn new(steps: &[(u64, Step)]) -> Self {
            Scripted {
                steps: steps
                    .iter()
                    .map(|(ms, s)| (Duration::from_millis(*ms), s.clone()))
                    .collect(),
                budgets: Vec::new(),
            }
        }
    }

    impl Probe for Scripted {
        async fn probe(&mut self, budget: Duration, _remaining: Duration) -> Step {
            self.budgets.push(budget);
            let (delay, step) = self
                .steps
                .pop_front()
                .unwrap_or((Duration::ZERO, Step::Fail("script ran out".into())));
            tokio::time::sleep(delay.min(budget)).await;
            step
        }
    }

    fn timing(timeout: u64, interval: u64, settle: u64) -> Timing {
        Timing {
            timeout: Duration::from_millis(timeout),
            interval: Duration::from_millis(interval),
            settle: Duration::from_millis(settle),
        }
    }

    fn run(t: Timing, probe: &mut Scripted) -> (Outcome, Vec<Attempt>) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut seen = Vec::new();
        let outcome = rt.block_on(poll(t, probe, &mut |a: &Attempt| seen.push(a.clone())));
        (outcome, seen)
    }

    fn fail(r: &str) -> Step {
        Step::Fail(r.into())
    }

    #[test]
    fn healthy_after_the_settle_window() {
        let mut p = Scripted::new(&[
            (0, fail("connection refused")),
            (0, Step::Pass),
            (0, Step::Pass),
            (0, Step::Pass),
            (0, Step::Pass),
        ]);
        let (outcome, seen) = run(timing(5000, 20, 50), &mut p);
        match outcome {
            Outcome::Healthy { attempts, elapsed } => {
                // Passes at ~20, 40, 60 and ~70ms (the settle window's end).
                assert_eq!(attempts, 5, "{seen:?}");
                assert!(elapsed >= Duration::from_millis(70), "{elapsed:?}");
            }
            other => panic!("{other:?} {seen:?}"),
        }
        assert_eq!(seen[0].failure.as_deref(), Some("connection refused"));
        assert_eq!(seen[1].passing_for, Duration::ZERO);
        assert!(seen[4].passing_for >= Duration::from_millis(50));
        assert!(
            seen.iter()
                .enumerate()
                .all(|(i, a)| a.number as usize == i + 1)
        );
    }

    #[test]
    fn zero_settle_is_the_first_pass() {
        let mut p = Scripted::new(&[(0, fail("x")), (0, Step::Pass)]);
        let (outcome, _) = run(timing(5000, 10, 0), &mut p);
        assert!(
            matches!(outcome, Outcome::Healthy { attempts: 2, .. }),
            "{outcome:?}"
        );
    }

    #[test]
    fn a_failure_inside_the_window_starts_it_over() {
        let mut p = Scripted::new(&[
            (0, Step::Pass),
            (0, fail("500")),
            (0, Step::Pass),
            (0, Step::Pass),
            (0, Step::Pass),
            (0, Step::Pass),
        ]);
        let (outcome, seen) = run(timing(5000, 20, 40), &mut p);
        assert!(
            matches!(outcome, Outcome::Healthy { attempts: 5, .. }),
            "{outcome:?} {seen:?}"
        );
        assert_eq!(seen[2].passing_for, Duration::ZERO);
    }

    #[test]
    fn fatal_stops_at_once() {
        let mut p = Scripted::new(&[
            (0, Step::Pass),
            (0, Step::Fatal("hello.service is failed (exit-code)".into())),
        ]);
        let (outcome, seen) = run(timing(60_000, 10, 5000), &mut p);
        match outcome {
            Outcome::Unhealthy {
                reason,
                attempts,
                elapsed,
            } => {
                assert_eq!(reason, "hello.service is failed (exit-code)");
                assert_eq!(attempts, 2);
                assert!(elapsed < Duration::from_secs(1));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(seen.len(), 2);
    }

    #[test]
    fn timeout_reports_the_last_failure() {
        let steps: Vec<(u64, Step)> = (0..100)
            .map(|i| (0, fail(&format!("GET /: 500 Internal Server Error #{i}"))))
            .collect();
        let mut p = Scripted::new(&steps);
        let started = std::time::Instant::now();
        let (outcome, seen) = run(timing(200, 30, 0), &mut p);
        let took = started.elapsed();
        match outcome {
            Outcome::Unhealthy {
                reason, attempts, ..
            } => {
                let last = seen.last().unwrap().failure.clone().unwrap();
                assert_eq!(reason, format!("timed out after 200ms: {last}"));
                assert_eq!(attempts as usize, seen.len());
                assert!((6..=8).contains(&attempts), "{attempts}");
            }
            other => panic!("{other:?}"),
        }
        assert!(
            took >= Duration::from_millis(200) && took < Duration::from_millis(400),
            "{took:?}"
        );
    }

    #[test]
    fn timeout_while_settling_says_so() {
        let steps: Vec<(u64, Step)> = (0..100).map(|_| (0, Step::Pass)).collect();
        let mut p = Scripted::new(&steps);
        let (outcome, _) = run(timing(100, 20, 10_000), &mut p);
        match outcome {
            Outcome::Unhealthy { reason, .. } => assert!(
                reason.starts_with("timed out after 100ms: the checks had passed for ")
                    && reason.ends_with(" of the 10s settle window"),
                "{reason}"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn attempts_never_run_past_the_timeout() {
        // Each attempt hangs until its budget runs out.
        let steps: Vec<(u64, Step)> = (0..100).map(|_| (60_000, fail("no answer"))).collect();
        let mut p = Scripted::new(&steps);
        let started = std::time::Instant::now();
        let (outcome, _) = run(timing(1500, 100, 0), &mut p);
        assert!(!outcome.is_healthy());
        assert!(
            started.elapsed() < Duration::from_millis(1800),
            "{:?}",
            started.elapsed()
        );
        // The per-attempt budget is 1s, the last one only what was left.
        assert_eq!(p.budgets[0], Duration::from_secs(1));
        assert!(
            p.budgets[1] <= Duration::from_millis(500),
            "{:?}",
            p.budgets
        );
    }

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
