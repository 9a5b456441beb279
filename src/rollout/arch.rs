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

/// `Err` when a pending host cannot run one of the artifact's native executables: it
/// ends `failed` with the file named, every other pending host ends `failed` too (not
/// staged), and every lock is given back. A host that did not report its architecture
/// is not judged.
pub async fn refuse_foreign(
    mut runs: Vec<HostRun>,
    plan: &Arc<Plan>,
) -> Result<Vec<HostRun>, Vec<HostRun>> {
    let Some(d) = &plan.deploy else {
        return Ok(runs);
    };
    let natives = &d.artifact.natives;
    if natives.is_empty() {
        return Ok(runs);
    }
    let mut refused = Vec::new();
    for run in runs.iter_mut().filter(|r| r.is_pending()) {
        let Some(arch) = run.survey.arch.clone() else {
            continue;
        };
        if let Some(foreign) = natives.iter().find(|n| !n.machine.runs_on(&arch)) {
            let reason = native::refusal(foreign, &arch);
            refused.push(run.name().to_owned());
            run.end(plan, failed(reason));
        }
    }
    if refused.is_empty() {
        return Ok(runs);
    }
    let why = format!(
        "not staged: {} cannot run this artifact",
        refused.join(", ")
    );
    for run in runs.iter_mut().filter(|r| r.is_pending()) {
        run.end(plan, failed(why.clone()));
    }
    let locked = |r: &HostRun| r.locked;
    Err(each(runs, plan, ALL, locked, |mut run, plan| async move {
        run.unlock(&plan).await;
        run
    })
    .await)
}

fn failed(reason: String) -> Outcome {
    Outcome::Failed {
        step: STEP.into(),
        reason,
    }
}
