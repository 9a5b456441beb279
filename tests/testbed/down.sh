#!/usr/bin/env bash
# down.sh [--name TESTBED] [--purge-cache]
#
# Tears down the nspawn testbed TESTBED (default "default"): SIGTERM each nspawn by PID
# (bounded wait, then SIGKILL), umount the overlays, remove the cgroup subtrees
# depth-first, delete the network namespaces, remove nspawn's propagate/<machine> dirs and
# the state dir. Idempotent; works on a half-built testbed. --purge-cache also deletes the
# cached base image under /var/tmp/shipit-testbed (if no testbed uses it).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$here/lib.sh"

tb_parse_name "$@"
purge=0
for a in "${TB_ARGS[@]+"${TB_ARGS[@]}"}"; do
    case $a in
        --purge-cache) purge=1 ;;
        *) sed -n '2,8s/^# \{0,1\}//p' "$0" >&2; exit 2 ;;
    esac
done
tb_require_root
tb_teardown
tb_log "testbed '$TB_NAME' is down"
if ((purge)); then
    if grep -qF "lowerdir=$TB_CACHE_DIR/" /proc/self/mountinfo; then
        tb_die "base cache still in use by another testbed; not purged"
    fi
    tb_rm_tree "$TB_CACHE_DIR"
    tb_log "removed $TB_CACHE_DIR"
fi
