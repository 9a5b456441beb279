//! `--dry-run`: what a deploy or a rollback would do on each host, with the exact scripts
//! (secrets redacted), from the plan's own step builders.

use std::sync::Arc;

use crate::host::HostRun;
use crate::outcome::Outcome;
use crate::plan::Plan;
use crate::plan::steps::Step;

/// A deploy of release `id`.
pub async fn deploy(plan: &Arc<Plan>, runs: &[HostRun], id: &str) -> String {
    let mut out = String::new();
    // Where the once-only hooks would run.
    let once = crate::rollout::stage::once_jobs(runs, plan);
    for (i, run) in runs.iter().enumerate() {
        let plan = run.plan_or(plan);
        let Some(d) = &plan.deploy else {
            continue;
        };
        let t = &run.target;
        out.push_str(&format!(
            "== {} ({}@{}:{})\n",
            t.name, t.user, t.host, t.port
        ));
        if let Outcome::Skipped { reason } = &run.outcome {
            out.push_str(&format!("nothing to do: {reason}\n\n"));
            continue;
        }
        let current = run.survey.current.as_deref().unwrap_or("none");
        out.push_str(&format!("current release: {current}\n"));
        if let Some(holder) = run.lock_holder() {
            out.push_str(&format!(
                "LOCK HELD by {holder}: the deploy would wait or stop (exit 3)\n"
            ));
        }
        for step in plan.deploy_steps(d, id, &run.survey).await {
            out.push_str(&format!("-- {}\n", step.title));
            push_script(&mut out, &step);
        }
        for (_, hooks) in once.iter().filter(|(at, _)| *at == i) {
            let previous = run.survey.current.as_deref();
            let script = plan
                .once_script(hooks, &run.host, id, previous, true)
                .unwrap_or_else(|e| e.to_string());
            out.push_str(
                "-- once-only hooks, on this host for the whole fleet, after every host \
                 staged and before any switches\n",
            );
            push_script(
                &mut out,
                &Step {
                    title: String::new(),
                    script,
                },
            );
        }
        out.push('\n');
    }
    out.trim_end().to_owned()
}

/// A rollback: each host's target (its `goal`), or why it has none.
pub fn rollback(plan: &Arc<Plan>, runs: &[HostRun]) -> String {
    let mut out = String::new();
    for run in runs {
        let plan = run.plan_or(plan);
        out.push_str(&format!("== {}\n", run.target.name));
        match &run.goal {
            Some(id) => {
                let current = run.survey.current.as_deref().unwrap_or_default();
                for step in plan.rollback_steps(current, id) {
                    out.push_str(&format!("{}\n", step.title));
                    push_script(&mut out, &step);
                }
            }
            None => out.push_str(&format!("cannot roll back: {:?}\n", run.outcome)),
        }
    }
    out.trim_end().to_owned()
}

fn push_script(out: &mut String, step: &Step) {
    for line in step.script.lines() {
        out.push_str(&format!("   {line}\n"));
    }
}
