//! Where things live on a host, and how releases are named.
//!
//! ```text
//! {deploy_to}/
//!   releases/<UTC time>-<sha8>/            a release: the artifact unpacked, shared links, .env
//!   releases/<id>/.shipit/release.json     what it is and its state
//!   releases/.tmp-<id>/                    a release being unpacked; never a rollback target
//!   current -> releases/<id>               switched atomically (ln -s to a temp name, mv -T)
//!   shared/                                kept across releases
//!   .shipit/lock/owner.json                present only while a deploy or rollback runs
//!   .shipit/artifacts/<sha256>.tar.gz      upload cache
//!   .shipit/history.jsonl                  one JSON line per deploy/rollback, append-only
//! ```

use std::time::{SystemTime, UNIX_EPOCH};

pub const RELEASES: &str = "releases";
pub const CURRENT: &str = "current";
pub const SHARED: &str = "shared";
pub const LOCK: &str = ".shipit/lock";
pub const ARTIFACTS: &str = ".shipit/artifacts";
pub const HISTORY: &str = ".shipit/history.jsonl";
pub const RELEASE_JSON: &str = ".shipit/release.json";
/// In a release made with `delta: hardlink`: `<inode> <size> <mtime> <path>` of every
/// file as verified when the release was made, sorted (`LC_ALL=C`). A later hard-linked
/// delta trusts a file it links from this release only while it still matches its line.
pub const VERIFIED: &str = ".shipit/verified";
pub const STAGING_PREFIX: &str = ".tmp-";
/// In a release: the unit file it was deployed with (when shipit installs the unit).
pub const UNIT_COPY: &str = ".shipit/unit";

/// `2026-11-22T05:12:33Z` from seconds since the epoch (proleptic Gregorian, UTC).
pub fn iso8601(secs: u64) -> String {
    let (y, m, d, hh, mm, ss) = civil(secs);
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
}

/// `20261122T051233Z`: sorts as time does.
pub fn compact(secs: u64) -> String {
    let (y, m, d, hh, mm, ss) = civil(secs);
    format!("{y:04}{m:02}{d:02}T{hh:02}{mm:02}{ss:02}Z")
}

fn civil(secs: u64) -> (i64, u32, u32, u64, u64, u64) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, rem / 3600, rem % 3600 / 60, rem % 60)
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A release id: UTC time of the deploy and the first 8 hex digits of the artifact.
pub fn release_id(secs: u64, artifact_sha256: &str) -> String {
    format!(
        "{}-{}",
        compact(secs),
        &artifact_sha256[..artifact_sha256.len().min(8)]
    )
}

/// Release ids shipit made: `YYYYMMDDTHHMMSSZ-xxxxxxxx`. Anything else in releases/ is
/// not ours to list, switch to or delete.
pub fn is_release_id(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() == 25
        && b[..8].iter().all(u8::is_ascii_digit)
        && b[8] == b'T'
        && b[9..15].iter().all(u8::is_ascii_digit)
        && b[15] == b'Z'
        && b[16] == b'-'
        && b[17..]
            .iter()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(iso8601(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(compact(1_700_000_000), "20231114T221320Z");
    }

    #[test]
    fn ids() {
        let id = release_id(1_700_000_000, "3f2a9c1d0000ffff");
        assert_eq!(id, "20231114T221320Z-3f2a9c1d");
        assert!(is_release_id(&id));
        assert!(!is_release_id(".tmp-20231114T221320Z-3f2a9c1d"));
        assert!(!is_release_id("20231114T221320Z-3F2A9C1D"));
        assert!(!is_release_id("../../etc"));
    }
}
