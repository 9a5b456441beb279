//! The rollout's policy against fake hosts (`host::fake`): the real phases and the real
//! fleet code, no servers, milliseconds per test. Each test sets up hosts (on a release
//! or new, with faults), runs a deploy or a rollback as the commands do, and checks where
//! every host ended up, the exit code, the locks and the release states.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::artifact::{Artifact, Manifest};
use crate::config::{DeltaMode, HealthConfig, OnFailure, RestartMode, ServiceManager};
use crate::event::{Event, Events, Listener};
use crate::exit::Exit;
use crate::host::HostRun;
use crate::host::fake::{Effect, FakeHost, Fleet, When};
use crate::outcome::Outcome;
use crate::plan::{Deltas, DeployPlan, Kind, Plan};
use crate::remote::lock::Owner;
use crate::remote::release::State;

use super::{Cancel, Policy, deploy, rollback};

const OLDER: &str = "20200101T000000Z-0000000a";
const OLD: &str = "20200102T000000Z-0000000b";

#[derive(Default)]
struct Recorder(Mutex<Vec<Event>>);

impl Listener for Recorder {
    fn hear(&self, _: Instant, event: Event) {
        self.0.lock().unwrap().push(event);
    }
}

/// Whether `o` is the outcome `kind` (its variant's name) and its reason contains `text`.
fn is(o: &Outcome, kind: &str, text: &str) -> bool {
    let (name, reason) = match o {
        Outcome::RolledBack { reason } => ("RolledBack", reason),
        Outcome::Broken { reason } => ("Broken", reason),
        Outcome::Failed { reason, .. } => ("Failed", reason),
        Outcome::NotSwitched { reason } => ("NotSwitched", reason),
        _ => return false,
    };
    name == kind && reason.contains(text)
}

fn policy(canary: usize, parallel: usize, max_failures: usize, on_failure: OnFailure) -> Policy {
    Policy {
        parallel,
        canary,
        max_failures,
        on_failure,
    }
}

fn plan(kind: Kind, events: Events, artifact_dir: &std::path::Path) -> Plan {
    let owner = Owner::here(kind.command(), Some("2"));
    let mut plan = Plan {
        kind,
        deploy_to: "/opt/hello".into(),
        app: "hello".into(),
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
        deploy: None,
        events,
    };
    if kind == Kind::Deploy {
        let path = artifact_dir.join("hello.tar.gz");
        std::fs::write(&path, b"not really a tar.gz").unwrap();
        let artifact = Arc::new(Artifact {
            path,
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
            bytes: None,
            tar: None,
        });
        plan.deploy = Some(DeployPlan {
            version: "2".into(),
            commit: None,
            sha256: artifact.sha256.clone(),
            deltas: Arc::new(Deltas::new(artifact.clone(), Vec::new(), DeltaMode::Off)),
            artifact,
            env_file: String::new(),
            env_file_redacted: String::new(),
            shared_dirs: Vec::new(),
            shared_files: Vec::new(),
            before_switch: Vec::new(),
            config_sha256: "cfg".into(),
            delta: DeltaMode::Off,
            force: false,
        });
    }
    plan
}

/// What a run left behind.
struct Ran {
    fleet: Fleet,
    runs: Vec<HostRun>,
    exit: Exit,
    /// The release a deploy made (empty for a rollback).
    release: String,
    events: Vec<Event>,
}

impl Ran {
    fn outcome(&self, host: &str) -> &Outcome {
        &self.runs.iter().find(|r| r.name() == host).unwrap().outcome
    }

    fn current(&self, host: &str) -> Option<String> {
        self.fleet.host(host).current()
    }

    fn locked(&self, host: &str) -> bool {
        self.fleet.host(host).model().lock.is_some()
    }

    fn notes(&self) -> Vec<String> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Note(n) => Some(n.clone()),
                _ => None,
            })
            .collect()
    }

    /// The hosts that were told to stage, in no order.
    fn staged(&self) -> Vec<String> {
        self.fleet
            .hosts
            .iter()
            .filter(|h| {
                h.log
                    .lock()
                    .unwrap()
                    .iter()
                    .any(|op| matches!(op, crate::host::Op::Stage { .. }))
            })
            .map(|h| h.name.clone())
            .collect()
    }

    /// Index of the first step event of `host` whose text starts with `prefix`.
    fn step_at(&self, host: &str, prefix: &str) -> usize {
        self.events
            .iter()
            .position(|e| {
                matches!(e, Event::Step { host: h, text } if h == host && text.starts_with(prefix))
            })
            .unwrap_or_else(|| panic!("{host} never reported `{prefix}`: {:?}", self.events))
    }
}

async fn run(kind: Kind, hosts: Vec<Arc<FakeHost>>, policy: Policy, cancel: Arc<Cancel>) -> Ran {
    let dir = tempfile::tempdir().unwrap();
    let recorder = Arc::new(Recorder::default());
    let plan = Arc::new(plan(kind, Events::new(recorder.clone()), dir.path()));
    let fleet = Fleet {
        hosts,
        token: plan.owner.token.clone(),
    };
    let dialer = Arc::new(Fleet {
        hosts: fleet.hosts.clone(),
        token: fleet.token.clone(),
    });
    let runs: Vec<HostRun> = fleet.targets().into_iter().map(HostRun::new).collect();
    let (runs, exit, release) = match kind {
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
    };
    let events = recorder.0.lock().unwrap().clone();
    Ran {
        fleet,
        runs,
        exit,
        release,
        events,
    }
}

async fn deploy_to(hosts: Vec<Arc<FakeHost>>, policy: Policy) -> Ran {
    run(Kind::Deploy, hosts, policy, Cancel::new()).await
}

fn on_old(name: &str) -> Arc<FakeHost> {
    FakeHost::new(name).on(OLD, &[OLDER])
}

fn fleet_on_old(n: usize) -> Vec<Arc<FakeHost>> {
    (1..=n).map(|i| on_old(&format!("app{i}"))).collect()
}

fn assert_all_on(ran: &Ran, release: &str) {
    for h in &ran.fleet.hosts {
        assert_eq!(h.current().as_deref(), Some(release), "{}", h.name);
        assert_eq!(h.model().running.as_deref(), Some(release), "{}", h.name);
        assert!(!ran.locked(&h.name), "{} is still locked", h.name);
    }
}

// ---- a healthy rollout

#[tokio::test]
async fn every_host_switches_canary_first_then_batches() {
    let ran = deploy_to(fleet_on_old(5), policy(1, 2, 0, OnFailure::Rollback)).await;
    assert_eq!(ran.exit, Exit::Ok);
    assert_all_on(&ran, &ran.release);
    assert_eq!(
        ran.notes(),
        [
            "canary: switching app1",
            "batch 1: switching app2, app3",
            "batch 2: switching app4, app5"
        ]
    );
    let canary_healthy = ran.step_at("app1", "healthy after");
    for other in ["app2", "app3", "app4", "app5"] {
        assert!(
            canary_healthy < ran.step_at(other, "switching to"),
            "{other}"
        );
        assert_eq!(ran.outcome(other), &Outcome::Done);
    }
    for h in &ran.fleet.hosts {
        assert_eq!(h.state_of(&ran.release), Some(State::Live));
    }
}

#[tokio::test]
async fn batches_are_parallel_wide_without_a_canary() {
    let ran = deploy_to(fleet_on_old(7), policy(0, 3, 0, OnFailure::Rollback)).await;
    assert_eq!(ran.exit, Exit::Ok);
    assert_eq!(
        ran.notes(),
        [
            "batch 1: switching app1, app2, app3",
            "batch 2: switching app4, app5, app6",
            "batch 3: switching app7"
        ]
    );
    // A batch's hosts are all healthy before the next batch switches.
    assert!(ran.step_at("app3", "healthy after") < ran.step_at("app4", "switching to"));
}

#[tokio::test]
async fn a_canary_larger_than_the_fleet_is_one_batch() {
    let ran = deploy_to(fleet_on_old(2), policy(5, 1, 0, OnFailure::Rollback)).await;
    assert_eq!(ran.exit, Exit::Ok);
    assert_eq!(ran.notes(), ["canary: switching app1, app2"]);
    assert_all_on(&ran, &ran.release);
}

#[tokio::test]
async fn a_first_deploy_to_new_hosts_switches_them() {
    let hosts = vec![FakeHost::new("app1"), FakeHost::new("app2")];
    let ran = deploy_to(hosts, policy(1, 2, 0, OnFailure::Rollback)).await;
    assert_eq!(ran.exit, Exit::Ok);
    assert_all_on(&ran, &ran.release);
}

// ---- failures and the policy

#[tokio::test]
async fn an_unhealthy_canary_stops_the_rollout_before_other_hosts_switch() {
    let mut hosts = fleet_on_old(3);
    hosts[0] = hosts[0].unhealthy("new");
    let ran = deploy_to(hosts, policy(1, 2, 0, OnFailure::Rollback)).await;
    assert_eq!(ran.exit, Exit::RolledBack);
    assert!(is(ran.outcome("app1"), "RolledBack", "answers 500"));
    for other in ["app2", "app3"] {
        assert!(
            matches!(ran.outcome(other), Outcome::NotSwitched { .. }),
            "{other}"
        );
        assert!(
            !ran.fleet
                .host(other)
                .log
                .lock()
                .unwrap()
                .iter()
                .any(|op| matches!(op, crate::host::Op::Activate { .. })),
            "{other} was switched"
        );
    }
    assert_all_on(&ran, OLD);
    for h in &ran.fleet.hosts {
        assert_eq!(h.state_of(&ran.release), Some(State::Failed), "{}", h.name);
    }
    let journal = ran.runs[0].journal.as_deref().unwrap_or_default();
    assert!(journal.contains("last words"), "{journal}");
}

#[tokio::test]
async fn failures_within_max_failures_let_the_rollout_go_on() {
    let mut hosts = fleet_on_old(4);
    hosts[2] = hosts[2].unhealthy("new");
    let ran = deploy_to(hosts, policy(1, 1, 1, OnFailure::Rollback)).await;
    assert_eq!(ran.exit, Exit::Failed);
    assert!(matches!(ran.outcome("app3"), Outcome::RolledBack { .. }));
    assert_eq!(ran.current("app3").as_deref(), Some(OLD));
    for done in ["app1", "app2", "app4"] {
        assert_eq!(ran.outcome(done), &Outcome::Done, "{done}");
        assert_eq!(ran.current(done), Some(ran.release.clone()));
    }
    assert!(
        ran.events
            .iter()
            .any(|e| matches!(e, Event::Alert(a) if a.contains("within max_failures")))
    );
}

#[tokio::test]
async fn more_failures_than_allowed_put_every_switched_host_back() {
    let mut hosts = fleet_on_old(5);
    hosts[3] = hosts[3].unhealthy("new");
    let ran = deploy_to(hosts, policy(1, 2, 0, OnFailure::Rollback)).await;
    assert_eq!(ran.exit, Exit::RolledBack);
    assert_all_on(&ran, OLD);
    // app5 switched in the same batch as app4, and goes back with the others.
    for back in ["app1", "app2", "app3", "app5"] {
        assert!(
            is(ran.outcome(back), "RolledBack", "this host was healthy"),
            "{back}: {:?}",
            ran.outcome(back)
        );
    }
}

#[tokio::test]
async fn halt_keeps_the_switched_hosts_and_says_the_fleet_is_mixed() {
    let mut hosts = fleet_on_old(5);
    hosts[3] = hosts[3].unhealthy("new");
    let ran = deploy_to(hosts, policy(1, 2, 0, OnFailure::Halt)).await;
    assert_eq!(ran.exit, Exit::Mixed);
    for kept in ["app1", "app2", "app3", "app5"] {
        assert_eq!(ran.outcome(kept), &Outcome::Done, "{kept}");
        assert_eq!(ran.current(kept), Some(ran.release.clone()));
        assert!(!ran.locked(kept));
    }
    assert!(matches!(ran.outcome("app4"), Outcome::RolledBack { .. }));
    assert_eq!(ran.current("app4").as_deref(), Some(OLD));
}

#[tokio::test]
async fn halt_leaves_later_batches_on_their_old_release() {
    let mut hosts = fleet_on_old(4);
    hosts[1] = hosts[1].unhealthy("new");
    let ran = deploy_to(hosts, policy(1, 1, 0, OnFailure::Halt)).await;
    assert_eq!(ran.exit, Exit::Mixed);
    assert_eq!(ran.outcome("app1"), &Outcome::Done);
    for later in ["app3", "app4"] {
        assert!(
            matches!(ran.outcome(later), Outcome::NotSwitched { .. }),
            "{later}"
        );
        assert_eq!(ran.current(later).as_deref(), Some(OLD));
        assert_eq!(
            ran.fleet.host(later).state_of(&ran.release),
            Some(State::Failed)
        );
        assert!(!ran.locked(later));
    }
}

#[tokio::test]
async fn a_host_that_cannot_be_put_back_is_broken() {
    let mut hosts = fleet_on_old(2);
    hosts[0] = hosts[0]
        .unhealthy("new")
        .fault(When::Revert, Effect::Exit("restart"));
    let ran = deploy_to(hosts, policy(1, 1, 0, OnFailure::Rollback)).await;
    assert_eq!(ran.exit, Exit::Mixed);
    assert!(
        is(ran.outcome("app1"), "Broken", "putting it back failed"),
        "{:?}",
        ran.outcome("app1")
    );
    assert!(matches!(ran.outcome("app2"), Outcome::NotSwitched { .. }));
    assert!(!ran.locked("app1"), "the broken host's lock is given back");
}

#[tokio::test]
async fn a_new_host_that_fails_is_stopped_not_left_running() {
    let hosts = vec![FakeHost::new("app1").unhealthy("new")];
    let ran = deploy_to(hosts, policy(1, 1, 0, OnFailure::Rollback)).await;
    assert_eq!(ran.exit, Exit::RolledBack);
    assert_eq!(ran.current("app1"), None);
    assert_eq!(ran.fleet.host("app1").model().running, None);
    assert!(
        ran.fleet
            .host("app1")
            .log
            .lock()
            .unwrap()
            .contains(&crate::host::Op::Stop)
    );
}

#[tokio::test]
async fn a_restart_that_fails_after_the_switch_goes_back() {
    let hosts = vec![on_old("app1").fault(When::Activate(None), Effect::ExitAfter("restart"))];
    let ran = deploy_to(hosts, policy(1, 1, 0, OnFailure::Rollback)).await;
    assert_eq!(ran.exit, Exit::RolledBack);
    assert!(is(ran.outcome("app1"), "RolledBack", "restart:"));
    assert_all_on(&ran, OLD);
}

#[tokio::test]
async fn a_switch_that_fails_before_moving_current_needs_no_revert() {
    let hosts = vec![on_old("app1").fault(When::Activate(None), Effect::Exit("switch"))];
    let ran = deploy_to(hosts, policy(1, 1, 0, OnFailure::Rollback)).await;
    assert_eq!(ran.exit, Exit::RolledBack);
    let activations = ran
        .fleet
        .host("app1")
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|op| matches!(op, crate::host::Op::Activate { .. }))
        .count();
    assert_eq!(activations, 1, "nothing to switch back");
    assert_all_on(&ran, OLD);
}

// ---- before anything changes

#[tokio::test]
async fn an_unreachable_host_stops_the_deploy_before_any_lock_is_kept() {
    let hosts = vec![on_old("app1"), FakeHost::down("app2"), on_old("app3")];
    let ran = deploy_to(hosts, policy(1, 2, 0, OnFailure::Rollback)).await;
    assert_eq!(ran.exit, Exit::Unreachable);
    assert!(matches!(ran.outcome("app2"), Outcome::Unreachable { .. }));
    assert!(ran.staged().is_empty());
    for h in ["app1", "app3"] {
        assert!(!ran.locked(h));
        assert_eq!(ran.current(h).as_deref(), Some(OLD));
    }
}

#[tokio::test]
async fn a_lock_held_elsewhere_stops_the_deploy_and_gives_back_the_others() {
    let hosts = fleet_on_old(3);
    hosts[1].model().lock = Some("someone-else".into());
    let ran = deploy_to(hosts, policy(1, 2, 0, OnFailure::Rollback)).await;
    assert_eq!(ran.exit, Exit::Locked);
    assert!(matches!(ran.outcome("app2"), Outcome::Locked { .. }));
    assert!(ran.staged().is_empty());
    assert!(!ran.locked("app1") && !ran.locked("app3"));
    assert_eq!(
        ran.fleet.host("app2").model().lock.as_deref(),
        Some("someone-else")
    );
}

#[tokio::test]
async fn when_the_first_host_is_locked_the_others_are_not_asked() {
    let hosts = fleet_on_old(3);
    hosts[0].model().lock = Some("someone-else".into());
    let ran = deploy_to(hosts, policy(1, 2, 0, OnFailure::Rollback)).await;
    assert_eq!(ran.exit, Exit::Locked);
    for other in ["app2", "app3"] {
        assert!(
            ran.fleet.host(other).log.lock().unwrap().is_empty(),
            "{other} was asked"
        );
        assert!(matches!(ran.outcome(other), Outcome::Locked { .. }));
    }
}

#[tokio::test]
async fn a_failed_stage_anywhere_switches_nothing_anywhere() {
    let mut hosts = fleet_on_old(3);
    hosts[2] = hosts[2].fault(When::Stage, Effect::Exit("before_switch:1"));
    let ran = deploy_to(hosts, policy(1, 2, 0, OnFailure::Rollback)).await;
    assert_eq!(ran.exit, Exit::Failed);
    assert!(
        matches!(ran.outcome("app3"), Outcome::Failed { step, .. } if step == "before_switch:1")
    );
    for h in ["app1", "app2"] {
        assert!(matches!(ran.outcome(h), Outcome::Failed { step, .. } if step == "staging"));
        assert_eq!(
            ran.fleet.host(h).state_of(&ran.release),
            Some(State::Failed)
        );
    }
    assert_all_on(&ran, OLD);
}

// ---- lost connections, phase by phase

#[tokio::test]
async fn a_connection_lost_in_the_survey_changes_nothing() {
    let mut hosts = fleet_on_old(2);
    hosts[1] = hosts[1].fault(When::Survey, Effect::LostBefore);
    let ran = deploy_to(hosts, policy(1, 2, 0, OnFailure::Rollback)).await;
    assert_eq!(ran.exit, Exit::Failed);
    assert!(matches!(ran.outcome("app2"), Outcome::Failed { .. }));
    assert!(ran.staged().is_empty());
    assert!(!ran.locked("app1"));
}

#[tokio::test]
async fn a_connection_lost_while_staging_switches_nothing() {
    let mut hosts = fleet_on_old(2);
    hosts[1] = hosts[1].fault(When::Stage, Effect::LostBefore);
    let ran = deploy_to(hosts, policy(1, 2, 0, OnFailure::Rollback)).await;
    assert_eq!(ran.exit, Exit::Failed);
    assert_eq!(ran.current("app1").as_deref(), Some(OLD));
    assert_eq!(ran.current("app2").as_deref(), Some(OLD));
    assert!(!ran.locked("app1"));
    // The host that went away keeps its lock: nobody could reach it to give it back.
    assert!(ran.locked("app2"));
}

#[tokio::test]
async fn a_connection_lost_before_the_switch_leaves_the_host_where_it_was() {
    let hosts = vec![
        on_old("app1").fault(When::Activate(None), Effect::LostBefore),
        on_old("app2"),
    ];
    let ran = deploy_to(hosts, policy(1, 1, 0, OnFailure::Rollback)).await;
    assert_eq!(ran.exit, Exit::RolledBack);
    assert_eq!(ran.current("app1").as_deref(), Some(OLD));
    assert!(matches!(ran.outcome("app2"), Outcome::NotSwitched { .. }));
}

#[tokio::test]
async fn a_connection_lost_after_the_switch_is_broken_not_hidden() {
    let hosts = vec![
        on_old("app1").fault(When::Activate(None), Effect::LostAfter),
        on_old("app2"),
    ];
    let ran = deploy_to(hosts, policy(1, 1, 0, OnFailure::Rollback)).await;
    assert_eq!(ran.exit, Exit::Mixed);
    assert!(matches!(ran.outcome("app1"), Outcome::Broken { .. }));
    // It is where the lost script left it, and the summary says so.
    assert_eq!(ran.current("app1"), Some(ran.release.clone()));
    assert_eq!(ran.runs[0].switched_to, Some(ran.release.clone()));
    assert_eq!(ran.current("app2").as_deref(), Some(OLD));
}

#[tokio::test]
async fn a_connection_lost_during_the_health_check_is_broken() {
    let hosts = vec![
        on_old("app1").fault(When::Health, Effect::LostBefore),
        on_old("app2"),
    ];
    let ran = deploy_to(hosts, policy(1, 1, 0, OnFailure::Rollback)).await;
    assert_eq!(ran.exit, Exit::Mixed);
    assert!(matches!(ran.outcome("app1"), Outcome::Broken { .. }));
    assert!(matches!(ran.outcome("app2"), Outcome::NotSwitched { .. }));
}

#[tokio::test]
async fn a_connection_lost_while_finishing_keeps_the_release_and_warns() {
    let hosts = vec![on_old("app1").fault(When::Finish, Effect::LostBefore)];
    let ran = deploy_to(hosts, policy(1, 1, 0, OnFailure::Rollback)).await;
    assert_eq!(ran.exit, Exit::Ok);
    assert_eq!(ran.outcome("app1"), &Outcome::Done);
    assert_eq!(ran.current("app1"), Some(ran.release.clone()));
    assert!(!ran.runs[0].warnings.is_empty());
    assert!(
        ran.locked("app1"),
        "the lock stays: `shipit unlock` lifts it"
    );
}

// ---- signals

#[tokio::test]
async fn sigterm_while_staging_switches_nothing() {
    let cancel = Cancel::new();
    let mut hosts = fleet_on_old(2);
    hosts[0] = hosts[0].fault(When::Stage, Effect::Signal(cancel.clone()));
    let ran = run(
        Kind::Deploy,
        hosts,
        policy(1, 2, 0, OnFailure::Rollback),
        cancel,
    )
    .await;
    assert_eq!(ran.exit, Exit::Failed);
    assert_all_on(&ran, OLD);
    for h in &ran.fleet.hosts {
        assert_eq!(h.state_of(&ran.release), Some(State::Failed), "{}", h.name);
    }
}

#[tokio::test]
async fn sigterm_during_the_canary_puts_it_back() {
    let cancel = Cancel::new();
    let mut hosts = fleet_on_old(3);
    hosts[0] = hosts[0].fault(When::Activate(None), Effect::Signal(cancel.clone()));
    let ran = run(
        Kind::Deploy,
        hosts,
        policy(1, 2, 0, OnFailure::Halt),
        cancel,
    )
    .await;
    // Interrupted: even `halt` puts back what this run switched.
    assert_eq!(ran.exit, Exit::RolledBack);
    assert_all_on(&ran, OLD);
    assert!(matches!(ran.outcome("app2"), Outcome::NotSwitched { .. }));
}

#[tokio::test]
async fn sigterm_during_the_last_batch_puts_every_switched_host_back() {
    let cancel = Cancel::new();
    let mut hosts = fleet_on_old(3);
    hosts[2] = hosts[2].fault(When::Activate(None), Effect::Signal(cancel.clone()));
    let ran = run(
        Kind::Deploy,
        hosts,
        policy(1, 2, 0, OnFailure::Rollback),
        cancel,
    )
    .await;
    assert_eq!(ran.exit, Exit::RolledBack);
    assert_all_on(&ran, OLD);
}

#[tokio::test]
async fn sigterm_after_every_host_is_healthy_lets_the_deploy_finish() {
    let cancel = Cancel::new();
    let mut hosts = fleet_on_old(2);
    hosts[1] = hosts[1].fault(When::Finish, Effect::Signal(cancel.clone()));
    let ran = run(
        Kind::Deploy,
        hosts,
        policy(1, 2, 0, OnFailure::Rollback),
        cancel,
    )
    .await;
    assert_eq!(ran.exit, Exit::Ok);
    assert_all_on(&ran, &ran.release);
}

// ---- a task that panics

#[tokio::test]
async fn a_panicking_host_task_is_reported_broken_not_lost() {
    let mut hosts = fleet_on_old(3);
    hosts[1] = hosts[1].fault(When::Activate(None), Effect::Panic);
    let ran = deploy_to(hosts, policy(1, 2, 0, OnFailure::Rollback)).await;
    assert_eq!(ran.exit, Exit::Mixed);
    assert_eq!(ran.runs.len(), 3);
    assert!(
        is(ran.outcome("app2"), "Broken", "injected panic"),
        "{:?}",
        ran.outcome("app2")
    );
    assert_eq!(ran.runs[1].name(), "app2", "hosts keep their places");
    assert_eq!(
        ran.current("app1").as_deref(),
        Some(OLD),
        "the canary went back"
    );
}

// ---- rollback

async fn rollback_of(hosts: Vec<Arc<FakeHost>>) -> Ran {
    let policy = policy(0, 4, 0, OnFailure::Rollback);
    run(Kind::Rollback, hosts, policy, Cancel::new()).await
}

#[tokio::test]
async fn rollback_takes_every_host_to_the_release_before() {
    let ran = rollback_of(fleet_on_old(3)).await;
    assert_eq!(ran.exit, Exit::Ok);
    assert_all_on(&ran, OLDER);
    assert_eq!(ran.notes(), ["batch 1: switching app1, app2, app3"]);
}

#[tokio::test]
async fn rollback_with_nothing_to_go_back_to_changes_nothing() {
    let hosts = vec![on_old("app1"), FakeHost::new("app2").on(OLD, &[])];
    let ran = rollback_of(hosts).await;
    assert_eq!(ran.exit, Exit::Failed);
    assert!(is(ran.outcome("app2"), "Failed", "nothing to roll back to"));
    assert_all_on(&ran, OLD);
}

#[tokio::test]
async fn a_rollback_that_fails_on_one_host_puts_the_others_back() {
    let mut hosts = fleet_on_old(2);
    hosts[1] = hosts[1].unhealthy(OLDER);
    let ran = rollback_of(hosts).await;
    assert_eq!(ran.exit, Exit::RolledBack);
    assert_all_on(&ran, OLD);
    // A rollback's target was a good release: it is not marked failed.
    assert_eq!(ran.fleet.host("app2").state_of(OLDER), Some(State::Live));
}
