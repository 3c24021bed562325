#!/usr/bin/env bash
# Prove ds01's host access architecture on a real GPU server, in one run (issue 12, item 6).
#
#   sudo scripts/gpu-host-check.sh [--wheels DIR] [--ds01-bin DIR] [--keep]
#   sudo scripts/gpu-host-check.sh --self-test [--ds01-bin DIR]
#
# Run as root on a GPU server (a fresh VM is fine). It prints one line per claim —
# PASS, FAIL or SKIP, then what was seen — INFO lines in between, and exits 1 on any FAIL
# (2 when it cannot start at all). The claims (BRIEF §2):
#
#   queries open    a plain user's `nvidia-smi -L` and `--query-gpu` work, with the gate closed
#   layer 1         CUDA_VISIBLE_DEVICES="" for the plain user through `su -` (a login), `su`
#                   (a command through PAM, as `ssh host cmd` runs) and a real ssh login to a
#                   private sshd when openssh is installed; unset for the exempt user
#   uvm gate        with compute_gate: uvm a plain user's cuInit with CUDA_VISIBLE_DEVICES=0 set
#                   explicitly fails; the exempt user's and a granted user's succeed
#   gate survives   the plain user is still refused after a root process ran cuInit, and after
#                   20 consecutive root cuInits (what the NVIDIA container CLI does at every GPU
#                   container start); whether the node was seen open in between is an INFO line
#   revoke          with grant_expiry: terminate, `ds01 admin revoke` ends the granted user's
#                   host GPU process (SIGTERM) and the gate refuses the user again
#   doctor          `ds01 doctor` agrees: compute.cuda-refused and compute.cuda-exempt pass,
#                   nvidia-smi.not-shadowed is not a FAIL
#
# It stays out of the host's way: it re-runs itself in a private mount namespace (unshare) in
# which /etc is a copy inside a temp dir, so the two throw-away users (one plain, one exempt; the
# plain one is granted and revoked later), the group ds01-gpu-host, the files `ds01 host apply`
# writes, and ds01's config, state database and sockets exist only there and go with it. ds01 is
# installed into the temp dir (or taken from --ds01-bin). The one shared thing it changes is the
# owner and mode of the live /dev/nvidia* nodes — the gate under test — which it puts back as
# they were on exit, after stopping its ds01d. Nothing is downloaded.
#
# Options:
#   --wheels DIR    install ds01 and the packages it needs that python3 lacks from the wheels in
#                   DIR (pip --no-index --no-deps --target TMP): for hosts without a registry
#   --ds01-bin DIR  use the ds01 and ds01d in DIR (e.g. a checkout's .venv/bin) instead
#   --keep          keep the temp dir (logs, config, ds01d.log) for reading afterwards; the users
#                   and node modes are still put back
#   --self-test     no GPU needed: a fresh /dev in the namespace with stand-in NVIDIA nodes
#                   (character devices with /dev/null's numbers, so the kernel's permission
#                   check is real), stand-ins for libcuda.so.1 and nvidia-smi compiled from
#                   tests/host/fixtures/standin/ with cc (the libcuda stand-in also rewrites the
#                   uvm node for a root cuInit, as the driver does with ModifyDeviceFiles: 1),
#                   and ds01d on a simulated machine. Exercises the whole script — users, layer 1,
#                   ds01d, grant, revoke, doctor, cleanup — but proves nothing about a driver.
#
# Needs: bash, util-linux (unshare, setpriv, su), passwd (useradd), python3 with pip (unless
# --ds01-bin), the NVIDIA driver (libcuda.so.1, nvidia-smi). Optional: openssh-server and
# openssh-client for the ssh line (SKIP without them).
set -u

SCRIPT=$(readlink -f "$0")
REPO=$(cd "$(dirname "$SCRIPT")/.." && pwd)

usage() { sed -n '2,50p' "$SCRIPT" | sed 's/^# \{0,1\}//'; }

ARGS=("$@")
WHEELS="" DS01_BIN="" KEEP=0 SELF_TEST=0
while [ $# -gt 0 ]; do
    case "$1" in
        --wheels) WHEELS=${2:?--wheels needs a directory}; shift 2 ;;
        --ds01-bin) DS01_BIN=${2:?--ds01-bin needs a directory}; shift 2 ;;
        --keep) KEEP=1; shift ;;
        --self-test) SELF_TEST=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "gpu-host-check: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

# ---- into a private mount namespace --------------------------------------------------------------

if [ "${DS01_GPU_CHECK_NS-}" != 1 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "gpu-host-check: run it as root (it creates users and changes /dev/nvidia* modes)" >&2
        exit 2
    fi
    for tool in unshare setpriv su useradd userdel mount; do
        command -v "$tool" >/dev/null || { echo "gpu-host-check: $tool is missing" >&2; exit 2; }
    done
    DS01_GPU_CHECK_NS=1 exec unshare --mount --propagation private -- bash "$SCRIPT" ${ARGS[@]+"${ARGS[@]}"}
fi

FAILS=0 PASSES=0 SKIPS=0
pass() { PASSES=$((PASSES + 1)); printf 'PASS  %s\n' "$*"; }
fail() { FAILS=$((FAILS + 1)); printf 'FAIL  %s\n' "$*"; }
skip() { SKIPS=$((SKIPS + 1)); printf 'SKIP  %s\n' "$*"; }
info() { printf 'INFO  %s\n' "$*"; }
check() { # check NAME DETAIL COMMAND...: PASS when the command succeeds
    local name=$1 detail=$2
    shift 2
    if "$@"; then pass "$name: $detail"; else fail "$name: $detail"; fi
}

TMP=$(mktemp -d /tmp/ds01-gpu-check.XXXXXX) || exit 2
chmod 0755 "$TMP"
RAND=$(od -An -N2 -tx1 /dev/urandom | tr -d ' \n')
PLAIN="ds01p$RAND" EXEMPT="ds01e$RAND"
CREATED_USERS=() DS01D_PID="" SSHD_PID="" HOLD_PID="" MADE_PRIVSEP=0 ETC_BOUND=0
NODES_SAVED="$TMP/nodes-before"

# ---- cleanup: always, whatever happened ----------------------------------------------------------

stop_pid() { # stop_pid PID: TERM, up to 15 s, then KILL
    local pid=$1 i
    [ -n "$pid" ] || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for i in $(seq 150); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null
}

cleanup() {
    local status=$? user line path uid gid mode
    trap - EXIT INT TERM
    stop_pid "$HOLD_PID"
    stop_pid "$DS01D_PID"
    stop_pid "$SSHD_PID"
    [ "$MADE_PRIVSEP" = 1 ] && rm -rf /run/sshd
    if [ -s "$NODES_SAVED" ]; then
        while read -r path uid gid mode; do
            chown "$uid:$gid" "$path" 2>/dev/null && chmod "$mode" "$path" 2>/dev/null ||
                fail "cleanup: could not put back $path as $uid:$gid $mode"
        done <"$NODES_SAVED"
        info "cleanup: /dev/nvidia* owners and modes put back as they were"
    fi
    for user in ${CREATED_USERS[@]+"${CREATED_USERS[@]}"}; do
        for pid in $(pgrep -u "$user" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; done
        userdel --remove --force "$user" >/dev/null 2>&1
        if getent passwd "$user" >/dev/null; then
            fail "cleanup: user $user is still there"
        else
            info "cleanup: removed user $user"
        fi
    done
    if [ "$ETC_BOUND" = 1 ]; then
        umount /etc || umount -l /etc
    fi
    if [ "$KEEP" = 1 ]; then
        info "cleanup: kept $TMP (ds01d.log, config, state); remove it when done"
    else
        rm -rf "$TMP"
        if [ -e "$TMP" ]; then fail "cleanup: $TMP is still there"; else info "cleanup: removed $TMP"; fi
    fi
    printf 'gpu-host-check: %d pass, %d fail, %d skip\n' "$PASSES" "$FAILS" "$SKIPS"
    if [ "$FAILS" -gt 0 ]; then exit 1; fi
    if [ "$status" -ne 0 ]; then exit "$status"; fi
    exit 0
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

die() { # cannot go on: one FAIL line, then cleanup
    fail "$*"
    exit 1
}

# ---- the host, for this run: /etc copy, and (self-test) a stand-in /dev and driver ---------------

cp -a /etc "$TMP/etc" || die "setup: could not copy /etc into $TMP"
mount --bind "$TMP/etc" /etc || die "setup: could not bind $TMP/etc over /etc"
ETC_BOUND=1
mkdir -m 0755 "$TMP/home" "$TMP/run" "$TMP/state"

FAKE="$TMP/fake"
USER_PATH="/usr/local/bin:/usr/bin:/bin"
if [ "$SELF_TEST" = 1 ]; then
    STANDIN="$REPO/tests/host/fixtures/standin"
    CC=$(command -v cc || command -v gcc) || die "self-test: no C compiler (cc) to build the stand-ins"
    mkdir -m 0755 -p "$FAKE/lib" "$FAKE/bin"
    cat >"$FAKE/params" <<'EOF'
ModifyDeviceFiles: 1
DeviceFileUID: 0
DeviceFileGID: 0
DeviceFileMode: 438
EOF
    "$CC" -shared -fPIC -O1 -DPARAMS_FILE="\"$FAKE/params\"" -o "$FAKE/lib/libcuda.so.1" \
        "$STANDIN/libcuda.c" || die "self-test: building the stand-in libcuda failed"
    "$CC" -O1 -DSTANDIN_NEEDS_NODES -o "$FAKE/bin/nvidia-smi" "$STANDIN/nvidia-smi.c" ||
        die "self-test: building the stand-in nvidia-smi failed"
    chmod 0755 "$FAKE/lib/libcuda.so.1" "$FAKE/bin/nvidia-smi"
    mount -t tmpfs -o mode=0755,size=1m ds01-check-dev /dev || die "self-test: no tmpfs for /dev"
    mknod -m 0666 /dev/null c 1 3 && mknod -m 0666 /dev/zero c 1 5 &&
        mknod -m 0666 /dev/random c 1 8 && mknod -m 0666 /dev/urandom c 1 9 &&
        mknod -m 0666 /dev/full c 1 7 && mknod -m 0666 /dev/tty c 5 0 &&
        ln -s /proc/self/fd /dev/fd && mkdir -m 1777 /dev/shm ||
        die "self-test: could not make /dev"
    for node in nvidiactl nvidia0 nvidia-modeset nvidia-uvm nvidia-uvm-tools; do
        mknod -m 0666 "/dev/$node" c 1 3 || die "self-test: mknod /dev/$node"
    done
    USER_PATH="$FAKE/bin:$USER_PATH"
    LIBCUDA="$FAKE/lib/libcuda.so.1"
    export LD_LIBRARY_PATH="$FAKE/lib"  # where ds01 doctor (root) finds libcuda
    info "self-test: stand-in nodes in a private /dev, stand-in libcuda and nvidia-smi in $FAKE"
    info "self-test: the stand-in driver rewrites /dev/nvidia-uvm* for a root cuInit (ModifyDeviceFiles: 1)"
else
    LIBCUDA=$(ldconfig -p 2>/dev/null | awk '$1 == "libcuda.so.1" && /x86-64|AArch64/ && $NF !~ /stubs/ { print $NF; exit }')
    if [ -z "$LIBCUDA" ]; then
        lib_path=${LD_LIBRARY_PATH-}
        for dir in ${lib_path//:/ } /usr/lib/x86_64-linux-gnu /usr/lib/aarch64-linux-gnu \
            /usr/lib64 /usr/lib /usr/local/nvidia/lib64 /usr/local/nvidia/lib; do
            if [ -e "$dir/libcuda.so.1" ]; then LIBCUDA="$dir/libcuda.so.1"; break; fi
        done
    fi
    [ -n "$LIBCUDA" ] || die "setup: no libcuda.so.1 (is the NVIDIA driver installed?)"
    # Another ds01d would keep the nodes by its own config while this run changes them.
    if pgrep -x ds01d >/dev/null; then
        die "setup: a ds01d already runs on this host (pid $(pgrep -x ds01d | tr '\n' ' ')): stop it first"
    fi
    [ -e /dev/nvidiactl ] || nvidia-smi -L >/dev/null 2>&1 # the driver makes its nodes
    [ -e /dev/nvidiactl ] || die "setup: no /dev/nvidiactl (is the NVIDIA driver loaded?)"
    if [ -r /proc/driver/nvidia/params ]; then
        info "driver: $(grep -E '^(NVreg_)?(ModifyDeviceFiles|DeviceFile(UID|GID|Mode)):' /proc/driver/nvidia/params | tr '\n' ' ')"
    fi
    [ -e /dev/nvidia-uvm ] || nvidia-modprobe -u -c0 >/dev/null 2>&1
    if [ ! -e /dev/nvidia-uvm ]; then # CUDA's own first start loads nvidia_uvm and makes the nodes
        python3 -I -S -c 'import ctypes, sys; ctypes.CDLL(sys.argv[1]).cuInit(0)' "$LIBCUDA" >/dev/null 2>&1
    fi
fi
for path in /dev/nvidiactl /dev/nvidia[0-9]* /dev/nvidia-modeset /dev/nvidia-uvm /dev/nvidia-uvm-tools; do
    [ -e "$path" ] && stat -c '%n %u %g %a' "$path" >>"$NODES_SAVED"
done
[ -e /dev/nvidia-uvm ] || die "setup: no /dev/nvidia-uvm (nvidia_uvm not loaded?)"
info "libcuda: $LIBCUDA"
info "nodes before: $(stat -c '%n %U:%G %a' /dev/nvidia* | tr '\n' ' ')"

# ---- ds01, from the temp dir ---------------------------------------------------------------------

PY=$(command -v python3) || die "setup: no python3"
if [ -n "$DS01_BIN" ]; then
    DS01="$DS01_BIN/ds01" DS01D="$DS01_BIN/ds01d"
    [ -x "$DS01" ] && [ -x "$DS01D" ] || die "setup: no ds01/ds01d in $DS01_BIN"
else
    SITE="$TMP/site"
    "$PY" -m pip --version >/dev/null 2>&1 || die "setup: python3 has no pip (or use --ds01-bin)"
    PIP=("$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir
        --disable-pip-version-check --target "$SITE")
    if [ -n "$WHEELS" ]; then
        "${PIP[@]}" "$WHEELS"/*.whl >"$TMP/pip.log" 2>&1 ||
            die "setup: installing the wheels of $WHEELS failed: $(tail -1 "$TMP/pip.log")"
    fi
    from_site='import ds01, sys; sys.exit(not ds01.__file__.startswith(sys.argv[1]))'
    if ! PYTHONPATH="$SITE" "$PY" -c "$from_site" "$SITE" 2>/dev/null; then
        # Built from a copy: an in-tree build would leave build/ and *.egg-info in the checkout.
        mkdir "$TMP/src" && cp -a "$REPO/pyproject.toml" "$REPO/README.md" "$REPO/src" "$TMP/src/" ||
            die "setup: could not copy ds01's sources from $REPO"
        "${PIP[@]}" --no-build-isolation "$TMP/src" >"$TMP/pip.log" 2>&1 ||
            die "setup: installing ds01 from $REPO failed: $(grep -m1 -E '^ *(error|ERROR):' "$TMP/pip.log" | sed 's/^ *//') (or build its wheel elsewhere, \`pip wheel --no-deps -w DIR .\`, and pass --wheels DIR)"
    fi
    missing=$(PYTHONPATH="$SITE" "$PY" -c 'import ds01.cli.main, ds01.daemon.main' 2>&1 | tail -1)
    [ -z "$missing" ] || die "setup: ds01 cannot start: $missing (pass --wheels DIR with the missing packages)"
    mkdir -m 0755 "$TMP/bin"
    for name in ds01 ds01d; do
        module="ds01.cli.main"
        [ "$name" = ds01d ] && module="ds01.daemon.main"
        cat >"$TMP/bin/$name" <<EOF
#!/bin/sh
PYTHONPATH="$SITE\${PYTHONPATH:+:\$PYTHONPATH}" exec "$PY" -c 'import sys; sys.argv[0] = "$name"; from $module import run; run()' "\$@"
EOF
        chmod 0755 "$TMP/bin/$name"
    done
    DS01="$TMP/bin/ds01" DS01D="$TMP/bin/ds01d"
fi
info "ds01: $("$DS01" --version 2>&1 | head -1) ($DS01)"

# The python3 the throw-away users run the CUDA call with (any python3 with ctypes will do).
USER_PY=""
for candidate in /usr/bin/python3 "$PY"; do
    if [ -x "$candidate" ]; then USER_PY=$candidate; break; fi
done

CFG="$TMP/ds01.yaml"
ds01() { "$DS01" --config "$CFG" --state-dir "$TMP/state" --run-dir "$TMP/run" "$@"; }

# ---- the throw-away users and ds01's config ------------------------------------------------------

# The users exist only in this namespace's copy of /etc, but their uids are the kernel's: ids
# from a high random range no distribution hands out, unused by any running process, so that no
# account made on the host meanwhile (and nothing that signals "all processes of user X") can
# share them.
free_id() {
    local id
    while :; do
        id=$((3000000 + $(od -An -N4 -tu4 /dev/urandom | tr -d ' ') % 900000))
        getent passwd "$id" >/dev/null || getent group "$id" >/dev/null || pgrep -U "$id" >/dev/null ||
            { echo "$id"; return; }
    done
}
for user in "$PLAIN" "$EXEMPT"; do
    id=$(free_id)
    groupadd --gid "$id" "$user" && useradd --uid "$id" --gid "$id" --no-log-init --create-home \
        --base-dir "$TMP/home" --shell /bin/bash "$user" >/dev/null 2>&1 ||
        die "setup: useradd $user failed"
    CREATED_USERS+=("$user")
done
info "users: $PLAIN (plain, granted and revoked later), $EXEMPT (exempt); homes in $TMP/home"
cat >"$CFG" <<EOF
groups:
  lab:
    members: [$PLAIN, $EXEMPT]
exempt_users: [$EXEMPT]
gpu:
  sample_interval: 1s
host:
  compute_gate: uvm
  grant_expiry: terminate
  grant_kill_grace: 5s
docker:
  host: unix://$TMP/run/no-docker.sock
EOF
if [ "$SELF_TEST" = 1 ]; then
    MACHINE="$TMP/machine.yaml"
    ds01 gpu sim copy 4xA100-40GB "$MACHINE" >/dev/null &&
        ds01 gpu sim set "$MACHINE" --clear-processes >/dev/null ||
        die "self-test: could not make the simulated machine"
fi

run_as() { # run_as USER COMMAND...: as USER with the user's groups, a clean environment
    local user=$1 home
    shift
    home=$(getent passwd "$user" | cut -d: -f6)
    setpriv --reuid="$(id -u "$user")" --regid="$(id -g "$user")" --init-groups \
        env -i PATH="$USER_PATH" HOME="$home" USER="$user" LOGNAME="$user" LANG=C.UTF-8 "$@"
}
run_as_exec() { # as run_as, replacing the (sub)shell: its pid becomes the command's
    local user=$1 home
    shift
    home=$(getent passwd "$user" | cut -d: -f6)
    exec setpriv --reuid="$(id -u "$user")" --regid="$(id -g "$user")" --init-groups \
        env -i PATH="$USER_PATH" HOME="$home" USER="$user" LOGNAME="$user" LANG=C.UTF-8 "$@"
}

CUDA_PY='
import ctypes, sys, time
lib = ctypes.CDLL(sys.argv[1])
rc = lib.cuInit(0)
print("cuInit", rc, flush=True)
if rc == 0 and len(sys.argv) > 2:
    dev, ctx = ctypes.c_int(), ctypes.c_void_p()
    assert lib.cuDeviceGet(ctypes.byref(dev), 0) == 0
    assert lib.cuCtxCreate_v2(ctypes.byref(ctx), 0, dev) == 0
    print("holding a context", flush=True)
    time.sleep(600)
'
cuinit_as() { # cuinit_as USER: prints the cuInit result code (CUDA_VISIBLE_DEVICES=0 set)
    if [ "$1" = root ]; then
        env CUDA_VISIBLE_DEVICES=0 "$USER_PY" -I -S -c "$CUDA_PY" "$LIBCUDA" 2>&1 | awk '/^cuInit/ { print $2 }'
    else
        run_as "$1" CUDA_VISIBLE_DEVICES=0 "$USER_PY" -I -S -c "$CUDA_PY" "$LIBCUDA" 2>&1 |
            awk '/^cuInit/ { print $2 }'
    fi
}
uvm_state() { stat -c '%U:%G %a' /dev/nvidia-uvm; }
gated() { [ "$(uvm_state)" = "root:ds01-gpu-host 660" ]; }
refused() { local rc; rc=$(cuinit_as "$1"); [ -n "$rc" ] && [ "$rc" != 0 ]; }
computes() { [ "$(cuinit_as "$1")" = 0 ]; }
in_gpu_group() { getent group ds01-gpu-host | cut -d: -f4 | tr ',' '\n' | grep -qx "$1"; }
wait_until() { # wait_until SECONDS COMMAND...
    local deadline=$(($(date +%s) + $1))
    shift
    until "$@"; do
        [ "$(date +%s)" -lt "$deadline" ] || return 1
        sleep 0.2
    done
}
probe_env() { # probe_env HOW USER: CUDA_VISIBLE_DEVICES in that session, as [value] or [unset]
    local probe='printf "\n[%s]\n" "${CUDA_VISIBLE_DEVICES-unset}"'
    case "$1" in
        su-login) su - "$2" -c "$probe" </dev/null 2>/dev/null ;;
        su-command) su "$2" -c "$probe" </dev/null 2>/dev/null ;;
        ssh) ssh -i "$TMP/ssh/clientkey" -p "$SSH_PORT" -o BatchMode=yes -o StrictHostKeyChecking=no \
            -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o IdentitiesOnly=yes \
            "$2@127.0.0.1" "$probe" </dev/null 2>/dev/null ;;
    esac | grep -E '^\[.*\]$' | tail -1
}

# ---- ds01 host apply, the gate, ds01d ------------------------------------------------------------

ds01 host apply --only profile --only devices >"$TMP/apply.log" 2>&1
grep -q '^FAILED' "$TMP/apply.log" && die "setup: ds01 host apply failed: $(grep '^FAILED' "$TMP/apply.log" | head -1)"
info "host apply --only profile --only devices: $(grep -c . "$TMP/apply.log") lines of report"
grep -E '^left' "$TMP/apply.log" | while read -r line; do info "host apply: $line"; done
ds01 doctor --fix --only devices.uvm-gate >"$TMP/gate.log" 2>&1
info "gate: /dev/nvidia-uvm is $(uvm_state) after host apply and doctor --fix"

DAEMON_ARGS=(--config "$CFG" --state-dir "$TMP/state" --run-dir "$TMP/run")
[ "$SELF_TEST" = 1 ] && DAEMON_ARGS+=(--sim "$MACHINE")
"$DS01D" "${DAEMON_ARGS[@]}" >"$TMP/ds01d.log" 2>&1 &
DS01D_PID=$!
answering() {
    kill -0 "$DS01D_PID" 2>/dev/null || die "setup: ds01d exited: $(tail -3 "$TMP/ds01d.log" | tr '\n' ' ')"
    ds01 admin grants >/dev/null 2>&1
}
wait_until 60 answering || die "setup: ds01d did not answer within 60 s: $(tail -3 "$TMP/ds01d.log" | tr '\n' ' ')"
wait_until 30 in_gpu_group "$EXEMPT" || die "setup: ds01d did not put $EXEMPT into ds01-gpu-host"
wait_until 10 gated || info "gate: /dev/nvidia-uvm is $(uvm_state) with ds01d running"
info "ds01d: running (pid $DS01D_PID); ds01-gpu-host: $(getent group ds01-gpu-host | cut -d: -f4)"

# ---- the claims ----------------------------------------------------------------------------------

check "gate closed" "/dev/nvidia-uvm is $(uvm_state) (want root:ds01-gpu-host 660)" gated

list=$(run_as "$PLAIN" nvidia-smi -L 2>&1)
count=$(printf '%s\n' "$list" | grep -c '^GPU ')
check "queries open (nvidia-smi -L)" "as $PLAIN: $count GPU(s): $(printf '%s' "$list" | head -1)" \
    test "$count" -gt 0
csv=$(run_as "$PLAIN" nvidia-smi --query-gpu=index,uuid,name --format=csv,noheader 2>&1)
check "queries open (nvidia-smi --query-gpu)" "as $PLAIN: $(printf '%s' "$csv" | head -1)" \
    test -n "$csv" -a "$(printf '%s\n' "$csv" | grep -c ', GPU-')" -gt 0

for how in su-login su-command; do
    seen=$(probe_env "$how" "$PLAIN")
    check "layer 1 hides CUDA ($how)" "$PLAIN: CUDA_VISIBLE_DEVICES=$seen" test "$seen" = "[]"
done
seen=$(probe_env su-login "$EXEMPT")
check "layer 1 shows GPUs to the exempt user (su-login)" "$EXEMPT: CUDA_VISIBLE_DEVICES=$seen" \
    test "$seen" = "[unset]"

SSHD=$(command -v sshd || echo /usr/sbin/sshd)
if [ -x "$SSHD" ] && command -v ssh >/dev/null && command -v ssh-keygen >/dev/null; then
    mkdir -m 0755 "$TMP/ssh"
    ssh-keygen -q -t ed25519 -N "" -f "$TMP/ssh/hostkey" && ssh-keygen -q -t ed25519 -N "" -f "$TMP/ssh/clientkey"
    for user in "$PLAIN" "$EXEMPT"; do
        home=$(getent passwd "$user" | cut -d: -f6)
        install -d -m 0700 -o "$user" -g "$(id -g "$user")" "$home/.ssh"
        install -m 0600 -o "$user" -g "$(id -g "$user")" "$TMP/ssh/clientkey.pub" "$home/.ssh/authorized_keys"
    done
    SSH_PORT=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    cat >"$TMP/ssh/sshd_config" <<EOF
Port $SSH_PORT
ListenAddress 127.0.0.1
HostKey $TMP/ssh/hostkey
PidFile $TMP/ssh/sshd.pid
UsePAM yes
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
AuthorizedKeysFile .ssh/authorized_keys
EOF
    [ -d /run/sshd ] || { mkdir -m 0755 /run/sshd && MADE_PRIVSEP=1; }
    "$SSHD" -D -f "$TMP/ssh/sshd_config" -E "$TMP/ssh/sshd.log" &
    SSHD_PID=$!
    listening() { (exec 3<>"/dev/tcp/127.0.0.1/$SSH_PORT") 2>/dev/null; }
    if wait_until 15 listening; then
        seen=$(probe_env ssh "$PLAIN")
        check "layer 1 hides CUDA (ssh host cmd)" "$PLAIN: CUDA_VISIBLE_DEVICES=$seen" test "$seen" = "[]"
        seen=$(probe_env ssh "$EXEMPT")
        check "layer 1 shows GPUs to the exempt user (ssh host cmd)" \
            "$EXEMPT: CUDA_VISIBLE_DEVICES=$seen" test "$seen" = "[unset]"
    else
        fail "layer 1 (ssh host cmd): the private sshd did not listen: $(tail -2 "$TMP/ssh/sshd.log" | tr '\n' ' ')"
    fi
    stop_pid "$SSHD_PID"
    SSHD_PID=""
else
    skip "layer 1 (ssh host cmd): openssh-server/openssh-client are not installed"
fi

rc=$(cuinit_as "$PLAIN")
check "uvm gate refuses the plain user" "$PLAIN: CUDA_VISIBLE_DEVICES=0 cuInit → ${rc:-no result}" \
    test -n "$rc" -a "$rc" != 0
rc=$(cuinit_as "$EXEMPT")
check "uvm gate lets the exempt user compute" "$EXEMPT: cuInit → ${rc:-no result}" test "$rc" = 0

# A root process initialises CUDA: the driver (ModifyDeviceFiles: 1) may reset the node.
rc=$(cuinit_as root)
right_after=$(uvm_state)
plain_right_after=$(cuinit_as "$PLAIN")
info "root cuInit → ${rc:-no result}; right after: /dev/nvidia-uvm $right_after, $PLAIN's cuInit → ${plain_right_after:-no result}"
sleep 1.5
check "gate holds after a root cuInit" \
    "1.5 s later: /dev/nvidia-uvm $(uvm_state), $PLAIN's cuInit → $(cuinit_as "$PLAIN")" \
    eval 'gated && refused "$PLAIN"'

opened=0
for i in $(seq 20); do
    cuinit_as root >/dev/null
    gated || opened=$((opened + 1))
done
info "20 root cuInits: /dev/nvidia-uvm was found open right after $opened of them"
sleep 1.5
check "gate holds after 20 root cuInits" \
    "1.5 s later: /dev/nvidia-uvm $(uvm_state), $PLAIN's cuInit → $(cuinit_as "$PLAIN")" \
    eval 'gated && refused "$PLAIN"'

# A grant: the plain user computes; then revoke with grant_expiry: terminate.
if ds01 admin grant "$PLAIN" --for 30m --reason "gpu-host-check" >"$TMP/grant.log" 2>&1; then
    wait_until 30 in_gpu_group "$PLAIN"
    check "a granted user computes" "$PLAIN (granted): cuInit → $(cuinit_as "$PLAIN")" computes "$PLAIN"
    seen=$(probe_env su-login "$PLAIN")
    check "layer 1 shows GPUs to the granted user (su-login)" "$PLAIN: CUDA_VISIBLE_DEVICES=$seen" \
        test "$seen" = "[unset]"

    (run_as_exec "$PLAIN" CUDA_VISIBLE_DEVICES=0 "$USER_PY" -I -S -c "$CUDA_PY" "$LIBCUDA" hold) \
        >"$TMP/hold.out" 2>&1 &
    HOLD_PID=$!
    holding() { grep -q '^holding a context' "$TMP/hold.out"; }
    if wait_until 60 holding; then
        if [ "$SELF_TEST" = 1 ]; then
            ds01 gpu sim set "$MACHINE" --add-process "$HOLD_PID:0:512:python3" >/dev/null
        fi
        listed() { ds01 admin host-processes --json 2>/dev/null | grep -q "\"pid\": *$HOLD_PID\\b"; }
        if wait_until 30 listed; then
            info "ds01d lists $PLAIN's process $HOLD_PID as a host GPU process"
        else
            info "ds01d did not list process $HOLD_PID within 30 s (ds01 admin host-processes)"
        fi
        ds01 admin revoke "$PLAIN" --reason "gpu-host-check" >"$TMP/revoke.log" 2>&1 ||
            info "revoke: $(tail -1 "$TMP/revoke.log")"
        gone() { ! kill -0 "$HOLD_PID" 2>/dev/null; }
        if wait_until 30 gone; then
            wait "$HOLD_PID"
            status=$?
            check "revoke ends the user's host GPU process" \
                "process $HOLD_PID exited with status $status (143 = SIGTERM) after the revoke" \
                test "$status" = 143
        else
            fail "revoke ends the user's host GPU process: process $HOLD_PID still runs 30 s after the revoke"
        fi
        HOLD_PID=""
    else
        fail "revoke ends the user's host GPU process: $PLAIN's CUDA process did not start: $(tail -2 "$TMP/hold.out" | tr '\n' ' ')"
    fi
    not_in_gpu_group() { ! in_gpu_group "$PLAIN"; }
    wait_until 30 not_in_gpu_group
    check "after the revoke the gate refuses the user again" "$PLAIN: cuInit → $(cuinit_as "$PLAIN")" \
        refused "$PLAIN"
else
    fail "a granted user computes: ds01 admin grant failed: $(tail -1 "$TMP/grant.log")"
fi

# ---- what ds01 doctor says about this host -------------------------------------------------------

ds01 doctor --json --only compute --only nvidia-smi --only devices >"$TMP/doctor.json" 2>"$TMP/doctor.err"
doctor_status() {
    "$PY" -c 'import json, sys
checks = {c["id"]: c for c in json.load(open(sys.argv[1]))["checks"]}
c = checks.get(sys.argv[2], {})
print(c.get("status", "missing"), "-", c.get("summary", ""))' "$TMP/doctor.json" "$1" 2>/dev/null
}
for rid in devices.uvm-gate devices.driver-rewrites nvidia-smi.runs-for-user; do
    info "doctor: $rid: $(doctor_status "$rid")"
done
for rid in compute.cuda-refused compute.cuda-exempt; do
    seen=$(doctor_status "$rid")
    check "doctor agrees ($rid passes)" "$seen" test "${seen%% *}" = pass
done
seen=$(doctor_status nvidia-smi.not-shadowed)
check "doctor agrees (nvidia-smi.not-shadowed is no FAIL)" "$seen" test "${seen%% *}" != fail -a "${seen%% *}" != missing
