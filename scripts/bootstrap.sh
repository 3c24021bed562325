#!/usr/bin/env bash
# Creates .venv in the checkout and installs ds01 with its development tools into it.
# Needs python3 with venv and pip (Debian: python3-venv, installed by .ci/setup-system.sh).
#
#   scripts/bootstrap.sh [--venv DIR] [--no-install]
#
# The interpreter is the distribution's /usr/bin/python3 (or $PYTHON): ds01 and ds01d run on it
# for every user, so one under a private directory (pyenv under /root, mode 0700) is refused,
# saying why. A venv that cannot run, or runs on such an interpreter, is rebuilt.
# --venv DIR makes (or checks) that venv instead of .venv; --no-install stops after the venv.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv
install=1
while [ $# -gt 0 ]; do
    case "$1" in
        --venv) venv=$2; shift 2 ;;
        --no-install) install=0; shift ;;
        *) echo "usage: $0 [--venv DIR] [--no-install]" >&2; exit 2 ;;
    esac
done

# Prints why PATH (after following links) cannot be run by every user; silent when it can.
unreachable() {
    local real dir
    real=$(readlink -f "$1") || { echo "$1 does not exist"; return; }
    [ -e "$real" ] || { echo "$1 points to $real, which does not exist"; return; }
    case "$(stat -c %A "$real")" in
        ?????????[xt]) ;;
        *) echo "$real is not executable by other users (mode $(stat -c %a "$real"))"; return ;;
    esac
    dir=$(dirname "$real")
    while :; do
        case "$(stat -c %A "$dir")" in
            ?????????[xt]) ;;
            *) echo "other users cannot enter $dir (mode $(stat -c %a "$dir"))"; return ;;
        esac
        [ "$dir" = / ] && return
        dir=$(dirname "$dir")
    done
}

if [ -n "${PYTHON:-}" ]; then
    py=$PYTHON
elif [ -x /usr/bin/python3 ]; then
    py=/usr/bin/python3
else
    py=$(command -v python3 || true)
    [ -n "$py" ] || { echo "bootstrap: no python3 (Debian: apt-get install python3-venv)" >&2; exit 1; }
fi
why=$(unreachable "$(command -v "$py" || echo "$py")")
if [ -n "$why" ]; then
    echo "bootstrap: refusing $py: $why, so ordinary users could not run ds01" >&2
    echo "  (their shell would say 'Permission denied'). Use the distribution's python3" >&2
    echo "  (unset PYTHON; apt-get install python3-venv) or one under /usr/local or /opt." >&2
    exit 1
fi
"$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
    echo "bootstrap: $py is $("$py" -V 2>&1); ds01 needs Python 3.11 or newer" >&2
    exit 1
}

# An existing venv is kept only when it runs and every user can run its interpreter.
if [ -e "$venv" ] || [ -L "$venv/bin/python" ]; then
    broken=""
    if [ ! -e "$venv/bin/python" ]; then
        broken="$venv/bin/python is missing or points nowhere"
    elif ! "$venv/bin/python" -c 'import sys' >/dev/null 2>&1; then
        broken="$venv/bin/python does not run"
    else
        broken=$(unreachable "$venv/bin/python")
    fi
    if [ -n "$broken" ]; then
        if [ ! -f "$venv/pyvenv.cfg" ] && [ -n "$(ls -A "$venv" 2>/dev/null)" ]; then
            echo "bootstrap: $venv is not a virtual environment ($broken); move it away" >&2
            exit 1
        fi
        echo "bootstrap: rebuilding $venv: $broken"
        rm -rf "$venv"
    fi
fi
if [ ! -e "$venv/bin/python" ]; then
    "$py" -m venv "$venv"
    echo "bootstrap: made $venv with $py ($("$py" -V 2>&1))"
fi
[ "$install" -eq 1 ] || exit 0

"$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
"$venv/bin/python" -m pip install -q --disable-pip-version-check -e '.[dev]'
echo "bootstrap: ds01 installed in $(cd "$venv" && pwd)"
here=$(unreachable "$venv/bin/ds01")
[ -z "$here" ] || echo "bootstrap: note: $here: only root can run $venv/bin/ds01 (and the tests as real users fail); clone into a directory like /opt/ds01" >&2
