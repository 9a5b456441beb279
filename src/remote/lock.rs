//! The deploy lock: `mkdir .shipit/lock` (atomic on every filesystem) plus an owner file.
//!
//! The owner carries a random token, so only the process that took the lock releases it,
//! and who/where/when, so a held lock can be explained. A lock taken on this machine by a
//! process that no longer exists is stale: the next run breaks it (saying so) instead of
//! waiting for a human, which is what makes "kill -9, then deploy again" work.

use serde::{Deserialize, Serialize};

use super::layout::LOCK;
use super::markers::{self, LOCK_ACQUIRED, LOCK_HELD, LOCK_MTIME, NO_LOCK, NOW, OWNER, UNLOCKED};
use super::q;
use crate::ssh::quote::QuoteError;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub token: String,
    pub user: String,
    pub machine: String,
    pub pid: u32,
    pub started_at: u64,
    pub command: String,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub ci_url: Option<String>,
    /// A lock taken by hand (`shipit lock --message`): why deploys are held. Such a
    /// lock is never stale; `shipit unlock` lifts it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl Owner {
    pub fn here(command: &str, version: Option<&str>) -> Owner {
        let user = crate::ssh::ssh_config::Local::from_env().user;
        Owner {
            token: token(),
            user,
            machine: machine(),
            pid: std::process::id(),
            started_at: super::layout::now(),
            command: command.to_owned(),
            version: version.map(str::to_owned),
            ci_url: ci_url(),
            message: None,
        }
    }

    /// `alice@laptop (pid 4242), `shipit deploy` v1.2, since 2026-11-22T05:12:33Z (3m ago)`
    pub fn describe(&self, now: u64) -> String {
        if let Some(m) = &self.message {
            return format!(
                "held by hand by {}@{} since {} ({} ago): \"{m}\" (`shipit unlock` lifts it)",
                self.user,
                self.machine,
                super::layout::iso8601(self.started_at),
                age(now.saturating_sub(self.started_at))
            );
        }
        let mut s = format!(
            "{}@{} (pid {}) running `{}`",
            self.user, self.machine, self.pid, self.command
        );
        if let Some(v) = &self.version {
            s.push_str(&format!(" of {v}"));
        }
        s.push_str(&format!(
            ", since {} ({} ago)",
            super::layout::iso8601(self.started_at),
            age(now.saturating_sub(self.started_at))
        ));
        if let Some(url) = &self.ci_url {
            s.push_str(&format!(", CI run {url}"));
        }
        s
    }

    /// Held by a process of this machine that is gone.
    pub fn is_stale_here(&self) -> bool {
        self.message.is_none()
            && self.machine == machine()
            && !std::path::Path::new(&format!("/proc/{}", self.pid)).exists()
    }
}

pub fn age(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

fn token() -> String {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .is_ok();
    if !ok {
        // Not secret, only unique: time and pid will do.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        bytes[..16].copy_from_slice(&(t ^ u128::from(std::process::id())).to_le_bytes());
    }
    hex::encode(bytes)
}

fn machine() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}

/// The CI run that holds the lock, when one is in the environment.
fn ci_url() -> Option<String> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    if let (Some(server), Some(repo), Some(run)) = (
        var("GITHUB_SERVER_URL"),
        var("GITHUB_REPOSITORY"),
        var("GITHUB_RUN_ID"),
    ) {
        return Some(format!("{server}/{repo}/actions/runs/{run}"));
    }
    [
        "CI_JOB_URL",
        "BUILD_URL",
        "CIRCLE_BUILD_URL",
        "BUILDKITE_BUILD_URL",
    ]
    .iter()
    .find_map(|k| var(k))
}

/// Shell that reports a held lock: `LOCK_HELD`, `OWNER <json>` (empty when the owner
/// file is missing), `LOCK_MTIME <secs>`, and the host's clock (`NOW`), which the lock's
/// age is counted by. `survey::parse_survey` reads it.
fn held_report() -> String {
    format!(
        "echo '{LOCK_HELD}'\nprintf '{NOW} %s\\n' \"$(date +%s)\"\n\
         # A lock just taken may not have its owner file yet: give it a second.\n\
         n=0; while [ ! -s {LOCK}/owner.json ] && [ -d {LOCK} ] && [ $n -lt 10 ]; \
         do sleep 0.1; n=$((n+1)); done\n\
         printf '{OWNER} %s\\n' \"$(tr -d '\\n' < {LOCK}/owner.json 2>/dev/null)\"\n\
         printf '{LOCK_MTIME} %s\\n' \"$(stat -c %Y {LOCK} 2>/dev/null)\"\n"
    )
}

/// Shell that reports the lock if there is one, taking nothing (for `status`).
pub fn report() -> String {
    format!("if [ -d {LOCK} ]; then\n{}fi\n", held_report())
}

/// Shell that tries to take the lock (in the current directory, `deploy_to`) and prints
/// `LOCK_ACQUIRED`, or `LOCK_HELD` with `OWNER <json>` and `LOCK_MTIME <secs>`.
/// When `break_token` is given, a lock whose owner has that token is removed first.
pub fn acquire(owner: &Owner, break_token: Option<&str>) -> Result<String, QuoteError> {
    let json = serde_json::to_string(owner).unwrap_or_default();
    let mut s = String::new();
    if let Some(t) = break_token {
        s.push_str(&format!(
            "o=\n{{ read -r o < {LOCK}/owner.json; }} 2>/dev/null\n\
             case \"$o\" in *{}*) rm -rf -- {LOCK} ;; esac\n",
            q(&format!("\"token\":\"{t}\""))?
        ));
    }
    s.push_str(&format!(
        r#"if mkdir {LOCK} 2>/dev/null; then
  printf '%s\n' {json} > {LOCK}/owner.json
  echo '{LOCK_ACQUIRED}'
else
{held}fi
"#,
        json = q(&json)?,
        held = held_report()
    ));
    Ok(s)
}

/// Shell that removes the lock if (and only if) `token` holds it.
pub fn release(token: &str) -> Result<String, QuoteError> {
    Ok(format!(
        "o=\n{{ read -r o < {LOCK}/owner.json; }} 2>/dev/null\n\
         case \"$o\" in *{}*) rm -rf -- {LOCK} ;; esac\n",
        q(&format!("\"token\":\"{token}\""))?
    ))
}

/// Shell that removes the lock whoever holds it, printing the owner first (as
/// `held_report` does), then `UNLOCKED`, or `NO_LOCK` when there was none.
pub fn force_release() -> String {
    format!(
        "if [ -d {LOCK} ]; then\n{}rm -rf -- {LOCK} && echo '{UNLOCKED}'\n\
         else echo '{NO_LOCK}'; fi\n",
        held_report()
    )
}

/// Whether a `force_release` script removed a lock (`UNLOCKED`).
pub fn unlocked(stdout: &str) -> bool {
    markers::has(stdout, UNLOCKED)
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    fn sh(dir: &std::path::Path, script: &str) -> String {
        let out = Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(dir)
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn only_one_taker_and_only_the_owner_releases() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(".shipit")).unwrap();
        let a = Owner::here("shipit deploy", Some("v1"));
        let b = Owner::here("shipit deploy", Some("v2"));
        assert!(sh(dir.path(), &acquire(&a, None).unwrap()).contains("@@lock acquired"));
        let held = sh(dir.path(), &acquire(&b, None).unwrap());
        assert!(held.contains("@@lock held"));
        let owner_line = held
            .lines()
            .find_map(|l| l.strip_prefix("@@owner "))
            .unwrap();
        let owner: Owner = serde_json::from_str(owner_line).unwrap();
        assert_eq!(owner, a);
        // b cannot release a's lock; a can.
        sh(dir.path(), &release(&b.token).unwrap());
        assert!(dir.path().join(LOCK).exists());
        sh(dir.path(), &release(&a.token).unwrap());
        assert!(!dir.path().join(LOCK).exists());
    }

    #[test]
    fn a_stale_lock_is_broken_only_by_its_token() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(".shipit")).unwrap();
        let dead = Owner {
            pid: u32::MAX,
            ..Owner::here("shipit deploy", None)
        };
        assert!(dead.is_stale_here());
        sh(dir.path(), &acquire(&dead, None).unwrap());
        let me = Owner::here("shipit deploy", None);
        assert!(
            sh(dir.path(), &acquire(&me, Some("not-the-token")).unwrap()).contains("@@lock held")
        );
        assert!(
            sh(dir.path(), &acquire(&me, Some(&dead.token)).unwrap()).contains("@@lock acquired")
        );
    }

    #[test]
    fn descriptions_and_ages() {
        let o = Owner {
            token: "t".into(),
            user: "ann".into(),
            machine: "lap".into(),
            pid: 7,
            started_at: 1_700_000_000,
            command: "shipit deploy".into(),
            version: Some("v2".into()),
            ci_url: None,
            message: None,
        };
        assert_eq!(
            o.describe(1_700_000_190),
            "ann@lap (pid 7) running `shipit deploy` of v2, since 2023-11-14T22:13:20Z (3m ago)"
        );
        assert_eq!(age(59), "59s");
        assert_eq!(age(7200), "2h");
        assert_eq!(age(200_000), "2d");
    }

    fn owner() -> Owner {
        Owner {
            token: "00112233445566778899aabbccddeeff".into(),
            user: "ann".into(),
            machine: "laptop".into(),
            pid: 4242,
            started_at: 1_700_000_000,
            command: "shipit deploy".into(),
            version: Some("v1.2.0".into()),
            ci_url: Some("https://ci.example/runs/7".into()),
            message: None,
        }
    }

    #[test]
    fn snapshots() {
        insta::assert_snapshot!("lock_acquire", acquire(&owner(), None).unwrap());
        insta::assert_snapshot!(
            "lock_acquire_breaking",
            acquire(&owner(), Some("ffeeddccbbaa99887766554433221100")).unwrap()
        );
        insta::assert_snapshot!("lock_release", release(&owner().token).unwrap());
        insta::assert_snapshot!("lock_force_release", force_release());
        insta::assert_snapshot!("lock_report", report());
    }

    #[test]
    fn force_release_says_whether_there_was_a_lock() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(".shipit")).unwrap();
        let none = sh(dir.path(), &force_release());
        assert!(!unlocked(&none) && markers::has(&none, NO_LOCK), "{none}");
        sh(dir.path(), &acquire(&owner(), None).unwrap());
        let removed = sh(dir.path(), &force_release());
        assert!(unlocked(&removed), "{removed}");
        assert!(!dir.path().join(LOCK).exists());
    }
}
