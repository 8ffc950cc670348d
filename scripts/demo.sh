#!/bin/bash
# `make demo`: start a control plane on the embedded store and deploy the
# example app. (Until the node agent lands, pods stay Pending: no nodes.)
#   scripts/demo.sh DIR          start (idempotent) and apply deploy/examples/
#   scripts/demo.sh --down DIR   stop the control plane started here
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin

if [ "${1:-}" = "--down" ]; then
    dir="${2:?usage: demo.sh --down DIR}"
    if [ -f "$dir/serve.pid" ] && kill -0 "$(cat "$dir/serve.pid")" 2>/dev/null; then
        kill "$(cat "$dir/serve.pid")" && echo "demo: control plane stopped"
    fi
    rm -f "$dir/serve.pid"
    exit 0
fi

dir="${1:?usage: demo.sh DIR}"
mkdir -p "$dir"
if [ ! -f "$dir/cluster.json" ]; then
    $BIN/orchestrator init --data-dir "$dir"
fi
export ORCHCONFIG="$dir/admin.conf"
if ! { [ -f "$dir/serve.pid" ] && kill -0 "$(cat "$dir/serve.pid")" 2>/dev/null; }; then
    nohup $BIN/orchestrator serve --data-dir "$dir" >"$dir/serve.log" 2>&1 &
    echo $! > "$dir/serve.pid"
    echo "demo: control plane starting (pid $(cat "$dir/serve.pid"), log $dir/serve.log)"
fi
for _ in $(seq 1 100); do
    $BIN/orchctl version >/dev/null 2>&1 && break
    sleep 0.2
done
$BIN/orchctl version
$BIN/orchctl apply -f deploy/examples/
$BIN/orchctl get deploy,svc,cm -n hello
echo
echo "demo: export ORCHCONFIG=$ORCHCONFIG to use orchctl; 'make demo-down' stops it."
