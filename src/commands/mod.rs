//! One module per subcommand: orchestration only.

mod build;
mod check;
mod config;
mod deploy;
mod detect;
mod dry_run;
mod exec;
mod init;
mod lock;
mod logs;
mod man;
mod package;
mod rollback;
mod status;
mod unlock;

use anyhow::Result;
use clap::CommandFactory;

use crate::cli::Cli;
use crate::exit::Exit;
use crate::settings::{Action, Settings};

pub fn run(settings: &Settings, action: Action) -> Result<Exit> {
    match action {
        Action::Init { app } => init::run(settings, app.as_deref()),
        Action::Config { json } => config::run(settings, json),
        Action::Check { json, hosts } => check::run(settings, json, hosts),
        Action::Deploy(opts) => deploy::run(settings, opts),
        Action::Rollback(opts) => rollback::run(settings, opts),
        Action::Unlock { hosts } => unlock::run(settings, hosts),
        Action::Lock { message, hosts } => lock::run(settings, &message, hosts),
        Action::Exec { command, hosts } => exec::run(settings, &command, hosts),
        Action::Logs {
            follow,
            lines,
            since,
            hosts,
        } => logs::run(
            settings,
            logs::Logs {
                follow,
                lines,
                since: since.as_deref(),
                hosts,
            },
        ),
        Action::Status {
            json,
            releases,
            history,
            hosts,
        } => status::run(settings, json, releases, history, hosts),
        Action::Build { app_version } => build::run(settings, app_version.as_deref()),
        Action::Package {
            no_build,
            app_version,
        } => package::run(settings, no_build, app_version.as_deref()),
        Action::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "shipit", &mut out);
            settings
                .printer
                .data(String::from_utf8_lossy(&out).trim_end());
            Ok(Exit::Ok)
        }
        Action::Man { dir } => man::run(settings, dir.as_deref()),
    }
}
