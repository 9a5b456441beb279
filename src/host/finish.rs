//! The last phase, after a healthy switch: the after hooks, the releases' final states,
//! cleanup of old releases, the history line and the unlock, in one round trip.

use crate::outcome::Outcome;
use crate::plan::{Kind, Plan};
use crate::remote::finish;
use crate::remote::guard::{self, Confirmed};
use crate::remote::release::{Found, State};

use super::{HostRun, Op};

impl HostRun {
    /// Confirm the switch: the host's guard will not put the old release back. `Fired`:
    /// too late, the host went back by itself (this run lost touch with it for longer
    /// than `rollout.confirm_timeout`); a host that cannot be asked says `NoGuard`.
    pub async fn confirm(&mut self, plan: &Plan) -> Result<Confirmed, String> {
        let script = plan.confirm_script().map_err(|e| e.to_string())?;
        match self.run(plan, Op::Confirm, &script).await {
            Ok(out) => Ok(guard::confirmed(&out)),
            Err((_, e)) => Err(e),
        }
    }

    /// This run could not confirm the switch (it lost touch with the host): the host's
    /// guard will put the release it ran before back.
    pub fn lost_before_confirm(&mut self, plan: &Plan, why: &str) {
        let back = self.previous.clone().unwrap_or_else(|| "no release".into());
        let reason = format!(
            "lost touch before the switch was confirmed ({why}); its guard puts {back} back \
             within rollout.confirm_timeout ({}s)",
            plan.confirm_timeout.as_secs()
        );
        self.end(plan, Outcome::Broken { reason });
    }

    /// Renew the guard and learn whether it is still armed (`Yes`), went off (`Fired`),
    /// or is gone (`NoGuard`: removed by hand, or the host could not be asked: `Err`).
    pub async fn renew(&mut self, plan: &Plan) -> Result<Confirmed, String> {
        let script = plan.renew_script().map_err(|e| e.to_string())?;
        match self.run(plan, Op::Renew, &script).await {
            Ok(out) => Ok(guard::confirmed(&out)),
            Err((_, e)) => Err(e),
        }
    }

    /// The host's guard fired before this run confirmed: the host is back on the
    /// release it ran before, by itself.
    pub fn went_back_by_itself(&mut self, plan: &Plan) {
        self.switched_to = None;
        let reason = format!(
            "its guard put the previous release back before the switch was confirmed (no \
             word from this run for rollout.confirm_timeout, {}s)",
            plan.confirm_timeout.as_secs()
        );
        self.end(plan, Outcome::RolledBack { reason });
    }

    /// After a healthy switch the rollout has confirmed: the after hooks, the release
    /// states, cleanup, history and unlock.
    pub async fn finish(&mut self, plan: &Plan) {
        let Some(now_on) = self.switched_to.clone() else {
            return;
        };
        self.retire_old_slot(plan).await;
        let rollback = plan.kind == Kind::Rollback;
        let mut script = plan
            .hook_env(&self.host, &now_on, self.previous.as_deref())
            .unwrap_or_default();
        script.push_str(&plan.after_hooks_script(false).unwrap_or_default());
        let mut releases = self.survey.releases.clone();
        if let (Some(d), Some(goal)) = (&plan.deploy, &self.goal)
            && !releases.iter().any(|r| &r.id == goal)
        {
            releases.push(Found {
                id: goal.clone(),
                info: Some(plan.release_info(d, goal, State::Live)),
            });
        }
        for r in &mut releases {
            if let Some(info) = &mut r.info {
                if r.id == now_on {
                    info.state = State::Live;
                } else if rollback && Some(&r.id) == self.previous.as_ref() {
                    info.state = State::RolledBack;
                }
            }
        }
        for r in releases
            .iter()
            .filter(|r| r.id == now_on || (rollback && Some(&r.id) == self.previous.as_ref()))
        {
            if let Some(info) = &r.info
                && let Ok(s) = finish::set_release_json(
                    &r.id,
                    &serde_json::to_string(info).unwrap_or_default(),
                )
            {
                script.push_str(&s);
            }
        }
        let cleanup =
            finish::plan_cleanup(&releases, &self.survey.staging, &now_on, plan.keep_releases);
        // History and unlock ride in the same round trip.
        let line = self.history_line(plan, Some(&now_on), "ok", "");
        script.push_str(&finish::closing(&cleanup, &line, &plan.owner.token));
        let op = Op::Finish {
            live: now_on.clone(),
        };
        match self.run(plan, op, &script).await {
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
        self.end(plan, Outcome::Done);
    }
}
