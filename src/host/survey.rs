//! The first phase: connect, take the lock (unless read-only) and survey the host in one
//! round trip; and the lock's other end, giving it back.

use crate::config::DeltaMode;
use crate::outcome::Outcome;
use crate::plan::Plan;
use crate::remote::guard;
use crate::remote::lock;
use crate::remote::survey::{self, LockAnswer};
use crate::ssh;

use super::{Dialer, HostRun, Op, Remote};

impl HostRun {
    pub async fn connect(&mut self, plan: &Plan, dialer: &dyn Dialer) {
        let remote = dialer.dial(&self.target).await;
        self.connected(plan, remote);
    }

    /// The outcome of connecting, here or ahead of time ([`crate::rollout::connect_early`]).
    pub fn connected(&mut self, plan: &Plan, remote: Result<Box<dyn Remote>, ssh::Error>) {
        match remote {
            Ok(r) => self.remote = Some(r.into()),
            Err(e) => {
                let reason = e.to_string();
                if e.is_unreachable() {
                    self.end(plan, Outcome::Unreachable { reason });
                } else {
                    self.fail(plan, "connect", reason);
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
                if let Some(dead) = break_token {
                    // The dead run's guard goes with its lock: this run moves the host on.
                    s.push_str(&guard::confirm(dead).map_err(|e| e.to_string())?);
                }
                s.push_str(&lock::acquire(&plan.owner, break_token).map_err(|e| e.to_string())?);
            }
            if let Some(slots) = plan.slots() {
                s.push_str(&crate::remote::proxy::survey(&slots).map_err(|e| e.to_string())?);
            }
            s.push_str(&survey::survey(wanted.as_ref()).map_err(|e| e.to_string())?);
            Ok(s)
        };
        let mut attempt = script(None);
        for _ in 0..2 {
            let text = match &attempt {
                Ok(t) => t.clone(),
                Err(e) => return self.fail(plan, "lock", e.clone()),
            };
            let op = Op::Survey { lock: !read_only };
            match self.run(plan, op, &text).await {
                Err((step, reason)) => {
                    // The script may have taken the lock before it failed: this run gives
                    // it back (the release only removes a lock that is this run's).
                    self.locked = !read_only;
                    return self.fail(plan, &step, reason);
                }
                Ok(out) => {
                    self.survey = survey::parse_survey(&out);
                    self.slots = crate::remote::proxy::Found::parse(&out);
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
                            let text = format!(
                                "breaking a stale lock: {}",
                                owner.describe(self.survey.now)
                            );
                            self.warn(plan, &text);
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
            }) => Some(match &self.survey.guard {
                Some(g) if g.token == owner.token => format!(
                    "{}; its guard puts release {} back in {}s unless that run confirms",
                    owner.describe(self.survey.now),
                    g.previous.as_deref().unwrap_or("none"),
                    g.fires_in.max(0)
                ),
                _ => owner.describe(self.survey.now),
            }),
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

    /// Give this run's lock back, if it holds it.
    pub async fn unlock(&mut self, plan: &Plan) {
        if !self.locked || self.remote.is_none() {
            return;
        }
        let Ok(script) = lock::release(&plan.owner.token) else {
            return;
        };
        match self.run(plan, Op::Unlock, &script).await {
            Ok(_) => self.locked = false,
            Err((_, e)) => {
                let text = format!(
                    "could not give the deploy lock back ({e}); `shipit unlock` removes it"
                );
                self.warn(plan, &text);
                self.warnings.push(text);
            }
        }
    }
}
