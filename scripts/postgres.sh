# Sourced by scripts/test.sh and scripts/bench_fan_out.sh: a throwaway
# PostgreSQL cluster on 127.0.0.1, for Prefect servers that must keep up
# with many flow runs reporting at once (on SQLite, a few children on 2
# cores make a server answer 503, and Prefect's own workers then crash the
# runs they were starting: "Failed to submit flow run to infrastructure").
#
#   postgres_start DIR   initdb's a cluster in DIR, starts it; sets PG_PORT
#   postgres_stop_all    stops every cluster started (call it from a trap)
#
# PostgreSQL comes from Debian's packages: if `initdb` is nowhere to be
# found, it is installed with apt-get (as root), as CI's machine allows.

PG_DIRS=()

postgres_bin() {
    # The folder of the real binaries (createdb beside initdb), not of a
    # symlink to initdb alone.
    if command -v initdb >/dev/null 2>&1; then
        dirname "$(readlink -f "$(command -v initdb)")"
        return
    fi
    local dir
    for dir in /usr/lib/postgresql/*/bin; do
        [ -x "$dir/initdb" ] && { echo "$dir"; return; }
    done
    return 1
}

postgres_install() {
    postgres_bin >/dev/null && return
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "== installing PostgreSQL (Debian's postgresql package)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null 2>&1 ||
            { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null; }
        # The package starts a cluster of its own; ours are throwaway ones.
        command -v pg_ctlcluster >/dev/null 2>&1 && pg_ctlcluster --force "$(ls /etc/postgresql | head -n 1)" main stop >/dev/null 2>&1 || true
    fi
    postgres_bin >/dev/null || { echo "PostgreSQL is missing: install Debian's postgresql package (apt-get install postgresql)" >&2; return 1; }
}

as_postgres() {  # PostgreSQL refuses to run as root
    if [ "$(id -u)" = 0 ]; then su postgres -s /bin/sh -c "$*"; else sh -c "$*"; fi
}

postgres_start() {
    local dir="$1" bin
    bin="$(postgres_bin)"
    PG_PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    mkdir -p "$dir"
    chmod 777 "$dir"
    # The postgres user must reach DIR: open its parents that are ours.
    [ "$(id -u)" = 0 ] && chmod o+x "$(dirname "$dir")" 2>/dev/null || true
    as_postgres "'$bin/initdb' -D '$dir/data' -U prefect --auth=trust" >"$dir/initdb.log" 2>&1 ||
        { cat "$dir/initdb.log" >&2; return 1; }
    PG_DIRS+=("$dir")
    as_postgres "'$bin/pg_ctl' -D '$dir/data' -l '$dir/log' -o \"-p $PG_PORT -k '$dir' -c listen_addresses=127.0.0.1 -c max_connections=300\" -w start" >/dev/null ||
        { cat "$dir/log" >&2; return 1; }
}

postgres_stop_all() {
    local bin dir
    bin="$(postgres_bin 2>/dev/null)" || return 0
    for dir in "${PG_DIRS[@]}"; do
        as_postgres "'$bin/pg_ctl' -D '$dir/data' stop -m immediate" >/dev/null 2>&1 || true
    done
    PG_DIRS=()
}
