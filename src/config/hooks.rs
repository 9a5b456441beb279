//! Hook lists: each hook a command, or an object with `run` (and, in `before_switch`,
//! `once`; with roles, `roles`).

use super::raw::{self, S};
use super::{Ctx, OnceHook, place};
use crate::redact::Text;

impl Ctx<'_> {
    /// A list of hooks; `once: true` entries go to `once`, which only
    /// `hooks.before_switch` has (elsewhere they are a problem). While a role is being
    /// resolved, hooks whose `roles:` leaves it out are dropped.
    pub(super) fn hooks(
        &mut self,
        list: &Option<raw::HookList>,
        key: &str,
        mut once: Option<&mut Vec<OnceHook>>,
    ) -> Vec<Text> {
        let mut every = Vec::new();
        let Some(list) = list else { return every };
        for (i, entry) in list.value.iter().enumerate() {
            let at = format!("{key}[{i}]");
            let (run, is_once) = match &entry.value {
                raw::HookEntry::Short(run) => {
                    let run = S::new(run.clone(), entry.referenced, entry.defined);
                    (run, false)
                }
                raw::HookEntry::Object(o) => {
                    let is_once = o.once.as_ref().filter(|o| o.value);
                    if let (Some(o), None) = (is_once, &once) {
                        self.problem(
                            o,
                            format!("`{at}.once`: only `hooks.before_switch` hooks can run once"),
                            Some("move the hook to `before_switch`, or drop `once`"),
                        );
                    }
                    if let Some(roles) = &o.roles
                        && !self.hook_roles(roles, key, &at)
                    {
                        continue;
                    }
                    (o.run.clone(), is_once.is_some())
                }
            };
            if let Some(text) = self.text(&run, &at) {
                match (&mut once, is_once) {
                    (Some(once), true) => once.push(OnceHook {
                        run: text,
                        at: place(entry),
                    }),
                    _ => every.push(text),
                }
            }
        }
        every
    }

    /// Checks a hook's `roles:`; says whether the role being resolved (if any) keeps it.
    fn hook_roles(&mut self, roles: &raw::List, key: &str, at: &str) -> bool {
        let Some(known) = self.roles.clone() else {
            self.problem(
                roles,
                format!("`{at}.roles`: no roles are defined"),
                Some("define `roles:`, or drop `roles` from the hook"),
            );
            return true;
        };
        if key.starts_with("hooks.local_") {
            self.problem(
                roles,
                format!("`{at}.roles`: local hooks run on this machine, not on a role's hosts"),
                Some("drop `roles` from the hook"),
            );
            return true;
        }
        if roles.value.is_empty() {
            self.problem(
                roles,
                format!("`{at}.roles` is empty"),
                Some("name at least one role, or drop `roles`"),
            );
        }
        for r in &roles.value {
            if !known.contains(&r.value) {
                self.problem(
                    r,
                    format!("`{at}.roles`: there is no role `{}`", r.value),
                    Some(&format!("roles: {}", known.join(", "))),
                );
            }
        }
        match &self.role {
            Some(role) => roles.value.iter().any(|r| &r.value == role),
            None => true,
        }
    }
}
