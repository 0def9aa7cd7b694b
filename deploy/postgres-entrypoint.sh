#!/bin/sh
# Entrypoint of the postgres image (deploy/build-postgres-image.sh). Runs as the non-root user
# postgres; the shell is dash and there is nothing else but PostgreSQL's own programs, so only
# shell built-ins are used here.
#
# First start (no cluster in $PGDATA): initdb (UTF8, locale C, data checksums) with the
# superuser $POSTGRES_USER (default postgres) and the password $POSTGRES_PASSWORD (required),
# password authentication (scram-sha-256) for every connection, local socket included, listening
# on all addresses; then the database $POSTGRES_DB (default: the user's name) in single-user mode.
# Every start: exec postgres with the arguments given, so it runs as PID 1 and gets the stop
# signal itself (STOPSIGNAL SIGINT: a fast shutdown, which does not wait for pooled clients).
#
# Any command other than `postgres ...` runs as given: `docker run --rm IMAGE psql -h HOST ...`.
set -eu

: "${PGDATA:=/var/lib/postgresql/data/pgdata}"
export PGDATA
# Written last by the first start: a cluster without it was left half made by an interrupted one.
readonly INITIALIZED="$PGDATA/order-status-initialized"

fail() {
    echo "postgres-entrypoint: $*" >&2
    exit 1
}

# An SQL identifier this script quotes itself: letters, digits and underscores only.
check_name() { # VARIABLE VALUE
    case "$2" in
        '' | [0-9]* | *[!A-Za-z0-9_]*)
            fail "$1='$2' is not a plain name (letters, digits, '_'; not starting with a digit)" ;;
    esac
}

first_start() {
    user="${POSTGRES_USER:-postgres}"
    database="${POSTGRES_DB:-$user}"
    check_name POSTGRES_USER "$user"
    check_name POSTGRES_DB "$database"
    [ -n "${POSTGRES_PASSWORD:-}" ] ||
        fail "POSTGRES_PASSWORD is empty: a new cluster needs the superuser's password (every login needs one)"
    newline='
'
    case "$POSTGRES_PASSWORD" in
        *"$newline"*) fail "POSTGRES_PASSWORD holds a line break (initdb reads one line)" ;;
    esac

    echo "postgres-entrypoint: no cluster in $PGDATA: initdb (superuser $user, database $database)"
    # The password reaches initdb through a pipe: it is never written to a file, and only its
    # SCRAM verifier ends up in the cluster.
    printf '%s\n' "$POSTGRES_PASSWORD" |
        initdb --pgdata="$PGDATA" --username="$user" --pwfile=/dev/stdin \
            --encoding=UTF8 --locale=C --auth=scram-sha-256 --data-checksums --no-instructions ||
        fail "initdb failed (see above)"

    # Appended settings win over the sample's: the last occurrence of a parameter counts.
    entrypoint_settings >>"$PGDATA/postgresql.conf"
    # Every connection, local or from the network, logs in with a password.
    {
        echo "# Written by postgres-entrypoint: a password (SCRAM) for every connection."
        echo "# TYPE  DATABASE  USER  ADDRESS    METHOD"
        echo "local   all       all              scram-sha-256"
        echo "host    all       all   0.0.0.0/0  scram-sha-256"
        echo "host    all       all   ::/0       scram-sha-256"
    } >"$PGDATA/pg_hba.conf"

    if [ "$database" != postgres ]; then
        # Single-user mode: no server, no socket, no password needed yet. It reports an SQL
        # error on stderr but still exits 0, so what it says decides.
        output="$(printf 'CREATE DATABASE "%s" OWNER "%s"\n' "$database" "$user" |
            postgres --single -D "$PGDATA" -c log_min_messages=warning postgres 2>&1 >/dev/null)" ||
            fail "single-user postgres failed creating database $database: $output"
        case "$output" in
            *ERROR:* | *FATAL:* | *PANIC:*) fail "CREATE DATABASE $database failed: $output" ;;
        esac
    fi
    echo "initialized by postgres-entrypoint; the cluster is complete" >"$INITIALIZED"
    echo "postgres-entrypoint: cluster ready"
}

entrypoint_settings() {
    echo
    echo "# ---- postgres-entrypoint (order-status image) ----"
    echo "listen_addresses = '*'"
    echo "unix_socket_directories = '/var/run/postgresql'"
    echo "password_encryption = 'scram-sha-256'"
    echo "# The image leaves out LLVM (llvmjit.so and its bitcode)."
    echo "jit = off"
    echo "log_timezone = 'UTC'"
    echo "timezone = 'UTC'"
}

if [ "${1:-}" = postgres ]; then
    if [ ! -s "$PGDATA/PG_VERSION" ]; then
        first_start
    elif [ ! -e "$INITIALIZED" ]; then
        fail "$PGDATA holds a cluster whose first start did not finish (no $INITIALIZED):" \
            "remove the volume to start over, or create that file if the cluster is complete"
    fi
    shift
    exec postgres -D "$PGDATA" "$@"
fi
exec "$@"
