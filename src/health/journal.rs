//! The unit's journal, shown under a failed health check.

use super::spec::{ONE_SHOT_TIMEOUT, human, ssh_status};
use crate::config::ServiceManager;
use crate::remote::unit::{journal_script, unit_name};
use crate::ssh::Session;

/// The last `lines` lines of the unit's journal, as text to show under a failed health
/// check. Never fails: on error, says what went wrong instead.
///
/// systemd: `journalctl -u` (through `sudo -n` when `sudo`; without it, a user outside
/// the `adm`/`systemd-journal` groups sees nothing of system units). systemd-user:
/// `journalctl --user -u`, or with `sudo`, the system journal filtered to the user's unit
/// (needed when journald keeps no per-user files, e.g. `Storage=volatile`).
pub async fn journal_tail(
    session: &Session,
    manager: ServiceManager,
    service: &str,
    sudo: bool,
    lines: usize,
) -> String {
    let unit = unit_name(service);
    let script = match journal_script(manager, service, sudo, lines) {
        Ok(Some(script)) => script,
        Ok(None) => {
            return format!("(no journal: service.manager is none, {unit} is not run by systemd)");
        }
        Err(e) => return format!("(cannot read the journal of {unit}: {e})"),
    };
    let mut text = Bounded::default();
    let run = session.exec(&script, |_, line| text.push(line));
    match tokio::time::timeout(ONE_SHOT_TIMEOUT, run).await {
        Err(_) => with_output(
            format!(
                "(cannot read the journal of {unit}: no answer within {})",
                human(ONE_SHOT_TIMEOUT)
            ),
            &text.text,
            "",
        ),
        Ok(Err(e)) => format!("(cannot read the journal of {unit}: {e})"),
        Ok(Ok(out)) if out.success() => text.text,
        Ok(Ok(out)) => {
            let hint = if manager == ServiceManager::SystemdUser && !sudo {
                concat!(
                    "(a user's own journal files are missing when journald stores logs in the ",
                    "system journal only, e.g. Storage=volatile; with service.sudo: true ",
                    "shipit reads them from there)"
                )
            } else {
                ""
            };
            with_output(
                format!(
                    "(cannot read the journal of {unit}: journalctl {})",
                    ssh_status(&out)
                ),
                &text.text,
                hint,
            )
        }
    }
}

/// `head`, then what the command printed and `hint`, one per line, without blank ones.
fn with_output(head: String, output: &str, hint: &str) -> String {
    let mut s = head;
    for part in [output.trim_end(), hint.trim()] {
        if !part.is_empty() {
            s.push('\n');
            s.push_str(part);
        }
    }
    s
}

/// Text kept from a command's output, bounded.
#[derive(Default)]
struct Bounded {
    text: String,
}

impl Bounded {
    const LIMIT: usize = 64 * 1024;

    fn push(&mut self, line: &str) {
        if self.text.len() + line.len() < Self::LIMIT {
            self.text.push_str(line);
            self.text.push('\n');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_failures_read_well() {
        assert_eq!(with_output("(head)".into(), "", ""), "(head)");
        assert_eq!(
            with_output("(head)".into(), "a\nb\n\n", " (hint) "),
            "(head)\na\nb\n(hint)"
        );
    }
}
