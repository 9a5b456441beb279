//! One host's session of a deploy, a rollback or a status: its one connection, what its
//! survey found, where it stands. A phase per file, in the order a deploy runs them:
//!
//! - [`survey`]: connect, take the lock, learn what the host has (`current`, releases,
//!   the cached artifact);
//! - [`ship`]: send what the host lacks (nothing, a delta, or the whole artifact) and
//!   stage the release;
//! - [`activate`]: switch `current`, restart, health-check;
//! - [`revert`]: put the host back on the release it ran before, record release states;
//! - [`finish`]: once the whole rollout is healthy, renew and confirm the host's guard
//!   (see `remote::guard`), then hooks, cleanup, history and unlock in one round trip.
//!
//! Each phase is one script over the [`Remote`] (the seam to the wire); phases record the
//! host's state and report [`crate::event::Event`]s; fleet policy is the rollout's.

pub mod activate;
pub mod finish;
pub mod remote;
pub mod revert;
pub mod ship;
pub mod slots;
pub mod survey;

#[cfg(test)]
pub mod fake;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::io::AsyncRead;

use crate::event::Event;
use crate::outcome::{Outcome, Transfer};
use crate::plan::Plan;
use crate::remote::markers;
use crate::remote::survey::Survey;
use crate::ssh::Target;

pub use remote::{Dialer, Op, Remote, Upload};

pub struct HostRun {
    pub target: Target,
    /// The host's name in the config (`target.name` is `host/role` with roles).
    pub host: String,
    /// With roles: the plan of this run's role (its directory, service, hooks); the
    /// fleet's phases hand it to the host instead of the run's plan.
    pub plan: Option<Arc<Plan>>,
    pub remote: Option<Arc<dyn Remote>>,
    pub survey: Survey,
    pub locked: bool,
    /// `current` before this run switched it.
    pub previous: Option<String>,
    /// The release this run switched to, if it switched.
    pub switched_to: Option<String>,
    pub outcome: Outcome,
    pub started: Instant,
    pub finished: Option<Duration>,
    /// Bytes uploaded to this host.
    pub uploaded: u64,
    /// How the release got there (`None`: not shipped).
    pub transfer: Option<Transfer>,
    /// How long getting the artifact there and staging it took.
    pub transfer_took: Option<Duration>,
    /// Files taken from the live release (delta deploys).
    pub reused: usize,
    /// Set once everything to upload has been sent: from then on an interrupted stage is
    /// left to finish (its hooks run to the end), since nothing is left to abandon.
    pub past_upload: Arc<AtomicBool>,
    pub warnings: Vec<String>,
    /// Last lines of the service's journal, when it failed its health check.
    pub journal: Option<String>,
    /// The release this run stages and switches the host to.
    pub goal: Option<String>,
    /// Why this run could not renew or confirm the host's guard, when it could not.
    pub unconfirmed: Option<String>,
    /// With `proxy:`: what the survey found of the slots and HAProxy.
    pub slots: Option<crate::remote::proxy::Found>,
    /// With `proxy:`: the slot that was live before this run (if any) and the one it
    /// started, once it started one.
    pub slot_move: Option<(Option<u16>, u16)>,
}

/// What output, JSON and `status` call host `host`'s run in role `role`.
pub fn role_run(host: &str, role: &str) -> String {
    format!("{host}/{role}")
}

/// A failed script: the step it was at (its last `@@step`) and why.
pub type Failed = (String, String);

impl HostRun {
    pub fn new(target: Target) -> HostRun {
        HostRun {
            host: target.name.clone(),
            target,
            plan: None,
            remote: None,
            survey: Survey::default(),
            locked: false,
            previous: None,
            switched_to: None,
            outcome: Outcome::Pending,
            started: Instant::now(),
            finished: None,
            uploaded: 0,
            transfer: None,
            reused: 0,
            past_upload: Default::default(),
            warnings: Vec::new(),
            journal: None,
            goal: None,
            unconfirmed: None,
            slots: None,
            slot_move: None,
            transfer_took: None,
        }
    }

    /// The run of `target` in role `role`, with the role's plan: named [`role_run`].
    pub fn for_role(mut target: Target, role: &str, plan: Arc<Plan>) -> HostRun {
        let host = std::mem::take(&mut target.name);
        target.name = role_run(&host, role);
        HostRun {
            host,
            plan: Some(plan),
            ..HostRun::new(target)
        }
    }

    /// The plan this host works to: its role's, or the run's.
    pub fn plan_or(&self, plan: &Arc<Plan>) -> Arc<Plan> {
        self.plan.clone().unwrap_or_else(|| plan.clone())
    }

    pub fn name(&self) -> &str {
        &self.target.name
    }

    pub fn is_pending(&self) -> bool {
        self.outcome == Outcome::Pending
    }

    pub fn not_switched(&mut self, plan: &Plan, reason: &str) {
        self.end(
            plan,
            Outcome::NotSwitched {
                reason: reason.to_owned(),
            },
        );
    }

    fn say(&self, plan: &Plan, text: &str) {
        plan.events.step(&self.target.name, text);
    }

    fn warn(&self, plan: &Plan, text: &str) {
        plan.events.warning(&self.target.name, text);
    }

    /// Record where this host ended up (once), and when, and tell the listeners.
    pub fn end(&mut self, plan: &Plan, outcome: Outcome) {
        self.outcome = outcome;
        self.finished = Some(self.started.elapsed());
        plan.events.send(Event::Finished {
            host: self.target.name.clone(),
            outcome: self.outcome.clone(),
        });
    }

    fn fail(&mut self, plan: &Plan, step: &str, reason: impl Into<String>) {
        self.end(
            plan,
            Outcome::Failed {
                step: step.to_owned(),
                reason: reason.into(),
            },
        );
    }

    /// Run a script in deploy_to, reporting non-protocol lines as the host's output.
    /// Returns stdout, or the failure as (step, reason).
    async fn run(&self, plan: &Plan, op: Op, script: &str) -> Result<String, Failed> {
        self.run_with(plan, op, script, None::<(&[u8], u64)>)
            .await
            .map(|(out, _)| out)
    }

    /// `run`, with `data` (and its size) on the script's stdin; then also says how many
    /// bytes went and whether all of them did, and reports them going.
    async fn run_with<R: AsyncRead + Unpin + Send>(
        &self,
        plan: &Plan,
        op: Op,
        script: &str,
        data: Option<(R, u64)>,
    ) -> Result<(String, Option<(u64, bool)>), Failed> {
        let Some(remote) = &self.remote else {
            return Err(("connect".into(), "not connected".into()));
        };
        let events = plan.events.clone();
        let name = self.target.name.clone();
        let mut step = String::from("prepare");
        let full = format!(
            "{}{script}",
            crate::remote::enter(&plan.deploy_to, true)
                .map_err(|e| ("prepare".to_owned(), e.to_string()))?
        );
        let mut on_line = |line: &str| {
            if let Some(s) = markers::step(line) {
                step = s.to_owned();
                crate::faultpoint::reached(s, &name);
            } else if !markers::is_protocol(line) {
                events.send(Event::Output {
                    host: name.clone(),
                    line: line.to_owned(),
                });
            }
        };
        let past_upload = self.past_upload.clone();
        let upload = match data {
            None => {
                past_upload.store(true, Ordering::Relaxed);
                None
            }
            Some((reader, total)) => {
                let (events, host) = (plan.events.clone(), self.target.name.clone());
                Some(Upload {
                    data: Box::new(reader),
                    total,
                    progress: Box::new(move |sent: u64| {
                        events.send(Event::Upload {
                            host: host.clone(),
                            sent,
                            total,
                        });
                        if sent >= total {
                            past_upload.store(true, Ordering::Relaxed);
                        }
                    }),
                })
            }
        };
        let result = remote.run(op, &full, upload, &mut on_line).await;
        match result {
            Ok(ran) if ran.out.success() => Ok((ran.out.stdout, ran.sent)),
            Ok(ran) => {
                let out = ran.out;
                let how = match (&out.status, &out.signal) {
                    (Some(code), _) => format!("exit status {code}"),
                    (None, Some(sig)) => format!("signal {sig}"),
                    _ => "no exit status".into(),
                };
                let tail = out.stderr_tail.trim();
                Err((
                    step,
                    if tail.is_empty() {
                        format!("failed with {how}")
                    } else {
                        format!("failed with {how}: {tail}")
                    },
                ))
            }
            Err(e) => Err((step, e.to_string())),
        }
    }
}
