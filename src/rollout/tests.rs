//! The rollout's policy against fake hosts (`host::fake`): the real phases and the real
//! fleet code, no servers, milliseconds per test. Each test sets up hosts (on a release
//! or new, with faults), runs a deploy or a rollback as the commands do, and checks where
//! every host ended up, the exit code, the locks and the release states.

use std::sync::Arc;

use crate::config::OnFailure;
use crate::event::Event;
use crate::exit::Exit;
use crate::host::fake::{Effect, FakeHost, Killer, When};
use crate::outcome::Outcome;
use crate::plan::Kind;
use crate::remote::release::State;

use super::harness::{Ran, deploy_natives, deploy_with_once, is, policy, run, run_until_killed};
use super::{Cancel, Policy};
use crate::artifact::Native;
use crate::artifact::native::Machine;

const OLDER: &str = "20200101T000000Z-0000000a";
const OLD: &str = "20200102T000000Z-0000000b";

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

fn ran_once(ran: &Ran, host: &str) -> bool {
    let log = ran.fleet.host(host).log.lock().unwrap().clone();
    log.iter()
        .any(|op| matches!(op, crate::host::Op::Once { .. }))
}

#[tokio::test]
async fn once_hooks_run_on_the_first_host_only_after_all_staged_and_before_any_switch() {
    let ran = deploy_with_once(fleet_on_old(4), policy(1, 2, 0, OnFailure::Rollback), 2).await;
    assert_eq!(ran.exit, Exit::Ok);
    assert_all_on(&ran, &ran.release);
    assert!(ran_once(&ran, "app1"));
    let passed = ran.step_at("app1", "once-only hook(s) passed");
    for host in ["app1", "app2", "app3", "app4"] {
        assert_eq!(ran_once(&ran, host), host == "app1", "{host}");
        assert!(ran.step_at(host, "staged release") < passed, "{host}");
        assert!(passed < ran.step_at(host, "switching to"), "{host}");
    }
}

#[tokio::test]
async fn a_failing_once_hook_leaves_every_host_on_its_old_release() {
    let hosts = fleet_on_old(3);
    hosts[0].fault(When::Once, Effect::Exit("once:1"));
    let ran = deploy_with_once(hosts, policy(1, 2, 0, OnFailure::Rollback), 1).await;
    assert_eq!(ran.exit, Exit::Failed);
    assert_all_on(&ran, OLD);
    match ran.outcome("app1") {
        Outcome::Failed { step, reason } => {
            assert_eq!(step, "once:1");
            assert!(reason.contains("injected failure"), "{reason}");
        }
        o => panic!("app1: {o:?}"),
    }
    for host in ["app2", "app3"] {
        assert!(!ran_once(&ran, host), "{host}");
        match ran.outcome(host) {
            Outcome::Failed { step, reason } => {
                assert_eq!(step, "once-only hooks");
                assert!(reason.contains("app1 failed at once:1"), "{reason}");
            }
            o => panic!("{host}: {o:?}"),
        }
    }
    for h in &ran.fleet.hosts {
        assert_eq!(h.state_of(&ran.release), Some(State::Failed), "{}", h.name);
    }
}

#[tokio::test]
async fn without_once_hooks_no_host_runs_them() {
    let ran = deploy_with_once(fleet_on_old(2), policy(1, 2, 0, OnFailure::Rollback), 0).await;
    assert_eq!(ran.exit, Exit::Ok);
    assert!(!ran_once(&ran, "app1") && !ran_once(&ran, "app2"));
}

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

// ---- the guard

#[tokio::test]
async fn a_healthy_rollout_confirms_every_switch_and_leaves_no_guard() {
    let ran = deploy_to(fleet_on_old(3), policy(1, 2, 0, OnFailure::Rollback)).await;
    assert_eq!(ran.exit, Exit::Ok);
    for h in &ran.fleet.hosts {
        assert_eq!(h.model().guard, None, "{}", h.name);
        let log = h.log.lock().unwrap();
        let confirm = log.iter().position(|op| *op == crate::host::Op::Confirm);
        let finish = log
            .iter()
            .position(|op| matches!(op, crate::host::Op::Finish { .. }));
        assert!(confirm.is_some() && confirm < finish, "{}: {log:?}", h.name);
    }
}

#[tokio::test]
async fn a_deployer_killed_after_the_canary_switched_leaves_a_guard_that_puts_it_back() {
    let killer = Arc::new(Killer::default());
    let mut hosts = fleet_on_old(3);
    let kill = Effect::Kill {
        after: false,
        killer: killer.clone(),
    };
    hosts[1] = hosts[1].fault(When::Activate(None), kill);
    let policy = policy(1, 2, 0, OnFailure::Rollback);
    let ran = run_until_killed(Kind::Deploy, hosts, policy, Cancel::new(), killer).await;
    assert!(ran.killed.is_some());
    // Killed: the canary is on the new release, unconfirmed; the others on the old one.
    let canary = ran.fleet.host("app1");
    let new = canary.current().unwrap();
    assert_ne!(new, OLD);
    assert!(canary.model().guard.is_some());
    for h in &ran.fleet.hosts {
        h.fire_guard();
    }
    assert_eq!(canary.current().as_deref(), Some(OLD));
    assert_eq!(canary.state_of(&new), Some(State::Failed));
    assert_eq!(
        canary.model().lock,
        None,
        "the guard frees the dead run's lock"
    );
    for h in &ran.fleet.hosts {
        assert_eq!(h.current().as_deref(), Some(OLD), "{}", h.name);
    }
}

#[tokio::test]
async fn a_guard_that_fired_before_the_confirm_sends_every_host_back() {
    // The host went back by itself while this run was out of touch with it; the check
    // before the confirm finds it, and no host is confirmed.
    let mut hosts = fleet_on_old(3);
    hosts[2] = hosts[2].fault(When::Renew, Effect::GuardFires);
    let ran = deploy_to(hosts, policy(1, 2, 0, OnFailure::Rollback)).await;
    assert_eq!(ran.exit, Exit::RolledBack);
    assert!(is(
        ran.outcome("app3"),
        "RolledBack",
        "its guard put the previous release back"
    ));
    for back in ["app1", "app2"] {
        let o = ran.outcome(back);
        assert!(
            is(o, "RolledBack", "this host was healthy"),
            "{back}: {o:?}"
        );
        let log = ran.fleet.host(back).log.lock().unwrap().clone();
        assert!(
            !log.contains(&crate::host::Op::Confirm),
            "{back} was confirmed"
        );
    }
    assert_all_on(&ran, OLD);
}

#[tokio::test]
async fn a_rollback_whose_deployer_is_killed_goes_back_where_it_started() {
    let killer = Arc::new(Killer::default());
    let kill = Effect::Kill {
        after: true,
        killer: killer.clone(),
    };
    let hosts = vec![on_old("app1"), on_old("app2").fault(When::Health, kill)];
    let policy = policy(0, 4, 0, OnFailure::Rollback);
    let ran = run_until_killed(Kind::Rollback, hosts, policy, Cancel::new(), killer).await;
    assert!(ran.killed.is_some());
    for h in &ran.fleet.hosts {
        h.fire_guard();
        assert_eq!(h.current().as_deref(), Some(OLD), "{}", h.name);
        // A rollback's target is an older good release: it stays one.
        assert_eq!(h.state_of(OLDER), Some(State::Live), "{}", h.name);
    }
}

// ---- the artifact's architecture

fn native(path: &str, machine: Machine) -> Native {
    Native {
        path: path.into(),
        machine,
    }
}

#[tokio::test]
async fn a_host_of_another_architecture_refuses_the_artifact_before_any_upload() {
    let hosts = vec![
        on_old("app1"),
        on_old("app2").arch("aarch64"),
        on_old("app3"),
    ];
    let natives = vec![native("bin/hello", Machine::Elf("x86_64".into()))];
    let ran = deploy_natives(hosts, policy(0, 4, 0, OnFailure::Rollback), natives).await;
    assert_eq!(ran.exit, Exit::Failed);
    let Outcome::Failed { step, reason } = ran.outcome("app2") else {
        panic!("{:?}", ran.outcome("app2"));
    };
    assert_eq!(step, "architecture");
    assert!(
        reason.starts_with(
            "`bin/hello` is a x86_64 ELF executable; this host is aarch64: \
             build for aarch64-unknown-linux-gnu"
        ),
        "{reason}"
    );
    for other in ["app1", "app3"] {
        assert!(
            is(
                ran.outcome(other),
                "Failed",
                "app2 cannot run this artifact"
            ),
            "{other}: {:?}",
            ran.outcome(other)
        );
    }
    assert!(ran.staged().is_empty(), "staged: {:?}", ran.staged());
    assert_all_on(&ran, OLD);
}

#[tokio::test]
async fn a_macos_binary_is_not_a_linux_executable_and_scripts_do_not_count() {
    let natives = vec![native("bin/hello", Machine::MachO)];
    let ran = deploy_natives(
        fleet_on_old(2),
        policy(0, 4, 0, OnFailure::Rollback),
        natives,
    )
    .await;
    assert_eq!(ran.exit, Exit::Failed);
    assert!(is(ran.outcome("app1"), "Failed", "not a Linux one"));
    assert!(ran.staged().is_empty());
    // No native executable (scripts, data): fine everywhere; matching ones too.
    for natives in [
        Vec::new(),
        vec![native("bin/hello", Machine::Elf("x86_64".into()))],
    ] {
        let ran = deploy_natives(
            fleet_on_old(2),
            policy(0, 4, 0, OnFailure::Rollback),
            natives,
        )
        .await;
        assert_eq!(ran.exit, Exit::Ok);
        assert_all_on(&ran, &ran.release);
    }
}
