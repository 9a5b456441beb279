//! From the config's hosts to SSH targets: deploy.yaml's values win, ~/.ssh/config fills
//! in the rest (HostName, User, Port, IdentityFile, ProxyJump, UserKnownHostsFile).

use std::path::{Path, PathBuf};

use crate::config::{Config, KnownHostsPolicy};
use crate::exit::{Exit, Failure};
use crate::ssh::{self, Target, ssh_config};

/// Every host of the environment, or those named in `only` (by name), as SSH targets.
pub fn resolve(config: &Config, only: Option<&[String]>) -> Result<Vec<Target>, Failure> {
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
    if let Some(only) = only {
        let unknown: Vec<&str> = only
            .iter()
            .filter(|n| !config.hosts.iter().any(|h| &h.name == *n))
            .map(String::as_str)
            .collect();
        if !unknown.is_empty() {
            let known: Vec<&str> = config.hosts.iter().map(|h| h.name.as_str()).collect();
            return Err(Failure::new(
                Exit::Invalid,
                format!("unknown host(s) in --hosts: {}", unknown.join(", ")),
            )
            .hint(format!("hosts here: {}", known.join(", "))));
        }
    }
    let local = ssh_config::Local::from_env();
    let user_config = ssh_config::SshConfig::load_user(&local)
        .map_err(|e| Failure::new(Exit::Invalid, format!("~/.ssh/config: {e}")))?;
    let ssh = &config.ssh;
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
    config
        .hosts
        .iter()
        .filter(|h| only.is_none_or(|only| only.contains(&h.name)))
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
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use crate::ssh::ssh_config::expand_tilde;

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
