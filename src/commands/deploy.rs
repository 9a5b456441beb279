//! `shipit deploy`: package (or take --artifact), then lock every host, upload, stage,
//! switch, health-check, and roll back by itself when the new release is unhealthy.

use std::sync::Arc;

use anyhow::Result;

use crate::artifact::{self, Artifact};
use crate::config::Config;
use crate::exit::{Exit, Failure};
use crate::plan::{DeployPlan, Kind, Plan};
use crate::printer::live::Live;
use crate::printer::summary;
use crate::remote::layout;
use crate::rollout::{self, Cancel};
use crate::settings::{DeployOptions, Settings};
use crate::ssh::Connector;

pub fn run(settings: &Settings, opts: DeployOptions) -> Result<Exit> {
    let config = settings.load_config()?;
    let targets = crate::targets::resolve(&config, &opts.hosts, &settings.printer)?;
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
    let artifact = match &opts.artifact {
        Some(path) => checked_artifact(&config, path)?,
        None => super::package::package(
            &config,
            opts.no_build,
            opts.app_version.as_deref(),
            &printer,
        )?,
    };
    let version = artifact.manifest.version.clone();
    let names = crate::targets::run_names(&config, &targets, &opts.hosts);
    let live = Live::new(printer, &names);
    let mut plan = Plan::new(&config, Kind::Deploy, Some(&version), live.events())?;
    plan.deploy = Some(DeployPlan::new(
        &config,
        artifact,
        plan.unit.as_deref(),
        opts.force,
    ));
    let plan = Arc::new(plan);
    let policy = rollout::Policy {
        parallel: opts.parallel.unwrap_or(config.rollout.parallel).max(1) as usize,
        canary: opts.canary.unwrap_or(config.rollout.canary) as usize,
        max_failures: config.rollout.max_failures as usize,
        on_failure: config.rollout.on_failure,
    };
    let sha256 = plan
        .deploy
        .as_ref()
        .map(|d| d.sha256.clone())
        .unwrap_or_default();

    let first_id = layout::release_id(plan.owner.started_at, &sha256);
    let hosts: Vec<&str> = targets.iter().map(|t| t.name.as_str()).collect();
    let mut env = vec![
        ("SHIPIT_ENV", config.environment.clone().unwrap_or_default()),
        ("SHIPIT_RELEASE", first_id.clone()),
        ("SHIPIT_COMMAND", "deploy".to_owned()),
        ("SHIPIT_PERFORMER", plan.deployed_by.clone()),
        ("SHIPIT_HOSTS", hosts.join(",")),
    ];
    if !opts.dry_run {
        super::build::run_hooks(
            &config,
            "local_before",
            &config.hooks.local_before,
            &version,
            &env,
            &printer,
        )?;
    }
    printer.info(&format!(
        "{} {} {version} ({}) as release {first_id} to {} host(s)",
        if opts.dry_run {
            "dry run: would deploy"
        } else {
            "deploying"
        },
        config.app,
        &sha256[..12],
        targets.len()
    ));
    let how = rollout::deploy::Options {
        dry_run: opts.dry_run,
        wait_lock: opts.wait_lock,
    };
    let runs = crate::targets::runs(&config, &targets, &opts.hosts, &plan)?;
    // From here to `finish`, the live view owns the terminal: what is said goes through
    // the plan's events.
    live.start();
    let (runs, exit, release_id) = runtime.block_on(async {
        let cancel = Cancel::new();
        rollout::on_signals(cancel.clone(), plan.events.clone());
        let dialer = Arc::new(Connector::default());
        let (mut runs, exit, id) =
            rollout::deploy::deploy(runs, &plan, dialer, early, how, policy, &cancel).await;
        rollout::hang_up(&mut runs).await;
        (runs, exit, id)
    });
    live.finish();
    if opts.dry_run {
        // A dry run that could not survey every host has no plan to show: its error is
        // already out.
        if exit == Exit::Ok {
            printer.data(&runtime.block_on(super::dry_run::deploy(&plan, &runs, &release_id)));
        }
    } else {
        let context = summary::Context {
            action: plan.kind.action(),
            release: Some(&release_id),
            version: Some(&version),
            sha256: Some(&sha256),
        };
        summary::print(&printer, &runs, exit, &context, opts.json);
        if !config.hooks.local_after.is_empty() {
            // The run's JSON summary, for a notification hook to read: a fresh file
            // (created exclusively, removed when dropped), never a fixed name.
            let file = tempfile::Builder::new()
                .prefix("shipit-summary-")
                .suffix(".json")
                .tempfile()?;
            std::fs::write(file.path(), summary::json(&runs, exit, &context))?;
            let result = if exit == Exit::Ok { "ok" } else { "failed" };
            env.extend([
                ("SHIPIT_RELEASE", release_id.clone()),
                ("SHIPIT_RESULT", result.to_owned()),
                ("SHIPIT_EXIT_CODE", exit.code().to_string()),
                ("SHIPIT_SUMMARY", file.path().display().to_string()),
            ]);
            super::build::run_hooks(
                &config,
                "local_after",
                &config.hooks.local_after,
                &version,
                &env,
                &printer,
            )?;
        }
    }
    Ok(exit)
}

/// `--artifact`: checked whole before anything is uploaded, and of this app.
fn checked_artifact(config: &Config, path: &std::path::Path) -> Result<Artifact> {
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
    Ok(a)
}
