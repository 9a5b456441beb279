//! One attempt of the real checks, over SSH: unit state, HTTP and command at the same
//! time, each on its own channel.

use std::time::Duration;

use super::command::check_command;
use super::http_check::check_http;
use super::poll::{Probe, Step};
use super::spec::{Baseline, COMMAND_TIMEOUT, Spec};
use super::unit::{Verdict, judge, read_state};
use crate::config::ServiceManager;
use crate::ssh::Session;

/// The real checks, over SSH.
pub(super) struct SshProbe<'a> {
    pub(super) session: &'a Session,
    pub(super) spec: &'a Spec<'a>,
    pub(super) baseline: Baseline,
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
