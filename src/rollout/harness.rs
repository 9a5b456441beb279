//! The harness of the rollout's tests and simulation: a plan over fake hosts, a run as
//! the commands drive it, and what it left behind.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::artifact::{Artifact, Held, Manifest, Native};
use crate::config::{DeltaMode, HealthConfig, OnFailure, RestartMode, ServiceManager};
use crate::event::{Event, Events, Listener};
use crate::exit::Exit;
use crate::host::fake::{FakeHost, Fleet, Killer};
use crate::host::{HostRun, Op};
use crate::outcome::Outcome;
use crate::plan::{Deltas, DeployPlan, Kind, Plan};
use crate::remote::lock::Owner;

use super::{Cancel, Policy, deploy, rollback};

#[derive(Default)]
pub struct Recorder(Mutex<Vec<Event>>);

impl Listener for Recorder {
    fn hear(&self, _: Instant, event: Event) {
        self.0.lock().unwrap().push(event);
    }
}

/// Whether `o` is the outcome `kind` (its variant's name) and its reason contains `text`.
pub fn is(o: &Outcome, kind: &str, text: &str) -> bool {
    let (name, reason) = match o {
        Outcome::RolledBack { reason } => ("RolledBack", reason),
        Outcome::Broken { reason } => ("Broken", reason),
        Outcome::Failed { reason, .. } => ("Failed", reason),
        Outcome::NotSwitched { reason } => ("NotSwitched", reason),
        _ => return false,
    };
    name == kind && reason.contains(text)
}

pub fn policy(
    canary: usize,
    parallel: usize,
    max_failures: usize,
    on_failure: OnFailure,
) -> Policy {
    Policy {
        parallel,
        canary,
        max_failures,
        on_failure,
    }
}

pub fn plan(kind: Kind, events: Events) -> Plan {
    let owner = Owner::here(kind.command(), Some("2"));
    let mut plan = Plan {
        kind,
        deploy_to: "/opt/hello".into(),
        app: "hello".into(),
        environment: None,
        deployed_by: "test@here".into(),
        owner,
        manager: ServiceManager::Systemd,
        service: "hello".into(),
        sudo: false,
        restart: RestartMode::Restart,
        unit: None,
        health: HealthConfig {
            http: None,
            command: None,
            timeout: crate::config::Duration(Duration::from_secs(1)),
            interval: crate::config::Duration(Duration::from_millis(100)),
            settle: crate::config::Duration(Duration::ZERO),
        },
        hooks_after_switch: Vec::new(),
        hooks_after_rollback: Vec::new(),
        keep_releases: 5,
        confirm_timeout: Duration::from_secs(60),
        proxy: None,
        artifacts_ttl: None,
        deploy: None,
        once_ran_on: Default::default(),
        role: None,
        events,
    };
    if kind == Kind::Deploy {
        let artifact = Arc::new(Artifact {
            path: "/nonexistent/hello.tar.gz".into(),
            sha256: "c0ffee00".repeat(8),
            size: 19,
            cksum: "1 19".into(),
            manifest: Manifest {
                format: 1,
                app: "hello".into(),
                version: "2".into(),
                commit: None,
                entries: Vec::new(),
            },
            bytes: Some(Held::for_tests(b"not really a tar.gz".to_vec())),
            tar: None,
            natives: Vec::new(),
        });
        plan.deploy = Some(DeployPlan {
            version: "2".into(),
            commit: None,
            sha256: artifact.sha256.clone(),
            deltas: Arc::new(Deltas::new(artifact.clone(), Vec::new(), DeltaMode::Off)),
            store: None,
            artifact,
            env_file: String::new(),
            env_file_redacted: String::new(),
            shared_dirs: Vec::new(),
            shared_files: Vec::new(),
            before_switch: Vec::new(),
            once: Vec::new(),
            config_sha256: "cfg".into(),
            delta: DeltaMode::Off,
            force: false,
        });
    }
    plan
}

/// The runs of `roles`, each role's plan the run's with the role's name as its service
/// (and its once-only hook, if it has it).
fn role_runs(plan: &Arc<Plan>, roles: &[(&str, Vec<&str>, bool)]) -> Vec<HostRun> {
    let mut runs = Vec::new();
    for (role, hosts, once) in roles {
        let mut own = self::plan(plan.kind, plan.events.clone());
        own.owner = plan.owner.clone();
        own.once_ran_on = plan.once_ran_on.clone();
        own.role = Some(role.to_string());
        own.service = role.to_string();
        if let Some(d) = own.deploy.as_mut() {
            d.once = once
                .then(|| crate::config::OnceHook {
                    run: crate::redact::Text::plain("./bin/migrate"),
                    at: (1, 1),
                })
                .into_iter()
                .collect();
        }
        let own = Arc::new(own);
        for h in hosts {
            let target = crate::host::fake::target(h);
            runs.push(HostRun::for_role(target, role, own.clone()));
        }
    }
    runs
}

/// What a run left behind.
pub struct Ran {
    pub fleet: Fleet,
    pub runs: Vec<HostRun>,
    pub exit: Exit,
    /// The release a deploy made (empty for a rollback).
    pub release: String,
    pub events: Vec<Event>,
    /// Where the deployer was killed, if it was.
    pub killed: Option<(String, Op)>,
}

impl Ran {
    pub fn outcome(&self, host: &str) -> &Outcome {
        &self.runs.iter().find(|r| r.name() == host).unwrap().outcome
    }

    pub fn current(&self, host: &str) -> Option<String> {
        self.fleet.host(host).current()
    }

    pub fn locked(&self, host: &str) -> bool {
        self.fleet.host(host).model().lock.is_some()
    }

    pub fn notes(&self) -> Vec<String> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Note(n) => Some(n.clone()),
                _ => None,
            })
            .collect()
    }

    /// The hosts that were told to stage, in no order.
    pub fn staged(&self) -> Vec<String> {
        self.hosts_that(|op| matches!(op, crate::host::Op::Stage { .. }))
    }

    /// The hosts that were asked to run an op `which` picks, in the fleet's order.
    pub fn hosts_that(&self, which: impl Fn(&Op) -> bool) -> Vec<String> {
        self.fleet
            .hosts
            .iter()
            .filter(|h| h.log.lock().unwrap().iter().any(&which))
            .map(|h| h.name.clone())
            .collect()
    }

    /// Index of the first step event of `host` whose text starts with `prefix`.
    pub fn step_at(&self, host: &str, prefix: &str) -> usize {
        self.events
            .iter()
            .position(|e| {
                matches!(e, Event::Step { host: h, text } if h == host && text.starts_with(prefix))
            })
            .unwrap_or_else(|| panic!("{host} never reported `{prefix}`: {:?}", self.events))
    }
}

pub async fn run(
    kind: Kind,
    hosts: Vec<Arc<FakeHost>>,
    policy: Policy,
    cancel: Arc<Cancel>,
) -> Ran {
    run_until_killed(kind, hosts, policy, cancel, Arc::default()).await
}

/// `run`, where a fault may kill the deployer: then the run's future is dropped where it
/// stood, as a SIGKILL leaves it (its tasks are aborted, nothing else runs).
pub async fn run_until_killed(
    kind: Kind,
    hosts: Vec<Arc<FakeHost>>,
    policy: Policy,
    cancel: Arc<Cancel>,
    killer: Arc<Killer>,
) -> Ran {
    run_with(kind, hosts, policy, cancel, killer, Setup::default()).await
}

/// A deploy of an artifact holding these native executables.
pub async fn deploy_natives(
    hosts: Vec<Arc<FakeHost>>,
    policy: Policy,
    natives: Vec<Native>,
) -> Ran {
    let (cancel, killer) = (Cancel::new(), Arc::default());
    let setup = Setup {
        natives,
        ..Setup::default()
    };
    run_with(Kind::Deploy, hosts, policy, cancel, killer, setup).await
}

/// `run`, with the app behind the proxy (steps 10/50/100, 1 ms analysis windows, no watch,
/// no drain wait). The hosts should be [`FakeHost::behind_proxy`].
pub async fn run_behind_proxy(kind: Kind, hosts: Vec<Arc<FakeHost>>, policy: Policy) -> Ran {
    let (cancel, killer) = (Cancel::new(), Arc::default());
    run_until_killed_behind_proxy(kind, hosts, policy, cancel, killer).await
}

/// [`run_until_killed`] behind the proxy (as [`run_behind_proxy`]).
pub async fn run_until_killed_behind_proxy(
    kind: Kind,
    hosts: Vec<Arc<FakeHost>>,
    policy: Policy,
    cancel: Arc<Cancel>,
    killer: Arc<Killer>,
) -> Ran {
    let setup = Setup {
        proxy: Some(test_proxy()),
        ..Setup::default()
    };
    run_with(kind, hosts, policy, cancel, killer, setup).await
}

/// The proxy the fake runs behind: steps 10/50/100, 1 ms analysis windows, no watch, no
/// drain wait.
pub fn test_proxy() -> crate::config::ProxyConfig {
    use crate::config::{AnalysisConfig, Duration as D, ProxyConfig, ProxyMode};
    ProxyConfig {
        listen: 80,
        slots: [9001, 9002],
        mode: ProxyMode::Http,
        drain_timeout: D(Duration::ZERO),
        watch: D(Duration::ZERO),
        steps: vec![10, 50, 100],
        analysis: AnalysisConfig {
            interval: D(Duration::from_millis(1)),
            max_error_rate: 1.0,
            max_response_time: None,
        },
    }
}

/// A deploy whose config has `once` once-only (`once: true`) hooks.
pub async fn deploy_with_once(hosts: Vec<Arc<FakeHost>>, policy: Policy, once: usize) -> Ran {
    let (cancel, killer) = (Cancel::new(), Arc::default());
    let setup = Setup {
        once,
        ..Setup::default()
    };
    run_with(Kind::Deploy, hosts, policy, cancel, killer, setup).await
}

/// What a run's config and artifact have beyond the defaults.
#[derive(Default)]
pub struct Setup {
    /// Native executables in the artifact.
    pub natives: Vec<Native>,
    /// The app behind the proxy (the hosts should be [`FakeHost::behind_proxy`]).
    pub proxy: Option<crate::config::ProxyConfig>,
    /// How many once-only (`once: true`) hooks the config has.
    pub once: usize,
    /// Roles: each its name, its hosts, and whether it has the one once-only hook (the
    /// same hook, as a top-level hook every role keeps is).
    pub roles: Vec<(&'static str, Vec<&'static str>, bool)>,
}

/// A run with `setup`, where a fault may kill the deployer (as [`run_until_killed`]).
pub async fn run_with(
    kind: Kind,
    hosts: Vec<Arc<FakeHost>>,
    policy: Policy,
    cancel: Arc<Cancel>,
    killer: Arc<Killer>,
    setup: Setup,
) -> Ran {
    let Setup {
        natives,
        proxy,
        once,
        roles,
    } = setup;
    let recorder = Arc::new(Recorder::default());
    let mut plan = plan(kind, Events::new(recorder.clone()));
    plan.proxy = proxy;
    if let Some(d) = plan.deploy.as_mut() {
        d.once = (1..=once)
            .map(|i| crate::config::OnceHook {
                run: crate::redact::Text::plain(format!("./bin/migrate {i}")),
                at: (i as u64, 1),
            })
            .collect();
        let mut artifact = (*d.artifact).clone();
        artifact.natives = natives;
        d.artifact = Arc::new(artifact);
    }
    let plan = Arc::new(plan);
    let fleet = Fleet {
        hosts,
        token: plan.owner.token.clone(),
    };
    let dialer = Arc::new(Fleet {
        hosts: fleet.hosts.clone(),
        token: fleet.token.clone(),
    });
    let runs: Vec<HostRun> = match roles.is_empty() {
        true => fleet.targets().into_iter().map(HostRun::new).collect(),
        false => role_runs(&plan, &roles),
    };
    let work = async move {
        match kind {
            Kind::Deploy => {
                let opts = deploy::Options::default();
                deploy::deploy(runs, &plan, dialer, None, opts, policy, &cancel).await
            }
            _ => {
                let opts = rollback::Options::default();
                let (runs, exit, _) =
                    rollback::rollback(runs, &plan, dialer, &opts, policy, &cancel).await;
                (runs, exit, String::new())
            }
        }
    };
    let (runs, exit, release) = tokio::select! {
        done = work => done,
        _ = killer.notify.notified() => (Vec::new(), Exit::Failed, String::new()),
    };
    let killed = killer.at.lock().unwrap().clone();
    let events = recorder.0.lock().unwrap().clone();
    Ran {
        fleet,
        runs,
        exit,
        release,
        events,
        killed,
    }
}
