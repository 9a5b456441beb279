//! The scripts of a deploy and a rollback, one per phase, each one round trip:
//!
//! - `survey`: the host's state (current release, every release and its state, whether
//!   the artifact is cached), optionally after taking the lock;
//! - the upload command (artifact bytes in, verified by sha256 on the host);
//! - `stage`: unpack into `releases/.tmp-<id>`, link shared paths, write `.env`, record
//!   the release as staged, rename it into place, run `before_switch`;
//! - `activate`: switch `current` atomically, install the unit file if it changed,
//!   restart or reload;
//! - `finish`: `after_switch` (or `after_rollback`), final states, history line, cleanup,
//!   unlock.
//!
//! Lines starting with `@@` are the scripts' answers to shipit; everything else is
//! output of hooks and tools, shown to the user.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::layout::{
    self, ARTIFACTS, CURRENT, HISTORY, RELEASE_JSON, RELEASES, SHARED, STAGING_PREFIX, VERIFIED,
};
use super::{SH_FROM_ENV, q};
use crate::artifact::delta::{self, VERIFIED_LINE};
use crate::config::{RestartMode, ServiceManager};
use crate::redact::{REDACTED, Text};
use crate::ssh::quote::QuoteError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Unpacked and linked; not (yet) serving. Never a rollback target.
    Staged,
    /// Switched to and healthy: a rollback target once something newer is current.
    Live,
    /// Failed staging, a hook, or its health check. Removed first by cleanup.
    Failed,
    /// Left by `shipit rollback`; not a target of the next rollback.
    RolledBack,
}

/// `releases/<id>/.shipit/release.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseInfo {
    pub id: String,
    pub app: String,
    pub version: String,
    pub commit: Option<String>,
    pub artifact_sha256: String,
    pub state: State,
    pub created_at: u64,
    pub deployed_by: String,
    /// sha256 of what the config adds to the artifact (.env, unit file, shared paths,
    /// hooks): a deploy is a no-op only when this matches too.
    #[serde(default)]
    pub config_sha256: Option<String>,
}

/// A release found on a host. `info` is `None` when release.json is missing or
/// unreadable: a release shipit did not finish making.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub id: String,
    pub info: Option<ReleaseInfo>,
}

impl Found {
    pub fn state(&self) -> Option<State> {
        self.info.as_ref().map(|i| i.state)
    }
}

/// What `survey` learned about a host.
#[derive(Debug, Clone, Default)]
pub struct Survey {
    /// The host's clock, when a held lock was reported (0 otherwise).
    pub now: u64,
    pub lock: Option<LockAnswer>,
    /// The release `current` points to (its id), if any.
    pub current: Option<String>,
    pub cached: bool,
    /// The survey found the live release already has this artifact and config, and gave
    /// the lock back.
    pub unchanged: bool,
    /// Sorted oldest first.
    pub releases: Vec<Found>,
    /// Leftover `releases/.tmp-*` dirs of deploys that were killed.
    pub staging: Vec<String>,
    /// The live release's `.shipit/manifest.json` (one line of JSON), when the survey
    /// asked for it (delta deploys), the artifact is not cached, and the host has
    /// `find` and `xargs` for assembling a delta.
    pub base_manifest: Option<String>,
    /// The live release has its record of verified files (`.shipit/verified`): made with
    /// `delta: hardlink`, so a hard-linked delta can start from it.
    pub base_verified: bool,
}

#[derive(Debug, Clone)]
pub enum LockAnswer {
    Acquired,
    Held {
        owner: Option<super::lock::Owner>,
        since: Option<u64>,
    },
}

impl Survey {
    pub fn current_release(&self) -> Option<&Found> {
        let id = self.current.as_deref()?;
        self.releases.iter().find(|r| r.id == id)
    }

    /// The newest live release older than `current`: where a rollback goes.
    pub fn rollback_target(&self) -> Option<&Found> {
        let current = self.current.as_deref()?;
        self.releases
            .iter()
            .rev()
            .filter(|r| r.id.as_str() < current)
            .find(|r| r.state() == Some(State::Live))
    }
}

/// What a deploy asks the survey about its artifact.
#[derive(Debug, Clone, Copy)]
pub struct Wanted<'a> {
    pub sha256: &'a str,
    /// What `cksum` prints for the artifact: `<crc> <size>`.
    pub cksum: &'a str,
    /// Whether to send the live release's manifest (for a delta) when not cached.
    pub manifest: bool,
    /// For a deploy that is not forced: the config digest, and the lock token to give
    /// back at once when the live release already has this artifact and config
    /// (`@@unchanged`), so a no-op deploy costs one round trip.
    pub unchanged: Option<(&'a str, &'a str)>,
}

/// The survey, in `deploy_to`. With `wanted`, also whether that artifact is cached
/// whole (its `cksum` matches: cheap, where `sha256sum` of a 75 MB file costs 0.2 s of
/// CPU), and the live release's manifest when asked and not cached.
pub fn survey(wanted: Option<&Wanted>) -> Result<String, QuoteError> {
    // Each process start costs ~0.5 ms of CPU on the test VMs, times every host: the
    // survey starts only the ones it needs (the host's clock comes with a held lock's
    // report, the only place it is used).
    let mut s = format!("r=$(readlink {CURRENT} 2>/dev/null)\nprintf '@@current %s\\n' \"$r\"\n");
    if let Some(w) = wanted {
        // The no-op check comes first: a host that already runs this artifact and config
        // needs nothing else, not even the cached artifact's cksum (75 MB read).
        s.push_str("u=\n");
        if let Some((config_sha256, token)) = w.unchanged {
            // release.json is compact JSON with artifact_sha256, state, config_sha256 in
            // this order. Only a `live` release counts: one a killed deploy switched to but
            // never health-checked (`staged`) is deployed again.
            let pattern = format!(
                "*{}*{}*{}*",
                q(&format!("\"artifact_sha256\":\"{}\"", w.sha256))?,
                q("\"state\":\"live\"")?,
                q(&format!("\"config_sha256\":\"{config_sha256}\""))?
            );
            s.push_str(&format!(
                "j=\n[ -n \"$r\" ] && {{ read -r j < \"$r/{RELEASE_JSON}\"; }} 2>/dev/null\ncase \"$j\" in {pattern}) [ -n \"$r\" ] && {{ u=1; echo '@@unchanged'; {} }} ;; esac\n",
                super::lock::release(token)?.trim_end()
            ));
        }
        s.push_str(&format!(
            "f={ARTIFACTS}/{}.tar.gz\nc=no\nif [ -z \"$u\" ] && [ -f \"$f\" ] && [ \"$(cksum < \"$f\")\" = {} ]; then c=yes; fi\necho \"@@cached $c\"\n",
            q(w.sha256)?,
            q(w.cksum)?
        ));
        if w.manifest {
            s.push_str(&format!(
                "m=\"$r/{MANIFEST}\"\nif [ -z \"$u\" ] && [ $c = no ] && [ -n \"$r\" ] && [ -f \"$m\" ] && command -v find >/dev/null 2>&1 && command -v xargs >/dev/null 2>&1; then printf '@@manifest '; tr -d '\\n' < \"$m\"; echo; [ -f \"$r/{VERIFIED}\" ] && echo '@@verified'; fi\n",
                MANIFEST = crate::artifact::manifest::PATH
            ));
        }
    }
    s.push_str(&format!(
        r#"for r in {RELEASES}/* {RELEASES}/.tmp-*; do
  [ -d "$r" ] || continue
  n=${{r#{RELEASES}/}}
  case $n in {STAGING_PREFIX}*) printf '@@staging %s\n' "$n"; continue ;; esac
  printf '@@release %s ' "$n"
  # One line, as shipit writes it: read by the shell (no process); else joined by `tr`.
  if {{ IFS= read -r j && ! IFS= read -r x; }} 2>/dev/null < "$r/{RELEASE_JSON}"; then printf '%s\n' "$j"; else tr -d '\n' 2>/dev/null < "$r/{RELEASE_JSON}"; echo; fi
done
"#
    ));
    Ok(s)
}

pub fn parse_survey(stdout: &str) -> Survey {
    let mut s = Survey::default();
    let mut lock_mtime = None;
    let mut held = false;
    let mut owner = None;
    for line in stdout.lines() {
        let Some(rest) = line.strip_prefix("@@") else {
            continue;
        };
        let (key, value) = rest.split_once(' ').unwrap_or((rest, ""));
        match key {
            "now" => s.now = value.parse().unwrap_or(0),
            "current" => {
                let id = value.strip_prefix("releases/").unwrap_or(value);
                s.current = (!id.is_empty()).then(|| id.to_owned());
            }
            "cached" => s.cached = value == "yes",
            "unchanged" => s.unchanged = true,
            "manifest" => s.base_manifest = Some(value.to_owned()),
            "verified" => s.base_verified = true,
            "release" => {
                let (id, json) = value.split_once(' ').unwrap_or((value, ""));
                if layout::is_release_id(id) {
                    s.releases.push(Found {
                        id: id.to_owned(),
                        info: serde_json::from_str(json).ok(),
                    });
                }
            }
            "staging" => s.staging.push(value.to_owned()),
            "lock" => {
                if value == "acquired" {
                    s.lock = Some(LockAnswer::Acquired);
                } else {
                    held = true;
                }
            }
            "owner" => owner = serde_json::from_str(value).ok(),
            "lock_mtime" => lock_mtime = value.parse().ok(),
            _ => {}
        }
    }
    if held {
        s.lock = Some(LockAnswer::Held {
            since: owner
                .as_ref()
                .map(|o: &super::lock::Owner| o.started_at)
                .or(lock_mtime),
            owner,
        });
    }
    s.releases.sort_by(|a, b| a.id.cmp(&b.id));
    s
}

/// `cd` into deploy_to, creating the layout when `create`.
pub fn enter(deploy_to: &str, create: bool) -> Result<String, QuoteError> {
    let d = q(deploy_to)?;
    Ok(if create {
        format!(
            "D={d}\n{{ [ -d \"$D/{RELEASES}\" ] && [ -d \"$D/{SHARED}\" ] && [ -d \"$D/{ARTIFACTS}\" ] || mkdir -p -- \"$D/{RELEASES}\" \"$D/{SHARED}\" \"$D/{ARTIFACTS}\"; }} && cd -- \"$D\" || exit 20\n"
        )
    } else {
        format!("D={d}\ncd -- \"$D\" 2>/dev/null || {{ echo '@@missing'; exit 0; }}\n")
    })
}

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

/// Where the files of a new release come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source<'a> {
    /// The artifact is cached on the host: unpack it from there. No data on stdin.
    Cached,
    /// The artifact follows on stdin: cached and unpacked as it arrives (`gzip -dc`
    /// checks the whole stream's CRC), then kept only if its `cksum` (`<crc> <size>`)
    /// matches what was sent.
    Full { cksum: &'a str },
    /// A delta follows on stdin (see [`crate::artifact::delta`]).
    Delta(DeltaSource<'a>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeltaSource<'a> {
    /// The live release whose files are reused.
    pub base: &'a str,
    /// Hard links instead of copies.
    pub link: bool,
    /// Size of the gzipped list of files to reuse, first on stdin; the archive follows.
    pub reuse_len: u64,
    pub tree_sha256: &'a str,
    pub content_sha256: &'a str,
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
}

fn hook_text(hook: &Text, redact: bool) -> &str {
    if redact && hook.is_secret() {
        REDACTED
    } else {
        hook.expose()
    }
}

/// Runs each hook in `dir` with the release's .env loaded; a failing hook runs `on_fail`
/// and exits 1 after naming itself.
fn hooks(kind: &str, hooks: &[Text], redact: bool, on_fail: &str) -> Result<String, QuoteError> {
    let mut s = String::new();
    for (i, hook) in hooks.iter().enumerate() {
        let n = i + 1;
        s.push_str(&format!("printf '@@step {kind}:{n}\\n'\n"));
        s.push_str(&format!(
            "( set -a && . ./.env && set +a && SHIPIT_CMD={} && export SHIPIT_CMD && exec {SH_FROM_ENV} ) </dev/null || {{ rc=$?; {on_fail}; echo \"{kind} hook {n} failed with exit status $rc\" >&2; exit 1; }}\n",
            q(hook_text(hook, redact))?
        ));
    }
    Ok(s)
}

/// Unpacks the tar.gz on stdin (into `$tmp` unless the arguments say otherwise); fails if
/// gzip or tar fails. `gzip -dc | tar -x` rather than `tar -xz`: with `-z` on a stream,
/// GNU tar forks a helper that copies the archive into gzip in 10 KiB records, an extra
/// process and copy that cost 0.13 s (about a quarter of the unpack) for the benchmark's
/// 75 MB artifact. gzip's status comes back on fd 3 (`sh` has no pipefail).
const UNTAR_FN: &str = "untar() { st=$( { { gzip -dc 3>&-; echo $? >&3; } | tar -xf - --no-same-owner --delay-directory-restore -p \"$@\" >&2 3>&-; } 3>&1 ) && [ \"$st\" = 0 ]; }\n";

/// Make `$tmp` hold exactly what a full unpack of the artifact gives. With `record`
/// (`delta: hardlink`), also write its `.shipit/verified`.
fn unpack(id: &str, sha256: &str, source: Source, record: bool) -> Result<String, QuoteError> {
    let sha = q(sha256)?;
    // A failed unpack says so, and says when the disk is full (GNU tar's own words for a
    // short write are only `Wrote only 4096 of 10240 bytes`); checked before the partial
    // release is removed, which frees the space again.
    // `fresh` makes empty dirs, removing leftovers of a killed run first (and only then:
    // each process start counts, at 20 hosts per 2 cores); `dotdir` makes `$tmp/.shipit`
    // when the artifact has none; `mismatch` turns a delta down, which is not fatal: the
    // release is discarded and the client sends the whole artifact (`@@delta-mismatch`).
    let mut s = String::from(
        "roomy() { set -- $(df -k --output=avail . 2>/dev/null); [ \"$2\" -ge 1024 ] 2>/dev/null; }\n\
         unpack_failed() { roomy || echo \"No space left on device in $D: the release does not fit on this host\" >&2; rm -rf -- \"$tmp\" \"$@\"; echo \"unpacking the $what failed\" >&2; exit 1; }\n\
         fresh() { for x; do if [ -e \"$x\" ] || [ -L \"$x\" ]; then rm -rf -- \"$x\" || return 1; fi; done; mkdir -- \"$@\"; }\n\
         dotdir() { [ -d \"$tmp/.shipit\" ] || mkdir -- \"$tmp/.shipit\"; }\n\
         mismatch() { rm -rf -- \"$tmp\" \"$W\"; printf '@@delta-mismatch %s\\n' \"$(printf '%s' \"$1\" | tr '\\n' ' ' | cut -c1-300)\"; exit 0; }\n",
    );
    s.push_str(UNTAR_FN);
    if !matches!(source, Source::Delta(d) if d.link) {
        s.push_str("fresh \"$tmp\" || { rm -rf -- \"$tmp\"; exit 1; }\n");
    }
    // The record of a release unpacked whole: its files, as they are now.
    let record_now = format!(
        "dotdir && ( cd -- \"$tmp\" && find . -type f ! -path ./{VERIFIED} -printf '{VERIFIED_LINE}' ) | LC_ALL=C sort > \"$tmp/{VERIFIED}\" || {{ rm -rf -- \"$tmp\"; exit 1; }}\n"
    );
    match source {
        Source::Cached => {
            s.push_str("printf '@@step unpack\\n'\n");
            s.push_str(&format!(
                "what=artifact\nuntar -C \"$tmp\" < {ARTIFACTS}/{sha}.tar.gz || unpack_failed\n"
            ));
            if record {
                s.push_str(&record_now);
            }
        }
        Source::Full { cksum } => {
            // Unpacked while it arrives; the release counts only once the whole archive
            // unpacked (gzip's CRC checked), the cached copy only once it is all there.
            s.push_str("printf '@@step upload\\n'\n");
            s.push_str(&format!(
                "f={ARTIFACTS}/{sha}.tar.gz\nt=\"$f.part.$$\"\n\
                 what=artifact\n\
                 {{ tee -- \"$t\" || :; }} | untar -C \"$tmp\" || unpack_failed \"$t\"\n\
                 if [ \"$(cksum < \"$t\")\" = {} ]; then mv -f -- \"$t\" \"$f\"; else rm -rf -- \"$t\" \"$tmp\"; echo 'the uploaded artifact is not what was sent (truncated, or the disk is full?)' >&2; exit 1; fi\n",
                q(cksum)?
            ));
            if record {
                s.push_str(&record_now);
            }
        }
        Source::Delta(d) if d.link => s.push_str(&linked_delta(id, d)?),
        Source::Delta(d) => {
            let base = q(d.base)?;
            s.push_str(&format!(
                "W=\"$tmp.delta\"\n\
                 fresh \"$W\" || {{ rm -rf -- \"$tmp\" \"$W\"; exit 1; }}\n\
                 printf '@@step upload\\n'\n\
                 head -c {reuse} > \"$W/reuse.gz\" || {{ rm -rf -- \"$tmp\" \"$W\"; exit 1; }}\n\
                 printf '@@step reuse\\n'\n\
                 [ -d {RELEASES}/{base} ] || mismatch \"release \"{base}\" is gone\"\n\
                 e=$(gzip -dc -- \"$W/reuse.gz\" | ( cd -- {RELEASES}/{base} && xargs -0 -r cp -p --reflink=auto --parents -t \"$D/$tmp\" -- ) 2>&1) || mismatch \"taking the unchanged files from \"{base}\" failed: $e\"\n\
                 printf '@@step unpack\\n'\n\
                 what=delta\n\
                 untar -C \"$tmp\" || unpack_failed \"$W\"\n\
                 printf '@@step verify\\n'\n\
                 sum=$(cd -- \"$tmp\" && find . -type f -printf '%P\\0' | LC_ALL=C sort -z | xargs -0 -r cksum -- | sha256sum)\n\
                 [ \"${{sum%% *}}\" = {content} ] || mismatch \"file contents differ from the artifact (was a file of release \"{base}\" changed in place?)\"\n\
                 tree=$({listing})\n\
                 [ \"${{tree%% *}}\" = {tree} ] || mismatch 'the file tree (names, types, modes, links) differs from the artifact'\n\
                 rm -rf -- \"$W\"\n",
                reuse = d.reuse_len,
                tree = q(d.tree_sha256)?,
                content = q(d.content_sha256)?,
                listing = delta::tree_digest_command(&format!(
                    "\"$tmp\" -mindepth 1 {}",
                    delta::tree_find(None)
                )),
            ));
        }
    }
    Ok(s)
}

/// `text` as the replacement of a sed `s,,,` expression (tar's `--transform`): `\\`, `&`
/// and the delimiter escaped.
fn transform_text(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if matches!(c, '\\' | '&' | ',') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A `delta: hardlink` delta (see [`crate::artifact::delta`]): one `tar`, run in
/// `releases/`, makes the release, its names mapped from `N/` to the new release and
/// its hard-link targets from `B/` to the live release. Then, before anything else:
/// the tree is what a full unpack gives (names, types, modes, sizes, link targets, and
/// which files are hard links: a file with one link came from the archive, one with more
/// is the live release's); every linked file (and the live release's manifest, which
/// chose them) is still the file recorded in the live release's `.shipit/verified` (same
/// inode, size and mtime: not edited, replaced or touched since it was verified). The
/// files the archive brought are checked as a whole upload is: gzip's CRC over the
/// stream, tar's exit status, and their size in the tree. The same `find` writes the new
/// release's own record.
fn linked_delta(id: &str, d: DeltaSource) -> Result<String, QuoteError> {
    use crate::artifact::delta::{BASE_PREFIX, NEW_PREFIX};
    let new_names = q(&format!(
        "s,^{NEW_PREFIX},{},rSH",
        transform_text(&format!("{STAGING_PREFIX}{id}/"))
    ))?;
    let base_targets = q(&format!(
        "s,^{BASE_PREFIX},{},RSh",
        transform_text(&format!("{}/", d.base))
    ))?;
    let base = q(d.base)?;
    Ok(format!(
        "W=\"$tmp.delta\"\nb={base}\nB=\"{RELEASES}/$b\"\n\
         fresh \"$tmp\" \"$W\" || {{ rm -rf -- \"$tmp\" \"$W\"; exit 1; }}\n\
         printf '@@step upload\\n'\n\
         [ -f \"$B/{VERIFIED}\" ] || mismatch \"release $b is gone, or has no record of its files\"\n\
         what=delta\n\
         untar -C {RELEASES} --transform={new_names} --transform={base_targets} 2>\"$W/err\" || {{ roomy || {{ cat -- \"$W/err\" >&2; unpack_failed \"$W\"; }}; mismatch \"making the release from release $b failed: $(cat -- \"$W/err\")\"; }}\n\
         printf '@@step verify\\n'\n\
         dotdir || {{ rm -rf -- \"$tmp\" \"$W\"; exit 1; }}\n\
         tree=$({listing})\n\
         find \"$B/{MANIFEST}\" -printf '%i %s %T@ {MANIFEST}\\n' >> \"$W/linked\" || mismatch \"release $b has no manifest\"\n\
         x=$( {{ LC_ALL=C sort -- \"$W/linked\" || echo 'the list of linked files is unreadable'; }} | LC_ALL=C comm -23 - \"$B/{VERIFIED}\") && [ -z \"$x\" ] || mismatch \"files of release $b changed since it was made (edited in place?): $(printf '%s' \"$x\" | cut -d ' ' -f 4- | head -n 3)\"\n\
         [ \"${{tree%% *}}\" = {tree} ] || mismatch 'the file tree (names, types, sizes, modes, links) differs from the artifact'\n\
         LC_ALL=C sort -o \"$tmp/{VERIFIED}\" -- \"$tmp/{VERIFIED}\" || {{ rm -rf -- \"$tmp\" \"$W\"; exit 1; }}\n\
         rm -rf -- \"$W\"\n",
        MANIFEST = crate::artifact::manifest::PATH,
        tree = q(d.tree_sha256)?,
        listing = delta::tree_digest_command(&format!(
            "\"$tmp\" -mindepth 1 ! -path \"$tmp/{VERIFIED}\" {} -type f -fprintf \"$tmp/{VERIFIED}\" '{VERIFIED_LINE}'",
            delta::tree_find(Some("\"$W/linked\""))
        )),
    ))
}

pub fn stage(p: &Stage) -> Result<String, QuoteError> {
    let id = q(p.id)?;
    let mut s = format!("id={id}\ntmp={RELEASES}/{STAGING_PREFIX}$id\nrel={RELEASES}/$id\n");
    s.push_str(&format!(
        "fail_release() {{ printf '%s\\n' {} > \"$rel/{RELEASE_JSON}\" 2>/dev/null; }}\n",
        q(p.failed_json)?
    ));
    s.push_str(&unpack(p.id, p.sha256, p.source, p.record)?);
    s.push_str("printf '@@step link\\n'\n");
    for dir in p.shared_dirs {
        let d = q(dir)?;
        s.push_str(&format!(
            "mkdir -p -- {SHARED}/{d} && rm -rf -- \"$tmp\"/{d} && mkdir -p -- \"$(dirname -- \"$tmp\"/{d})\" && ln -s -- \"$D/{SHARED}\"/{d} \"$tmp\"/{d} || {{ rm -rf -- \"$tmp\"; exit 1; }}\n"
        ));
    }
    for file in p.shared_files {
        let f = q(file)?;
        s.push_str(&format!(
            "[ -e {SHARED}/{f} ] || {{ echo \"shared file $D/{SHARED}/\"{f}\" is missing on this host: create it before deploying\" >&2; rm -rf -- \"$tmp\"; exit 1; }}\n"
        ));
        s.push_str(&format!(
            "rm -rf -- \"$tmp\"/{f} && mkdir -p -- \"$(dirname -- \"$tmp\"/{f})\" && ln -s -- \"$D/{SHARED}\"/{f} \"$tmp\"/{f} || {{ rm -rf -- \"$tmp\"; exit 1; }}\n"
        ));
    }
    s.push_str("printf '@@step env\\n'\n");
    s.push_str(&format!(
        "( umask 077 && printf '%s' {} > \"$tmp/.env\" ) && {{ [ ! -L \"$tmp/.env\" ] || chmod 600 \"$tmp/.env\"; }} || {{ rm -rf -- \"$tmp\"; exit 1; }}\n",
        q(p.env)?
    ));
    s.push_str(&format!(
        "dotdir && printf '%s\\n' {} > \"$tmp/{RELEASE_JSON}\" && mv -T -- \"$tmp\" \"$rel\" || {{ rm -rf -- \"$tmp\"; exit 1; }}\n",
        q(p.staged_json)?
    ));
    s.push_str("cd -- \"$rel\" || exit 1\n");
    s.push_str(&hooks(
        "before_switch",
        p.before_switch,
        p.redact,
        "cd -- \"$D\"; fail_release",
    )?);
    s.push_str("echo '@@staged'\n");
    Ok(s)
}

pub struct Activate<'a> {
    pub id: &'a str,
    pub manager: ServiceManager,
    pub service: &'a str,
    pub sudo: bool,
    pub restart: RestartMode,
    /// The unit file's content, installed when it differs from the host's.
    pub unit: Option<&'a str>,
}

/// `systemctl` for the manager, through `sudo -n` when configured.
pub fn systemctl(manager: ServiceManager, sudo: bool) -> Option<&'static str> {
    match (manager, sudo) {
        (ServiceManager::None, _) => None,
        (ServiceManager::SystemdUser, _) => Some("systemctl --user"),
        (ServiceManager::Systemd, true) => Some("sudo -n systemctl"),
        (ServiceManager::Systemd, false) => Some("systemctl"),
    }
}

/// Switch `current` to `releases/<id>`, install the unit if changed, restart.
pub fn activate(a: &Activate) -> Result<String, QuoteError> {
    let id = q(a.id)?;
    // Switch and restart are one unit: a client that dies (kill -9, a cut link) must not
    // stop this script between them at its next write (SIGPIPE), leaving `current` on the
    // new release and the service on the old one.
    let mut s = String::from("trap '' HUP PIPE\n");
    s.push_str(&format!(
        "[ -d {RELEASES}/{id} ] || {{ echo \"release {} is not on this host\" >&2; exit 1; }}\n",
        a.id
    ));
    s.push_str("printf '@@step switch\\n'\n");
    // Never `ln -sfn` alone: that unlinks, then links, leaving a moment without `current`.
    s.push_str(&format!(
        "ln -s -- {RELEASES}/{id} .current.tmp.$$ && mv -T -- .current.tmp.$$ {CURRENT} || {{ rm -f -- .current.tmp.$$; exit 1; }}\necho '@@switched'\n"
    ));
    let Some(ctl) = systemctl(a.manager, a.sudo) else {
        return Ok(s);
    };
    let unit = q(a.service)?;
    if let Some(content) = a.unit {
        let (dir, install) = match (a.manager, a.sudo) {
            (ServiceManager::SystemdUser, _) => {
                ("\"$HOME/.config/systemd/user\"", "install -m 644")
            }
            (_, true) => ("/etc/systemd/system", "sudo -n install -m 644"),
            (_, false) => ("/etc/systemd/system", "install -m 644"),
        };
        let name = if a.service.contains('.') {
            a.service.to_owned()
        } else {
            format!("{}.service", a.service)
        };
        s.push_str("printf '@@step unit\\n'\n");
        s.push_str(&format!(
            "u=$(mktemp) && printf '%s' {} > \"$u\" || exit 1\nif [ \"$(sha256sum < \"$u\")\" != \"$( {{ sha256sum < {dir}/{name}; }} 2>/dev/null)\" ]; then\n  mkdir -p {dir} 2>/dev/null; {install} \"$u\" {dir}/{name} && {ctl} daemon-reload || {{ rm -f \"$u\"; exit 1; }}\n  echo '@@unit installed'\nfi\nrm -f \"$u\"\n",
            q(content)?,
            name = q(&name)?
        ));
    }
    let verb = match a.restart {
        RestartMode::Restart => "restart",
        RestartMode::Reload => "reload",
    };
    s.push_str("printf '@@step restart\\n'\n");
    // A deliberate restart must not be refused by systemd's start limit (5 starts in 10s
    // by default), which a deploy followed by its automatic revert can reach: clear it.
    s.push_str(&format!(
        "{ctl} reset-failed -- {unit} 2>/dev/null\n{ctl} {verb} -- {unit} || exit 1\necho '@@restarted'\n"
    ));
    // The health check's baseline, read in the same round trip.
    s.push_str(&super::unit::baseline_script(a.manager, a.service)?);
    Ok(s)
}

/// Write a release's release.json (state changes).
pub fn set_release_json(id: &str, json: &str) -> Result<String, QuoteError> {
    Ok(format!(
        "[ -d {RELEASES}/{id} ] && printf '%s\\n' {} > {RELEASES}/{id}/{RELEASE_JSON}.tmp && mv -f -- {RELEASES}/{id}/{RELEASE_JSON}.tmp {RELEASES}/{id}/{RELEASE_JSON}\n",
        q(json)?,
        id = q(id)?
    ))
}

/// Append one line to the history.
pub fn history(line: &str) -> Result<String, QuoteError> {
    Ok(format!("printf '%s\\n' {} >> {HISTORY}\n", q(line)?))
}

/// Run hooks after a switch (`after_switch`, `after_rollback`) in the current release.
/// A failing hook is reported, not fatal: the switch has happened and is healthy.
pub fn after_hooks(kind: &str, list: &[Text], redact: bool) -> Result<String, QuoteError> {
    if list.is_empty() {
        return Ok(String::new());
    }
    let mut s = String::from("( cd -- current || exit 1\n");
    for (i, hook) in list.iter().enumerate() {
        let n = i + 1;
        s.push_str(&format!("printf '@@step {kind}:{n}\\n'\n"));
        s.push_str(&format!(
            "( set -a && . ./.env && set +a && SHIPIT_CMD={} && export SHIPIT_CMD && exec {SH_FROM_ENV} ) </dev/null || echo \"@@warn {kind} hook {n} failed with exit status $?\"\n",
            q(hook_text(hook, redact))?
        ));
    }
    s.push_str(")\n");
    Ok(s)
}

/// Removal of releases and cached artifacts; errors are warnings (`@@warn`), never fatal.
pub fn cleanup(plan: &CleanupPlan) -> Result<String, QuoteError> {
    let mut s = String::new();
    for dir in &plan.releases {
        s.push_str(&format!(
            "rm -rf -- {RELEASES}/{d} 2>/dev/null || echo \"@@warn could not remove {RELEASES}/\"{d}\" completely (permission denied?)\"\n",
            d = q(dir)?
        ));
    }
    if !plan.keep_artifacts.is_empty() || plan.prune_artifacts {
        let keep: Vec<String> = plan
            .keep_artifacts
            .iter()
            .map(|k| format!("{k}.tar.gz"))
            .collect();
        s.push_str(&format!(
            "for a in {ARTIFACTS}/*.tar.gz {ARTIFACTS}/*.part.*; do [ -e \"$a\" ] || continue; case ${{a##*/}} in {}) ;; *) rm -f -- \"$a\" 2>/dev/null || echo \"@@warn could not remove $a\" ;; esac; done\n",
            if keep.is_empty() { "''".to_owned() } else { keep.join("|") }
        ));
    }
    Ok(s)
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct CleanupPlan {
    /// Release dirs to remove (ids, or `.tmp-*` names).
    pub releases: Vec<String>,
    /// sha256 of artifacts that kept releases use.
    pub keep_artifacts: Vec<String>,
    pub prune_artifacts: bool,
}

/// What to remove so that `keep` good releases remain: failed, unfinished and half-made
/// releases go first; then the oldest good ones. Never `current`, never the newest good
/// release before it (the rollback target).
pub fn plan_cleanup(
    releases: &[Found],
    staging: &[String],
    current: &str,
    keep: usize,
) -> CleanupPlan {
    let mut remove: Vec<String> = staging.to_vec();
    let target = releases
        .iter()
        .rev()
        .filter(|r| r.id.as_str() < current)
        .find(|r| r.state() == Some(State::Live))
        .map(|r| r.id.clone());
    let mut kept = Vec::new();
    for r in releases.iter().rev() {
        let protected = r.id == current || Some(&r.id) == target.as_ref();
        let good = matches!(r.state(), Some(State::Live) | Some(State::RolledBack));
        if protected {
            kept.push(r);
        } else if r.id.as_str() > current && r.state() == Some(State::Staged) {
            // Newer than current and still staged: another run may be working on it.
            kept.push(r);
        } else if !good {
            remove.push(r.id.clone());
        }
    }
    let mut good_kept = kept.len();
    for r in releases.iter().rev() {
        let good = matches!(r.state(), Some(State::Live) | Some(State::RolledBack));
        if !good || kept.iter().any(|k| k.id == r.id) {
            continue;
        }
        if good_kept < keep {
            kept.push(r);
            good_kept += 1;
        } else {
            remove.push(r.id.clone());
        }
    }
    let mut keep_artifacts: Vec<String> = kept
        .iter()
        .filter_map(|r| r.info.as_ref().map(|i| i.artifact_sha256.clone()))
        .collect();
    keep_artifacts.sort();
    keep_artifacts.dedup();
    CleanupPlan {
        releases: remove,
        keep_artifacts,
        prune_artifacts: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(id: &str, state: Option<State>) -> Found {
        Found {
            id: id.into(),
            info: state.map(|state| ReleaseInfo {
                id: id.into(),
                app: "a".into(),
                version: "v".into(),
                commit: None,
                artifact_sha256: format!("sha-{id}"),
                state,
                created_at: 0,
                deployed_by: "x".into(),
                config_sha256: None,
            }),
        }
    }

    #[test]
    fn cleanup_removes_failed_first_and_keeps_the_rollback_target() {
        use State::*;
        let releases = vec![
            rel("1", Some(Live)),
            rel("2", Some(Live)),
            rel("3", Some(Failed)),
            rel("4", Some(Live)),
            rel("5", None),
            rel("6", Some(Failed)),
            rel("7", Some(Live)),
        ];
        let plan = plan_cleanup(&releases, &[".tmp-8".into()], "7", 2);
        assert_eq!(plan.releases, [".tmp-8", "6", "5", "3", "2", "1"]);
        assert_eq!(plan.keep_artifacts, ["sha-4", "sha-7"]);
        // The rollback target survives even when failed releases crowd it.
        let releases = vec![
            rel("1", Some(Live)),
            rel("2", Some(Failed)),
            rel("3", Some(Failed)),
            rel("4", Some(Live)),
        ];
        let plan = plan_cleanup(&releases, &[], "4", 2);
        assert_eq!(plan.releases, ["3", "2"]);
    }

    #[test]
    fn cleanup_never_touches_current_even_when_it_is_not_live() {
        use State::*;
        let releases = vec![
            rel("1", Some(Live)),
            rel("2", Some(RolledBack)),
            rel("3", Some(Staged)),
        ];
        let plan = plan_cleanup(&releases, &[], "1", 2);
        assert!(!plan.releases.contains(&"1".to_owned()));
        assert!(
            !plan.releases.contains(&"3".to_owned()),
            "a newer staged release may be in use by another run"
        );
    }

    #[test]
    fn rollback_target_is_the_newest_live_before_current() {
        use State::*;
        let s = Survey {
            current: Some("4".into()),
            releases: vec![
                rel("1", Some(Live)),
                rel("2", Some(Live)),
                rel("3", Some(RolledBack)),
                rel("4", Some(Live)),
                rel("5", Some(Live)),
            ],
            ..Survey::default()
        };
        assert_eq!(s.rollback_target().map(|r| r.id.as_str()), Some("2"));
    }

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
            "printf '%s|' \"$GREETING\" \"${{SHIPIT_CMD-unset}}\"; tr '\\0' ' ' </proc/$$/cmdline; : {secret}"
        ));
        for (script, cwd) in [
            (
                hooks("before_switch", std::slice::from_ref(&hook), false, "true").unwrap(),
                rel.clone(),
            ),
            (
                after_hooks("after_switch", std::slice::from_ref(&hook), false).unwrap(),
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

    #[test]
    fn transform_replacements_escape_what_sed_would_read() {
        assert_eq!(
            transform_text(".tmp-20260101T000000Z-aaaaaaaa/"),
            ".tmp-20260101T000000Z-aaaaaaaa/"
        );
        assert_eq!(transform_text(r"a,b&c\d"), r"a\,b\&c\\d");
    }

    #[test]
    fn survey_parsing() {
        let out = "@@now 100\n@@current releases/20231114T221320Z-3f2a9c1d\n@@cached yes\n@@release 20231114T221320Z-3f2a9c1d {\"id\":\"20231114T221320Z-3f2a9c1d\",\"app\":\"a\",\"version\":\"v\",\"commit\":null,\"artifact_sha256\":\"3f2a9c1d\",\"state\":\"live\",\"created_at\":1,\"deployed_by\":\"me\",\"config_sha256\":\"c\"}\n@@release 20231114T221319Z-00000000 \n@@release junk {}\n@@staging .tmp-x\nhook output\n";
        let s = parse_survey(out);
        assert_eq!(s.now, 100);
        assert_eq!(s.current.as_deref(), Some("20231114T221320Z-3f2a9c1d"));
        assert!(s.cached);
        assert_eq!(s.releases.len(), 2);
        assert_eq!(s.releases[0].info, None);
        assert_eq!(
            s.current_release().and_then(Found::state),
            Some(State::Live)
        );
        assert_eq!(s.staging, [".tmp-x"]);
    }
}
