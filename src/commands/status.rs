//! `shipit status`: what runs where. One read-only script per host, plus one health probe.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Result;
use serde::Serialize;

use crate::event::Events;
use crate::exit::Exit;
use crate::health;
use crate::host::{HostRun, Op, Remote};
use crate::outcome::Outcome;
use crate::plan::{Kind, Plan};
use crate::remote::haproxy;
use crate::remote::lock;
use crate::remote::proxy::{self, Slots};
use crate::remote::release::State;
use crate::remote::status;
use crate::remote::survey::{self, LockAnswer};
use crate::rollout::connect_all;
use crate::settings::Settings;
use crate::ssh::Connector;
use crate::targets::Pick;

#[derive(Debug, Default, Serialize)]
struct HostStatus {
    name: String,
    reachable: bool,
    error: Option<String>,
    deployed: bool,
    current: Option<String>,
    version: Option<String>,
    commit: Option<String>,
    service: Option<String>,
    service_since: Option<String>,
    healthy: Option<bool>,
    health: Option<String>,
    lock: Option<String>,
    lock_age_secs: Option<u64>,
    /// The lock's holder is a process of this machine that no longer runs (the next
    /// deploy from here breaks the lock). `None` when there is no lock.
    lock_stale: Option<bool>,
    /// A guard armed by a run that switched this host and has not confirmed yet: what
    /// it puts back, and when.
    guard: Option<GuardStatus>,
    release_count: usize,
    releases: Vec<ReleaseRow>,
    history: Vec<serde_json::Value>,
    /// How the artifact of the last deploy reached the host (`store`, `full`, `delta`,
    /// `cached`) and how long that took, from the history's last line.
    last_transfer: Option<String>,
    /// With `proxy:`: the slots behind HAProxy.
    #[serde(skip_serializing_if = "Option::is_none")]
    proxy: Option<ProxyStatus>,
}

/// The slots and HAProxy on a host (`proxy:`).
#[derive(Debug, Serialize)]
struct ProxyStatus {
    /// The proxy's unit: `active`, `inactive` or `absent`.
    unit: String,
    /// The live slot's port.
    live: Option<u16>,
    slots: Vec<SlotStatus>,
}

#[derive(Debug, Serialize)]
struct SlotStatus {
    port: u16,
    /// The release the slot links to.
    release: Option<String>,
    /// Its instance runs.
    running: bool,
    /// Its share of new requests now, in percent (HAProxy's weight), when HAProxy answered.
    weight: Option<u64>,
    /// Connections open to it now, when HAProxy answered.
    connections: Option<u64>,
}

/// `shipit status --json` (docs/json.md).
#[derive(Debug, Serialize)]
struct Report<'a> {
    environment: Option<&'a str>,
    /// Reachable hosts are on different releases.
    mixed: bool,
    hosts: &'a [HostStatus],
}

#[derive(Debug, Serialize)]
struct GuardStatus {
    /// The release it puts back (`null`: none, `current` is removed).
    previous: Option<String>,
    /// The release the unconfirmed run switched to.
    target: String,
    /// Seconds until it fires; negative when overdue (its watcher is gone, e.g. after a
    /// reboot: `shipit unlock` removes it).
    fires_in_secs: i64,
}

#[derive(Debug, Serialize)]
struct ReleaseRow {
    id: String,
    state: String,
    version: Option<String>,
    current: bool,
}

pub fn run(
    settings: &Settings,
    json: bool,
    show_releases: bool,
    history: usize,
    hosts: Pick,
) -> Result<Exit> {
    let config = settings.load_config()?;
    let targets = crate::targets::resolve(&config, &hosts, &settings.printer)?;
    let printer = settings.printer;
    let plan = Arc::new(Plan::new(&config, Kind::Status, None, Events::none())?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let runs = crate::targets::runs(&config, &targets, &hosts, &plan)?;
    let statuses: Vec<HostStatus> = runtime.block_on(async {
        let runs = connect_all(runs, &plan, Arc::new(Connector::default())).await;
        let remotes: Vec<_> = runs.iter().filter_map(|r| r.remote.clone()).collect();
        let names: Vec<String> = runs.iter().map(|r| r.target.name.clone()).collect();
        let mut set = tokio::task::JoinSet::new();
        for run in runs {
            let plan = run.plan_or(&plan);
            set.spawn(async move { host_status(run, &plan, history).await });
        }
        let mut found: HashMap<String, HostStatus> = HashMap::new();
        while let Some(joined) = set.join_next().await {
            if let Ok(s) = joined {
                found.insert(s.name.clone(), s);
            }
        }
        crate::rollout::hang_up_all(remotes).await;
        // A task that panicked still has its row, saying so.
        names
            .into_iter()
            .map(|name| {
                found.remove(&name).unwrap_or_else(|| HostStatus {
                    error: Some("internal error: reading this host's status panicked".into()),
                    name,
                    ..HostStatus::default()
                })
            })
            .collect()
    });
    let currents: std::collections::BTreeSet<&str> = statuses
        .iter()
        .filter_map(|s| s.current.as_deref())
        .collect();
    let mixed = currents.len() > 1;
    if json {
        printer.document(&Report {
            environment: config.environment.as_deref(),
            mixed,
            hosts: &statuses,
        });
    } else {
        printer.data(&table(&statuses, mixed, show_releases, history));
    }
    Ok(if statuses.iter().any(|s| !s.reachable) {
        Exit::Unreachable
    } else {
        Exit::Ok
    })
}

async fn host_status(run: HostRun, plan: &Plan, history: usize) -> HostStatus {
    let mut st = HostStatus {
        name: run.target.name.clone(),
        ..HostStatus::default()
    };
    let Some(remote) = &run.remote else {
        st.error = Some(match &run.outcome {
            Outcome::Unreachable { reason } | Outcome::Failed { reason, .. } => reason.clone(),
            _ => "not connected".into(),
        });
        return st;
    };
    st.reachable = true;
    let slots = plan.slots();
    // At least the last history line: how the last deploy's artifact arrived.
    let asked = history.max(5);
    let script =
        match status::script(&plan.deploy_to, plan.manager, &plan.service, asked).and_then(|s| {
            Ok(s + &slots
                .as_ref()
                .map_or(Ok(String::new()), crate::remote::proxy::survey)?)
        }) {
            Ok(s) => s,
            Err(e) => {
                st.error = Some(e.to_string());
                return st;
            }
        };
    let out = match remote.run(Op::Other, &script, None, &mut |_| {}).await {
        Ok(o) => o.out.stdout,
        Err(e) => {
            st.error = Some(e.to_string());
            return st;
        }
    };
    if crate::remote::is_missing(&out) {
        st.error = Some(format!("{} does not exist: never deployed", plan.deploy_to));
        return st;
    }
    let survey = survey::parse_survey(&out);
    st.guard = survey.guard.as_ref().map(|g| GuardStatus {
        previous: g.previous.clone(),
        target: g.target.clone(),
        fires_in_secs: g.fires_in,
    });
    st.deployed = true;
    st.current = survey.current.clone();
    st.release_count = survey.releases.len();
    if let Some(info) = survey.current_release().and_then(|r| r.info.as_ref()) {
        st.version = Some(info.version.clone());
        st.commit = info.commit.clone();
    }
    if let Some(LockAnswer::Held { owner, since }) = &survey.lock {
        let stale = owner.as_ref().is_some_and(lock::Owner::is_stale_here);
        st.lock = Some(match owner {
            Some(o) if stale => format!(
                "{}; stale: that process no longer runs, the next deploy from this machine \
                 breaks the lock",
                o.describe(survey.now)
            ),
            Some(o) => o.describe(survey.now),
            None => "held (no owner file)".into(),
        });
        st.lock_stale = Some(stale);
        st.lock_age_secs = since.map(|s| survey.now.saturating_sub(s));
    }
    let svc = status::service(&out);
    if let Some(state) = svc.get("ActiveState") {
        st.service = Some(format!(
            "{state} ({})",
            svc.get("SubState").cloned().unwrap_or_default()
        ));
        st.service_since = svc
            .get("ActiveEnterTimestamp")
            .filter(|t| !t.is_empty())
            .cloned();
    }
    let mut lines = status::history(&out);
    st.last_transfer = lines
        .iter()
        .rev()
        .find(|l| l["action"] == "deploy" && l["transfer"].is_string())
        .map(|l| match l["transfer_ms"].as_u64() {
            Some(ms) => format!(
                "{} in {:.1}s",
                l["transfer"].as_str().unwrap_or("-"),
                ms as f64 / 1000.0
            ),
            None => l["transfer"].as_str().unwrap_or("-").to_owned(),
        });
    lines.drain(..lines.len().saturating_sub(history));
    st.history = lines;
    let live = match &slots {
        Some(s) => {
            let p = proxy_status(remote.as_ref(), s, &out).await;
            if let Some(port) = p.live {
                let running = p.slots.iter().any(|x| x.port == port && x.running);
                st.service = Some(format!(
                    "{} (slot {port})",
                    if running { "active" } else { "inactive" }
                ));
            }
            let live = p.live;
            st.proxy = Some(p);
            live
        }
        None => None,
    };
    st.releases = survey
        .releases
        .iter()
        .rev()
        .map(|r| ReleaseRow {
            id: r.id.clone(),
            state: match r.state() {
                Some(State::Live) => "live",
                Some(State::Staged) => "staged",
                Some(State::Failed) => "failed",
                Some(State::RolledBack) => "rolled-back",
                None => "incomplete",
            }
            .into(),
            version: r.info.as_ref().map(|i| i.version.clone()),
            current: Some(&r.id) == survey.current.as_ref(),
        })
        .collect();
    // Health now: one short probe of the configured checks.
    if let Some(current) = &survey.current {
        let release_dir = plan.release_dir(current);
        let command = plan.health.command.as_ref().map(|c| match live {
            Some(port) => format!("PORT={port}; export PORT; {}", c.expose()),
            None => c.expose().to_owned(),
        });
        let http = plan.health.http.clone().map(|mut h| {
            if let Some(port) = live {
                h.port = port;
            }
            h
        });
        let instance = live.zip(slots.as_ref()).map(|(port, s)| s.instance(port));
        let mut spec = plan.health_spec(&release_dir, command.as_deref(), true);
        spec.http = http.as_ref();
        if let Some(i) = &instance {
            spec.service = i;
        }
        match remote.health(&spec, "").await {
            Ok(health::Outcome::Healthy { .. }) => {
                st.healthy = Some(true);
                st.health = Some("ok".into());
            }
            Ok(health::Outcome::Unhealthy { reason, .. }) => {
                st.healthy = Some(false);
                st.health = Some(reason);
            }
            Err(e) => st.health = Some(e),
        }
    }
    st
}

/// What the survey and HAProxy's counters say of the slots.
async fn proxy_status(remote: &dyn Remote, s: &Slots<'_>, out: &str) -> ProxyStatus {
    let found = proxy::Found::parse(out).unwrap_or_default();
    let stat = remote.proxy_api(&s.socket(), "show stat").await.ok();
    let slots = s
        .ports
        .iter()
        .map(|&port| {
            let c = stat.as_deref().and_then(|t| haproxy::counters(s, port, t));
            SlotStatus {
                port,
                release: found.release_of(port).map(str::to_owned),
                running: found.running(port),
                weight: c.map(|c| c.weight),
                connections: c.map(|c| c.scur),
            }
        })
        .collect();
    ProxyStatus {
        unit: found.unit.clone(),
        live: found.live,
        slots,
    }
}

/// `proxy active; slot 9002 live (R, 100%, 3 open); slot 9001 stopped (R)`.
fn describe_proxy(p: &ProxyStatus) -> String {
    let slots: Vec<String> = p
        .slots
        .iter()
        .map(|x| {
            let role = if Some(x.port) == p.live {
                "live"
            } else if x.running && x.connections.unwrap_or(0) > 0 {
                "draining"
            } else if x.running {
                "running"
            } else {
                "stopped"
            };
            let mut t = format!(
                "slot {} {role} ({}",
                x.port,
                x.release.as_deref().unwrap_or("-")
            );
            if let (Some(w), Some(c)) = (x.weight, x.connections) {
                t.push_str(&format!(", {w}% of new requests, {c} open"));
            }
            t + ")"
        })
        .collect();
    format!("proxy {}; {}", p.unit, slots.join("; "))
}

/// Beyond this many hosts, `status` groups the hosts that agree.
const GROUP_AT: usize = 24;

fn table(statuses: &[HostStatus], mixed: bool, show_releases: bool, history: usize) -> String {
    if statuses.len() > GROUP_AT && !show_releases && history == 0 {
        grouped(statuses, mixed)
    } else {
        let all: Vec<&HostStatus> = statuses.iter().collect();
        rows(&all, mixed, show_releases, history)
    }
}

/// What hosts must share to be shown as one group.
fn group_key(s: &HostStatus) -> String {
    if !s.reachable {
        return "UNREACHABLE".into();
    }
    if !s.deployed {
        return "not deployed".into();
    }
    let health = match s.healthy {
        Some(true) => "health ok",
        Some(false) => "health FAILING",
        None => "health -",
    };
    let mut key = format!(
        "release {} (version {}), service {}, {health}",
        s.current.as_deref().unwrap_or("-"),
        s.version.as_deref().unwrap_or("-"),
        s.service.as_deref().unwrap_or("-"),
    );
    if s.lock.is_some() {
        key.push_str(", LOCKED");
    }
    if s.guard.is_some() {
        key.push_str(", guard armed");
    }
    key
}

/// Many hosts: the hosts that differ from the largest group first (in full, with their
/// notes, when there are few of them), then one line per group, smallest first, with its
/// count and hosts. `--json` has every host in full.
fn grouped(statuses: &[HostStatus], mixed: bool) -> String {
    let mut groups: Vec<(String, Vec<&HostStatus>)> = Vec::new();
    for s in statuses {
        let key = group_key(s);
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, members)) => members.push(s),
            None => groups.push((key, vec![s])),
        }
    }
    groups.sort_by_key(|(_, members)| members.len());
    let largest = groups.last().map(|(k, _)| k.clone()).unwrap_or_default();
    let differ: Vec<&str> = statuses
        .iter()
        .filter(|s| group_key(s) != largest)
        .map(|s| s.name.as_str())
        .collect();
    let mut out = String::new();
    if !differ.is_empty() && differ.len() <= GROUP_AT {
        let subset: Vec<&HostStatus> = statuses
            .iter()
            .filter(|s| differ.contains(&s.name.as_str()))
            .collect();
        out.push_str(&rows(&subset, false, false, 0));
        out.push_str(
            "

",
        );
    }
    out.push_str(&format!(
        "{} hosts in {} group(s), the ones that differ first:",
        statuses.len(),
        groups.len()
    ));
    const NAMES: usize = 12;
    for (key, members) in &groups {
        let mut names: Vec<&str> = members
            .iter()
            .take(NAMES)
            .map(|s| s.name.as_str())
            .collect();
        let more = members.len().saturating_sub(NAMES);
        let more = if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        };
        names.dedup();
        out.push_str(&format!(
            "\n{:>5}  {key}: {}{more}",
            members.len(),
            names.join(", ")
        ));
    }
    if mixed {
        out.push_str("\n\nMIXED: hosts are on different releases (above)");
    }
    out
}

fn rows(statuses: &[&HostStatus], mixed: bool, show_releases: bool, history: usize) -> String {
    let w = statuses
        .iter()
        .map(|s| s.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut out = format!(
        "{:<w$}  {:<25}  {:<10}  {:<8}  {:<20}  {:<9}  {:<8}  RELEASES",
        "HOST", "RELEASE", "VERSION", "COMMIT", "SERVICE", "HEALTH", "LOCK"
    );
    let mut notes = Vec::new();
    for s in statuses {
        if !s.reachable || !s.deployed {
            out.push_str(&format!(
                "\n{:<w$}  {}",
                s.name,
                if s.reachable {
                    "not deployed"
                } else {
                    "UNREACHABLE"
                }
            ));
            if let Some(e) = &s.error {
                notes.push(format!("{}: {}", s.name, e.trim_end()));
            }
            continue;
        }
        let health = match s.healthy {
            Some(true) => "ok",
            Some(false) => "FAILING",
            None => "-",
        };
        let lock = match s.lock_age_secs {
            Some(age) => format!("held {}", lock::age(age)),
            None if s.lock.is_some() => "held".into(),
            None => "-".into(),
        };
        out.push_str(&format!(
            "\n{:<w$}  {:<25}  {:<10}  {:<8}  {:<20}  {:<9}  {:<8}  {}",
            s.name,
            s.current.as_deref().unwrap_or("-"),
            s.version.as_deref().unwrap_or("-"),
            s.commit
                .as_deref()
                .map(|c| &c[..c.len().min(8)])
                .unwrap_or("-"),
            s.service.as_deref().unwrap_or("-"),
            health,
            lock,
            s.release_count
        ));
        if let Some(l) = &s.lock {
            notes.push(format!("{}: locked by {l}", s.name));
        }
        if let Some(g) = &s.guard {
            let back = g.previous.as_deref().unwrap_or("no release");
            notes.push(if g.fires_in_secs >= 0 {
                format!(
                    "{}: guard armed: puts {back} back in {}s unless the run that switched \
                     to {} confirms",
                    s.name, g.fires_in_secs, g.target
                )
            } else {
                format!(
                    "{}: guard overdue by {}s (its watcher is gone; `shipit unlock` removes it)",
                    s.name, -g.fires_in_secs
                )
            });
        }
        if let (Some(false), Some(reason)) = (s.healthy, &s.health) {
            notes.push(format!("{}: health: {reason}", s.name));
        }
        if let Some(p) = &s.proxy {
            notes.push(format!("{}: {}", s.name, describe_proxy(p)));
        }
        if let Some(t) = &s.last_transfer {
            notes.push(format!("{}: last deploy's artifact: {t}", s.name));
        }
        if let Some(since) = &s.service_since {
            notes.push(format!(
                "{}: service {} since {since}",
                s.name,
                s.service.as_deref().unwrap_or("")
            ));
        }
    }
    let out_lines: Vec<&str> = out.lines().map(str::trim_end).collect();
    let mut out = out_lines.join("\n");
    if mixed {
        let on: Vec<String> = statuses
            .iter()
            .filter_map(|s| s.current.as_ref().map(|c| format!("{} on {c}", s.name)))
            .collect();
        out.push_str(&format!(
            "\n\nMIXED: hosts are on different releases: {}",
            on.join(", ")
        ));
    }
    if !notes.is_empty() {
        out.push_str("\n\n");
        out.push_str(&notes.join("\n"));
    }
    if show_releases {
        for s in statuses.iter().filter(|s| s.deployed) {
            out.push_str(&format!("\n\n{} releases (newest first):", s.name));
            for r in &s.releases {
                out.push_str(&format!(
                    "\n  {} {:<11} {}{}",
                    r.id,
                    r.state,
                    r.version.as_deref().unwrap_or("-"),
                    if r.current { "  <- current" } else { "" }
                ));
            }
        }
    }
    if history > 0 {
        for s in statuses.iter().filter(|s| s.deployed) {
            out.push_str(&format!("\n\n{} history (last {history}):", s.name));
            for h in &s.history {
                let g = |k: &str| h.get(k).and_then(|v| v.as_str()).unwrap_or("-").to_owned();
                out.push_str(&format!(
                    "\n  {} {:<8} {:<11} {} by {}",
                    g("time"),
                    g("action"),
                    g("result"),
                    g("release"),
                    g("by")
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::printer::json::tests::assert_documented;

    fn host(name: &str, release: &str, healthy: bool) -> HostStatus {
        HostStatus {
            name: name.into(),
            reachable: true,
            deployed: true,
            current: Some(release.into()),
            version: Some("1.0".into()),
            service: Some("active".into()),
            healthy: Some(healthy),
            release_count: 2,
            ..HostStatus::default()
        }
    }

    #[test]
    fn many_hosts_are_grouped_and_the_ones_that_differ_come_first() {
        let mut all: Vec<HostStatus> = (1..=27)
            .map(|i| host(&format!("app{i:02}"), "20261205T000000Z-aaaaaaaa", true))
            .collect();
        all.insert(3, host("old1", "20261204T000000Z-bbbbbbbb", true));
        all.push(host("sick1", "20261205T000000Z-aaaaaaaa", false));
        all.push(HostStatus {
            name: "gone1".into(),
            error: Some("host `gone1`: connection refused".into()),
            ..HostStatus::default()
        });
        let text = table(&all, true, false, 0);
        let lines: Vec<&str> = text.lines().collect();
        // The three that differ, in full, first.
        assert!(lines[0].starts_with("HOST "), "{text}");
        assert!(lines[1].starts_with("old1 "), "{text}");
        assert!(
            lines[2].starts_with("sick1 ") && lines[2].contains("FAILING"),
            "{text}"
        );
        assert!(
            lines[3].starts_with("gone1 ") && lines[3].contains("UNREACHABLE"),
            "{text}"
        );
        assert!(
            text.contains("gone1: host `gone1`: connection refused"),
            "{text}"
        );
        assert!(
            text.contains("30 hosts in 4 group(s), the ones that differ first:"),
            "{text}"
        );
        let groups: Vec<&&str> = lines
            .iter()
            .skip_while(|l| !l.starts_with("30 hosts"))
            .skip(1)
            .take(4)
            .collect();
        assert_eq!(groups.len(), 4, "{text}");
        assert!(
            groups[3]
                .trim_start()
                .starts_with("27  release 20261205T000000Z-aaaaaaaa")
        );
        assert!(
            groups[3].ends_with(
                "app01, app02, app03, app04, app05, app06, app07, app08, app09, \
                                 app10, app11, app12 and 15 more"
            ),
            "{text}"
        );
        assert!(
            text.ends_with("MIXED: hosts are on different releases (above)"),
            "{text}"
        );
        // A screenful is shown host by host, as before.
        let few = table(&all[..10], false, false, 0);
        assert_eq!(few.lines().count(), 11, "{few}");
    }

    #[test]
    fn the_status_document_is_documented_field_by_field() {
        let host = HostStatus {
            name: "app1".into(),
            releases: vec![ReleaseRow {
                id: "20261122T051233Z-3f2a9c1d".into(),
                state: "live".into(),
                version: None,
                current: true,
            }],
            ..HostStatus::default()
        };
        let hosts = [host];
        let report = Report {
            environment: None,
            mixed: false,
            hosts: &hosts,
        };
        let text = crate::printer::json::render(&report).unwrap();
        assert!(text.starts_with("{\n  \"schema_version\": 1,"), "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        // History entries are the lines of the host's history.jsonl, as recorded.
        assert_documented("shipit status --json", &v, &["history"]);
    }
}
