//! The YAML schema of deploy.yaml, exactly as written: every key optional, every leaf
//! carrying its source location, so that validation after parsing can still point at
//! file:line:column. One `Layer` type serves both the top level and each environment,
//! which is what makes "an environment may override any key" a field-by-field merge.

use std::collections::BTreeMap;

use indexmap::IndexMap;
use serde::Deserialize;
use serde_saphyr::Spanned;

use super::duration::Duration;

pub type S<T> = Spanned<T>;
pub type List = S<Vec<S<String>>>;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layer {
    pub app: Option<S<String>>,
    pub deploy_to: Option<S<String>>,
    pub keep_releases: Option<S<u32>>,
    pub delta: Option<S<DeltaMode>>,
    pub default_env: Option<S<String>>,
    pub build: Option<List>,
    pub package: Option<Package>,
    pub ssh: Option<Ssh>,
    pub shared: Option<Shared>,
    pub env: Option<BTreeMap<String, S<String>>>,
    pub service: Option<Service>,
    pub health: Option<Health>,
    pub hooks: Option<Hooks>,
    pub rollout: Option<Rollout>,
    pub proxy: Option<Proxy>,
    pub artifacts: Option<Artifacts>,
    pub hosts: Option<S<Vec<S<HostEntry>>>>,
    /// In the file's order: the first role's first host is the canary, and runs a
    /// `once` hook that every role has.
    pub roles: Option<S<IndexMap<String, S<Role>>>>,
    pub environments: Option<BTreeMap<String, S<Layer>>>,
}

/// `roles.<name>`: its hosts, and what it sets over the top level.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Role {
    pub hosts: Option<S<Vec<S<HostEntry>>>>,
    pub deploy_to: Option<S<String>>,
    pub env: Option<BTreeMap<String, S<String>>>,
    pub service: Option<Service>,
    pub health: Option<Health>,
    pub hooks: Option<Hooks>,
    pub proxy: Option<Proxy>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Package {
    pub root: Option<S<String>>,
    pub include: Option<List>,
    pub exclude: Option<List>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ssh {
    pub user: Option<S<String>>,
    pub port: Option<S<u16>>,
    pub identity_files: Option<List>,
    pub known_hosts: Option<S<KnownHostsPolicy>>,
    pub known_hosts_file: Option<S<String>>,
    pub config_file: Option<S<String>>,
    pub proxy_jump: Option<S<String>>,
    pub connect_timeout: Option<S<Duration>>,
    pub max_concurrent_starts: Option<S<u32>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shared {
    pub dirs: Option<List>,
    pub files: Option<List>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub name: Option<S<String>>,
    pub manager: Option<S<ServiceManager>>,
    pub unit_file: Option<S<String>>,
    pub sudo: Option<S<bool>>,
    pub restart: Option<S<RestartMode>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Health {
    pub http: Option<Http>,
    pub command: Option<S<String>>,
    pub timeout: Option<S<Duration>>,
    pub interval: Option<S<Duration>>,
    pub settle: Option<S<Duration>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Http {
    pub url: Option<S<String>>,
    pub status: Option<S<u16>>,
    pub contains: Option<S<String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hooks {
    pub before_switch: Option<HookList>,
    pub after_switch: Option<HookList>,
    pub after_rollback: Option<HookList>,
    pub local_before: Option<HookList>,
    pub local_after: Option<HookList>,
}

pub type HookList = S<Vec<S<HookEntry>>>;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rollout {
    pub parallel: Option<S<u32>>,
    pub canary: Option<S<u32>>,
    pub max_failures: Option<S<u32>>,
    pub on_failure: Option<S<OnFailure>>,
    pub confirm_timeout: Option<S<Duration>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Proxy {
    pub listen: Option<S<u16>>,
    pub slots: Option<S<Vec<S<u16>>>>,
    pub mode: Option<S<ProxyMode>>,
    pub drain_timeout: Option<S<Duration>>,
    pub watch: Option<S<Duration>>,
    pub steps: Option<S<Vec<S<u32>>>>,
    pub analysis: Option<Analysis>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Artifacts {
    pub store: Option<S<String>>,
    pub endpoint: Option<S<String>>,
    pub region: Option<S<String>>,
    pub url_ttl: Option<S<Duration>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Analysis {
    pub interval: Option<S<Duration>>,
    pub max_error_rate: Option<S<String>>,
    pub max_response_time: Option<S<Duration>>,
}

/// A host as written: `[user@]host[:port]`, or an object.
#[derive(Debug, Clone)]
pub enum HostEntry {
    Short(String),
    Object(Box<HostObject>),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostObject {
    pub host: S<String>,
    pub name: Option<S<String>>,
    pub user: Option<S<String>>,
    pub port: Option<S<u16>>,
}

impl<'de> Deserialize<'de> for HostEntry {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        string_or_object(
            d,
            "a host as `[user@]host[:port]` or an object with `host`",
            HostEntry::Short,
            |o| HostEntry::Object(Box::new(o)),
        )
    }
}

/// A value written either as a string (`short`) or as an object `O` (`object`).
fn string_or_object<'de, D, T, O>(
    d: D,
    expecting: &'static str,
    short: fn(String) -> T,
    object: fn(O) -> T,
) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    O: Deserialize<'de>,
{
    struct Visitor<T, O> {
        expecting: &'static str,
        short: fn(String) -> T,
        object: fn(O) -> T,
    }
    impl<'de, T, O: Deserialize<'de>> serde::de::Visitor<'de> for Visitor<T, O> {
        type Value = T;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str(self.expecting)
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<T, E> {
            Ok((self.short)(v.to_owned()))
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            O::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(self.object)
        }
    }
    d.deserialize_any(Visitor {
        expecting,
        short,
        object,
    })
}

/// A hook as written: a command, or an object (`run`, and for `before_switch`, `once`;
/// with roles, `roles`).
#[derive(Debug, Clone)]
pub enum HookEntry {
    Short(String),
    Object(HookObject),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookObject {
    pub run: S<String>,
    pub once: Option<S<bool>>,
    /// Only hosts of these roles run it.
    pub roles: Option<List>,
}

impl<'de> Deserialize<'de> for HookEntry {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        string_or_object(
            d,
            "a shell command, or an object with `run` (and `once`)",
            HookEntry::Short,
            HookEntry::Object,
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeltaMode {
    Copy,
    Hardlink,
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KnownHostsPolicy {
    Strict,
    AcceptNew,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServiceManager {
    Systemd,
    SystemdUser,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartMode {
    Restart,
    Reload,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnFailure {
    Rollback,
    Halt,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProxyMode {
    Http,
    Tcp,
}

/// Field-by-field overlay: `over` wins where it sets a value; sections merge deeply,
/// maps merge key by key, lists are replaced whole.
pub trait Merge {
    fn merge(self, over: Self) -> Self;
}

impl<T: Merge> Merge for Option<T> {
    fn merge(self, over: Self) -> Self {
        match (self, over) {
            (Some(base), Some(over)) => Some(base.merge(over)),
            (base, over) => over.or(base),
        }
    }
}

impl<V> Merge for BTreeMap<String, V> {
    fn merge(mut self, over: Self) -> Self {
        self.extend(over);
        self
    }
}

/// Leaves: the overlay's value replaces the base's.
macro_rules! leaf {
    ($($t:ty),*) => {$(
        impl Merge for S<$t> {
            fn merge(self, over: Self) -> Self { over }
        }
    )*};
}
leaf!(
    String,
    u32,
    u16,
    bool,
    Duration,
    DeltaMode,
    KnownHostsPolicy,
    ServiceManager,
    RestartMode,
    OnFailure,
    ProxyMode,
    Vec<S<String>>,
    Vec<S<u16>>,
    Vec<S<u32>>,
    Vec<S<HostEntry>>,
    Vec<S<HookEntry>>
);

macro_rules! merge_struct {
    ($t:ident { $($f:ident),* $(,)? }) => {
        impl Merge for $t {
            fn merge(self, over: Self) -> Self {
                $t { $($f: self.$f.merge(over.$f)),* }
            }
        }
    };
}
merge_struct!(Package {
    root,
    include,
    exclude
});
merge_struct!(Ssh {
    user,
    port,
    identity_files,
    known_hosts,
    known_hosts_file,
    config_file,
    proxy_jump,
    connect_timeout,
    max_concurrent_starts
});
merge_struct!(Shared { dirs, files });
merge_struct!(Service {
    name,
    manager,
    unit_file,
    sudo,
    restart
});
merge_struct!(Health {
    http,
    command,
    timeout,
    interval,
    settle
});
merge_struct!(Http {
    url,
    status,
    contains
});
merge_struct!(Hooks {
    before_switch,
    after_switch,
    after_rollback,
    local_before,
    local_after
});
merge_struct!(Role {
    hosts,
    deploy_to,
    env,
    service,
    health,
    hooks,
    proxy
});

/// An environment's `roles`: a role it names merges into the top level's role of that
/// name (key by key); a role only it names is added.
impl Merge for S<IndexMap<String, S<Role>>> {
    fn merge(mut self, over: Self) -> Self {
        for (name, role) in over.value {
            match self.value.get_mut(&name) {
                Some(base) => base.value = std::mem::take(&mut base.value).merge(role.value),
                None => {
                    self.value.insert(name, role);
                }
            }
        }
        self
    }
}

merge_struct!(Rollout {
    parallel,
    canary,
    max_failures,
    on_failure,
    confirm_timeout
});

merge_struct!(Proxy {
    listen,
    slots,
    mode,
    drain_timeout,
    watch,
    steps,
    analysis
});
merge_struct!(Artifacts {
    store,
    endpoint,
    region,
    url_ttl
});
merge_struct!(Analysis {
    interval,
    max_error_rate,
    max_response_time
});

impl Merge for Layer {
    /// `default_env` and `environments` belong to the top level only; the caller rejects
    /// them inside an environment before merging.
    fn merge(self, over: Self) -> Self {
        Layer {
            app: self.app.merge(over.app),
            deploy_to: self.deploy_to.merge(over.deploy_to),
            keep_releases: self.keep_releases.merge(over.keep_releases),
            delta: self.delta.merge(over.delta),
            default_env: self.default_env,
            build: self.build.merge(over.build),
            package: self.package.merge(over.package),
            ssh: self.ssh.merge(over.ssh),
            shared: self.shared.merge(over.shared),
            env: self.env.merge(over.env),
            service: self.service.merge(over.service),
            health: self.health.merge(over.health),
            hooks: self.hooks.merge(over.hooks),
            rollout: self.rollout.merge(over.rollout),
            proxy: self.proxy.merge(over.proxy),
            artifacts: self.artifacts.merge(over.artifacts),
            hosts: self.hosts.merge(over.hosts),
            roles: self.roles.merge(over.roles),
            environments: None,
        }
    }
}

/// Every key deploy.yaml accepts, as dotted paths. docs/configuration.md is checked
/// against this list by a test, so a key added here and not documented fails the suite.
pub const ALL_KEYS: &[&str] = &[
    "app",
    "deploy_to",
    "keep_releases",
    "delta",
    "default_env",
    "build",
    "package.root",
    "package.include",
    "package.exclude",
    "ssh.user",
    "ssh.port",
    "ssh.identity_files",
    "ssh.known_hosts",
    "ssh.known_hosts_file",
    "ssh.config_file",
    "ssh.proxy_jump",
    "ssh.connect_timeout",
    "ssh.max_concurrent_starts",
    "shared.dirs",
    "shared.files",
    "env",
    "service.name",
    "service.manager",
    "service.unit_file",
    "service.sudo",
    "service.restart",
    "health.http.url",
    "health.http.status",
    "health.http.contains",
    "health.command",
    "health.timeout",
    "health.interval",
    "health.settle",
    "hooks.before_switch",
    "hooks.before_switch.run",
    "hooks.before_switch.once",
    "hooks.before_switch.roles",
    "hooks.after_switch",
    "hooks.after_rollback",
    "hooks.local_before",
    "hooks.local_after",
    "rollout.parallel",
    "rollout.canary",
    "rollout.max_failures",
    "rollout.on_failure",
    "rollout.confirm_timeout",
    "proxy.listen",
    "proxy.slots",
    "proxy.mode",
    "proxy.drain_timeout",
    "proxy.watch",
    "proxy.steps",
    "proxy.analysis.interval",
    "proxy.analysis.max_error_rate",
    "proxy.analysis.max_response_time",
    "artifacts.store",
    "artifacts.endpoint",
    "artifacts.region",
    "artifacts.url_ttl",
    "hosts",
    "roles",
    "roles.hosts",
    "roles.deploy_to",
    "roles.env",
    "roles.service",
    "roles.health",
    "roles.hooks",
    "roles.proxy",
    "environments",
];

#[cfg(test)]
mod tests {
    use super::*;

    /// The keys serde accepts in a section, read from its own unknown-field error.
    fn keys_of(section: &str) -> Vec<String> {
        let yaml = if section.is_empty() {
            "zzz_unknown: 1\n".to_owned()
        } else {
            let mut yaml = String::new();
            let parts: Vec<&str> = section.split('.').collect();
            for (depth, part) in parts.iter().enumerate() {
                yaml.push_str(&format!("{}{part}:\n", "  ".repeat(depth)));
            }
            yaml.push_str(&format!("{}zzz_unknown: 1\n", "  ".repeat(parts.len())));
            yaml
        };
        let err = serde_saphyr::from_str::<Layer>(&yaml).expect_err(section);
        match err.without_snippet() {
            serde_saphyr::Error::SerdeUnknownField { expected, .. } => expected
                .iter()
                .map(|k| {
                    if section.is_empty() {
                        k.to_string()
                    } else {
                        format!("{section}.{k}")
                    }
                })
                .collect(),
            other => panic!("{section}: {other:?}"),
        }
    }

    #[test]
    fn all_keys_is_exactly_what_the_schema_accepts() {
        let sections = [
            "package",
            "ssh",
            "shared",
            "service",
            "health",
            "health.http",
            "hooks",
            "rollout",
            "proxy",
            "proxy.analysis",
            "artifacts",
        ];
        let mut accepted: Vec<String> = keys_of("")
            .into_iter()
            .filter(|k| !sections.contains(&k.as_str()))
            .collect();
        for s in sections {
            accepted.extend(
                keys_of(s)
                    .into_iter()
                    .filter(|k| !sections.contains(&k.as_str())),
            );
        }
        // A hook written as an object (documented under `before_switch`, the one list
        // where `once` means something).
        let hook = serde_saphyr::from_str::<HookObject>("zzz_unknown: 1\n").expect_err("hook");
        match hook.without_snippet() {
            serde_saphyr::Error::SerdeUnknownField { expected, .. } => {
                accepted.extend(expected.iter().map(|k| format!("hooks.before_switch.{k}")))
            }
            other => panic!("hook: {other:?}"),
        }
        // A role's keys (`roles.<name>.<key>`, documented as `roles.<key>`).
        let role = serde_saphyr::from_str::<Role>("zzz_unknown: 1\n").expect_err("role");
        match role.without_snippet() {
            serde_saphyr::Error::SerdeUnknownField { expected, .. } => {
                accepted.extend(expected.iter().map(|k| format!("roles.{k}")))
            }
            other => panic!("role: {other:?}"),
        }
        accepted.sort();
        let mut documented: Vec<String> = ALL_KEYS.iter().map(|k| k.to_string()).collect();
        documented.sort();
        assert_eq!(accepted, documented);
    }
}
