//! Driving the per-host pipeline across the fleet: connect everywhere, lock every host
//! before any host changes, stage in parallel, switch (bounded by `parallel`), and when a
//! host fails, put every host this run switched back on its old release.
//!
//! Decisions only: progress and the summary are printed by the caller from `HostRun`s.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::config::OnFailure;
use crate::exit::Exit;
use crate::pipeline::{HostRun, Outcome, Plan, each};
use crate::ssh::{Connector, Session, Target};

/// Connections opened ahead of the plan, one per target, in the targets' order.
pub type Early = tokio::task::JoinHandle<Vec<Result<Session, crate::ssh::Error>>>;

/// Start connecting to every target now, in the background. Connecting changes nothing on
/// a host, so a deploy does it while it checks its `--artifact`: the connections' round
/// trips hide behind the check (a one-host deploy of the benchmark's artifact: 1.09 s ->
/// 1.03 s). With many hosts both are CPU-bound and it gains little.
pub fn connect_early(runtime: &tokio::runtime::Handle, targets: &[Target]) -> Early {
    let connector = Connector::default();
    let tasks: Vec<_> = targets
        .iter()
        .map(|t| {
            let (connector, target) = (connector.clone(), t.clone());
            (
                t.name.clone(),
                runtime.spawn(async move { connector.connect(&target).await }),
            )
        })
        .collect();
    runtime.spawn(async move {
        let mut sessions = Vec::with_capacity(tasks.len());
        for (host, task) in tasks {
            sessions.push(match task.await {
                Ok(session) => session,
                Err(_) => Err(crate::ssh::Error::ConnectionLost {
                    host,
                    what: "connecting".into(),
                }),
            });
        }
        sessions
    })
}

/// Set by SIGINT/SIGTERM; phases check it at safe points.
pub struct Cancel(AtomicBool);

impl Cancel {
    pub fn new() -> Arc<Cancel> {
        Arc::new(Cancel(AtomicBool::new(false)))
    }
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
    pub fn set(&self) {
        self.0.store(true, Ordering::SeqCst)
    }
    /// Resolves once cancelled (polled; signals are rare).
    pub async fn wait(&self) {
        while !self.is_set() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Listen for Ctrl-C and SIGTERM for the rest of the run.
pub fn on_signals(cancel: Arc<Cancel>, printer: crate::printer::Printer) {
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return;
        };
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        printer.warn("interrupted: stopping at the next safe point (locks will be released)");
        cancel.set();
    });
}

/// Connect, lock (unless `read_only`) and survey every host. On any problem, locks taken
/// are released and the exit code says why: 4 unreachable, 3 lock held, 1 otherwise.
pub async fn prepare(
    mut runs: Vec<HostRun>,
    plan: &Arc<Plan>,
    read_only: bool,
    wait_lock: Option<Duration>,
    cancel: &Arc<Cancel>,
    early: Option<Early>,
) -> (Vec<HostRun>, Option<Exit>) {
    if let Some(early) = early
        && let Ok(sessions) = early.await
    {
        for (run, session) in runs.iter_mut().zip(sessions) {
            run.connected(session);
        }
    }
    let connector = Connector::default();
    runs = each(runs, plan, crate::pipeline::ALL, move |mut run, _| {
        let connector = connector.clone();
        async move {
            if run.session.is_none() && run.is_pending() {
                run.connect(&connector).await;
            }
            run
        }
    })
    .await;
    if runs.iter().any(|r| {
        matches!(
            r.outcome,
            Outcome::Unreachable { .. } | Outcome::Failed { .. }
        )
    }) {
        let exit = exit_for(&runs_outcomes(&runs));
        return (runs, Some(exit));
    }
    if !read_only {
        // Before any host is asked for its lock (a test aid; see faultpoint).
        crate::faultpoint::reached("lock", "");
    }
    runs = survey_all(runs, plan, read_only).await;
    if read_only {
        let exit = runs.iter().any(|r| !r.is_pending()).then_some(Exit::Failed);
        return (runs, exit);
    }
    let deadline = wait_lock.map(|w| Instant::now() + w);
    loop {
        let held: Vec<usize> = runs
            .iter()
            .enumerate()
            .filter(|(_, r)| r.waits_for_lock())
            .map(|(i, _)| i)
            .collect();
        if held.is_empty() || runs.iter().any(|r| !r.is_pending()) {
            break;
        }
        match deadline {
            Some(d) if Instant::now() < d && !cancel.is_set() => {
                if let Some(first) = held.first() {
                    plan.printer.info(&format!(
                        "{}: waiting for the lock held by {}",
                        runs[*first].name(),
                        runs[*first].lock_holder().unwrap_or_default()
                    ));
                }
                tokio::time::sleep(
                    Duration::from_secs(1).min(d.saturating_duration_since(Instant::now())),
                )
                .await;
                let mut waiting = Vec::new();
                let mut rest = Vec::new();
                for (i, r) in runs.into_iter().enumerate() {
                    if held.contains(&i) {
                        waiting.push(r)
                    } else {
                        rest.push(r)
                    }
                }
                let waiting = survey_all(waiting, plan, false).await;
                rest.extend(waiting);
                rest.sort_by_key(|r| r.target.name.clone());
                runs = rest;
            }
            _ => {
                // Hosts not asked (see `survey_all`) are held by whoever holds the first.
                let first = runs
                    .iter()
                    .find_map(|r| r.waits_for_lock().then(|| r.lock_holder()).flatten());
                for r in runs.iter_mut().filter(|r| r.waits_for_lock()) {
                    let holder = r
                        .lock_holder()
                        .or_else(|| first.clone())
                        .unwrap_or_else(|| "someone else".into());
                    r.end(Outcome::Locked { holder });
                }
                break;
            }
        }
    }
    if runs.iter().any(|r| !r.is_pending()) {
        let runs = release_all(runs, plan).await;
        let exit = if runs
            .iter()
            .any(|r| matches!(r.outcome, Outcome::Locked { .. }))
        {
            Exit::Locked
        } else {
            exit_for(&runs_outcomes(&runs))
        };
        return (runs, Some(exit));
    }
    (runs, None)
}

/// Survey every host, taking its lock unless `read_only`. Locks are taken on one host
/// first (the first by name), alone, then on all the others at once: two runs for the
/// same hosts started at the same moment cannot each win some of the hosts (and both give
/// up); the one that wins the first host wins them all. If the first host's lock is held,
/// the others are not asked. Costs one round trip more than asking every host at once.
async fn survey_all(mut runs: Vec<HostRun>, plan: &Arc<Plan>, read_only: bool) -> Vec<HostRun> {
    let first = (0..runs.len()).min_by(|&a, &b| runs[a].target.name.cmp(&runs[b].target.name));
    let others: Vec<usize> = match first {
        Some(i) if !read_only && runs.len() > 1 => {
            runs[i].survey(plan, false).await;
            // Its delta builds while the other hosts are surveyed.
            if let Some(d) = &plan.deploy {
                d.deltas.prefetch(runs[i].survey.base_manifest.as_deref());
            }
            // Unchanged hosts give their lock back at once (deploy's no-op check).
            if !runs[i].locked && !runs[i].survey.unchanged {
                return runs;
            }
            (0..runs.len()).filter(|&j| j != i).collect()
        }
        _ => (0..runs.len()).collect(),
    };
    let group = take(&mut runs, &others);
    let group = each(
        group,
        plan,
        crate::pipeline::ALL,
        move |mut run, plan| async move {
            run.survey(&plan, read_only).await;
            run
        },
    )
    .await;
    put_back(&mut runs, &others, group);
    runs
}

pub async fn release_all(runs: Vec<HostRun>, plan: &Arc<Plan>) -> Vec<HostRun> {
    each(
        runs,
        plan,
        crate::pipeline::ALL,
        |mut run, plan| async move {
            run.unlock(&plan).await;
            run
        },
    )
    .await
}

fn runs_outcomes(runs: &[HostRun]) -> Vec<Outcome> {
    runs.iter().map(|r| r.outcome.clone()).collect()
}

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
/// hosts and the exit code (SPEC: 5 everything touched is back; 6 mixed or unknown; 1
/// failures within `max_failures`).
pub async fn activate(
    mut runs: Vec<HostRun>,
    plan: &Arc<Plan>,
    policy: Policy,
    action: &'static str,
    cancel: &Arc<Cancel>,
) -> (Vec<HostRun>, Exit) {
    let pending: Vec<usize> = (0..runs.len()).filter(|&i| runs[i].is_pending()).collect();
    let plan_batches = batches(&pending, policy.canary, policy.parallel);
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
        let names: Vec<&str> = batch.iter().map(|&i| runs[i].name()).collect();
        plan.printer
            .info(&format!("{label}: switching {}", names.join(", ")));
        let group: Vec<HostRun> = take(&mut runs, batch);
        let group = each(
            group,
            plan,
            policy.parallel,
            move |mut run, plan| async move {
                let goal = run.goal.clone().unwrap_or_default();
                if let Err(reason) = run.activate(&plan, &goal).await {
                    run.revert(&plan, &reason, action).await;
                    run.unlock(&plan).await;
                }
                run
            },
        )
        .await;
        failures += group
            .iter()
            .filter(|r| {
                matches!(
                    r.outcome,
                    Outcome::RolledBack { .. } | Outcome::Broken { .. }
                )
            })
            .count();
        put_back(&mut runs, batch, group);
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
    let Some(why) = stop else {
        let runs = finish_all(runs, plan, policy.parallel, action).await;
        let exit = if failures > 0 {
            Exit::Failed
        } else {
            exit_for(&runs_outcomes(&runs))
        };
        if failures > 0 {
            let failed: Vec<&str> = runs
                .iter()
                .filter(|r| matches!(r.outcome, Outcome::RolledBack { .. }))
                .map(HostRun::name)
                .collect();
            plan.printer.warn(&format!(
                "{failures} host(s) failed within max_failures and were put back: {}",
                failed.join(", ")
            ));
        }
        return (runs, exit);
    };
    plan.printer.warn(&format!("the rollout stopped: {why}"));
    let halt = policy.on_failure == OnFailure::Halt && !cancel.is_set();
    let why_stopped = Arc::new(why);
    runs = each(runs, plan, policy.parallel, move |mut run, plan| {
        let why = why_stopped.clone();
        async move {
            if !run.is_pending() {
                return run;
            }
            if run.switched_to.is_none() {
                // A deploy's release staged here will never serve: mark it failed. (A
                // rollback's goal is an old good release: leave it alone.)
                if action == "deploy"
                    && let Some(goal) = run.goal.clone()
                {
                    run.set_state(&plan, &goal, crate::remote::release::State::Failed)
                        .await;
                    run.history(
                        &plan,
                        action,
                        Some(&goal),
                        "not-switched",
                        &format!("the rollout stopped ({why})"),
                    )
                    .await;
                }
                run.not_switched(&format!("the rollout stopped before this host ({why})"));
                run.unlock(&plan).await;
            } else if halt {
                run.finish(&plan, action).await;
            } else {
                run.revert(
                    &plan,
                    &format!("the rollout stopped ({why}); this host was healthy"),
                    action,
                )
                .await;
                run.unlock(&plan).await;
            }
            run
        }
    })
    .await;
    let outcomes = runs_outcomes(&runs);
    let exit = if outcomes.iter().any(|o| matches!(o, Outcome::Broken { .. }))
        || (halt && outcomes.iter().any(|o| matches!(o, Outcome::Done)))
    {
        Exit::Mixed
    } else if outcomes
        .iter()
        .any(|o| matches!(o, Outcome::RolledBack { .. }))
    {
        Exit::RolledBack
    } else {
        Exit::Failed
    };
    (runs, exit)
}

async fn finish_all(
    runs: Vec<HostRun>,
    plan: &Arc<Plan>,
    parallel: usize,
    action: &'static str,
) -> Vec<HostRun> {
    each(runs, plan, parallel, move |mut run, plan| async move {
        if run.is_pending() {
            run.finish(&plan, action).await;
        }
        run
    })
    .await
}

/// Move the runs at `indexes` out of `runs` (leaving placeholders that `put_back` fills).
fn take(runs: &mut [HostRun], indexes: &[usize]) -> Vec<HostRun> {
    indexes
        .iter()
        .map(|&i| std::mem::replace(&mut runs[i], HostRun::placeholder()))
        .collect()
}

fn put_back(runs: &mut [HostRun], indexes: &[usize], group: Vec<HostRun>) {
    for (&i, run) in indexes.iter().zip(group) {
        runs[i] = run;
    }
}

/// The exit code for a set of host outcomes, per SPEC.
pub fn exit_for(outcomes: &[Outcome]) -> Exit {
    let any = |f: fn(&Outcome) -> bool| outcomes.iter().any(f);
    if any(|o| matches!(o, Outcome::Broken { .. })) {
        Exit::Mixed
    } else if any(|o| matches!(o, Outcome::Unreachable { .. })) {
        Exit::Unreachable
    } else if any(|o| matches!(o, Outcome::Locked { .. })) {
        Exit::Locked
    } else if any(|o| matches!(o, Outcome::RolledBack { .. })) {
        Exit::RolledBack
    } else if any(|o| matches!(o, Outcome::Failed { .. } | Outcome::Interrupted { .. })) {
        Exit::Failed
    } else {
        Exit::Ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canary_first_then_batches_of_parallel() {
        let pending: Vec<usize> = (0..10).collect();
        assert_eq!(
            batches(&pending, 1, 3),
            vec![vec![0], vec![1, 2, 3], vec![4, 5, 6], vec![7, 8, 9]]
        );
        assert_eq!(
            batches(&pending, 0, 4),
            vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7], vec![8, 9]]
        );
        assert_eq!(batches(&pending[..2], 5, 3), vec![vec![0, 1]]);
        assert_eq!(batches(&[], 1, 3), Vec::<Vec<usize>>::new());
    }

    #[test]
    fn exit_codes_follow_the_spec() {
        let rolled = Outcome::RolledBack { reason: "x".into() };
        let broken = Outcome::Broken { reason: "x".into() };
        assert_eq!(
            exit_for(&[
                Outcome::Done,
                Outcome::Skipped {
                    reason: "same".into()
                }
            ]),
            Exit::Ok
        );
        assert_eq!(exit_for(&[Outcome::Done, rolled.clone()]), Exit::RolledBack);
        assert_eq!(exit_for(&[rolled, broken]), Exit::Mixed);
        assert_eq!(
            exit_for(&[Outcome::Locked { holder: "h".into() }, Outcome::Pending]),
            Exit::Locked
        );
        assert_eq!(
            exit_for(&[Outcome::Unreachable { reason: "r".into() }]),
            Exit::Unreachable
        );
        assert_eq!(
            exit_for(&[Outcome::Failed {
                step: "s".into(),
                reason: "r".into()
            }]),
            Exit::Failed
        );
    }
}
