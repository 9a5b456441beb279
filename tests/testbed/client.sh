#!/usr/bin/env bash
# client.sh [--name TESTBED] CMD [ARG...]
#
# Runs CMD inside the testbed's client network namespace (ip netns exec), where the hosts
# are reachable. Example:
#   tests/testbed/client.sh ssh -F /run/shipit-testbed/default/ssh_config deploy@host1 id
# Only a --name before CMD is taken as the testbed name.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$here/lib.sh"

name=${TESTBED_NAME:-default}
case ${1:-} in
    --name) (($# >= 2)) || tb_die "--name needs a value"; name=$2; shift 2 ;;
    --name=*) name=${1#--name=}; shift ;;
esac
tb_set_name "$name"
(($#)) || { sed -n '2,7s/^# \{0,1\}//p' "$0" >&2; exit 2; }
tb_require_root
[[ -e /run/netns/$TB_CLIENT_NS ]] || tb_die "testbed '$TB_NAME' is not up (no netns $TB_CLIENT_NS)"
exec ip netns exec "$TB_CLIENT_NS" "$@"
