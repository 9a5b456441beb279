//! One module per subcommand: orchestration only.

mod build;
mod check;
mod config;
mod init;
mod package;

use anyhow::Result;
use clap::CommandFactory;

use crate::cli::Cli;
use crate::exit::Exit;
use crate::settings::{Action, Settings};

pub fn run(settings: &Settings, action: Action) -> Result<Exit> {
    match action {
        Action::Init { app } => init::run(settings, app.as_deref()),
        Action::Config { json } => config::run(settings, json),
        Action::Check { json } => check::run(settings, json),
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
        Action::Man => {
            let mut out = Vec::new();
            clap_mangen::Man::new(Cli::command()).render(&mut out)?;
            settings
                .printer
                .data(String::from_utf8_lossy(&out).trim_end());
            Ok(Exit::Ok)
        }
    }
}
