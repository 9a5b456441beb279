//! The resolved configuration: what every command reads, never raw YAML.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use super::duration::Duration;
use super::host::HostSpec;
use super::raw::{DeltaMode, KnownHostsPolicy, OnFailure, RestartMode, ServiceManager};
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
    pub hosts: Vec<Host>,
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
    pub proxy_jump: Option<HostSpec>,
    pub connect_timeout: Duration,
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
    pub before_switch: Vec<Text>,
    pub after_switch: Vec<Text>,
    pub after_rollback: Vec<Text>,
    pub local_before: Vec<Text>,
    pub local_after: Vec<Text>,
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
