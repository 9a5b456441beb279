//! shipit: build locally, ship a tar.gz over SSH, switch atomically, health-check, roll
//! back by itself. docs/architecture.md walks one deploy through these modules.
//!
//! Decisions flow down, events flow up: CLI + deploy.yaml + environment are resolved once
//! (`settings`, `config`); a command (`commands`) builds the `plan`; the `rollout` drives
//! one `host` session per server (its phases send scripts that `remote` builds, over
//! `ssh`; `health` judges the result); hosts and the rollout report `event`s, and every
//! byte of output goes through `printer`.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod artifact;
pub mod cli;
pub mod commands;
pub mod config;
pub mod event;
pub mod exit;
pub mod faultpoint;
pub mod git;
pub mod health;
pub mod host;
mod logging;
pub mod outcome;
pub mod plan;
pub mod printer;
pub mod redact;
pub mod remote;
pub mod rollout;
pub mod settings;
pub mod ssh;
pub mod store;
pub mod targets;

use clap::Parser;

pub use cli::VERSION;

pub fn main() -> std::process::ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version are not errors; clap prints and picks 0 or 2. A usage
            // error prints no JSON document, even with --json: the command line that
            // would have asked for one did not parse (docs/json.md).
            let _ = e.print();
            return std::process::ExitCode::from(if e.use_stderr() {
                exit::Exit::Invalid.code()
            } else {
                0
            });
        }
    };
    let (settings, action) = cli.into_settings();
    logging::init(&settings.printer);
    let document = action.json_document();
    let exit = match commands::run(&settings, action) {
        Ok(exit) => exit,
        Err(err) => {
            let exit = exit::code_for(&err);
            settings.printer.error(&err);
            if let Some(action) = document {
                settings.printer.failed_document(action, exit, &err);
            }
            exit
        }
    };
    std::process::ExitCode::from(exit.code())
}
