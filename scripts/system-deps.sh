#!/usr/bin/env bash
# Debian packages the test-suite needs: PostgreSQL (store tests), Chromium (dashboard browser tests),
# pango/harfbuzz/fonts (WeasyPrint PDFs), poppler-utils (PDF checks). Installs only what is missing.
set -euo pipefail
PKGS=(git postgresql chromium libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz0b libharfbuzz-subset0 fonts-dejavu-core
      poppler-utils)
missing=()
for p in "${PKGS[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null; then SUDO=sudo; else
    echo "missing Debian packages: ${missing[*]} (run as root or install them)" >&2; exit 1; fi
else SUDO=""; fi
echo "installing Debian packages: ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
