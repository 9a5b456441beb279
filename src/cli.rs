//! The command line, as clap derive types. Doc comments here are the `--help` text.
//! Nothing past `commands::run` sees these types.

use std::path::PathBuf;

pub use crate::targets::Pick;
use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};

/// `0.1.0 (abc1234)`: the crate version and the commit it was built from.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("SHIPIT_GIT_COMMIT"),
    ")"
);

/// Build locally, ship over SSH, switch atomically, health-check, roll back by itself.
///
/// shipit reads deploy.yaml (see `shipit init`), packs the build into a reproducible
/// tar.gz and deploys it to every host of an environment over one SSH connection each.
/// Exit codes: 0 ok, 1 failed, 2 invalid config or command line, 3 lock held,
/// 4 host unreachable or not verified, 5 unhealthy and rolled back, 6 mixed state.
/// `--json` documents and `--log-format json` lines are described field by field in
/// docs/json.md. Colors only on a terminal, never with NO_COLOR set.
#[derive(Debug, Parser)]
#[command(
    name = "shipit",
    version = VERSION,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// The configuration file
    #[arg(
        short,
        long,
        global = true,
        env = "SHIPIT_CONFIG",
        default_value = "deploy.yaml",
        value_name = "FILE"
    )]
    pub config: PathBuf,

    /// The environment to use, from `environments:` (default: `default_env`)
    #[arg(
        short,
        long = "env",
        global = true,
        env = "SHIPIT_ENV",
        value_name = "ENV"
    )]
    pub environment: Option<String>,

    /// More output: -v adds shipit's debug lines (each script sent to a host: what for, how
    /// long, its exit status), -vv the SSH library's too. SHIPIT_LOG (a tracing filter,
    /// e.g. `russh=trace`) replaces what -v and -vv select
    #[arg(short, long, global = true, action = ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,

    /// Less output: only errors and data
    #[arg(short, long, global = true)]
    pub quiet: bool,

    /// Format of messages and logs on stderr (json: one object per line, docs/json.md)
    #[arg(
        long,
        global = true,
        value_enum,
        default_value_t = LogFormatArg::Human,
        value_name = "FORMAT"
    )]
    pub log_format: LogFormatArg,

    /// Never draw progress bars (they are only drawn on a terminal anyway)
    #[arg(long, global = true)]
    pub no_progress: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormatArg {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a commented starter deploy.yaml and a systemd unit file (never overwrites)
    ///
    /// Writes `deploy.yaml` and `deploy/<app>.service` in the current directory. Both pass
    /// `shipit config` as written; edit the hosts, the build and the package paths.
    Init(InitArgs),

    /// Validate deploy.yaml and print the resolved configuration
    ///
    /// Shows the configuration for the chosen environment after merging it over the top
    /// level and interpolating `${VAR}`s. Values that came from the environment are shown
    /// as [redacted]. Exits 2 with every problem found when the file is invalid.
    Config(ConfigArgs),

    /// Preflight every host: connect, verify its key, authenticate, and check it is ready
    ///
    /// All hosts are checked at once, each in one round trip: deploy_to exists or can be
    /// created and is writable, free disk space against the last artifact's size, tar,
    /// gzip, sha256sum and `mv -T` present, systemctl present and the unit known, `sudo -n`
    /// works when `service.sudo` is set. Prints a table (or `--json`). Exit 0 when every
    /// host passes, 4 when a host cannot be reached or verified, 1 otherwise.
    Check(CheckArgs),

    /// Run the build steps locally
    ///
    /// Each step of `build:` runs with `sh -c` in the config's directory, in order; its
    /// output streams to stderr. SHIPIT_APP and SHIPIT_VERSION are set for them. The first
    /// failing step stops the build.
    Build(BuildArgs),

    /// Build, then write dist/<app>-<version>.tar.gz and its .sha256
    ///
    /// The artifact is reproducible: the same inputs give the same bytes. Prints its path
    /// on stdout.
    Package(PackageArgs),

    /// Package (or take --artifact), then deploy to every host of the environment
    ///
    /// Every host is locked before any changes. The artifact is uploaded where it is not
    /// cached, unpacked into a new release everywhere (staging), then each host switches
    /// `current` atomically, restarts the service and is health-checked. When a host is
    /// unhealthy, every host this run switched goes back to its previous release (exit 5;
    /// 6 if one could not be put back). Hosts already on this artifact are left alone.
    Deploy(DeployArgs),

    /// Switch every host back to its previous good release (or --to RELEASE)
    ///
    /// No upload, no unpack: lock, switch, restart, health-check, history, unlock. The
    /// release left is marked rolled-back, so running it again goes one further back.
    Rollback(RollbackArgs),

    /// What runs where: one row per host
    ///
    /// Current release, version and commit, service state and since when, health now,
    /// lock holder and its age, number of releases; a line flags hosts on different
    /// releases. Exit 4 when a host cannot be reached, else 0.
    Status(StatusArgs),

    /// Remove a deploy lock left by a dead deploy, printing who held it
    Unlock(UnlockArgs),

    /// The app's journal on the hosts, each line prefixed with its host
    ///
    /// Without `-f`, the last lines of every host merged in time order; with `-f`, then
    /// new lines as they come until Ctrl-C. Behind the proxy, every slot's instance.
    Logs(LogsArgs),

    /// Run a command on the hosts, in the live release with its .env loaded
    ///
    /// e.g. `shipit exec -- ./bin/hello migrate --status`. Hosts run it in parallel; each
    /// line of output is prefixed with its host. Exit 0 only when it succeeded on every
    /// host (the failures are listed), 4 when a host cannot be reached.
    Exec(ExecArgs),

    /// Hold deploys and rollbacks on the hosts, saying why, until `shipit unlock`
    ///
    /// Takes the deploy lock by hand with a message; deploys then exit 3 naming it, and
    /// `status` shows it. Exit 3 when a host is already locked by someone else.
    Lock(LockArgs),

    /// Print a shell completion script
    ///
    /// e.g. `shipit completions bash > /etc/bash_completion.d/shipit`
    Completions(CompletionsArgs),

    /// Print the man page (roff) on stdout, or write every page to a directory
    ///
    /// e.g. `shipit man > /usr/local/share/man/man1/shipit.1`, or
    /// `shipit man --dir /usr/local/share/man/man1` for shipit.1 and a shipit-<command>.1
    /// page for every command.
    Man(ManArgs),
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write shipit.1 and shipit-<command>.1 for every command into DIR (created if
    /// missing) and print their paths, instead of printing shipit.1
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// The app's name (default: the current directory's name, made valid)
    #[arg(long, value_name = "NAME")]
    pub app: Option<String>,
}

#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// Print one JSON document instead of YAML
    #[arg(long)]
    pub json: bool,
}

fn duration(s: &str) -> Result<crate::config::Duration, String> {
    crate::config::Duration::parse(s)
}

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// Deploy this prebuilt artifact instead of packaging (checked before any upload)
    #[arg(long, value_name = "FILE")]
    pub artifact: Option<PathBuf>,

    #[command(flatten)]
    pub hosts: Pick,

    /// Connect read-only and print each host's steps and scripts (secrets redacted)
    #[arg(long)]
    pub dry_run: bool,

    /// Package what is there without running the build steps
    #[arg(long)]
    pub no_build: bool,

    /// Deploy even to hosts that already run this artifact
    #[arg(long)]
    pub force: bool,

    /// Hosts switched at once (default: rollout.parallel)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub parallel: Option<u32>,

    /// Hosts that switch first, alone; the rest only once they are healthy
    /// (default: rollout.canary)
    #[arg(long, value_name = "N")]
    pub canary: Option<u32>,

    /// Wait this long for a lock held by someone else (e.g. 5m) instead of exiting 3
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub wait_lock: Option<crate::config::Duration>,

    /// Print the summary as one JSON document on stdout
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub version: VersionArg,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// Go to this release (an id from `shipit status --releases`) instead of the previous one
    #[arg(long, value_name = "RELEASE")]
    pub to: Option<String>,

    #[command(flatten)]
    pub hosts: Pick,

    /// Connect read-only and print what would be done
    #[arg(long)]
    pub dry_run: bool,

    /// Wait this long for a lock held by someone else instead of exiting 3
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub wait_lock: Option<crate::config::Duration>,

    /// Print the summary as one JSON document on stdout
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print one JSON document instead of the table
    #[arg(long)]
    pub json: bool,

    /// List every release on each host with its state, marking the current one
    #[arg(long)]
    pub releases: bool,

    /// Show the last N entries of each host's deploy history
    #[arg(long, value_name = "N")]
    pub history: Option<usize>,

    #[command(flatten)]
    pub hosts: Pick,
}

#[derive(Debug, Args)]
pub struct UnlockArgs {
    #[command(flatten)]
    pub hosts: Pick,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Keep printing new lines until Ctrl-C
    #[arg(long, short)]
    pub follow: bool,

    /// How many lines of each host's journal to show first
    #[arg(long, short = 'n', value_name = "N", default_value_t = 50)]
    pub lines: usize,

    /// Only lines since TIME (journalctl's syntax: "2026-12-05 14:00", "1h ago", "today")
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,

    #[command(flatten)]
    pub hosts: Pick,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    #[command(flatten)]
    pub hosts: Pick,

    /// The command (shell text; words are joined with spaces)
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct LockArgs {
    /// Why deploys are held, e.g. "db maintenance until 14:00"
    #[arg(long, short, value_name = "TEXT")]
    pub message: String,

    #[command(flatten)]
    pub hosts: Pick,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Print one JSON document instead of the table
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub hosts: Pick,
}

#[derive(Debug, Args)]
pub struct VersionArg {
    /// The version to record (default: `git describe --tags --always --dirty`)
    #[arg(long = "app-version", value_name = "VERSION")]
    pub app_version: Option<String>,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    #[command(flatten)]
    pub version: VersionArg,
}

#[derive(Debug, Args)]
pub struct PackageArgs {
    /// Skip the build steps and package what is there
    #[arg(long)]
    pub no_build: bool,

    #[command(flatten)]
    pub version: VersionArg,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}
