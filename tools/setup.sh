#!/usr/bin/env bash
# Sets up .venv with mflc and its test dependencies. Prefers Python 3.10 so that the `lava` extra
# (lava-nc 0.10.0 imports only on 3.10, with numpy<2) can be installed; otherwise installs the core
# without lava and says so. Candidates are run, not just found: a pyenv shim can exist and still refuse.
set -euo pipefail
cd "$(dirname "$0")/.."

is_py310() { [ -n "$1" ] && "$1" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 10) else 1)' >/dev/null 2>&1; }

PY=""
CANDIDATES=("${MFLC_PYTHON:-}")
if command -v pyenv >/dev/null 2>&1; then
  for d in "$(pyenv root)"/versions/3.10.*; do CANDIDATES+=("$d/bin/python"); done
fi
CANDIDATES+=(python3.10 /usr/bin/python3.10 /usr/local/bin/python3.10)
for cand in "${CANDIDATES[@]}"; do
  if is_py310 "$cand"; then PY="$cand"; break; fi
done

EXTRAS="dev,plot,lava"
if [ -z "$PY" ]; then
  PY=python3
  EXTRAS="dev,plot"
  echo "mflc setup: no working Python 3.10 found; installing the core WITHOUT lava-nc ($("$PY" --version)); Lava tests will be skipped." >&2
fi
if [ ! -x .venv/bin/python ]; then "$PY" -m venv .venv; fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[${EXTRAS}]"
echo "mflc setup: $(.venv/bin/python --version) in .venv with extras [${EXTRAS}]"
