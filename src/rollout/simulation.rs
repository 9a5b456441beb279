//! The rollout against thousands of seeded faults: the real rollout and host phases
//! (not a copy) against fake hosts (`host::fake`) that fail scripts, lose connections,
//! fail health checks, fail while putting a host back, get SIGTERM, have their guard fire
//! early, or see the deployer killed, in any phase, each seed a different fleet, policy
//! and set of faults. After each run, time passes (every armed guard fires), and the
//! invariants below must hold.
//!
//! - Every host is on the release its outcome says (`done`: the target; `rolled-back`,
//!   `not-switched`, `failed`, `locked`, `unreachable`, `interrupted`, and `not started`
//!   when the run stopped before it: where it was); a
//!   host reported `broken` is the one exception, and it is reported.
//! - A killed deployer leaves every host where it was, or every host on the target; the
//!   exceptions: a kill once the run began confirming (the documented window),
//!   `on_failure: halt` once the rollout stopped, and hosts that failed within
//!   `max_failures` (they stay where they were while the others go on).
//! - The exit code agrees with the hosts: 0 only when every host is done or unchanged; 5
//!   only when no host is on the target; 3 and 4 only when nothing switched.
//! - No release is marked `live` unless it passed its health check on that host.
//! - No lock of the run is left after a run that ended normally (no kill, no lost link),
//!   unless giving it back failed, and the run said so.
//!
//! `cargo test` runs 10,000 seeds (`rollout::simulation::seeded_runs`). A failing seed
//! prints the command that replays exactly that run. More:
//! `SHIPIT_SIM_RUNS=1000000 cargo test --release --lib rollout::simulation::seeded_runs`.

use std::sync::Arc;

use crate::config::OnFailure;
use crate::exit::Exit;
use crate::host::Op;
use crate::host::fake::{Effect, FakeHost, Killer, When};
use crate::outcome::Outcome;
use crate::plan::Kind;
use crate::remote::release::State;

use super::harness::{Ran, Setup, run_until_killed_behind_proxy, run_with, test_proxy};
use super::{Cancel, Policy};

const OLDER: &str = "20200101T000000Z-0000000a";
const OLD: &str = "20200102T000000Z-0000000b";

/// xorshift64*: small, fast, and the same on every machine.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// True `pct` percent of the time.
    fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }
}

/// One seed's fleet, policy and faults.
struct Scenario {
    kind: Kind,
    hosts: Vec<Arc<FakeHost>>,
    policy: Policy,
    cancel: Arc<Cancel>,
    killer: Arc<Killer>,
    /// The app behind the proxy (fake HAProxy on every host).
    proxy: bool,
    /// The deploy has once-only hooks.
    once: bool,
    /// What was set up, for the replay's printout.
    story: Vec<String>,
}

fn scenario(seed: u64) -> Scenario {
    let mut rng = Rng::new(seed);
    let kind = if rng.chance(80) {
        Kind::Deploy
    } else {
        Kind::Rollback
    };
    let policy = Policy {
        canary: rng.below(3) as usize,
        parallel: 1 + rng.below(3) as usize,
        max_failures: rng.below(2) as usize,
        on_failure: if rng.chance(80) {
            OnFailure::Rollback
        } else {
            OnFailure::Halt
        },
    };
    let cancel = Cancel::new();
    let killer = Arc::new(Killer::default());
    // Drawn after everything else of the seed, so seeds replay as before this existed.
    let mut story = vec![format!("{kind:?}, {policy:?}")];
    let mut killed = false;
    let n = 1 + rng.below(5);
    let mut hosts = Vec::new();
    for i in 1..=n {
        let name = format!("app{i}");
        let mut host = if rng.chance(3) {
            story.push(format!("{name}: down"));
            FakeHost::down(&name)
        } else {
            FakeHost::new(&name)
        };
        if kind == Kind::Deploy && rng.chance(10) {
            story.push(format!("{name}: new host"));
        } else if rng.chance(5) {
            host = host.on(OLD, &[]);
            story.push(format!("{name}: on {OLD}, nothing older"));
        } else {
            host = host.on(OLD, &[OLDER]);
        }
        if rng.chance(3) {
            host.model().lock = Some("someone-else".into());
            story.push(format!("{name}: locked by someone else"));
        }
        if rng.chance(15) {
            let sick = if kind == Kind::Deploy { "new" } else { OLDER };
            host = host.unhealthy(sick);
            story.push(format!("{name}: {sick} is unhealthy"));
        }
        for _ in 0..rng.below(3) {
            let when = match rng.below(12) {
                10 => When::Renew,
                0 => When::Survey,
                1 => When::Stage,
                2 => When::Activate(None),
                3 => When::Revert,
                4 => When::Stop,
                5 => When::SetState,
                6 => When::History,
                7 => When::Finish,
                8 => When::Unlock,
                9 => When::Health,
                _ => When::Confirm,
            };
            let effect = match rng.below(8) {
                0 => Effect::Exit("restart"),
                1 => Effect::ExitAfter("restart"),
                2 => Effect::LostBefore,
                3 => Effect::LostAfter,
                4 => Effect::Signal(cancel.clone()),
                5 => Effect::GuardFires,
                _ if !killed => {
                    killed = true;
                    Effect::Kill {
                        after: rng.chance(50),
                        killer: killer.clone(),
                    }
                }
                _ => Effect::Exit("switch"),
            };
            story.push(format!("{name}: at {when:?}: {}", effect_name(&effect)));
            host = host.fault(when, effect);
        }
        hosts.push(host);
    }
    let proxy = rng.chance(30);
    if proxy {
        story.push("behind the proxy".into());
        for h in &mut hosts {
            *h = h.behind_proxy();
            if kind == Kind::Deploy && rng.chance(15) {
                *h = h.bad_traffic("new");
                story.push(format!("{}: new fails requests behind the proxy", h.name));
            }
        }
    }
    // Once-only hooks (migrations), sometimes failing on the host that runs them.
    let once = kind == Kind::Deploy && rng.chance(25);
    if once {
        story.push("once-only hooks".into());
        for h in &mut hosts {
            if rng.chance(20) {
                let effect = if rng.chance(50) {
                    Effect::Exit("once:1")
                } else {
                    Effect::LostBefore
                };
                story.push(format!("{}: at Once: {}", h.name, effect_name(&effect)));
                *h = h.fault(When::Once, effect);
            }
        }
    }
    Scenario {
        kind,
        hosts,
        policy,
        cancel,
        killer,
        proxy,
        once,
        story,
    }
}

fn effect_name(e: &Effect) -> String {
    match e {
        Effect::Exit(step) => format!("exit 1 at {step}"),
        Effect::ExitAfter(step) => format!("exit 1 after {step}"),
        Effect::LostBefore => "link lost before".into(),
        Effect::LostAfter => "link lost after".into(),
        Effect::Panic => "panic".into(),
        Effect::Signal(_) => "SIGTERM".into(),
        Effect::GuardFires => "its guard fires".into(),
        Effect::Kill { after, .. } => format!("deployer killed (after: {after})"),
    }
}

/// Run seed `seed` and check the invariants; `Err` says which one broke.
async fn check(seed: u64) -> Result<(), String> {
    let s = scenario(seed);
    let halt = s.policy.on_failure == OnFailure::Halt;
    let max_failures = s.policy.max_failures;
    let kind = s.kind;
    let setup = Setup {
        proxy: s.proxy.then(test_proxy),
        once: usize::from(s.once),
        ..Setup::default()
    };
    let ran = run_with(s.kind, s.hosts, s.policy, s.cancel, s.killer, setup).await;
    if s.once {
        once_invariants(&ran).map_err(|e| format!("{e}\n  scenario: {}", s.story.join("; ")))?;
    }
    // Time passes: every guard still armed fires.
    for h in &ran.fleet.hosts {
        h.fire_guard();
    }
    let story = s.story.join("; ");
    invariants(&ran, kind, halt, max_failures).map_err(|e| format!("{e}\n  scenario: {story}"))
}

fn target(ran: &Ran, kind: Kind) -> String {
    match kind {
        // A killed run returned nothing: its release is the one it staged.
        Kind::Deploy if ran.release.is_empty() => ran
            .fleet
            .hosts
            .iter()
            .find_map(|h| h.model().made.first().cloned())
            .unwrap_or_default(),
        Kind::Deploy => ran.release.clone(),
        _ => OLDER.to_owned(),
    }
}

/// Once-only hooks ran on at most one host, and no host switched (not even for a moment)
/// unless they passed.
fn once_invariants(ran: &Ran) -> Result<(), String> {
    let ops = |h: &FakeHost| h.log.lock().unwrap().clone();
    let ran_once: Vec<&str> = ran
        .fleet
        .hosts
        .iter()
        .filter(|h| ops(h).iter().any(|op| matches!(op, Op::Once { .. })))
        .map(|h| h.name.as_str())
        .collect();
    if ran_once.len() > 1 {
        return Err(format!("once-only hooks ran on {ran_once:?}"));
    }
    let passed = ran.events.iter().any(|e| {
        matches!(e, crate::event::Event::Step { text, .. } if text == "once-only hook(s) passed")
    });
    let forward = |op: &Op| matches!(op, Op::Activate { forward: true, .. });
    for h in &ran.fleet.hosts {
        if !passed && ops(h).iter().any(forward) {
            return Err(format!(
                "{} switched though the once-only hooks never passed",
                h.name
            ));
        }
    }
    Ok(())
}

fn invariants(ran: &Ran, kind: Kind, halt: bool, max_failures: usize) -> Result<(), String> {
    let target = target(ran, kind);
    let on_target = |h: &FakeHost| h.current().as_deref() == Some(target.as_str());
    // Where each host was before the run.
    let before = |h: &FakeHost| -> Option<String> {
        let m = h.model();
        m.releases
            .keys()
            .filter(|id| !m.made.contains(id))
            .max()
            .cloned()
    };
    for h in &ran.fleet.hosts {
        let m = h.model().clone();
        for id in &m.made {
            if m.releases.get(id) == Some(&State::Live) && !m.healthy_seen.contains(id) {
                return Err(format!(
                    "{}: {id} is live but never passed a health check",
                    h.name
                ));
            }
        }
    }
    if let Some((host, op)) = &ran.killed {
        let all_old = ran.fleet.hosts.iter().all(|h| h.current() == before(h));
        let all_new = ran.fleet.hosts.iter().all(|h| on_target(h));
        // The window: once this run began confirming, a kill can leave the hosts it
        // confirmed on the target while the others' guards put them back.
        let window = matches!(op, Op::Confirm)
            || ran
                .fleet
                .hosts
                .iter()
                .any(|h| h.log.lock().unwrap().contains(&Op::Confirm));
        let each_on_one_of_them = ran
            .fleet
            .hosts
            .iter()
            .all(|h| on_target(h) || h.current() == before(h));
        // `max_failures` lets failed hosts stay back while the others go on.
        let tolerated = max_failures > 0 && each_on_one_of_them;
        if !(all_old || all_new || window || halt || tolerated) {
            let at: Vec<String> = ran
                .fleet
                .hosts
                .iter()
                .map(|h| format!("{}: {:?}", h.name, h.current()))
                .collect();
            return Err(format!(
                "killed at {op:?} on {host}: the fleet is mixed after the guards fired: {}",
                at.join(", ")
            ));
        }
        return Ok(());
    }
    let mut lost_touch = false;
    for r in &ran.runs {
        let h = ran.fleet.host(r.name());
        let now = h.current();
        let ok = match &r.outcome {
            Outcome::Done => on_target(h),
            Outcome::Broken { .. } => true,
            _ => now == before(h),
        };
        if !ok {
            return Err(format!(
                "{}: outcome {:?}, but it runs {now:?} (before: {:?}, target {target})",
                r.name(),
                r.outcome,
                before(h)
            ));
        }
        lost_touch |= h.lost_touch();
    }
    let outcomes: Vec<&Outcome> = ran.runs.iter().map(|r| &r.outcome).collect();
    let any = |f: fn(&Outcome) -> bool| outcomes.iter().any(|o| f(o));
    let fleet_on_target = ran.fleet.hosts.iter().any(|h| on_target(h));
    let exit_agrees = match ran.exit {
        Exit::Ok => outcomes
            .iter()
            .all(|o| matches!(o, Outcome::Done | Outcome::Skipped { .. })),
        Exit::RolledBack => !fleet_on_target,
        Exit::Locked | Exit::Unreachable => !fleet_on_target,
        Exit::Mixed => {
            any(|o| matches!(o, Outcome::Broken { .. }))
                || (halt && any(|o| matches!(o, Outcome::Done)))
        }
        Exit::Failed => {
            !any(|o| matches!(o, Outcome::Broken { .. })) && (!fleet_on_target || max_failures > 0)
        }
        Exit::Invalid => false,
    };
    if !exit_agrees {
        return Err(format!(
            "exit {:?} does not match the hosts: {outcomes:?}",
            ran.exit
        ));
    }
    if !lost_touch {
        for r in &ran.runs {
            let h = ran.fleet.host(r.name());
            let said = r
                .warnings
                .iter()
                .any(|w| w.contains("could not give the deploy lock"));
            if h.model().lock.as_deref() == Some(ran.fleet.token.as_str()) && !said {
                return Err(format!(
                    "{}: the run's lock is left, and nobody was told",
                    h.name
                ));
            }
        }
    }
    Ok(())
}

fn replay_command(seed: u64) -> String {
    format!("SHIPIT_SIM_SEED={seed} cargo test --lib rollout::simulation::replay -- --nocapture")
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.parse().ok()
}

/// Seeds `first..first + runs` on one thread; the first failure, with its replay command.
fn sweep(first: u64, runs: u64) -> Result<u64, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    for seed in first..first + runs {
        if let Err(e) = rt.block_on(check(seed)) {
            return Err(format!(
                "seed {seed}: {e}\n  replay: {}",
                replay_command(seed)
            ));
        }
    }
    Ok(runs)
}

#[test]
fn seeded_runs() {
    let runs = env_u64("SHIPIT_SIM_RUNS").unwrap_or(10_000);
    let first = env_u64("SHIPIT_SIM_FIRST").unwrap_or(0);
    let threads = 2u64;
    let per = runs.div_ceil(threads);
    let handles: Vec<_> = (0..threads)
        .map(|t| std::thread::spawn(move || sweep(first + t * per, per)))
        .collect();
    let mut done = 0;
    for h in handles {
        match h.join() {
            Ok(Ok(n)) => done += n,
            Ok(Err(e)) => panic!("{e}"),
            Err(_) => panic!("a simulation thread panicked"),
        }
    }
    assert!(done >= runs);
}

#[test]
fn replay() {
    let seed = env_u64("SHIPIT_SIM_SEED").unwrap_or(7);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    if let Err(e) = rt.block_on(check(seed)) {
        panic!("seed {seed}: {e}");
    }
}

#[test]
fn the_same_seed_builds_the_same_scenario() {
    assert_eq!(scenario(42).story, scenario(42).story);
    assert_ne!(scenario(42).story, scenario(43).story);
}

/// The proxy's paths are really reached: among the first seeds, fleets behind the proxy
/// promote new slots, and some of their new releases are caught at a step.
#[test]
fn seeds_behind_the_proxy_move_traffic_and_catch_bad_releases() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (mut promoted, mut caught) = (0, 0);
    for seed in 0..400 {
        let s = scenario(seed);
        if !s.proxy {
            continue;
        }
        let ran = rt.block_on(run_until_killed_behind_proxy(
            s.kind, s.hosts, s.policy, s.cancel, s.killer,
        ));
        for h in &ran.fleet.hosts {
            if h.log
                .lock()
                .unwrap()
                .iter()
                .any(|op| matches!(op, Op::Promote { .. }))
            {
                promoted += 1;
            }
        }
        caught += ran
            .runs
            .iter()
            .filter(|r| match &r.outcome {
                Outcome::RolledBack { reason } => reason.contains("max_error_rate"),
                _ => false,
            })
            .count();
    }
    assert!(
        promoted > 20 && caught > 2,
        "promoted {promoted}, caught {caught}"
    );
}
