//! The fetch script: a host downloads the artifact from the store with a presigned URL
//! (`curl`, else `wget`), checks its sha256, and only then puts it in its artifact cache,
//! where the stage unpacks it from (`Source::Cached`). A failed download or a wrong
//! checksum leaves nothing behind and says why (`@@fetch failed <why>`): the deployer
//! then pushes the artifact over SSH.
//!
//! The URL is a bearer credential until it expires: it travels inside the script (over
//! SSH, never in an argv on the deployer), reaches curl through its config on stdin
//! (`-K -`) and GNU wget through `-i -`, so `ps` on the host does not show it. Only
//! BusyBox's wget, which reads no URL from stdin, gets it as an argument.

use super::layout::ARTIFACTS;
use super::markers::{self, FETCH, STEP};
use super::q;
use crate::redact::REDACTED;
use crate::ssh::quote::QuoteError;

/// Download `url` as the artifact `sha256` (`size` bytes), within `max_secs`.
pub fn fetch(url: &str, sha256: &str, max_secs: u64, redact: bool) -> Result<String, QuoteError> {
    let url = if redact { REDACTED } else { url };
    Ok(format!(
        "printf '{STEP} fetch\\n'\n\
         mkdir -p {ARTIFACTS} || exit 1\n\
         f={ARTIFACTS}/{sha}.tar.gz; t=\"$f.fetch.$$\"; e=\"$t.err\"\n\
         U={url}\n\
         if command -v curl >/dev/null 2>&1; then\n  \
         how=curl\n  \
         printf 'url = \"%s\"\\n' \"$U\" | curl -fsS --connect-timeout 10 --max-time {max} \
         -K - -o \"$t\" 2>\"$e\"; rc=$?\n\
         elif wget --version 2>/dev/null | grep -q 'GNU Wget'; then\n  \
         how=wget\n  \
         printf '%s\\n' \"$U\" | wget -q -T 10 -O \"$t\" -i - 2>\"$e\"; rc=$?\n\
         elif command -v wget >/dev/null 2>&1; then\n  \
         how='busybox wget'\n  \
         timeout {max} wget -q -O \"$t\" \"$U\" 2>\"$e\"; rc=$?\n\
         else\n  \
         echo '{FETCH} failed neither curl nor wget is installed'; exit 0\n\
         fi\n\
         if [ \"$rc\" != 0 ]; then\n  \
         w=$(sed -n '1s/[^ -~]//g;1s/?[^ ]*/?[query redacted]/g;1p' \"$e\" 2>/dev/null \
         | cut -c1-200)\n  \
         rm -f -- \"$t\" \"$e\"\n  \
         echo \"{FETCH} failed $how exited $rc${{w:+: $w}}\"; exit 0\n\
         fi\n\
         rm -f -- \"$e\"\n\
         s=$(sha256sum < \"$t\"); s=${{s%% *}}\n\
         if [ \"$s\" != {sha} ]; then\n  \
         rm -f -- \"$t\"\n  \
         echo \"{FETCH} failed the store's object has sha256 $s, not {sha}: not used\"; exit 0\n\
         fi\n\
         mv -f -- \"$t\" \"$f\" || exit 1\n\
         echo \"{FETCH} ok $how\"\n",
        sha = q(sha256)?,
        url = q(url)?,
        max = max_secs.max(10),
    ))
}

/// What the fetch script said: `Ok(tool)` or `Err(why)`.
pub fn fetched(stdout: &str) -> Result<String, String> {
    for v in markers::values(stdout, FETCH) {
        if let Some(how) = v.strip_prefix("ok ") {
            return Ok(how.to_owned());
        }
        if let Some(why) = v.strip_prefix("failed ") {
            return Err(why.to_owned());
        }
    }
    Err("the fetch script did not say how it went".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::fixtures::SHA;

    #[test]
    fn snapshot_and_answers() {
        let url = "http://10.0.0.2:9000/b/hello/x.tar.gz?X-Amz-Signature=abc";
        let s = fetch(url, SHA, 600, false).unwrap();
        assert!(s.contains(url));
        insta::assert_snapshot!("fetch_redacted", fetch(url, SHA, 600, true).unwrap());
        assert!(!fetch(url, SHA, 600, true).unwrap().contains("Signature"));
        assert_eq!(fetched("@@fetch ok curl\n"), Ok("curl".into()));
        assert_eq!(
            fetched("noise\n@@fetch failed curl exited 22: 403\n"),
            Err("curl exited 22: 403".into())
        );
        assert!(fetched("").is_err());
    }

    /// The script against a local file server stand-in: a `curl` on PATH that copies a
    /// file, so the checksum and the cache move are exercised without a network.
    #[test]
    fn a_wrong_checksum_leaves_nothing_in_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        std::fs::write(dir.path().join("object"), b"tampered").unwrap();
        let fake = format!(
            "#!/bin/sh\nwhile [ $# -gt 0 ]; do [ \"$1\" = -o ] && o=$2; shift; done\n\
             cat >/dev/null; cp {}/object \"$o\"\n",
            dir.path().display()
        );
        std::fs::write(bin.join("curl"), fake).unwrap();
        std::process::Command::new("chmod")
            .args(["+x", bin.join("curl").to_str().unwrap()])
            .status()
            .unwrap();
        let run = |sha: &str| {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(fetch("http://x/y", sha, 10, false).unwrap())
                .current_dir(dir.path())
                .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let out = run(SHA);
        assert!(fetched(&out).unwrap_err().contains("not used"), "{out}");
        let cache = dir.path().join(ARTIFACTS);
        assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 0, "{out}");
        use sha2::Digest;
        let good = hex::encode(sha2::Sha256::digest(b"tampered"));
        let out = run(&good);
        assert_eq!(fetched(&out), Ok("curl".into()), "{out}");
        assert!(cache.join(format!("{good}.tar.gz")).exists());
    }
}
