//! Hook lists: each hook a command, or an object with `run` (and, in `before_switch`,
//! `once`).

use super::Ctx;
use super::raw::{self, S};
use crate::redact::Text;

impl Ctx<'_> {
    /// A list of hooks; `once: true` entries go to `once`, which only
    /// `hooks.before_switch` has (elsewhere they are a problem).
    pub(super) fn hooks(
        &mut self,
        list: &Option<raw::HookList>,
        key: &str,
        mut once: Option<&mut Vec<Text>>,
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
                    (o.run.clone(), is_once.is_some())
                }
            };
            if let Some(text) = self.text(&run, &at) {
                match (&mut once, is_once) {
                    (Some(once), true) => once.push(text),
                    _ => every.push(text),
                }
            }
        }
        every
    }
}
