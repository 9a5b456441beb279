//! The resolved configuration: what every command reads, never raw YAML.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use super::duration::Duration;
use super::host::HostSpec;
use super::raw::{DeltaMode, KnownHostsPolicy, OnFailure, ProxyMode, RestartMode, ServiceManager};
use crate::redact::Text;

/// The resolved configuration for one environment.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// The file as the user named it, for messages.
    #[serde(skip)]
    pub file: PathBuf,
    /// The directory holding the file: build steps run here, relative paths start here.
    #[serde(skip)]
    pub dir: PathBuf,
    pub environment: Option<String>,
    pub app: String,
    pub deploy_to: Text,
    pub keep_releases: u32,
    pub delta: DeltaMode,
    pub build: Vec<Text>,
    pub package: PackageConfig,
    pub ssh: SshConfig,
    pub shared: SharedConfig,
    pub env: BTreeMap<String, Text>,
    pub service: ServiceConfig,
    pub health: HealthConfig,
    pub hooks: HooksConfig,
    pub rollout: RolloutConfig,
    /// Zero-downtime deploys behind HAProxy (`proxy:`), when set.
    pub proxy: Option<ProxyConfig>,
    /// Hosts fetch the artifact from an S3-compatible store (`artifacts:`), when set.
    pub artifacts: Option<ArtifactsConfig>,
    /// Every host; with roles, each host of every role once, in the roles' order.
    pub hosts: Vec<Host>,
    /// `roles:`, in the file's order; empty without roles.
    pub roles: Vec<Role>,
}

/// One role: its name, and the whole configuration its hosts run with.
#[derive(Debug, Clone)]
pub struct Role {
    pub name: String,
    /// The top level with the role's keys over it: the role's hosts, its `deploy_to`
    /// (`{deploy_to}/{role}` unless it sets one), its service, health check, env, proxy
    /// and hooks (the top level's hooks filtered by their `roles:`, unless it sets its
    /// own). It has no roles of its own.
    pub config: Config,
}

impl Role {
    /// Whether the host named `name` is one of this role's.
    pub fn has(&self, name: &str) -> bool {
        self.config.hosts.iter().any(|h| h.name == name)
    }
}

impl Serialize for Role {
    /// What the role sets: the keys a role may hold, resolved.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let c = &self.config;
        let mut m = s.serialize_map(Some(8))?;
        m.serialize_entry("name", &self.name)?;
        m.serialize_entry("hosts", &c.hosts)?;
        m.serialize_entry("deploy_to", &c.deploy_to)?;
        m.serialize_entry("env", &c.env)?;
        m.serialize_entry("service", &c.service)?;
        m.serialize_entry("health", &c.health)?;
        m.serialize_entry("hooks", &c.hooks)?;
        m.serialize_entry("proxy", &c.proxy)?;
        m.end()
    }
}

impl Config {
    /// The configuration the hosts of role `name` run with; `None`: no such role.
    pub fn role(&self, name: &str) -> Option<&Config> {
        self.roles
            .iter()
            .find(|r| r.name == name)
            .map(|r| &r.config)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PackageConfig {
    /// Absolute, or relative to the config's directory.
    pub root: Text,
    pub include: Vec<Text>,
    pub exclude: Vec<Text>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SshConfig {
    pub user: Option<Text>,
    /// `None`: ~/.ssh/config's `Port`, else 22.
    pub port: Option<u16>,
    pub identity_files: Vec<Text>,
    pub known_hosts: KnownHostsPolicy,
    pub known_hosts_file: Option<Text>,
    /// An ssh_config read instead of `~/.ssh/config` and `/etc/ssh/ssh_config`.
    pub config_file: Option<Text>,
    pub proxy_jump: Option<HostSpec>,
    pub connect_timeout: Duration,
    /// Connection starts (TCP, handshake, authentication) in flight at once.
    pub max_concurrent_starts: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct SharedConfig {
    pub dirs: Vec<Text>,
    pub files: Vec<Text>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServiceConfig {
    pub name: String,
    pub manager: ServiceManager,
    pub unit_file: Option<Text>,
    pub sudo: bool,
    pub restart: RestartMode,
}

#[derive(Debug, Clone, Serialize)]
pub struct HealthConfig {
    pub http: Option<HttpCheck>,
    pub command: Option<Text>,
    pub timeout: Duration,
    pub interval: Duration,
    pub settle: Duration,
}

#[derive(Debug, Clone, Serialize)]
pub struct HttpCheck {
    pub url: Text,
    #[serde(skip)]
    pub host: String,
    #[serde(skip)]
    pub port: u16,
    #[serde(skip)]
    pub path: String,
    pub status: u16,
    pub contains: Option<Text>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HooksConfig {
    /// Run on every host, in the staged release, before any host switches.
    pub before_switch: Vec<Text>,
    /// `once: true`: run on one host only, after every host staged (and ran the hooks
    /// above) and before any host switches.
    pub before_switch_once: Vec<OnceHook>,
    pub after_switch: Vec<Text>,
    pub after_rollback: Vec<Text>,
    pub local_before: Vec<Text>,
    pub local_after: Vec<Text>,
}

/// A `once: true` hook. Every role that has it shares it: it runs once in all.
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub struct OnceHook {
    pub run: Text,
    /// Where it is written (line, column): which hook it is, across roles.
    #[serde(skip)]
    pub at: (u64, u64),
}

#[derive(Debug, Clone, Serialize)]
pub struct RolloutConfig {
    pub parallel: u32,
    pub canary: u32,
    pub max_failures: u32,
    pub on_failure: OnFailure,
    /// How long a switched host waits for the deployer's confirmation before its guard
    /// puts the previous release back.
    pub confirm_timeout: Duration,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Host {
    /// Unique within the environment; what `--hosts` selects and what output shows.
    pub name: String,
    pub host: String,
    pub user: Option<String>,
    pub port: Option<u16>,
}

/// `proxy:`: the app runs in two slots behind HAProxy, and a deploy shifts traffic.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ProxyConfig {
    /// The public port HAProxy holds for the app.
    pub listen: u16,
    /// The two private ports; each slot runs the app with its port in `PORT`.
    pub slots: [u16; 2],
    pub mode: ProxyMode,
    /// How long the old slot keeps its open connections once traffic has moved.
    pub drain_timeout: Duration,
    /// After all traffic moved, the new slot must stay healthy this long.
    pub watch: Duration,
    /// Share (percent) of new requests for the new slot, step by step; the last is 100.
    pub steps: Vec<u32>,
    pub analysis: AnalysisConfig,
}

/// How each step is judged, from HAProxy's counters for the new slot.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AnalysisConfig {
    pub interval: Duration,
    /// Percent of requests (connections, in `tcp` mode) that failed: 5xx answers, failed
    /// connections, broken responses.
    pub max_error_rate: f64,
    /// HAProxy's average response time of the new slot (`http` mode).
    pub max_response_time: Option<Duration>,
}

/// `artifacts:`: where hosts fetch artifacts from.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ArtifactsConfig {
    /// `artifacts.store` as written (`s3://bucket/prefix/`).
    pub store: String,
    pub bucket: String,
    /// Ends with `/` unless empty.
    pub prefix: String,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub url_ttl: Duration,
}
