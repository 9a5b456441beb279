//! A deploy's staging across the fleet: hosts that already run this artifact and config
//! are left alone; every other host gets the release staged before anything is switched
//! anywhere. One host failing to stage means no host switches.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::host::HostRun;
use crate::outcome::Outcome;
use crate::plan::Plan;
use crate::redact::Text;
use crate::remote::release::State;

use super::fleet::{ALL, Cancel, each};

/// Hosts already on this artifact and config (a `live` release, or the host's own
/// verdict in the survey) are skipped, unless `--force`, and give their lock back.
pub async fn skip_unchanged(mut runs: Vec<HostRun>, plan: &Arc<Plan>) -> Vec<HostRun> {
    for run in runs.iter_mut() {
        // Each role's release has its own config digest.
        let own = run.plan_or(plan);
        let Some(d) = &own.deploy else { continue };
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

/// The `once: true` hooks, after every host staged and before any switches: each on the
/// first host still in the rollout whose plan has it ([`once_jobs`]). `Err` when one
/// failed or the run was interrupted meanwhile (an interrupt lets them finish): then, as
/// when staging fails, no host switches.
pub async fn once(
    mut runs: Vec<HostRun>,
    plan: &Arc<Plan>,
    cancel: &Arc<Cancel>,
) -> Result<Vec<HostRun>, Vec<HostRun>> {
    for (i, hooks) in once_jobs(&runs, plan) {
        let own = runs[i].plan_or(plan);
        if !runs[i].run_once(&own, &hooks).await || cancel.is_set() {
            return Err(abandon(runs, plan, "once-only hooks").await);
        }
    }
    Ok(runs)
}

/// Which host runs which `once: true` hooks: each hook on the first pending host whose
/// plan has it (in the config's order of hosts; with roles, the first host of the first
/// role that has it), the hooks in the file's order, those in a row on one host in one
/// go. Indexes into `runs`.
pub fn once_jobs(runs: &[HostRun], plan: &Arc<Plan>) -> Vec<(usize, Vec<Text>)> {
    let mut picked: Vec<((u64, u64), usize, Text)> = Vec::new();
    for (i, run) in runs.iter().enumerate().filter(|(_, r)| r.is_pending()) {
        let own = run.plan_or(plan);
        for h in own.deploy.iter().flat_map(|d| &d.once) {
            if !picked.iter().any(|(at, ..)| *at == h.at) {
                picked.push((h.at, i, h.run.clone()));
            }
        }
    }
    picked.sort_by_key(|(at, ..)| *at);
    let mut jobs: Vec<(usize, Vec<Text>)> = Vec::new();
    for (_, i, run) in picked {
        match jobs.last_mut() {
            Some((last, hooks)) if *last == i => hooks.push(run),
            _ => jobs.push((i, vec![run])),
        }
    }
    jobs
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
