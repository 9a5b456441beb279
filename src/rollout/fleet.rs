//! Working on many hosts at once: a task per host, bounded; and the cancel flag that
//! Ctrl-C and SIGTERM set.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::event::Events;
use crate::host::HostRun;
use crate::outcome::Outcome;
use crate::plan::Plan;

/// No bound beyond the connector's own limit on connection starts.
pub const ALL: usize = 1 << 16;

/// Run `phase` on each host `pick` selects, at most `limit` at once, each in its own task,
/// with the host's plan (its role's, with roles; else `plan`).
/// Every host comes back to its place, found by its name; the others are not touched. A
/// task that panics cannot hand its host back: the host is reported `broken` (its state
/// is unknown, and its lock may still be held), never silently lost.
pub async fn each<P, F, Fut>(
    runs: Vec<HostRun>,
    plan: &Arc<Plan>,
    limit: usize,
    pick: P,
    phase: F,
) -> Vec<HostRun>
where
    P: Fn(&HostRun) -> bool,
    F: Fn(HostRun, Arc<Plan>) -> Fut,
    Fut: Future<Output = HostRun> + Send + 'static,
{
    let semaphore = Arc::new(tokio::sync::Semaphore::new(limit.max(1)));
    let mut set = tokio::task::JoinSet::new();
    let mut tasks = HashMap::new();
    let mut order: Vec<Result<HostRun, crate::ssh::Target>> = Vec::with_capacity(runs.len());
    for run in runs {
        if !pick(&run) {
            order.push(Ok(run));
            continue;
        }
        order.push(Err(run.target.clone()));
        let name = run.target.name.clone();
        let own = run.plan_or(plan);
        let fut = phase(run, own);
        let semaphore = semaphore.clone();
        let handle = set.spawn(async move {
            let _permit = semaphore.acquire_owned().await;
            fut.await
        });
        tasks.insert(handle.id(), name);
    }
    let mut back: HashMap<String, HostRun> = HashMap::new();
    let mut lost: HashMap<String, String> = HashMap::new();
    while let Some(joined) = set.join_next_with_id().await {
        match joined {
            Ok((_, run)) => {
                back.insert(run.target.name.clone(), run);
            }
            Err(e) => {
                let id = e.id();
                let why = if e.is_panic() {
                    panic_text(e.into_panic())
                } else {
                    "cancelled".to_owned()
                };
                if let Some(name) = tasks.get(&id) {
                    lost.insert(name.clone(), why);
                }
            }
        }
    }
    order
        .into_iter()
        .map(|slot| match slot {
            Ok(run) => run,
            Err(target) => match back.remove(&target.name) {
                Some(run) => run,
                None => {
                    let why = lost.remove(&target.name).unwrap_or_default();
                    let mut run = HostRun::new(target);
                    run.end(
                        plan,
                        Outcome::Broken {
                            reason: format!(
                                "internal error: the task for this host panicked ({why}); its \
                                 state is unknown and its lock may still be held"
                            ),
                        },
                    );
                    run
                }
            },
        })
        .collect()
}

fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(payload) => match payload.downcast::<&'static str>() {
            Ok(s) => (*s).to_owned(),
            Err(_) => "no message".to_owned(),
        },
    }
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
pub fn on_signals(cancel: Arc<Cancel>, events: Events) {
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
        events.alert("interrupted: stopping at the next safe point (locks will be released)");
        cancel.set();
    });
}
