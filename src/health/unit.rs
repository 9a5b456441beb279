//! The unit-state check: read the unit with `systemctl show`, and judge what it says
//! against the [`Baseline`] read right after the restart.

use std::time::Duration;

use super::spec::{Baseline, Error, ONE_SHOT_TIMEOUT, human, ssh_status};
use crate::config::ServiceManager;
use crate::remote::unit::{self, UnitState, show_script, unit_name};
use crate::ssh::{self, Session};

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

fn show_failure(out: &ssh::ExecOutput) -> String {
    let last = out.stderr_tail.lines().rev().find(|l| !l.trim().is_empty());
    match last {
        Some(line) => format!("systemctl show {}: {line}", ssh_status(out)),
        None => format!("systemctl show {} without output", ssh_status(out)),
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
pub(super) enum Verdict {
    Pass,
    /// Not (yet) healthy; a later attempt may pass.
    Fail(String),
    /// Cannot become healthy: stop now.
    Fatal(String),
    /// Restarted by someone else: this attempt fails and later reads compare with the
    /// new baseline.
    Rebase(String, Baseline),
}

pub(super) fn judge(s: &UnitState, baseline: &Baseline, service: &str) -> Verdict {
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
                "{name} went down after the deploy and systemd is restarting it \
                 (activating (auto-restart))"
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
                "{name} was restarted during the health check by something other than this \
                 deploy; checking the new process from here on"
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

pub(super) async fn read_state(
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

#[cfg(test)]
mod tests {
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
                concat!(
                    "hello.service restarted 2 times since the deploy (NRestarts 0 -> 2); ",
                    "its main process exited with status 3"
                )
                .into()
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
            Verdict::Fatal(
                concat!(
                    "hello.service is failed (exit-code: main process exited with status 3) ",
                    "after it restarted 5 times since the deploy (NRestarts 0 -> 5)"
                )
                .into()
            )
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
            Verdict::Fatal(
                concat!(
                    "hello.service went down after the deploy and systemd is restarting it ",
                    "(activating (auto-restart)): its main process exited with status 3 ",
                    "(result: exit-code)"
                )
                .into()
            )
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
            Verdict::Fatal(
                concat!(
                    "hello.service is inactive (dead) and systemd will not restart it: ",
                    "its main process exited with status 0"
                )
                .into()
            )
        );
        let s = with(RUNNING, &[("SubState", "exited"), ("ExecMainCode", "1")]);
        assert!(matches!(
            judge(&s, &base(), "hello"),
            Verdict::Fatal(r) if r.contains("active (exited) but nothing runs")
        ));
        let s =
            state("Id=nope.service\nLoadState=not-found\nActiveState=inactive\nSubState=dead\n");
        assert_eq!(
            judge(&s, &Baseline::default(), "nope"),
            Verdict::Fatal(
                "nope.service is not loaded (not-found): systemd does not know this unit".into()
            )
        );
        let s = with(RUNNING, &[("LoadState", "masked")]);
        assert!(matches!(
            judge(&s, &base(), "hello"),
            Verdict::Fatal(r) if r == "hello.service is masked"
        ));
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
}
