//! `roles:`: a role is the top level with the role's keys over it, resolved as a whole
//! configuration of its own (its hosts, `deploy_to`, service, health check, env, hooks,
//! proxy). The top level's `hosts` become every role's hosts, each once.

use indexmap::IndexMap;

use super::raw::{self, Layer, Merge, S};
use super::{Config, Ctx, Role, place, valid_name};

impl Ctx<'_> {
    pub(super) fn resolve_roles(
        &mut self,
        mut base: Layer,
        roles: S<IndexMap<String, S<raw::Role>>>,
        environment: Option<String>,
    ) -> Option<Config> {
        if roles.value.is_empty() {
            self.problem(
                &roles,
                "`roles` is empty".into(),
                Some("name at least one role with its `hosts`, or drop `roles`"),
            );
        }
        if let Some(h) = base.hosts.take() {
            self.problem(
                &h,
                "with `roles`, hosts are listed under each role, not in `hosts`".into(),
                Some("move them to `roles.<role>.hosts` (an environment sets those too)"),
            );
        }
        self.roles = Some(roles.value.keys().cloned().collect());
        let top_dir = match &base.deploy_to {
            Some(d) => d.value.clone(),
            None => format!("/opt/{}", base.app.as_ref().map_or("app", |a| &a.value)),
        };
        let mut out = Vec::new();
        for (name, role) in &roles.value {
            if !valid_name(name) || name.len() > 32 {
                self.problem(
                    role,
                    format!("`{name}` is not a valid role name"),
                    Some("lowercase letters, digits, `-` and `_`, at most 32"),
                );
                continue;
            }
            let r = role.value.clone();
            let locals = r
                .hooks
                .iter()
                .flat_map(|h| [&h.local_before, &h.local_after]);
            for local in locals.flatten() {
                self.problem(
                    local,
                    format!("`roles.{name}.hooks`: local hooks belong at the top level"),
                    Some("move them to the top level's `hooks`"),
                );
            }
            let mut layer = base.clone();
            layer.hosts = r.hosts;
            layer.deploy_to = Some(r.deploy_to.unwrap_or_else(|| {
                S::new(
                    format!("{}/{name}", top_dir.trim_end_matches('/')),
                    role.referenced,
                    role.defined,
                )
            }));
            layer.env = layer.env.merge(r.env);
            layer.service = layer.service.merge(r.service);
            layer.health = health_over(layer.health, r.health);
            layer.hooks = layer.hooks.merge(r.hooks);
            layer.proxy = layer.proxy.merge(r.proxy);
            self.role = Some(name.clone());
            let config = self.resolve(layer, environment.clone());
            self.role = None;
            if let Some(config) = config {
                out.push((
                    place(role),
                    Role {
                        name: name.clone(),
                        config,
                    },
                ));
            }
        }
        let mut config = self.resolve(base, environment)?;
        for (at, role) in &out {
            self.shared_hosts(&mut config, role, *at);
        }
        for (i, (at, role)) in out.iter().enumerate() {
            let dir = role.config.deploy_to.expose();
            let clash = out[..i].iter().find(|(_, other)| {
                other.config.deploy_to.expose() == dir
                    && other
                        .config
                        .hosts
                        .iter()
                        .any(|h| role.config.hosts.contains(h))
            });
            if let Some((_, other)) = clash {
                self.problem_at(
                    *at,
                    format!(
                        "roles `{}` and `{}` share hosts and the same `deploy_to` ({dir})",
                        other.name, role.name
                    ),
                    Some("each role on a host needs its own directory: drop `deploy_to` from one"),
                );
            }
        }
        config.roles = out.into_iter().map(|(_, r)| r).collect();
        Some(config)
    }

    /// Adds `role`'s hosts to the top level's list; a host in two roles must be the same
    /// machine in both.
    fn shared_hosts(&mut self, config: &mut Config, role: &Role, at: (u64, u64)) {
        for h in &role.config.hosts {
            match config.hosts.iter().find(|k| k.name == h.name) {
                Some(known) if known != h => self.problem_at(
                    at,
                    format!(
                        "host `{}` of role `{}` differs from the host of that name in another \
                         role",
                        h.name, role.name
                    ),
                    Some("write it the same way in every role, or give them distinct `name:`s"),
                ),
                Some(_) => {}
                None => config.hosts.push(h.clone()),
            }
        }
    }
}

/// A role's health check: the check it names (`http`, `command`) replaces the top
/// level's whole (a worker has no HTTP port to inherit); the timings merge.
fn health_over(top: Option<raw::Health>, role: Option<raw::Health>) -> Option<raw::Health> {
    let Some(role) = role else { return top };
    let top = top.unwrap_or_default();
    let check = role.http.is_some() || role.command.is_some();
    Some(raw::Health {
        http: if check { role.http } else { top.http },
        command: if check { role.command } else { top.command },
        timeout: top.timeout.merge(role.timeout),
        interval: top.interval.merge(role.interval),
        settle: top.settle.merge(role.settle),
    })
}
