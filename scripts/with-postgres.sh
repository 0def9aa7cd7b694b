#!/usr/bin/env bash
# Runs a command with a throwaway PostgreSQL server for the tests, then stops and removes it.
#
#   scripts/with-postgres.sh cargo test --workspace
#   scripts/with-postgres.sh --durable target/release/pg-bench
#
# The server is Debian's PostgreSQL (apt-get install postgresql), initialised in a temporary
# directory (under $TMPDIR, else /tmp) and listening on a Unix socket there only (no TCP port to
# clash with). The command gets ORDER_STATUS_TEST_POSTGRES, a URL of the server's `postgres`
# database as its superuser: tests create a database of their own from it (CREATE DATABASE)
# and drop it when done. When ORDER_STATUS_TEST_POSTGRES is already set, the command runs
# against that server instead. PostgreSQL refuses to run as root: as root, the server runs as
# the `postgres` user.
# For tests the server runs with fsync=off. --durable runs it with fsync=on and
# synchronous_commit=on instead, so a commit waits for its WAL to reach the disk: for
# benchmarks, which must then put $TMPDIR on the disk they mean to measure.
set -euo pipefail

durable=0
if [[ "${1:-}" == --durable ]]; then
    durable=1
    shift
fi
if (($# == 0)); then
    sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
if [[ -n "${ORDER_STATUS_TEST_POSTGRES:-}" ]]; then
    exec "$@"
fi

bin_dir="$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1)"
if [[ -z "$bin_dir" || ! -x "$bin_dir/initdb" ]]; then
    echo "with-postgres: no PostgreSQL server found under /usr/lib/postgresql (apt-get install postgresql)" >&2
    exit 1
fi

dir="$(mktemp -d "${TMPDIR:-/tmp}/order-status-pg.XXXXXX")"
as_owner=()
if ((EUID == 0)); then
    chown postgres: "$dir"
    # From /: the postgres user may not be allowed into the caller's directory (a checkout in
    # a private temporary directory), and initdb and pg_ctl complain when they cannot go back.
    as_owner=(runuser -u postgres -- env --chdir=/)
fi

stop() {
    local status=$?
    "${as_owner[@]}" "$bin_dir/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$dir"
    exit "$status"
}
trap stop EXIT INT TERM

"${as_owner[@]}" "$bin_dir/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C \
    >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; exit 1; }
# Durability of the test server itself is not under test (fsync off); commit semantics are the
# defaults (synchronous_commit on). Many tests run at once, each with its own pools. Benchmarks
# (--durable) measure durable commits: fsync and synchronous_commit on, said explicitly.
if ((durable)); then
    durability="-c fsync=on -c synchronous_commit=on"
else
    durability="-c fsync=off"
fi
"${as_owner[@]}" "$bin_dir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
    -o "-c listen_addresses='' -k $dir -c max_connections=1000 $durability -c shared_buffers=128MB" \
    start >/dev/null || { cat "$dir/server.log" >&2; exit 1; }

encoded_dir="${dir//\//%2F}"
export ORDER_STATUS_TEST_POSTGRES="postgresql://postgres@${encoded_dir}/postgres"
echo "with-postgres: PostgreSQL $("$bin_dir/postgres" --version | awk '{print $3}') on $dir ($ORDER_STATUS_TEST_POSTGRES, $durability)" >&2
"$@"
