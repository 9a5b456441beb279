//! The activate script: switch `current` to a release atomically, install the unit file
//! if it changed, restart or reload the service, and read the health check's baseline,
//! all in one round trip. A deploy activates its new release; a rollback (and a revert)
//! an older one, with the same script.

use super::layout::{CURRENT, RELEASES, UNIT_COPY};
use super::markers::{self, RESTARTED, STEP, SWITCHED, UNIT_INSTALLED};
use super::q;
use crate::config::{RestartMode, ServiceManager};
use crate::ssh::quote::QuoteError;

pub struct Activate<'a> {
    pub id: &'a str,
    pub manager: ServiceManager,
    pub service: &'a str,
    pub sudo: bool,
    pub restart: RestartMode,
    /// The unit file's content, installed when it differs from the host's.
    pub unit: Option<&'a str>,
    /// Run right before the switch: arming the guard (a forward switch) or disarming it
    /// (a revert), see [`super::guard`].
    pub guard: Option<&'a str>,
}

/// `systemctl` for the manager, through `sudo -n` when configured.
pub fn systemctl(manager: ServiceManager, sudo: bool) -> Option<&'static str> {
    match (manager, sudo) {
        (ServiceManager::None, _) => None,
        (ServiceManager::SystemdUser, _) => Some("systemctl --user"),
        (ServiceManager::Systemd, true) => Some("sudo -n systemctl"),
        (ServiceManager::Systemd, false) => Some("systemctl"),
    }
}

/// Switch `current` to `releases/<id>`, install the unit if changed, restart.
pub fn activate(a: &Activate) -> Result<String, QuoteError> {
    let id = q(a.id)?;
    // Switch and restart are one unit: a client that dies (kill -9, a cut link) must not
    // stop this script between them at its next write (SIGPIPE), leaving `current` on the
    // new release and the service on the old one.
    let mut s = String::from("trap '' HUP PIPE\n");
    s.push_str(&format!(
        "[ -d {RELEASES}/{id} ] || {{ echo \"release {} is not on this host\" >&2; exit 1; }}\n",
        a.id
    ));
    if let Some(guard) = a.guard {
        s.push_str(guard);
    }
    s.push_str(&format!("printf '{STEP} switch\\n'\n"));
    // Never `ln -sfn` alone: that unlinks, then links, leaving a moment without `current`.
    s.push_str(&format!(
        "ln -s -- {RELEASES}/{id} .current.tmp.$$ && mv -T -- .current.tmp.$$ {CURRENT} || \
         {{ rm -f -- .current.tmp.$$; exit 1; }}\necho '{SWITCHED}'\n"
    ));
    let Some(ctl) = systemctl(a.manager, a.sudo) else {
        return Ok(s);
    };
    let unit = q(a.service)?;
    if let Some(content) = a.unit {
        let name = if a.service.contains('.') {
            a.service.to_owned()
        } else {
            format!("{}.service", a.service)
        };
        // The release's own copy when it has one (kept at its stage): going back to a
        // release puts back the unit it ran with, not the one of the run that failed.
        let own = format!("{RELEASES}/{id}/{UNIT_COPY}");
        let write = format!(
            "if [ -f {own} ]; then cat {own}; else printf '%s' {}; fi",
            q(content)?
        );
        s.push_str(&install_unit_from(a.manager, a.sudo, &name, &write)?);
    }
    let verb = match a.restart {
        RestartMode::Restart => "restart",
        RestartMode::Reload => "reload",
    };
    s.push_str(&format!("printf '{STEP} restart\\n'\n"));
    // A deliberate restart must not be refused by systemd's start limit (5 starts in 10s
    // by default), which a deploy followed by its automatic revert can reach: clear it.
    s.push_str(&format!(
        "{ctl} reset-failed -- {unit} 2>/dev/null\n{ctl} {verb} -- {unit} || exit 1\n\
         echo '{RESTARTED}'\n"
    ));
    // The health check's baseline, read in the same round trip.
    s.push_str(&super::unit::baseline_script(a.manager, a.service)?);
    Ok(s)
}

/// Install unit file `name` with `content` when it differs from the host's, then
/// `daemon-reload` (prints `UNIT_INSTALLED`); nothing without a service manager.
pub fn install_unit(
    manager: ServiceManager,
    sudo: bool,
    name: &str,
    content: &str,
) -> Result<String, QuoteError> {
    install_unit_from(manager, sudo, name, &format!("printf '%s' {}", q(content)?))
}

/// [`install_unit`] with the content from the shell command `write` (its stdout).
pub fn install_unit_from(
    manager: ServiceManager,
    sudo: bool,
    name: &str,
    write: &str,
) -> Result<String, QuoteError> {
    let Some(ctl) = systemctl(manager, sudo) else {
        return Ok(String::new());
    };
    let (dir, install) = match (manager, sudo) {
        (ServiceManager::SystemdUser, _) => ("\"$HOME/.config/systemd/user\"", "install -m 644"),
        (_, true) => ("/etc/systemd/system", "sudo -n install -m 644"),
        (_, false) => ("/etc/systemd/system", "install -m 644"),
    };
    Ok(format!(
        "printf '{STEP} unit\\n'\n\
         u=$(mktemp) && {write} > \"$u\" || exit 1\n\
         if [ \"$(sha256sum < \"$u\")\" != \
         \"$( {{ sha256sum < {dir}/{name}; }} 2>/dev/null)\" ]; then\n  \
         mkdir -p {dir} 2>/dev/null; {install} \"$u\" {dir}/{name} && \
         {ctl} daemon-reload || {{ rm -f \"$u\"; exit 1; }}\n  \
         echo '{UNIT_INSTALLED}'\n\
         fi\n\
         rm -f \"$u\"\n",
        name = q(name)?
    ))
}

/// Remove `current` and stop the service: how a host that had no release before a run
/// switched it is put back.
pub fn stop(manager: ServiceManager, sudo: bool, service: &str) -> Result<String, QuoteError> {
    let stop = match systemctl(manager, sudo) {
        Some(ctl) => format!("{ctl} stop -- {} || true\n", q(service)?),
        None => String::new(),
    };
    Ok(format!("rm -f -- {CURRENT}\n{stop}"))
}

/// Whether the script switched `current` (`SWITCHED`): then `current` has moved, however
/// the rest of it went.
pub fn switched(stdout: &str) -> bool {
    markers::has(stdout, SWITCHED)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::fixtures::{ID, OLDER, UNIT};

    fn activation(id: &str, manager: ServiceManager, sudo: bool, unit: bool) -> String {
        activate(&Activate {
            id,
            manager,
            service: "hello",
            sudo,
            restart: RestartMode::Restart,
            unit: unit.then_some(UNIT),
            guard: None,
        })
        .unwrap()
    }

    #[test]
    fn snapshots() {
        use ServiceManager::{Systemd, SystemdUser};
        insta::assert_snapshot!(
            "activate_unit_install",
            activation(ID, Systemd, false, true)
        );
        insta::assert_snapshot!("activate_no_unit", activation(ID, Systemd, false, false));
        insta::assert_snapshot!("activate_sudo", activation(ID, Systemd, true, true));
        insta::assert_snapshot!(
            "activate_systemd_user",
            activation(ID, SystemdUser, false, true)
        );
        insta::assert_snapshot!(
            "activate_manager_none",
            activation(ID, ServiceManager::None, false, true)
        );
        // A rollback activates an older release with the same builder.
        insta::assert_snapshot!("activate_rollback", activation(OLDER, Systemd, false, true));
        insta::assert_snapshot!(
            "activate_reload",
            activate(&Activate {
                id: ID,
                manager: Systemd,
                service: "hello.socket",
                sudo: true,
                restart: RestartMode::Reload,
                unit: Some(UNIT),
                guard: None,
            })
            .unwrap()
        );
        // With the guard armed before the switch.
        let armed = "echo guard-arming-text\n";
        insta::assert_snapshot!(
            "activate_guarded",
            activate(&Activate {
                id: ID,
                manager: Systemd,
                service: "hello",
                sudo: true,
                restart: RestartMode::Restart,
                unit: None,
                guard: Some(armed),
            })
            .unwrap()
        );
    }

    #[test]
    fn stop_snapshots() {
        insta::assert_snapshot!(
            "stop_sudo",
            stop(ServiceManager::Systemd, true, "hello").unwrap()
        );
        insta::assert_snapshot!(
            "stop_manager_none",
            stop(ServiceManager::None, false, "hello").unwrap()
        );
    }

    #[test]
    fn switched_is_a_whole_line() {
        assert!(switched("@@step switch\n@@switched\n@@step restart\n"));
        assert!(!switched("@@step switch\n"));
        assert!(!switched("log: not @@switched\n"));
    }
}
