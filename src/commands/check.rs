//! `shipit check`: preflight every host at once. Connect, verify the host key,
//! authenticate, then one script reports everything a deploy will need.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Result;
use serde::Serialize;
use tokio::sync::OnceCell;

use crate::config::Config;
use crate::exit::Exit;
use crate::remote::check::{self, Check, CheckInput, Status};
use crate::remote::proxy::Slots;
use crate::settings::Settings;
use crate::ssh::{Connector, Session, Target};
use crate::targets::Pick;

#[derive(Debug, Serialize)]
struct HostReport {
    name: String,
    address: String,
    user: String,
    reachable: bool,
    /// The host's architecture (normalized `uname -m`: x86_64, aarch64, ...).
    arch: Option<String>,
    /// The host's OS (`/etc/os-release`'s `PRETTY_NAME`, else `uname -s -r`).
    os: Option<String>,
    /// Why the host could not be reached or checked.
    error: Option<String>,
    checks: Vec<Check>,
    millis: u128,
    /// What the check script printed (the proxy check reads it).
    #[serde(skip)]
    stdout: String,
    /// With `proxy:` and the proxy running: whether its admin socket answered over SSH.
    #[serde(skip)]
    proxy_api: Option<Result<(), String>>,
}

impl HostReport {
    fn ok(&self) -> bool {
        self.reachable
            && self.error.is_none()
            && self.checks.iter().all(|c| c.status != Status::Fail)
    }
}

#[derive(Debug, Serialize)]
struct Report {
    ok: bool,
    environment: Option<String>,
    hosts: Vec<HostReport>,
}

pub fn run(settings: &Settings, json: bool, pick: Pick) -> Result<Exit> {
    let config = settings.load_config()?;
    let targets = crate::targets::resolve(&config, &pick, &settings.printer)?;
    settings
        .printer
        .info(&format!("checking {} host(s)", targets.len()));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    // With roles, each role's hosts are checked against the role's configuration (its
    // directory, unit, proxy), as `host/role`.
    let mut groups: Vec<(&Config, Vec<Target>)> = Vec::new();
    for (target, role) in crate::targets::members(&config, &targets, &pick)? {
        let (own, name) = match role {
            Some(r) => (&r.config, crate::host::role_run(&target.name, &r.name)),
            None => (&config, target.name.clone()),
        };
        let target = Target {
            name,
            ..target.clone()
        };
        match groups.last_mut() {
            Some((c, list)) if std::ptr::eq(*c, own) => list.push(target),
            _ => groups.push((own, vec![target])),
        }
    }
    let mut hosts = Vec::new();
    let connections = Connections::default();
    for (own, targets) in groups {
        hosts.extend(check_config(own, targets, &connections, &runtime)?);
    }
    runtime.block_on(connections.hang_up());
    let report = Report {
        ok: hosts.iter().all(HostReport::ok),
        environment: config.environment.clone(),
        hosts,
    };
    if json {
        settings.printer.document(&report);
    } else {
        settings.printer.data(&table(&report));
    }
    let unreachable = report.hosts.iter().filter(|h| !h.reachable).count();
    let failing = report
        .hosts
        .iter()
        .filter(|h| h.reachable && !h.ok())
        .count();
    let total = report.hosts.len();
    settings.printer.info(&format!(
        "{total} host(s): {} ready, {failing} failing, {unreachable} unreachable",
        total - failing - unreachable
    ));
    Ok(if unreachable > 0 {
        Exit::Unreachable
    } else if failing > 0 {
        Exit::Failed
    } else {
        Exit::Ok
    })
}

/// Check `targets` against `config` (the top level's, or a role's).
fn check_config(
    config: &Config,
    targets: Vec<Target>,
    connections: &Connections,
    runtime: &tokio::runtime::Runtime,
) -> Result<Vec<HostReport>> {
    let needed = last_artifact(config).and_then(|p| needed_bytes(&p));
    let unit_file = config
        .service
        .unit_file
        .as_ref()
        .map(|u| u.expose().to_owned());
    let slots = config.proxy.as_ref().map(|p| Slots {
        app: &config.app,
        deploy_to: config.deploy_to.expose(),
        service: &config.service.name,
        sudo: config.service.sudo,
        listen: p.listen,
        ports: p.slots,
        mode: p.mode,
        drain_secs: p.drain_timeout.0.as_secs(),
    });
    let mut script = check::script(&CheckInput {
        deploy_to: config.deploy_to.expose(),
        needed_bytes: needed,
        manager: config.service.manager,
        service: &config.service.name,
        unit_file: unit_file.as_deref(),
        sudo: config.service.sudo,
    })?;
    script.push_str(&check::proxy_part(slots.as_ref())?);
    if config.artifacts.is_some() {
        script.push_str(check::fetch_part());
    }
    let socket = slots.as_ref().map(Slots::socket);
    let mut hosts = runtime.block_on(check_all(targets, &script, socket, connections));
    if let Some(s) = &slots {
        for h in hosts
            .iter_mut()
            .filter(|h| h.reachable && h.error.is_none())
        {
            let mut c = check::proxy_check(&h.stdout, s);
            if let Some(Err(e)) = &h.proxy_api {
                c.status = Status::Fail;
                c.detail = format!(
                    "HAProxy's admin socket {} does not answer over SSH ({e}): sshd must allow \
                     stream-local forwarding (`AllowStreamLocalForwarding yes`, the default, \
                     and no `DisableForwarding yes`), or a deploy cannot move traffic",
                    s.socket()
                );
            }
            h.checks.push(c);
        }
    }
    if config.artifacts.is_some() {
        for h in hosts.iter_mut() {
            if let Some(c) = check::reported(&h.stdout, check::FETCH) {
                h.checks.push(c);
            }
        }
    }
    Ok(hosts)
}

/// One connection per host for the whole check: with roles, a host's other roles are
/// checked over the connection its first role opened (or fail as it failed).
#[derive(Default, Clone)]
struct Connections {
    connector: Connector,
    /// By where a connection goes (user, host, port, and the way there): the connection,
    /// or whether the failure was the host being unreachable, and what it was. Set once:
    /// targets asking at the same time wait for the one attempt.
    open: Arc<Mutex<Open>>,
}

type ConnectionOrWhy = Result<Arc<Session>, (bool, String)>;
type Open = HashMap<String, Arc<OnceCell<ConnectionOrWhy>>>;

impl Connections {
    /// The target's connection: the one already open to its host, else a new one.
    async fn get(&self, target: &Target) -> ConnectionOrWhy {
        let key = format!(
            "{}@{}:{} via {:?} {:?}",
            target.user,
            target.host,
            target.port,
            target.proxy_jump.as_ref().map(|j| &j.name),
            target.proxy_command
        );
        let cell = Arc::clone(self.lock().entry(key).or_default());
        let connect = || async {
            match self.connector.connect(target).await {
                Ok(session) => Ok(Arc::new(session)),
                Err(e) => Err((e.is_unreachable(), e.to_string())),
            }
        };
        cell.get_or_init(connect).await.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every connection says goodbye.
    async fn hang_up(self) {
        let cells: Vec<_> = self.lock().drain().map(|(_, c)| c).collect();
        let open = cells.iter().filter_map(|c| c.get().cloned()?.ok());
        let remotes: Vec<Arc<dyn crate::host::Remote>> = open.map(|s| s as _).collect();
        drop(cells);
        crate::rollout::hang_up_all(remotes).await;
    }
}

/// `socket`: with `proxy:`, HAProxy's admin socket, asked once over each host's SSH
/// connection when the proxy runs (what a deploy's steps need of sshd).
async fn check_all(
    targets: Vec<Target>,
    script: &str,
    socket: Option<String>,
    connections: &Connections,
) -> Vec<HostReport> {
    let tasks: Vec<_> = targets
        .into_iter()
        .map(|target| {
            let connections = connections.clone();
            let script = script.to_owned();
            let socket = socket.clone();
            tokio::spawn(async move { check_host(&connections, target, &script, socket).await })
        })
        .collect();
    let mut reports = Vec::with_capacity(tasks.len());
    for task in tasks {
        if let Ok(report) = task.await {
            reports.push(report);
        }
    }
    reports
}

async fn check_host(
    connections: &Connections,
    target: Target,
    script: &str,
    socket: Option<String>,
) -> HostReport {
    let started = Instant::now();
    let address = if target.host.contains(':') {
        format!("[{}]:{}", target.host, target.port)
    } else {
        format!("{}:{}", target.host, target.port)
    };
    let mut report = HostReport {
        name: target.name.clone(),
        address,
        user: target.user.clone(),
        reachable: false,
        arch: None,
        os: None,
        error: None,
        checks: Vec::new(),
        millis: 0,
        stdout: String::new(),
        proxy_api: None,
    };
    match connections.get(&target).await {
        Err((unreachable, why)) => {
            report.reachable = !unreachable;
            report.error = Some(why);
        }
        Ok(session) => {
            report.reachable = true;
            let sent = Instant::now();
            let bytes = script.len();
            tracing::debug!(host = %target.name, op = "check", script_bytes = bytes, "sending");
            let ran = session.exec(script, |_, _| {}).await;
            if let Ok(out) = &ran {
                let ms = sent.elapsed().as_millis() as u64;
                tracing::debug!(host = %target.name, op = "check", ms, status = out.status, "done");
            }
            if let Ok(out) = &ran {
                (report.arch, report.os) = check::platform(&out.stdout);
                report.stdout = out.stdout.clone();
            }
            match ran {
                Ok(out) if out.success() => report.checks = check::parse(&out.stdout),
                Ok(out) => {
                    report.checks = check::parse(&out.stdout);
                    report.error = Some(format!(
                        "the check script failed ({:?}): {}",
                        out.status,
                        out.stderr_tail.trim()
                    ));
                }
                Err(e) => report.error = Some(e.to_string()),
            }
            if let Some(socket) = socket
                && report.stdout.contains("@@proxy unit active")
            {
                use crate::host::Remote;
                report.proxy_api = Some(session.proxy_api(&socket, "show info").await.map(|_| ()));
            }
        }
    }
    report.millis = started.elapsed().as_millis();
    report
}

fn table(report: &Report) -> String {
    let name_w = report
        .hosts
        .iter()
        .map(|h| h.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let arch_w = report
        .hosts
        .iter()
        .filter_map(|h| h.arch.as_ref().map(String::len))
        .max()
        .unwrap_or(4)
        .max(4);
    let mut out = format!("{:<name_w$}  {:<arch_w$}  {:<8}", "HOST", "ARCH", "CONNECT");
    let proxy = report
        .hosts
        .iter()
        .any(|h| h.checks.iter().any(|c| c.name == check::PROXY));
    let has = |name: &str| {
        report
            .hosts
            .iter()
            .any(|h| h.checks.iter().any(|c| c.name == name))
    };
    let names: Vec<&str> = check::CHECKS
        .iter()
        .copied()
        .chain(proxy.then_some(check::PROXY))
        .chain(has(check::FETCH).then_some(check::FETCH))
        .collect();
    for c in &names {
        out.push_str(&format!("  {:<9}", c.to_uppercase()));
    }
    out.push_str("  OS\n");
    let mut problems = Vec::new();
    for h in &report.hosts {
        let connect = if h.checks.is_empty() && h.error.is_some() {
            "FAIL"
        } else {
            "ok"
        };
        let arch = h.arch.as_deref().unwrap_or("-");
        out.push_str(&format!(
            "{:<name_w$}  {arch:<arch_w$}  {connect:<8}",
            h.name
        ));
        for name in &names {
            let cell = match h.checks.iter().find(|c| c.name == *name).map(|c| c.status) {
                Some(Status::Ok) => "ok",
                Some(Status::Fail) => "FAIL",
                Some(Status::Skip) | None => "-",
            };
            out.push_str(&format!("  {cell:<9}"));
        }
        out.push_str(&format!("  {}\n", h.os.as_deref().unwrap_or("-")));
        if let Some(e) = &h.error {
            // Transport errors already name the host.
            problems.push(e.trim_end().to_owned());
        }
        for c in h.checks.iter().filter(|c| c.status == Status::Fail) {
            problems.push(format!("{}: {}: {}", h.name, c.name, c.detail));
        }
    }
    let mut out: String = out
        .lines()
        .map(str::trim_end)
        .collect::<Vec<_>>()
        .join("\n");
    if !problems.is_empty() {
        out.push_str("\n\n");
        out.push_str(&problems.join("\n"));
    }
    out
}

/// The newest `dist/<app>-*.tar.gz`, to size the free-space check.
fn last_artifact(config: &Config) -> Option<PathBuf> {
    let prefix = format!("{}-", config.app);
    std::fs::read_dir(config.dir.join("dist"))
        .ok()?
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with(&prefix) && name.ends_with(".tar.gz")
        })
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
        .map(|e| e.path())
}

/// What a deploy of `artifact` needs on a host: the cached archive plus the unpacked
/// release. The unpacked size comes from the gzip trailer (exact below 4 GiB, which is
/// what a single-member gzip records); above that, three times the archive is assumed.
fn needed_bytes(artifact: &Path) -> Option<u64> {
    let mut f = std::fs::File::open(artifact).ok()?;
    let size = f.metadata().ok()?.len();
    if !(18..1 << 32).contains(&size) {
        return Some(size.saturating_mul(3));
    }
    f.seek(SeekFrom::End(-4)).ok()?;
    let mut isize = [0u8; 4];
    f.read_exact(&mut isize).ok()?;
    Some(size + u64::from(u32::from_le_bytes(isize)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::printer::json::tests::assert_documented;

    #[test]
    fn the_check_document_is_documented_field_by_field() {
        let report = Report {
            ok: false,
            environment: Some("production".into()),
            hosts: vec![HostReport {
                name: "app1".into(),
                address: "10.0.0.1:22".into(),
                user: "deploy".into(),
                reachable: true,
                arch: Some("x86_64".into()),
                os: Some("Debian GNU/Linux 12 (bookworm)".into()),
                error: None,
                checks: check::parse("disk\tfail\tonly 1 GiB free\n"),
                stdout: String::new(),
                proxy_api: None,
                millis: 12,
            }],
        };
        let text = crate::printer::json::render(&report).unwrap();
        assert!(text.starts_with("{\n  \"schema_version\": 1,"), "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_documented("shipit check --json", &v, &[]);
        let doc = include_str!("../../docs/json.md");
        for name in check::CHECKS.iter().chain([&check::PROXY, &check::FETCH]) {
            assert!(doc.contains(&format!("`{name}`")), "docs/json.md: `{name}`");
        }
    }
}
