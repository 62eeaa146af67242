#!/usr/bin/env bash
# Cross-check with a gRPC client this project did not write: Python grpcio.
# Usage: cross_check.sh SOCKET_PATH
# Makes (once) a venv with grpcio, grpcio-health-checking, grpcio-reflection and grpcio-tools,
# generates Python stubs from proto/, and runs cross_check.py against the agent's Unix socket.
set -euo pipefail
socket=${1:?usage: cross_check.sh SOCKET_PATH}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
venv=${HEALTH_PY_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/health-agent/venv-grpc}

if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import grpc, grpc_health, grpc_reflection, grpc_tools' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    'grpcio>=1.66,<2' 'grpcio-health-checking>=1.66,<2' 'grpcio-reflection>=1.66,<2' 'grpcio-tools>=1.66,<2'
fi

gen=$(mktemp -d)
trap 'rm -rf "$gen"' EXIT
"$venv/bin/python" -m grpc_tools.protoc -I "$root/proto" --python_out="$gen" --grpc_python_out="$gen" \
  "$root"/proto/health/v1/*.proto
PYTHONPATH="$gen" "$venv/bin/python" "$here/cross_check.py" "unix://$socket"
