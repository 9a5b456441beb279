//! `shipit exec -- COMMAND`: the command on every targeted host at once, in the live
//! release (`current`) with its `.env` loaded, each output line prefixed with its host as
//! it arrives; the exit code says whether it succeeded everywhere. [`everywhere`] is the
//! part `shipit logs` shares.

use std::sync::{Arc, Mutex};

use anyhow::Result;

use crate::config::Config;
use crate::event::Events;
use crate::exit::Exit;
use crate::host::{HostRun, Op};
use crate::outcome::Outcome;
use crate::plan::{Kind, Plan};
use crate::rollout::{ALL, connect_all, each};
use crate::settings::Settings;
use crate::ssh::Connector;
use crate::targets::Pick;

pub fn run(settings: &Settings, command: &str, hosts: Pick) -> Result<Exit> {
    if command.trim().is_empty() {
        anyhow::bail!("give the command after `--`, e.g. `shipit exec -- ./bin/app --version`");
    }
    let config = settings.load_config()?;
    let script = crate::remote::unit::exec_script(command)?;
    let printer = settings.printer;
    let sink = move |host: &str, line: &str| printer.data(&format!("{host}: {line}"));
    everywhere(
        settings,
        &config,
        hosts,
        move |_| Ok(script.clone()),
        Arc::new(sink),
    )
}

/// What a host's script did: `Ok`, or why not.
pub type HostResult = (String, Result<(), String>);

/// Where each line a host prints goes, with the host's name.
pub type Sink = Arc<dyn Fn(&str, &str) + Send + Sync>;

/// Run `script(plan)` (in the plan's deploy_to; the host's plan: its role's, with roles)
/// on every targeted host at once, handing each line it
/// prints to `sink` with the host's name as it arrives; then report how many succeeded,
/// list the failures, and exit 0 (all), 1 (a failure) or 4 (a host unreachable).
pub(super) fn everywhere(
    settings: &Settings,
    config: &Config,
    hosts: Pick,
    script: impl Fn(&Plan) -> Result<String> + Send + Sync + 'static,
    sink: Sink,
) -> Result<Exit> {
    let targets = crate::targets::resolve(config, &hosts, &settings.printer)?;
    let printer = settings.printer;
    let plan = Arc::new(Plan::new(config, Kind::Status, None, Events::none())?);
    let runs = crate::targets::runs(config, &targets, &hosts, &plan)?;
    let script = move |plan: &Plan| -> Result<String> {
        Ok(crate::remote::enter(&plan.deploy_to, false)? + &script(plan)?)
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let results: Arc<Mutex<Vec<HostResult>>> = Arc::default();
    let seen = results.clone();
    let runs = runtime.block_on(async {
        let runs = connect_all(runs, &plan, Arc::new(Connector::default())).await;
        let work = move |run: HostRun, plan: Arc<Plan>| {
            let (script, seen, sink) = (script(&plan), seen.clone(), sink.clone());
            async move {
                let name = run.target.name.clone();
                if let Some(remote) = &run.remote {
                    let script = match script {
                        Ok(s) => s,
                        Err(e) => {
                            seen.lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push((name, Err(e.to_string())));
                            return run;
                        }
                    };
                    let mut print = |line: &str| sink(&name, line);
                    let ran = remote.run(Op::Other, &script, None, &mut print).await;
                    let result = match ran.map(|r| r.out) {
                        Ok(out) if crate::remote::is_missing(&out.stdout) => {
                            Err("deploy_to does not exist: never deployed".to_owned())
                        }
                        Ok(out) if out.success() => Ok(()),
                        Ok(out) => Err(match (out.status, out.signal) {
                            (Some(125), _) => {
                                "could not start it (no live release, or its .env failed)".into()
                            }
                            (Some(code), _) => format!("exit status {code}"),
                            (None, Some(sig)) => format!("killed by {sig}"),
                            _ => "no exit status".to_owned(),
                        }),
                        Err(e) => Err(e.to_string()),
                    };
                    seen.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((name, result));
                }
                run
            }
        };
        let mut runs = each(runs, &plan, ALL, |r| r.remote.is_some(), work).await;
        let connected: Vec<bool> = runs.iter().map(|r| r.remote.is_some()).collect();
        crate::rollout::hang_up(&mut runs).await;
        runs.into_iter().zip(connected).collect::<Vec<_>>()
    });
    let results = results.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let unreachable: Vec<String> = runs
        .iter()
        .filter(|(_, connected)| !connected)
        .map(|(r, _)| match &r.outcome {
            Outcome::Unreachable { reason } | Outcome::Failed { reason, .. } => {
                format!("{}: {}", r.target.name, reason.trim())
            }
            _ => format!("{}: not connected", r.target.name),
        })
        .collect();
    let failed: Vec<String> = results
        .iter()
        .filter_map(|(n, r)| r.as_ref().err().map(|e| format!("{n}: {e}")))
        .collect();
    let ok = results.iter().filter(|(_, r)| r.is_ok()).count();
    printer.info(&format!(
        "succeeded on {ok} of {} host(s)",
        results.len() + unreachable.len()
    ));
    for f in failed.iter().chain(&unreachable) {
        printer.warn(&format!("failed on {f}"));
    }
    Ok(if !unreachable.is_empty() {
        Exit::Unreachable
    } else if !failed.is_empty() {
        Exit::Failed
    } else {
        Exit::Ok
    })
}
