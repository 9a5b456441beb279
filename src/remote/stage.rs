//! The stage script: the release's files made in `releases/.tmp-<id>` (see
//! `unpack.rs`), shared paths linked, `.env` written, the release recorded as
//! staged and renamed into place, then its `before_switch` hooks run in it. Nothing that
//! serves traffic changes.

pub use super::unpack::{DeltaSource, Source};
use std::collections::BTreeMap;

use super::layout::UNIT_COPY;
use super::layout::{RELEASE_JSON, RELEASES, SHARED, STAGING_PREFIX};
use super::markers::{self, DELTA_MISMATCH, STAGED, STEP};
use super::{SH_FROM_ENV, hook_text, q, unpack};
use crate::redact::{REDACTED, Text};
use crate::ssh::quote::QuoteError;

/// `.env`: one `KEY='value'` line per variable, readable by systemd's `EnvironmentFile=`
/// and by `sh` (hooks source it). Values with a `'` or a newline are double-quoted with
/// `\`, `"`, `$` and `` ` `` escaped, which both read the same way.
pub fn env_file(env: &BTreeMap<String, Text>, redact: bool) -> String {
    let mut out = String::new();
    for (k, v) in env {
        let value = if redact && v.is_secret() {
            REDACTED
        } else {
            v.expose()
        };
        if value.contains(['\'', '\n']) {
            let escaped: String = value
                .chars()
                .flat_map(|c| match c {
                    '\\' | '"' | '$' | '`' => vec!['\\', c],
                    c => vec![c],
                })
                .collect();
            out.push_str(&format!("{k}=\"{escaped}\"\n"));
        } else {
            out.push_str(&format!("{k}='{value}'\n"));
        }
    }
    out
}

pub struct Stage<'a> {
    pub id: &'a str,
    pub sha256: &'a str,
    pub source: Source<'a>,
    pub shared_dirs: &'a [String],
    pub shared_files: &'a [String],
    pub env: &'a str,
    pub staged_json: &'a str,
    pub failed_json: &'a str,
    pub before_switch: &'a [Text],
    /// Show secrets as `[redacted]` (for `--dry-run`).
    pub redact: bool,
    /// Write the release's `.shipit/verified` (`delta: hardlink`).
    pub record: bool,
    /// The unit file this release runs with, kept in the release (`.shipit/unit`) so that
    /// going back to it (a revert, a rollback) installs its own unit again.
    pub unit: Option<&'a str>,
}

pub fn stage(p: &Stage) -> Result<String, QuoteError> {
    let id = q(p.id)?;
    let mut s = format!("id={id}\ntmp={RELEASES}/{STAGING_PREFIX}$id\nrel={RELEASES}/$id\n");
    s.push_str(&format!(
        "fail_release() {{ printf '%s\\n' {} > \"$rel/{RELEASE_JSON}\" 2>/dev/null; }}\n",
        q(p.failed_json)?
    ));
    s.push_str(&unpack::unpack(p.id, p.sha256, p.source, p.record)?);
    s.push_str(&format!("printf '{STEP} link\\n'\n"));
    for dir in p.shared_dirs {
        let d = q(dir)?;
        s.push_str(&format!(
            "mkdir -p -- {SHARED}/{d} && rm -rf -- \"$tmp\"/{d} && \
             mkdir -p -- \"$(dirname -- \"$tmp\"/{d})\" && \
             ln -s -- \"$D/{SHARED}\"/{d} \"$tmp\"/{d} || {{ rm -rf -- \"$tmp\"; exit 1; }}\n"
        ));
    }
    for file in p.shared_files {
        let f = q(file)?;
        s.push_str(&format!(
            "[ -e {SHARED}/{f} ] || {{ echo \"shared file $D/{SHARED}/\"{f}\" is missing \
             on this host: create it before deploying\" >&2; rm -rf -- \"$tmp\"; exit 1; }}\n"
        ));
        s.push_str(&format!(
            "rm -rf -- \"$tmp\"/{f} && mkdir -p -- \"$(dirname -- \"$tmp\"/{f})\" && \
             ln -s -- \"$D/{SHARED}\"/{f} \"$tmp\"/{f} || {{ rm -rf -- \"$tmp\"; exit 1; }}\n"
        ));
    }
    s.push_str(&format!("printf '{STEP} env\\n'\n"));
    s.push_str(&format!(
        "( umask 077 && printf '%s' {} > \"$tmp/.env\" ) && \
         {{ [ ! -L \"$tmp/.env\" ] || chmod 600 \"$tmp/.env\"; }} || \
         {{ rm -rf -- \"$tmp\"; exit 1; }}\n",
        q(p.env)?
    ));
    let unit = match p.unit {
        Some(u) => format!("printf '%s' {} > \"$tmp/{UNIT_COPY}\" && ", q(u)?),
        None => String::new(),
    };
    s.push_str(&format!(
        "dotdir && printf '%s\\n' {} > \"$tmp/{RELEASE_JSON}\" && {unit}\
         mv -T -- \"$tmp\" \"$rel\" || {{ rm -rf -- \"$tmp\"; exit 1; }}\n",
        q(p.staged_json)?
    ));
    s.push_str("cd -- \"$rel\" || exit 1\n");
    s.push_str(&hooks(
        "before_switch",
        p.before_switch,
        p.redact,
        "cd -- \"$D\"; fail_release",
    )?);
    s.push_str(&format!("echo '{STAGED}'\n"));
    Ok(s)
}

/// The `once: true` `before_switch` hooks, in staged release `id` (one host runs them,
/// after every host staged and before any switches).
pub fn once(id: &str, hooks_: &[Text], redact: bool) -> Result<String, QuoteError> {
    let mut s = format!("cd -- {RELEASES}/{} || exit 1\n", q(id)?);
    s.push_str(&hooks("once", hooks_, redact, ":")?);
    Ok(s)
}

/// Runs each hook in `dir` with the release's .env loaded; a failing hook runs `on_fail`
/// and exits 1 after naming itself.
pub(super) fn hooks(
    kind: &str,
    hooks: &[Text],
    redact: bool,
    on_fail: &str,
) -> Result<String, QuoteError> {
    let mut s = String::new();
    for (i, hook) in hooks.iter().enumerate() {
        let n = i + 1;
        s.push_str(&format!("printf '{STEP} {kind}:{n}\\n'\n"));
        s.push_str(&format!(
            "( set -a && . ./.env && set +a && SHIPIT_CMD={} && export SHIPIT_CMD && \
             exec {SH_FROM_ENV} ) </dev/null || {{ rc=$?; {on_fail}; \
             echo \"{kind} hook {n} failed with exit status $rc\" >&2; exit 1; }}\n",
            q(hook_text(hook, redact))?
        ));
    }
    Ok(s)
}

/// Why the host turned a delta down (`DELTA_MISMATCH`), when it did: the release was
/// discarded and the whole artifact is to follow.
pub fn delta_mismatch(stdout: &str) -> Option<String> {
    markers::values(stdout, DELTA_MISMATCH)
        .next()
        .map(|why| why.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::fixtures::{ID, OLDER, SHA, env, hooks, json};
    use crate::remote::release::State;

    #[test]
    fn env_files_read_back_identically_in_sh() {
        let mut env = BTreeMap::new();
        for (k, v) in [
            ("A", "plain"),
            ("B", "it's"),
            ("C", "$(touch /tmp/x) `id` \\ \" $HOME"),
            ("D", "two\nlines"),
            ("E", ""),
        ] {
            env.insert(k.to_owned(), Text::plain(v));
        }
        let file = env_file(&env, false);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".env"), &file).unwrap();
        for (k, v) in &env {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("set -a; . ./.env; printf '%s' \"${k}\""))
                .current_dir(dir.path())
                .output()
                .unwrap();
            assert_eq!(
                String::from_utf8(out.stdout).unwrap(),
                v.expose(),
                "{k} in\n{file}"
            );
        }
    }

    #[test]
    fn a_delta_mismatch_is_the_first_marker_line() {
        let out = "@@step verify\n@@delta-mismatch release x is gone \n@@delta-mismatch later\n";
        assert_eq!(delta_mismatch(out).as_deref(), Some("release x is gone"));
        assert_eq!(delta_mismatch("@@step unpack\n@@staged\n"), None);
        assert_eq!(delta_mismatch("tar: @@delta-mismatch no\n"), None);
    }

    // Snapshots: the whole text of every variant of the stage script.

    fn delta_source(link: bool) -> DeltaSource<'static> {
        DeltaSource {
            base: OLDER,
            link,
            reuse_len: 1234,
            tree_sha256: "7ee0000000000000000000000000000000000000000000000000000000000001",
            content_sha256: "c0de000000000000000000000000000000000000000000000000000000000002",
        }
    }

    fn plain_stage(source: Source, record: bool) -> String {
        stage(&Stage {
            id: ID,
            sha256: SHA,
            source,
            shared_dirs: &[],
            shared_files: &[],
            env: "PORT='8080'\n",
            staged_json: &json(State::Staged),
            failed_json: &json(State::Failed),
            before_switch: &[],
            redact: false,
            record,
            unit: None,
        })
        .unwrap()
    }

    fn full_stage(redact: bool) -> String {
        stage(&Stage {
            id: ID,
            sha256: SHA,
            source: Source::Cached,
            shared_dirs: &["log".into(), "tmp/cache dir".into()],
            shared_files: &["config/database.yml".into()],
            env: &env_file(&env(), redact),
            staged_json: &json(State::Staged),
            failed_json: &json(State::Failed),
            before_switch: &hooks(),
            redact,
            record: false,
            unit: Some(crate::remote::fixtures::UNIT),
        })
        .unwrap()
    }

    #[test]
    fn snapshots() {
        let full = Source::Full {
            cksum: "3735928559 75000000",
        };
        insta::assert_snapshot!("stage_full", plain_stage(full, false));
        insta::assert_snapshot!("stage_full_recorded", plain_stage(full, true));
        insta::assert_snapshot!(
            "stage_delta_copy",
            plain_stage(Source::Delta(delta_source(false)), false)
        );
        insta::assert_snapshot!(
            "stage_delta_hardlink",
            plain_stage(Source::Delta(delta_source(true)), true)
        );
        insta::assert_snapshot!("stage_cached", plain_stage(Source::Cached, false));
        insta::assert_snapshot!("stage_cached_recorded", plain_stage(Source::Cached, true));
        insta::assert_snapshot!("stage_shared_env_hooks", full_stage(false));
        insta::assert_snapshot!("stage_shared_env_hooks_redacted", full_stage(true));
    }

    #[test]
    fn env_file_snapshots() {
        insta::assert_snapshot!("env_file", env_file(&env(), false));
        insta::assert_snapshot!("env_file_redacted", env_file(&env(), true));
    }
}
