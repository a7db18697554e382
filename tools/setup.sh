#!/usr/bin/env bash
# Sets up .venv with mflc and its test dependencies. Prefers Python 3.10 so that the `lava`
# extra (lava-nc 0.10.0 imports only on 3.10, numpy<2) can be installed; otherwise installs the
# core without lava and says so.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=""
for cand in "${MFLC_PYTHON:-}" python3.10 "$(command -v pyenv >/dev/null 2>&1 && ls -d "$(pyenv root)"/versions/3.10.*/bin/python 2>/dev/null | tail -1)"; do
  if [ -n "$cand" ] && command -v "$cand" >/dev/null 2>&1; then PY="$cand"; break; fi
done
EXTRAS="dev,plot,lava"
if [ -z "$PY" ]; then
  PY=python3
  EXTRAS="dev,plot"
  echo "mflc setup: no Python 3.10 found; installing the core WITHOUT lava-nc (Lava tests will be skipped)." >&2
fi
if [ ! -x .venv/bin/python ]; then "$PY" -m venv .venv; fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[${EXTRAS}]"
echo "mflc setup: $(.venv/bin/python --version) in .venv with extras [${EXTRAS}]"
