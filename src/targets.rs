//! From the config's hosts to SSH targets: deploy.yaml's values win, ssh_config
//! (`~/.ssh/config` then `/etc/ssh/ssh_config`, or `ssh.config_file`) fills in the rest
//! (HostName, User, Port, IdentityFile, IdentityAgent, ProxyJump, ProxyCommand,
//! UserKnownHostsFile, GlobalKnownHostsFile).

use std::path::{Path, PathBuf};

use std::sync::Arc;

use crate::config::{Config, KnownHostsPolicy, Role};
use crate::exit::{Exit, Failure};
use crate::host::HostRun;
use crate::plan::Plan;
use crate::ssh::{self, Target, ssh_config};

/// Which hosts a command works on: `--hosts` and `--roles` (both: hosts in both).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Pick {
    /// Only these hosts (names or globs like `app*`, comma-separated)
    #[arg(long, value_name = "A,B", value_delimiter = ',')]
    pub hosts: Option<Vec<String>>,

    /// Only the hosts of these roles, in these roles (comma-separated)
    #[arg(long, value_name = "R,S", value_delimiter = ',')]
    pub roles: Option<Vec<String>>,
}

/// `--hosts`: names, or globs (`app*`, `web-[12]`), any of which picks a host.
pub struct Selection {
    names: Vec<String>,
    globs: Vec<(String, globset::GlobMatcher)>,
}

impl Selection {
    pub fn new(only: &[String]) -> Result<Selection, String> {
        let mut s = Selection {
            names: Vec::new(),
            globs: Vec::new(),
        };
        for o in only {
            if o.contains(['*', '?', '[', '{']) {
                let g = globset::Glob::new(o)
                    .map_err(|e| format!("--hosts: `{o}` is not a valid glob: {e}"))?;
                s.globs.push((o.clone(), g.compile_matcher()));
            } else {
                s.names.push(o.clone());
            }
        }
        Ok(s)
    }

    pub fn matches(&self, name: &str) -> bool {
        self.names.iter().any(|n| n == name) || self.globs.iter().any(|(_, g)| g.is_match(name))
    }

    /// The selectors that pick none of `names`.
    pub fn unmatched<'a>(&self, names: impl Iterator<Item = &'a str> + Clone) -> Vec<String> {
        let names: Vec<&str> = names.collect();
        self.names
            .iter()
            .filter(|n| !names.contains(&n.as_str()))
            .cloned()
            .chain(
                self.globs
                    .iter()
                    .filter(|(_, g)| !names.iter().any(|n| g.is_match(n)))
                    .map(|(o, _)| o.clone()),
            )
            .collect()
    }
}

/// Every host of the environment, or those `pick` picks (`--hosts`: names or globs;
/// `--roles`: the hosts of those roles), as SSH targets, each host once.
pub fn resolve(
    config: &Config,
    pick: &Pick,
    printer: &crate::printer::Printer,
) -> Result<Vec<Target>, Failure> {
    let only = pick.hosts.as_deref();
    let in_roles = picked_roles(config, pick)?;
    if config.hosts.is_empty() {
        let env = config
            .environment
            .as_deref()
            .map(|e| format!(" in environment `{e}`"))
            .unwrap_or_default();
        return Err(
            Failure::new(Exit::Invalid, format!("no hosts are configured{env}"))
                .hint("list them under `hosts:` (or `environments.<env>.hosts:`) in deploy.yaml"),
        );
    }
    let pick = match only {
        Some(only) => Some(Selection::new(only).map_err(|e| Failure::new(Exit::Invalid, e))?),
        None => None,
    };
    if let Some(pick) = &pick {
        let unknown = pick.unmatched(config.hosts.iter().map(|h| h.name.as_str()));
        if !unknown.is_empty() {
            let known = config.hosts.iter().map(|h| h.name.as_str());
            return Err(unknown_in("host(s)", "--hosts", &unknown, known));
        }
    }
    let local = ssh_config::Local::from_env();
    let ssh = &config.ssh;
    ssh::set_connect_limit(ssh.max_concurrent_starts as usize);
    let config_file = ssh.config_file.as_ref().map(|f| {
        config
            .dir
            .join(ssh_config::expand_tilde(Path::new(f.expose()), &local.home))
    });
    if let Some(file) = &config_file
        && !file.is_file()
    {
        return Err(Failure::new(
            Exit::Invalid,
            format!("ssh.config_file: {} does not exist", file.display()),
        )
        .hint("name an ssh_config file, relative to deploy.yaml or absolute"));
    }
    let user_config = ssh_config::SshConfig::load_for(&local, config_file.as_deref())
        .map_err(|e| Failure::new(Exit::Invalid, format!("ssh_config: {e}")))?;
    for warning in &user_config.warnings {
        printer.warn(warning);
    }
    let known_hosts = match ssh.known_hosts {
        KnownHostsPolicy::Strict => ssh::KnownHostsPolicy::Strict,
        KnownHostsPolicy::AcceptNew => ssh::KnownHostsPolicy::AcceptNew,
    };
    let identity_files: Vec<PathBuf> = ssh
        .identity_files
        .iter()
        .map(|f| {
            config
                .dir
                .join(ssh_config::expand_tilde(Path::new(f.expose()), &local.home))
        })
        .collect();
    let known_hosts_file = ssh.known_hosts_file.as_ref().map(|f| {
        config
            .dir
            .join(ssh_config::expand_tilde(Path::new(f.expose()), &local.home))
    });
    let targets: Vec<Target> = config
        .hosts
        .iter()
        .filter(|h| pick.as_ref().is_none_or(|p| p.matches(&h.name)))
        .filter(|h| {
            in_roles
                .as_ref()
                .is_none_or(|roles| roles.iter().any(|r| r.has(&h.name)))
        })
        .map(|host| {
            let explicit = ssh_config::Explicit {
                name: Some(host.name.clone()),
                user: host
                    .user
                    .clone()
                    .or_else(|| ssh.user.as_ref().map(|u| u.expose().to_owned())),
                port: host.port.or(ssh.port),
                identity_files: identity_files.clone(),
                known_hosts,
                known_hosts_file: known_hosts_file.clone(),
                proxy_jump: ssh.proxy_jump.as_ref().map(|j| j.to_string()),
                connect_timeout: Some(ssh.connect_timeout.0),
            };
            ssh_config::resolve(&host.host, &explicit, &user_config, &local)
                .map_err(|e| Failure::new(Exit::Invalid, format!("host `{}`: {e}", host.name)))
        })
        .collect::<Result<_, _>>()?;
    open_files_for(&targets)?;
    let default_agent = std::env::var_os("SSH_AUTH_SOCK").map(PathBuf::from);
    for hint in ssh::agent_hint::hints(&targets, default_agent.as_deref()) {
        printer.warn(&hint);
    }
    Ok(targets)
}

/// `--hosts` or `--roles` named what is not there: exit 2, listing what there is.
fn unknown_in<'a, S: AsRef<str>>(
    what: &str,
    flag: &str,
    unknown: &[S],
    known: impl Iterator<Item = &'a str>,
) -> Failure {
    let unknown: Vec<&str> = unknown.iter().map(AsRef::as_ref).collect();
    let known: Vec<&str> = known.collect();
    let kind = what.trim_end_matches("(s)");
    Failure::new(
        Exit::Invalid,
        format!("unknown {what} in {flag}: {}", unknown.join(", ")),
    )
    .hint(format!("{kind}s here: {}", known.join(", ")))
}

/// The roles `--roles` names (`None`: no `--roles`); an unknown one is an error.
fn picked_roles<'a>(config: &'a Config, pick: &Pick) -> Result<Option<Vec<&'a Role>>, Failure> {
    let Some(names) = &pick.roles else {
        return Ok(None);
    };
    if config.roles.is_empty() {
        return Err(
            Failure::new(Exit::Invalid, "--roles: this configuration has no roles")
                .hint("define `roles:` in deploy.yaml, or drop --roles"),
        );
    }
    let unknown: Vec<&str> = names
        .iter()
        .filter(|n| !config.roles.iter().any(|r| &r.name == *n))
        .map(String::as_str)
        .collect();
    if !unknown.is_empty() {
        let known = config.roles.iter().map(|r| r.name.as_str());
        return Err(unknown_in("role(s)", "--roles", &unknown, known));
    }
    Ok(Some(
        config
            .roles
            .iter()
            .filter(|r| names.contains(&r.name))
            .collect(),
    ))
}

/// A command's host runs, from its `targets`: one per host; with roles, one per host and
/// role (`--roles` picks which), named `host/role`, each with its role's plan, in the
/// roles' order and then the hosts'. A host's runs share its one connection.
pub fn runs(
    config: &Config,
    targets: &[Target],
    pick: &Pick,
    plan: &Arc<Plan>,
) -> Result<Vec<HostRun>, Failure> {
    let mut runs = Vec::new();
    let mut own: Option<(&str, Arc<Plan>)> = None;
    for (target, role) in members(config, targets, pick)? {
        let Some(role) = role else {
            runs.push(HostRun::new(target.clone()));
            continue;
        };
        let plan = match &own {
            Some((name, plan)) if *name == role.name => plan.clone(),
            _ => {
                let p = plan.for_role(&role.config, &role.name).map_err(|e| {
                    Failure::new(Exit::Invalid, format!("role `{}`: {e}", role.name))
                })?;
                own.insert((&role.name, Arc::new(p))).1.clone()
            }
        };
        runs.push(HostRun::for_role(target.clone(), &role.name, plan));
    }
    Ok(runs)
}

/// The names of the runs [`runs`] makes (`host`, or `host/role`).
pub fn run_names(config: &Config, targets: &[Target], pick: &Pick) -> Vec<String> {
    members(config, targets, pick)
        .unwrap_or_default()
        .into_iter()
        .map(|(t, role)| match role {
            Some(r) => crate::host::role_run(&t.name, &r.name),
            None => t.name.clone(),
        })
        .collect()
}

pub type Member<'a> = (&'a Target, Option<&'a Role>);

/// Each target with its role (`None` without roles), as [`runs`] pairs them.
pub fn members<'a>(
    config: &'a Config,
    targets: &'a [Target],
    pick: &Pick,
) -> Result<Vec<Member<'a>>, Failure> {
    if config.roles.is_empty() {
        return Ok(targets.iter().map(|t| (t, None)).collect());
    }
    let picked = picked_roles(config, pick)?;
    let mut out = Vec::new();
    for role in &config.roles {
        if picked
            .as_ref()
            .is_some_and(|p| !p.iter().any(|r| r.name == role.name))
        {
            continue;
        }
        out.extend(
            targets
                .iter()
                .filter(|t| role.has(&t.name))
                .map(|t| (t, Some(role))),
        );
    }
    Ok(out)
}

/// Open files a run needs per host: its socket, a jump host's or a ProxyCommand's pipes,
/// a file being read; plus the process's own.
const FILES_PER_HOST: u64 = 4;
const FILES_BASE: u64 = 64;

/// Raises the soft open-files limit to what `targets` need (up to the hard limit), before
/// anything connects; a hard limit too low for them is a clear error, not connections
/// failing one by one with "too many open files" halfway through a deploy.
fn open_files_for(targets: &[Target]) -> Result<(), Failure> {
    let need = FILES_BASE + FILES_PER_HOST * targets.len() as u64;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read or write the struct we pass, nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Ok(()); // Nothing known: let the run try.
    }
    // rlim_t is u64 on Linux.
    let (soft, hard): (u64, u64) = (limit.rlim_cur, limit.rlim_max);
    let unlimited = limit.rlim_max == libc::RLIM_INFINITY;
    if soft >= need {
        return Ok(());
    }
    if !unlimited && hard < need {
        return Err(Failure::new(
            Exit::Invalid,
            format!(
                "{} host(s) need about {need} open files, but this process may open at most \
                 {hard} (its hard limit)",
                targets.len()
            ),
        )
        .hint(
            "raise the hard limit (`ulimit -Hn` as root, `LimitNOFILE=` for a service, \
             `nofile` in /etc/security/limits.conf), or target fewer hosts with --hosts",
        ));
    }
    limit.rlim_cur = if unlimited {
        need
    } else {
        hard.min(need.max(soft * 2))
    };
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        tracing::debug!("could not raise the open-files limit to {}", limit.rlim_cur);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use crate::ssh::ssh_config::expand_tilde;

    #[test]
    fn selections_take_names_and_globs() {
        let s = super::Selection::new(&["app*".into(), "db1".into(), "web-[12]".into()]).unwrap();
        assert!(s.matches("app7") && s.matches("db1") && s.matches("web-2"));
        assert!(!s.matches("db2") && !s.matches("web-3"));
        let names = ["app1", "db1"];
        assert_eq!(
            s.unmatched(names.iter().copied()),
            vec!["web-[12]".to_owned()]
        );
        assert!(super::Selection::new(&["a[".into()]).is_err());
    }

    #[test]
    fn tilde() {
        let home = Path::new("/home/me");
        assert_eq!(
            expand_tilde(Path::new("~/.ssh/id"), home),
            PathBuf::from("/home/me/.ssh/id")
        );
        assert_eq!(
            expand_tilde(Path::new("~"), home),
            PathBuf::from("/home/me")
        );
        assert_eq!(
            expand_tilde(Path::new("keys/id"), home),
            PathBuf::from("keys/id")
        );
        assert_eq!(expand_tilde(Path::new("/abs"), home), PathBuf::from("/abs"));
    }
}
