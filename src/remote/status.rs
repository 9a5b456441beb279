//! `shipit status`'s one read-only script per host: the lock, the survey, the unit's
//! state and the last history lines; and the parser of what it prints.

use std::collections::BTreeMap;

use super::layout::HISTORY;
use super::release::{self, Survey};
use super::{lock, q};
use crate::config::ServiceManager;
use crate::ssh::quote::QuoteError;

/// What the status script found on a host.
#[derive(Debug, Default)]
pub struct Status {
    /// `deploy_to` does not exist: never deployed.
    pub missing: bool,
    pub survey: Survey,
    /// The unit's `ActiveState`, `SubState` and `ActiveEnterTimestamp`.
    pub unit: BTreeMap<String, String>,
    /// The last history lines, oldest first.
    pub history: Vec<serde_json::Value>,
}

/// The status script: in `deploy_to` (reporting `@@missing` when it is not there), the
/// lock, the survey, the unit's state (`@@svc`) and the last `history` lines
/// (`@@history`).
pub fn script(
    deploy_to: &str,
    manager: ServiceManager,
    service: &str,
    history: usize,
) -> Result<String, QuoteError> {
    let mut s = release::enter(deploy_to, false)?;
    s.push_str(&lock::report());
    s.push_str(&release::survey(None)?);
    if let Some(ctl) = release::systemctl(manager, false) {
        s.push_str(&format!(
            "{ctl} show -p ActiveState -p SubState -p ActiveEnterTimestamp -- {} 2>/dev/null \
             | sed 's/^/@@svc /'\n",
            q(service)?
        ));
    }
    if history > 0 {
        s.push_str(&format!(
            "tail -n {history} {HISTORY} 2>/dev/null | sed 's/^/@@history /'\n"
        ));
    }
    Ok(s)
}

pub fn parse(stdout: &str) -> Status {
    if stdout.contains("@@missing") {
        return Status {
            missing: true,
            ..Status::default()
        };
    }
    let unit = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("@@svc "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let history = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("@@history "))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    Status {
        missing: false,
        survey: release::parse_survey(stdout),
        unit,
        history,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_reads_state_and_history() {
        let s = script("/opt/hello", ServiceManager::Systemd, "hello", 3).unwrap();
        insta::assert_snapshot!(s);
    }

    #[test]
    fn parse_reads_unit_and_history_lines() {
        let out = "@@current releases/20260101T000000Z-abc\n@@svc ActiveState=active\n\
                   @@svc SubState=running\n@@history {\"action\":\"deploy\"}\n";
        let st = parse(out);
        assert!(!st.missing);
        assert_eq!(
            st.unit.get("ActiveState").map(String::as_str),
            Some("active")
        );
        assert_eq!(st.history.len(), 1);
        assert!(parse("@@missing\n").missing);
    }
}
