//! What the command line asked for, with clap's types left behind: the global settings
//! every command shares, and the action with its own options.

use std::path::PathBuf;
use std::time::Duration;

use crate::cli::{Cli, Command, LogFormatArg, Pick};
use crate::printer::{LogFormat, Printer, Verbosity};

pub struct Settings {
    pub printer: Printer,
    /// The config file as the user named it.
    pub config: PathBuf,
    pub environment: Option<String>,
}

/// `shipit deploy`'s own options.
pub struct DeployOptions {
    pub artifact: Option<PathBuf>,
    pub hosts: Pick,
    pub dry_run: bool,
    pub no_build: bool,
    pub force: bool,
    pub parallel: Option<u32>,
    pub canary: Option<u32>,
    pub wait_lock: Option<Duration>,
    pub json: bool,
    pub app_version: Option<String>,
}

/// `shipit rollback`'s own options.
pub struct RollbackOptions {
    pub to: Option<String>,
    pub hosts: Pick,
    pub dry_run: bool,
    pub wait_lock: Option<Duration>,
    pub json: bool,
}

pub enum Action {
    Deploy(DeployOptions),
    Rollback(RollbackOptions),
    Unlock {
        hosts: Pick,
    },
    Lock {
        message: String,
        hosts: Pick,
    },
    Exec {
        command: String,
        hosts: Pick,
    },
    Logs {
        follow: bool,
        lines: usize,
        since: Option<String>,
        hosts: Pick,
    },
    Status {
        json: bool,
        releases: bool,
        history: usize,
        hosts: Pick,
    },
    Init {
        app: Option<String>,
    },
    Config {
        json: bool,
    },
    Check {
        json: bool,
        hosts: Pick,
    },
    Build {
        app_version: Option<String>,
    },
    Package {
        no_build: bool,
        app_version: Option<String>,
    },
    Completions {
        shell: clap_complete::Shell,
    },
    Man {
        dir: Option<PathBuf>,
    },
}

impl Action {
    /// The command's name when it was asked for a `--json` document, which a run that
    /// fails before printing it then prints instead (docs/json.md). A dry run prints its
    /// plan as text: no document.
    pub fn json_document(&self) -> Option<&'static str> {
        match self {
            Action::Deploy(o) if o.json && !o.dry_run => Some("deploy"),
            Action::Rollback(o) if o.json && !o.dry_run => Some("rollback"),
            Action::Status { json: true, .. } => Some("status"),
            Action::Check { json: true, .. } => Some("check"),
            Action::Config { json: true } => Some("config"),
            _ => None,
        }
    }
}

impl Cli {
    pub fn into_settings(self) -> (Settings, Action) {
        let g = self.global;
        let verbosity = match (g.quiet, g.verbose) {
            (true, _) => Verbosity::Quiet,
            (_, 0) => Verbosity::Normal,
            (_, 1) => Verbosity::Verbose,
            _ => Verbosity::VeryVerbose,
        };
        let format = match g.log_format {
            LogFormatArg::Human => LogFormat::Human,
            LogFormatArg::Json => LogFormat::Json,
        };
        let settings = Settings {
            printer: Printer::new(verbosity, format, g.no_progress),
            config: g.config,
            environment: g.environment,
        };
        let action = match self.command {
            Command::Init(a) => Action::Init { app: a.app },
            Command::Config(a) => Action::Config { json: a.json },
            Command::Check(a) => Action::Check {
                json: a.json,
                hosts: a.hosts,
            },
            Command::Deploy(a) => Action::Deploy(DeployOptions {
                artifact: a.artifact,
                hosts: a.hosts,
                dry_run: a.dry_run,
                no_build: a.no_build,
                force: a.force,
                parallel: a.parallel,
                canary: a.canary,
                wait_lock: a.wait_lock.map(|d| d.0),
                json: a.json,
                app_version: a.version.app_version,
            }),
            Command::Rollback(a) => Action::Rollback(RollbackOptions {
                to: a.to,
                hosts: a.hosts,
                dry_run: a.dry_run,
                wait_lock: a.wait_lock.map(|d| d.0),
                json: a.json,
            }),
            Command::Unlock(a) => Action::Unlock { hosts: a.hosts },
            Command::Logs(a) => Action::Logs {
                follow: a.follow,
                lines: a.lines,
                since: a.since,
                hosts: a.hosts,
            },
            Command::Exec(a) => Action::Exec {
                command: a.command.join(" "),
                hosts: a.hosts,
            },
            Command::Lock(a) => Action::Lock {
                message: a.message,
                hosts: a.hosts,
            },
            Command::Status(a) => Action::Status {
                json: a.json,
                releases: a.releases,
                history: a.history.unwrap_or(0),
                hosts: a.hosts,
            },
            Command::Build(a) => Action::Build {
                app_version: a.version.app_version,
            },
            Command::Package(a) => Action::Package {
                no_build: a.no_build,
                app_version: a.version.app_version,
            },
            Command::Completions(a) => Action::Completions { shell: a.shell },
            Command::Man(a) => Action::Man { dir: a.dir },
        };
        (settings, action)
    }
}

impl Settings {
    pub fn load_config(&self) -> Result<crate::config::Config, crate::config::ConfigError> {
        let environment = self.environment.as_deref();
        let file = self.config.display();
        tracing::debug!(file = %file, environment, "reading the configuration");
        crate::config::load(
            &self.config,
            self.environment.as_deref(),
            &crate::config::interpolate::ProcessEnv,
        )
    }
}
