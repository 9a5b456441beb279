//! Every `@@` marker, by name. A script answers shipit with lines of stdout that start
//! with `@@` (a marker, then a space and a value for most); every other line is output
//! of hooks and tools, shown to the user. The builders write these constants into their
//! shell text, and the parsers here and next to the builders read them back: nothing
//! outside `remote/` spells a marker.
//!
//! Each value is a whole line: `@@cached yes`, `@@warn <text>`. The phase a marker
//! belongs to reads it: [`super::survey::parse_survey`], [`super::stage::delta_mismatch`],
//! [`super::activate::switched`], [`super::finish::warnings`], [`super::lock::unlocked`],
//! [`super::status`], [`super::is_missing`].

/// What every marker starts with.
pub const PREFIX: &str = "@@";

/// `@@step <name>`: the script begins a step (`upload`, `unpack`, `reuse`, `verify`,
/// `link`, `env`, `before_switch:N`, `switch`, `unit`, `restart`, `after_switch:N`,
/// `after_rollback:N`, `cleanup`). A failure is reported under the last step seen, and a
/// faultpoint (`crate::faultpoint`) can stop the client at each.
pub const STEP: &str = "@@step";

/// `@@missing`: `deploy_to` does not exist (a read-only script stops there).
pub const MISSING: &str = "@@missing";

// The survey.

/// `@@current <target>`: where `current` points (`releases/<id>`), empty without one.
pub const CURRENT: &str = "@@current";
/// `@@unchanged`: the live release already has this artifact and config.
pub const UNCHANGED: &str = "@@unchanged";
/// `@@cached yes|no`: the artifact is in the host's cache, whole.
pub const CACHED: &str = "@@cached";
/// `@@arch <uname -m>`: the host's machine, for a deploy's architecture check.
pub const ARCH: &str = "@@arch";

// The check.

/// `@@platform <uname -m><TAB><os>`: the host's machine and OS (`/etc/os-release`'s
/// `PRETTY_NAME`, else `uname -s` and `-r`), for `shipit check`.
pub const PLATFORM: &str = "@@platform";
/// `@@manifest <json>`: the live release's manifest, on one line.
pub const MANIFEST: &str = "@@manifest";
/// `@@verified`: the live release has its record of verified files.
pub const VERIFIED: &str = "@@verified";
/// `@@staging <name>`: a leftover `releases/.tmp-*` dir.
pub const STAGING: &str = "@@staging";
/// `@@release <id> <release.json>`: a release, its release.json joined on one line.
pub const RELEASE: &str = "@@release";

// The lock.

/// The lock is ours.
pub const LOCK_ACQUIRED: &str = "@@lock acquired";
/// Someone else's lock: `NOW`, `OWNER` and `LOCK_MTIME` follow.
pub const LOCK_HELD: &str = "@@lock held";
/// `@@now <secs>`: the host's clock (with a held lock).
pub const NOW: &str = "@@now";
/// `@@owner <json>`: a held lock's owner file, empty when it has none.
pub const OWNER: &str = "@@owner";
/// `@@lock_mtime <secs>`: when a held lock was taken, by its dir's mtime.
pub const LOCK_MTIME: &str = "@@lock_mtime";
/// The lock was removed.
pub const UNLOCKED: &str = "@@unlocked";
/// There was no lock to remove.
pub const NO_LOCK: &str = "@@unlocked none";

/// The guard (`remote::guard`): `armed`, `confirmed`, `fired`, `removed`, or `state ...`.
pub const GUARD: &str = "@@guard";

// The stage.

/// `@@delta-mismatch <why>`: the host turned a delta down; the whole artifact follows.
pub const DELTA_MISMATCH: &str = "@@delta-mismatch";
/// `@@fetch ok <tool>` or `@@fetch failed <why>`: the host's download from the store.
pub const FETCH: &str = "@@fetch";
/// `@@staged`: the release is in place and its `before_switch` hooks passed.
pub const STAGED: &str = "@@staged";

// The activation.

/// `@@switched`: `current` points to the new release.
pub const SWITCHED: &str = "@@switched";
/// The unit file changed and was installed.
pub const UNIT_INSTALLED: &str = "@@unit installed";
/// `@@restarted`: the service was restarted (or reloaded).
pub const RESTARTED: &str = "@@restarted";
/// `@@show <line>`: a line of `systemctl show`, the health check's baseline (written by
/// `remote::unit::baseline_script`).
pub const SHOW: &str = "@@show";

/// `@@proxy <what>`: the slots and HAProxy (`remote::proxy`).
pub const PROXY: &str = "@@proxy";

// The finish.

/// `@@warn <text>`: something failed that does not fail the run.
pub const WARN: &str = "@@warn";

// `shipit status`.

/// `@@svc <Key>=<value>`: a line of `systemctl show` about the service.
pub const SVC: &str = "@@svc";
/// `@@history <json>`: a line of the history.
pub const HISTORY: &str = "@@history";

/// Not a script's answer: the line the client itself prints on stderr when a faultpoint
/// stops it (`@@faultpoint STEP@HOST pid PID`), for the test that waits for it.
pub const FAULTPOINT: &str = "@@faultpoint";

/// An answer to shipit, not output to show.
pub fn is_protocol(line: &str) -> bool {
    line.starts_with(PREFIX)
}

/// The step a `@@step <name>` line begins.
pub fn step(line: &str) -> Option<&str> {
    value(line, STEP)
}

/// The value of `line` when it is `marker <value>`.
pub fn value<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    line.strip_prefix(marker)?.strip_prefix(' ')
}

/// The values of every `marker <value>` line of `stdout`, in order.
pub fn values<'a>(stdout: &'a str, marker: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    stdout.lines().filter_map(move |l| value(l, marker))
}

/// Whether `stdout` has a line that is `marker` alone.
pub fn has(stdout: &str, marker: &str) -> bool {
    stdout.lines().any(|l| l == marker)
}

/// A marker line as (marker, value): `@@cached yes` is (`@@cached`, `yes`), `@@verified`
/// is (`@@verified`, ``). `None` for a line that is not an answer.
pub fn split(line: &str) -> Option<(&str, &str)> {
    is_protocol(line).then(|| line.split_once(' ').unwrap_or((line, "")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_lines_and_steps() {
        assert!(is_protocol("@@step unpack"));
        assert!(is_protocol("@@"));
        assert!(!is_protocol("hook says @@step x"));
        assert!(!is_protocol(" @@step x"));
        assert_eq!(step("@@step before_switch:2"), Some("before_switch:2"));
        assert_eq!(step("@@step "), Some(""));
        assert_eq!(step("@@step"), None);
        assert_eq!(step("@@stepper x"), None);
        assert_eq!(step("@@warn x"), None);
    }

    #[test]
    fn values_and_whole_lines() {
        let out =
            "@@warn one\nhook output @@warn no\n@@warn two words\n@@warned x\n@@unlocked none\n";
        assert_eq!(values(out, WARN).collect::<Vec<_>>(), ["one", "two words"]);
        assert!(has(out, "@@unlocked none"));
        assert!(!has(out, UNLOCKED));
        assert!(has("x\n@@unlocked\n", UNLOCKED));
        assert_eq!(value("@@cached yes", CACHED), Some("yes"));
        assert_eq!(value("@@cachedyes", CACHED), None);
    }

    #[test]
    fn splitting() {
        assert_eq!(split("@@cached yes"), Some(("@@cached", "yes")));
        assert_eq!(
            split("@@release 20231114T221320Z-3f2a9c1d {\"a\": 1}"),
            Some(("@@release", "20231114T221320Z-3f2a9c1d {\"a\": 1}"))
        );
        assert_eq!(split("@@verified"), Some(("@@verified", "")));
        assert_eq!(split("verified"), None);
    }

    #[test]
    fn markers_are_safe_in_quotes_printf_formats_and_sed() {
        for m in [
            STEP,
            MISSING,
            CURRENT,
            UNCHANGED,
            CACHED,
            MANIFEST,
            VERIFIED,
            STAGING,
            RELEASE,
            LOCK_ACQUIRED,
            LOCK_HELD,
            NOW,
            OWNER,
            LOCK_MTIME,
            UNLOCKED,
            NO_LOCK,
            DELTA_MISMATCH,
            STAGED,
            SWITCHED,
            UNIT_INSTALLED,
            RESTARTED,
            SHOW,
            WARN,
            SVC,
            HISTORY,
            FAULTPOINT,
        ] {
            let text = m.strip_prefix(PREFIX).unwrap();
            assert!(text.starts_with(|c: char| c.is_ascii_lowercase()), "{m}");
            assert!(
                !text.contains(['\'', '"', '\\', '%', '/', '&', '$', '`', '\n']),
                "{m}"
            );
        }
    }
}
