#!/usr/bin/env bash
# Runs every test of the workspace: unit, integration, property, UI (trybuild)
# and doc tests. This is the README's test command; .ci/run calls it too.
#
# The Prefect integration tests need real Prefect 3.9.1 servers. This script
# installs Prefect with pip into a venv outside the clone (reused by later
# runs), starts two servers on free loopback ports with throwaway
# PREFECT_HOMEs (one open, one with Basic auth), waits for their health
# check, runs the tests, and stops the servers on exit. The scale-out tests
# start servers of their own on databases in a throwaway PostgreSQL cluster
# this script starts (PostgreSQL from Debian's packages, installed if
# missing; see scripts/postgres.sh), stopped on exit too.
set -euo pipefail
cd "$(dirname "$0")/.."

PREFECT_VERSION=3.9.1
VENV="${PREFECTO_PREFECT_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/prefecto/prefect-$PREFECT_VERSION}"

WORK="$(mktemp -d -t prefecto-tests.XXXXXX)"
SERVER_PIDS=()
# shellcheck source=scripts/postgres.sh
source scripts/postgres.sh
# The step running now (cargo and the test processes under it), in a process
# group of its own: bash runs a trap only once its foreground child ends, so
# steps run in the background and are waited for, and a signal stops them.
STEP_PID=""
run() {
    setsid "$@" &
    STEP_PID=$!
    local status=0
    wait "$STEP_PID" || status=$?
    STEP_PID=""
    return "$status"
}
# Every process a test started and left behind (a test binary killed before
# its Drop ran leaves its Prefect server, workers and their flow runs, each
# in a process group of its own): found by this run's folder in their
# environment or command line.
stop_leftovers() {
    local pids=() entry
    for entry in /proc/[0-9]*; do
        [ "${entry#/proc/}" = "$$" ] && continue
        if grep -qsF "$WORK" "$entry/environ" "$entry/cmdline" 2>/dev/null; then
            pids+=("${entry#/proc/}")
        fi
    done
    if [ "${#pids[@]}" -gt 0 ]; then
        kill -KILL "${pids[@]}" 2>/dev/null || true
    fi
}
cleanup() {
    # A second signal must not cut the cleanup short: `timeout` (as CI runs
    # this) sends its TERM to the whole process group again, and the TERM
    # trap's `exit` ran inside this function, leaving the servers running.
    trap '' INT TERM HUP
    if [ -n "$STEP_PID" ]; then
        kill -TERM -- "-$STEP_PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$STEP_PID" 2>/dev/null || break; sleep 0.2; done
        kill -KILL -- "-$STEP_PID" 2>/dev/null || true
    fi
    for pid in "${SERVER_PIDS[@]}"; do
        # The server CLI runs uvicorn as a child: stop the whole group.
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${SERVER_PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -KILL -- "-$pid" 2>/dev/null || true
    done
    postgres_stop_all
    stop_leftovers
    rm -rf "$WORK"
}
trap cleanup EXIT
# Ctrl-C or a TERM ends the script through the EXIT trap: the running step
# and the servers are stopped.
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

installed="$("$VENV/bin/python" -c 'import prefect; print(prefect.__version__)' 2>/dev/null || true)"
if [ "$installed" != "$PREFECT_VERSION" ]; then
    echo "== installing prefect==$PREFECT_VERSION into $VENV"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --no-cache-dir --disable-pip-version-check "prefect==$PREFECT_VERSION"
fi

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_server NAME [ENV=VALUE...]: starts a server and sets SERVER_URL to
# its API URL. Not called in $(...): a subshell would keep the pid from
# SERVER_PIDS, and the cleanup would leave the server running.
start_server() {
    local name="$1"; shift
    local port home
    port="$(free_port)"
    home="$WORK/$name-home"
    mkdir -p "$home"
    # setsid: the server gets its own process group, stopped as one.
    env PREFECT_HOME="$home" \
        PREFECT_SERVER_ANALYTICS_ENABLED=false \
        PREFECT_SERVER_UI_ENABLED=false \
        "$@" \
        setsid "$VENV/bin/prefect" server start --host 127.0.0.1 --port "$port" \
        >"$WORK/$name.log" 2>&1 &
    SERVER_PIDS+=("$!")
    SERVER_URL="http://127.0.0.1:$port/api"
}

wait_healthy() {
    local url="$1" name="$2" auth="${3:-}"
    for _ in $(seq 240); do
        if curl -fsS ${auth:+-u "$auth"} "$url/health" >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.5
    done
    echo "the Prefect server '$name' at $url did not become healthy; its log:" >&2
    cat "$WORK/$name.log" >&2
    exit 1
}

start_server open
OPEN_URL="$SERVER_URL"
AUTH_STRING="prefecto:test-secret"
start_server auth PREFECT_SERVER_API_AUTH_STRING="$AUTH_STRING"
AUTH_URL="$SERVER_URL"
wait_healthy "$OPEN_URL" open
wait_healthy "$AUTH_URL" auth "$AUTH_STRING"
echo "== Prefect $PREFECT_VERSION servers: $OPEN_URL (open), $AUTH_URL (basic auth)"

postgres_install
postgres_start "$WORK/postgres"
echo "== PostgreSQL for the scale-out tests' servers: 127.0.0.1:$PG_PORT"
export PREFECTO_TEST_POSTGRES="127.0.0.1:$PG_PORT"
PREFECTO_TEST_POSTGRES_BIN="$(postgres_bin)"
export PREFECTO_TEST_POSTGRES_BIN

# The integration tests read these; every other test runs embedded. Here a
# missing server fails the Prefect tests instead of skipping them.
export PREFECTO_TEST_REQUIRE_SERVERS=1
export PREFECTO_TEST_PREFECT_API_URL="$OPEN_URL"
export PREFECTO_TEST_PREFECT_AUTH_URL="$AUTH_URL"
export PREFECTO_TEST_PREFECT_AUTH_STRING="$AUTH_STRING"
export PREFECTO_TEST_PREFECT_BIN="$VENV/bin/prefect"
export PREFECTO_TEST_WORK="$WORK"
# Flows run by the tests record their history here, not in ~/.prefecto.
export PREFECTO_HOME="$WORK/prefecto-home"
# No test reports to a server it did not choose.
unset PREFECT_API_URL PREFECT_API_KEY PREFECT_API_AUTH_STRING
export PREFECT_PROFILES_PATH="$WORK/no-profiles.toml"

# The Prefect tests run the examples and the prefecto command as a user does:
# build them first (as the tests build them, so nothing is built twice).
run cargo test --workspace --locked --no-run
run cargo test --workspace --locked "$@"

# The engine alone, without the optional parts (history, Prefect client,
# progress bar, signals): it must build and pass on its own.
echo "== the engine alone (--no-default-features)"
run cargo test -p prefecto --no-default-features --locked "$@"
