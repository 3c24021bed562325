#!/usr/bin/env bash
# Creates .venv in the checkout and installs ds01 with its development tools into it.
# Needs python3 with venv and pip (Debian: python3-venv, installed by .ci/setup-system.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$py" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]'
echo "bootstrap: ds01 installed in $(pwd)/.venv"
