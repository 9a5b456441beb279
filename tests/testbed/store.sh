#!/usr/bin/env bash
# store.sh [--name TESTBED] COMMAND [ARG...]
#
# An S3-compatible artifact store (s3s-fs: checks SigV4 signatures and the expiry of
# presigned URLs) beside a running nspawn testbed (made by up.sh), on the hosts' LAN:
#   up [--port P]          netns <prefix>-store, veth into the client netns' bridge,
#                          10.200.<k>.2; starts the server (default port 9000), creates the
#                          bucket shipit-test, waits until it answers (bounded), prints
#                          one JSON line: endpoint, bucket, access_key, secret_key, region
#                          (also kept in <state dir>/store/store.json). Restarts a store
#                          that is up. Secret: $STORE_SECRET (default a fixed test value).
#   down                   stop the server, delete its netns and veth (down.sh does it too)
#   info                   print the JSON line of the running store
#   block HOST             blackhole route to the store inside HOST's netns: HOST cannot
#                          reach the store (connect fails at once), SSH to HOST still works
#   unblock HOST           undo block
#   shape --rate R         limit what the client netns itself sends (tbf on br0's egress:
#                          uploads to the store and SSH to the hosts), e.g. R=20mbit;
#                          store->host and host->host traffic is bridged and not limited
#   unshape                remove the limit
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$here/lib.sh"

usage() { sed -n '2,23s/^# \{0,1\}//p' "$0" >&2; exit 2; }

STORE_ACCESS_KEY=shipit-test-key
STORE_SECRET=${STORE_SECRET:-shipit-test-secret-not-a-real-one}
STORE_BUCKET=shipit-test
STORE_REGION=us-east-1
STORE_READY_TIMEOUT=${STORE_READY_TIMEOUT:-20}

tb_parse_name "$@"
set -- "${TB_ARGS[@]+"${TB_ARGS[@]}"}"
(($#)) || usage
cmd=$1
shift
tb_require_root
[[ -e /run/netns/$TB_CLIENT_NS && -s $TB_STATE/subnet ]] || tb_die "testbed '$TB_NAME' is not up"
k=$(tb_subnet_k)
net=10.200.$k
ns=$(tb_store_ns)
sd=$(tb_store_dir)

# The server binary: $STORE_SERVER, else s3s-fs on PATH or in cargo's bin dir.
store_server() {
    local c
    for c in "${STORE_SERVER:-}" "$(command -v s3s-fs 2>/dev/null || true)" "${CARGO_HOME:-$HOME/.cargo}/bin/s3s-fs"; do
        [[ -n $c && -x $c ]] && { printf '%s' "$c"; return 0; }
    done
    tb_die "s3s-fs not found (install: cargo install --locked s3s-fs@0.14.1 --features binary; or set STORE_SERVER)"
}

# s3.py (stdlib S3 client) against this store, from the client netns.
s3() {
    STORE_SECRET=$STORE_SECRET ip netns exec "$TB_CLIENT_NS" python3 "$here/s3.py" \
        --endpoint "http://$net.2:$port" --bucket "$STORE_BUCKET" --access-key "$STORE_ACCESS_KEY" \
        --region "$STORE_REGION" --timeout 2 "$@"
}

store_up() {
    local server pid deadline
    port=9000
    while (($#)); do
        case $1 in
            --port) (($# >= 2)) || usage; port=$2; shift 2 ;;
            *) usage ;;
        esac
    done
    if ! [[ $port =~ ^[0-9]+$ ]] || ((port < 1 || port > 65535)); then tb_die "bad port '$port'"; fi
    [[ $STORE_SECRET =~ ^[!-~]+$ ]] || tb_die "STORE_SECRET must be printable ASCII without spaces"
    server=$(store_server)
    tb_store_teardown # a fresh store, as up.sh gives a fresh testbed
    rm -rf --one-file-system "$sd"
    mkdir -p "$sd/data"

    ip netns add "$ns"
    # A fixed MAC per subnet: after a restart, the neighbour caches of the client and the
    # hosts still hold the old store's MAC, and a new random one would leave them sending
    # into the void until the entries go stale (measured: the first requests hang ~20 s).
    ip -n "$TB_CLIENT_NS" link add vstore type veth peer name eth0 \
        address "$(printf '02:5e:c8:%02x:00:02' "$k")" netns "$ns"
    ip -n "$TB_CLIENT_NS" link set vstore master br0 up
    ip -n "$ns" link set lo up
    ip -n "$ns" addr add "$net.2/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" route add default via "$net.1"

    # In its netns, own session, no terminal; the PID in the pid file is the server's.
    # (The secret is on its command line: s3s-fs takes it nowhere else.)
    # shellcheck disable=SC2016 # $$ and $@ belong to the inner shell
    RUST_LOG=${STORE_RUST_LOG:-warn} ip netns exec "$ns" setsid bash -c \
        'echo $$ >"$1.tmp"; mv "$1.tmp" "$1"; shift; exec "$@"' tb-store "$sd/pid" \
        "$server" --host "$net.2" --port "$port" --access-key "$STORE_ACCESS_KEY" \
        --secret-key "$STORE_SECRET" "$sd/data" </dev/null >"$sd/server.log" 2>&1 &
    deadline=$((SECONDS + STORE_READY_TIMEOUT))
    until [[ -s $sd/pid ]]; do
        ((SECONDS < deadline)) || tb_die "store server did not start"
        sleep 0.05
    done
    pid=$(cat "$sd/pid")
    # Bounded wait: the bucket is created through the API (a signed PUT), which also
    # proves that the server answers and checks signatures with our keys.
    until s3 mkbucket 2>>"$sd/ready.err"; do
        if ! tb_alive "$pid"; then tail -n 20 "$sd/server.log" >&2; tb_die "store server exited"; fi
        if ((SECONDS >= deadline)); then
            tail -n 5 "$sd/ready.err" "$sd/server.log" >&2
            tb_die "store did not answer within ${STORE_READY_TIMEOUT}s"
        fi
        sleep 0.1
    done
    s3 ping || tb_die "bucket $STORE_BUCKET not reachable after creation"
    printf '{"endpoint": "http://%s:%s", "bucket": "%s", "access_key": "%s", "secret_key": %s, "region": "%s", "ip": "%s", "port": %s, "netns": %s, "pid": %s, "data_dir": %s, "log": %s}\n' \
        "$net.2" "$port" "$STORE_BUCKET" "$STORE_ACCESS_KEY" "$(tb_json_str "$STORE_SECRET")" \
        "$STORE_REGION" "$net.2" "$port" "$(tb_json_str "$ns")" "$pid" \
        "$(tb_json_str "$sd/data")" "$(tb_json_str "$sd/server.log")" >"$sd/store.json.tmp"
    chmod 0600 "$sd/store.json.tmp"
    mv "$sd/store.json.tmp" "$sd/store.json"
    tb_log "artifact store up: http://$net.2:$port bucket $STORE_BUCKET (pid $pid)"
    cat "$sd/store.json"
}

# Rate for tc: digits with an optional k/m/g and bit/bps unit (tc's own syntax), which
# gives the burst: 10 ms worth, at least 16 KiB.
tbf_burst() {
    local r=${1,,} n unit mult=1
    [[ $r =~ ^([0-9]+)(k|m|g)?(bit|bps)$ ]] || tb_die "bad rate '$1' (e.g. 20mbit, 500kbit, 2mbps)"
    n=${BASH_REMATCH[1]} unit=${BASH_REMATCH[2]}
    case $unit in k) mult=1000 ;; m) mult=1000000 ;; g) mult=1000000000 ;; esac
    n=$((n * mult))
    [[ ${BASH_REMATCH[3]} == bps ]] || n=$((n / 8)) # bytes per second
    n=$((n / 100))
    ((n >= 16384)) || n=16384
    printf '%s' "$n"
}

host_arg() {
    (($# == 1)) || usage
    tb_host_index "$1" >/dev/null
    [[ -d $(tb_host_dir "$1") ]] || tb_die "testbed '$TB_NAME' has no $1"
    [[ -e /run/netns/$(tb_host_ns "$1") ]] || tb_die "no netns for $1"
}

case $cmd in
    up) store_up "$@" ;;
    down) (($# == 0)) || usage; tb_store_teardown; rm -rf --one-file-system "$sd"; tb_log "artifact store down" ;;
    info) [[ -s $sd/store.json ]] || tb_die "no artifact store in testbed '$TB_NAME'"; cat "$sd/store.json" ;;
    block)
        host_arg "$@"
        ip -n "$(tb_host_ns "$1")" route replace blackhole "$net.2/32"
        ;;
    unblock)
        host_arg "$@"
        ip -n "$(tb_host_ns "$1")" route del blackhole "$net.2/32" 2>/dev/null || true
        ;;
    shape)
        if (($# != 2)) || [[ $1 != --rate ]]; then usage; fi
        # br0's own transmit path carries only what the client netns sends; frames the
        # bridge forwards between ports (store <-> hosts) go straight to the port's veth.
        burst=$(tbf_burst "$2")
        tc -n "$TB_CLIENT_NS" qdisc replace dev br0 root tbf rate "$2" burst "$burst" latency 100ms
        ;;
    unshape)
        (($# == 0)) || usage
        tc -n "$TB_CLIENT_NS" qdisc del dev br0 root 2>/dev/null || true
        ;;
    *) usage ;;
esac
