//! Driving the per-host pipeline across the fleet: connect everywhere, lock every host
//! before any host changes, stage in parallel, switch (bounded by `parallel`), and when a
//! host fails, put every host this run switched back on its old release.
//!
//! Decisions only: progress and the summary are printed by the caller from `HostRun`s.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::exit::Exit;
use crate::pipeline::{HostRun, Outcome, Plan, each};
use crate::ssh::Connector;

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
) -> (Vec<HostRun>, Option<Exit>) {
    let connector = Connector::default();
    runs = each(runs, plan, crate::pipeline::ALL, move |mut run, _| {
        let connector = connector.clone();
        async move {
            run.connect(&connector).await;
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
    runs = each(
        runs,
        plan,
        crate::pipeline::ALL,
        move |mut run, plan| async move {
            run.survey(&plan, read_only).await;
            run
        },
    )
    .await;
    if read_only {
        let exit = runs.iter().any(|r| !r.is_pending()).then_some(Exit::Failed);
        return (runs, exit);
    }
    let deadline = wait_lock.map(|w| Instant::now() + w);
    loop {
        let held: Vec<usize> = runs
            .iter()
            .enumerate()
            .filter(|(_, r)| r.is_pending() && !r.locked)
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
                let waiting = each(
                    waiting,
                    plan,
                    crate::pipeline::ALL,
                    |mut run, plan| async move {
                        run.survey(&plan, false).await;
                        run
                    },
                )
                .await;
                rest.extend(waiting);
                rest.sort_by_key(|r| r.target.name.clone());
                runs = rest;
            }
            _ => {
                for r in runs.iter_mut().filter(|r| r.is_pending() && !r.locked) {
                    let holder = r.lock_holder().unwrap_or_else(|| "someone else".into());
                    r.outcome = Outcome::Locked { holder };
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

/// Switch every pending host to its target (bounded by `parallel`) and health-check it.
/// If any fails, every host this run switched goes back. `target` picks each host's
/// release. Returns the exit code.
pub async fn activate(
    runs: Vec<HostRun>,
    plan: &Arc<Plan>,
    parallel: usize,
    action: &'static str,
    cancel: &Arc<Cancel>,
    target: impl Fn(&HostRun) -> String,
) -> (Vec<HostRun>, Exit) {
    let targets: Vec<String> = runs.iter().map(&target).collect();
    let indexed: Vec<HostRun> = runs;
    let targets = Arc::new(targets);
    let names: Vec<String> = indexed.iter().map(|r| r.target.name.clone()).collect();
    let names = Arc::new(names);
    let cancel2 = cancel.clone();
    let mut runs = each(indexed, plan, parallel, move |mut run, plan| {
        let targets = targets.clone();
        let names = names.clone();
        let cancel = cancel2.clone();
        async move {
            if !run.is_pending() {
                return run;
            }
            if cancel.is_set() {
                run.outcome = Outcome::Interrupted {
                    state: format!(
                        "not switched: still on {}",
                        run.previous.clone().unwrap_or_else(|| "no release".into())
                    ),
                };
                return run;
            }
            let i = names
                .iter()
                .position(|n| n == &run.target.name)
                .unwrap_or(0);
            let id = targets[i].clone();
            if let Err(reason) = run.activate(&plan, &id).await {
                run.outcome = Outcome::Failed {
                    step: "health".into(),
                    reason,
                };
            }
            run
        }
    })
    .await;
    let failed = runs
        .iter()
        .any(|r| matches!(r.outcome, Outcome::Failed { .. }));
    if failed || cancel.is_set() {
        // Fleet policy for now: any failure puts back every host this run switched.
        let why_elsewhere = runs
            .iter()
            .find_map(|r| match &r.outcome {
                Outcome::Failed { .. } => {
                    Some(format!("{} failed its health check", r.target.name))
                }
                _ => None,
            })
            .unwrap_or_else(|| "interrupted".into());
        runs = each(runs, plan, parallel, move |mut run, plan| {
            let why_elsewhere = why_elsewhere.clone();
            async move {
                let why = match &run.outcome {
                    Outcome::Failed { reason, .. } => reason.clone(),
                    Outcome::Pending => why_elsewhere,
                    _ => return run,
                };
                if run.switched_to.is_some() {
                    run.revert(&plan, &why, action).await;
                } else {
                    run.outcome = Outcome::RolledBack { reason: why };
                }
                run.unlock(&plan).await;
                run
            }
        })
        .await;
        let exit = if cancel.is_set() && !failed {
            Exit::Failed
        } else {
            exit_for(&runs_outcomes(&runs))
        };
        return (runs, exit);
    }
    let runs = each(runs, plan, parallel, move |mut run, plan| async move {
        if run.is_pending() {
            run.finish(&plan, action).await;
        }
        run
    })
    .await;
    let exit = exit_for(&runs_outcomes(&runs));
    (runs, exit)
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
