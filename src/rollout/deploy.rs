//! A whole deploy across the fleet, from connecting to the last unlock: prepare (connect,
//! lock, survey), choose the release id, skip hosts already on this artifact, stage
//! everywhere, run the once-only hooks on one host, then switch batch by batch. The
//! command wraps this with the artifact, the signals and the summary; the tests drive it
//! against fake hosts.

use std::sync::Arc;
use std::time::Duration;

use crate::exit::{self, Ending, Exit};
use crate::host::{Dialer, HostRun};
use crate::plan::Plan;
use crate::remote::layout;

use super::fleet::Cancel;
use super::prepare::{Early, prepare};
use super::{Policy, activate, arch, stage};

/// How a deploy runs, beyond the fleet policy.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Survey only (no lock taken), for `--dry-run`.
    pub dry_run: bool,
    pub wait_lock: Option<Duration>,
}

/// The deploy; returns the hosts, the exit code and the release id it used.
pub async fn deploy(
    runs: Vec<HostRun>,
    plan: &Arc<Plan>,
    dialer: Arc<dyn Dialer>,
    early: Option<Early>,
    opts: Options,
    policy: Policy,
    cancel: &Arc<Cancel>,
) -> (Vec<HostRun>, Exit, String) {
    let (mut runs, stop) = prepare(
        runs,
        plan,
        dialer,
        opts.dry_run,
        opts.wait_lock,
        cancel,
        early,
    )
    .await;
    let release_id = free_release_id(plan, &runs);
    if let Some(exit) = stop {
        return (runs, exit, release_id);
    }
    for run in runs.iter_mut() {
        run.goal = Some(release_id.clone());
    }
    runs = stage::skip_unchanged(runs, plan).await;
    // Nothing is uploaded anywhere when a host cannot run the artifact.
    runs = match arch::refuse_unfit(runs, plan).await {
        Ok(runs) => runs,
        Err(runs) => {
            let exit = exit::for_hosts(runs.iter().map(|r| &r.outcome), Ending::Early);
            return (runs, exit, release_id);
        }
    };
    if opts.dry_run {
        return (runs, Exit::Ok, release_id);
    }
    if !runs.iter().any(HostRun::is_pending) {
        plan.events
            .note("every host already runs this artifact: nothing to do");
        return (runs, Exit::Ok, release_id);
    }
    // Staging: upload and unpack everywhere before anything is switched anywhere.
    let staged = match stage::stage(runs, plan, policy.parallel, cancel).await {
        Ok(runs) => stage::once(runs, plan, cancel).await,
        Err(runs) => Err(runs),
    };
    let (runs, exit) = match staged {
        Ok(runs) => activate(runs, plan, policy, cancel).await,
        Err(runs) => {
            let exit = exit::for_hosts(runs.iter().map(|r| &r.outcome), Ending::Early);
            (runs, exit)
        }
    };
    (runs, exit, release_id)
}

/// A release id is the UTC second plus the artifact's sha256: a forced redeploy of the
/// same artifact in the same second as the last deploy would name the live release.
/// Take the next second no host has a release of.
fn free_release_id(plan: &Plan, runs: &[HostRun]) -> String {
    let taken = |id: &str| {
        runs.iter()
            .any(|r| r.survey.releases.iter().any(|f| f.id == id))
    };
    let sha = plan
        .deploy
        .as_ref()
        .map(|d| d.sha256.as_str())
        .unwrap_or_default();
    let started = plan.owner.started_at;
    let first = layout::release_id(started, sha);
    if !taken(&first) {
        return first;
    }
    let id = (1..)
        .map(|k| layout::release_id(started + k, sha))
        .find(|id| !taken(id))
        .unwrap_or_default();
    plan.events.note(format!(
        "release {first} already exists on a host (a deploy of the same artifact in the same \
         second): this one is {id}"
    ));
    id
}
