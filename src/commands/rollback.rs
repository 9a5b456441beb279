//! `shipit rollback`: every host back to the newest good release before its current one
//! (or `--to RELEASE`): lock, switch, restart, health-check, history, unlock. No upload,
//! no unpack.

use std::sync::Arc;

use anyhow::Result;

use crate::config::OnFailure;
use crate::exit::Exit;
use crate::plan::{Kind, Plan};
use crate::printer::live::Live;
use crate::printer::summary;
use crate::rollout::{self, Cancel};
use crate::settings::{RollbackOptions, Settings};
use crate::ssh::Connector;

pub fn run(settings: &Settings, opts: RollbackOptions) -> Result<Exit> {
    let config = settings.load_config()?;
    let targets = crate::targets::resolve(&config, &opts.hosts, &settings.printer)?;
    let printer = settings.printer;
    let names = crate::targets::run_names(&config, &targets, &opts.hosts);
    let live = Live::new(printer, &names);
    let plan = Arc::new(Plan::new(&config, Kind::Rollback, None, live.events())?);
    // Everything goes back at once (bounded by `parallel`): no canary for a rollback.
    let policy = rollout::Policy {
        parallel: config.rollout.parallel.max(1) as usize,
        canary: 0,
        max_failures: 0,
        on_failure: OnFailure::Rollback,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let runs = crate::targets::runs(&config, &targets, &opts.hosts, &plan)?;
    let how = rollout::rollback::Options {
        to: opts.to.clone(),
        dry_run: opts.dry_run,
        wait_lock: opts.wait_lock,
    };
    live.start();
    let (runs, exit, surveyed) = runtime.block_on(async {
        let cancel = Cancel::new();
        rollout::on_signals(cancel.clone(), plan.events.clone());
        let dialer = Arc::new(Connector::default());
        let (mut runs, exit, surveyed) =
            rollout::rollback::rollback(runs, &plan, dialer, &how, policy, &cancel).await;
        rollout::hang_up(&mut runs).await;
        (runs, exit, surveyed)
    });
    live.finish();
    match (opts.dry_run, surveyed) {
        (true, true) => printer.data(&super::dry_run::rollback(&plan, &runs)),
        // A dry run that could not survey every host has no plan to show.
        (true, false) => {}
        (false, _) => summary::print(
            &printer,
            &runs,
            exit,
            &summary::Context {
                action: plan.kind.action(),
                release: None,
                version: None,
                sha256: None,
            },
            opts.json,
        ),
    }
    Ok(exit)
}
