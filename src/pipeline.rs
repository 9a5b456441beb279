//! The per-host pipeline of a deploy or a rollback: phases that a rollout drives over
//! many hosts. Each phase is one script over the host's one SSH connection.
//!
//! `Plan` holds what is the same for every host (the artifact, the release id, the
//! scripts' inputs); `HostRun` holds one host's connection, what its survey found and
//! where it stands. Phases never print tables or decide fleet policy; they record the
//! host's state and report progress through the printer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use std::collections::HashMap;

use tokio::io::AsyncRead;

use crate::artifact::Manifest;
use crate::artifact::delta::{self, Delta};
use crate::config::{Config, DeltaMode, HealthConfig, RestartMode, ServiceManager};
use crate::health;
use crate::printer::Printer;
use crate::redact::Text;
use crate::remote::activate::{self, Activate};
use crate::remote::finish;
use crate::remote::lock::{self, Owner};
use crate::remote::markers;
use crate::remote::release::{Found, ReleaseInfo, State};
use crate::remote::stage::{self, DeltaSource, Source, Stage};
use crate::remote::survey::{self, LockAnswer, Survey};
use crate::ssh::{Connector, Session, Target};

/// What every host of one run shares.
pub struct Plan {
    pub deploy_to: String,
    pub app: String,
    pub owner: Owner,
    pub deployed_by: String,
    pub printer: Printer,
    pub manager: ServiceManager,
    pub service: String,
    pub sudo: bool,
    pub restart: RestartMode,
    pub unit: Option<String>,
    pub health: HealthConfig,
    pub hooks_after_switch: Vec<Text>,
    pub hooks_after_rollback: Vec<Text>,
    pub keep_releases: usize,
    pub deploy: Option<DeployPlan>,
    /// On a terminal: the live view. `None`: plain lines.
    pub view: Option<Arc<crate::view::View>>,
    /// When the run began: event times count from here.
    pub started: Instant,
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
    pub artifact: Arc<crate::artifact::Artifact>,
    pub release_id: String,
    pub env_file: String,
    pub env_file_redacted: String,
    pub shared_dirs: Vec<String>,
    pub shared_files: Vec<String>,
    pub before_switch: Vec<Text>,
    pub config_sha256: String,
    pub delta: DeltaMode,
    /// `--force`: deploy even where the host already runs this artifact and config.
    pub force: bool,
    /// The deltas for this artifact, built once per live release they start from.
    pub deltas: Arc<Deltas>,
}

/// Deltas of one artifact, by the sha256 of the live release's manifest they start from:
/// hosts on the same release share one. Its own `Arc`, so a build can start in the
/// background as soon as a host's survey names its live release.
pub struct Deltas {
    artifact: Arc<crate::artifact::Artifact>,
    /// Shared dirs and files: never reused (they become links on the host).
    shared: Vec<String>,
    mode: DeltaMode,
    built: tokio::sync::Mutex<HashMap<String, Result<Arc<Delta>, String>>>,
}

impl Deltas {
    pub fn new(
        artifact: Arc<crate::artifact::Artifact>,
        shared: Vec<String>,
        mode: DeltaMode,
    ) -> Deltas {
        Deltas {
            artifact,
            shared,
            mode,
            built: Default::default(),
        }
    }

    /// Start building the delta from live release manifest `base` in the background.
    pub fn prefetch(self: &Arc<Self>, base: Option<&str>) {
        if let Some(base) = base.filter(|_| self.mode != DeltaMode::Off) {
            let (me, base) = (self.clone(), base.to_owned());
            tokio::spawn(async move {
                let _ = me.get(&base).await;
            });
        }
    }

    /// The delta for a host whose live release has manifest `base` (JSON), built once per
    /// distinct base. `Err` says why that host gets the full artifact.
    pub async fn get(&self, base: &str) -> Result<Arc<Delta>, String> {
        use sha2::Digest;
        if self.mode == DeltaMode::Off {
            return Err("delta: off".into());
        }
        if let Some(why) = delta::unsupported(&self.artifact.manifest) {
            return Err(why);
        }
        let key = hex::encode(sha2::Sha256::digest(base.as_bytes()));
        let mut cache = self.built.lock().await;
        if let Some(found) = cache.get(&key) {
            return found.clone();
        }
        let built = match serde_json::from_str::<Manifest>(base) {
            Err(e) => Err(format!("the live release's manifest is unreadable ({e})")),
            Ok(old) if old.format != self.artifact.manifest.format => Err(format!(
                "the live release's manifest has format {}",
                old.format
            )),
            Ok(old) => {
                let artifact = self.artifact.clone();
                let shared = self.shared.clone();
                let link = self.mode == DeltaMode::Hardlink;
                match tokio::task::spawn_blocking(move || {
                    delta::build(&artifact, &old, &shared, link)
                })
                .await
                {
                    Ok(Ok(delta)) if delta.len() > self.artifact.size / 2 => Err(format!(
                        "the delta ({}) would be more than half the artifact",
                        crate::commands::human_bytes(delta.len())
                    )),
                    Ok(Ok(delta)) => Ok(Arc::new(delta)),
                    Ok(Err(e)) => Err(format!("cannot build the delta: {e}")),
                    Err(e) => Err(format!("cannot build the delta: {e}")),
                }
            }
        };
        cache.insert(key, built.clone());
        built
    }
}

/// What a host is sent to stage the release, decided from its survey: one choice for a
/// deploy and for its dry run.
pub enum Shipment {
    /// Nothing: the artifact is cached on the host.
    Cached,
    /// What the live release (`base`) lacks.
    Delta { delta: Arc<Delta>, base: String },
    /// The whole artifact; `why_not_delta` when a delta was considered.
    Full { why_not_delta: Option<String> },
}

impl DeployPlan {
    pub async fn shipment(&self, survey: &Survey) -> Shipment {
        if survey.cached {
            return Shipment::Cached;
        }
        match (&survey.base_manifest, &survey.current) {
            // `current` points somewhere that is not a release of this layout: whatever is
            // there is not a base to copy or link files from.
            (Some(_), Some(base)) if !crate::remote::layout::is_release_id(base) => {
                Shipment::Full {
                    why_not_delta: Some(format!(
                        "`current` points to `{base}`, not to a release under releases/"
                    )),
                }
            }
            (Some(_), Some(_)) if self.delta == DeltaMode::Hardlink && !survey.base_verified => {
                Shipment::Full {
                    why_not_delta: Some(
                        "the live release has no record of its files to link them safely (it was not made with delta: hardlink); the next deploy can be a delta".into(),
                    ),
                }
            }
            (Some(manifest), Some(base)) => match self.deltas.get(manifest).await {
                Ok(delta) => Shipment::Delta {
                    delta,
                    base: base.clone(),
                },
                Err(why) => Shipment::Full {
                    why_not_delta: Some(why),
                },
            },
            _ => Shipment::Full {
                why_not_delta: None,
            },
        }
    }

    /// The stage script's source for `delta` against release `base`.
    pub fn delta_source<'a>(&self, delta: &'a Delta, base: &'a str) -> Source<'a> {
        Source::Delta(DeltaSource {
            base,
            link: delta.link,
            reuse_len: delta.reuse_gz.len() as u64,
            tree_sha256: &delta.tree_sha256,
            content_sha256: &delta.content_sha256,
        })
    }

    pub fn full_source(&self) -> Source<'_> {
        Source::Full {
            cksum: &self.artifact.cksum,
        }
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
}

impl Plan {
    pub fn new(
        config: &Config,
        command: &str,
        version: Option<&str>,
        printer: Printer,
    ) -> anyhow::Result<Plan> {
        let unit = match &config.service.unit_file {
            Some(f) => Some(
                std::fs::read_to_string(config.dir.join(f.expose()))
                    .map_err(|e| anyhow::anyhow!("cannot read the unit file `{f}`: {e}"))?,
            ),
            None => None,
        };
        let owner = Owner::here(command, version);
        Ok(Plan {
            deploy_to: config.deploy_to.expose().to_owned(),
            app: config.app.clone(),
            deployed_by: format!("{}@{}", owner.user, owner.machine),
            owner,
            printer,
            manager: config.service.manager,
            service: config.service.name.clone(),
            sudo: config.service.sudo,
            restart: config.service.restart,
            unit,
            health: config.health.clone(),
            hooks_after_switch: config.hooks.after_switch.clone(),
            hooks_after_rollback: config.hooks.after_rollback.clone(),
            keep_releases: config.keep_releases as usize,
            deploy: None,
            started: Instant::now(),
            view: printer.progress.then(|| Arc::new(crate::view::View::new())),
        })
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

    /// A run for `target`, with its own live line when there is a terminal.
    pub fn run_for(&self, target: Target) -> HostRun {
        let mut run = HostRun::new(target);
        if let Some(view) = &self.view {
            run.bar = view.host(&run.target.name);
            run.view = Some(view.clone());
        }
        run
    }

    /// The stage script of this deploy from `source`; with `redact`, secrets shown as
    /// `[redacted]` (for `--dry-run`).
    pub fn stage_script(
        &self,
        d: &DeployPlan,
        source: Source,
        redact: bool,
    ) -> Result<String, crate::ssh::quote::QuoteError> {
        let json = |state| serde_json::to_string(&self.release_info(d, state)).unwrap_or_default();
        stage::stage(&Stage {
            id: &d.release_id,
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
        })
    }

    /// What release.json says about the release this deploy makes, in `state`.
    pub fn release_info(&self, d: &DeployPlan, state: State) -> ReleaseInfo {
        ReleaseInfo {
            id: d.release_id.clone(),
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

/// Where a host stands, for the summary and the exit code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum Outcome {
    /// Not worked on yet, or still in progress.
    Pending,
    /// Already on this artifact; nothing done.
    Skipped { reason: String },
    /// Could not connect, authenticate or verify the host key.
    Unreachable { reason: String },
    /// Another deploy holds the lock.
    Locked { holder: String },
    /// A step failed before anything was switched on this host.
    Failed { step: String, reason: String },
    /// Switched and healthy.
    Done,
    /// Unhealthy (or stopped by a failure elsewhere), and put back on its old release.
    RolledBack { reason: String },
    /// Could not be put back: a human must look.
    Broken { reason: String },
    /// Stopped by Ctrl-C or SIGTERM at a safe point.
    Interrupted { state: String },
    /// Staged, but the rollout stopped before its turn: still on its old release.
    NotSwitched { reason: String },
}

/// What a host was sent to stage the release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transfer {
    /// Nothing: the artifact was cached on the host.
    Cached,
    /// The whole artifact.
    Full,
    /// Only what the live release lacks.
    Delta,
}

pub struct HostRun {
    pub target: Target,
    pub session: Option<Session>,
    pub survey: Survey,
    pub locked: bool,
    /// `current` before this run switched it.
    pub previous: Option<String>,
    /// The release this run switched to, if it switched.
    pub switched_to: Option<String>,
    pub outcome: Outcome,
    pub started: Instant,
    pub finished: Option<Duration>,
    /// Bytes uploaded to this host.
    pub uploaded: u64,
    /// How the release got there (`None`: not shipped).
    pub transfer: Option<Transfer>,
    /// Files taken from the live release (delta deploys).
    pub reused: usize,
    /// Set once everything to upload has been sent: from then on an interrupted stage is
    /// left to finish (its hooks run to the end), since nothing is left to abandon.
    pub past_upload: Arc<std::sync::atomic::AtomicBool>,
    pub warnings: Vec<String>,
    /// Last lines of the service's journal, when it failed its health check.
    pub journal: Option<String>,
    /// This host's live line on a terminal.
    pub bar: Option<ProgressBar>,
    /// The release this run switches the host to.
    pub goal: Option<String>,
    /// The live view this host belongs to (with or without a line of its own).
    pub view: Option<Arc<crate::view::View>>,
}

impl HostRun {
    pub fn new(target: Target) -> HostRun {
        HostRun {
            target,
            session: None,
            survey: Survey::default(),
            locked: false,
            previous: None,
            switched_to: None,
            outcome: Outcome::Pending,
            started: Instant::now(),
            finished: None,
            uploaded: 0,
            transfer: None,
            reused: 0,
            past_upload: Default::default(),
            warnings: Vec::new(),
            journal: None,
            bar: None,
            goal: None,
            view: None,
        }
    }

    /// An empty stand-in while a run is out being worked on.
    pub fn placeholder() -> HostRun {
        HostRun::new(Target {
            name: String::new(),
            host: String::new(),
            port: 0,
            user: String::new(),
            identity_files: Vec::new(),
            known_hosts: crate::ssh::KnownHostsPolicy::Strict,
            known_hosts_files: Vec::new(),
            proxy_jump: None,
            connect_timeout: Duration::ZERO,
        })
    }

    pub fn not_switched(&mut self, reason: &str) {
        self.end(Outcome::NotSwitched {
            reason: reason.to_owned(),
        });
    }

    pub fn name(&self) -> &str {
        &self.target.name
    }

    pub fn is_pending(&self) -> bool {
        self.outcome == Outcome::Pending
    }

    fn say(&self, plan: &Plan, text: &str) {
        match (&self.bar, &self.view) {
            (Some(bar), _) => bar.set_message(text.to_owned()),
            // In the view without a line of its own: silent until the summary.
            (None, Some(_)) => {}
            (None, None) => plan
                .printer
                .event(&self.target.name, plan.started.elapsed(), text),
        }
    }

    /// A warning about this host, above the live lines when there are some.
    fn warn(&self, plan: &Plan, text: &str) {
        let line = format!("{}: {text}", self.target.name);
        match &self.view {
            Some(view) => view.println(&format!("warning: {line}")),
            None => plan.printer.warn(&line),
        }
    }

    /// Record where this host ended up (once), and when.
    pub fn end(&mut self, outcome: Outcome) {
        self.outcome = outcome;
        self.finished = Some(self.started.elapsed());
        if let Some(view) = &self.view {
            view.host_finished();
        }
        if let Some(bar) = &self.bar {
            let word = match &self.outcome {
                Outcome::Done => "done",
                Outcome::Skipped { .. } => "unchanged",
                Outcome::RolledBack { .. } => "rolled back",
                Outcome::Broken { .. } => "BROKEN",
                Outcome::Failed { .. } => "failed",
                Outcome::Unreachable { .. } => "unreachable",
                Outcome::Locked { .. } => "locked",
                Outcome::Interrupted { .. } => "interrupted",
                Outcome::NotSwitched { .. } => "not switched",
                Outcome::Pending => "",
            };
            bar.set_style(
                ProgressStyle::with_template("  {prefix:<24} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.finish_with_message(word);
        }
    }

    fn fail(&mut self, step: &str, reason: impl Into<String>) {
        self.end(Outcome::Failed {
            step: step.to_owned(),
            reason: reason.into(),
        });
    }

    /// Run a script in deploy_to, streaming non-protocol lines as the host's output.
    /// Returns stdout and the last step marker seen, or the failure as (step, reason).
    async fn run(&self, plan: &Plan, script: &str) -> Result<String, (String, String)> {
        self.run_with(plan, script, None::<(&[u8], u64)>)
            .await
            .map(|(out, _)| out)
    }

    /// `run`, with `data` (and its size) on the script's stdin; then also says how many
    /// bytes went, and shows them going on the host's live line.
    async fn run_with<R: AsyncRead + Unpin>(
        &self,
        plan: &Plan,
        script: &str,
        data: Option<(R, u64)>,
    ) -> Result<(String, Option<(u64, bool)>), (String, String)> {
        let Some(session) = &self.session else {
            return Err(("connect".into(), "not connected".into()));
        };
        let printer = plan.printer;
        let view = self.view.clone();
        let name = self.target.name.clone();
        let mut step = String::from("prepare");
        let full = format!(
            "{}{script}",
            crate::remote::enter(&plan.deploy_to, true)
                .map_err(|e| ("prepare".to_owned(), e.to_string()))?
        );
        let on_line = |_: crate::ssh::Stream, line: &str| {
            if let Some(s) = markers::step(line) {
                step = s.to_owned();
                crate::faultpoint::reached(s, &name);
            } else if !markers::is_protocol(line) {
                match &view {
                    Some(view) => view.println(&format!("{name}: {line}")),
                    None => printer.child_line(&name, &format!("{name}: {line}")),
                }
            }
        };
        let past_upload = self.past_upload.clone();
        let (result, sent) = match data {
            None => {
                past_upload.store(true, std::sync::atomic::Ordering::Relaxed);
                (session.exec(&full, on_line).await, None)
            }
            Some((reader, total)) => {
                let bar = self.bar.clone();
                if let Some(b) = &bar {
                    b.set_style(
                        ProgressStyle::with_template("{spinner} {prefix:<24} uploading [{bar:20}] {bytes}/{total_bytes} {bytes_per_sec}")
                            .unwrap_or_else(|_| ProgressStyle::default_bar())
                            .progress_chars("=> "),
                    );
                    b.set_length(total);
                    b.set_position(0);
                }
                let progress = move |n: u64| {
                    if let Some(b) = &bar {
                        b.set_position(n);
                    }
                    if n >= total {
                        past_upload.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                };
                let out = session
                    .exec_with_data(&full, reader, progress, on_line)
                    .await;
                if let Some(b) = &self.bar {
                    b.set_style(
                        ProgressStyle::with_template("{spinner} {prefix:<24} {msg}")
                            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                    );
                }
                match out {
                    Ok(o) => (Ok(o.exec), Some((o.bytes, o.complete))),
                    Err(e) => (Err(e), None),
                }
            }
        };
        match result {
            Ok(out) if out.success() => Ok((out.stdout, sent)),
            Ok(out) => {
                let how = match (&out.status, &out.signal) {
                    (Some(code), _) => format!("exit status {code}"),
                    (None, Some(sig)) => format!("signal {sig}"),
                    _ => "no exit status".into(),
                };
                let tail = out.stderr_tail.trim();
                Err((
                    step,
                    if tail.is_empty() {
                        format!("failed with {how}")
                    } else {
                        format!("failed with {how}: {tail}")
                    },
                ))
            }
            Err(e) => Err((step, e.to_string())),
        }
    }

    pub async fn connect(&mut self, connector: &Connector) {
        let session = connector.connect(&self.target).await;
        self.connected(session);
    }

    /// The outcome of connecting, here or ahead of time ([`crate::rollout::connect_early`]).
    pub fn connected(&mut self, session: Result<Session, crate::ssh::Error>) {
        match session {
            Ok(s) => self.session = Some(s),
            Err(e) => {
                let reason = e.to_string();
                if e.is_unreachable() {
                    self.end(Outcome::Unreachable { reason });
                } else {
                    self.fail("connect", reason);
                }
            }
        }
    }

    /// Survey the host, taking the lock first unless `read_only`. A lock left by a dead
    /// process of this machine is broken (and said so).
    pub async fn survey(&mut self, plan: &Plan, read_only: bool) {
        if !read_only {
            crate::faultpoint::reached("lock", &self.target.name);
        }
        let wanted = plan.deploy.as_ref().map(|d| survey::Wanted {
            sha256: &d.sha256,
            cksum: &d.artifact.cksum,
            manifest: d.delta != DeltaMode::Off,
            unchanged: (!d.force && !read_only)
                .then_some((d.config_sha256.as_str(), plan.owner.token.as_str())),
        });
        let script = |break_token: Option<&str>| -> Result<String, String> {
            let mut s = String::new();
            if !read_only {
                s.push_str(&lock::acquire(&plan.owner, break_token).map_err(|e| e.to_string())?);
            }
            s.push_str(&survey::survey(wanted.as_ref()).map_err(|e| e.to_string())?);
            Ok(s)
        };
        let mut attempt = script(None);
        for _ in 0..2 {
            let text = match &attempt {
                Ok(t) => t.clone(),
                Err(e) => return self.fail("lock", e.clone()),
            };
            match self.run(plan, &text).await {
                Err((step, reason)) => return self.fail(&step, reason),
                Ok(out) => {
                    self.survey = survey::parse_survey(&out);
                    self.previous = self.survey.current.clone();
                    match &self.survey.lock {
                        // Already on this artifact and config: the lock went back at once.
                        Some(LockAnswer::Acquired) if self.survey.unchanged => {}
                        Some(LockAnswer::Acquired) => self.locked = true,
                        Some(LockAnswer::Held {
                            owner: Some(owner), ..
                        }) if owner.is_stale_here()
                            && attempt.as_ref().is_ok_and(|t| !t.contains(&owner.token)) =>
                        {
                            self.warn(
                                plan,
                                &format!(
                                    "breaking a stale lock: {}",
                                    owner.describe(self.survey.now)
                                ),
                            );
                            attempt = script(Some(&owner.token));
                            continue;
                        }
                        _ => {}
                    }
                    return;
                }
            }
        }
    }

    /// Still in the run, and its lock is held by someone else (a host whose survey found
    /// nothing to do gave its lock back on purpose: it waits for nothing).
    pub fn waits_for_lock(&self) -> bool {
        self.is_pending() && !self.locked && !self.survey.unchanged
    }

    /// Who holds the lock, when someone else does.
    pub fn lock_holder(&self) -> Option<String> {
        match &self.survey.lock {
            Some(LockAnswer::Held {
                owner: Some(owner), ..
            }) => Some(owner.describe(self.survey.now)),
            Some(LockAnswer::Held { owner: None, since }) => Some(format!(
                "unknown (no owner file), since {}",
                since.map_or("an unknown time".into(), |s| format!(
                    "{} ({} ago)",
                    crate::remote::layout::iso8601(s),
                    lock::age(self.survey.now.saturating_sub(s))
                ))
            )),
            _ => None,
        }
    }

    pub async fn unlock(&mut self, plan: &Plan) {
        if !self.locked || self.session.is_none() {
            return;
        }
        if let Ok(script) = lock::release(&plan.owner.token)
            && self.run(plan, &script).await.is_ok()
        {
            self.locked = false;
        }
    }

    /// Upload and stage in one round trip: unpack, link, write .env, run before_switch.
    /// Nothing that serves traffic changes. What travels: nothing when the host has the
    /// artifact cached; a delta against its live release when there is one with a
    /// manifest (unless `delta: off`); else the whole artifact. A delta that does not
    /// verify on the host is discarded, and the whole artifact follows, once.
    pub async fn ship(&mut self, plan: &Plan) {
        let Some(d) = &plan.deploy else { return };
        match d.shipment(&self.survey).await {
            Shipment::Cached => {
                self.say(plan, "artifact already on the host, not uploaded");
                self.transfer = Some(Transfer::Cached);
                self.stage(plan, Source::Cached, None::<(&[u8], u64)>).await;
                return;
            }
            Shipment::Delta { delta, base } => {
                let data = tokio::io::AsyncReadExt::chain(&delta.reuse_gz[..], &delta.archive[..]);
                self.transfer = Some(Transfer::Delta);
                self.reused = delta.reused;
                let source = d.delta_source(&delta, &base);
                match self.stage(plan, source, Some((data, delta.len()))).await {
                    Some(why) => {
                        self.warn(
                            plan,
                            &format!(
                                "the delta did not verify ({why}); sending the whole artifact"
                            ),
                        );
                        self.reused = 0;
                    }
                    None => return,
                }
            }
            Shipment::Full {
                why_not_delta: Some(why),
            } if d.delta != DeltaMode::Off => {
                self.say(plan, &format!("sending the whole artifact: {why}"));
            }
            Shipment::Full { .. } => {}
        }
        let a = &d.artifact;
        let data: Box<dyn AsyncRead + Unpin + Send + '_> = match &a.bytes {
            Some(bytes) => Box::new(&bytes[..]),
            None => match tokio::fs::File::open(&a.path).await {
                Ok(f) => Box::new(tokio::io::BufReader::with_capacity(1 << 20, f)),
                Err(e) => {
                    return self.fail("upload", format!("cannot read {}: {e}", a.path.display()));
                }
            },
        };
        self.transfer = Some(Transfer::Full);
        if let Some(why) = self
            .stage(plan, d.full_source(), Some((data, a.size)))
            .await
        {
            self.fail(
                "verify",
                format!("the release does not match the artifact: {why}"),
            );
        }
    }

    /// The stage script from `source`, with its data. `Some(why)` when the host turned a
    /// delta down (`markers::DELTA_MISMATCH`); failures end the run.
    async fn stage<R: AsyncRead + Unpin>(
        &mut self,
        plan: &Plan,
        source: Source<'_>,
        data: Option<(R, u64)>,
    ) -> Option<String> {
        let d = plan.deploy.as_ref()?;
        let script = match plan.stage_script(d, source, false) {
            Ok(s) => s,
            Err(e) => {
                self.fail("stage", e.to_string());
                return None;
            }
        };
        match self.run_with(plan, &script, data).await {
            Ok((out, sent)) => {
                let (bytes, complete) = sent.unwrap_or((0, true));
                self.uploaded += bytes;
                if let Some(why) = stage::delta_mismatch(&out) {
                    return Some(why);
                }
                if !complete {
                    self.fail(
                        "upload",
                        "the host stopped reading the upload before its end",
                    );
                    return None;
                }
                let what = match self.transfer {
                    Some(Transfer::Delta) => format!(
                        ", {} sent as a delta, {} files reused",
                        crate::commands::human_bytes(bytes),
                        self.reused
                    ),
                    Some(Transfer::Full) => {
                        format!(", {} sent", crate::commands::human_bytes(bytes))
                    }
                    _ => String::new(),
                };
                self.say(plan, &format!("staged release {}{what}", d.release_id));
                None
            }
            Err((step, reason)) => {
                self.fail(&step, reason);
                None
            }
        }
    }

    /// Switch to `id`, restart, and wait until healthy. `Err` holds why it is not.
    pub async fn activate(&mut self, plan: &Plan, id: &str) -> Result<(), String> {
        self.say(plan, &format!("switching to {id}"));
        let script = activate::activate(&Activate {
            id,
            manager: plan.manager,
            service: &plan.service,
            sudo: plan.sudo,
            restart: plan.restart,
            unit: plan.unit.as_deref(),
        })
        .map_err(|e| e.to_string())?;
        let out = self.run(plan, &script).await;
        // Whatever happened after the switch, `current` may have moved.
        if let Ok(o) = &out
            && activate::switched(o)
        {
            self.switched_to = Some(id.to_owned());
        }
        if let Err((step, reason)) = &out {
            if step != "switch" && step != "prepare" {
                self.switched_to = Some(id.to_owned());
            }
            return Err(format!("{step}: {reason}"));
        }
        self.say(
            plan,
            &format!(
                "switched to {id}{}",
                if plan.manager == ServiceManager::None {
                    ""
                } else {
                    ", service restarted; health-checking"
                }
            ),
        );
        let Some(session) = &self.session else {
            return Err("not connected".into());
        };
        crate::faultpoint::reached("health", &self.target.name);
        let baseline = match out
            .as_ref()
            .ok()
            .and_then(|o| health::baseline_from(plan.manager, o))
        {
            Some(b) => b,
            None => health::baseline(session, plan.manager, &plan.service)
                .await
                .map_err(|e| e.to_string())?,
        };
        let release_dir = plan.release_dir(id);
        let command = plan.health.command.as_ref().map(|c| c.expose().to_owned());
        let spec = plan.health_spec(&release_dir, command.as_deref(), false);
        match health::wait_healthy(session, &spec, &baseline, |_| {}).await {
            health::Outcome::Healthy { elapsed, .. } => {
                self.say(
                    plan,
                    &format!("healthy after {:.1}s", elapsed.as_secs_f64()),
                );
                Ok(())
            }
            health::Outcome::Unhealthy { reason, .. } => {
                if plan.manager != ServiceManager::None {
                    self.journal = Some(
                        health::journal_tail(session, plan.manager, &plan.service, plan.sudo, 20)
                            .await,
                    );
                }
                Err(reason)
            }
        }
    }

    /// Put the host back on the release it ran before this run switched it: switch,
    /// restart, health-check. A host that had no release before gets `current` removed
    /// and its service stopped.
    pub async fn revert(&mut self, plan: &Plan, why: &str, action: &str) {
        let Some(new) = self.switched_to.clone() else {
            self.end(Outcome::RolledBack {
                reason: why.to_owned(),
            });
            return;
        };
        let result = match self.previous.clone() {
            Some(prev) => self.activate(plan, &prev).await.map(|()| prev),
            None => {
                let stop = activate::systemctl(plan.manager, plan.sudo)
                    .map(|ctl| {
                        format!(
                            "{ctl} stop -- {} || true\n",
                            crate::remote::q(&plan.service).unwrap_or_default()
                        )
                    })
                    .unwrap_or_default();
                self.run(plan, &format!("rm -f -- current\n{stop}"))
                    .await
                    .map(|_| "none".into())
                    .map_err(|(s, r)| format!("{s}: {r}"))
            }
        };
        match result {
            Ok(back_on) => {
                self.switched_to = None;
                // A deploy's new release failed. A rollback's target is an old good
                // release, put back e.g. because another host failed: it stays a target.
                if action != "rollback" {
                    self.set_state(plan, &new, State::Failed).await;
                }
                self.history(plan, action, Some(&new), "rolled-back", why)
                    .await;
                self.say(plan, &format!("rolled back to {back_on}"));
                self.end(Outcome::RolledBack {
                    reason: why.to_owned(),
                });
            }
            Err(e) => {
                self.end(Outcome::Broken {
                    reason: format!("{why}; then putting it back failed: {e}"),
                });
            }
        }
    }

    pub async fn set_state(&mut self, plan: &Plan, id: &str, state: State) {
        let Some(found) = self
            .survey
            .releases
            .iter()
            .find(|r| r.id == id)
            .and_then(|r| r.info.clone())
            .or_else(|| {
                plan.deploy
                    .as_ref()
                    .filter(|d| d.release_id == id)
                    .map(|d| plan.release_info(d, state))
            })
        else {
            return;
        };
        let info = ReleaseInfo { state, ..found };
        let json = serde_json::to_string(&info).unwrap_or_default();
        if let Ok(script) = finish::set_release_json(id, &json)
            && let Err((_, e)) = self.run(plan, &script).await
        {
            self.warnings
                .push(format!("could not record release {id} as {state:?}: {e}"));
        }
    }

    /// The history line for this host, as appended to `.shipit/history.jsonl`.
    fn history_line(
        &self,
        plan: &Plan,
        action: &str,
        release: Option<&str>,
        result: &str,
        reason: &str,
    ) -> String {
        let d = plan.deploy.as_ref();
        serde_json::json!({
            "time": crate::remote::layout::iso8601(crate::remote::layout::now()),
            "action": action,
            "result": result,
            "release": release,
            "previous": self.previous,
            "version": d.map(|d| d.version.clone()),
            "commit": d.and_then(|d| d.commit.clone()),
            "artifact_sha256": d.map(|d| d.sha256.clone()),
            "by": plan.deployed_by,
            "pid": plan.owner.pid,
            "ci_url": plan.owner.ci_url,
            "reason": if reason.is_empty() { None } else { Some(reason) },
            "duration_ms": self.started.elapsed().as_millis() as u64,
        })
        .to_string()
    }

    pub async fn history(
        &mut self,
        plan: &Plan,
        action: &str,
        release: Option<&str>,
        result: &str,
        reason: &str,
    ) {
        let line = self.history_line(plan, action, release, result, reason);
        if let Ok(script) = finish::history(&line)
            && let Err((_, e)) = self.run(plan, &script).await
        {
            self.warnings
                .push(format!("could not append to the history: {e}"));
        }
    }

    /// After a healthy switch: hooks, final states, history, cleanup, unlock.
    pub async fn finish(&mut self, plan: &Plan, action: &str) {
        let Some(now_on) = self.switched_to.clone() else {
            return;
        };
        let hooks = if action == "rollback" {
            &plan.hooks_after_rollback
        } else {
            &plan.hooks_after_switch
        };
        let kind = if action == "rollback" {
            "after_rollback"
        } else {
            "after_switch"
        };
        let mut script = finish::after_hooks(kind, hooks, false).unwrap_or_default();
        let mut releases = self.survey.releases.clone();
        if let Some(d) = &plan.deploy
            && !releases.iter().any(|r| r.id == d.release_id)
        {
            releases.push(Found {
                id: d.release_id.clone(),
                info: Some(plan.release_info(d, State::Live)),
            });
        }
        for r in &mut releases {
            if let Some(info) = &mut r.info {
                if r.id == now_on {
                    info.state = State::Live;
                } else if action == "rollback" && Some(&r.id) == self.previous.as_ref() {
                    info.state = State::RolledBack;
                }
            }
        }
        for r in releases.iter().filter(|r| {
            r.id == now_on || (action == "rollback" && Some(&r.id) == self.previous.as_ref())
        }) {
            if let Some(info) = &r.info
                && let Ok(s) = finish::set_release_json(
                    &r.id,
                    &serde_json::to_string(info).unwrap_or_default(),
                )
            {
                script.push_str(&s);
            }
        }
        let plan_cleanup =
            finish::plan_cleanup(&releases, &self.survey.staging, &now_on, plan.keep_releases);
        // Cleanup, history and unlock ride in the same round trip.
        let line = self.history_line(plan, action, Some(&now_on), "ok", "");
        script.push_str(&finish::closing(&plan_cleanup, &line, &plan.owner.token));
        match self.run(plan, &script).await {
            Ok(out) => {
                self.locked = false;
                self.warnings.extend(finish::warnings(&out));
            }
            Err((step, e)) => self.warnings.push(format!("{step}: {e}")),
        }
        for w in &self.warnings {
            self.warn(plan, w);
        }
        // Only if the combined script could not run: try the unlock on its own.
        self.unlock(plan).await;
        self.end(Outcome::Done);
    }
}

/// No bound beyond the connector's own limit on connection starts.
pub const ALL: usize = 1 << 16;

/// Run `phase` on every pending host, at most `limit` at once; hosts come back in order.
pub async fn each<F, Fut>(
    runs: Vec<HostRun>,
    plan: &Arc<Plan>,
    limit: usize,
    phase: F,
) -> Vec<HostRun>
where
    F: Fn(HostRun, Arc<Plan>) -> Fut,
    Fut: std::future::Future<Output = HostRun> + Send + 'static,
{
    let semaphore = Arc::new(tokio::sync::Semaphore::new(limit.max(1)));
    let mut set = tokio::task::JoinSet::new();
    let mut out: Vec<Option<HostRun>> = Vec::new();
    for (i, run) in runs.into_iter().enumerate() {
        out.push(None);
        let fut = phase(run, plan.clone());
        let semaphore = semaphore.clone();
        set.spawn(async move {
            let _permit = semaphore.acquire_owned().await;
            (i, fut.await)
        });
    }
    while let Some(joined) = set.join_next().await {
        if let Ok((i, run)) = joined {
            out[i] = Some(run);
        }
    }
    out.into_iter().flatten().collect()
}
