//! The seam between one host's phases and the wire: a phase hands a [`Remote`] one
//! script (with what it is for, and data for its stdin when there is an upload) and gets
//! back what the script printed; health checks and journal reads go through it too. Over
//! SSH the [`Session`] is the remote; in tests a fake host answers by the [`Op`] alone,
//! as a host running that script would, so the phases and the rollout run in
//! milliseconds without servers.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::io::AsyncRead;

use crate::config::ServiceManager;
use crate::health;
use crate::remote::release::State;
use crate::ssh::{self, ExecOutput, Session, Target};

/// Called with every line a script prints, as it arrives.
pub type OnLine<'a> = &'a mut (dyn FnMut(&str) + Send);

/// What a script is for. The SSH remote runs the script and ignores this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Survey the host, taking the lock first when `lock`.
    Survey { lock: bool },
    /// Download the artifact from the store into the host's cache.
    Fetch,
    /// Unpack (from the upload, the delta or the cache) and stage `release`.
    Stage { release: String },
    /// Run the `once: true` hooks in staged `release` (one host of the fleet).
    Once { release: String },
    /// Switch `current` to `release` and restart the service; `forward`: arming the
    /// guard (else disarming it: a revert).
    Activate { release: String, forward: bool },
    /// Behind the proxy: `release`, in its slot, took all the traffic; it becomes the live
    /// slot on disk and `current` names it.
    Promote { release: String },
    /// Behind the proxy: stop the old slot once it drained.
    Retire,
    /// Confirm (or disarm) this run's guard.
    Confirm,
    /// Push this run's guard's deadline back.
    Renew,
    /// Remove `current` and stop the service (a host that had no release before).
    Stop,
    /// Write a release's `release.json` with `state`.
    SetState { release: String, state: State },
    /// Append a line to the history.
    History,
    /// After a healthy switch to `live`: hooks, states, cleanup, history, unlock.
    Finish { live: String },
    /// Give this run's lock back.
    Unlock,
    /// A read-only look (`status`) or an `unlock --force`.
    Other,
}

/// Data for a script's stdin, and who hears how much of it went.
pub struct Upload<'a> {
    pub data: Box<dyn AsyncRead + Unpin + Send + 'a>,
    pub total: u64,
    pub progress: Box<dyn FnMut(u64) + Send + 'a>,
}

/// What a script did, and with an upload, how many bytes went and whether all did.
#[derive(Debug, Clone, Default)]
pub struct Ran {
    pub out: ExecOutput,
    pub sent: Option<(u64, bool)>,
}

/// One host, as the phases see it.
#[async_trait]
pub trait Remote: Send + Sync {
    /// Run `script` with `sh` on the host (with `upload` on its stdin).
    async fn run(
        &self,
        op: Op,
        script: &str,
        upload: Option<Upload<'_>>,
        on_line: OnLine<'_>,
    ) -> Result<Ran, ssh::Error>;

    /// Wait until the release is healthy or the check gives up. `activated`: what the
    /// activate script printed (it carries the unit's baseline), empty when there was
    /// none; then the baseline is read first.
    async fn health(
        &self,
        spec: &health::Spec<'_>,
        activated: &str,
    ) -> Result<health::Outcome, String>;

    /// The last `lines` lines of the service's journal (never fails: says why instead).
    async fn journal(
        &self,
        manager: ServiceManager,
        service: &str,
        sudo: bool,
        lines: usize,
    ) -> String;

    /// One command to HAProxy's runtime API on its admin socket `socket`, and its answer.
    async fn proxy_api(&self, socket: &str, command: &str) -> Result<String, String> {
        let _ = (socket, command);
        Err("this remote has no proxy".into())
    }

    /// The end of the command: say goodbye to the host, if this is the last holder of the
    /// connection (otherwise it just goes away when the last one drops it).
    async fn hang_up(self: Arc<Self>) {}
}

/// Opens the connection to one host.
#[async_trait]
pub trait Dialer: Send + Sync {
    async fn dial(&self, target: &Target) -> Result<Box<dyn Remote>, ssh::Error>;
}

#[async_trait]
impl Remote for Session {
    async fn run(
        &self,
        op: Op,
        script: &str,
        upload: Option<Upload<'_>>,
        on_line: OnLine<'_>,
    ) -> Result<Ran, ssh::Error> {
        let started = std::time::Instant::now();
        let upload_bytes = upload.as_ref().map(|u| u.total);
        let (host, script_bytes) = (self.name(), script.len());
        tracing::debug!(host, op = ?op, script_bytes, upload_bytes, "sending");
        let ran = match upload {
            None => self
                .exec(script, |_, line| on_line(line))
                .await
                .map(|out| Ran { out, sent: None }),
            Some(up) => self
                .exec_with_data(script, up.data, up.progress, |_, line| on_line(line))
                .await
                .map(|out| Ran {
                    out: out.exec,
                    sent: Some((out.bytes, out.complete)),
                }),
        };
        let ms = started.elapsed().as_millis() as u64;
        match &ran {
            Ok(r) => {
                let (status, signal) = (r.out.status, r.out.signal.as_deref());
                let sent_bytes = r.sent.map(|s| s.0);
                tracing::debug!(host, op = ?op, ms, status, signal, sent_bytes, "done")
            }
            Err(e) => tracing::debug!(host, op = ?op, ms, "failed: {e}"),
        }
        ran
    }

    async fn health(
        &self,
        spec: &health::Spec<'_>,
        activated: &str,
    ) -> Result<health::Outcome, String> {
        let baseline = match health::baseline_from(spec.manager, activated) {
            Some(b) => b,
            None => health::baseline(self, spec.manager, spec.service)
                .await
                .map_err(|e| e.to_string())?,
        };
        Ok(health::wait_healthy(self, spec, &baseline, |_| {}).await)
    }

    async fn journal(
        &self,
        manager: ServiceManager,
        service: &str,
        sudo: bool,
        lines: usize,
    ) -> String {
        health::journal_tail(self, manager, service, sudo, lines).await
    }

    async fn hang_up(self: Arc<Self>) {
        // Exactly one holder gets it, whatever the order.
        let Some(session) = Arc::into_inner(self) else {
            return;
        };
        let host = session.name().to_owned();
        if let Err(e) = session.close().await {
            tracing::debug!(host, "closing: {e}");
        }
    }

    async fn proxy_api(&self, socket: &str, command: &str) -> Result<String, String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let talk = async {
            let mut t = self.unix_socket(socket).await.map_err(|e| e.to_string())?;
            t.write_all(format!("{command}\n").as_bytes())
                .await
                .map_err(|e| e.to_string())?;
            let mut out = Vec::new();
            t.read_to_end(&mut out).await.map_err(|e| e.to_string())?;
            Ok::<_, String>(String::from_utf8_lossy(&out).into_owned())
        };
        let out = tokio::time::timeout(std::time::Duration::from_secs(10), talk)
            .await
            .map_err(|_| format!("HAProxy's admin socket {socket} did not answer in 10s"))??;
        tracing::debug!(host = self.name(), command, bytes = out.len(), "proxy api");
        Ok(out)
    }
}

#[async_trait]
impl Dialer for ssh::Connector {
    async fn dial(&self, target: &Target) -> Result<Box<dyn Remote>, ssh::Error> {
        Ok(Box::new(self.connect(target).await?))
    }
}
