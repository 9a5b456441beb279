#!/usr/bin/env bash
# Packs one release tarball, OUTDIR/shipit-VERSION-TARGET.tar.gz:
#   shipit-VERSION-TARGET/shipit            the binary
#   shipit-VERSION-TARGET/README.md, LICENSE-MIT, LICENSE-APACHE
#   shipit-VERSION-TARGET/man/*.1           every page scripts/dist-assets.sh wrote
#   shipit-VERSION-TARGET/completions/      shipit.bash, _shipit, shipit.fish
# The same inputs give the same bytes: names sorted, owner root, every mtime the commit's
# time (SOURCE_DATE_EPOCH if set), gzip without a timestamp. Needs GNU tar.
#
# Usage: scripts/dist-tarball.sh VERSION TARGET BINARY ASSETS OUTDIR
#   ASSETS is the OUTDIR of scripts/dist-assets.sh. Prints the tarball's path.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

if [ $# -ne 5 ]; then
  echo "usage: scripts/dist-tarball.sh VERSION TARGET BINARY ASSETS OUTDIR" >&2
  exit 2
fi
version=$1 target=$2 bin=$3 assets=$4 out=$5
name="shipit-$version-$target"

for f in "$bin" "$assets"/man/*.1 "$assets"/completions/shipit.bash \
  "$assets"/completions/_shipit "$assets"/completions/shipit.fish; do
  if [ ! -f "$f" ]; then
    echo "dist-tarball: missing $f" >&2
    exit 1
  fi
done

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/$name/man" "$stage/$name/completions"
install -m 755 "$bin" "$stage/$name/shipit"
install -m 644 "$root/README.md" "$root/LICENSE-MIT" "$root/LICENSE-APACHE" "$stage/$name/"
install -m 644 "$assets"/man/*.1 "$stage/$name/man/"
install -m 644 "$assets"/completions/* "$stage/$name/completions/"
chmod 755 "$stage/$name" "$stage/$name/man" "$stage/$name/completions"

epoch=${SOURCE_DATE_EPOCH:-$(git -C "$root" log -1 --format=%ct 2>/dev/null || echo 0)}
mkdir -p "$out"
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$epoch" \
  -C "$stage" -cf - "$name" | gzip -9n >"$out/$name.tar.gz"
echo "$out/$name.tar.gz"
