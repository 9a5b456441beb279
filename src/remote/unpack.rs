//! How the stage script makes a release's files in `releases/.tmp-<id>`: unpacked from
//! the cached artifact, from the artifact as it arrives on stdin (and cached), or from a
//! delta against the live release (files copied or hard-linked from it, the rest
//! unpacked), then checked against the artifact before anything else happens.

use super::layout::{ARTIFACTS, RELEASES, STAGING_PREFIX, VERIFIED};
use super::markers::{DELTA_MISMATCH, STEP};
use super::q;
use crate::artifact::delta::{self, VERIFIED_LINE};
use crate::ssh::quote::QuoteError;

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

/// Unpacks the tar.gz on stdin (into `$tmp` unless the arguments say otherwise); fails if
/// gzip or tar fails. `gzip -dc | tar -x` rather than `tar -xz`: with `-z` on a stream,
/// GNU tar forks a helper that copies the archive into gzip in 10 KiB records, an extra
/// process and copy that cost 0.13 s (about a quarter of the unpack) for the benchmark's
/// 75 MB artifact. gzip's status comes back on fd 3 (`sh` has no pipefail).
const UNTAR_FN: &str = "untar() { st=$( { { gzip -dc 3>&-; echo $? >&3; } | \
    tar -xf - --no-same-owner --delay-directory-restore -p \"$@\" >&2 3>&-; } 3>&1 ) && \
    [ \"$st\" = 0 ]; }\n";

/// Make `$tmp` hold exactly what a full unpack of the artifact gives. With `record`
/// (`delta: hardlink`), also write its `.shipit/verified`.
pub(super) fn unpack(
    id: &str,
    sha256: &str,
    source: Source,
    record: bool,
) -> Result<String, QuoteError> {
    let sha = q(sha256)?;
    // A failed unpack says so, and says when the disk is full (GNU tar's own words for a
    // short write are only `Wrote only 4096 of 10240 bytes`); checked before the partial
    // release is removed, which frees the space again.
    // `fresh` makes empty dirs, removing leftovers of a killed run first (and only then:
    // each process start counts, at 20 hosts per 2 cores); `dotdir` makes `$tmp/.shipit`
    // when the artifact has none; `mismatch` turns a delta down, which is not fatal: the
    // release is discarded and the client sends the whole artifact (`DELTA_MISMATCH`).
    let mut s = String::from(
        "roomy() { set -- $(df -k --output=avail . 2>/dev/null); \
         [ \"$2\" -ge 1024 ] 2>/dev/null; }\n\
         unpack_failed() { roomy || \
         echo \"No space left on device in $D: the release does not fit on this host\" >&2; \
         rm -rf -- \"$tmp\" \"$@\"; echo \"unpacking the $what failed\" >&2; exit 1; }\n\
         fresh() { for x; do if [ -e \"$x\" ] || [ -L \"$x\" ]; \
         then rm -rf -- \"$x\" || return 1; fi; done; mkdir -- \"$@\"; }\n\
         dotdir() { [ -d \"$tmp/.shipit\" ] || mkdir -- \"$tmp/.shipit\"; }\n",
    );
    s.push_str(&format!(
        "mismatch() {{ rm -rf -- \"$tmp\" \"$W\"; printf '{DELTA_MISMATCH} %s\\n' \
         \"$(printf '%s' \"$1\" | tr '\\n' ' ' | cut -c1-300)\"; exit 0; }}\n"
    ));
    s.push_str(UNTAR_FN);
    if !matches!(source, Source::Delta(d) if d.link) {
        s.push_str("fresh \"$tmp\" || { rm -rf -- \"$tmp\"; exit 1; }\n");
    }
    // The record of a release unpacked whole: its files, as they are now.
    let record_now = format!(
        "dotdir && ( cd -- \"$tmp\" && find . -type f ! -path ./{VERIFIED} \
         -printf '{VERIFIED_LINE}' ) | LC_ALL=C sort > \"$tmp/{VERIFIED}\" || \
         {{ rm -rf -- \"$tmp\"; exit 1; }}\n"
    );
    match source {
        Source::Cached => {
            s.push_str(&format!("printf '{STEP} unpack\\n'\n"));
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
            s.push_str(&format!("printf '{STEP} upload\\n'\n"));
            s.push_str(&format!(
                "f={ARTIFACTS}/{sha}.tar.gz\nt=\"$f.part.$$\"\n\
                 what=artifact\n\
                 {{ tee -- \"$t\" || :; }} | untar -C \"$tmp\" || unpack_failed \"$t\"\n\
                 if [ \"$(cksum < \"$t\")\" = {cksum} ]; then mv -f -- \"$t\" \"$f\"; \
                 else rm -rf -- \"$t\" \"$tmp\"; \
                 echo 'the uploaded artifact is not what was sent \
                 (truncated, or the disk is full?)' >&2; exit 1; fi\n",
                cksum = q(cksum)?
            ));
            if record {
                s.push_str(&record_now);
            }
        }
        Source::Delta(d) if d.link => s.push_str(&linked_delta(id, d)?),
        Source::Delta(d) => s.push_str(&copied_delta(d)?),
    }
    Ok(s)
}

/// A `delta: copy` delta (see [`crate::artifact::delta`]): the unchanged files copied
/// from the live release (a list of them first on stdin), the archive of the others
/// unpacked over them; then the files' contents and the tree must be the artifact's.
fn copied_delta(d: DeltaSource) -> Result<String, QuoteError> {
    let base = q(d.base)?;
    Ok(format!(
        "W=\"$tmp.delta\"\n\
         fresh \"$W\" || {{ rm -rf -- \"$tmp\" \"$W\"; exit 1; }}\n\
         printf '{STEP} upload\\n'\n\
         head -c {reuse} > \"$W/reuse.gz\" || {{ rm -rf -- \"$tmp\" \"$W\"; exit 1; }}\n\
         printf '{STEP} reuse\\n'\n\
         [ -d {RELEASES}/{base} ] || mismatch \"release \"{base}\" is gone\"\n\
         e=$(gzip -dc -- \"$W/reuse.gz\" | ( cd -- {RELEASES}/{base} && \
         xargs -0 -r cp -p --reflink=auto --parents -t \"$D/$tmp\" -- ) 2>&1) || \
         mismatch \"taking the unchanged files from \"{base}\" failed: $e\"\n\
         printf '{STEP} unpack\\n'\n\
         what=delta\n\
         untar -C \"$tmp\" || unpack_failed \"$W\"\n\
         printf '{STEP} verify\\n'\n\
         sum=$(cd -- \"$tmp\" && find . -type f -printf '%P\\0' | LC_ALL=C sort -z | \
         xargs -0 -r cksum -- | sha256sum)\n\
         [ \"${{sum%% *}}\" = {content} ] || mismatch \"file contents differ from the artifact \
         (was a file of release \"{base}\" changed in place?)\"\n\
         tree=$({listing})\n\
         [ \"${{tree%% *}}\" = {tree} ] || \
         mismatch 'the file tree (names, types, modes, links) differs from the artifact'\n\
         rm -rf -- \"$W\"\n",
        reuse = d.reuse_len,
        tree = q(d.tree_sha256)?,
        content = q(d.content_sha256)?,
        listing =
            delta::tree_digest_command(&format!("\"$tmp\" -mindepth 1 {}", delta::tree_find(None))),
    ))
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
         printf '{STEP} upload\\n'\n\
         [ -f \"$B/{VERIFIED}\" ] || \
         mismatch \"release $b is gone, or has no record of its files\"\n\
         what=delta\n\
         untar -C {RELEASES} --transform={new_names} --transform={base_targets} 2>\"$W/err\" || \
         {{ roomy || {{ cat -- \"$W/err\" >&2; unpack_failed \"$W\"; }}; \
         mismatch \"making the release from release $b failed: $(cat -- \"$W/err\")\"; }}\n\
         printf '{STEP} verify\\n'\n\
         dotdir || {{ rm -rf -- \"$tmp\" \"$W\"; exit 1; }}\n\
         tree=$({listing})\n\
         find \"$B/{MANIFEST}\" -printf '%i %s %T@ {MANIFEST}\\n' >> \"$W/linked\" || \
         mismatch \"release $b has no manifest\"\n\
         x=$( {{ LC_ALL=C sort -- \"$W/linked\" || \
         echo 'the list of linked files is unreadable'; }} | \
         LC_ALL=C comm -23 - \"$B/{VERIFIED}\") && [ -z \"$x\" ] || \
         mismatch \"files of release $b changed since it was made (edited in place?): \
         $(printf '%s' \"$x\" | cut -d ' ' -f 4- | head -n 3)\"\n\
         [ \"${{tree%% *}}\" = {tree} ] || \
         mismatch 'the file tree (names, types, sizes, modes, links) differs from the artifact'\n\
         LC_ALL=C sort -o \"$tmp/{VERIFIED}\" -- \"$tmp/{VERIFIED}\" || \
         {{ rm -rf -- \"$tmp\" \"$W\"; exit 1; }}\n\
         rm -rf -- \"$W\"\n",
        MANIFEST = crate::artifact::manifest::PATH,
        tree = q(d.tree_sha256)?,
        listing = delta::tree_digest_command(&format!(
            "\"$tmp\" -mindepth 1 ! -path \"$tmp/{VERIFIED}\" {} -type f \
             -fprintf \"$tmp/{VERIFIED}\" '{VERIFIED_LINE}'",
            delta::tree_find(Some("\"$W/linked\""))
        )),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transform_replacements_escape_what_sed_would_read() {
        assert_eq!(
            transform_text(".tmp-20260101T000000Z-aaaaaaaa/"),
            ".tmp-20260101T000000Z-aaaaaaaa/"
        );
        assert_eq!(transform_text(r"a,b&c\d"), r"a\,b\&c\\d");
    }
}
