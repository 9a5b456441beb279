//! The second phase: send the host what it lacks and stage the release, in one round
//! trip (unpack, link, write `.env`, run `before_switch`). Nothing that serves traffic
//! changes.

use tokio::io::AsyncRead;

use crate::config::DeltaMode;
use crate::outcome::{Outcome, Transfer};
use crate::plan::{Plan, Shipment};
use crate::printer::units::human_bytes;
use crate::redact::Text;
use crate::remote::stage::{self as remote_stage, Source};

use super::{HostRun, Op};

impl HostRun {
    /// What travels: nothing when the host has the artifact cached; a delta against its
    /// live release when there is one with a manifest (unless `delta: off`); else the
    /// whole artifact. A delta that does not verify on the host is discarded, and the
    /// whole artifact follows, once.
    pub async fn ship(&mut self, plan: &Plan) {
        let started = std::time::Instant::now();
        self.ship_it(plan).await;
        if self.transfer.is_some() {
            self.transfer_took = Some(started.elapsed());
        }
    }

    async fn ship_it(&mut self, plan: &Plan) {
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
                        let text =
                            format!("the delta did not verify ({why}); sending the whole artifact");
                        self.warn(plan, &text);
                        self.reused = 0;
                    }
                    None => return,
                }
            }
            Shipment::Full {
                why_not_delta: Some(why),
            } if d.delta != DeltaMode::Off => {
                self.say(plan, &format!("the whole artifact is needed: {why}"));
            }
            Shipment::Full { .. } => {}
        }
        if let Some(store) = &d.store
            && self.fetch(plan, store).await
        {
            return;
        }
        let a = &d.artifact;
        let data: Box<dyn AsyncRead + Unpin + Send + '_> = match &a.bytes {
            Some(bytes) => Box::new(&bytes[..]),
            None => match tokio::fs::File::open(&a.path).await {
                Ok(f) => Box::new(tokio::io::BufReader::with_capacity(1 << 20, f)),
                Err(e) => {
                    let reason = format!("cannot read {}: {e}", a.path.display());
                    return self.fail(plan, "upload", reason);
                }
            },
        };
        self.transfer = Some(Transfer::Full);
        if let Some(why) = self
            .stage(plan, d.full_source(), Some((data, a.size)))
            .await
        {
            let reason = format!("the release does not match the artifact: {why}");
            self.fail(plan, "verify", reason);
        }
    }

    /// The whole artifact from the store: `true` when the host downloaded and verified
    /// it (then it is staged from its cache); `false` when it could not, with a warning:
    /// then it is pushed over SSH as without a store.
    async fn fetch(&mut self, plan: &Plan, lazy: &crate::store::Lazy) -> bool {
        let Some(d) = &plan.deploy else { return false };
        let (store, uploaded) = lazy.ready(&d.artifact).await;
        if let Some(up) = uploaded {
            plan.events.note(&if up.sent > 0 {
                format!(
                    "uploaded the artifact to {} ({} in {:.1}s)",
                    lazy.configured(),
                    human_bytes(up.sent),
                    up.took.as_secs_f64()
                )
            } else {
                format!(
                    "the store ({}) already has this artifact",
                    lazy.configured()
                )
            });
        }
        let fallback = |run: &mut HostRun, why: String| {
            let text = format!("could not fetch the artifact from the store ({why}); pushed it");
            run.warn(plan, &text);
            run.warnings.push(text);
            false
        };
        let store = match store {
            Ok(s) => s,
            Err(e) => return fallback(self, e),
        };
        let started = std::time::Instant::now();
        let max = 60 + d.artifact.size / (1 << 20);
        let script = match crate::remote::fetch::fetch(&store.url(), &d.sha256, max, false) {
            Ok(s) => s,
            Err(e) => return fallback(self, e.to_string()),
        };
        // After the URL is signed: a test stopped here can let it expire.
        crate::faultpoint::reached("fetch", &self.target.name);
        let how = match self.run(plan, Op::Fetch, &script).await {
            Ok(out) => crate::remote::fetch::fetched(&out),
            Err((step, e)) => Err(format!("{step}: {e}")),
        };
        match how {
            Ok(how) => {
                self.transfer = Some(Transfer::Store);
                let text = format!(
                    "fetched the artifact from the store with {how} in {:.1}s",
                    started.elapsed().as_secs_f64()
                );
                self.say(plan, &text);
                let _ = self.stage(plan, Source::Cached, None::<(&[u8], u64)>).await;
                true
            }
            Err(why) => {
                if why.ends_with("not used")
                    && let Some(r) = lazy.repair(&d.artifact).await
                {
                    plan.events.note(&match r {
                        Ok(up) => format!(
                            "the store's copy of the artifact did not match its sha256: \
                             uploaded it again ({} in {:.1}s)",
                            human_bytes(up.sent),
                            up.took.as_secs_f64()
                        ),
                        Err(e) => format!(
                            "the store's copy of the artifact did not match its sha256, and \
                             uploading it again failed: {e}"
                        ),
                    });
                }
                fallback(self, why)
            }
        }
    }

    /// The stage script from `source`, with its data. `Some(why)` when the host turned a
    /// delta down; failures end the run.
    async fn stage<R: AsyncRead + Unpin + Send>(
        &mut self,
        plan: &Plan,
        source: Source<'_>,
        data: Option<(R, u64)>,
    ) -> Option<String> {
        let d = plan.deploy.as_ref()?;
        let id = self.goal.clone().unwrap_or_default();
        let env = plan.hook_env(&self.host, &id, self.previous.as_deref());
        let script = match (env, plan.stage_script(d, &id, source, false)) {
            (Ok(env), Ok(s)) => env + &s,
            (Err(e), _) => {
                self.fail(plan, "stage", e.to_string());
                return None;
            }
            (_, Err(e)) => {
                self.fail(plan, "stage", e.to_string());
                return None;
            }
        };
        let op = Op::Stage {
            release: id.clone(),
        };
        match self.run_with(plan, op, &script, data).await {
            Ok((out, sent)) => {
                let (bytes, complete) = sent.unwrap_or((0, true));
                self.uploaded += bytes;
                if let Some(why) = remote_stage::delta_mismatch(&out) {
                    return Some(why);
                }
                if !complete {
                    let reason = "the host stopped reading the upload before its end";
                    self.fail(plan, "upload", reason);
                    return None;
                }
                let what = match self.transfer {
                    Some(Transfer::Delta) => format!(
                        ", {} sent as a delta, {} files reused",
                        human_bytes(bytes),
                        self.reused
                    ),
                    Some(Transfer::Full) => format!(", {} sent", human_bytes(bytes)),
                    _ => String::new(),
                };
                self.say(plan, &format!("staged release {id}{what}"));
                None
            }
            Err((step, reason)) => {
                self.fail(plan, &step, reason);
                None
            }
        }
    }

    /// The `once: true` hooks, on this host for the whole fleet: in the staged release,
    /// after every host staged and before any switches. `false` when they failed (this
    /// host's run then ends as failed).
    pub async fn run_once(&mut self, plan: &Plan, hooks: &[Text]) -> bool {
        let id = self.goal.clone().unwrap_or_default();
        let previous = self.previous.as_deref();
        let script = match plan.once_script(hooks, &self.host, &id, previous, false) {
            Ok(s) => s,
            Err(e) => {
                self.fail(plan, "once", e.to_string());
                return false;
            }
        };
        let n = hooks.len();
        self.say(
            plan,
            &format!("running the once-only hook(s) ({n}) on this host"),
        );
        match self.run(plan, Op::Once { release: id }, &script).await {
            Ok(_) => {
                let _ = plan.once_ran_on.set(self.name().to_owned());
                self.say(plan, "once-only hook(s) passed");
                true
            }
            Err((step, reason)) => {
                self.fail(plan, &step, reason);
                false
            }
        }
    }

    /// Interrupted while sending: the host discards what it got; nothing switched.
    pub fn abandoned(&mut self, plan: &Plan) {
        let state = format!(
            "{}: interrupted during the upload; nothing switched",
            self.name()
        );
        self.end(plan, Outcome::Interrupted { state });
    }
}
