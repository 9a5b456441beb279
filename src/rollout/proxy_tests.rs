//! The rollout behind the proxy against fake hosts with a fake HAProxy: the fleet policy
//! (canary, batches, fleet rollback) with traffic moved in steps and judged by the new
//! slot's counters, in milliseconds. The real HAProxy is the e2e tier's
//! (`tests/shipit/e2e/proxy.rs`).

use std::sync::Arc;

use crate::config::OnFailure;
use crate::exit::Exit;
use crate::host::Op;
use crate::host::fake::FakeHost;
use crate::plan::Kind;

use super::harness::{Ran, is, policy, run_behind_proxy};

const OLDER: &str = "20200101T000000Z-0000000a";
const OLD: &str = "20200102T000000Z-0000000b";

fn host(name: &str) -> Arc<FakeHost> {
    FakeHost::new(name).on(OLD, &[OLDER]).behind_proxy()
}

/// Host `name`'s live slot and the weights HAProxy gives slots 9001 and 9002.
fn traffic(ran: &Ran, name: &str) -> (Option<u16>, u32, u32) {
    let m = ran.fleet.host(name).model();
    let p = m.proxy.as_ref().unwrap();
    (p.live, p.weights[&9001], p.weights[&9002])
}

fn steps(ran: &Ran, name: &str) -> Vec<String> {
    ran.events
        .iter()
        .filter_map(|e| match e {
            crate::event::Event::Step { host, text } if host == name => Some(text.clone()),
            _ => None,
        })
        .filter(|t| t.starts_with("step "))
        .collect()
}

#[tokio::test]
async fn every_host_moves_its_traffic_in_steps_to_the_other_slot() {
    let hosts = vec![host("app1"), host("app2"), host("app3")];
    let ran = run_behind_proxy(Kind::Deploy, hosts, policy(1, 2, 0, OnFailure::Rollback)).await;
    assert_eq!(ran.exit, Exit::Ok, "{:?}", ran.events);
    for name in ["app1", "app2", "app3"] {
        assert_eq!(ran.current(name).as_deref(), Some(ran.release.as_str()));
        assert_eq!(traffic(&ran, name), (Some(9002), 0, 100), "{name}");
        let s = steps(&ran, name);
        assert_eq!(s.len(), 3, "{name}: {s:?}");
        assert!(
            s[0].starts_with("step 10%") && s[2].starts_with("step 100%"),
            "{s:?}"
        );
        let log = ran.fleet.host(name).log.lock().unwrap().clone();
        assert!(
            log.contains(&Op::Retire),
            "{name} never stopped its old slot: {log:?}"
        );
        assert!(!ran.locked(name));
    }
}

#[tokio::test]
async fn a_canary_whose_new_slot_fails_requests_goes_back_at_the_first_step() {
    let canary = host("app1").bad_traffic("new");
    let hosts = vec![canary, host("app2")];
    // The fake marks releases by name: "new" is whatever this run made.
    let ran = run_behind_proxy(Kind::Deploy, hosts, policy(1, 2, 0, OnFailure::Rollback)).await;
    assert_eq!(ran.exit, Exit::RolledBack, "{:?}", ran.events);
    assert!(
        is(
            ran.outcome("app1"),
            "RolledBack",
            "step 10% to slot 9002: error rate"
        ),
        "{:?}",
        ran.outcome("app1")
    );
    assert_eq!(traffic(&ran, "app1"), (Some(9001), 100, 0));
    assert_eq!(ran.current("app1").as_deref(), Some(OLD));
    // The rest of the fleet never started.
    assert_eq!(traffic(&ran, "app2"), (Some(9001), 100, 0));
    assert_eq!(ran.current("app2").as_deref(), Some(OLD));
}

#[tokio::test]
async fn a_later_host_failing_puts_every_switched_host_back_on_its_old_slot() {
    let late = host("app3").unhealthy("new");
    let hosts = vec![host("app1"), host("app2"), late];
    let ran = run_behind_proxy(Kind::Deploy, hosts, policy(1, 1, 0, OnFailure::Rollback)).await;
    assert_eq!(ran.exit, Exit::RolledBack, "{:?}", ran.events);
    for name in ["app1", "app2", "app3"] {
        assert_eq!(ran.current(name).as_deref(), Some(OLD), "{name}");
        assert_eq!(traffic(&ran, name), (Some(9001), 100, 0), "{name}");
        assert!(!ran.locked(name), "{name}");
    }
    // The hosts that had moved all their traffic went back at once, on the API.
    assert_eq!(steps(&ran, "app1").len(), 3);
    assert!(
        steps(&ran, "app3").is_empty(),
        "an unhealthy slot got traffic"
    );
}
