//! When a host must go back: to the release it ran before this run switched it (switch,
//! restart, health-check), with the release states and the history line that say so.

use crate::outcome::Outcome;
use crate::plan::{Kind, Plan, Switch};
use crate::remote::finish;
use crate::remote::release::{ReleaseInfo, State};

use super::{HostRun, Op};

impl HostRun {
    /// Put the host back on the release it ran before this run switched it: switch,
    /// restart, health-check. A host that had no release before gets `current` removed
    /// and its service stopped.
    pub async fn revert(&mut self, plan: &Plan, why: &str) {
        let Some(new) = self.switched_to.clone() else {
            let reason = why.to_owned();
            self.end(plan, Outcome::RolledBack { reason });
            return;
        };
        let result = match self.previous.clone() {
            // Behind the proxy the way back is the same with or without a release before.
            prev if plan.proxy.is_some() => self
                .activate(plan, prev.as_deref().unwrap_or(""), Switch::Back)
                .await
                .map(|()| prev.unwrap_or_else(|| "none".into())),
            Some(prev) => self
                .activate(plan, &prev, Switch::Back)
                .await
                .map(|()| prev),
            None => match plan.stop_script() {
                Ok(script) => self
                    .run(plan, Op::Stop, &script)
                    .await
                    .map(|_| "none".into())
                    .map_err(|(s, r)| format!("{s}: {r}")),
                Err(e) => Err(e.to_string()),
            },
        };
        match result {
            Ok(back_on) => {
                self.switched_to = None;
                // A deploy's new release failed. A rollback's target is an old good
                // release, put back e.g. because another host failed: it stays a target.
                if plan.kind != Kind::Rollback {
                    self.set_state(plan, &new, State::Failed).await;
                }
                self.history(plan, Some(&new), "rolled-back", why).await;
                self.say(plan, &format!("rolled back to {back_on}"));
                let reason = why.to_owned();
                self.end(plan, Outcome::RolledBack { reason });
            }
            Err(e) => {
                let reason = format!("{why}; then putting it back failed: {e}");
                self.end(plan, Outcome::Broken { reason });
            }
        }
    }

    /// Record release `id` as `state` in its release.json.
    pub async fn set_state(&mut self, plan: &Plan, id: &str, state: State) {
        let Some(found) = self
            .survey
            .releases
            .iter()
            .find(|r| r.id == id)
            .and_then(|r| r.info.clone())
            .or_else(|| {
                let d = plan.deploy.as_ref()?;
                (self.goal.as_deref() == Some(id)).then(|| plan.release_info(d, id, state))
            })
        else {
            return;
        };
        let info = ReleaseInfo { state, ..found };
        let json = serde_json::to_string(&info).unwrap_or_default();
        let op = Op::SetState {
            release: id.to_owned(),
            state,
        };
        if let Ok(script) = finish::set_release_json(id, &json)
            && let Err((_, e)) = self.run(plan, op, &script).await
        {
            self.warnings
                .push(format!("could not record release {id} as {state:?}: {e}"));
        }
    }

    /// Append the history line of this run's `result` on this host.
    pub async fn history(
        &mut self,
        plan: &Plan,
        release: Option<&str>,
        result: &str,
        reason: &str,
    ) {
        let line = self.history_line(plan, release, result, reason);
        if let Ok(script) = finish::history(&line)
            && let Err((_, e)) = self.run(plan, Op::History, &script).await
        {
            self.warnings
                .push(format!("could not append to the history: {e}"));
        }
    }

    /// The history line for this host, as appended to `.shipit/history.jsonl`.
    pub(super) fn history_line(
        &self,
        plan: &Plan,
        release: Option<&str>,
        result: &str,
        reason: &str,
    ) -> String {
        let d = plan.deploy.as_ref();
        serde_json::json!({
            "time": crate::remote::layout::iso8601(crate::remote::layout::now()),
            "action": plan.kind.action(),
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
            "transfer": self.transfer,
            "transfer_ms": self.transfer_took.map(|t| t.as_millis() as u64),
            "once_on": plan.once_ran_on.get(),
        })
        .to_string()
    }
}
