//! The third phase: switch `current` to a release, restart the service (one script),
//! then health-check it.

use crate::config::ServiceManager;
use crate::health;
use crate::plan::{Plan, Switch};
use crate::remote::activate::switched;

use super::{HostRun, Op};

impl HostRun {
    /// Switch to `id`, restart, and wait until healthy. `Err` holds why it is not.
    pub async fn activate(&mut self, plan: &Plan, id: &str, switch: Switch) -> Result<(), String> {
        if plan.proxy.is_some() {
            return self.activate_slot(plan, id, switch).await;
        }
        self.say(plan, &format!("switching to {id}"));
        let script = plan
            .activate_script(id, switch)
            .map_err(|e| e.to_string())?;
        let op = Op::Activate {
            release: id.to_owned(),
            forward: switch == Switch::Forward,
        };
        let out = self.run(plan, op, &script).await;
        // Whatever happened after the switch, `current` may have moved.
        if let Ok(o) = &out
            && switched(o)
        {
            self.switched_to = Some(id.to_owned());
        }
        let activated = match out {
            Ok(o) => o,
            Err((step, reason)) => {
                if step != "switch" && step != "prepare" {
                    self.switched_to = Some(id.to_owned());
                }
                // systemd's own message only says "see journalctl": the why is there.
                if step == "restart" {
                    self.read_journal(plan, &plan.service).await;
                }
                return Err(format!("{step}: {reason}"));
            }
        };
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
        let Some(remote) = &self.remote else {
            return Err("not connected".into());
        };
        crate::faultpoint::reached("health", &self.target.name);
        let release_dir = plan.release_dir(id);
        let command = plan.health.command.as_ref().map(|c| c.expose().to_owned());
        let spec = plan.health_spec(&release_dir, command.as_deref(), false);
        match remote.health(&spec, &activated).await? {
            health::Outcome::Healthy { elapsed, .. } => {
                let text = format!("healthy after {:.1}s", elapsed.as_secs_f64());
                self.say(plan, &text);
                Ok(())
            }
            health::Outcome::Unhealthy { reason, .. } => {
                self.read_journal(plan, &plan.service).await;
                Err(reason)
            }
        }
    }

    /// The last lines of `unit`'s journal, for the summary of a host that failed.
    pub(super) async fn read_journal(&mut self, plan: &Plan, unit: &str) {
        if plan.manager == ServiceManager::None {
            return;
        }
        if let Some(remote) = &self.remote {
            let journal = remote.journal(plan.manager, unit, plan.sudo, 20).await;
            self.journal = Some(journal);
        }
    }
}
