//! Before anything changes anywhere: connect to every host, lock every host, survey
//! every host. On any problem the locks taken are given back and the exit code says why.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::exit::{self, Ending, Exit};
use crate::host::{Dialer, HostRun, Remote};
use crate::outcome::Outcome;
use crate::plan::Plan;
use crate::ssh::{self, Connector, Target};

use super::fleet::{ALL, Cancel, each};

/// Connections opened ahead of the plan, one per target, by the target's name (the
/// host's name in the config).
pub type Early = tokio::task::JoinHandle<Vec<(String, Result<Box<dyn Remote>, ssh::Error>)>>;

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
                runtime.spawn(async move { connector.dial(&target).await }),
            )
        })
        .collect();
    runtime.spawn(async move {
        let mut sessions = Vec::with_capacity(tasks.len());
        for (host, task) in tasks {
            let session = match task.await {
                Ok(session) => session,
                Err(_) => Err(ssh::Error::ConnectionLost {
                    host: host.clone(),
                    what: "connecting".into(),
                }),
            };
            sessions.push((host, session));
        }
        sessions
    })
}

/// Connect to every host still in the run that has no connection yet, all at once (the
/// connector bounds how many handshakes are in flight). One connection per host: with
/// roles, a host's runs in its other roles share its first run's.
pub async fn connect_all(
    runs: Vec<HostRun>,
    plan: &Arc<Plan>,
    dialer: Arc<dyn Dialer>,
) -> Vec<HostRun> {
    let mut firsts = HashSet::new();
    let dials: HashSet<String> = runs
        .iter()
        .filter(|r| firsts.insert(r.host.clone()))
        .filter(|r| r.remote.is_none() && r.is_pending())
        .map(|r| r.name().to_owned())
        .collect();
    let mut runs = each(
        runs,
        plan,
        ALL,
        |r| dials.contains(r.name()),
        move |mut run, plan| {
            let dialer = dialer.clone();
            async move {
                run.connect(&plan, &*dialer).await;
                run
            }
        },
    )
    .await;
    share_connections(&mut runs, plan);
    runs
}

/// The end of a command: every run gives its connection up, and each connection says
/// goodbye to its host (all at once; each waits at most `ssh::GOODBYE_WAIT` for its
/// goodbye to go out). Without it the process would just exit, and every host (and
/// bastion) would log a reset connection.
pub async fn hang_up(runs: &mut [HostRun]) {
    hang_up_all(runs.iter_mut().filter_map(|r| r.remote.take())).await;
}

/// [`hang_up`] for connections collected elsewhere. A connection given more than once (a
/// host's runs in several roles share one) is closed once: by its last holder.
pub async fn hang_up_all(remotes: impl IntoIterator<Item = Arc<dyn Remote>>) {
    let mut set = tokio::task::JoinSet::new();
    for remote in remotes {
        set.spawn(remote.hang_up());
    }
    while set.join_next().await.is_some() {}
}

/// A host's runs after its first (its other roles) take the first one's connection, or
/// its failure to connect.
fn share_connections(runs: &mut [HostRun], plan: &Plan) {
    let mut first: HashMap<String, (Option<Arc<dyn Remote>>, Outcome)> = HashMap::new();
    for run in runs.iter_mut() {
        match first.get(&run.host) {
            None => {
                first.insert(run.host.clone(), (run.remote.clone(), run.outcome.clone()));
            }
            Some((remote, outcome)) if run.remote.is_none() && run.is_pending() => {
                match (remote, outcome) {
                    (Some(remote), _) => run.remote = Some(remote.clone()),
                    (None, Outcome::Pending) => {}
                    (None, outcome) => run.end(plan, outcome.clone()),
                }
            }
            Some(_) => {}
        }
    }
}

/// Connect, lock (unless `read_only`) and survey every host. On any problem, locks taken
/// are released and the exit code says why: 4 unreachable, 3 lock held, 1 otherwise.
pub async fn prepare(
    mut runs: Vec<HostRun>,
    plan: &Arc<Plan>,
    dialer: Arc<dyn Dialer>,
    read_only: bool,
    wait_lock: Option<Duration>,
    cancel: &Arc<Cancel>,
    early: Option<Early>,
) -> (Vec<HostRun>, Option<Exit>) {
    if let Some(early) = early
        && let Ok(sessions) = early.await
    {
        let mut sessions: HashMap<String, _> = sessions.into_iter().collect();
        for run in runs.iter_mut() {
            if let Some(session) = sessions.remove(&run.host) {
                run.connected(plan, session);
            }
        }
    }
    runs = connect_all(runs, plan, dialer).await;
    if runs.iter().any(|r| {
        matches!(
            r.outcome,
            Outcome::Unreachable { .. } | Outcome::Failed { .. }
        )
    }) {
        let exit = exit::for_hosts(runs.iter().map(|r| &r.outcome), Ending::Early);
        return (runs, Some(exit));
    }
    if !read_only {
        // Before any host is asked for its lock (a test aid; see faultpoint).
        crate::faultpoint::reached("lock", "");
    }
    runs = survey_all(runs, plan, read_only).await;
    if read_only {
        let exit = exit::for_hosts(runs.iter().map(|r| &r.outcome), Ending::Early);
        return (runs, (exit != Exit::Ok).then_some(exit));
    }
    let deadline = wait_lock.map(|w| Instant::now() + w);
    loop {
        if !runs.iter().any(HostRun::waits_for_lock) || runs.iter().any(|r| !r.is_pending()) {
            break;
        }
        match deadline {
            Some(d) if Instant::now() < d && !cancel.is_set() => {
                if let Some(first) = runs.iter().find(|r| r.waits_for_lock()) {
                    plan.events.note(format!(
                        "{}: waiting for the lock held by {}",
                        first.name(),
                        first.lock_holder().unwrap_or_default()
                    ));
                }
                tokio::time::sleep(
                    Duration::from_secs(1).min(d.saturating_duration_since(Instant::now())),
                )
                .await;
                runs = each(
                    runs,
                    plan,
                    ALL,
                    HostRun::waits_for_lock,
                    |mut run, plan| async move {
                        run.survey(&plan, false).await;
                        run
                    },
                )
                .await;
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
                    r.end(plan, Outcome::Locked { holder });
                }
                break;
            }
        }
    }
    if runs.iter().any(|r| !r.is_pending()) {
        let runs = release_all(runs, plan).await;
        let exit = exit::for_hosts(runs.iter().map(|r| &r.outcome), Ending::Early);
        return (runs, Some(exit));
    }
    (runs, None)
}

/// Survey every host, taking its lock unless `read_only`. Locks are taken on one host
/// first (the first by name), alone, then on all the others at once: two runs for the
/// same hosts started at the same moment cannot each win some of the hosts (and both give
/// up); the one that wins the first host wins them all. If the first host's lock is held,
/// the others are not asked. Costs one round trip more than asking every host at once.
async fn survey_all(runs: Vec<HostRun>, plan: &Arc<Plan>, read_only: bool) -> Vec<HostRun> {
    let first = runs.iter().map(|r| r.target.name.clone()).min();
    let mut runs = runs;
    let mut skip: Option<String> = None;
    if let Some(first) = first.filter(|_| !read_only && runs.len() > 1) {
        let is_first = |r: &HostRun| r.target.name == first;
        runs = each(runs, plan, ALL, is_first, |mut run, plan| async move {
            run.survey(&plan, false).await;
            // Its delta builds while the other hosts are surveyed.
            if let Some(d) = &plan.deploy {
                d.deltas.prefetch(run.survey.base_manifest.as_deref());
            }
            run
        })
        .await;
        let Some(run) = runs.iter().find(|r| r.target.name == first) else {
            return runs;
        };
        // Unchanged hosts give their lock back at once (deploy's no-op check).
        if !run.locked && !run.survey.unchanged {
            return runs;
        }
        skip = Some(first);
    }
    let others = move |r: &HostRun| Some(&r.target.name) != skip.as_ref();
    each(runs, plan, ALL, others, move |mut run, plan| async move {
        run.survey(&plan, read_only).await;
        run
    })
    .await
}

/// Every host gives back the lock this run holds there.
pub async fn release_all(runs: Vec<HostRun>, plan: &Arc<Plan>) -> Vec<HostRun> {
    each(
        runs,
        plan,
        ALL,
        |r| r.locked,
        |mut run, plan| async move {
            run.unlock(&plan).await;
            run
        },
    )
    .await
}
