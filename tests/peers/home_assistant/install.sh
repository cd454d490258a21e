#!/usr/bin/env bash
# Install Home Assistant 2024.3.3 (the newest release for Python 3.11) for the end-to-end tests
# into its own virtual environment, .peers/home-assistant/venv (or $SIMPUL_HA_VENV), and start it
# once so that it installs the requirements of its default integrations. Does nothing when that
# has been done already; a failed or interrupted run is started over.
set -euo pipefail
cd "$(dirname "$0")/../../.."

VERSION=2024.3.3
PYTHON=${PYTHON:-python3.11}
VENV=${SIMPUL_HA_VENV:-.peers/home-assistant/venv}
STAMP="$VENV/.installed-$VERSION"

if [ -f "$STAMP" ]; then
  echo "Home Assistant $VERSION is already installed in $VENV"
  exit 0
fi

started=$(date +%s)
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
# pip warns about every package that the local index folders in this machine's pip config do not
# have; those hundreds of lines are left out, and pip's exit status is kept. josepy 2 removed an
# API that Home Assistant's acme dependency uses, so without the pin every HTTP request fails.
"$VENV/bin/pip" install --quiet --disable-pip-version-check "homeassistant==$VERSION" "josepy<2" 2>&1 \
  | { grep -v "^WARNING: Location '.*' is ignored: it is neither a file nor a directory" || true; }
echo "installed Home Assistant $VERSION in $VENV after $(( $(date +%s) - started )) s; starting it once"
"$VENV/bin/python" tests/peers/home_assistant/peer.py warm-up
touch "$STAMP"
echo "Home Assistant $VERSION is ready in $VENV after $(( $(date +%s) - started )) s"
