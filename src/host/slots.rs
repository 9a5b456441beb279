//! The third phase with `proxy:`: the new release starts in the idle slot, is
//! health-checked on its own port, then takes the traffic step by step through HAProxy's
//! runtime API, each step judged by the new slot's own counters; the way back is all
//! traffic to the old slot at once (it still runs). Once the rollout is confirmed, the
//! old slot drains and stops ([`HostRun::retire_old_slot`]).

use std::time::{Duration, Instant};

use crate::health;
use crate::plan::{Kind, Plan, Switch};
use crate::remote::haproxy::{self, Counters, Window};
use crate::remote::proxy::{self, Slots};

use super::{HostRun, Op, Remote};

impl HostRun {
    /// [`HostRun::activate`] for an app behind the proxy.
    pub async fn activate_slot(
        &mut self,
        plan: &Plan,
        id: &str,
        switch: Switch,
    ) -> Result<(), String> {
        let Some(s) = plan.slots() else {
            return Err("no proxy configured".into());
        };
        if switch == Switch::Back {
            return self.slot_back(plan, &s).await;
        }
        let found = self.slots.clone().unwrap_or_default();
        let live = found.live;
        let idle = live.map_or(s.ports[0], |l| s.other(l));
        let serving = live.filter(|&l| found.running(l));
        self.say(plan, &format!("starting {id} in slot {idle}"));
        let script = plan
            .start_slot_script(&s, id, live, idle)
            .map_err(|e| e.to_string())?;
        let op = Op::Activate {
            release: id.to_owned(),
            forward: true,
        };
        // From here the way back stops this slot (and moves traffic back if it moved).
        self.slot_move = Some((live, idle));
        self.switched_to = Some(id.to_owned());
        let activated = match self.run(plan, op, &script).await {
            Ok(out) => out,
            Err((step, r)) => {
                if step == "restart" {
                    self.read_journal(plan, &s.instance(idle)).await;
                }
                return Err(format!("{step}: {r}"));
            }
        };
        let remote = self.remote.clone().ok_or("not connected")?;
        self.check_slot(plan, &s, remote.as_ref(), id, idle, &activated)
            .await?;

        let Some(p) = &plan.proxy else {
            return Err("no proxy configured".into());
        };
        // A deploy next to a serving slot is judged step by step; a rollback (or a first
        // start, with nothing to compare) moves everything at once.
        let judged = plan.kind == Kind::Deploy && serving.is_some();
        let steps = if judged { p.steps.clone() } else { vec![100] };
        let socket = s.socket();
        for share in steps {
            let answer = remote
                .proxy_api(&socket, &haproxy::shift(&s, idle, share, live))
                .await?;
            haproxy::shifted(&answer)?;
            // A test stopped here finds traffic split between the slots.
            crate::faultpoint::reached("traffic", &self.target.name);
            if !judged {
                self.say(plan, &format!("all traffic to slot {idle}"));
                continue;
            }
            let w = slot_window(remote.as_ref(), &s, idle, p.analysis.interval.0).await?;
            w.judge(p.mode, &p.analysis)
                .map_err(|e| format!("step {share}% to slot {idle}: {e}"))?;
            self.say(plan, &format!("step {share}%: {}", w.describe(p.mode)));
        }
        if judged && !p.watch.0.is_zero() {
            let w = slot_window(remote.as_ref(), &s, idle, p.watch.0).await?;
            w.judge(p.mode, &p.analysis)
                .map_err(|e| format!("watch after 100% to slot {idle}: {e}"))?;
            self.say(plan, &format!("watched: {}", w.describe(p.mode)));
        }
        let script = proxy::promote(&s, id, idle).map_err(|e| e.to_string())?;
        let op = Op::Promote {
            release: id.to_owned(),
        };
        self.run(plan, op, &script)
            .await
            .map_err(|(step, r)| format!("{step}: {r}"))?;
        Ok(())
    }

    /// The new slot's health check: the configured one, on the slot's own port (and
    /// with `PORT` set for the command), against the slot's instance.
    async fn check_slot(
        &mut self,
        plan: &Plan,
        s: &Slots<'_>,
        remote: &dyn Remote,
        id: &str,
        port: u16,
        activated: &str,
    ) -> Result<(), String> {
        self.say(plan, &format!("slot {port} started; health-checking"));
        crate::faultpoint::reached("health", &self.target.name);
        let release_dir = plan.release_dir(id);
        let command = plan
            .health
            .command
            .as_ref()
            .map(|c| format!("PORT={port}; export PORT; {}", c.expose()));
        let http = plan.health.http.clone().map(|mut h| {
            h.port = port;
            h
        });
        let instance = s.instance(port);
        let mut spec = plan.health_spec(&release_dir, command.as_deref(), false);
        spec.http = http.as_ref();
        spec.service = &instance;
        match remote.health(&spec, activated).await? {
            health::Outcome::Healthy { elapsed, .. } => {
                let text = format!("slot {port} healthy after {:.1}s", elapsed.as_secs_f64());
                self.say(plan, &text);
                Ok(())
            }
            health::Outcome::Unhealthy { reason, .. } => {
                self.read_journal(plan, &instance).await;
                Err(format!("slot {port} (never given traffic): {reason}"))
            }
        }
    }

    /// The way back: all traffic to the old slot at once, then the files, `current`, and
    /// the new slot stopped. Without the runtime API (or with no old slot), the proxy
    /// reloads from the configuration, which names the old slot again.
    async fn slot_back(&mut self, plan: &Plan, s: &Slots<'_>) -> Result<(), String> {
        let Some((old, new)) = self.slot_move else {
            return Ok(());
        };
        let remote = self.remote.clone().ok_or("not connected")?;
        let mut reload = old.is_none();
        if let Some(old) = old {
            let moved = remote
                .proxy_api(&s.socket(), &haproxy::shift(s, old, 100, Some(new)))
                .await
                .and_then(|a| haproxy::shifted(&a));
            if let Err(e) = moved {
                self.warn(plan, &format!("{e}; reloading the proxy instead"));
                reload = true;
            }
        }
        let mut script = plan.confirm_script().map_err(|e| e.to_string())?;
        script.push_str(
            &proxy::back(s, self.previous.as_deref(), old, new, reload)
                .map_err(|e| e.to_string())?,
        );
        let op = Op::Activate {
            release: self.previous.clone().unwrap_or_default(),
            forward: false,
        };
        self.run(plan, op, &script)
            .await
            .map_err(|(step, r)| format!("{step}: {r}"))?;
        self.slot_move = None;
        Ok(())
    }

    /// After the confirm: the old slot gets no new requests already; its open
    /// connections finish (or `proxy.drain_timeout` passes), then it stops.
    pub async fn retire_old_slot(&mut self, plan: &Plan) {
        let (Some(s), Some((Some(old), new))) = (plan.slots(), self.slot_move) else {
            return;
        };
        if old == new {
            return;
        }
        let Some(remote) = self.remote.clone() else {
            return;
        };
        let limit = plan
            .proxy
            .as_ref()
            .map_or(Duration::ZERO, |p| p.drain_timeout.0);
        let started = Instant::now();
        let mut open = 0;
        loop {
            match slot_counters(remote.as_ref(), &s, old).await {
                Ok(c) if c.scur == 0 => {
                    open = 0;
                    break;
                }
                Ok(c) => open = c.scur,
                Err(e) => {
                    self.warnings
                        .push(format!("could not read slot {old}'s connections: {e}"));
                    break;
                }
            }
            if started.elapsed() >= limit {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let drained = format!(
            "slot {old} drained in {:.1}s{}",
            started.elapsed().as_secs_f64(),
            if open > 0 {
                format!(" ({open} connections still open at proxy.drain_timeout)")
            } else {
                String::new()
            }
        );
        self.say(plan, &drained);
        match proxy::retire(&s, old) {
            Ok(script) => {
                if let Err((_, e)) = self.run(plan, Op::Retire, &script).await {
                    self.warnings.push(format!("stopping slot {old}: {e}"));
                }
            }
            Err(e) => self.warnings.push(e.to_string()),
        }
    }
}

/// Slot `port`'s counters now.
async fn slot_counters(remote: &dyn Remote, s: &Slots<'_>, port: u16) -> Result<Counters, String> {
    let stat = remote.proxy_api(&s.socket(), "show stat").await?;
    haproxy::counters(s, port, &stat)
        .ok_or_else(|| format!("HAProxy's `show stat` has no server for slot {port}"))
}

/// What slot `port` did over the next `how_long`.
async fn slot_window(
    remote: &dyn Remote,
    s: &Slots<'_>,
    port: u16,
    how_long: Duration,
) -> Result<Window, String> {
    let before = slot_counters(remote, s, port).await?;
    tokio::time::sleep(how_long).await;
    let after = slot_counters(remote, s, port).await?;
    Ok(Window::between(s.mode, &before, &after))
}
