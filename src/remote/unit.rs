//! The shell text of the health check (`crate::health`), and parsers of what it prints:
//!
//! - [`show_script`]: the unit's state, one `systemctl show` round trip, read back with
//!   [`UnitState::parse`];
//! - [`baseline_script`]: the same, appended to the activate script, every line marked
//!   `@@show ` and read back with [`shown_state`];
//! - [`journal_script`]: the last lines of the unit's journal;
//! - [`command_script`]: the `health.command` check, in the release with its `.env`.

use std::time::Duration;

use super::SH_FROM_ENV;
use super::markers::{self, SHOW};
use crate::config::ServiceManager;
use crate::ssh::quote::{QuoteError, sh_quote};

/// Properties read per attempt (by name: `--value` prints them in systemd's own order,
/// not the order asked for).
pub const PROPERTIES: &str = concat!(
    "Id,LoadState,ActiveState,SubState,Result,Type,NRestarts,",
    "ExecMainStartTimestampMonotonic,ExecMainCode,ExecMainStatus"
);

/// `systemctl --user` over SSH needs the user's runtime dir; PAM usually sets it.
pub const USER_ENV: &str =
    "[ -n \"${XDG_RUNTIME_DIR:-}\" ] || export XDG_RUNTIME_DIR=\"/run/user/$(id -u)\"\n";

/// Prints the unit's [`PROPERTIES`] as `Key=value` lines; read them with
/// [`UnitState::parse`].
pub fn show_script(manager: ServiceManager, service: &str) -> Result<String, QuoteError> {
    let (env, ctl) = match manager {
        ServiceManager::SystemdUser => (USER_ENV, "systemctl --user"),
        _ => ("", "systemctl"),
    };
    Ok(format!(
        "{env}t=\n\
         command -v timeout >/dev/null 2>&1 && t='timeout 10'\n\
         $t {ctl} show -p {PROPERTIES} -- {}\n",
        sh_quote(service)?
    ))
}

/// The shell text that prints what [`shown_state`] reads, for a script that restarts
/// the service and wants the baseline in the same round trip. Empty for `none`.
pub fn baseline_script(manager: ServiceManager, service: &str) -> Result<String, QuoteError> {
    if manager == ServiceManager::None {
        return Ok(String::new());
    }
    // Every line marked as protocol (`@@show`), so none is printed as the host's output;
    // `true` last: a failing `show` leaves the baseline to a second look, not the script.
    Ok(format!(
        "{{ {}}} 2>/dev/null | while IFS= read -r l; do printf '{SHOW} %s\\n' \"$l\"; done\n\
         true\n",
        show_script(manager, service)?
    ))
}

/// The unit state in the output of a script that ran [`baseline_script`]: its `@@show`
/// lines, everything else ignored.
pub fn shown_state(stdout: &str) -> UnitState {
    let shown: Vec<&str> = markers::values(stdout, SHOW).collect();
    UnitState::parse(&shown.join("\n"))
}

/// The last `lines` lines of the unit's journal; `None` for `none`.
///
/// systemd: `journalctl -u` (through `sudo -n` when `sudo`). systemd-user: `journalctl
/// --user -u`, or with `sudo`, the system journal filtered to the user's unit.
pub fn journal_script(
    manager: ServiceManager,
    service: &str,
    sudo: bool,
    lines: usize,
) -> Result<Option<String>, QuoteError> {
    journal_with(manager, service, sudo, &format!("-n {}", lines.max(1)))
}

/// `shipit logs`: the last `lines` lines (0: none) of the service's journal, since `since`
/// when given, with UTC ISO timestamps (so hosts' lines merge in order); `follow` keeps
/// printing new lines.
pub fn logs_script(
    manager: ServiceManager,
    service: &str,
    sudo: bool,
    lines: usize,
    since: Option<&str>,
    follow: bool,
) -> Result<Option<String>, QuoteError> {
    let mut args = format!("-o short-iso --utc -n {lines}");
    if let Some(s) = since {
        args.push_str(&format!(" --since {}", sh_quote(s)?));
    }
    if follow {
        args.push_str(" -f");
    }
    journal_with(manager, service, sudo, &args)
}

/// `journalctl ARGS` for the service's unit, as the manager and `sudo` need it.
fn journal_with(
    manager: ServiceManager,
    service: &str,
    sudo: bool,
    args: &str,
) -> Result<Option<String>, QuoteError> {
    Ok(match manager {
        ServiceManager::None => None,
        ServiceManager::Systemd => {
            let sudo = if sudo { "sudo -n " } else { "" };
            Some(format!(
                "{sudo}journalctl --no-pager {args} -u {}",
                sh_quote(service)?
            ))
        }
        ServiceManager::SystemdUser if sudo => Some(format!(
            "sudo -n journalctl --no-pager {args} {} _UID=\"$(id -u)\"",
            sh_quote(&format!("_SYSTEMD_USER_UNIT={}", unit_name(service)))?
        )),
        ServiceManager::SystemdUser => Some(format!(
            "{}journalctl --user --no-pager {args} -u {}",
            USER_ENV,
            sh_quote(service)?
        )),
    })
}

/// Runs `command` in `release_dir` with the release's `.env` exported, stopped after
/// `limit` where the host has `timeout`. Exits 125 when it cannot start (cd or `.env`
/// failed), 124 when stopped, otherwise with the command's status.
pub fn command_script(
    release_dir: &str,
    command: &str,
    limit: Duration,
) -> Result<String, QuoteError> {
    // coreutils and busybox `timeout` both take fractional seconds.
    let secs = format!("{:.3}", limit.as_secs_f64().max(0.001));
    Ok(format!(
        "cd -- {dir} || exit 125\n\
         if [ -f ./.env ]; then set -a; . ./.env || exit 125; set +a; fi\n\
         SHIPIT_CMD={cmd}; export SHIPIT_CMD\n\
         if command -v timeout >/dev/null 2>&1; then timeout -k 1 {secs} {run}; else {run}; fi\n",
        run = SH_FROM_ENV,
        dir = sh_quote(release_dir)?,
        cmd = sh_quote(command)?,
    ))
}

/// Runs `command` in `current` (in `deploy_to`) with the live release's `.env` exported,
/// its stderr merged into its stdout (`shipit exec`). Exits 125 when there is no live
/// release or it cannot start, otherwise with the command's status.
pub fn exec_script(command: &str) -> Result<String, QuoteError> {
    Ok(format!(
        "[ -d current/ ] || {{ echo 'no live release here (never deployed?)'; exit 125; }}\n\
         cd -P -- current || exit 125\n\
         if [ -f ./.env ]; then set -a; . ./.env || exit 125; set +a; fi\n\
         SHIPIT_CMD={cmd}; export SHIPIT_CMD\n\
         {run} 2>&1 </dev/null\n",
        run = SH_FROM_ENV,
        cmd = sh_quote(command)?,
    ))
}

/// `hello` -> `hello.service`; names with a unit suffix stay as they are.
pub fn unit_name(service: &str) -> String {
    const SUFFIXES: &[&str] = &[
        ".service", ".socket", ".target", ".timer", ".mount", ".path", ".scope", ".slice",
    ];
    if SUFFIXES.iter().any(|s| service.ends_with(s)) {
        service.to_owned()
    } else {
        format!("{service}.service")
    }
}

/// What `systemctl show` said about the unit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitState {
    pub id: String,
    pub load_state: String,
    pub active_state: String,
    pub sub_state: String,
    pub result: String,
    pub unit_type: String,
    pub n_restarts: u64,
    pub main_start: Option<u64>,
    pub main_code: Option<i64>,
    pub main_status: Option<i64>,
}

impl UnitState {
    /// Reads the output of [`show_script`] by name, in any order; other lines are skipped.
    pub fn parse(stdout: &str) -> UnitState {
        let mut s = UnitState::default();
        for line in stdout.lines() {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let value = value.trim();
            match key {
                "Id" => s.id = value.to_owned(),
                "LoadState" => s.load_state = value.to_owned(),
                "ActiveState" => s.active_state = value.to_owned(),
                "SubState" => s.sub_state = value.to_owned(),
                "Result" => s.result = value.to_owned(),
                "Type" => s.unit_type = value.to_owned(),
                "NRestarts" => s.n_restarts = value.parse().unwrap_or(0),
                "ExecMainStartTimestampMonotonic" => {
                    s.main_start = value.parse().ok().filter(|&t| t != 0);
                }
                "ExecMainCode" => s.main_code = value.parse().ok(),
                "ExecMainStatus" => s.main_status = value.parse().ok(),
                _ => {}
            }
        }
        s
    }

    /// The unit's name as systemd gave it, else as [`unit_name`] makes it.
    pub fn name(&self, service: &str) -> String {
        if self.id.is_empty() {
            unit_name(service)
        } else {
            self.id.clone()
        }
    }
}

/// What [`show_script`] prints for a running `hello.service`, in systemd's own order.
#[cfg(test)]
pub(crate) const RUNNING: &str = concat!(
    "Type=simple\nNRestarts=0\nExecMainStartTimestampMonotonic=100\nExecMainCode=0\n",
    "ExecMainStatus=0\nResult=success\nId=hello.service\nLoadState=loaded\n",
    "ActiveState=active\nSubState=running\n"
);

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    #[test]
    fn show_output_is_read_by_name_in_any_order() {
        let s = UnitState::parse(RUNNING);
        assert_eq!(s.id, "hello.service");
        assert_eq!(s.active_state, "active");
        assert_eq!(s.sub_state, "running");
        assert_eq!(s.unit_type, "simple");
        assert_eq!(s.n_restarts, 0);
        assert_eq!(s.main_start, Some(100));
        let s = UnitState::parse("ExecMainStartTimestampMonotonic=0\nNRestarts=7\nbogus line\n");
        assert_eq!(s.main_start, None);
        assert_eq!(s.n_restarts, 7);
    }

    #[test]
    fn unit_names() {
        assert_eq!(unit_name("hello"), "hello.service");
        assert_eq!(unit_name("hello.service"), "hello.service");
        assert_eq!(unit_name("web@1.service"), "web@1.service");
        assert_eq!(unit_name("my.app"), "my.app.service");
    }

    /// Runs a script locally the way `Session::exec` runs it on a host.
    fn sh(script: &str) -> (i32, String) {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("{{\n{script}\n}} </dev/null 2>&1"))
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    #[test]
    fn command_runs_in_the_release_with_its_env() {
        let dir = tempfile::tempdir().unwrap();
        let release = dir.path().join("it's a $(release)");
        std::fs::create_dir(&release).unwrap();
        std::fs::write(
            release.join(".env"),
            "GREETING='hello world'\nexport_me=1\n",
        )
        .unwrap();
        let release = release.to_str().unwrap();
        let limit = Duration::from_secs(5);
        let script = command_script(
            release,
            r#"test "$GREETING" = "hello world" && sh -c 'echo "$export_me"' && pwd"#,
            limit,
        )
        .unwrap();
        let (code, out) = sh(&script);
        assert_eq!(code, 0, "{out}");
        assert_eq!(out, format!("1\n{release}\n"));
        let script = command_script(
            release,
            "echo checking; echo \"db down: $GREETING\" >&2; exit 2",
            limit,
        )
        .unwrap();
        assert_eq!(sh(&script), (2, "checking\ndb down: hello world\n".into()));
        let (code, _) = sh(&command_script("/nonexistent/x", "true", limit).unwrap());
        assert_eq!(code, 125);
        let started = std::time::Instant::now();
        let (code, _) =
            sh(&command_script(release, "sleep 30", Duration::from_millis(10)).unwrap());
        assert_eq!(code, 124);
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    /// Regression: the command ran as `sh -c <command>`, so a secret interpolated into it
    /// with `${VAR}` was in the argv every user of the host sees with `ps`.
    #[test]
    fn the_command_text_never_appears_in_an_argv() {
        let dir = tempfile::tempdir().unwrap();
        let release = dir.path().to_str().unwrap();
        let command =
            "echo \"${SHIPIT_CMD-unset}\"; tr '\\0' ' ' </proc/$$/cmdline; : check-secret-2b7a";
        let (code, out) = sh(&command_script(release, command, Duration::from_secs(5)).unwrap());
        assert_eq!(code, 0, "{out}");
        assert!(out.starts_with("unset\nsh -c "), "{out}");
        assert!(
            !out.contains("check-secret-2b7a"),
            "the command is in its argv: {out}"
        );
    }

    #[test]
    fn scripts_quote_the_unit() {
        let s = show_script(ServiceManager::Systemd, "a b'$(x)").unwrap();
        assert!(s.contains("systemctl show -p Id,LoadState,"), "{s}");
        assert!(s.ends_with("-- 'a b'\\''$(x)'\n"), "{s}");
        let s = show_script(ServiceManager::SystemdUser, "hello").unwrap();
        assert!(
            s.contains("systemctl --user show") && s.contains("XDG_RUNTIME_DIR"),
            "{s}"
        );
        assert_eq!(
            journal_script(ServiceManager::Systemd, "hello", true, 20)
                .unwrap()
                .unwrap(),
            "sudo -n journalctl --no-pager -n 20 -u hello"
        );
        assert_eq!(
            journal_script(ServiceManager::SystemdUser, "hello", true, 5)
                .unwrap()
                .unwrap(),
            concat!(
                "sudo -n journalctl --no-pager -n 5 ",
                "'_SYSTEMD_USER_UNIT=hello.service' _UID=\"$(id -u)\""
            )
        );
        assert!(
            journal_script(ServiceManager::SystemdUser, "hello", false, 5)
                .unwrap()
                .unwrap()
                .contains("journalctl --user --no-pager -n 5 -u hello")
        );
        assert_eq!(
            journal_script(ServiceManager::None, "hello", true, 5).unwrap(),
            None
        );
        assert!(show_script(ServiceManager::Systemd, "a\0b").is_err());
    }

    // The full text of every builder, per variant: review a change to one in its diff.
    // insta ignores a trailing newline, so the scripts that end in one also say so.

    #[test]
    fn show_script_snapshots() {
        use ServiceManager::{Systemd, SystemdUser};
        for manager in [Systemd, SystemdUser] {
            assert!(show_script(manager, "hello").unwrap().ends_with('\n'));
            assert!(baseline_script(manager, "hello").unwrap().ends_with('\n'));
        }
        insta::assert_snapshot!("show_systemd", show_script(Systemd, "hello").unwrap());
        insta::assert_snapshot!(
            "show_systemd_user",
            show_script(SystemdUser, "hello").unwrap()
        );
    }

    #[test]
    fn baseline_script_snapshots() {
        use ServiceManager::{Systemd, SystemdUser};
        insta::assert_snapshot!(
            "baseline_systemd",
            baseline_script(Systemd, "hello").unwrap()
        );
        insta::assert_snapshot!(
            "baseline_systemd_user",
            baseline_script(SystemdUser, "hello").unwrap()
        );
        assert_eq!(baseline_script(ServiceManager::None, "hello").unwrap(), "");
    }

    #[test]
    fn journal_script_snapshots() {
        use ServiceManager::{Systemd, SystemdUser};
        insta::assert_snapshot!(
            "journal_systemd",
            journal_script(Systemd, "hello", false, 20)
                .unwrap()
                .unwrap()
        );
        insta::assert_snapshot!(
            "journal_systemd_sudo",
            journal_script(Systemd, "hello", true, 20).unwrap().unwrap()
        );
        insta::assert_snapshot!(
            "journal_systemd_user",
            journal_script(SystemdUser, "hello", false, 20)
                .unwrap()
                .unwrap()
        );
        insta::assert_snapshot!(
            "journal_systemd_user_sudo",
            journal_script(SystemdUser, "hello", true, 20)
                .unwrap()
                .unwrap()
        );
    }

    #[test]
    fn command_script_snapshot() {
        let script = command_script(
            "/srv/hello/releases/20240101T000000Z",
            "curl -fsS http://127.0.0.1:8080/healthz | grep -q ok",
            Duration::from_millis(2500),
        )
        .unwrap();
        assert!(script.ends_with('\n'));
        insta::assert_snapshot!("command", script);
    }
}
