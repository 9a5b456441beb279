//! Roles against fake hosts: a run per host and role, each with its role's plan; one
//! release id, one fleet policy, once-only hooks on one host of the fleet.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::config::OnFailure;
use crate::exit::Exit;
use crate::host::Op;
use crate::host::fake::FakeHost;
use crate::plan::Kind;

use super::Cancel;
use super::harness::{Ran, Setup, is, policy, run_with};

const OLD: &str = "20200102T000000Z-0000000b";

type Roles = Vec<(&'static str, Vec<&'static str>, bool)>;

async fn deploy_roles(hosts: Vec<Arc<FakeHost>>, roles: Roles) -> Ran {
    let setup = Setup {
        roles,
        ..Setup::default()
    };
    let policy = policy(1, 10, 0, OnFailure::Rollback);
    run_with(
        Kind::Deploy,
        hosts,
        policy,
        Cancel::new(),
        Arc::default(),
        setup,
    )
    .await
}

fn once_on(ran: &Ran) -> Vec<String> {
    ran.hosts_that(|op| matches!(op, Op::Once { .. }))
}

fn web_and_worker(once_web: bool, once_worker: bool) -> Roles {
    vec![
        ("web", vec!["app1", "app2"], once_web),
        ("worker", vec!["jobs1"], once_worker),
    ]
}

fn fleet() -> Vec<Arc<FakeHost>> {
    ["app1", "app2", "jobs1"]
        .iter()
        .map(|h| FakeHost::new(h).on(OLD, &[]))
        .collect()
}

#[tokio::test]
async fn each_role_runs_its_own_service_and_the_runs_are_named_host_and_role() {
    let ran = deploy_roles(fleet(), web_and_worker(false, false)).await;
    assert_eq!(ran.exit, Exit::Ok);
    let names: Vec<&str> = ran.runs.iter().map(|r| r.name()).collect();
    assert_eq!(names, ["app1/web", "app2/web", "jobs1/worker"]);
    for h in &ran.fleet.hosts {
        assert_eq!(h.current(), Some(ran.release.clone()), "{}", h.name);
        assert_eq!(h.dials.load(Ordering::SeqCst), 1, "{}", h.name);
    }
    for r in &ran.runs {
        let role = r.plan.as_ref().and_then(|p| p.role.clone()).unwrap();
        assert!(r.name().ends_with(&format!("/{role}")));
        assert_eq!(r.plan.as_ref().unwrap().service, role);
    }
}

#[tokio::test]
async fn a_failing_worker_rolls_the_web_hosts_back() {
    let mut hosts = fleet();
    hosts[2] = hosts[2].unhealthy("new");
    let ran = deploy_roles(hosts, web_and_worker(false, false)).await;
    assert_ne!(ran.exit, Exit::Ok);
    for h in &ran.fleet.hosts {
        assert_eq!(h.current().as_deref(), Some(OLD), "{}", h.name);
    }
    assert!(is(ran.outcome("jobs1/worker"), "RolledBack", ""));
    for web in ["app1/web", "app2/web"] {
        let o = ran.outcome(web);
        assert!(
            is(o, "RolledBack", "") || is(o, "NotSwitched", ""),
            "{web}: {o:?}"
        );
    }
}

#[tokio::test]
async fn a_once_hook_every_role_has_runs_on_the_first_host_of_the_first_role() {
    let ran = deploy_roles(fleet(), web_and_worker(true, true)).await;
    assert_eq!(ran.exit, Exit::Ok);
    assert_eq!(once_on(&ran), ["app1"]);
}

#[tokio::test]
async fn a_once_hook_of_one_role_runs_on_that_roles_first_host() {
    let ran = deploy_roles(fleet(), web_and_worker(false, true)).await;
    assert_eq!(ran.exit, Exit::Ok);
    assert_eq!(once_on(&ran), ["jobs1"]);
}

#[tokio::test]
async fn a_failing_once_hook_leaves_every_role_on_the_old_release() {
    use crate::host::fake::{Effect, When};
    let mut hosts = fleet();
    hosts[2] = hosts[2].fault(When::Once, Effect::Exit("once:1"));
    let ran = deploy_roles(hosts, web_and_worker(false, true)).await;
    assert_eq!(ran.exit, Exit::Failed);
    for h in &ran.fleet.hosts {
        assert_eq!(h.current().as_deref(), Some(OLD), "{}", h.name);
        assert!(!ran.locked(&h.name), "{}", h.name);
    }
}
