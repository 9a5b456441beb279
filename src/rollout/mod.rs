//! Fleet policy: which hosts switch when, and what happens to the others when one fails.
//! Connect, lock and survey every host before any host changes ([`prepare`]); stage
//! everywhere (the deploy command); then switch canary first and batches of `parallel`
//! after ([`activate`]). More than `max_failures` failed hosts stop the rollout, and
//! `on_failure` says whether the hosts already switched go back (`rollback`) or stay
//! (`halt`).
//!
//! Decisions only: no shell text (that is `remote/`), no formatting (the printer hears
//! the hosts' events), no per-host steps (that is `host/`).

pub mod arch;
pub mod deploy;
pub mod fleet;
pub mod prepare;
pub mod rollback;
pub mod stage;

#[cfg(test)]
mod harness;
#[cfg(test)]
mod proxy_tests;
#[cfg(test)]
mod role_tests;
#[cfg(test)]
mod simulation;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use crate::config::OnFailure;
use crate::exit::{self, Ending, Exit};
use crate::host::{HostRun, Op, Remote};
use crate::outcome::Outcome;
use crate::plan::{Kind, Plan, Switch};
use crate::remote::guard::Confirmed;
use crate::remote::release::State;

pub use fleet::{ALL, Cancel, each, on_signals};
pub use prepare::{Early, connect_all, connect_early, hang_up, hang_up_all, prepare, release_all};

/// How hosts are switched: `canary` hosts first, alone; then batches of `parallel`. More
/// than `max_failures` failed hosts stop the rollout, and `on_failure` says what happens
/// to the hosts this run already switched.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub parallel: usize,
    pub canary: usize,
    pub max_failures: usize,
    pub on_failure: OnFailure,
}

/// The batches, as indexes into `pending` order: the canary batch, then `parallel` each.
pub fn batches(pending: &[usize], canary: usize, parallel: usize) -> Vec<Vec<usize>> {
    let canary = canary.min(pending.len());
    let mut out: Vec<Vec<usize>> = Vec::new();
    if canary > 0 {
        out.push(pending[..canary].to_vec());
    }
    out.extend(
        pending[canary..]
            .chunks(parallel.max(1))
            .map(<[usize]>::to_vec),
    );
    out
}

/// Switch every pending host to its `goal` release and health-check it, batch by batch
/// (see `Policy`). An unhealthy host goes back to its old release at once. Returns the
/// hosts and the exit code ([`exit::for_hosts`]).
pub async fn activate(
    mut runs: Vec<HostRun>,
    plan: &Arc<Plan>,
    policy: Policy,
    cancel: &Arc<Cancel>,
) -> (Vec<HostRun>, Exit) {
    let pending: Vec<usize> = (0..runs.len()).filter(|&i| runs[i].is_pending()).collect();
    let plan_batches = batches(&pending, policy.canary, policy.parallel);
    // Until this function returns, every switched host's guard is renewed.
    let _heartbeat = heartbeat(plan, &runs);
    let mut failures = 0usize;
    let mut stop: Option<String> = None;
    for (n, batch) in plan_batches.iter().enumerate() {
        if cancel.is_set() {
            stop = Some("interrupted".into());
            break;
        }
        let label = if n == 0 && policy.canary > 0 {
            "canary".to_owned()
        } else {
            format!("batch {}", n + usize::from(policy.canary == 0))
        };
        let names: Vec<String> = batch.iter().map(|&i| runs[i].name().to_owned()).collect();
        plan.events
            .note(format!("{label}: switching {}", names.join(", ")));
        let in_batch: HashSet<String> = names.into_iter().collect();
        let is_in_batch = |r: &HostRun| in_batch.contains(r.name());
        runs = each(
            runs,
            plan,
            policy.parallel,
            is_in_batch,
            |mut run, plan| async move {
                let goal = run.goal.clone().unwrap_or_default();
                if let Err(reason) = run.activate(&plan, &goal, Switch::Forward).await {
                    run.revert(&plan, &reason).await;
                    run.unlock(&plan).await;
                }
                run
            },
        )
        .await;
        failures += runs
            .iter()
            .filter(|r| in_batch.contains(r.name()))
            .filter(|r| {
                matches!(
                    r.outcome,
                    Outcome::RolledBack { .. } | Outcome::Broken { .. }
                )
            })
            .count();
        if failures > policy.max_failures {
            stop = Some(format!(
                "{failures} host(s) failed, more than max_failures ({})",
                policy.max_failures
            ));
            break;
        }
    }
    if stop.is_none() && cancel.is_set() {
        // Interrupted during the last batch: its hosts go back like any batch's would.
        stop = Some("interrupted".into());
    }
    if stop.is_none() {
        // Every host is healthy. First every guard is renewed, which also says whether
        // it is still armed: a host whose guard fired went back by itself (this run lost
        // touch with it for longer than the timeout), and then the others go back too,
        // while their guards still cover them. A renewed guard cannot fire for a whole
        // timeout: then every switch is confirmed at once (one round trip per host, all
        // in parallel: the one window in which a vanishing deployer leaves some hosts
        // confirmed and others not).
        let switched: Vec<String> = runs
            .iter()
            .filter(|r| r.is_pending() && r.switched_to.is_some())
            .map(|r| r.name().to_owned())
            .collect();
        let left = |runs: &[HostRun]| -> Option<String> {
            runs.iter()
                .find(|r| switched.iter().any(|n| n == r.name()) && !r.is_pending())
                .map(|r| format!("{}: {}", r.name(), stopped_why(&r.outcome)))
                .or_else(|| {
                    let r = runs.iter().find(|r| r.unconfirmed.is_some())?;
                    Some(format!("{}: {}", r.name(), r.unconfirmed.as_deref()?))
                })
        };
        runs = renew_all(runs, plan).await;
        stop = left(&runs);
        if stop.is_none() {
            runs = confirm_all(runs, plan).await;
            stop = left(&runs);
        }
    }
    let Some(why) = stop else {
        let runs = each(
            runs,
            plan,
            policy.parallel,
            HostRun::is_pending,
            |mut run, plan| async move {
                run.finish(&plan).await;
                run
            },
        )
        .await;
        if failures > 0 {
            let failed: Vec<&str> = runs
                .iter()
                .filter(|r| matches!(r.outcome, Outcome::RolledBack { .. }))
                .map(HostRun::name)
                .collect();
            plan.events.alert(format!(
                "{failures} host(s) failed within max_failures and were put back: {}",
                failed.join(", ")
            ));
        }
        let exit = exit::for_hosts(runs.iter().map(|r| &r.outcome), Ending::Completed);
        return (runs, exit);
    };
    plan.events.alert(format!("the rollout stopped: {why}"));
    let halt = policy.on_failure == OnFailure::Halt && !cancel.is_set();
    let why = Arc::new(why);
    runs = each(
        runs,
        plan,
        policy.parallel,
        HostRun::is_pending,
        move |run, plan| stop_host(run, plan, why.clone(), halt),
    )
    .await;
    let exit = exit::for_hosts(runs.iter().map(|r| &r.outcome), Ending::Stopped);
    (runs, exit)
}

/// Renew every switched host's guard; a host whose guard is gone or that cannot be
/// asked leaves the run.
async fn renew_all(runs: Vec<HostRun>, plan: &Arc<Plan>) -> Vec<HostRun> {
    let switched = |r: &HostRun| r.is_pending() && r.switched_to.is_some();
    each(runs, plan, ALL, switched, |mut run, plan| async move {
        match run.renew(&plan).await {
            Ok(Confirmed::Yes | Confirmed::NoGuard) => {}
            Ok(Confirmed::Fired) => run.went_back_by_itself(&plan),
            // Still switched, and its guard still armed: the rollout stops, and this run
            // puts it back (or its guard does, if this run cannot reach it).
            Err(e) => run.unconfirmed = Some(format!("could not renew its guard: {e}")),
        }
        run
    })
    .await
}

fn stopped_why(o: &Outcome) -> &str {
    match o {
        Outcome::RolledBack { reason } | Outcome::Broken { reason } => reason,
        _ => "left the run",
    }
}

/// Confirm the switch on every host still in the run.
async fn confirm_all(runs: Vec<HostRun>, plan: &Arc<Plan>) -> Vec<HostRun> {
    let switched = |r: &HostRun| r.is_pending() && r.switched_to.is_some();
    each(runs, plan, ALL, switched, |mut run, plan| async move {
        match run.confirm(&plan).await {
            Ok(Confirmed::Fired) => run.went_back_by_itself(&plan),
            Ok(_) => {}
            Err(e) => run.unconfirmed = Some(format!("could not confirm the switch: {e}")),
        }
        run
    })
    .await
}

/// Renews the guard of every host of `runs` still in the run, every third of
/// `rollout.confirm_timeout`, until dropped: a long rollout (many batches, slow health
/// checks) never lets a guard fire while its deployer is alive and in touch.
struct Heartbeat(tokio::task::JoinHandle<()>);

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn heartbeat(plan: &Arc<Plan>, runs: &[HostRun]) -> Heartbeat {
    // Sent straight to the remote (not through a host's run): it enters the directory of
    // the host's plan (its role's, with roles) itself.
    let renew = |plan: &Plan| {
        crate::remote::enter(&plan.deploy_to, false)
            .and_then(|enter| Ok(enter + &plan.renew_script()?))
            .unwrap_or_default()
    };
    let remotes: Vec<(Arc<dyn Remote>, String)> = runs
        .iter()
        .filter(|r| r.is_pending())
        .filter_map(|r| Some((r.remote.clone()?, renew(&r.plan_or(plan)))))
        .collect();
    let every = (plan.confirm_timeout / 3).max(Duration::from_millis(500));
    Heartbeat(tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let mut set = tokio::task::JoinSet::new();
            for (remote, script) in &remotes {
                let (remote, script) = (remote.clone(), script.clone());
                set.spawn(async move {
                    // A host that does not answer: its guard fires, as it should.
                    let _ = remote.run(Op::Renew, &script, None, &mut |_| {}).await;
                });
            }
            while set.join_next().await.is_some() {}
        }
    }))
}

/// What a host still in the run does once the rollout stopped: one not switched yet
/// stays on its old release (a deploy's staged release is marked failed); one switched
/// stays there (`halt`) or goes back.
async fn stop_host(mut run: HostRun, plan: Arc<Plan>, why: Arc<String>, halt: bool) -> HostRun {
    if run.switched_to.is_none() {
        // A deploy's release staged here will never serve: mark it failed. (A rollback's
        // goal is an old good release: leave it alone.)
        if plan.kind == Kind::Deploy
            && let Some(goal) = run.goal.clone()
        {
            run.set_state(&plan, &goal, State::Failed).await;
            let reason = format!("the rollout stopped ({why})");
            run.history(&plan, Some(&goal), "not-switched", &reason)
                .await;
        }
        let reason = format!("the rollout stopped before this host ({why})");
        run.not_switched(&plan, &reason);
        run.unlock(&plan).await;
    } else if halt {
        // Kept on purpose: confirmed first, so its guard cannot take it back later.
        match run.confirm(&plan).await {
            Ok(Confirmed::Fired) => run.went_back_by_itself(&plan),
            Ok(_) => run.finish(&plan).await,
            Err(e) => {
                run.lost_before_confirm(&plan, &e);
                run.unlock(&plan).await;
            }
        }
    } else {
        let reason = format!("the rollout stopped ({why}); this host was healthy");
        run.revert(&plan, &reason).await;
        run.unlock(&plan).await;
    }
    run
}
