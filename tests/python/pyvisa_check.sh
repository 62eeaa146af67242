#!/usr/bin/env bash
# Cross-check the simulated (or a real) SCPI TEC controller with a client this project did not
# write: pyvisa with the pure-Python pyvisa-py backend, as lab software drives instruments.
# Usage: pyvisa_check.sh HOST:PORT
# Makes (once) a venv with pyvisa and pyvisa-py, then runs pyvisa_check.py against HOST:PORT.
# The venv defaults to ${XDG_CACHE_HOME:-$HOME/.cache}/health-agent/venv-pyvisa; set
# HEALTH_PYVISA_VENV to put it elsewhere.
set -euo pipefail
addr=${1:?usage: pyvisa_check.sh HOST:PORT}
here=$(cd "$(dirname "$0")" && pwd)
venv=${HEALTH_PYVISA_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/health-agent/venv-pyvisa}

if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import pyvisa, pyvisa_py' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'pyvisa>=1.13,<2' 'pyvisa-py>=0.7,<1'
fi

exec "$venv/bin/python" "$here/pyvisa_check.py" "$addr"
