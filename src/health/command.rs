//! The `health.command` check: the command runs in the release with its `.env` exported
//! ([`command_script`]); exit 0 passes, otherwise its last output line is the reason.

use std::time::Duration;

use super::spec::{human, ssh_status};
use crate::remote::unit::command_script;
use crate::ssh::Session;

/// Runs the command once, stopped after `limit`; `Err` is the reason it fails.
pub(super) async fn check_command(
    session: &Session,
    release_dir: &str,
    command: &str,
    limit: Duration,
) -> Result<(), String> {
    let script =
        command_script(release_dir, command, limit).map_err(|e| format!("health command: {e}"))?;
    let mut last = String::new();
    let run = session.exec(&script, |_, line| {
        if !line.trim().is_empty() {
            last = line.trim_end().chars().take(500).collect();
        }
    });
    // The host's `timeout` stops the command at the same moment, so nothing is left
    // running there; this bound also covers a host without `timeout`.
    let out = tokio::time::timeout(limit, run).await;
    let out = match out {
        Err(_) => {
            return Err(format!(
                "health command did not finish within {}",
                human(limit)
            ));
        }
        Ok(Err(e)) => return Err(format!("health command: {e}")),
        Ok(Ok(out)) => out,
    };
    if out.success() {
        return Ok(());
    }
    let what = match (out.status, &out.signal) {
        (Some(124), None) => format!("did not finish within {} and was stopped", human(limit)),
        (Some(125), None) => format!("could not start in {release_dir} (cd or .env failed)"),
        _ => ssh_status(&out),
    };
    Err(if last.is_empty() {
        format!("health command {what}, without output")
    } else {
        format!("health command {what}: {last}")
    })
}
