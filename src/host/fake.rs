//! A fake host for the tests of the phases and the rollout: an in-memory model of one
//! server's `deploy_to` (releases and their states, `current`, the lock, the history,
//! what the service runs) that answers each [`Op`] as a host running that script would,
//! in the protocol the real parsers read. Faults are injected per op: a script that
//! fails at a step, a connection lost before or after the script had its effect, a
//! panic, a signal (the run's cancel flag set) at that moment, a release that is
//! unhealthy.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::AsyncReadExt;

use crate::config::ServiceManager;
use crate::health;
use crate::remote::release::{ReleaseInfo, State};
use crate::rollout::Cancel;
use crate::ssh::{self, ExecOutput, Target};

use super::remote::{Dialer, OnLine, Op, Ran, Remote, Upload};

/// Which op a fault strikes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum When {
    Survey,
    Stage,
    /// The `once: true` hooks.
    Once,
    /// The switch to this run's new release (or any release, with `None`).
    Activate(Option<String>),
    /// The switch back to the release the host ran before.
    Revert,
    Stop,
    SetState,
    History,
    Finish,
    Unlock,
    /// The health check of whatever the service runs.
    Health,
    Confirm,
    Renew,
}

/// What the fault does.
#[derive(Clone)]
pub enum Effect {
    /// The script exits with status 1 at `step`, having done nothing.
    Exit(&'static str),
    /// The script did its work up to `step` (a switch happened), then exited with 1 there.
    ExitAfter(&'static str),
    /// The connection drops before the script ran.
    LostBefore,
    /// The script ran (its effect is on the host), then the connection dropped.
    LostAfter,
    /// The task working on the host panics.
    Panic,
    /// SIGTERM arrives (the cancel flag is set) as the op starts; it then runs normally.
    Signal(Arc<Cancel>),
    /// The host's guard fires just before the op (the run was out of touch with it for
    /// longer than the confirm timeout); the op then runs.
    GuardFires,
    /// The deployer is killed (SIGKILL) as the op starts (`after`: once the host did it):
    /// the op never answers, and `Killer` says so to whoever drives the run.
    Kill { after: bool, killer: Arc<Killer> },
}

/// Tells the driver of a run that the deployer was killed.
#[derive(Default)]
pub struct Killer {
    pub notify: tokio::sync::Notify,
    pub at: Mutex<Option<(String, Op)>>,
}

#[derive(Clone)]
struct Fault {
    when: When,
    effect: Effect,
    /// How many more times it strikes.
    left: usize,
}

/// One fake server.
#[derive(Debug, Default, Clone)]
pub struct Model {
    pub current: Option<String>,
    pub releases: BTreeMap<String, State>,
    /// The token of whoever holds the lock.
    pub lock: Option<String>,
    /// The release the service runs (`None`: stopped).
    pub running: Option<String>,
    /// `action result release` of each history line.
    pub history: Vec<String>,
    /// Releases staged during the run.
    pub made: Vec<String>,
    /// The armed guard: the release it puts back (`None`: none before), its target.
    pub guard: Option<(Option<String>, String)>,
    /// The guard fired (the host went back by itself).
    pub guard_fired: bool,
    /// Releases that passed a health check here.
    pub healthy_seen: Vec<String>,
    /// What its `uname -m` says (`FakeHost::new`: x86_64).
    pub arch: String,
    /// Behind the proxy ([`FakeHost::behind_proxy`]): HAProxy's side of the host.
    pub proxy: Option<FakeProxy>,
}

/// HAProxy on a fake host: the live slot, each slot's weight, and the traffic each slot
/// has answered (requests, failures), which grows with its weight at every `show stat`.
#[derive(Debug, Default, Clone)]
pub struct FakeProxy {
    pub live: Option<u16>,
    pub weights: BTreeMap<u16, u32>,
    /// The slot the last shift moved traffic to, and whether its release is bad.
    pub new: Option<(u16, bool)>,
    pub served: BTreeMap<u16, (u64, u64)>,
    /// Releases that fail a fifth of their requests.
    pub bad: Vec<String>,
}

impl FakeProxy {
    /// The runtime API's answer to `command`.
    /// `bad`: the release the host last started fails requests.
    fn api(&mut self, command: &str, bad: bool) -> String {
        if command == "show stat" {
            let mut out = String::from(
                "# pxname,svname,scur,stot,econ,eresp,weight,hrsp_1xx,hrsp_2xx,hrsp_3xx,\
                 hrsp_4xx,hrsp_5xx,hrsp_other,rtime\n",
            );
            for port in [9001, 9002] {
                let w = u64::from(self.weights.get(&port).copied().unwrap_or(0));
                let bad = self.new.is_some_and(|(p, b)| p == port && b);
                let (total, failed) = self.served.entry(port).or_default();
                *total += w;
                if bad {
                    *failed += w / 5;
                }
                out.push_str(&format!(
                    "hello,slot{port},0,{total},0,0,{w},0,{},0,0,{failed},0,1\n",
                    *total - *failed,
                    total = *total
                ));
            }
            return out;
        }
        for part in command.split(';') {
            let w: Vec<&str> = part.split_whitespace().collect();
            if let ["set", "server", server, "weight", weight] = w.as_slice() {
                let port = server.rsplit("slot").next().and_then(|p| p.parse().ok());
                if let (Some(port), Ok(weight)) = (port, weight.parse()) {
                    if self.new.as_ref().is_none_or(|(p, _)| *p != port)
                        && part == command.split(';').next().unwrap_or("")
                    {
                        self.new = Some((port, bad));
                    }
                    self.weights.insert(port, weight);
                }
            }
        }
        String::new()
    }
}

pub struct FakeHost {
    pub name: String,
    pub model: Mutex<Model>,
    faults: Mutex<Vec<Fault>>,
    /// Releases whose health check fails.
    unhealthy: Mutex<Vec<String>>,
    /// Refuses connections.
    pub down: bool,
    /// The connection was lost: every later op fails the same way.
    dead: std::sync::atomic::AtomicBool,
    /// Every op it was asked to run, in order.
    pub log: Mutex<Vec<Op>>,
    /// How many connections were opened to it.
    pub dials: std::sync::atomic::AtomicUsize,
}

impl FakeHost {
    pub fn new(name: &str) -> Arc<FakeHost> {
        Arc::new(FakeHost {
            name: name.to_owned(),
            model: Mutex::new(Model {
                arch: "x86_64".into(),
                ..Model::default()
            }),
            faults: Mutex::default(),
            unhealthy: Mutex::default(),
            down: false,
            dead: Default::default(),
            log: Mutex::default(),
            dials: Default::default(),
        })
    }

    pub fn down(name: &str) -> Arc<FakeHost> {
        let mut host = FakeHost::new(name);
        if let Some(h) = Arc::get_mut(&mut host) {
            h.down = true;
        }
        host
    }

    /// A host that runs release `id` (live), with `older` live releases before it.
    pub fn on(self: &Arc<Self>, id: &str, older: &[&str]) -> Arc<Self> {
        let mut m = self.model();
        for r in older.iter().chain([&id]) {
            m.releases.insert((*r).to_owned(), State::Live);
        }
        m.current = Some(id.to_owned());
        m.running = Some(id.to_owned());
        drop(m);
        self.clone()
    }

    /// A host whose `uname -m` says `arch`.
    pub fn arch(self: &Arc<Self>, arch: &str) -> Arc<Self> {
        self.model().arch = arch.to_owned();
        self.clone()
    }

    pub fn fault(self: &Arc<Self>, when: When, effect: Effect) -> Arc<Self> {
        self.faults.lock().unwrap().push(Fault {
            when,
            effect,
            left: 1,
        });
        self.clone()
    }

    /// Release `release` fails its health check; `"new"`: any release staged in the run.
    pub fn unhealthy(self: &Arc<Self>, release: &str) -> Arc<Self> {
        self.unhealthy.lock().unwrap().push(release.to_owned());
        self.clone()
    }

    /// Behind the proxy, slot 9001 live with all the weight.
    pub fn behind_proxy(self: &Arc<Self>) -> Arc<Self> {
        self.model().proxy = Some(FakeProxy {
            live: Some(9001),
            weights: BTreeMap::from([(9001, 100), (9002, 0)]),
            ..FakeProxy::default()
        });
        self.clone()
    }

    /// Behind the proxy, `release` fails a fifth of the requests it answers.
    pub fn bad_traffic(self: &Arc<Self>, release: &str) -> Arc<Self> {
        if let Some(p) = self.model().proxy.as_mut() {
            p.bad.push(release.to_owned());
        }
        self.clone()
    }

    pub fn model(&self) -> std::sync::MutexGuard<'_, Model> {
        self.model.lock().unwrap()
    }

    pub fn current(&self) -> Option<String> {
        self.model().current.clone()
    }

    pub fn state_of(&self, id: &str) -> Option<State> {
        self.model().releases.get(id).copied()
    }

    /// The deployer is gone and the timeout passed: an armed guard puts the release it
    /// replaced back, marks a release of this run failed, and frees the lock.
    pub fn fire_guard(&self) {
        let mut m = self.model();
        let Some((previous, target)) = m.guard.take() else {
            return;
        };
        m.current = previous.clone();
        m.running = previous;
        if m.made.contains(&target) {
            m.releases.insert(target.clone(), State::Failed);
        }
        m.history.push(format!("reverted-by-guard {target}"));
        m.lock = None;
        m.guard_fired = true;
    }

    /// A connection to it was lost during the run.
    pub fn lost_touch(&self) -> bool {
        self.dead.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn kill(&self) {
        self.dead.store(true, std::sync::atomic::Ordering::SeqCst)
    }

    fn strike(&self, op: &Op) -> Option<Effect> {
        let previous = self.model().current.clone();
        let mut faults = self.faults.lock().unwrap();
        let hit = faults.iter_mut().find(|f| {
            f.left > 0
                && match (&f.when, op) {
                    (When::Survey, Op::Survey { .. }) => true,
                    (When::Stage, Op::Stage { .. }) => true,
                    (When::Once, Op::Once { .. }) => true,
                    (When::Activate(None), Op::Activate { .. }) => true,
                    (When::Activate(Some(id)), Op::Activate { release, .. }) => id == release,
                    // A revert switches to a release older than the one `current` names.
                    (When::Revert, Op::Activate { release, .. }) => {
                        previous.as_ref().is_some_and(|p| release < p)
                    }
                    (When::Stop, Op::Stop) => true,
                    (When::SetState, Op::SetState { .. }) => true,
                    (When::History, Op::History) => true,
                    (When::Finish, Op::Finish { .. }) => true,
                    (When::Unlock, Op::Unlock) => true,
                    (When::Health, Op::Other) => true,
                    (When::Confirm, Op::Confirm) => true,
                    (When::Renew, Op::Renew) => true,
                    _ => false,
                }
        })?;
        hit.left -= 1;
        Some(hit.effect.clone())
    }

    /// The op's effect on the model, and what the script prints.
    fn apply(&self, op: &Op, token: &str) -> Result<String, (&'static str, String)> {
        let mut m = self.model();
        let mut out = String::new();
        match op {
            Op::Survey { lock } => {
                if *lock {
                    match &m.lock {
                        Some(holder) if holder != token => out.push_str("@@lock held\n@@now 100\n"),
                        _ => {
                            m.lock = Some(token.to_owned());
                            out.push_str("@@lock acquired\n");
                        }
                    }
                }
                let current = m.current.clone().unwrap_or_default();
                out.push_str(&format!(
                    "@@current releases/{current}\n@@cached no\n@@arch {}\n",
                    m.arch
                ));
                if let Some(p) = &m.proxy {
                    let live = p.live.map_or("-".to_owned(), |l| l.to_string());
                    out.push_str(&format!(
                        "@@proxy haproxy /usr/sbin/haproxy 2.6.12\n@@proxy unit active\n\
                         @@proxy live {live}\n@@proxy port 80 1 inactive -\n"
                    ));
                    for port in [9001, 9002] {
                        let on = p.live == Some(port) && m.running.is_some();
                        let (l, a) = if on { (1, "active") } else { (0, "inactive") };
                        out.push_str(&format!("@@proxy port {port} {l} {a} -\n"));
                    }
                }
                for (id, state) in &m.releases {
                    let info = release_info(id, *state);
                    let json = serde_json::to_string(&info).unwrap_or_default();
                    out.push_str(&format!("@@release {id} {json}\n"));
                }
            }
            Op::Once { release } => {
                out.push_str("@@step once:1\n");
                m.history.push(format!("once {release}"));
            }
            Op::Stage { release } => {
                out.push_str("@@step unpack\n");
                m.releases.insert(release.clone(), State::Staged);
                m.made.push(release.clone());
            }
            Op::Activate { release, forward } => {
                if !m.releases.contains_key(release) {
                    return Err(("prepare", format!("release {release} is not on this host")));
                }
                m.guard = forward.then(|| (m.current.clone(), release.clone()));
                // Behind the proxy, the way back made the slot with the traffic live.
                if let (false, Some(p)) = (*forward, m.proxy.as_mut()) {
                    p.live = p.weights.iter().max_by_key(|(_, w)| **w).map(|(s, _)| *s);
                }
                if *forward {
                    out.push_str("@@guard armed\n");
                }
                m.current = Some(release.clone());
                out.push_str("@@step switch\n@@switched\n@@step restart\n");
                m.running = Some(release.clone());
                out.push_str("@@restarted\n");
            }
            Op::Stop => {
                m.guard = None;
                m.current = None;
                m.running = None;
            }
            Op::SetState { release, state } => {
                if let Some(s) = m.releases.get_mut(release) {
                    *s = *state;
                }
            }
            Op::History => m.history.push("history".into()),
            Op::Confirm => {
                if m.guard.take().is_some() {
                    out.push_str("@@guard confirmed\n");
                } else if m.guard_fired {
                    out.push_str("@@guard fired\n");
                }
            }
            Op::Renew => {
                if m.guard.is_some() {
                    out.push_str("@@guard armed\n");
                } else if m.guard_fired {
                    out.push_str("@@guard fired\n");
                }
            }
            Op::Finish { live } => {
                out.push_str("@@step cleanup\n");
                m.releases.insert(live.clone(), State::Live);
                m.history.push(format!("ok {live}"));
                if m.lock.as_deref() == Some(token) {
                    m.lock = None;
                }
            }
            Op::Unlock => {
                if m.lock.as_deref() == Some(token) {
                    m.lock = None;
                }
            }
            Op::Promote { .. } => {
                if let Some(p) = m.proxy.as_mut()
                    && let Some((port, _)) = p.new
                {
                    p.live = Some(port);
                }
            }
            Op::Other | Op::Fetch | Op::Retire => {}
        }
        Ok(out)
    }
}

/// What the fake writes in release.json.
fn release_info(id: &str, state: State) -> ReleaseInfo {
    ReleaseInfo {
        id: id.to_owned(),
        app: "hello".into(),
        version: "1".into(),
        commit: None,
        artifact_sha256: format!("sha-of-{id}"),
        state,
        created_at: 0,
        deployed_by: "test@here".into(),
        config_sha256: None,
    }
}

/// A connection to a fake host, for the run whose lock token is `token`.
struct Link {
    host: Arc<FakeHost>,
    token: String,
}

fn lost(host: &str) -> ssh::Error {
    ssh::Error::ConnectionLost {
        host: host.to_owned(),
        what: "running a script".into(),
    }
}

impl Link {
    /// What happens as `op` starts: after a moment (other hosts' tasks run in between),
    /// the fault that strikes it, if any. A lost link, a kill (`after`: once `apply` did
    /// the op's work), a panic, a signal and an early guard take effect here; the rest
    /// (a failing script, a link lost after the op) is the caller's to play out.
    async fn strike(&self, op: &Op, apply: impl FnOnce()) -> Result<Option<Effect>, ssh::Error> {
        tokio::task::yield_now().await;
        if self.host.lost_touch() {
            return Err(lost(&self.host.name));
        }
        let effect = self.host.strike(op);
        match &effect {
            Some(Effect::Kill { after, killer }) => {
                if *after {
                    apply();
                }
                *killer.at.lock().unwrap() = Some((self.host.name.clone(), op.clone()));
                killer.notify.notify_one();
                std::future::pending().await
            }
            Some(Effect::LostBefore) => {
                self.host.kill();
                Err(lost(&self.host.name))
            }
            Some(Effect::Panic) => panic!("{}: injected panic", self.host.name),
            Some(Effect::Signal(cancel)) => {
                cancel.set();
                Ok(effect)
            }
            Some(Effect::GuardFires) => {
                self.host.fire_guard();
                Ok(effect)
            }
            _ => Ok(effect),
        }
    }
}

#[async_trait]
impl Remote for Link {
    async fn run(
        &self,
        op: Op,
        _script: &str,
        upload: Option<Upload<'_>>,
        on_line: OnLine<'_>,
    ) -> Result<Ran, ssh::Error> {
        self.host.log.lock().unwrap().push(op.clone());
        let effect = self
            .strike(&op, || drop(self.host.apply(&op, &self.token)))
            .await?;
        if let Some(Effect::Exit(step)) = &effect {
            on_line(&format!("@@step {step}"));
            return Ok(Ran {
                out: ExecOutput {
                    status: Some(1),
                    stderr_tail: format!("injected failure at {step}"),
                    ..ExecOutput::default()
                },
                sent: None,
            });
        }
        let sent = match upload {
            Some(mut up) => {
                let mut buf = Vec::new();
                let n = up.data.read_to_end(&mut buf).await.unwrap_or(0) as u64;
                (up.progress)(n);
                Some((n, n == up.total))
            }
            None => None,
        };
        let (status, stdout, stderr_tail) = match (self.host.apply(&op, &self.token), &effect) {
            (Ok(out), Some(Effect::ExitAfter(step))) => {
                let out = match out.find(&format!("@@step {step}\n")) {
                    Some(at) => out[..at].to_owned(),
                    None => out,
                };
                (
                    1,
                    format!("{out}@@step {step}\n"),
                    format!("injected failure at {step}"),
                )
            }
            (Ok(out), _) => (0, out, String::new()),
            (Err((step, why)), _) => (1, format!("@@step {step}\n"), why),
        };
        for line in stdout.lines() {
            on_line(line);
        }
        if matches!(effect, Some(Effect::LostAfter)) {
            self.host.kill();
            return Err(lost(&self.host.name));
        }
        Ok(Ran {
            out: ExecOutput {
                status: Some(status),
                stdout,
                stderr_tail,
                ..ExecOutput::default()
            },
            sent,
        })
    }

    async fn health(&self, _: &health::Spec<'_>, _: &str) -> Result<health::Outcome, String> {
        let effect = self.strike(&Op::Other, || {}).await;
        if let Ok(Some(Effect::LostAfter)) | Err(_) = effect {
            self.host.kill();
            return Err(lost(&self.host.name).to_string());
        }
        let m = self.host.model().clone();
        let running = m.running.unwrap_or_default();
        let sick = self
            .host
            .unhealthy
            .lock()
            .unwrap()
            .iter()
            .any(|u| *u == running || (u == "new" && m.made.contains(&running)));
        if !sick {
            self.host.model().healthy_seen.push(running.clone());
        }
        Ok(if sick {
            health::Outcome::Unhealthy {
                reason: format!("{running} answers 500"),
                attempts: 3,
                elapsed: Duration::from_millis(30),
            }
        } else {
            health::Outcome::Healthy {
                attempts: 1,
                elapsed: Duration::from_millis(10),
            }
        })
    }

    async fn journal(&self, _: ServiceManager, service: &str, _: bool, _: usize) -> String {
        format!("{service}: last words")
    }

    async fn proxy_api(&self, _: &str, command: &str) -> Result<String, String> {
        if self.host.lost_touch() {
            return Err(lost(&self.host.name).to_string());
        }
        let mut m = self.host.model();
        let running = m.running.clone().unwrap_or_default();
        let made = m.made.contains(&running);
        match m.proxy.as_mut() {
            Some(p) => {
                let bad = p.bad.iter().any(|b| *b == running || (b == "new" && made));
                Ok(p.api(command, bad))
            }
            None => Err("no proxy on this fake host".into()),
        }
    }
}

/// Dials fake hosts by name, for the run whose lock token is `token`.
pub struct Fleet {
    pub hosts: Vec<Arc<FakeHost>>,
    pub token: String,
}

impl Fleet {
    pub fn host(&self, name: &str) -> &Arc<FakeHost> {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no fake host {name}"))
    }

    pub fn targets(&self) -> Vec<Target> {
        self.hosts.iter().map(|h| target(&h.name)).collect()
    }
}

pub fn target(name: &str) -> Target {
    Target {
        name: name.to_owned(),
        host: format!("{name}.test"),
        port: 22,
        user: "deploy".into(),
        identity_files: Vec::new(),
        known_hosts: ssh::KnownHostsPolicy::Strict,
        known_hosts_files: Vec::new(),
        proxy_jump: None,
        proxy_command: None,
        identity_agent: None,
        connect_timeout: Duration::from_secs(1),
    }
}

#[async_trait]
impl Dialer for Fleet {
    async fn dial(&self, target: &Target) -> Result<Box<dyn Remote>, ssh::Error> {
        // By address: with roles a run is named `host/role`.
        let host = self.host(target.host.trim_end_matches(".test")).clone();
        host.dials.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if host.down {
            return Err(ssh::Error::Refused {
                host: target.name.clone(),
                addr: "127.0.0.1:22".parse().expect("an address"),
            });
        }
        Ok(Box::new(Link {
            host,
            token: self.token.clone(),
        }))
    }
}
