//! `~/.ssh/config` then `/etc/ssh/ssh_config` (or one file instead of both, as `ssh -F`),
//! the parts shipit honours: `Host` blocks (patterns with `*`, `?` and `!`), `Match all`,
//! `Include` (with globs, relative to ~/.ssh, or /etc/ssh in the system file), and the
//! keywords `HostName`, `User`, `Port`, `IdentityFile`, `IdentityAgent`, `ProxyJump`,
//! `ProxyCommand`, `UserKnownHostsFile` and `GlobalKnownHostsFile`. Other keywords are
//! ignored. Like OpenSSH, the first value found for a keyword wins, except
//! `IdentityFile`, which collects every match in order. `Match` blocks other than
//! `Match all` are not applied (their criteria are not evaluated), and each one is a
//! warning naming its file and line, never a silent skip.
//!
//! [`resolve`] turns a host alias plus the explicit settings from deploy.yaml into a
//! [`Target`]; explicit values always win over ~/.ssh/config, which wins over defaults.
//! This is a small parser of our own: the `ssh2-config` crate treats
//! `UserKnownHostsFile` as unsupported and carries algorithm tables we don't need.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::pattern::{match_pattern_list, wildcard_match};
use super::target::{IdentityAgent, KnownHostsPolicy, Target};

const MAX_INCLUDE_DEPTH: usize = 16;
const MAX_JUMP_HOPS: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read ssh config {}: {source}", file.display())]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}:{line}: {message}", file.display())]
    Syntax {
        file: PathBuf,
        line: usize,
        message: String,
    },
    #[error("invalid host `{spec}`: {reason}")]
    HostSpec { spec: String, reason: String },
    #[error("ProxyJump chain for `{alias}` is longer than {MAX_JUMP_HOPS} hops (a loop?)")]
    JumpLoop { alias: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Condition {
    /// `Host` patterns.
    Host(Vec<String>),
    /// A `Match` block we don't evaluate.
    Never,
}

#[derive(Debug, Clone)]
struct Item {
    conditions: Vec<Condition>,
    keyword: String,
    args: Vec<String>,
    /// The line after the keyword, as written (`ProxyCommand` takes it whole).
    rest: String,
    file: PathBuf,
    line: usize,
}

/// A parsed ssh_config file with its includes.
#[derive(Debug, Clone, Default)]
pub struct SshConfig {
    items: Vec<Item>,
    home: PathBuf,
    /// Where relative `Include` paths start (`~/.ssh`, or `/etc/ssh` for the system file).
    include_dir: PathBuf,
    /// What the parse could not honour (`Match` blocks), each naming its file and line.
    pub warnings: Vec<String>,
}

/// The settings ssh_config gives for one alias, before defaults and token expansion.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostConfig {
    pub host_name: Option<String>,
    pub user: Option<String>,
    pub port: Option<u16>,
    pub identity_files: Vec<String>,
    pub proxy_jump: Option<String>,
    /// `ProxyCommand`, as written (tokens not yet expanded).
    pub proxy_command: Option<String>,
    /// `IdentityAgent`, as written.
    pub identity_agent: Option<String>,
    pub user_known_hosts_files: Option<Vec<String>>,
    pub global_known_hosts_files: Option<Vec<String>>,
}

/// `[user@]host[:port]`, as in deploy.yaml host lists and ProxyJump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSpec {
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
}

/// Values set explicitly (deploy.yaml, command line): `None` or empty means "not set".
#[derive(Debug, Clone, Default)]
pub struct Explicit {
    /// Display name; defaults to the alias.
    pub name: Option<String>,
    pub user: Option<String>,
    pub port: Option<u16>,
    pub identity_files: Vec<PathBuf>,
    pub known_hosts: KnownHostsPolicy,
    pub known_hosts_file: Option<PathBuf>,
    /// `[user@]host[:port]`, or several separated by commas (tried in that order).
    pub proxy_jump: Option<String>,
    pub connect_timeout: Option<Duration>,
}

/// Facts about the local side that resolution needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Local {
    pub home: PathBuf,
    pub user: String,
    /// The system's ssh directory (`/etc/ssh`): `ssh_config`, `ssh_known_hosts`.
    pub system: PathBuf,
}

/// Default connect timeout when none is given.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl Local {
    /// `$HOME` and `$USER` (or `$LOGNAME`, or the passwd entry of our uid).
    pub fn from_env() -> Local {
        let home = std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/"));
        let user = ["USER", "LOGNAME"]
            .iter()
            .find_map(|v| std::env::var(v).ok().filter(|u| !u.is_empty()))
            .or_else(passwd_user)
            .unwrap_or_else(|| "root".to_owned());
        Local {
            home,
            user,
            system: PathBuf::from("/etc/ssh"),
        }
    }
}

fn passwd_user() -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata("/proc/self").ok()?.uid().to_string();
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        (f.nth(1)? == uid).then(|| name.to_owned())
    })
}

impl SshConfig {
    /// Reads `~/.ssh/config` then `/etc/ssh/ssh_config` (missing files are empty), as
    /// OpenSSH does; with `only` (`ssh.config_file`), that file alone, as `ssh -F` does.
    pub fn load_for(local: &Local, only: Option<&Path>) -> Result<SshConfig, ConfigError> {
        let ssh_dir = local.home.join(".ssh");
        if let Some(file) = only {
            return SshConfig::load(file, &local.home, &ssh_dir);
        }
        let mut config = SshConfig::load(&ssh_dir.join("config"), &local.home, &ssh_dir)?;
        let system = SshConfig::load(&local.system.join("ssh_config"), &local.home, &local.system)?;
        config.items.extend(system.items);
        config.warnings.extend(system.warnings);
        Ok(config)
    }

    /// Reads `file` (missing: empty config). Relative `Include`
    /// paths are taken from `include_dir`.
    fn load(file: &Path, home: &Path, include_dir: &Path) -> Result<SshConfig, ConfigError> {
        match std::fs::read_to_string(file) {
            Ok(text) => SshConfig::parse_in(&text, file, home, include_dir),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(SshConfig {
                home: home.to_owned(),
                include_dir: include_dir.to_owned(),
                ..SshConfig::default()
            }),
            Err(source) => Err(ConfigError::Read {
                file: file.to_owned(),
                source,
            }),
        }
    }

    /// Parses config text; `file` names it in errors. Included files are read from disk,
    /// relative ones from `home/.ssh`.
    pub fn parse(text: &str, file: &Path, home: &Path) -> Result<SshConfig, ConfigError> {
        SshConfig::parse_in(text, file, home, &home.join(".ssh"))
    }

    fn parse_in(
        text: &str,
        file: &Path,
        home: &Path,
        include_dir: &Path,
    ) -> Result<SshConfig, ConfigError> {
        let mut config = SshConfig {
            home: home.to_owned(),
            include_dir: include_dir.to_owned(),
            ..SshConfig::default()
        };
        config.parse_into(text, file, &[], 0)?;
        Ok(config)
    }

    fn parse_into(
        &mut self,
        text: &str,
        file: &Path,
        outer: &[Condition],
        depth: usize,
    ) -> Result<(), ConfigError> {
        let mut block: Option<Condition> = None;
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let syntax = |message: String| ConfigError::Syntax {
                file: file.to_owned(),
                line,
                message,
            };
            let Some((keyword, args, rest)) = split_line(raw).map_err(|m| syntax(m.to_owned()))?
            else {
                continue;
            };
            let conditions = || {
                let mut c = outer.to_vec();
                c.extend(block.clone());
                c
            };
            match keyword.as_str() {
                "host" => {
                    if args.is_empty() {
                        return Err(syntax("`Host` needs at least one pattern".into()));
                    }
                    block = Some(Condition::Host(args));
                }
                "match" => {
                    // `Match all`, also as `Match final all` or `Match canonical all`
                    // (Fedora's system config has one): every host, on our single pass.
                    let all = args.iter().any(|a| a.eq_ignore_ascii_case("all"))
                        && args.iter().all(|a| {
                            ["all", "final", "canonical"]
                                .iter()
                                .any(|w| a.eq_ignore_ascii_case(w))
                        });
                    block = Some(if all {
                        Condition::Host(vec!["*".into()])
                    } else {
                        self.warnings.push(format!(
                            "{}:{line}: `Match {}` is not evaluated by shipit: the settings \
                             under it are not applied (only `Host` blocks and `Match all` \
                             are); move them under a `Host` block, or set them in deploy.yaml",
                            file.display(),
                            args.join(" ")
                        ));
                        Condition::Never
                    });
                }
                "include" => {
                    if depth >= MAX_INCLUDE_DEPTH {
                        return Err(syntax(format!(
                            "`Include` nested more than {MAX_INCLUDE_DEPTH} deep"
                        )));
                    }
                    let conds = conditions();
                    for pattern in &args {
                        for path in expand_include(pattern, &self.home, &self.include_dir) {
                            let text = match std::fs::read_to_string(&path) {
                                Ok(t) => t,
                                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                                Err(source) => {
                                    return Err(ConfigError::Read { file: path, source });
                                }
                            };
                            self.parse_into(&text, &path, &conds, depth + 1)?;
                        }
                    }
                }
                _ => {
                    if args.is_empty() {
                        return Err(syntax(format!("`{keyword}` needs a value")));
                    }
                    self.items.push(Item {
                        conditions: conditions(),
                        keyword,
                        args,
                        rest,
                        file: file.to_owned(),
                        line,
                    });
                }
            }
        }
        Ok(())
    }

    /// The settings that apply to `alias` (matched against `Host` patterns as typed).
    pub fn query(&self, alias: &str) -> Result<HostConfig, ConfigError> {
        let mut out = HostConfig::default();
        for item in self.items.iter().filter(|item| item.applies_to(alias)) {
            let first = || item.args[0].clone();
            match item.keyword.as_str() {
                "hostname" => {
                    out.host_name.get_or_insert_with(first);
                }
                "user" => {
                    out.user.get_or_insert_with(first);
                }
                "port" if out.port.is_none() => {
                    let port = item.args[0]
                        .parse::<u16>()
                        .ok()
                        .filter(|p| *p != 0)
                        .ok_or_else(|| ConfigError::Syntax {
                            file: item.file.clone(),
                            line: item.line,
                            message: format!("`Port {}` is not a port number", item.args[0]),
                        })?;
                    out.port = Some(port);
                }
                "identityfile" => out.identity_files.push(first()),
                // The first of ProxyJump and ProxyCommand wins, as in OpenSSH.
                "proxyjump" if out.proxy_command.is_none() => {
                    out.proxy_jump.get_or_insert_with(first);
                }
                // The rest of the line, as written (quotes were only grouping).
                "proxycommand" if out.proxy_jump.is_none() => {
                    out.proxy_command.get_or_insert_with(|| item.rest.clone());
                }
                "identityagent" => {
                    out.identity_agent.get_or_insert_with(first);
                }
                "userknownhostsfile" => {
                    out.user_known_hosts_files
                        .get_or_insert_with(|| item.args.clone());
                }
                "globalknownhostsfile" => {
                    out.global_known_hosts_files
                        .get_or_insert_with(|| item.args.clone());
                }
                _ => {}
            }
        }
        Ok(out)
    }
}

impl Item {
    fn applies_to(&self, alias: &str) -> bool {
        self.conditions.iter().all(|c| match c {
            Condition::Host(patterns) => {
                match_pattern_list(patterns.iter().map(String::as_str), alias)
            }
            Condition::Never => false,
        })
    }
}

/// A config line: its keyword, its arguments, the rest of the line as written.
type Line = (String, Vec<String>, String);

/// Splits a config line into a lower-cased keyword, its arguments (double quotes group,
/// `#` starts a comment) and the rest of the line as written. `None` for blank and
/// comment lines.
fn split_line(raw: &str) -> Result<Option<Line>, &'static str> {
    let line = raw.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let end = line
        .find(|c: char| c.is_whitespace() || c == '=')
        .unwrap_or(line.len());
    let keyword = line[..end].to_ascii_lowercase();
    let mut rest = line[end..].trim_start();
    if let Some(r) = rest.strip_prefix('=') {
        rest = r.trim_start();
    }
    let whole = rest.trim_end().to_owned();
    let mut args = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let Some(&c) = chars.peek() else { break };
        if c == '#' {
            break;
        }
        let mut arg = String::new();
        let mut quoted = false;
        while let Some(&c) = chars.peek() {
            if c == '"' {
                quoted = !quoted;
                chars.next();
            } else if c.is_whitespace() && !quoted {
                break;
            } else {
                arg.push(c);
                chars.next();
            }
        }
        if quoted {
            return Err("unterminated quote");
        }
        args.push(arg);
    }
    Ok(Some((keyword, args, whole)))
}

/// `Include` argument to the files it names, sorted; relative paths are under `dir`.
fn expand_include(pattern: &str, home: &Path, dir: &Path) -> Vec<PathBuf> {
    let path = if let Some(rest) = pattern.strip_prefix("~/") {
        home.join(rest)
    } else if Path::new(pattern).is_absolute() {
        PathBuf::from(pattern)
    } else {
        dir.join(pattern)
    };
    let mut found = vec![PathBuf::from("/")];
    for component in path.components().skip(1) {
        let part = component.as_os_str().to_string_lossy().into_owned();
        if part.contains(['*', '?']) {
            found = found
                .iter()
                .flat_map(|dir| {
                    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
                        .into_iter()
                        .flatten()
                        .flatten()
                        .filter(|e| {
                            let name = e.file_name().to_string_lossy().into_owned();
                            !name.starts_with('.') && wildcard_match(&part, &name)
                        })
                        .map(|e| e.path())
                        .collect();
                    names.sort();
                    names
                })
                .collect();
        } else {
            for p in &mut found {
                p.push(&part);
            }
        }
    }
    found
}

/// Parses `[user@]host[:port]` (IPv6 in brackets when a port follows: `[::1]:2222`;
/// a bare IPv6 address without port is accepted too) or `ssh://[user@]host[:port]`.
pub fn parse_host_spec(spec: &str) -> Result<HostSpec, ConfigError> {
    let bad = |reason: &str| ConfigError::HostSpec {
        spec: spec.to_owned(),
        reason: reason.to_owned(),
    };
    let s = spec.strip_prefix("ssh://").unwrap_or(spec);
    let (user, rest) = match s.rsplit_once('@') {
        Some((u, r)) if !u.is_empty() => (Some(u.to_owned()), r),
        Some(_) => return Err(bad("empty user name before `@`")),
        None => (None, s),
    };
    let port_of = |p: &str| {
        p.parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| bad("the port is not a number from 1 to 65535"))
    };
    let (host, port) = if let Some(r) = rest.strip_prefix('[') {
        let (h, after) = r.split_once(']').ok_or_else(|| bad("missing `]`"))?;
        match after {
            "" => (h, None),
            a => (
                h,
                Some(port_of(
                    a.strip_prefix(':')
                        .ok_or_else(|| bad("expected `:port` after `]`"))?,
                )?),
            ),
        }
    } else if rest.matches(':').count() > 1 {
        (rest, None) // bare IPv6
    } else {
        match rest.split_once(':') {
            Some((h, p)) => (h, Some(port_of(p)?)),
            None => (rest, None),
        }
    };
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c == '/') {
        return Err(bad("missing or invalid host name"));
    }
    Ok(HostSpec {
        user,
        host: host.to_owned(),
        port,
    })
}

/// Resolves `alias` into a [`Target`]: explicit values, then ~/.ssh/config, then
/// defaults (port 22, the local user, `~/.ssh/known_hosts`, 10 s timeout).
///
/// Identity files: the explicit ones first, then ssh_config's `IdentityFile`s. Known-hosts
/// files: the explicit file, else ssh_config's `UserKnownHostsFile`, else
/// `~/.ssh/known_hosts`. Jump hosts (`ProxyJump`, explicit first) are resolved through
/// ssh_config too, and get the same known-hosts policy, files, timeout and explicit
/// identity files as the target.
pub fn resolve(
    alias: &str,
    explicit: &Explicit,
    config: &SshConfig,
    local: &Local,
) -> Result<Target, ConfigError> {
    resolve_hop(alias, explicit, config, local, 0)
}

fn resolve_hop(
    alias: &str,
    explicit: &Explicit,
    config: &SshConfig,
    local: &Local,
    depth: usize,
) -> Result<Target, ConfigError> {
    if depth > MAX_JUMP_HOPS {
        return Err(ConfigError::JumpLoop {
            alias: alias.to_owned(),
        });
    }
    let found = config.query(alias)?;
    let user = explicit
        .user
        .clone()
        .or(found.user)
        .unwrap_or_else(|| local.user.clone());
    let port = explicit.port.or(found.port).unwrap_or(22);
    let tokens = Tokens {
        alias,
        host: "",
        port,
        user: &user,
        local,
    };
    let host = match &found.host_name {
        Some(h) => tokens.expand(h),
        None => alias.to_owned(),
    };
    let tokens = Tokens {
        host: &host,
        ..tokens
    };

    let mut identity_files = explicit.identity_files.clone();
    for f in &found.identity_files {
        let path = PathBuf::from(tokens.expand_path(f));
        if f != "none" && !identity_files.contains(&path) {
            identity_files.push(path);
        }
    }
    // The user's files, then the system's (OpenSSH's `GlobalKnownHostsFile`), unless
    // deploy.yaml names the one file to use.
    let expand_all = |files: &[String]| -> Vec<PathBuf> {
        files
            .iter()
            .filter(|f| *f != "none")
            .map(|f| PathBuf::from(tokens.expand_path(f)))
            .collect()
    };
    let known_hosts_files = match (&explicit.known_hosts_file, &found.user_known_hosts_files) {
        (Some(file), _) => vec![expand_tilde(file, &local.home)],
        (None, user) => {
            let mut files = match user {
                Some(files) => expand_all(files),
                None => vec![
                    local.home.join(".ssh/known_hosts"),
                    local.home.join(".ssh/known_hosts2"),
                ],
            };
            files.extend(match &found.global_known_hosts_files {
                Some(global) => expand_all(global),
                None => vec![
                    local.system.join("ssh_known_hosts"),
                    local.system.join("ssh_known_hosts2"),
                ],
            });
            files
        }
    };
    let proxy_command = match (&explicit.proxy_jump, &found.proxy_command) {
        // deploy.yaml's `ssh.proxy_jump` wins over ssh_config's ProxyCommand.
        (Some(_), _) => None,
        (None, Some(c)) if c != "none" => Some(tokens.expand(c)),
        (None, _) => None,
    };
    let identity_agent = match found.identity_agent.as_deref() {
        None | Some("SSH_AUTH_SOCK") => None,
        Some("none") => Some(IdentityAgent::None),
        Some(var) if var.starts_with('$') => Some(
            std::env::var_os(&var[1..])
                .filter(|v| !v.is_empty())
                .map_or(IdentityAgent::None, |v| IdentityAgent::Socket(v.into())),
        ),
        Some(path) => Some(IdentityAgent::Socket(tokens.expand_path(path).into())),
    };
    let connect_timeout = explicit.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT);

    let jump_spec = explicit
        .proxy_jump
        .clone()
        .or(found.proxy_jump)
        .filter(|j| j != "none");
    let proxy_jump = match jump_spec {
        None => None,
        Some(chain) => {
            // "a,b": connect to a, through it to b, through b to the target. Each hop is a
            // Target whose proxy_jump is the hop before it.
            let mut previous: Option<Box<Target>> = None;
            for (i, hop) in chain.split(',').map(str::trim).enumerate() {
                let spec = parse_host_spec(hop)?;
                let hop_explicit = Explicit {
                    name: Some(spec.host.clone()),
                    user: spec.user,
                    port: spec.port,
                    identity_files: explicit.identity_files.clone(),
                    known_hosts: explicit.known_hosts,
                    known_hosts_file: Some(
                        known_hosts_files
                            .first()
                            .cloned()
                            .unwrap_or_else(|| local.home.join(".ssh/known_hosts")),
                    ),
                    // The first hop may have its own ProxyJump in ssh_config; later hops
                    // go through the hop before them.
                    proxy_jump: if i == 0 { None } else { Some("none".into()) },
                    connect_timeout: Some(connect_timeout),
                };
                let mut target = resolve_hop(&spec.host, &hop_explicit, config, local, depth + 1)?;
                target.known_hosts_files = known_hosts_files.clone();
                if i > 0 {
                    target.proxy_jump = previous.take();
                }
                previous = Some(Box::new(target));
            }
            previous
        }
    };

    Ok(Target {
        name: explicit.name.clone().unwrap_or_else(|| alias.to_owned()),
        host,
        port,
        user,
        identity_files: identity_files
            .iter()
            .map(|p| expand_tilde(p, &local.home))
            .collect(),
        known_hosts: explicit.known_hosts,
        known_hosts_files,
        proxy_command: proxy_command.filter(|_| proxy_jump.is_none()),
        proxy_jump,
        identity_agent,
        connect_timeout,
    })
}

/// `~` and `~/...` relative to `home`; anything else as is.
pub fn expand_tilde(path: &Path, home: &Path) -> PathBuf {
    match path.strip_prefix("~") {
        Ok(rest) => home.join(rest),
        Err(_) => path.to_owned(),
    }
}

/// OpenSSH `%` tokens: `%h` host, `%n` alias as typed, `%p` port, `%r` remote user,
/// `%u` local user, `%d` local home, `%%` a percent sign.
struct Tokens<'a> {
    alias: &'a str,
    host: &'a str,
    port: u16,
    user: &'a str,
    local: &'a Local,
}

impl Tokens<'_> {
    fn expand(&self, s: &str) -> String {
        let mut out = String::with_capacity(s.len());
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some('h') => out.push_str(if self.host.is_empty() {
                    self.alias
                } else {
                    self.host
                }),
                Some('n') => out.push_str(self.alias),
                Some('p') => out.push_str(&self.port.to_string()),
                Some('r') => out.push_str(self.user),
                Some('u') => out.push_str(&self.local.user),
                Some('d') => out.push_str(&self.local.home.to_string_lossy()),
                Some('%') => out.push('%'),
                Some(other) => {
                    out.push('%');
                    out.push(other);
                }
                None => out.push('%'),
            }
        }
        out
    }

    fn expand_path(&self, s: &str) -> String {
        let s = self.expand(s);
        match s.strip_prefix("~/") {
            Some(rest) => self.local.home.join(rest).to_string_lossy().into_owned(),
            None if s == "~" => self.local.home.to_string_lossy().into_owned(),
            None => s,
        }
    }
}

#[cfg(test)]
#[path = "ssh_config_tests.rs"]
mod tests;
