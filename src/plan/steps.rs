//! A run's steps on one host, with the exact scripts they send (secrets redacted): what
//! `--dry-run` prints. The scripts come from the same [`Plan`] builders the real run
//! uses, so the two cannot drift.

use crate::printer::units::human_bytes;
use crate::remote::lock;
use crate::remote::stage::Source;
use crate::remote::survey::Survey;

use super::{DeployPlan, Plan, Shipment, Switch};

/// One step: what it does, and the script it sends (empty when it sends none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub title: String,
    pub script: String,
}

impl Plan {
    /// What a deploy of release `id` does on a host whose survey is `survey`.
    pub async fn deploy_steps(&self, d: &DeployPlan, id: &str, survey: &Survey) -> Vec<Step> {
        let current = survey.current.clone().unwrap_or_else(|| "none".into());
        let shipment = d.shipment(survey).await;
        let whole = human_bytes(d.artifact.size);
        let (source, what) = match &shipment {
            Shipment::Cached => (
                Source::Cached,
                "nothing to send, the artifact is cached on the host; unpack it".to_owned(),
            ),
            Shipment::Delta { delta, base } => (
                d.delta_source(delta, base),
                format!(
                    "send a delta of {} against release {base} ({} files sent, {} taken from \
                     {base}), assemble, verify",
                    human_bytes(delta.len()),
                    delta.sent,
                    delta.reused
                ),
            ),
            Shipment::Full {
                why_not_delta: Some(why),
            } => (
                d.full_source(),
                format!(
                    "send the whole artifact ({whole}; no delta: {why}), unpack it as it arrives"
                ),
            ),
            Shipment::Full {
                why_not_delta: None,
            } => (
                d.full_source(),
                format!("send the whole artifact ({whole}), unpack it as it arrives"),
            ),
        };
        vec![
            Step {
                title: "1. lock".into(),
                script: lock::acquire(&self.owner, None).unwrap_or_default(),
            },
            Step {
                title: format!("2. upload and stage: {what}"),
                script: self.stage_script(d, id, source, true).unwrap_or_default(),
            },
            Step {
                title: "3. switch and restart".into(),
                script: self
                    .activate_script(id, Switch::Forward)
                    .unwrap_or_default(),
            },
            Step {
                title: format!(
                    "4. health check for up to {}; unhealthy: switch back to {current}, restart",
                    self.health.timeout
                ),
                script: String::new(),
            },
            Step {
                title: "5. after_switch hooks, history line, cleanup, unlock".into(),
                script: self.after_hooks_script(true).unwrap_or_default(),
            },
        ]
    }

    /// What a rollback from `current` to release `to` does on a host.
    pub fn rollback_steps(&self, current: &str, to: &str) -> Vec<Step> {
        vec![Step {
            title: format!(
                "would switch {current} -> {to}, restart, health-check, then mark {current} \
                 rolled-back"
            ),
            script: self
                .activate_script(to, Switch::Forward)
                .unwrap_or_default(),
        }]
    }
}
