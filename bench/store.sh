#!/usr/bin/env bash
# Push versus artifact store, with the deployer's uplink limited.
#
# Boots an nspawn testbed of N hosts (tests/testbed) with an S3-compatible store on the
# hosts' LAN (tests/testbed/store.sh: s3s-fs), limits what the deployer's network
# namespace sends to RATE (tc tbf; store -> host traffic is not limited), and deploys the
# example app as a whole new artifact (`delta: off`, a new version each time) R times
# each way, interleaved: `push` (no `artifacts:`) and `store` (`artifacts:`). Prints per
# round the wall time and the bytes the deployer sent, then medians.
#
#   bench/store.sh [--hosts N] [--rounds R] [--rate 20mbit] [--smoke]   (root)
set -euo pipefail
cd "$(dirname "$0")/.."
HOSTS=10 ROUNDS=3 RATE=20mbit
while [ $# -gt 0 ]; do
  case $1 in
    --hosts) HOSTS=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    --smoke) HOSTS=2; ROUNDS=1; shift ;;
    *) echo "usage: $0 [--hosts N] [--rounds R] [--rate 20mbit] [--smoke]" >&2; exit 2 ;;
  esac
done
cargo build -q --bin shipit --example hello
SHIPIT=$PWD/target/debug/shipit
NAME=bench-store
WORK=$(mktemp -d)
trap 'tests/testbed/down.sh --name "$NAME" >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT
tests/testbed/up.sh "$HOSTS" --name "$NAME" >/dev/null
STATE=/run/shipit-testbed/$NAME
NS=$(sed -n 's/.*"client_netns": "\([^"]*\)".*/\1/p' "$STATE/testbed.json")
IPS=$(sed -n 's/.*"ip": "\([^"]*\)".*/\1/p' "$STATE/testbed.json" | paste -sd, -)
SECRET=bench-secret-$$
STORE=$(STORE_SECRET=$SECRET tests/testbed/store.sh --name "$NAME" up)
ENDPOINT=$(printf '%s' "$STORE" | sed -n 's/.*"endpoint": "\([^"]*\)".*/\1/p')
tests/testbed/store.sh --name "$NAME" shape --rate "$RATE" >/dev/null

project() { # project DIR STORE(0|1)
  local d=$1
  mkdir -p "$d/pkg/bin" "$d/deploy"
  cp target/debug/examples/hello "$d/pkg/bin/hello"
  cp examples/hello/deploy/hello.service "$d/deploy/"
  {
    echo "app: hello"
    echo "package: {root: pkg, include: [bin, VERSION]}"
    echo "ssh: {user: deploy, identity_files: [$STATE/client_key], known_hosts_file: $STATE/known_hosts}"
    echo "env: {PORT: '8080'}"
    echo "service: {name: hello, unit_file: deploy/hello.service, sudo: true}"
    echo "health: {http: {url: 'http://127.0.0.1:8080/healthz'}, timeout: 15s, interval: 100ms}"
    echo "delta: off"
    echo "rollout: {parallel: 20, canary: 0}"
    if [ "$2" = 1 ]; then
      echo "artifacts: {store: 's3://shipit-test/bench/', endpoint: '$ENDPOINT', region: us-east-1}"
    fi
    echo "hosts: [$IPS]"
  } >"$d/deploy.yaml"
}
project "$WORK/push" 0
project "$WORK/store" 1

sent() { ip netns exec "$NS" cat /sys/class/net/br0/statistics/tx_bytes; }
v=0
declare -A times bytes
for r in $(seq 1 "$ROUNDS"); do
  for how in push store; do
    v=$((v + 1))
    echo "$v" >"$WORK/$how/pkg/VERSION"
    sync
    b0=$(sent); t0=$(date +%s.%N)
    (cd "$WORK/$how" && AWS_ACCESS_KEY_ID=shipit-test-key AWS_SECRET_ACCESS_KEY=$SECRET \
      AWS_EC2_METADATA_DISABLED=true ip netns exec "$NS" "$SHIPIT" deploy --app-version "$v" \
      >"$WORK/$how.out" 2>&1) || { cat "$WORK/$how.out" >&2; exit 1; }
    t1=$(date +%s.%N); b1=$(sent)
    times[$how]+="$(echo "$t1 - $t0" | bc) "
    bytes[$how]+="$((b1 - b0)) "
    printf 'round %d %-5s %6.1f s  deployer sent %6.1f MB\n' "$r" "$how" \
      "$(echo "$t1 - $t0" | bc)" "$(echo "($b1 - $b0) / 1000000" | bc -l)"
  done
done
size=$(stat -c %s "$WORK"/store/dist/*-"$v".tar.gz 2>/dev/null || stat -c %s "$WORK"/push/dist/*.tar.gz | tail -n 1)
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "hosts $HOSTS, uplink $RATE, artifact $((size / 1000)) kB, $ROUNDS round(s)"
for how in push store; do
  printf '%-5s median %6.1f s (all: %s)  median sent %6.1f MB\n' "$how" \
    "$(echo "${times[$how]}" | median)" "${times[$how]}" \
    "$(echo "$(echo "${bytes[$how]}" | median) / 1000000" | bc -l)"
done
