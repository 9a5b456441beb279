//! The last phase, after a healthy switch: the after hooks, the releases' final states,
//! cleanup of old releases, the history line and the unlock, in one round trip.

use crate::outcome::Outcome;
use crate::plan::{Kind, Plan};
use crate::remote::finish;
use crate::remote::release::{Found, State};

use super::{HostRun, Op};

impl HostRun {
    pub async fn finish(&mut self, plan: &Plan) {
        let Some(now_on) = self.switched_to.clone() else {
            return;
        };
        let rollback = plan.kind == Kind::Rollback;
        let mut script = plan.after_hooks_script(false).unwrap_or_default();
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
