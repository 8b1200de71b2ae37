#!/usr/bin/env bash
# The scale-out figures of the README: a fan-out of COUNT children of the
# `served_flows` example's `sum-to` flow, SIZE at a time, over 2 Prefect
# process workers on this machine, against a fresh local Prefect 3.9.1
# server (SQLite) for each parent:
#   - prefecto: the `fan_out` example (BatchTask over the deployment, a window of SIZE);
#   - Python: benches/python/fan_out.py, `run_deployment` + `asyncio.gather`
#     under a deployment concurrency limit of SIZE (the anchor).
# Prints, for each: wall time of the parent, requests from the parent per
# child (prefecto only: the Python client does not count them), and the
# children's scheduling latency (created → Running) as the server recorded it.
#
# Each server keeps its database in a PostgreSQL of its own (initdb'd in a
# temporary folder, run as the `postgres` user when this runs as root): on
# SQLite, 20 children reporting at once on 2 cores make the server answer
# 503 for minutes, and its own workers then crash the children ("Failed to
# submit flow run to infrastructure"), for Python's parent as for ours.
# BENCH_DB=sqlite keeps SQLite.
#
#   scripts/bench_fan_out.sh [COUNT] [SIZE]      (default 200 20)
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT="${1:-200}"
SIZE="${2:-20}"
VENV="${PREFECTO_PREFECT_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/prefecto/prefect-3.9.1}"
[ -x "$VENV/bin/prefect" ] || { echo "run scripts/test.sh once first: it installs Prefect into $VENV" >&2; exit 1; }
cargo build --quiet --release --examples -p prefecto
cargo build --quiet --release -p prefecto-cli
BIN=target/release
WORK="$(mktemp -d -t prefecto-fan-out.XXXXXX)"
chmod 755 "$WORK"
PIDS=()
# shellcheck source=scripts/postgres.sh
source scripts/postgres.sh
stop_all() {  # the servers and workers started so far, then their databases
    for pid in "${PIDS[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
    sleep 3
    for pid in "${PIDS[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
    PIDS=()
    postgres_stop_all
}
cleanup() {
    stop_all
    # Flow-run processes the workers started in sessions of their own.
    pkill -KILL -f "$BIN/examples/served_flows" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
[ "${BENCH_DB:-postgres}" = postgres ] && postgres_install
trap 'exit 130' INT TERM

start() {  # start NAME: a fresh server and 2 workers; sets URL
    local name="$1" port
    port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    mkdir -p "$WORK/$name"
    local database=()
    if [ "${BENCH_DB:-postgres}" = postgres ]; then
        postgres_start "$WORK/$name/pg"
        "$(postgres_bin)/createdb" -h 127.0.0.1 -p "$PG_PORT" -U prefect prefect
        database=(PREFECT_API_DATABASE_CONNECTION_URL="postgresql+asyncpg://prefect@127.0.0.1:$PG_PORT/prefect")
    fi
    env "${database[@]}" PREFECT_HOME="$WORK/$name" PREFECT_SERVER_ANALYTICS_ENABLED=false PREFECT_SERVER_UI_ENABLED=false \
        setsid "$VENV/bin/prefect" server start --host 127.0.0.1 --port "$port" >"$WORK/$name/server.log" 2>&1 &
    PIDS+=("$!")
    URL="http://127.0.0.1:$port/api"
    for _ in $(seq 240); do curl -fsS "$URL/health" >/dev/null 2>&1 && break; sleep 0.5; done
    PREFECT_API_URL="$URL" "$BIN/prefecto" deploy "$BIN/examples/served_flows" --flow sum-to --name fan-out --pool rust-pool \
        --concurrency-limit "$SIZE" --env "PREFECTO_RESULTS_DIR=$WORK/$name/results" >/dev/null
    for w in 1 2; do
        PREFECT_API_URL="$URL" PREFECT_HOME="$WORK/$name/worker-$w" PREFECT_WORKER_QUERY_SECONDS=1 \
            PREFECTO_HOME="$WORK/$name/prefecto" PREFECT_LOGGING_LEVEL=WARNING \
            setsid "$VENV/bin/prefect" worker start --pool rust-pool --type process --name "w$w" \
            >"$WORK/$name/worker-$w.log" 2>&1 &
        PIDS+=("$!")
    done
    sleep 10  # the workers' start
}

latency() {  # the children's created → Running, as the server recorded it
    "$VENV/bin/python" - "$URL" <<'PY'
import json, sys, urllib.request
from datetime import datetime
url = sys.argv[1]
def post(path, body):
    req = urllib.request.Request(url + path, json.dumps(body).encode(), {"content-type": "application/json"})
    return json.load(urllib.request.urlopen(req))
runs, offset = [], 0
while True:
    page = post("/flow_runs/filter", {"limit": 200, "offset": offset, "flow_runs": {"parent_task_run_id": {"is_null_": False}}})
    runs += page; offset += len(page)
    if len(page) < 200: break
t = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00"))
lat = sorted((t(r["start_time"]) - t(r["created"])).total_seconds() for r in runs if r["start_time"])
if lat:
    print(f"  {len(lat)} children; scheduling latency (created -> Running): median {lat[len(lat)//2]:.1f} s, p90 {lat[int(len(lat)*0.9)]:.1f} s, max {lat[-1]:.1f} s")
PY
}

echo "== load before: $(cut -d' ' -f1-3 /proc/loadavg); $COUNT children, $SIZE at a time, 2 process workers, ${BENCH_DB:-postgres}"
start prefecto
echo "== prefecto (fan_out example)"
started=$(date +%s.%N)
PREFECT_API_URL="$URL" PREFECTO_HOME="$WORK/prefecto/prefecto" PREFECTO_RESULTS_DIR="$WORK/prefecto/results" \
    "$BIN/examples/fan_out" --param "count=$COUNT" --param "size=$SIZE" --param deploy=false \
    >"$WORK/prefecto/parent.log" 2>&1 || true
grep -E "children in|^error" "$WORK/prefecto/parent.log" | cut -c1-300 || tail -5 "$WORK/prefecto/parent.log"
echo "  wall time until the process exited: $(python3 -c "print(f'{$(date +%s.%N) - $started:.1f}')") s"
latency
stop_all

start python
echo "== Python (run_deployment + asyncio.gather, deployment concurrency limit $SIZE)"
started=$(date +%s.%N)
PREFECT_API_URL="$URL" PREFECT_HOME="$WORK/python/client" PREFECT_LOGGING_LEVEL=WARNING \
    "$VENV/bin/python" benches/python/fan_out.py "$COUNT" 2>&1 | grep -E "^python:|^prefect.exceptions" | cut -c1-300 || true
echo "  wall time until the process exited: $(python3 -c "print(f'{$(date +%s.%N) - $started:.1f}')") s"
latency
echo "== load after: $(cut -d' ' -f1-3 /proc/loadavg)"
