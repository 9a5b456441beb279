//! `shipit unlock`: remove a deploy lock left by a dead deploy, saying who held it.

use std::sync::Arc;

use anyhow::Result;

use crate::event::Events;
use crate::exit::{self, Ending, Exit};
use crate::host::Op;
use crate::outcome::Outcome;
use crate::plan::{Kind, Plan};
use crate::remote::guard;
use crate::remote::lock;
use crate::remote::survey::{self, LockAnswer};
use crate::rollout::{ALL, connect_all, each};
use crate::settings::Settings;
use crate::ssh::Connector;
use crate::targets::Pick;

pub fn run(settings: &Settings, hosts: Pick) -> Result<Exit> {
    on_each_host(
        settings,
        hosts,
        Kind::Unlock,
        |plan| {
            // An unconfirmed run's guard goes with its lock.
            format!(
                "{}{}{}",
                crate::remote::enter(&plan.deploy_to, false).unwrap_or_default(),
                guard::force_disarm(),
                lock::force_release()
            )
        },
        |out| {
            let text = match survey::parse_survey(out).lock {
                Some(LockAnswer::Held { owner, since }) if lock::unlocked(out) => {
                    let now = crate::remote::layout::now();
                    match owner {
                        Some(o) => format!("removed the lock of {}", o.describe(now)),
                        None => format!(
                            "removed a lock without owner file{}",
                            since
                                .map(|m| format!(
                                    ", taken {} ago",
                                    lock::age(now.saturating_sub(m))
                                ))
                                .unwrap_or_default()
                        ),
                    }
                }
                // No deploy_to, or no lock dir.
                _ => "no lock".to_owned(),
            };
            Outcome::Skipped {
                reason: match guard::removed(out) {
                    true => format!("{text}; removed an unconfirmed run's guard"),
                    false => text,
                },
            }
        },
    )
}

/// Run the script `script(plan)` (the host's plan: its role's, with roles) on every
/// targeted host (all at once), turn what each
/// printed into its outcome with `judge`, print one line per host, and exit as
/// [`exit::for_hosts`] says.
pub(super) fn on_each_host(
    settings: &Settings,
    hosts: Pick,
    kind: Kind,
    script: impl Fn(&Plan) -> String + Send + Sync + 'static,
    judge: impl Fn(&str) -> Outcome + Send + Sync + 'static,
) -> Result<Exit> {
    let config = settings.load_config()?;
    let targets = crate::targets::resolve(&config, &hosts, &settings.printer)?;
    let printer = settings.printer;
    let plan = Arc::new(Plan::new(&config, kind, None, Events::none())?);
    let runs = crate::targets::runs(&config, &targets, &hosts, &plan)?;
    let script = Arc::new(script);
    let judge = Arc::new(judge);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let runs = runtime.block_on(async {
        let runs = connect_all(runs, &plan, Arc::new(Connector::default())).await;
        let mut runs = each(
            runs,
            &plan,
            ALL,
            |r| r.remote.is_some(),
            move |mut run, plan| {
                let (script, judge) = (script(&plan), judge.clone());
                async move {
                    if let Some(remote) = &run.remote {
                        let ran = remote.run(Op::Other, &script, None, &mut |_| {}).await;
                        run.outcome = match ran.map(|r| r.out) {
                            Ok(out) if out.success() => judge(&out.stdout),
                            Ok(out) => Outcome::Failed {
                                step: kind.action().into(),
                                reason: out.stderr_tail,
                            },
                            Err(e) => Outcome::Failed {
                                step: kind.action().into(),
                                reason: e.to_string(),
                            },
                        };
                    }
                    run
                }
            },
        )
        .await;
        crate::rollout::hang_up(&mut runs).await;
        runs
    });
    let mut lines = Vec::new();
    for run in &runs {
        lines.push(match &run.outcome {
            Outcome::Skipped { reason } | Outcome::NotSwitched { reason } => {
                format!("{}: {reason}", run.target.name)
            }
            Outcome::Unreachable { reason } | Outcome::Failed { reason, .. } => {
                format!("{}: FAILED: {}", run.target.name, reason.trim())
            }
            Outcome::Locked { holder } => {
                format!("{}: already locked, by {holder}", run.target.name)
            }
            other => format!("{}: {other:?}", run.target.name),
        });
    }
    printer.data(&lines.join("\n"));
    Ok(exit::for_hosts(
        runs.iter().map(|r| &r.outcome),
        Ending::Early,
    ))
}
