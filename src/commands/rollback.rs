//! `shipit rollback`: every host back to the newest good release before its current one
//! (or `--to RELEASE`): lock, switch, restart, health-check, history, unlock. No upload,
//! no unpack.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;

use crate::exit::Exit;
use crate::pipeline::{HostRun, Outcome, Plan};
use crate::remote::activate::{self, Activate};
use crate::remote::release::State;
use crate::rollout::{self, Cancel};
use crate::settings::Settings;

pub struct Options {
    pub to: Option<String>,
    pub hosts: Option<Vec<String>>,
    pub dry_run: bool,
    pub wait_lock: Option<Duration>,
    pub json: bool,
}

pub fn run(settings: &Settings, opts: Options) -> Result<Exit> {
    let config = settings.load_config()?;
    let targets = crate::targets::resolve(&config, opts.hosts.as_deref())?;
    let printer = settings.printer;
    let plan = Arc::new(Plan::new(&config, "shipit rollback", None, printer)?);
    let parallel = config.rollout.parallel.max(1) as usize;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (runs, exit) = runtime.block_on(async {
        let cancel = Cancel::new();
        rollout::on_signals(cancel.clone(), printer);
        let runs: Vec<HostRun> = targets.into_iter().map(|t| plan.run_for(t)).collect();
        let (mut runs, stop) = rollout::prepare(runs, &plan, opts.dry_run, opts.wait_lock, &cancel, None).await;
        if let Some(exit) = stop {
            return (runs, exit);
        }
        let mut chosen = Vec::new();
        for run in runs.iter_mut() {
            match pick(run, opts.to.as_deref()) {
                Ok(Some(id)) => chosen.push((run.target.name.clone(), id)),
                Ok(None) => {
                    let id = run.survey.current.clone().unwrap_or_default();
                    run.end(Outcome::Skipped { reason: format!("already on release {id}") });
                }
                Err(reason) => {
                    run.end(Outcome::Failed { step: "rollback".into(), reason });
                }
            }
        }
        if opts.dry_run {
            let mut out = String::new();
            for run in &runs {
                out.push_str(&format!("== {}\n", run.target.name));
                match chosen.iter().find(|(n, _)| n == &run.target.name) {
                    Some((_, id)) => {
                        out.push_str(&format!("would switch {} -> {id}, restart, health-check, then mark {} rolled-back\n", run.survey.current.clone().unwrap_or_default(), run.survey.current.clone().unwrap_or_default()));
                        let script = activate::activate(&Activate { id, manager: plan.manager, service: &plan.service, sudo: plan.sudo, restart: plan.restart, unit: plan.unit.as_deref() }).unwrap_or_default();
                        for line in script.lines() {
                            out.push_str(&format!("   {line}\n"));
                        }
                    }
                    None => out.push_str(&format!("cannot roll back: {:?}\n", run.outcome)),
                }
            }
            printer.data(out.trim_end());
            let exit = if runs.iter().all(HostRun::is_pending) { Exit::Ok } else { Exit::Failed };
            return (runs, exit);
        }
        if runs.iter().any(|r| matches!(r.outcome, Outcome::Failed { .. })) {
            // A host with nothing to roll back to: change nothing anywhere.
            let runs = rollout::release_all(runs, &plan).await;
            return (runs, Exit::Failed);
        }
        if runs.iter().any(|r| !r.is_pending()) {
            // Hosts already on the release `--to` names (e.g. a rerun after a rollback
            // that was killed once it had switched) are done: they give their lock back.
            runs = crate::pipeline::each(runs, &plan, crate::pipeline::ALL, |mut run, plan| async move {
                if matches!(run.outcome, Outcome::Skipped { .. }) {
                    run.unlock(&plan).await;
                }
                run
            })
            .await;
            if !runs.iter().any(HostRun::is_pending) {
                printer.info("every host is already on that release: nothing to do");
                return (runs, Exit::Ok);
            }
        }
        for run in runs.iter_mut() {
            run.goal = chosen.iter().find(|(n, _)| n == &run.target.name).map(|(_, id)| id.clone());
        }
        // Everything goes back at once (bounded by `parallel`): no canary for a rollback.
        let policy = rollout::Policy { parallel, canary: 0, max_failures: 0, on_failure: crate::config::OnFailure::Rollback };
        rollout::activate(runs, &plan, policy, "rollback", &cancel).await
    });
    if !opts.dry_run {
        super::summary::print(
            &printer,
            &runs,
            exit,
            &super::summary::Context {
                action: "rollback",
                release: None,
                version: None,
                sha256: None,
            },
            opts.json,
        );
    }
    Ok(exit)
}

/// The release this host goes back to (`None`: `--to` names the current release, which is
/// live: nothing to do), or why there is none.
fn pick(run: &HostRun, to: Option<&str>) -> Result<Option<String>, String> {
    let current = run
        .survey
        .current
        .clone()
        .ok_or_else(|| "no current release on this host: nothing to roll back".to_owned())?;
    match to {
        Some(id) => {
            let found = run
                .survey
                .releases
                .iter()
                .find(|r| r.id == id)
                .ok_or_else(|| format!("release {id} is not on this host"))?;
            if id == current {
                // Already there (a rerun): done, if that release is a good one.
                return match found.state() {
                    Some(State::Live) => Ok(None),
                    _ => Err(format!("release {id} is already current")),
                };
            }
            match found.state() {
                Some(State::Failed) => Err(format!(
                    "release {id} failed when it was deployed; it is not a rollback target"
                )),
                Some(State::Staged) | None => Err(format!(
                    "release {id} was never completed; it is not a rollback target"
                )),
                Some(State::Live) | Some(State::RolledBack) => Ok(Some(id.to_owned())),
            }
        }
        None => run
            .survey
            .rollback_target()
            .map(|r| Some(r.id.clone()))
            .ok_or_else(|| format!("nothing to roll back to: no good release before {current}")),
    }
}
