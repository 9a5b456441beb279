//! What shipit does on a server, as pure builders of POSIX shell text and parsers of what
//! it prints back. Nothing here touches the network: `commands/` sends the scripts over
//! a session. Every interpolated value goes through `sh_quote`.
//!
//! A deploy or a rollback is a few scripts, one per phase, each one round trip, each
//! after [`enter`]:
//!
//! - [`survey`]: the host's state (current release, every release and its state, whether
//!   the artifact is cached), after taking the [`lock`] unless read-only;
//! - [`stage`]: the artifact (or a delta) on stdin, unpacked (`unpack.rs`) into
//!   `releases/.tmp-<id>` and verified; shared paths linked, `.env` written, the release
//!   recorded as staged ([`release`]), renamed into place, `before_switch` run;
//! - [`activate`]: switch `current` atomically, install the unit file if it changed,
//!   restart or reload;
//! - [`finish`]: `after_switch` (or `after_rollback`), final states, history line,
//!   cleanup, unlock.
//!
//! Beside them: [`status`] (`shipit status`), [`check`] (`shipit check`), [`layout`]
//! (where things live on a host). Lines starting with `@@` are the scripts' answers to
//! shipit, named in [`markers`]; everything else is output of hooks and tools, shown to
//! the user.

pub mod activate;
pub mod check;
pub mod fetch;
pub mod finish;
pub mod guard;
pub mod haproxy;
pub mod layout;
pub mod lock;
pub mod markers;
pub mod proxy;
pub mod release;
pub mod stage;
pub mod status;
pub mod survey;
pub mod unit;
pub mod unpack;

#[cfg(test)]
mod fixtures;

use crate::redact::{REDACTED, Text};
use crate::ssh::quote::{QuoteError, sh_quote};
use layout::{ARTIFACTS, RELEASES, SHARED};

/// Runs the shell text in `$SHIPIT_CMD`, which the caller has exported, with `sh`. User
/// commands (hooks, the health command) may hold secrets interpolated with `${VAR}`, and
/// `ps` shows every process's argv to every user of the host, while a process's
/// environment is readable only by its owner and root: so the text travels in the
/// environment, never in an argv. It is unset before it runs, so nothing it starts
/// inherits it.
pub const SH_FROM_ENV: &str = "sh -c 'c=$SHIPIT_CMD; unset SHIPIT_CMD; eval \"$c\"'";

/// `sh_quote` for values that config validation already proved free of NUL bytes.
pub fn q(value: &str) -> Result<String, QuoteError> {
    sh_quote(value)
}

/// What every script starts with: `cd` into deploy_to, creating the layout when
/// `create`. Without `create`, a missing deploy_to ends the script at once, saying so
/// ([`is_missing`]).
pub fn enter(deploy_to: &str, create: bool) -> Result<String, QuoteError> {
    let d = q(deploy_to)?;
    Ok(if create {
        format!(
            "D={d}\n{{ [ -d \"$D/{RELEASES}\" ] && [ -d \"$D/{SHARED}\" ] && \
             [ -d \"$D/{ARTIFACTS}\" ] || \
             mkdir -p -- \"$D/{RELEASES}\" \"$D/{SHARED}\" \"$D/{ARTIFACTS}\"; }} && \
             cd -- \"$D\" || exit 20\n"
        )
    } else {
        format!(
            "D={d}\ncd -- \"$D\" 2>/dev/null || {{ echo '{}'; exit 0; }}\n",
            markers::MISSING
        )
    })
}

/// The script stopped at [`enter`]: deploy_to does not exist.
pub fn is_missing(stdout: &str) -> bool {
    markers::has(stdout, markers::MISSING)
}

/// A hook's text as the script carries it: with `redact` (`--dry-run`), a secret one
/// shows as `[redacted]`.
fn hook_text(hook: &Text, redact: bool) -> &str {
    if redact && hook.is_secret() {
        REDACTED
    } else {
        hook.expose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots() {
        insta::assert_snapshot!("enter_create", enter("/srv/hello app", true).unwrap());
        insta::assert_snapshot!("enter_existing", enter("/srv/hello app", false).unwrap());
    }

    #[test]
    fn a_missing_deploy_to_is_an_answer_not_output() {
        assert!(is_missing("@@missing\n"));
        assert!(!is_missing("ls: @@missing\n"));
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(enter("/nonexistent/shipit-test dir", false).unwrap() + "echo after\n")
            .output()
            .unwrap();
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert!(out.status.success() && is_missing(&stdout), "{stdout}");
        assert!(!stdout.contains("after"), "{stdout}");
    }

    /// Regression: hooks ran as `sh -c <hook text>`, so a secret interpolated into a hook
    /// with `${VAR}` was in the argv every user of the host sees with `ps`.
    #[test]
    fn hook_text_never_appears_in_an_argv() {
        let root = tempfile::tempdir().unwrap();
        let rel = root.path().join("rel");
        std::fs::create_dir(&rel).unwrap();
        std::fs::write(rel.join(".env"), "GREETING='hi there'\n").unwrap();
        std::os::unix::fs::symlink("rel", root.path().join("current")).unwrap();
        let secret = "hook-secret-5d1e";
        let hook = Text::secret(format!(
            "printf '%s|' \"$GREETING\" \"${{SHIPIT_CMD-unset}}\"; \
             tr '\\0' ' ' </proc/$$/cmdline; : {secret}"
        ));
        for (script, cwd) in [
            (
                stage::hooks("before_switch", std::slice::from_ref(&hook), false, "true").unwrap(),
                rel.clone(),
            ),
            (
                finish::after_hooks("after_switch", std::slice::from_ref(&hook), false).unwrap(),
                root.path().to_owned(),
            ),
        ] {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(&script)
                .current_dir(cwd)
                .output()
                .unwrap();
            let stdout = String::from_utf8(out.stdout).unwrap();
            assert!(out.status.success(), "{script}\n{stdout}");
            assert!(stdout.contains("hi there|unset|sh -c "), "{stdout}");
            assert!(
                !stdout.contains(secret),
                "the hook's text is in its argv: {stdout}"
            );
        }
    }
}
