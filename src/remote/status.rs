//! What `shipit status` asks a host, read-only, in one round trip: the lock, the survey,
//! the service's state and the last lines of the history.

use std::collections::BTreeMap;

use super::activate::systemctl;
use super::layout::HISTORY;
use super::markers::{self, SVC};
use super::{enter, lock, q, survey};
use crate::config::ServiceManager;
use crate::ssh::quote::QuoteError;

/// The status script: nothing when `deploy_to` is missing ([`super::is_missing`]), else
/// the lock's report and the survey (read by [`survey::parse_survey`]), the service's
/// state ([`service`]) and the last `history` lines of the history ([`history`]).
pub fn script(
    deploy_to: &str,
    manager: ServiceManager,
    service: &str,
    history: usize,
) -> Result<String, QuoteError> {
    let mut s = enter(deploy_to, false)?;
    s.push_str(&lock::report());
    s.push_str(&survey::survey(None)?);
    if let Some(ctl) = systemctl(manager, false) {
        s.push_str(&format!(
            "{ctl} show -p ActiveState -p SubState -p ActiveEnterTimestamp -- {unit} \
             2>/dev/null | sed 's/^/{SVC} /'\n",
            unit = q(service)?
        ));
    }
    if history > 0 {
        s.push_str(&format!(
            "tail -n {history} {HISTORY} 2>/dev/null | sed 's/^/{marker} /'\n",
            marker = markers::HISTORY
        ));
    }
    Ok(s)
}

/// The service's properties (`ActiveState`, `SubState`, `ActiveEnterTimestamp`) as the
/// status script printed them.
pub fn service(stdout: &str) -> BTreeMap<String, String> {
    markers::values(stdout, SVC)
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// The history lines the status script printed, oldest first; a line that is not JSON
/// is left out.
pub fn history(stdout: &str) -> Vec<serde_json::Value> {
    markers::values(stdout, markers::HISTORY)
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots() {
        insta::assert_snapshot!(
            "status_systemd",
            script("/srv/hello app", ServiceManager::Systemd, "hello", 5).unwrap()
        );
        insta::assert_snapshot!(
            "status_manager_none_no_history",
            script("/srv/hello app", ServiceManager::None, "hello", 0).unwrap()
        );
    }

    #[test]
    fn service_and_history_lines() {
        let out = concat!(
            "@@svc ActiveState=active\n",
            "@@svc SubState=running\n",
            "@@svc ActiveEnterTimestamp=\n",
            "@@svc junk\n",
            "@@history {\"action\":\"deploy\"}\n",
            "@@history not json\n",
            "ActiveState=failed\n",
        );
        let svc = service(out);
        assert_eq!(svc.len(), 3);
        assert_eq!(svc["ActiveState"], "active");
        assert_eq!(svc["ActiveEnterTimestamp"], "");
        assert_eq!(history(out), [serde_json::json!({"action": "deploy"})]);
    }
}
