#!/usr/bin/env bash
# What of the release (.github/workflows/release.yml) one Linux machine can check, the
# same way the workflow does it:
#   1. a static build: glibc with crt-static for x86_64-unknown-linux-gnu (the release
#      builds musl, whose target this machine may lack); `--version` names the version
#      and commit, and `ldd` and `file` agree there is nothing dynamic in it;
#   2. the man pages and completions the binary writes (scripts/dist-assets.sh);
#   3. a release tarball (scripts/dist-tarball.sh): its contents, and the same bytes twice;
#   4. the .deb (cargo deb --no-build, from the binary of step 1): its contents and
#      control fields, and the binary inside it runs;
#   5. the .deb installed with dpkg on a copy of the e2e tier's Debian servers, run, and
#      removed.
# Run by .ci/run; developers can run it too. Needs cargo-deb (`cargo install --locked
# cargo-deb`), file, ldd and dpkg-deb. Writes dist/assets and dist/check.
#
# SHIPIT_CHECK_PROFILE=static-check|release|dev picks the cargo profile of the static
# build. The default, static-check (Cargo.toml: release without optimization or LTO),
# checks the same linking and packaging as release in a fraction of its time; the
# workflow builds release.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=${SHIPIT_CHECK_PROFILE:-static-check}
case "$profile" in
  release | static-check) profile_dir=$profile ;;
  dev) profile_dir=debug ;;
  *)
    echo "check-release: SHIPIT_CHECK_PROFILE must be static-check, release or dev" >&2
    exit 2
    ;;
esac
target=x86_64-unknown-linux-gnu
out=dist/check
bin=${CARGO_TARGET_DIR:-target}/$target/$profile_dir/shipit

fail() {
  echo "check-release: FAILED: $*" >&2
  exit 1
}
started=$SECONDS
step() {
  printf '\n--- %s (%s s so far)\n' "$1" "$((SECONDS - started))"
}

for tool in file ldd dpkg-deb tar gzip sha256sum; do
  command -v "$tool" >/dev/null || fail "needs $tool"
done
cargo deb --version >/dev/null 2>&1 || fail "needs cargo-deb: cargo install --locked cargo-deb"

pkgid=$(cargo pkgid)
version=${pkgid##*[@#]}

step "static build ($profile profile, $target, crt-static)"
RUSTFLAGS='-C target-feature=+crt-static' \
  cargo build --locked --profile "$profile" --target "$target" --bin shipit
"$bin" --version
"$bin" --version | grep -Eqx "shipit $version \([0-9a-f]{12}\)" ||
  fail "shipit --version does not say 'shipit $version (<commit>)'"
ldd_says=$(ldd "$bin" 2>&1 || true)
echo "ldd: $ldd_says"
case "$ldd_says" in
  *"not a dynamic executable"* | *"statically linked"*) ;;
  *) fail "ldd lists shared libraries: $ldd_says" ;;
esac
file_says=$(file -b "$bin")
echo "file: $file_says"
case "$file_says" in
  *"statically linked"* | *"static-pie linked"*) ;;
  *) fail "file does not call it static: $file_says" ;;
esac

step "man pages and completions (scripts/dist-assets.sh)"
scripts/dist-assets.sh dist/assets "$bin"
ls -l dist/assets/man dist/assets/completions

step "release tarball (scripts/dist-tarball.sh)"
rm -rf "$out"
tarball=$(scripts/dist-tarball.sh "$version" "$target" "$bin" dist/assets "$out")
name="shipit-$version-$target"
listing=$(tar -tzf "$tarball")
echo "$listing"
for entry in shipit README.md LICENSE-MIT LICENSE-APACHE man/shipit.1 \
  completions/shipit.bash completions/_shipit completions/shipit.fish; do
  grep -qx "$name/$entry" <<<"$listing" || fail "$tarball lacks $name/$entry"
done
first=$(sha256sum <"$tarball")
scripts/dist-tarball.sh "$version" "$target" "$bin" dist/assets "$out" >/dev/null
[ "$(sha256sum <"$tarball")" = "$first" ] || fail "packing twice gave different tarballs"

step "Debian package (cargo deb --no-build)"
# --fast: light compression, the contents are what is checked.
cargo deb --no-build --no-strip --fast --profile "$profile" --target "$target" --output "$out"
debs=("$out"/*.deb)
[ ${#debs[@]} -eq 1 ] && [ -f "${debs[0]}" ] || fail "expected one .deb in $out"
deb=${debs[0]}
contents=$(dpkg-deb -c "$deb")
echo "$contents"
for path in ./usr/bin/shipit ./usr/share/man/man1/shipit.1.gz \
  ./usr/share/bash-completion/completions/shipit \
  ./usr/share/zsh/vendor-completions/_shipit \
  ./usr/share/fish/vendor_completions.d/shipit.fish; do
  grep -q " $path\$" <<<"$contents" || fail "$deb lacks $path"
done
grep -Eq '^-rwxr-xr-x (root/root|0/0) .* \./usr/bin/shipit$' <<<"$contents" ||
  fail "/usr/bin/shipit is not an executable owned by root"
dpkg-deb -f "$deb" Package Version Architecture Depends
[ "$(dpkg-deb -f "$deb" Package)" = shipit ] || fail "the package is not called shipit"
[ "$(dpkg-deb -f "$deb" Architecture)" = amd64 ] || fail "the package is not amd64"
unpacked=$(mktemp -d)
trap 'rm -rf "$unpacked"' EXIT
dpkg-deb -x "$deb" "$unpacked"
"$unpacked/usr/bin/shipit" --version | grep -Eqx "shipit $version \([0-9a-f]{12}\)" ||
  fail "the packaged binary does not run"

step "the .deb installed on a test server (the e2e tier's Debian base image)"
# The tier's servers are Debian with dpkg: install the package into an overlay of their
# base image with the image's own dpkg, run it from /usr/bin, find its man page and
# completions where Debian looks, remove it, and check nothing is left. Needs root and the
# base image (`cargo test` builds it first, under /var/tmp/shipit-testbed).
base=$(ls -d /var/tmp/shipit-testbed/base-*/ 2>/dev/null | head -n 1 || true)
if [ "$(id -u)" != 0 ] || [ -z "$base" ] || [ ! -f "$base/.testbed-complete" ]; then
  echo "!!!!!!!! the .deb was NOT installed on a test server: needs root and the e2e base image"
  echo "!!!!!!!! (run \`cargo test\` first, as root) !!!!!!!!"
else
  server=$(mktemp -d)
  mkdir -p "$server/upper" "$server/work" "$server/root"
  mount -t overlay overlay -o "lowerdir=$base,upperdir=$server/upper,workdir=$server/work" \
    "$server/root"
  trap 'umount "$server/root" 2>/dev/null; rm -rf "$unpacked" "$server"' EXIT
  cp "$deb" "$server/root/tmp/shipit.deb"
  chroot "$server/root" dpkg -i /tmp/shipit.deb
  chroot "$server/root" /usr/bin/shipit --version | grep -Eqx "shipit $version \([0-9a-f]{12}\)" ||
    fail "the installed shipit does not run on the server"
  for path in /usr/share/man/man1/shipit.1.gz /usr/share/bash-completion/completions/shipit; do
    [ -f "$server/root$path" ] || fail "the installed package lacks $path"
  done
  chroot "$server/root" dpkg -s shipit | grep -q '^Status: install ok installed' ||
    fail "dpkg does not list shipit as installed"
  chroot "$server/root" dpkg -r shipit
  [ ! -e "$server/root/usr/bin/shipit" ] || fail "dpkg -r left /usr/bin/shipit behind"
  echo "installed, ran and removed on a copy of the test servers' Debian"
fi

step "done: the release checks passed"
