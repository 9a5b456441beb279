//! `shipit lock --message TEXT`: hold deploys on the targeted hosts by taking their deploy
//! lock by hand, with the reason in its owner file. Deploys and rollbacks then stop at
//! the lock (exit 3) and say who holds it and why; `status` shows it; `shipit unlock`
//! lifts it. Such a lock is never mistaken for a dead deploy's.

use anyhow::Result;

use crate::exit::Exit;
use crate::outcome::Outcome;
use crate::plan::Kind;
use crate::remote::lock::{self, Owner};
use crate::remote::survey::{self, LockAnswer};
use crate::settings::Settings;
use crate::targets::Pick;

use super::unlock::on_each_host;

pub fn run(settings: &Settings, message: &str, hosts: Pick) -> Result<Exit> {
    let message = message.trim().to_owned();
    if message.is_empty() || message.contains(['\n', '\0']) {
        anyhow::bail!("`--message` must be one line of text saying why deploys are held");
    }
    let mut owner = Owner::here(Kind::Lock.command(), None);
    owner.message = Some(message.clone());
    let said = message.clone();
    on_each_host(
        settings,
        hosts,
        Kind::Lock,
        move |plan| {
            format!(
                "{}{}",
                crate::remote::enter(&plan.deploy_to, true).unwrap_or_default(),
                lock::acquire(&owner, None).unwrap_or_default()
            )
        },
        move |out| match survey::parse_survey(out).lock {
            Some(LockAnswer::Acquired) => Outcome::Skipped {
                reason: format!("locked: \"{said}\" (`shipit unlock` lifts it)"),
            },
            Some(LockAnswer::Held { owner: Some(o), .. }) => Outcome::Locked {
                holder: o.describe(crate::remote::layout::now()),
            },
            _ => Outcome::Locked {
                holder: "someone (the lock has no owner file)".into(),
            },
        },
    )
}
