#!/bin/bash
# `make demo`: a 3-node local cluster on this host (orchctl cluster up), the example
# app of deploy/examples/ on it, and the nodes and pods to show for it.
#   scripts/demo.sh          bring it up (idempotent) and apply deploy/examples/
#   scripts/demo.sh --down   remove the cluster and everything it made
# The cluster lives in /var/lib/orch-local/demo; its context "demo" goes into
# $ORCHCONFIG, else ~/.orch/config.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="$PWD/.venv/bin"
NAME="${DEMO_CLUSTER:-demo}"
NODES="${DEMO_NODES:-3}"
# From a checkout the local-cluster code is importable even before setup reinstalls.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if [ "$(id -u)" -ne 0 ]; then
    # Network namespaces and a dockerd per node need root.
    command -v sudo >/dev/null || { echo "demo: needs root" >&2; exit 1; }
    echo "demo: network namespaces and dockerd need root: re-running with sudo"
    exec sudo --preserve-env=ORCHCONFIG,DEMO_CLUSTER,DEMO_NODES "$0" "$@"
fi

if [ "${1:-}" = "--down" ]; then
    exec "$BIN/orchctl" cluster down --name "$NAME"
fi

rc=0
"$BIN/orchctl" cluster up --name "$NAME" --nodes "$NODES" || rc=$?
if ! "$BIN/orchctl" --context "$NAME" version >/dev/null 2>&1; then
    echo "demo: the control plane of cluster $NAME does not answer; see the messages above" >&2
    exit 1
fi
[ "$rc" -eq 0 ] || echo "demo: some node agents failed (above); applying the examples anyway" >&2

"$BIN/orchctl" --context "$NAME" apply -f deploy/examples/

# Wait (bounded) until every pod of the examples runs, so the table below says so.
deadline=$((SECONDS + ${DEMO_WAIT:-60}))
while [ "$SECONDS" -lt "$deadline" ]; do
    pods="$("$BIN/orchctl" --context "$NAME" get pods -A --no-headers 2>/dev/null || true)"
    pending="$(awk '$4 != "Running" && $4 != "Completed"' <<<"$pods")"
    [ -n "$pods" ] && [ -z "$pending" ] && break
    sleep 1
done
echo
"$BIN/orchctl" --context "$NAME" get nodes,pods -A -o wide
echo
# The Service, as a pod sees it: by its DNS name, balanced over the three nodes.
probe="$("$BIN/orchctl" --context "$NAME" -n hello get pods -l app=hello -o name 2>/dev/null | head -1)"
if [ -n "$probe" ]; then
    echo "demo: from ${probe#pod/}: wget http://hello.hello.svc.cluster.local/"
    "$BIN/orchctl" --context "$NAME" -n hello exec "${probe#pod/}" -- \
        timeout 5 wget -q -O - http://hello.hello.svc.cluster.local/ || true
fi
echo "demo: cluster \"$NAME\" is the current context of ${ORCHCONFIG:-~/.orch/config}:"
echo "        $BIN/orchctl get pods -A -o wide"
echo "      'make demo-down' removes it."
exit "$rc"
