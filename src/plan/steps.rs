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
        let full = matches!(shipment, Shipment::Full { .. });
        let stage = match (&d.store, full) {
            (Some(store), true) => Step {
                title: format!(
                    "2. fetch the artifact from {} ({whole}; a presigned URL valid for {}, \
                     shown redacted), verify its sha256, stage it; if the host cannot fetch \
                     it, {what}",
                    store.configured(),
                    self.store_ttl().map(|t| t.to_string()).unwrap_or_default()
                ),
                script: crate::remote::fetch::fetch("", &d.sha256, 60, true).unwrap_or_default()
                    + &self
                        .stage_script(d, id, Source::Cached, true)
                        .unwrap_or_default(),
            },
            _ => Step {
                title: format!("2. upload and stage: {what}"),
                script: self.stage_script(d, id, source, true).unwrap_or_default(),
            },
        };
        let mut steps = vec![
            Step {
                title: "1. lock".into(),
                script: lock::acquire(&self.owner, None).unwrap_or_default(),
            },
            stage,
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
        ];
        if let Some(slot_steps) = self.slot_steps(id, &current) {
            steps.splice(2..4, slot_steps);
        }
        steps
    }

    /// Steps 3 and 4 behind the proxy: the new slot, the traffic steps, the drain.
    fn slot_steps(&self, id: &str, current: &str) -> Option<Vec<Step>> {
        let (s, p) = (self.slots()?, self.proxy.as_ref()?);
        let (live, idle) = (s.ports[0], s.ports[1]);
        let steps: Vec<String> = p.steps.iter().map(|x| format!("{x}%")).collect();
        let judged = match p.analysis.max_response_time {
            Some(t) => format!(
                "error rate over {}% or mean response time over {t}",
                p.analysis.max_error_rate
            ),
            None => format!("error rate over {}%", p.analysis.max_error_rate),
        };
        Some(vec![
            Step {
                title: format!(
                    "3. start {id} in the idle slot (here {idle}, with {live} live), \
                     health-check it on port {idle}; HAProxy's configuration (written and \
                     checked by step 2, the live slot's weight filled in on the host):"
                ),
                script: crate::remote::proxy::haproxy_config(&s),
            },
            Step {
                title: format!(
                    "4. move new requests to slot {idle} in steps of {} (HAProxy's runtime \
                     API), each judged for {} ({judged} fails it), then watch {}; a failure \
                     puts all traffic back on slot {live} ({current}) at once; after the \
                     rollout is confirmed, slot {live} drains (up to {}) and stops",
                    steps.join(", "),
                    p.analysis.interval,
                    p.watch,
                    p.drain_timeout
                ),
                script: self
                    .start_slot_script(&s, id, Some(live), idle)
                    .unwrap_or_default(),
            },
        ])
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
