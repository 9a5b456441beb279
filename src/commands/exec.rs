//! `shipit exec -- COMMAND`: the command on every targeted host at once, in the live
//! release (`current`) with its `.env` loaded, each output line prefixed with its host as
//! it arrives; the exit code says whether it succeeded everywhere.

use std::sync::Arc;

use anyhow::Result;

use crate::event::Events;
use crate::exit::Exit;
use crate::host::{HostRun, Op};
use crate::outcome::Outcome;
use crate::plan::{Kind, Plan};
use crate::rollout::{ALL, connect_all, each};
use crate::settings::Settings;
use crate::ssh::Connector;

pub fn run(settings: &Settings, command: &str, hosts: Option<Vec<String>>) -> Result<Exit> {
    if command.trim().is_empty() {
        anyhow::bail!("give the command after `--`, e.g. `shipit exec -- ./bin/app --version`");
    }
    let config = settings.load_config()?;
    let targets = crate::targets::resolve(&config, hosts.as_deref())?;
    let printer = settings.printer;
    let plan = Arc::new(Plan::new(&config, Kind::Status, None, Events::none())?);
    let script = Arc::new(format!(
        "{}{}",
        crate::remote::enter(&plan.deploy_to, false)?,
        crate::remote::unit::exec_script(command)?
    ));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (runs, results) = runtime.block_on(async {
        let runs: Vec<HostRun> = targets.into_iter().map(HostRun::new).collect();
        let runs = connect_all(runs, &plan, Arc::new(Connector::default())).await;
        let results = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = results.clone();
        let runs = each(
            runs,
            &plan,
            ALL,
            |r| r.remote.is_some(),
            move |run, _plan| {
                let (script, seen) = (script.clone(), seen.clone());
                async move {
                    let name = run.target.name.clone();
                    if let Some(remote) = &run.remote {
                        let mut print = |line: &str| printer.data(&format!("{name}: {line}"));
                        let ran = remote.run(Op::Other, &script, None, &mut print).await;
                        let result = match ran.map(|r| r.out) {
                            Ok(out) if crate::remote::is_missing(&out.stdout) => {
                                Err("deploy_to does not exist: never deployed".to_owned())
                            }
                            Ok(out) if out.success() => Ok(()),
                            Ok(out) => Err(match (out.status, out.signal) {
                                (Some(125), _) => "could not start it (no live release, or \
                                                   its .env failed)"
                                    .to_owned(),
                                (Some(code), _) => format!("exit status {code}"),
                                (None, Some(sig)) => format!("killed by {sig}"),
                                _ => "no exit status".to_owned(),
                            }),
                            Err(e) => Err(e.to_string()),
                        };
                        seen.lock().unwrap().push((name, result));
                    }
                    run
                }
            },
        )
        .await;
        let results = results.lock().unwrap().clone();
        (runs, results)
    });
    let unreachable: Vec<String> = runs
        .iter()
        .filter(|r| r.remote.is_none())
        .map(|r| match &r.outcome {
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
