#!/usr/bin/env bash
# Installs everything Ferry needs on a fresh machine of this kind:
#   - uv (into .tools/), then the workspace's locked packages into .venv/ (nats-server included);
#   - when run as root, the Debian packages the tests use (scripts/debian-packages.txt).
set -euo pipefail
cd "$(dirname "$0")/.."

python=""
for candidate in "${PYTHON:-}" python3.11 python3; do
    if [ -n "$candidate" ] && command -v "$candidate" >/dev/null 2>&1 &&
        "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
        python=$(command -v "$candidate")
        break
    fi
done
if [ -z "$python" ]; then
    echo "setup: Python 3.11 is required (set PYTHON=/path/to/python3.11)" >&2
    exit 1
fi

if [ ! -x .tools/bin/uv ]; then
    echo "setup: installing uv into .tools/"
    "$python" -m venv .tools
    .tools/bin/pip install --quiet "uv==0.13.8"
fi

export UV_PYTHON_DOWNLOADS=never
.tools/bin/uv sync --quiet --frozen --all-packages --python "$python"

if [ "$(id -u)" = 0 ] && [ "${FERRY_SKIP_APT:-0}" != 1 ]; then
    scripts/install-debian-packages.sh
fi
