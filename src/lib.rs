//! shipit: build locally, ship a tar.gz over SSH, switch atomically, health-check, roll
//! back by itself. See ../shared/SPEC.md for the contract and README.md for the tour.
//!
//! Data flows down: CLI + deploy.yaml + environment are resolved once (`settings`,
//! `config`), commands orchestrate (`commands`), pure builders and I/O modules do the
//! work (`artifact`), and every byte of output goes through `printer`.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod artifact;
pub mod cli;
pub mod commands;
pub mod config;
pub mod exit;
pub mod faultpoint;
pub mod git;
pub mod health;
mod logging;
pub mod pipeline;
pub mod printer;
pub mod redact;
pub mod remote;
pub mod rollout;
pub mod settings;
pub mod ssh;
pub mod targets;
pub mod view;

use clap::Parser;

pub use cli::VERSION;

pub fn main() -> std::process::ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version are not errors; clap prints and picks 0 or 2.
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
    let exit = match commands::run(&settings, action) {
        Ok(exit) => exit,
        Err(err) => {
            settings.printer.error(&err);
            exit::code_for(&err)
        }
    };
    std::process::ExitCode::from(exit.code())
}
