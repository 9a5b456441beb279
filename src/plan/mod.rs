//! What will happen on each host, built once before any host is touched and never
//! changed afterwards: what every host of a run shares (the service, the health check,
//! the hooks, the lock owner) and, for a deploy, the artifact and how a release is made
//! from it. The scripts a run sends come from here, so `--dry-run` prints the very
//! scripts the real run would send ([`steps`]).

pub mod deltas;
pub mod steps;

use std::sync::Arc;
use std::time::Duration;

use crate::artifact::{Artifact, delta::Delta};
use crate::config::{
    Config, DeltaMode, HealthConfig, OnceHook, ProxyConfig, RestartMode, ServiceManager,
};
use crate::event::Events;
use crate::health;
use crate::redact::Text;
use crate::remote::activate::{self, Activate};
use crate::remote::finish;
use crate::remote::guard::{self, Guard};
use crate::remote::lock::Owner;
use crate::remote::proxy::{self, Slots};
use crate::remote::release::{ReleaseInfo, State};
use crate::remote::stage::{self, Source, Stage};
use crate::remote::survey::Survey;
use crate::ssh::quote::QuoteError;

pub use deltas::{Deltas, Shipment};

/// What a run does to its hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Deploy,
    Rollback,
    Status,
    Unlock,
    Lock,
}

impl Kind {
    /// The command, as a lock's owner file names it.
    pub fn command(self) -> &'static str {
        match self {
            Kind::Deploy => "shipit deploy",
            Kind::Rollback => "shipit rollback",
            Kind::Status => "shipit status",
            Kind::Unlock => "shipit unlock",
            Kind::Lock => "shipit lock",
        }
    }

    /// The `action` of a history line and of the JSON summary.
    pub fn action(self) -> &'static str {
        match self {
            Kind::Deploy => "deploy",
            Kind::Rollback => "rollback",
            Kind::Status => "status",
            Kind::Unlock => "unlock",
            Kind::Lock => "lock",
        }
    }
}

/// What every host of one run shares.
pub struct Plan {
    pub kind: Kind,
    pub deploy_to: String,
    pub app: String,
    /// The environment (`-e`), if the config has several.
    pub environment: Option<String>,
    pub owner: Owner,
    pub deployed_by: String,
    pub manager: ServiceManager,
    pub service: String,
    pub sudo: bool,
    pub restart: RestartMode,
    pub unit: Option<String>,
    pub health: HealthConfig,
    pub hooks_after_switch: Vec<Text>,
    pub hooks_after_rollback: Vec<Text>,
    pub keep_releases: usize,
    /// How long a switched host waits for the deployer's confirmation before its guard
    /// puts the previous release back (`rollout.confirm_timeout`).
    pub confirm_timeout: Duration,
    /// Zero-downtime slots behind HAProxy (`proxy:`), when configured.
    pub proxy: Option<ProxyConfig>,
    /// `artifacts.url_ttl`, when hosts fetch from a store.
    pub artifacts_ttl: Option<crate::config::Duration>,
    pub deploy: Option<DeployPlan>,
    /// The host that ran the `once: true` hooks, once one has (for the history); every
    /// role's plan shares it.
    pub once_ran_on: Arc<std::sync::OnceLock<String>>,
    /// The role whose hosts this plan is for (`SHIPIT_ROLE`); `None` without roles.
    pub role: Option<String>,
    /// Where hosts and the rollout report what they do.
    pub events: Events,
}

/// Which way a switch goes, for the host's guard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Switch {
    /// To the run's goal: the guard is armed first.
    Forward,
    /// Back to the release the host ran before: this run's guard is disarmed first.
    Back,
}

/// What only a deploy has: the artifact and how to make the release.
pub struct DeployPlan {
    pub version: String,
    pub commit: Option<String>,
    pub sha256: String,
    /// The artifact, as `pack` wrote it or `inspect` checked it; shared with `deltas`. Its
    /// `bytes` (held up to [`crate::artifact::HELD_MAX`]) are what every host that gets it
    /// whole is sent, so the file is not read again per host (`perf`: a fifth of the
    /// client's CPU at 20 hosts went to reading and copying the same file; client CPU
    /// 2.11 -> 1.65 s) and a file replaced since it was checked is never sent. Bigger
    /// artifacts are read from the file per host, and the host's `cksum` check catches a
    /// file replaced since.
    pub artifact: Arc<Artifact>,
    pub env_file: String,
    pub env_file_redacted: String,
    pub shared_dirs: Vec<String>,
    pub shared_files: Vec<String>,
    pub before_switch: Vec<Text>,
    /// The `once: true` `before_switch` hooks: one host runs each, after every host
    /// staged and before any switches (with roles, a host of a role that has it).
    pub once: Vec<OnceHook>,
    pub config_sha256: String,
    pub delta: DeltaMode,
    /// `--force`: deploy even where the host already runs this artifact and config.
    pub force: bool,
    /// The deltas for this artifact, built once per live release they start from.
    pub deltas: Arc<Deltas>,
    /// Where hosts fetch the whole artifact from (`artifacts:`), when configured.
    pub store: Option<Arc<crate::store::Lazy>>,
}

impl DeployPlan {
    /// The deploy of `artifact` with `config` (`unit`: the unit file's content).
    pub fn new(config: &Config, artifact: Artifact, unit: Option<&str>, force: bool) -> DeployPlan {
        let (dirs, files) = shared_paths(config);
        let artifact = Arc::new(artifact);
        let deltas = Arc::new(Deltas::new(
            artifact.clone(),
            dirs.into_iter().chain(files).collect(),
            config.delta,
        ));
        let store = config
            .artifacts
            .as_ref()
            .map(|a| Arc::new(crate::store::Lazy::new(a, &config.app)));
        let shared = Shared {
            artifact,
            deltas,
            store,
        };
        Self::with(config, shared, unit, force)
    }

    /// The deploy of the same artifact for a role's hosts (`config`: the role's): the
    /// artifact, its deltas and its upload to the store are this one's.
    pub fn for_role(&self, config: &Config, unit: Option<&str>) -> DeployPlan {
        let shared = Shared {
            artifact: self.artifact.clone(),
            deltas: self.deltas.clone(),
            store: self.store.clone(),
        };
        Self::with(config, shared, unit, self.force)
    }

    fn with(config: &Config, shared: Shared, unit: Option<&str>, force: bool) -> DeployPlan {
        let env_file = stage::env_file(&config.env, false);
        let (shared_dirs, shared_files) = shared_paths(config);
        let proxy = config.proxy.as_ref().map(|p| format!("{p:?}"));
        let unit = match (unit, &proxy) {
            (u, Some(p)) => Some(format!("{}\n{p}", u.unwrap_or(""))),
            (u, None) => u.map(str::to_owned),
        };
        let once = config
            .hooks
            .before_switch_once
            .iter()
            .map(|h| h.run.clone());
        let config_sha256 = config_digest(
            &env_file,
            unit.as_deref(),
            &shared_dirs,
            &shared_files,
            &config
                .hooks
                .before_switch
                .iter()
                .cloned()
                .chain(once)
                .collect::<Vec<_>>(),
        );
        let artifact = shared.artifact;
        DeployPlan {
            version: artifact.manifest.version.clone(),
            commit: artifact.manifest.commit.clone(),
            sha256: artifact.sha256.clone(),
            artifact,
            env_file,
            env_file_redacted: stage::env_file(&config.env, true),
            shared_dirs,
            shared_files,
            before_switch: config.hooks.before_switch.clone(),
            once: config.hooks.before_switch_once.clone(),
            config_sha256,
            delta: config.delta,
            force,
            deltas: shared.deltas,
            store: shared.store,
        }
    }

    /// What to send a host whose survey is `survey`: one choice for a deploy and for its
    /// dry run.
    pub async fn shipment(&self, survey: &Survey) -> Shipment {
        self.deltas.shipment(survey).await
    }

    /// The stage script's source for `delta` against release `base`.
    pub fn delta_source<'a>(&self, delta: &'a Delta, base: &'a str) -> Source<'a> {
        self.deltas.delta_source(delta, base)
    }

    pub fn full_source(&self) -> Source<'_> {
        self.deltas.full_source()
    }
}

/// `shared.dirs` and `shared.files`, as the host gets them.
fn shared_paths(config: &Config) -> (Vec<String>, Vec<String>) {
    let exposed = |list: &[Text]| list.iter().map(|t| t.expose().to_owned()).collect();
    (exposed(&config.shared.dirs), exposed(&config.shared.files))
}

/// What every role's deploy shares: the artifact, its deltas, its copy in the store.
struct Shared {
    artifact: Arc<Artifact>,
    deltas: Arc<Deltas>,
    store: Option<Arc<crate::store::Lazy>>,
}

/// The digest of everything a release gets from the config rather than the artifact.
pub fn config_digest(
    env_file: &str,
    unit: Option<&str>,
    shared_dirs: &[String],
    shared_files: &[String],
    before_switch: &[Text],
) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for part in [env_file, unit.unwrap_or("")]
        .into_iter()
        .chain(shared_dirs.iter().map(String::as_str))
        .chain(shared_files.iter().map(String::as_str))
        .chain(before_switch.iter().map(Text::expose))
    {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    hex::encode(h.finalize())
}

impl Plan {
    pub fn new(
        config: &Config,
        kind: Kind,
        version: Option<&str>,
        events: Events,
    ) -> anyhow::Result<Plan> {
        let unit = match &config.service.unit_file {
            Some(f) => Some(
                std::fs::read_to_string(config.dir.join(f.expose()))
                    .map_err(|e| anyhow::anyhow!("cannot read the unit file `{f}`: {e}"))?,
            ),
            None => None,
        };
        let owner = Owner::here(kind.command(), version);
        Ok(Plan {
            kind,
            deploy_to: config.deploy_to.expose().to_owned(),
            app: config.app.clone(),
            environment: config.environment.clone(),
            deployed_by: format!("{}@{}", owner.user, owner.machine),
            owner,
            manager: config.service.manager,
            service: config.service.name.clone(),
            sudo: config.service.sudo,
            restart: config.service.restart,
            unit,
            health: config.health.clone(),
            hooks_after_switch: config.hooks.after_switch.clone(),
            hooks_after_rollback: config.hooks.after_rollback.clone(),
            keep_releases: config.keep_releases as usize,
            confirm_timeout: config.rollout.confirm_timeout.0,
            proxy: config.proxy.clone(),
            artifacts_ttl: config.artifacts.as_ref().map(|a| a.url_ttl),
            deploy: None,
            once_ran_on: Default::default(),
            role: None,
            events,
        })
    }

    /// The plan for the hosts of role `role` (`config`: the role's configuration): the
    /// same run (owner, events, once-only hooks' record), the role's own directory,
    /// service, health check, hooks and deploy.
    pub fn for_role(&self, config: &Config, role: &str) -> anyhow::Result<Plan> {
        let mut plan = Plan::new(config, self.kind, None, self.events.clone())?;
        plan.owner = self.owner.clone();
        plan.deployed_by = self.deployed_by.clone();
        plan.environment = self.environment.clone();
        plan.once_ran_on = self.once_ran_on.clone();
        plan.role = Some(role.to_owned());
        plan.deploy = self
            .deploy
            .as_ref()
            .map(|d| d.for_role(config, plan.unit.as_deref()));
        Ok(plan)
    }

    /// `{deploy_to}/releases/<id>` on the host.
    pub fn release_dir(&self, id: &str) -> String {
        format!("{}/releases/{id}", self.deploy_to.trim_end_matches('/'))
    }

    /// The health check of release `id`, as configured. `probe`: one short look (for
    /// `status`), not a deploy's full wait with its settle window.
    pub fn health_spec<'a>(
        &'a self,
        release_dir: &'a str,
        command: Option<&'a str>,
        probe: bool,
    ) -> health::Spec<'a> {
        let (timeout, settle) = if probe {
            (
                self.health.interval.0.max(Duration::from_secs(2)),
                Duration::ZERO,
            )
        } else {
            (self.health.timeout.0, self.health.settle.0)
        };
        health::Spec {
            http: self.health.http.as_ref(),
            command,
            release_dir,
            manager: self.manager,
            service: &self.service,
            timeout,
            interval: self.health.interval.0,
            settle,
        }
    }

    /// The stage script of release `id` from `source`; with `redact`, secrets shown as
    /// `[redacted]` (for `--dry-run`).
    pub fn stage_script(
        &self,
        d: &DeployPlan,
        id: &str,
        source: Source,
        redact: bool,
    ) -> Result<String, QuoteError> {
        let json =
            |state| serde_json::to_string(&self.release_info(d, id, state)).unwrap_or_default();
        let mut script = stage::stage(&Stage {
            id,
            sha256: &d.sha256,
            source,
            shared_dirs: &d.shared_dirs,
            shared_files: &d.shared_files,
            env: if redact {
                &d.env_file_redacted
            } else {
                &d.env_file
            },
            staged_json: &json(State::Staged),
            failed_json: &json(State::Failed),
            before_switch: &d.before_switch,
            redact,
            record: d.delta == DeltaMode::Hardlink,
            // Behind the proxy the unit is the slots' template, installed by the setup.
            unit: self.unit.as_deref().filter(|_| self.proxy.is_none()),
        })?;
        if let Some(slots) = self.slots() {
            script.push_str(&proxy::setup(&slots, self.unit.as_deref())?);
        }
        Ok(script)
    }

    /// Switch to release `id` and restart the service, arming the host's guard first
    /// (forward) or disarming it (back).
    pub fn activate_script(&self, id: &str, switch: Switch) -> Result<String, QuoteError> {
        let guard = match switch {
            Switch::Forward => guard::arm(&self.guard(id))?,
            Switch::Back => guard::confirm(&self.owner.token)?,
        };
        activate::activate(&Activate {
            id,
            manager: self.manager,
            service: &self.service,
            sudo: self.sudo,
            restart: self.restart,
            unit: self.unit.as_deref(),
            guard: Some(&guard),
        })
    }

    /// `artifacts.url_ttl`, with a store.
    pub fn store_ttl(&self) -> Option<crate::config::Duration> {
        self.artifacts_ttl
    }

    /// The app's slots and proxy, with `proxy:`.
    pub fn slots(&self) -> Option<Slots<'_>> {
        self.proxy.as_ref().map(|p| Slots {
            app: &self.app,
            deploy_to: &self.deploy_to,
            service: &self.service,
            sudo: self.sudo,
            listen: p.listen,
            ports: p.slots,
            mode: p.mode,
            drain_secs: p.drain_timeout.0.as_secs(),
        })
    }

    /// Start release `id` in slot `idle` (traffic stays on `live`), arming the guard.
    pub fn start_slot_script(
        &self,
        s: &Slots,
        id: &str,
        live: Option<u16>,
        idle: u16,
    ) -> Result<String, QuoteError> {
        let mut g = self.guard(id);
        g.slots = Some((*s, live, idle));
        proxy::start_slot(s, id, idle, Some(&guard::arm(&g)?))
    }

    /// The guard a forward switch to `target` arms.
    fn guard<'a>(&'a self, target: &'a str) -> Guard<'a> {
        let timeout = self.confirm_timeout.as_secs().max(1);
        Guard {
            token: &self.owner.token,
            target,
            mark_failed: self.kind == Kind::Deploy,
            timeout,
            // It looks often enough to fire within a tenth of the timeout (1-5 s).
            every: (timeout / 10).clamp(1, 5),
            manager: self.manager,
            sudo: self.sudo,
            service: &self.service,
            action: self.kind.action(),
            slots: None,
        }
    }

    /// Remove `current` and stop the service (a host that had no release before),
    /// disarming this run's guard first.
    pub fn stop_script(&self) -> Result<String, QuoteError> {
        let disarm = guard::confirm(&self.owner.token)?;
        Ok(disarm + &activate::stop(self.manager, self.sudo, &self.service)?)
    }

    /// Confirm this run's guard on a host: the switch stays.
    pub fn confirm_script(&self) -> Result<String, QuoteError> {
        guard::confirm(&self.owner.token)
    }

    /// Push this run's guard's deadline back while the rollout goes on.
    pub fn renew_script(&self) -> Result<String, QuoteError> {
        guard::renew(&self.owner.token)
    }

    /// What every remote hook finds in its environment, as `export` lines for the start
    /// of a script: the app, the environment, the version, the release this run makes
    /// live on `host`, the one it ran before, the host, its role (empty without roles),
    /// the command, and who runs it.
    pub fn hook_env(
        &self,
        host: &str,
        release: &str,
        previous: Option<&str>,
    ) -> Result<String, QuoteError> {
        let version = self.deploy.as_ref().map_or("", |d| d.version.as_str());
        let vars = [
            ("SHIPIT_APP", self.app.as_str()),
            ("SHIPIT_ENV", self.environment.as_deref().unwrap_or("")),
            ("SHIPIT_VERSION", version),
            ("SHIPIT_RELEASE", release),
            ("SHIPIT_PREVIOUS_RELEASE", previous.unwrap_or("")),
            ("SHIPIT_HOST", host),
            ("SHIPIT_ROLE", self.role.as_deref().unwrap_or("")),
            ("SHIPIT_COMMAND", self.kind.action()),
            ("SHIPIT_PERFORMER", self.deployed_by.as_str()),
        ];
        let mut s = String::new();
        for (k, v) in vars {
            s.push_str(&format!("{k}={}; export {k}\n", crate::remote::q(v)?));
        }
        Ok(s)
    }

    /// The `once: true` hooks `hooks` in staged release `id` on `host`, with the hooks'
    /// env.
    pub fn once_script(
        &self,
        hooks: &[Text],
        host: &str,
        id: &str,
        previous: Option<&str>,
        redact: bool,
    ) -> Result<String, QuoteError> {
        Ok(self.hook_env(host, id, previous)? + &stage::once(id, hooks, redact)?)
    }

    /// The after hooks of this run's kind (`after_switch`, or `after_rollback`).
    pub fn after_hooks_script(&self, redact: bool) -> Result<String, QuoteError> {
        match self.kind {
            Kind::Rollback => {
                finish::after_hooks("after_rollback", &self.hooks_after_rollback, redact)
            }
            _ => finish::after_hooks("after_switch", &self.hooks_after_switch, redact),
        }
    }

    /// What release.json says about release `id` of this deploy, in `state`.
    pub fn release_info(&self, d: &DeployPlan, id: &str, state: State) -> ReleaseInfo {
        ReleaseInfo {
            id: id.to_owned(),
            app: self.app.clone(),
            version: d.version.clone(),
            commit: d.commit.clone(),
            artifact_sha256: d.sha256.clone(),
            state,
            created_at: self.owner.started_at,
            deployed_by: self.deployed_by.clone(),
            config_sha256: Some(d.config_sha256.clone()),
        }
    }
}
