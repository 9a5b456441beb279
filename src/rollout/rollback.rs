//! A whole rollback across the fleet: prepare (connect, lock, survey), choose each
//! host's target (the newest good release before its current one, or `--to`), then
//! switch every host back at once (bounded by `parallel`; no canary). Nothing is
//! switched anywhere when any host has nothing to go back to.

use std::sync::Arc;
use std::time::Duration;

use crate::exit::{self, Ending, Exit};
use crate::host::{Dialer, HostRun};
use crate::outcome::Outcome;
use crate::plan::Plan;
use crate::remote::release::State;

use super::fleet::{ALL, Cancel, each};
use super::prepare::{prepare, release_all};
use super::{Policy, activate};

/// How a rollback runs.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The release to go back to (`--to`); else each host's newest good one before its
    /// current one.
    pub to: Option<String>,
    /// Survey only (no lock taken), for `--dry-run`.
    pub dry_run: bool,
    pub wait_lock: Option<Duration>,
}

/// The rollback; returns the hosts, the exit code, and whether every host was surveyed.
/// With `dry_run`, nothing changes and each host's `goal` says where it would go.
pub async fn rollback(
    runs: Vec<HostRun>,
    plan: &Arc<Plan>,
    dialer: Arc<dyn Dialer>,
    opts: &Options,
    policy: Policy,
    cancel: &Arc<Cancel>,
) -> (Vec<HostRun>, Exit, bool) {
    let (wait, dry) = (opts.wait_lock, opts.dry_run);
    let (mut runs, stop) = prepare(runs, plan, dialer, dry, wait, cancel, None).await;
    if let Some(exit) = stop {
        return (runs, exit, false);
    }
    for run in runs.iter_mut() {
        match pick(run, opts.to.as_deref()) {
            Ok(Some(id)) => run.goal = Some(id),
            Ok(None) => {
                let id = run.survey.current.clone().unwrap_or_default();
                let reason = format!("already on release {id}");
                run.end(plan, Outcome::Skipped { reason });
            }
            Err(reason) => {
                let step = "rollback".into();
                run.end(plan, Outcome::Failed { step, reason });
            }
        }
    }
    if opts.dry_run {
        let exit = exit::for_hosts(runs.iter().map(|r| &r.outcome), Ending::Early);
        return (runs, exit, true);
    }
    let mut runs = match super::arch::refuse_unready_proxy(runs, plan).await {
        Ok(runs) => runs,
        Err(runs) => {
            let exit = exit::for_hosts(runs.iter().map(|r| &r.outcome), Ending::Early);
            return (runs, exit, true);
        }
    };
    if runs
        .iter()
        .any(|r| matches!(r.outcome, Outcome::Failed { .. }))
    {
        // A host with nothing to roll back to: change nothing anywhere.
        let runs = release_all(runs, plan).await;
        let exit = exit::for_hosts(runs.iter().map(|r| &r.outcome), Ending::Early);
        return (runs, exit, true);
    }
    // Hosts already on the release `--to` names (e.g. a rerun after a rollback that was
    // killed once it had switched) are done: they give their lock back.
    let skipped = |r: &HostRun| matches!(r.outcome, Outcome::Skipped { .. });
    runs = each(runs, plan, ALL, skipped, |mut run, plan| async move {
        run.unlock(&plan).await;
        run
    })
    .await;
    if !runs.iter().any(HostRun::is_pending) {
        plan.events
            .note("every host is already on that release: nothing to do");
        return (runs, Exit::Ok, true);
    }
    let (runs, exit) = activate(runs, plan, policy, cancel).await;
    (runs, exit, true)
}

/// The release this host goes back to (`None`: `--to` names the current release, which is
/// live: nothing to do), or why there is none.
fn pick(run: &HostRun, to: Option<&str>) -> Result<Option<String>, String> {
    let current = run
        .survey
        .current
        .clone()
        .ok_or_else(|| "no current release on this host: nothing to roll back".to_owned())?;
    match to {
        Some(id) => {
            let found = run
                .survey
                .releases
                .iter()
                .find(|r| r.id == id)
                .ok_or_else(|| format!("release {id} is not on this host"))?;
            if id == current {
                // Already there (a rerun): done, if that release is a good one.
                return match found.state() {
                    Some(State::Live) => Ok(None),
                    _ => Err(format!("release {id} is already current")),
                };
            }
            match found.state() {
                Some(State::Failed) => Err(format!(
                    "release {id} failed when it was deployed; it is not a rollback target"
                )),
                Some(State::Staged) | None => Err(format!(
                    "release {id} was never completed; it is not a rollback target"
                )),
                Some(State::Live) | Some(State::RolledBack) => Ok(Some(id.to_owned())),
            }
        }
        None => run
            .survey
            .rollback_target()
            .map(|r| Some(r.id.clone()))
            .ok_or_else(|| format!("nothing to roll back to: no good release before {current}")),
    }
}
