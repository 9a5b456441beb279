//! The first script of a run: the host's state (where `current` points, every release
//! and its state, leftovers of killed runs, whether the artifact is cached), read in one
//! round trip, optionally after taking the lock.

use super::layout::{self, ARTIFACTS, CURRENT, RELEASE_JSON, RELEASES, STAGING_PREFIX, VERIFIED};
use super::lock::Owner;
use super::markers::{self, CACHED, MANIFEST, RELEASE, STAGING, UNCHANGED};
use super::q;
use super::release::{Found, State};
use crate::ssh::quote::QuoteError;

/// What `survey` learned about a host.
#[derive(Debug, Clone, Default)]
pub struct Survey {
    /// The host's clock, when a held lock was reported (0 otherwise).
    pub now: u64,
    pub lock: Option<LockAnswer>,
    /// The release `current` points to (its id), if any.
    pub current: Option<String>,
    pub cached: bool,
    /// The host's architecture (normalized `uname -m`), when a deploy's survey asked.
    pub arch: Option<String>,
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
    /// A guard armed on the host (a run switched it and has not confirmed yet).
    pub guard: Option<super::guard::Armed>,
}

#[derive(Debug, Clone)]
pub enum LockAnswer {
    Acquired,
    Held {
        owner: Option<Owner>,
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
    /// (`markers::UNCHANGED`), so a no-op deploy costs one round trip.
    pub unchanged: Option<(&'a str, &'a str)>,
}

/// The survey, in `deploy_to`. With `wanted`, also whether that artifact is cached
/// whole (its `cksum` matches: cheap, where `sha256sum` of a 75 MB file costs 0.2 s of
/// CPU), and the live release's manifest when asked and not cached.
pub fn survey(wanted: Option<&Wanted>) -> Result<String, QuoteError> {
    // Each process start costs ~0.5 ms of CPU on the test VMs, times every host: the
    // survey starts only the ones it needs (the host's clock comes with a held lock's
    // report, the only place it is used).
    let mut s = format!(
        "r=$(readlink {CURRENT} 2>/dev/null)\nprintf '{current} %s\\n' \"$r\"\n",
        current = markers::CURRENT
    );
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
                "j=\n[ -n \"$r\" ] && {{ read -r j < \"$r/{RELEASE_JSON}\"; }} 2>/dev/null\n\
                 case \"$j\" in {pattern}) [ -n \"$r\" ] && \
                 {{ u=1; echo '{UNCHANGED}'; {unlock} }} ;; esac\n",
                unlock = super::lock::release(token)?.trim_end()
            ));
        }
        s.push_str(&format!(
            "f={ARTIFACTS}/{sha}.tar.gz\nc=no\n\
             if [ -z \"$u\" ] && [ -f \"$f\" ] && [ \"$(cksum < \"$f\")\" = {cksum} ]; \
             then c=yes; fi\n\
             printf '{CACHED} %s\\n' \"$c\"\n\
             [ -n \"$u\" ] || printf '{ARCH} %s\\n' \"$(uname -m)\"\n",
            ARCH = markers::ARCH,
            sha = q(w.sha256)?,
            cksum = q(w.cksum)?
        ));
        if w.manifest {
            s.push_str(&format!(
                "m=\"$r/{path}\"\n\
                 if [ -z \"$u\" ] && [ $c = no ] && [ -n \"$r\" ] && [ -f \"$m\" ] && \
                 command -v find >/dev/null 2>&1 && command -v xargs >/dev/null 2>&1; \
                 then printf '{MANIFEST} '; tr -d '\\n' < \"$m\"; echo; \
                 [ -f \"$r/{VERIFIED}\" ] && echo '{verified}'; fi\n",
                path = crate::artifact::manifest::PATH,
                verified = markers::VERIFIED
            ));
        }
    }
    s.push_str(&format!(
        "for r in {RELEASES}/* {RELEASES}/.tmp-*; do\n  \
         [ -d \"$r\" ] || continue\n  \
         n=${{r#{RELEASES}/}}\n  \
         case $n in {STAGING_PREFIX}*) printf '{STAGING} %s\\n' \"$n\"; continue ;; esac\n  \
         printf '{RELEASE} %s ' \"$n\"\n  \
         # One line, as shipit writes it: read by the shell (no process); \
         else joined by `tr`.\n  \
         if {{ IFS= read -r j && ! IFS= read -r x; }} 2>/dev/null < \"$r/{RELEASE_JSON}\"; \
         then printf '%s\\n' \"$j\"; \
         else tr -d '\\n' 2>/dev/null < \"$r/{RELEASE_JSON}\"; echo; fi\n\
         done\n"
    ));
    // An armed guard (only a file test when there is none).
    s.push_str(&super::guard::report());
    Ok(s)
}

/// What a survey script printed (after the lock's answer, when it took the lock).
pub fn parse_survey(stdout: &str) -> Survey {
    let mut s = Survey::default();
    let mut lock_mtime = None;
    let mut held = false;
    let mut owner = None;
    for line in stdout.lines() {
        let Some((key, value)) = markers::split(line) else {
            continue;
        };
        match key {
            markers::NOW => s.now = value.parse().unwrap_or(0),
            markers::CURRENT => {
                let id = value.strip_prefix("releases/").unwrap_or(value);
                s.current = (!id.is_empty()).then(|| id.to_owned());
            }
            CACHED => s.cached = value == "yes",
            markers::ARCH => {
                let arch = crate::artifact::native::normalize_arch(value);
                s.arch = (!arch.is_empty()).then_some(arch);
            }
            UNCHANGED => s.unchanged = true,
            MANIFEST => s.base_manifest = Some(value.to_owned()),
            markers::VERIFIED => s.base_verified = true,
            RELEASE => {
                let (id, json) = value.split_once(' ').unwrap_or((value, ""));
                if layout::is_release_id(id) {
                    s.releases.push(Found {
                        id: id.to_owned(),
                        info: serde_json::from_str(json).ok(),
                    });
                }
            }
            STAGING => s.staging.push(value.to_owned()),
            _ if line == markers::LOCK_ACQUIRED => s.lock = Some(LockAnswer::Acquired),
            _ if line == markers::LOCK_HELD => held = true,
            markers::OWNER => owner = serde_json::from_str(value).ok(),
            markers::LOCK_MTIME => lock_mtime = value.parse().ok(),
            _ => {}
        }
    }
    if held {
        s.lock = Some(LockAnswer::Held {
            since: owner.as_ref().map(|o: &Owner| o.started_at).or(lock_mtime),
            owner,
        });
    }
    s.releases.sort_by(|a, b| a.id.cmp(&b.id));
    s.guard = super::guard::armed(stdout);
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::fixtures::{CONFIG_SHA, SHA, TOKEN, found};

    #[test]
    fn rollback_target_is_the_newest_live_before_current() {
        use State::*;
        let s = Survey {
            current: Some("4".into()),
            releases: vec![
                found("1", Some(Live)),
                found("2", Some(Live)),
                found("3", Some(RolledBack)),
                found("4", Some(Live)),
                found("5", Some(Live)),
            ],
            ..Survey::default()
        };
        assert_eq!(s.rollback_target().map(|r| r.id.as_str()), Some("2"));
    }

    #[test]
    fn survey_parsing() {
        let out = concat!(
            "@@now 100\n",
            "@@current releases/20231114T221320Z-3f2a9c1d\n",
            "@@cached yes\n",
            "@@arch arm64\n",
            "@@release 20231114T221320Z-3f2a9c1d {\"id\":\"20231114T221320Z-3f2a9c1d\",",
            "\"app\":\"a\",\"version\":\"v\",\"commit\":null,\"artifact_sha256\":\"3f2a9c1d\",",
            "\"state\":\"live\",\"created_at\":1,\"deployed_by\":\"me\",\"config_sha256\":\"c\"}\n",
            "@@release 20231114T221319Z-00000000 \n",
            "@@release junk {}\n",
            "@@staging .tmp-x\n",
            "hook output\n"
        );
        let s = parse_survey(out);
        assert_eq!(s.now, 100);
        assert_eq!(s.current.as_deref(), Some("20231114T221320Z-3f2a9c1d"));
        assert!(s.cached);
        assert_eq!(s.arch.as_deref(), Some("aarch64"));
        assert_eq!(s.releases.len(), 2);
        assert_eq!(s.releases[0].info, None);
        assert_eq!(
            s.current_release().and_then(Found::state),
            Some(State::Live)
        );
        assert_eq!(s.staging, [".tmp-x"]);
    }

    #[test]
    fn lock_answers() {
        let s = parse_survey("@@lock acquired\n@@current \n");
        assert!(matches!(s.lock, Some(LockAnswer::Acquired)));
        assert_eq!(s.current, None);
        let s = parse_survey("@@lock held\n@@now 200\n@@owner \n@@lock_mtime 150\n");
        assert!(matches!(
            s.lock,
            Some(LockAnswer::Held {
                owner: None,
                since: Some(150)
            })
        ));
        assert_eq!(s.now, 200);
        let s = parse_survey("@@unchanged\n@@manifest {\"files\":[]}\n@@verified\n");
        assert!(s.unchanged && s.base_verified);
        assert_eq!(s.base_manifest.as_deref(), Some("{\"files\":[]}"));
    }

    /// The survey run by a real `sh`: a host already on the artifact and config says so
    /// and is not asked its architecture (one process less per host on a no-op deploy);
    /// a host that will get the release is.
    #[test]
    fn only_a_host_that_gets_the_release_reports_its_architecture() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("releases/R/.shipit")).unwrap();
        std::os::unix::fs::symlink("releases/R", dir.path().join("current")).unwrap();
        let wanted = Wanted {
            sha256: SHA,
            cksum: "1 2",
            manifest: false,
            unchanged: Some((CONFIG_SHA, TOKEN)),
        };
        let script = survey(Some(&wanted)).unwrap();
        let surveyed = |artifact: &str| {
            let json = format!(
                "{{\"artifact_sha256\":\"{artifact}\",\"state\":\"live\",\
                 \"config_sha256\":\"{CONFIG_SHA}\"}}\n"
            );
            std::fs::write(dir.path().join("releases/R/.shipit/release.json"), json).unwrap();
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(&script)
                .current_dir(dir.path())
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
            parse_survey(&String::from_utf8(out.stdout).unwrap())
        };
        let same = surveyed(SHA);
        assert!(same.unchanged && same.arch.is_none(), "{same:?}");
        let other = surveyed("0000");
        assert!(!other.unchanged && other.arch.is_some(), "{other:?}");
    }

    #[test]
    fn snapshots() {
        let wanted = |manifest, unchanged| Wanted {
            sha256: SHA,
            cksum: "3735928559 75000000",
            manifest,
            unchanged,
        };
        insta::assert_snapshot!("survey", survey(None).unwrap());
        insta::assert_snapshot!("survey_wanted", survey(Some(&wanted(false, None))).unwrap());
        insta::assert_snapshot!(
            "survey_wanted_manifest",
            survey(Some(&wanted(true, None))).unwrap()
        );
        insta::assert_snapshot!(
            "survey_wanted_manifest_unchanged",
            survey(Some(&wanted(true, Some((CONFIG_SHA, TOKEN))))).unwrap()
        );
    }
}
