#!/usr/bin/env bash
# Sets up .venv with mflc and its test dependencies. Prefers Python 3.10 so that the `lava` extra
# (lava-nc 0.10.0 imports only on 3.10, with numpy<2) can be installed; otherwise installs the core
# without lava and says so. Candidates are run, not just found: a pyenv shim can exist and still refuse.
# The `dask` extra (--workers / --scheduler; tests/test_tasks_dask.py runs a real LocalCluster) goes into
# .venv either way; CI's second, Python 3.12 run stays without it (.ci/run).
#
# --train also sets up .venv-train for tools/training/train.py (the `train` extra: torch 2.13.0, whose CPU build
# lies on these machines' disk for Python 3.11 only), which tests/test_train.py uses.
set -euo pipefail
cd "$(dirname "$0")/.."

TRAIN=0
for arg in "$@"; do
  case "$arg" in
    --train) TRAIN=1 ;;
    *) echo "usage: bash tools/setup.sh [--train]   (unknown argument: $arg)" >&2; exit 2 ;;
  esac
done

# find_python MINOR [EXPLICIT]: the first interpreter of 3.MINOR that runs: EXPLICIT, pyenv's, then PATH's.
find_python() {
  local minor="$1" cand
  local cands=("${2:-}")
  if command -v pyenv >/dev/null 2>&1; then
    for d in "$(pyenv root)"/versions/3."$minor".*; do cands+=("$d/bin/python"); done
  fi
  cands+=(python3."$minor" /usr/bin/python3."$minor" /usr/local/bin/python3."$minor")
  for cand in "${cands[@]}"; do
    if [ -n "$cand" ] && "$cand" -c "import sys; sys.exit(0 if sys.version_info[:2] == (3, $minor) else 1)" >/dev/null 2>&1; then
      echo "$cand"; return 0
    fi
  done
  return 1
}

PY="$(find_python 10 "${MFLC_PYTHON:-}" || true)"

EXTRAS="dev,plot,lava,dask"
if [ -z "$PY" ]; then
  PY=python3
  EXTRAS="dev,plot,dask"
  echo "mflc setup: no working Python 3.10 found; installing the core WITHOUT lava-nc ($("$PY" --version)); Lava tests will be skipped." >&2
fi
if [ ! -x .venv/bin/python ]; then "$PY" -m venv .venv; fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[${EXTRAS}]"
echo "mflc setup: $(.venv/bin/python --version) in .venv with extras [${EXTRAS}]"

if [ "$TRAIN" = 1 ]; then
  TPY="$(find_python 11 "${MFLC_TRAIN_PYTHON:-}" || true)"
  if [ -z "$TPY" ]; then
    echo "mflc setup: --train needs Python 3.11 (torch 2.13.0's CPU build is for 3.11); none found" >&2
    exit 1
  fi
  if [ ! -x .venv-train/bin/python ]; then "$TPY" -m venv .venv-train; fi
  .venv-train/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "is ignored: it is neither" || true
  .venv-train/bin/python -m pip install -q -e ".[train]" 2>&1 | grep -v "is ignored: it is neither" || true
  .venv-train/bin/python -c "import torch, mflc" || { echo "mflc setup: .venv-train has no working torch" >&2; exit 1; }
  echo "mflc setup: $(.venv-train/bin/python --version), torch $(.venv-train/bin/python -c 'import torch; print(torch.__version__)') in .venv-train (tools/training/train.py)"
fi
