#!/usr/bin/env bash
# Install everything (Debian packages, .venv) and run the whole test-suite. Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/system-deps.sh
bash scripts/setup.sh
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
if [ $rc -eq 5 ]; then
  echo "error: pytest collected no tests - that is a failure, not a pass" >&2
  exit 1
fi
exit $rc
