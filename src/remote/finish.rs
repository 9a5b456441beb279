//! The finish script, after a healthy switch: `after_switch` (or `after_rollback`)
//! hooks, the final states of the releases involved, cleanup, the history line and the
//! unlock, in one round trip. Nothing here fails the run: the switch has happened and is
//! healthy, so what goes wrong is a warning (`WARN`).

use super::layout::{ARTIFACTS, HISTORY, RELEASE_JSON, RELEASES};
use super::markers::{self, STEP, WARN};
use super::release::{Found, State};
use super::{SH_FROM_ENV, hook_text, q};
use crate::redact::Text;
use crate::ssh::quote::QuoteError;

/// Write a release's release.json (state changes).
pub fn set_release_json(id: &str, json: &str) -> Result<String, QuoteError> {
    Ok(format!(
        "[ -d {RELEASES}/{id} ] && printf '%s\\n' {json} > {RELEASES}/{id}/{RELEASE_JSON}.tmp && \
         mv -f -- {RELEASES}/{id}/{RELEASE_JSON}.tmp {RELEASES}/{id}/{RELEASE_JSON}\n",
        json = q(json)?,
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
        s.push_str(&format!("printf '{STEP} {kind}:{n}\\n'\n"));
        s.push_str(&format!(
            "( set -a && . ./.env && set +a && SHIPIT_CMD={} && export SHIPIT_CMD && \
             exec {SH_FROM_ENV} ) </dev/null || \
             echo \"{WARN} {kind} hook {n} failed with exit status $?\"\n",
            q(hook_text(hook, redact))?
        ));
    }
    s.push_str(")\n");
    Ok(s)
}

/// Removal of releases and cached artifacts; errors are warnings (`WARN`), never fatal.
pub fn cleanup(plan: &CleanupPlan) -> Result<String, QuoteError> {
    let mut s = String::new();
    for dir in &plan.releases {
        s.push_str(&format!(
            "rm -rf -- {RELEASES}/{d} 2>/dev/null || \
             echo \"{WARN} could not remove {RELEASES}/\"{d}\" completely (permission denied?)\"\n",
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
            "for a in {ARTIFACTS}/*.tar.gz {ARTIFACTS}/*.part.*; do [ -e \"$a\" ] || continue; \
             case ${{a##*/}} in {keep}) ;; \
             *) rm -f -- \"$a\" 2>/dev/null || echo \"{WARN} could not remove $a\" ;; esac; done\n",
            keep = if keep.is_empty() {
                "''".to_owned()
            } else {
                keep.join("|")
            }
        ));
    }
    Ok(s)
}

/// The end of the finish script: the cleanup step, the history line (a failed append
/// is a warning) and the unlock. A part whose values cannot be quoted is left out.
pub fn closing(cleanup_plan: &CleanupPlan, history_line: &str, token: &str) -> String {
    let mut s = format!("printf '{STEP} cleanup\\n'\n");
    s.push_str(&cleanup(cleanup_plan).unwrap_or_default());
    if let Ok(h) = history(history_line) {
        s.push_str(&format!(
            "{{ {}; }} 2>/dev/null || echo '{WARN} could not append to the history'\n",
            h.trim_end()
        ));
    }
    if let Ok(unlock) = super::lock::release(token) {
        s.push_str(&unlock);
    }
    s
}

/// The warnings a finish script printed (`WARN`), in order.
pub fn warnings(stdout: &str) -> Vec<String> {
    markers::values(stdout, WARN).map(str::to_owned).collect()
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
    use crate::remote::fixtures::{CONFIG_SHA, ID, OLDER, SHA, TOKEN, found, hooks, json};

    #[test]
    fn cleanup_removes_failed_first_and_keeps_the_rollback_target() {
        use State::*;
        let releases = vec![
            found("1", Some(Live)),
            found("2", Some(Live)),
            found("3", Some(Failed)),
            found("4", Some(Live)),
            found("5", None),
            found("6", Some(Failed)),
            found("7", Some(Live)),
        ];
        let plan = plan_cleanup(&releases, &[".tmp-8".into()], "7", 2);
        assert_eq!(plan.releases, [".tmp-8", "6", "5", "3", "2", "1"]);
        assert_eq!(plan.keep_artifacts, ["sha-4", "sha-7"]);
        // The rollback target survives even when failed releases crowd it.
        let releases = vec![
            found("1", Some(Live)),
            found("2", Some(Failed)),
            found("3", Some(Failed)),
            found("4", Some(Live)),
        ];
        let plan = plan_cleanup(&releases, &[], "4", 2);
        assert_eq!(plan.releases, ["3", "2"]);
    }

    #[test]
    fn cleanup_never_touches_current_even_when_it_is_not_live() {
        use State::*;
        let releases = vec![
            found("1", Some(Live)),
            found("2", Some(RolledBack)),
            found("3", Some(Staged)),
        ];
        let plan = plan_cleanup(&releases, &[], "1", 2);
        assert!(!plan.releases.contains(&"1".to_owned()));
        assert!(
            !plan.releases.contains(&"3".to_owned()),
            "a newer staged release may be in use by another run"
        );
    }

    #[test]
    fn warnings_are_whole_lines() {
        let out = "@@step cleanup\n@@warn could not remove a\nhook: @@warn no\n@@warn b\n";
        assert_eq!(warnings(out), ["could not remove a", "b"]);
        assert!(warnings("").is_empty());
    }

    fn a_cleanup() -> CleanupPlan {
        CleanupPlan {
            releases: vec![
                format!(".tmp-{ID}"),
                "20231001T000000Z-00000000".into(),
                OLDER.into(),
            ],
            keep_artifacts: vec![SHA.into(), CONFIG_SHA.into()],
            prune_artifacts: true,
        }
    }

    const HISTORY_LINE: &str = r#"{"time":"2023-11-14T22:13:20Z","action":"deploy","result":"ok"}"#;

    #[test]
    fn snapshots() {
        insta::assert_snapshot!(
            "set_release_json",
            set_release_json(ID, &json(State::Live)).unwrap()
        );
        insta::assert_snapshot!("history", history(HISTORY_LINE).unwrap());
        insta::assert_snapshot!(
            "after_hooks_switch",
            after_hooks("after_switch", &hooks(), false).unwrap()
        );
        insta::assert_snapshot!(
            "after_hooks_switch_redacted",
            after_hooks("after_switch", &hooks(), true).unwrap()
        );
        insta::assert_snapshot!(
            "after_hooks_rollback",
            after_hooks(
                "after_rollback",
                &[Text::plain("bin/notify rollback")],
                false
            )
            .unwrap()
        );
        assert_eq!(after_hooks("after_switch", &[], false).unwrap(), "");
        insta::assert_snapshot!("cleanup", cleanup(&a_cleanup()).unwrap());
        insta::assert_snapshot!(
            "cleanup_nothing_kept",
            cleanup(&CleanupPlan {
                releases: vec![],
                keep_artifacts: vec![],
                prune_artifacts: true,
            })
            .unwrap()
        );
        assert_eq!(cleanup(&CleanupPlan::default()).unwrap(), "");
        insta::assert_snapshot!("closing", closing(&a_cleanup(), HISTORY_LINE, TOKEN));
    }
}
