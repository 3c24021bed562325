#!/usr/bin/env bash
# Installs the VS Code Dev Containers CLI (@devcontainers/cli, pinned) into .cache/ in the
# checkout, for tests/gate/test_gate_devcontainer.py, which runs it as a real user through the
# gate. Needs node >= 20 and npm (.ci/setup-system.sh installs nodejs and npm where missing).
# Idempotent: does nothing when the pinned version is there. Prints the executable's path.
#
#   scripts/devcontainer-cli.sh
set -euo pipefail
cd "$(dirname "$0")/.."
version=0.89.0
prefix=.cache/devcontainers-cli
bin="$prefix/node_modules/.bin/devcontainer"

if [ -x "$bin" ] && [ "$("$bin" --version 2>/dev/null)" = "$version" ]; then
    echo "$(pwd)/$bin"
    exit 0
fi
command -v npm >/dev/null || {
    echo "devcontainer-cli: npm not found (run .ci/setup-system.sh: nodejs npm)" >&2
    exit 1
}
major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$major" -lt 20 ]; then
    echo "devcontainer-cli: @devcontainers/cli $version wants node >= 20; this is node $major" >&2
fi
mkdir -p "$prefix"
npm install --prefix "$prefix" --no-audit --no-fund --loglevel=error \
    "@devcontainers/cli@$version" >&2
# The tests run it as other users: the tree must be readable and its scripts executable by all.
chmod -R a+rX .cache
echo "$(pwd)/$bin"
