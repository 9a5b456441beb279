//! A deploy's staging across the fleet: hosts that already run this artifact and config
//! are left alone; every other host gets the release staged before anything is switched
//! anywhere. One host failing to stage means no host switches.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::host::HostRun;
use crate::outcome::Outcome;
use crate::plan::Plan;
use crate::remote::release::State;

use super::fleet::{ALL, Cancel, each};

/// Hosts already on this artifact and config (a `live` release, or the host's own
/// verdict in the survey) are skipped, unless `--force`, and give their lock back.
pub async fn skip_unchanged(mut runs: Vec<HostRun>, plan: &Arc<Plan>) -> Vec<HostRun> {
    let Some(d) = &plan.deploy else { return runs };
    for run in runs.iter_mut() {
        let same = run
            .survey
            .current_release()
            .and_then(|r| r.info.as_ref())
            .is_some_and(|i| {
                // Only a release that passed its health check: one that a killed deploy
                // switched to but never checked (still `staged`) is deployed again.
                i.state == State::Live
                    && i.artifact_sha256 == d.sha256
                    && i.config_sha256.as_deref() == Some(d.config_sha256.as_str())
            })
            // The host's own verdict wins: it has already given the lock back.
            || run.survey.unchanged;
        if same && !d.force {
            let id = run.survey.current.clone().unwrap_or_default();
            let reason = format!(
                "already runs this artifact and config (release {id}); `--force` deploys it again"
            );
            run.end(plan, Outcome::Skipped { reason });
        }
    }
    let skipped = |r: &HostRun| matches!(r.outcome, Outcome::Skipped { .. });
    each(runs, plan, ALL, skipped, |mut run, plan| async move {
        run.unlock(&plan).await;
        run
    })
    .await
}

/// Upload and stage on every pending host, `parallel` at once. `Err` when any host
/// failed or the run was interrupted: then no host switches, the staged release is
/// marked failed everywhere, and every lock is given back.
pub async fn stage(
    runs: Vec<HostRun>,
    plan: &Arc<Plan>,
    parallel: usize,
    cancel: &Arc<Cancel>,
) -> Result<Vec<HostRun>, Vec<HostRun>> {
    let staging_cancel = cancel.clone();
    let runs = each(
        runs,
        plan,
        parallel,
        HostRun::is_pending,
        move |run, plan| stage_host(run, plan, staging_cancel.clone()),
    )
    .await;
    let staging_failed = runs.iter().any(|r| {
        matches!(
            r.outcome,
            Outcome::Failed { .. } | Outcome::Interrupted { .. }
        )
    });
    if !staging_failed && !cancel.is_set() {
        return Ok(runs);
    }
    Err(abandon(runs, plan, "staging").await)
}

/// The `once: true` hooks, on the first host still in the rollout (in the config's
/// order), after every host staged and before any switches. `Err` when they failed or
/// the run was interrupted meanwhile (an interrupt lets them finish): then, as when
/// staging fails, no host switches.
pub async fn once(
    mut runs: Vec<HostRun>,
    plan: &Arc<Plan>,
    cancel: &Arc<Cancel>,
) -> Result<Vec<HostRun>, Vec<HostRun>> {
    if plan.deploy.as_ref().is_none_or(|d| d.once.is_empty()) {
        return Ok(runs);
    }
    let Some(run) = runs.iter_mut().find(|r| r.is_pending()) else {
        return Ok(runs);
    };
    if run.run_once(plan).await && !cancel.is_set() {
        return Ok(runs);
    }
    Err(abandon(runs, plan, "once-only hooks").await)
}

/// After a failure (or an interrupt) before any switch: the staged release is marked
/// failed everywhere, hosts still pending end as failed at `step` (naming why), and
/// every lock is given back.
async fn abandon(runs: Vec<HostRun>, plan: &Arc<Plan>, step: &'static str) -> Vec<HostRun> {
    let why = runs
        .iter()
        .find_map(|r| match &r.outcome {
            Outcome::Failed { step, .. } => Some(format!("{} failed at {step}", r.target.name)),
            Outcome::Interrupted { .. } => Some("interrupted".to_owned()),
            _ => None,
        })
        .unwrap_or_else(|| "interrupted".into());
    let touched =
        |r: &HostRun| r.is_pending() || r.locked || matches!(r.outcome, Outcome::Failed { .. });
    each(runs, plan, ALL, touched, move |mut run, plan| {
        let why = why.clone();
        async move {
            if let Some(id) = run.goal.clone()
                && (run.is_pending() || matches!(run.outcome, Outcome::Failed { .. }))
            {
                run.set_state(&plan, &id, State::Failed).await;
            }
            if run.is_pending() {
                let reason = format!("not switched because {why}");
                let step = step.into();
                run.end(&plan, Outcome::Failed { step, reason });
            }
            run.unlock(&plan).await;
            run
        }
    })
    .await
}

/// One host's staging; a Ctrl-C abandons an upload still under way (the host discards
/// what it got), but lets a stage whose data is all there finish, hooks included.
async fn stage_host(mut run: HostRun, plan: Arc<Plan>, cancel: Arc<Cancel>) -> HostRun {
    let past_upload = run.past_upload.clone();
    let abandoned = {
        let ship = run.ship(&plan);
        tokio::pin!(ship);
        tokio::select! {
            _ = &mut ship => false,
            _ = cancel.wait() => {
                if past_upload.load(Ordering::Relaxed) {
                    ship.await;
                    false
                } else {
                    true
                }
            }
        }
    };
    if abandoned && run.is_pending() {
        run.abandoned(&plan);
    }
    run
}
