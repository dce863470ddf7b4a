#!/usr/bin/env bash
# Install everything into .venv and run the main job: the bundled quickstart suite on the bundled model.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/evalkeeper quickstart "$@"
