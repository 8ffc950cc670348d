#!/bin/sh
# Regenerate the committed Python stubs from protos/. `--check` fails if the
# committed stubs differ from what the protos produce.
set -eu
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
"$PY" -m grpc_tools.protoc -Iprotos --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" \
    protos/orchestrator/api/pb/*.proto
touch "$out/orchestrator/api/pb/__init__.py"
if [ "${1:-}" = "--check" ]; then
    if ! diff -r -q "$out/orchestrator/api/pb" orchestrator/api/pb -x __pycache__; then
        echo "generated stubs in orchestrator/api/pb are stale: run 'make proto' and commit" >&2
        exit 1
    fi
    echo "generated stubs are fresh"
else
    rm -rf orchestrator/api/pb
    cp -r "$out/orchestrator/api/pb" orchestrator/api/pb
fi
