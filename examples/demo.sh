#!/usr/bin/env bash
# The shipit demo, on one throwaway real server.
#
# Boots a Debian host with systemd under systemd-nspawn (tests/testbed), deploys the
# example app (examples/hello), deploys a changed version, deploys a broken version and
# lets shipit roll it back by itself, shows `status`, runs `rollback`, and tears the host
# down again, also on failure. Needs root (systemd-nspawn, network namespaces); the first
# run builds the testbed's base image (about a minute), later runs take seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
name=shipit-demo
work=$(mktemp -d)
cleanup() { tests/testbed/down.sh --name "$name" >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT

say() { printf '\n\033[1m### %s\033[0m\n' "$*"; }

say "building shipit and the example app"
cargo build --release --quiet --bin shipit --example hello

say "booting one throwaway server"
state=$(tests/testbed/up.sh 1 --name "$name" | tail -n 1)
ip=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["hosts"][0]["ip"])' "$state/testbed.json")
echo "host1 is $ip (systemd as PID 1, sshd, a deploy user with sudo)"

# The example's deploy.yaml, pointed at the throwaway host and the testbed's key.
mkdir -p "$work/build/bin" "$work/deploy"
cp target/release/examples/hello "$work/build/bin/hello"
cp examples/hello/deploy/hello.service "$work/deploy/"
sed -e "s|^  - cd ../.. && cargo build.*|  - echo using the prebuilt example binary|" \
    -e "s|^    hosts: \[\]|    hosts: [$ip]|" \
    -e "s|^  user: deploy|  user: deploy\n  identity_files: [$state/client_key]\n  known_hosts_file: $state/known_hosts|" \
    examples/hello/deploy.yaml > "$work/deploy.yaml"

shipit() { echo "\$ shipit $*"; tests/testbed/client.sh --name "$name" "$PWD/target/release/shipit" -c "$work/deploy.yaml" "$@"; }
on_host() { tests/testbed/fault.sh --name "$name" exec host1 sh -c "$1"; }

say "1. first deploy"
shipit deploy --app-version 1.0
echo "the app answers: $(on_host 'curl -s http://127.0.0.1:8080/')"

say "2. a changed version"
sleep 1 # release ids have one-second resolution
HELLO_MESSAGE="hello from version 2" shipit deploy --app-version 2.0
echo "the app answers: $(on_host 'curl -s http://127.0.0.1:8080/')"

say "3. a broken version: it crashes at start, shipit puts version 2 back"
sleep 1
rc=0
HELLO_MESSAGE="hello from version 2" HELLO_MODE=crash shipit deploy --app-version 3.0 || rc=$?
echo "exit code $rc (5: unhealthy, and every host is back on its old release)"
echo "the app still answers: $(on_host 'curl -s http://127.0.0.1:8080/')"

say "4. what runs where"
shipit status --releases --history 5

say "5. on-call at 3 AM: back to version 1"
shipit rollback
echo "the app answers: $(on_host 'curl -s http://127.0.0.1:8080/')"
shipit status

say "done; tearing the host down"
