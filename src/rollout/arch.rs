//! Before anything is uploaded: every host must be able to run the artifact's native
//! executables. A host of another architecture (or an executable that is not a Linux
//! one) ends `failed` at `architecture`; then no host is staged, and every lock is
//! given back.

use std::sync::Arc;

use crate::artifact::native;
use crate::host::HostRun;
use crate::outcome::Outcome;
use crate::plan::Plan;

use super::fleet::{ALL, each};

pub const STEP: &str = "architecture";

/// Both refusals below, the architecture first.
pub async fn refuse_unfit(
    runs: Vec<HostRun>,
    plan: &Arc<Plan>,
) -> Result<Vec<HostRun>, Vec<HostRun>> {
    let runs = refuse_foreign(runs, plan).await?;
    refuse_unready_proxy(runs, plan).await
}

/// `Err` when a pending host cannot run one of the artifact's native executables: it
/// ends `failed` with the file named, every other pending host ends `failed` too (not
/// staged), and every lock is given back. A host that did not report its architecture
/// is not judged.
pub async fn refuse_foreign(
    runs: Vec<HostRun>,
    plan: &Arc<Plan>,
) -> Result<Vec<HostRun>, Vec<HostRun>> {
    let Some(d) = &plan.deploy else {
        return Ok(runs);
    };
    let natives = &d.artifact.natives;
    if natives.is_empty() {
        return Ok(runs);
    }
    refuse(runs, plan, STEP, "cannot run this artifact", |run| {
        let arch = run.survey.arch.as_deref()?;
        let foreign = natives.iter().find(|n| !n.machine.runs_on(arch))?;
        Some(native::refusal(foreign, arch))
    })
    .await
}

/// With `proxy:`, `Err` when a pending host cannot take slots (no HAProxy, its proxy
/// stopped, a port taken by another process): it ends `failed` at `proxy` saying what to
/// do, every other pending host ends `failed` too, nothing changed anywhere.
pub async fn refuse_unready_proxy(
    runs: Vec<HostRun>,
    plan: &Arc<Plan>,
) -> Result<Vec<HostRun>, Vec<HostRun>> {
    refuse(
        runs,
        plan,
        "proxy",
        "cannot take slots behind HAProxy",
        |run| {
            // With roles, each role has its own proxy (or none).
            let own = run.plan_or(plan);
            let problems = run.slots.as_ref()?.problems(&own.slots()?);
            (!problems.is_empty()).then(|| problems.join("; "))
        },
    )
    .await
}

/// Hosts for which `why` has a reason end `failed` at `step` with it; if any did, every
/// other pending host ends `failed` (`<hosts> <what>`) and every lock is given back.
async fn refuse(
    mut runs: Vec<HostRun>,
    plan: &Arc<Plan>,
    step: &str,
    what: &str,
    why: impl Fn(&HostRun) -> Option<String>,
) -> Result<Vec<HostRun>, Vec<HostRun>> {
    let mut refused = Vec::new();
    for run in runs.iter_mut().filter(|r| r.is_pending()) {
        if let Some(reason) = why(run) {
            refused.push(run.name().to_owned());
            run.end(plan, failed(step, reason));
        }
    }
    if refused.is_empty() {
        return Ok(runs);
    }
    let not = format!("nothing changed: {} {what}", refused.join(", "));
    for run in runs.iter_mut().filter(|r| r.is_pending()) {
        run.end(plan, failed(step, not.clone()));
    }
    let locked = |r: &HostRun| r.locked;
    Err(each(runs, plan, ALL, locked, |mut run, plan| async move {
        run.unlock(&plan).await;
        run
    })
    .await)
}

fn failed(step: &str, reason: String) -> Outcome {
    Outcome::Failed {
        step: step.into(),
        reason,
    }
}
