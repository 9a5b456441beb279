//! `shipit deploy`: package (or take --artifact), then lock every host, upload, stage,
//! switch, health-check, and roll back by itself when the new release is unhealthy.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;

use crate::artifact::{self, Artifact};
use crate::exit::{Exit, Failure};
use crate::pipeline::{DeployPlan, HostRun, Outcome, Plan, Shipment, each};
use crate::remote::activate::{self, Activate};
use crate::remote::release::State;
use crate::remote::stage::{self, Source};
use crate::remote::{finish, layout, lock};
use crate::rollout::{self, Cancel};
use crate::settings::Settings;
use crate::ssh::Target;

pub struct Options {
    pub artifact: Option<PathBuf>,
    pub hosts: Option<Vec<String>>,
    pub dry_run: bool,
    pub no_build: bool,
    pub force: bool,
    pub parallel: Option<u32>,
    pub canary: Option<u32>,
    pub wait_lock: Option<Duration>,
    pub json: bool,
    pub app_version: Option<String>,
}

pub fn run(settings: &Settings, opts: Options) -> Result<Exit> {
    let config = settings.load_config()?;
    let targets = crate::targets::resolve(&config, opts.hosts.as_deref())?;
    let printer = settings.printer;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    // With a ready artifact, the hosts are connected to while it is checked. Not while a
    // build or a `local_before` hook runs: those can take minutes, and a connection idle
    // that long may be dropped on the way. Not at a terminal either: a key's passphrase
    // prompt would come before the verdict on the artifact (which may refuse it).
    let early = (opts.artifact.is_some()
        && config.hooks.local_before.is_empty()
        && !std::io::IsTerminal::is_terminal(&std::io::stdin()))
    .then(|| rollout::connect_early(runtime.handle(), &targets));
    let artifact: Artifact = match &opts.artifact {
        Some(path) => {
            // Deltas are cut from the tar stream the check inflates: kept, not inflated again.
            let keep_tar = config.delta != crate::config::DeltaMode::Off;
            let a = artifact::inspect_keeping_tar(path, keep_tar).map_err(|e| {
                Failure::new(Exit::Invalid, format!("refusing `{}`: {e}", path.display()))
                    .hint("nothing was uploaded; build a clean artifact with `shipit package`")
            })?;
            if a.manifest.app != config.app {
                return Err(Failure::new(
                    Exit::Invalid,
                    format!(
                        "`{}` is an artifact of `{}`, not of `{}`",
                        path.display(),
                        a.manifest.app,
                        config.app
                    ),
                )
                .into());
            }
            a
        }
        None => super::package::package(
            &config,
            opts.no_build,
            opts.app_version.as_deref(),
            &printer,
        )?,
    };
    let version = artifact.manifest.version.clone();
    let mut plan = Plan::new(&config, "shipit deploy", Some(&version), printer)?;
    let env_file = stage::env_file(&config.env, false);
    let shared_dirs: Vec<String> = config
        .shared
        .dirs
        .iter()
        .map(|t| t.expose().to_owned())
        .collect();
    let shared_files: Vec<String> = config
        .shared
        .files
        .iter()
        .map(|t| t.expose().to_owned())
        .collect();
    let config_sha256 = DeployPlan::config_digest(
        &env_file,
        plan.unit.as_deref(),
        &shared_dirs,
        &shared_files,
        &config.hooks.before_switch,
    );
    let release_id = layout::release_id(plan.owner.started_at, &artifact.sha256);
    let artifact = Arc::new(artifact);
    let deltas = Arc::new(crate::pipeline::Deltas::new(
        artifact.clone(),
        shared_dirs.iter().chain(&shared_files).cloned().collect(),
        config.delta,
    ));
    plan.deploy = Some(DeployPlan {
        version: version.clone(),
        commit: artifact.manifest.commit.clone(),
        sha256: artifact.sha256.clone(),
        artifact: artifact.clone(),
        release_id: release_id.clone(),
        env_file,
        env_file_redacted: stage::env_file(&config.env, true),
        shared_dirs,
        shared_files,
        before_switch: config.hooks.before_switch.clone(),
        config_sha256: config_sha256.clone(),
        delta: config.delta,
        force: opts.force,
        deltas,
    });
    let plan = Arc::new(plan);
    let policy = rollout::Policy {
        parallel: opts.parallel.unwrap_or(config.rollout.parallel).max(1) as usize,
        canary: opts.canary.unwrap_or(config.rollout.canary) as usize,
        max_failures: config.rollout.max_failures as usize,
        on_failure: config.rollout.on_failure,
    };

    if !opts.dry_run {
        super::build::run_hooks(
            &config,
            "local_before",
            &config.hooks.local_before,
            &version,
            None,
            &printer,
        )?;
    }
    printer.info(&format!(
        "{} {} {version} ({}) as release {release_id} to {} host(s)",
        if opts.dry_run {
            "dry run: would deploy"
        } else {
            "deploying"
        },
        config.app,
        &artifact.sha256[..12],
        targets.len()
    ));
    let (runs, exit, release_id) = runtime.block_on(deploy(
        plan,
        targets,
        early,
        &opts,
        policy,
        &artifact.sha256,
        &config_sha256,
    ));
    if !opts.dry_run {
        super::summary::print(
            &printer,
            &runs,
            exit,
            &super::summary::Context {
                action: "deploy",
                release: Some(&release_id),
                version: Some(&version),
                sha256: Some(&artifact.sha256),
            },
            opts.json,
        );
        let result = if exit == Exit::Ok { "ok" } else { "failed" };
        super::build::run_hooks(
            &config,
            "local_after",
            &config.hooks.local_after,
            &version,
            Some(result),
            &printer,
        )?;
    }
    Ok(exit)
}

/// The deploy itself; returns the runs, the exit code and the release id it used.
async fn deploy(
    mut plan: Arc<Plan>,
    targets: Vec<Target>,
    early: Option<rollout::Early>,
    opts: &Options,
    policy: rollout::Policy,
    sha256: &str,
    config_sha256: &str,
) -> (Vec<HostRun>, Exit, String) {
    let (runs, exit) = deploy_runs(
        &mut plan,
        targets,
        early,
        opts,
        policy,
        sha256,
        config_sha256,
    )
    .await;
    let id = plan
        .deploy
        .as_ref()
        .map(|d| d.release_id.clone())
        .unwrap_or_default();
    (runs, exit, id)
}

/// A release id is the UTC second plus the artifact's sha256: a forced redeploy of the
/// same artifact in the same second as the last deploy would name the live release.
/// Take the next second no host has a release of.
fn free_release_id(plan: &mut Arc<Plan>, runs: &[HostRun]) -> Result<(), String> {
    let taken = |id: &str| {
        runs.iter()
            .any(|r| r.survey.releases.iter().any(|f| f.id == id))
    };
    let Some(d) = plan.deploy.as_ref() else {
        return Ok(());
    };
    if !taken(&d.release_id) {
        return Ok(());
    }
    let (sha, started) = (d.sha256.clone(), plan.owner.started_at);
    let id = (1..)
        .map(|k| layout::release_id(started + k, &sha))
        .find(|id| !taken(id))
        .unwrap_or_default();
    let old = d.release_id.clone();
    let printer = plan.printer;
    let Some(d) = Arc::get_mut(plan).and_then(|p| p.deploy.as_mut()) else {
        return Err(format!(
            "release {old} already exists on a host (a deploy of the same artifact in the same second); run the deploy again"
        ));
    };
    printer.info(&format!(
        "release {old} already exists on a host (a deploy of the same artifact in the same second): this one is {id}"
    ));
    d.release_id = id;
    Ok(())
}

async fn deploy_runs(
    plan: &mut Arc<Plan>,
    targets: Vec<Target>,
    early: Option<rollout::Early>,
    opts: &Options,
    policy: rollout::Policy,
    sha256: &str,
    config_sha256: &str,
) -> (Vec<HostRun>, Exit) {
    let cancel = Cancel::new();
    rollout::on_signals(cancel.clone(), plan.printer);
    let runs: Vec<HostRun> = targets.into_iter().map(|t| plan.run_for(t)).collect();
    let (mut runs, stop) =
        rollout::prepare(runs, plan, opts.dry_run, opts.wait_lock, &cancel, early).await;
    if let Some(exit) = stop {
        return (runs, exit);
    }
    if let Err(why) = free_release_id(plan, &runs) {
        plan.printer.error(&anyhow::anyhow!(why));
        let runs = rollout::release_all(runs, plan).await;
        return (runs, Exit::Failed);
    }
    let plan = &*plan;
    for run in runs.iter_mut() {
        let same = run
            .survey
            .current_release()
            .and_then(|r| r.info.as_ref())
            .is_some_and(|i| {
                // Only a release that passed its health check: one that a killed deploy
                // switched to but never checked (still `staged`) is deployed again.
                i.state == State::Live
                    && i.artifact_sha256 == sha256
                    && i.config_sha256.as_deref() == Some(config_sha256)
            })
            // The host's own verdict wins: it has already given the lock back.
            || run.survey.unchanged;
        if same && !opts.force {
            let id = run.survey.current.clone().unwrap_or_default();
            run.end(Outcome::Skipped {
                reason: format!(
                    "already runs this artifact and config (release {id}); `--force` deploys it again"
                ),
            });
        }
    }
    if opts.dry_run {
        print_dry_run(plan, &runs).await;
        return (runs, Exit::Ok);
    }
    // Hosts left alone give their lock back now.
    runs = each(
        runs,
        plan,
        crate::pipeline::ALL,
        |mut run, plan| async move {
            if matches!(run.outcome, Outcome::Skipped { .. }) {
                run.unlock(&plan).await;
            }
            run
        },
    )
    .await;
    if !runs.iter().any(HostRun::is_pending) {
        plan.printer
            .info("every host already runs this artifact: nothing to do");
        return (runs, Exit::Ok);
    }

    // Staging: upload and unpack everywhere before anything is switched anywhere.
    let staging_cancel = cancel.clone();
    runs = each(runs, plan, policy.parallel, move |mut run, plan| {
        let cancel = staging_cancel.clone();
        async move {
            if !run.is_pending() {
                return run;
            }
            let name = run.target.name.clone();
            let past_upload = run.past_upload.clone();
            let abandoned = {
                let ship = run.ship(&plan);
                tokio::pin!(ship);
                tokio::select! {
                    _ = &mut ship => false,
                    _ = cancel.wait() => {
                        // An upload is abandoned (the host discards what it got); a stage
                        // whose data is all there finishes, hooks included.
                        if past_upload.load(std::sync::atomic::Ordering::Relaxed) {
                            ship.await;
                            false
                        } else {
                            true
                        }
                    }
                }
            };
            if abandoned && run.is_pending() {
                run.end(Outcome::Interrupted {
                    state: format!("{name}: interrupted during the upload; nothing switched"),
                });
            }
            run
        }
    })
    .await;
    let staging_failed = runs.iter().any(|r| {
        matches!(
            r.outcome,
            Outcome::Failed { .. } | Outcome::Interrupted { .. }
        )
    });
    if staging_failed || cancel.is_set() {
        let why = runs
            .iter()
            .find_map(|r| match &r.outcome {
                Outcome::Failed { step, .. } => Some(format!("{} failed at {step}", r.target.name)),
                Outcome::Interrupted { .. } => Some("interrupted".to_owned()),
                _ => None,
            })
            .unwrap_or_else(|| "interrupted".into());
        let release_id = plan
            .deploy
            .as_ref()
            .map(|d| d.release_id.clone())
            .unwrap_or_default();
        runs = each(runs, plan, crate::pipeline::ALL, move |mut run, plan| {
            let why = why.clone();
            let release_id = release_id.clone();
            async move {
                if run.is_pending() || matches!(run.outcome, Outcome::Failed { .. }) {
                    run.set_state(&plan, &release_id, State::Failed).await;
                }
                if run.is_pending() {
                    run.end(Outcome::Failed {
                        step: "staging".into(),
                        reason: format!("not switched because {why}"),
                    });
                }
                run.unlock(&plan).await;
                run
            }
        })
        .await;
        return (runs, Exit::Failed);
    }

    let release_id = plan
        .deploy
        .as_ref()
        .map(|d| d.release_id.clone())
        .unwrap_or_default();
    for run in runs.iter_mut() {
        run.goal = Some(release_id.clone());
    }
    rollout::activate(runs, plan, policy, "deploy", &cancel).await
}

/// What a deploy would do on each host: the steps and the exact scripts, secrets redacted.
async fn print_dry_run(plan: &Plan, runs: &[HostRun]) {
    let Some(d) = &plan.deploy else { return };
    let mut out = String::new();
    for run in runs {
        out.push_str(&format!(
            "== {} ({}@{}:{})\n",
            run.target.name, run.target.user, run.target.host, run.target.port
        ));
        let current = run.survey.current.clone().unwrap_or_else(|| "none".into());
        if let Outcome::Skipped { reason } = &run.outcome {
            out.push_str(&format!("nothing to do: {reason}\n\n"));
            continue;
        }
        out.push_str(&format!("current release: {current}\n"));
        if let Some(holder) = run.lock_holder() {
            out.push_str(&format!(
                "LOCK HELD by {holder}: the deploy would wait or stop (exit 3)\n"
            ));
        }
        let shipment = d.shipment(&run.survey).await;
        let whole = crate::commands::human_bytes(d.artifact.size);
        let (source, what) = match &shipment {
            Shipment::Cached => (
                Source::Cached,
                "nothing to send, the artifact is cached on the host; unpack it".to_owned(),
            ),
            Shipment::Delta { delta, base } => (
                d.delta_source(delta, base),
                format!(
                    "send a delta of {} against release {base} ({} files sent, {} taken from {base}), assemble, verify",
                    crate::commands::human_bytes(delta.len()),
                    delta.sent,
                    delta.reused
                ),
            ),
            Shipment::Full {
                why_not_delta: Some(why),
            } => (
                d.full_source(),
                format!(
                    "send the whole artifact ({whole}; no delta: {why}), unpack it as it arrives"
                ),
            ),
            Shipment::Full {
                why_not_delta: None,
            } => (
                d.full_source(),
                format!("send the whole artifact ({whole}), unpack it as it arrives"),
            ),
        };
        let steps: Vec<(String, String)> = vec![
            (
                "1. lock".into(),
                lock::acquire(&plan.owner, None).unwrap_or_default(),
            ),
            (
                format!("2. upload and stage: {what}"),
                plan.stage_script(d, source, true).unwrap_or_default(),
            ),
            (
                "3. switch and restart".into(),
                activate::activate(&Activate {
                    id: &d.release_id,
                    manager: plan.manager,
                    service: &plan.service,
                    sudo: plan.sudo,
                    restart: plan.restart,
                    unit: plan.unit.as_deref(),
                })
                .unwrap_or_default(),
            ),
            (
                format!(
                    "4. health check for up to {}; unhealthy: switch back to {current}, restart",
                    plan.health.timeout
                ),
                String::new(),
            ),
            (
                "5. after_switch hooks, history line, cleanup, unlock".into(),
                finish::after_hooks("after_switch", &plan.hooks_after_switch, true)
                    .unwrap_or_default(),
            ),
        ];
        for (title, script) in steps {
            out.push_str(&format!("-- {title}\n"));
            for line in script.lines() {
                out.push_str(&format!("   {line}\n"));
            }
        }
        out.push('\n');
    }
    plan.printer.data(out.trim_end());
}
