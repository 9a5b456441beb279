//! deploy.yaml: loading, environment merge, `${VAR}` interpolation and validation.
//!
//! `load` turns a file, an optional environment name and the process environment into
//! one fully resolved `Config`, or a `ConfigError` listing every problem with its
//! file:line:column. Nothing downstream ever sees raw YAML, an unresolved `${VAR}`, or
//! an invalid value.

mod duration;
mod error;
mod health;
mod hooks;
pub mod host;
pub mod interpolate;
mod proxy;
pub mod raw;
mod roles;
mod store;
mod types;

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use serde_saphyr::{MessageFormatter, Spanned};

pub use duration::Duration;
pub use error::{ConfigError, Problem};
pub use host::HostSpec;
pub use raw::{DeltaMode, KnownHostsPolicy, OnFailure, ProxyMode, RestartMode, ServiceManager};
pub use types::*;

use crate::redact::Text;
use interpolate::Lookup;
use raw::{HostEntry, Layer, List, S};

pub const DEFAULT_FILE: &str = "deploy.yaml";

/// Read, merge, interpolate and validate `file` for environment `env`.
pub fn load(file: &Path, env: Option<&str>, lookup: &dyn Lookup) -> Result<Config, ConfigError> {
    let fail = |message: String, hint: Option<String>| ConfigError {
        file: file.to_owned(),
        problems: vec![Problem {
            line: 0,
            column: 0,
            message,
            hint,
        }],
    };
    let text = std::fs::read_to_string(file).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => fail(
            "no such file".into(),
            Some("run `shipit init` to write a starter deploy.yaml, or pass `-c FILE`".into()),
        ),
        _ => fail(format!("cannot read the file: {e}"), None),
    })?;
    load_str(&text, file, env, lookup)
}

/// `load` on text already read: `file` names it in messages and its directory is where
/// relative paths start. Pure apart from checking that `service.unit_file` exists.
pub fn load_str(
    text: &str,
    file: &Path,
    env: Option<&str>,
    lookup: &dyn Lookup,
) -> Result<Config, ConfigError> {
    let dir = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let mut ctx = Ctx {
        file,
        dir: &dir,
        lookup,
        problems: Vec::new(),
        roles: None,
        role: None,
    };
    let layer = parse(text).map_err(|p| ConfigError {
        file: file.to_owned(),
        problems: vec![p],
    })?;
    let config = ctx.resolve_document(layer, env);
    match config {
        Some(config) if ctx.problems.is_empty() => Ok(config),
        _ => {
            let mut problems = ctx.problems;
            problems.sort_by(|a, b| {
                (a.line, a.column, &a.message).cmp(&(b.line, b.column, &b.message))
            });
            // Each role resolves the top level's keys again: one problem, said once.
            problems
                .dedup_by(|a, b| (a.line, a.column, &a.message) == (b.line, b.column, &b.message));
            Err(ConfigError {
                file: file.to_owned(),
                problems,
            })
        }
    }
}

fn parse(text: &str) -> Result<Layer, Problem> {
    if text.trim().is_empty() {
        return Err(Problem {
            line: 0,
            column: 0,
            message: "the file is empty".into(),
            hint: Some("run `shipit init` elsewhere to see a starter deploy.yaml".into()),
        });
    }
    serde_saphyr::from_str::<Option<Layer>>(text)
        .map_err(|e| yaml_problem(&e))?
        .ok_or_else(|| Problem {
            line: 0,
            column: 0,
            message: "the file holds no mapping".into(),
            hint: Some("deploy.yaml is a mapping of keys, starting with `app:`".into()),
        })
}

fn yaml_problem(e: &serde_saphyr::Error) -> Problem {
    let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
    let inner = e.without_snippet();
    let (message, hint) = match inner {
        serde_saphyr::Error::SerdeUnknownField {
            field, expected, ..
        } => {
            let hint = match error::closest(field, expected.iter().copied()) {
                Some(close) => format!("did you mean `{close}`?"),
                None => format!("valid keys here: {}", expected.join(", ")),
            };
            (format!("unknown key `{field}`"), Some(hint))
        }
        serde_saphyr::Error::SerdeUnknownVariant {
            variant, expected, ..
        } => {
            let hint = if expected.contains(&"accept-new") {
                "there is no mode that skips host-key checks: use `strict`, or `accept-new` \
                 to record keys of hosts seen for the first time"
                    .to_owned()
            } else {
                match error::closest(variant, expected.iter().copied()) {
                    Some(close) => format!("did you mean `{close}`?"),
                    None => format!("expected one of: {}", expected.join(", ")),
                }
            };
            (format!("`{variant}` is not a valid value here"), Some(hint))
        }
        other => {
            let text = serde_saphyr::DefaultMessageFormatter.format_message(other);
            (text.escape_debug().to_string(), None)
        }
    };
    Problem {
        line,
        column,
        message,
        hint,
    }
}

struct Ctx<'a> {
    file: &'a Path,
    dir: &'a Path,
    lookup: &'a dyn Lookup,
    problems: Vec<Problem>,
    /// The roles' names, when the file has `roles:`.
    roles: Option<Vec<String>>,
    /// The role being resolved.
    role: Option<String>,
}

fn place<T>(s: &Spanned<T>) -> (u64, u64) {
    (s.referenced.line(), s.referenced.column())
}

impl Ctx<'_> {
    fn problem_at(&mut self, at: (u64, u64), message: String, hint: Option<&str>) {
        self.problems.push(Problem {
            line: at.0,
            column: at.1,
            message,
            hint: hint.map(str::to_owned),
        });
    }

    fn problem<T>(&mut self, s: &Spanned<T>, message: String, hint: Option<&str>) {
        self.problem_at(place(s), message, hint);
    }

    fn resolve_document(&mut self, mut top: Layer, chosen: Option<&str>) -> Option<Config> {
        let envs = top.environments.take().unwrap_or_default();
        for (name, layer) in &envs {
            if let Some(d) = &layer.value.default_env {
                self.problem(
                    d,
                    format!("`default_env` belongs at the top level, not in environment `{name}`"),
                    None,
                );
            }
            if layer.value.environments.is_some() {
                self.problem(
                    layer,
                    format!("environment `{name}` cannot hold `environments`"),
                    None,
                );
            }
        }
        let known_owned: Vec<String> = envs.keys().cloned().collect();
        let known: Vec<&str> = known_owned.iter().map(String::as_str).collect();
        if let Some(d) = &top.default_env
            && !envs.contains_key(&d.value)
        {
            let hint = known_list(&known);
            self.problem(
                d,
                format!(
                    "`default_env` names `{}`, which is not defined under `environments`",
                    d.value
                ),
                Some(&hint),
            );
            // Without `-e`, the broken default is the only problem worth reporting.
            chosen?;
        }
        let name = match (chosen, &top.default_env) {
            (Some(name), _) => Some(name.to_owned()),
            (None, Some(d)) => Some(d.value.clone()),
            (None, None) if envs.len() == 1 => envs.keys().next().cloned(),
            (None, None) if envs.is_empty() => None,
            (None, None) => {
                self.problem_at(
                    (0, 0),
                    format!(
                        "several environments are defined ({}) and none was chosen",
                        known.join(", ")
                    ),
                    Some("pass `-e ENV` (or set SHIPIT_ENV), or set `default_env`"),
                );
                return None;
            }
        };
        let mut merged = match &name {
            None => top,
            Some(name) => {
                let mut envs = envs;
                match envs.remove(name) {
                    Some(layer) => raw::Merge::merge(top, layer.value),
                    None => {
                        let hint = known_list(&known);
                        self.problem_at(
                            (0, 0),
                            format!("unknown environment `{name}`"),
                            Some(&hint),
                        );
                        return None;
                    }
                }
            }
        };
        if !self.problems.is_empty() {
            return None;
        }
        match merged.roles.take() {
            Some(roles) => self.resolve_roles(merged, roles, name),
            None => self.resolve(merged, name),
        }
    }

    /// Interpolate one string value; `key` names it in errors.
    fn text(&mut self, s: &S<String>, key: &str) -> Option<Text> {
        use interpolate::Error;
        match interpolate::interpolate(&s.value, self.lookup) {
            Ok(i) => Some(Text::new(i.value, i.secret)),
            Err(e) => {
                let (message, hint) = match e {
                    Error::Unset(var) => (
                        format!("environment variable `{var}` is not set (needed by `{key}`)"),
                        format!(
                            "export {var}=..., or write `${{{var}:-default}}` to give it a default"
                        ),
                    ),
                    Error::Unterminated => (
                        format!("`{key}`: `${{` without a closing `}}`"),
                        "write `$$` for a literal `$`".into(),
                    ),
                    Error::BadName(n) => (
                        format!("`{key}`: `${{{n}}}` is not a valid variable name"),
                        "names are letters, digits and `_`, not starting with a digit".into(),
                    ),
                    Error::NotUnicode(var) => (
                        format!(
                            "environment variable `{var}` (needed by `{key}`) is not valid UTF-8"
                        ),
                        "set it to UTF-8 text".into(),
                    ),
                };
                self.problem(s, message, Some(&hint));
                None
            }
        }
    }

    fn texts(&mut self, list: &Option<List>, key: &str) -> Vec<Text> {
        let Some(list) = list else { return Vec::new() };
        list.value
            .iter()
            .enumerate()
            .filter_map(|(i, s)| self.text(s, &format!("{key}[{i}]")))
            .collect()
    }

    fn resolve(&mut self, l: Layer, environment: Option<String>) -> Option<Config> {
        let app = match &l.app {
            None => {
                self.problem_at(
                    (0, 0),
                    "missing required key `app`".into(),
                    Some("add e.g. `app: hello` (lowercase letters, digits, `-`, `_`)"),
                );
                None
            }
            Some(s) => {
                let app = self.text(s, "app")?;
                let ok = valid_name(app.expose()) && app.expose().len() <= 64;
                if !ok {
                    self.problem(
                        s,
                        format!("`{app}` is not a valid app name"),
                        Some(
                            "use lowercase letters, digits, `-` and `_`, starting with a letter \
                             or digit (at most 64)",
                        ),
                    );
                }
                ok.then(|| app.expose().to_owned())
            }
        };
        let app_or_placeholder = app.clone().unwrap_or_else(|| "app".into());

        let deploy_to = match &l.deploy_to {
            None => Some(Text::plain(format!("/opt/{app_or_placeholder}"))),
            Some(s) => self.text(s, "deploy_to").filter(|t| {
                let p = t.expose();
                let ok = p.starts_with('/')
                    && p != "/"
                    && !has_dot_dot(p)
                    && !p.contains('\0')
                    && !p.contains('\n');
                if !ok {
                    self.problem(
                        s,
                        format!(
                            "`deploy_to` must be an absolute path other than `/`, without `..`; \
                             got `{t}`"
                        ),
                        Some("e.g. `deploy_to: /opt/hello`"),
                    );
                }
                ok
            }),
        };

        let keep_releases = match &l.keep_releases {
            Some(s) if s.value < 2 => {
                self.problem(
                    s,
                    format!(
                        "`keep_releases` must be at least 2 (the current release and one to roll \
                         back to); got {}",
                        s.value
                    ),
                    None,
                );
                2
            }
            Some(s) => s.value,
            None => 5,
        };
        let delta = l.delta.as_ref().map_or(DeltaMode::Copy, |s| s.value);
        let build = self.texts(&l.build, "build");

        let package = l.package.unwrap_or_default();
        let package = PackageConfig {
            root: package
                .root
                .as_ref()
                .and_then(|s| self.text(s, "package.root"))
                .unwrap_or_else(|| Text::plain(".")),
            include: self.relative_paths(&package.include, "package.include", true),
            exclude: self.relative_paths(&package.exclude, "package.exclude", true),
        };

        let ssh = self.ssh(l.ssh.unwrap_or_default());

        let shared = l.shared.unwrap_or_default();
        let shared = SharedConfig {
            dirs: self.relative_paths(&shared.dirs, "shared.dirs", false),
            files: self.relative_paths(&shared.files, "shared.files", false),
        };

        let mut env = BTreeMap::new();
        for (key, value) in l.env.iter().flatten() {
            if !interpolate::valid_name(key) {
                self.problem(
                    value,
                    format!("`{key}` is not a valid environment variable name"),
                    Some("names are letters, digits and `_`, not starting with a digit"),
                );
            }
            if let Some(t) = self.text(value, &format!("env.{key}")) {
                if t.expose().contains('\0') {
                    self.problem(value, format!("`env.{key}` contains a NUL byte"), None);
                }
                env.insert(key.clone(), t);
            }
        }

        let service = self.service(l.service.unwrap_or_default(), &app_or_placeholder);
        let health = self.health(l.health.unwrap_or_default());

        let hooks = l.hooks.unwrap_or_default();
        let mut before_switch_once = Vec::new();
        let hooks = HooksConfig {
            before_switch: self.hooks(
                &hooks.before_switch,
                "hooks.before_switch",
                Some(&mut before_switch_once),
            ),
            after_switch: self.hooks(&hooks.after_switch, "hooks.after_switch", None),
            after_rollback: self.hooks(&hooks.after_rollback, "hooks.after_rollback", None),
            local_before: self.hooks(&hooks.local_before, "hooks.local_before", None),
            local_after: self.hooks(&hooks.local_after, "hooks.local_after", None),
            before_switch_once,
        };

        let rollout = l.rollout.unwrap_or_default();
        let parallel = match &rollout.parallel {
            Some(s) if s.value == 0 => {
                self.problem(
                    s,
                    "`rollout.parallel` must be at least 1".into(),
                    Some("`parallel: 1` deploys one host at a time"),
                );
                1
            }
            Some(s) => s.value,
            None => 10,
        };
        let confirm_timeout =
            self.positive(&rollout.confirm_timeout, "rollout.confirm_timeout", 60_000);
        let rollout = RolloutConfig {
            confirm_timeout,
            parallel,
            canary: rollout.canary.map_or(1, |s| s.value),
            max_failures: rollout.max_failures.map_or(0, |s| s.value),
            on_failure: rollout.on_failure.map_or(OnFailure::Rollback, |s| s.value),
        };

        let hosts = self.hosts(l.hosts.as_ref());
        let artifacts = l.artifacts.and_then(|a| self.artifacts(a));
        let proxy = l
            .proxy
            .and_then(|p| self.proxy(p, &service, &env, deploy_to.as_ref()));

        Some(Config {
            file: self.file.to_owned(),
            dir: self.dir.to_owned(),
            environment,
            app: app?,
            deploy_to: deploy_to?,
            keep_releases,
            delta,
            build,
            package,
            ssh,
            shared,
            env,
            service,
            health,
            hooks,
            rollout,
            proxy,
            artifacts,
            hosts,
            roles: Vec::new(),
        })
    }

    /// Paths that must stay below a root: relative, no `..`. Globs allowed when `glob`.
    fn relative_paths(&mut self, list: &Option<List>, key: &str, glob: bool) -> Vec<Text> {
        let Some(list) = list else { return Vec::new() };
        let mut out = Vec::new();
        for (i, s) in list.value.iter().enumerate() {
            let Some(t) = self.text(s, &format!("{key}[{i}]")) else {
                continue;
            };
            let p = t.expose();
            if p.is_empty()
                || p.starts_with('/')
                || has_dot_dot(p)
                || p.contains('\0')
                || p.contains('\n')
            {
                self.problem(
                    s,
                    format!("`{key}` entries must be relative paths without `..`; got `{t}`"),
                    None,
                );
                continue;
            }
            if !glob && p.contains(['*', '?', '[', '{']) {
                self.problem(
                    s,
                    format!("`{key}` takes plain paths, not globs; got `{t}`"),
                    None,
                );
                continue;
            }
            if let Err(e) = glob_check(p, glob) {
                self.problem(s, format!("`{key}`: `{t}` is not a valid glob: {e}"), None);
                continue;
            }
            out.push(t);
        }
        out
    }

    fn ssh(&mut self, s: raw::Ssh) -> SshConfig {
        let user = s.user.as_ref().and_then(|u| {
            let t = self.text(u, "ssh.user")?;
            if !host::valid_user(t.expose()) {
                self.problem(u, format!("`{t}` is not a valid user name"), None);
                return None;
            }
            Some(t)
        });
        let port = s.port.as_ref().and_then(|p| {
            if p.value == 0 {
                self.problem(p, "`ssh.port` must be between 1 and 65535".into(), None);
                return None;
            }
            Some(p.value)
        });
        let proxy_jump = s.proxy_jump.as_ref().and_then(|p| {
            let t = self.text(p, "ssh.proxy_jump")?;
            host::parse(t.expose())
                .map_err(|e| self.problem(p, format!("`ssh.proxy_jump`: {e}"), None))
                .ok()
        });
        let connect_timeout = self.positive(&s.connect_timeout, "ssh.connect_timeout", 10_000);
        let max_concurrent_starts = match &s.max_concurrent_starts {
            Some(n) if n.value == 0 => {
                self.problem(
                    n,
                    "`ssh.max_concurrent_starts` must be at least 1".into(),
                    None,
                );
                1
            }
            Some(n) => n.value,
            None => crate::ssh::DEFAULT_CONNECT_LIMIT as u32,
        };
        SshConfig {
            user,
            port,
            identity_files: self.texts(&s.identity_files, "ssh.identity_files"),
            known_hosts: s.known_hosts.map_or(KnownHostsPolicy::Strict, |k| k.value),
            known_hosts_file: s
                .known_hosts_file
                .as_ref()
                .and_then(|f| self.text(f, "ssh.known_hosts_file")),
            config_file: s
                .config_file
                .as_ref()
                .and_then(|f| self.text(f, "ssh.config_file")),
            proxy_jump,
            connect_timeout,
            max_concurrent_starts,
        }
    }

    fn positive(&mut self, d: &Option<S<Duration>>, key: &str, default_ms: u64) -> Duration {
        match d {
            Some(s) if s.value.0.is_zero() => {
                self.problem(s, format!("`{key}` must be longer than 0s"), None);
                Duration(std::time::Duration::from_millis(default_ms))
            }
            Some(s) => s.value,
            None => Duration(std::time::Duration::from_millis(default_ms)),
        }
    }

    fn service(&mut self, s: raw::Service, app: &str) -> ServiceConfig {
        let name = match &s.name {
            None => app.to_owned(),
            Some(n) => match self.text(n, "service.name") {
                Some(t) if valid_unit(t.expose()) => t.expose().to_owned(),
                Some(t) => {
                    self.problem(
                        n,
                        format!("`{t}` is not a valid systemd unit name"),
                        Some("letters, digits and `:_.@-`, e.g. `hello` or `hello.service`"),
                    );
                    app.to_owned()
                }
                None => app.to_owned(),
            },
        };
        let unit_file = s.unit_file.as_ref().and_then(|u| {
            let t = self.text(u, "service.unit_file")?;
            let path = self.dir.join(t.expose());
            if !path.is_file() {
                self.problem(
                    u,
                    format!(
                        "`service.unit_file`: `{t}` does not exist (relative paths start at the \
                         config's directory)"
                    ),
                    None,
                );
                return None;
            }
            Some(t)
        });
        ServiceConfig {
            name,
            manager: s.manager.map_or(ServiceManager::Systemd, |m| m.value),
            unit_file,
            sudo: s.sudo.is_some_and(|b| b.value),
            restart: s.restart.map_or(RestartMode::Restart, |r| r.value),
        }
    }

    fn hosts(&mut self, hosts: Option<&S<Vec<S<HostEntry>>>>) -> Vec<Host> {
        let mut out: Vec<Host> = Vec::new();
        let Some(hosts) = hosts else { return out };
        for (i, entry) in hosts.value.iter().enumerate() {
            let key = format!("hosts[{i}]");
            let host = match &entry.value {
                HostEntry::Short(text) => {
                    let s = S {
                        value: text.clone(),
                        referenced: entry.referenced,
                        defined: entry.defined,
                    };
                    let Some(t) = self.text(&s, &key) else {
                        continue;
                    };
                    match host::parse(t.expose()) {
                        Ok(spec) => Host {
                            name: default_name(&spec),
                            host: spec.host,
                            user: spec.user,
                            port: spec.port,
                        },
                        Err(e) => {
                            self.problem(entry, format!("`{key}`: {e}"), None);
                            continue;
                        }
                    }
                }
                HostEntry::Object(o) => {
                    let Some(h) = self.text(&o.host, &format!("{key}.host")) else {
                        continue;
                    };
                    if !host::valid_host(h.expose()) {
                        self.problem(
                            &o.host,
                            format!("`{key}.host`: `{h}` is not a valid host name or address"),
                            None,
                        );
                        continue;
                    }
                    let user = o.user.as_ref().and_then(|u| {
                        let t = self.text(u, &format!("{key}.user"))?;
                        if !host::valid_user(t.expose()) {
                            self.problem(u, format!("`{t}` is not a valid user name"), None);
                        }
                        Some(t.expose().to_owned())
                    });
                    let port = o.port.as_ref().map(|p| {
                        if p.value == 0 {
                            self.problem(
                                p,
                                format!("`{key}.port` must be between 1 and 65535"),
                                None,
                            );
                        }
                        p.value
                    });
                    let spec = HostSpec {
                        user: None,
                        host: h.expose().to_owned(),
                        port,
                    };
                    let name = match &o.name {
                        None => default_name(&spec),
                        Some(n) => match self.text(n, &format!("{key}.name")) {
                            Some(t) if valid_host_name(t.expose()) => t.expose().to_owned(),
                            Some(t) => {
                                self.problem(
                                    n,
                                    format!(
                                        "`{t}` is not a valid host name for output and `--hosts`"
                                    ),
                                    Some("letters, digits and `.-_:`"),
                                );
                                continue;
                            }
                            None => continue,
                        },
                    };
                    Host {
                        name,
                        host: spec.host,
                        user,
                        port,
                    }
                }
            };
            if out.iter().any(|h| h.name == host.name) {
                self.problem(
                    entry,
                    format!("host `{}` is listed twice", host.name),
                    Some("give one of them a distinct `name:`"),
                );
                continue;
            }
            out.push(host);
        }
        out
    }
}

fn known_list(known: &[&str]) -> String {
    if known.is_empty() {
        "no environments are defined in this file".into()
    } else {
        format!("known environments: {}", known.join(", "))
    }
}

fn default_name(spec: &HostSpec) -> String {
    HostSpec {
        user: None,
        ..spec.clone()
    }
    .to_string()
}

/// An app name: `[a-z0-9][a-z0-9_-]*` (length is checked by the caller).
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

fn valid_unit(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ":_.@-".contains(c))
}

fn valid_host_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-_:[]".contains(c))
}

fn has_dot_dot(path: &str) -> bool {
    Path::new(path)
        .components()
        .any(|c| c == Component::ParentDir)
}

fn glob_check(pattern: &str, glob: bool) -> Result<(), String> {
    if glob {
        globset::Glob::new(pattern.trim_end_matches('/'))
            .map(drop)
            .map_err(|e| e.kind().to_string())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests;
