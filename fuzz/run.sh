#!/usr/bin/env bash
# Runs the cargo-fuzz targets, each for a given time (default 600 s), one after the other, and
# keeps every input a target fails on as a regression test of the normal suite:
#
#   fuzz/run.sh [TARGET…] [--seconds N]
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`); the nightly features libFuzzer needs are
# enabled on the stable compiler with RUSTC_BOOTSTRAP=1. The corpus grows in fuzz/corpus/
# (not committed), starting from the small committed seeds in fuzz/seeds/. A failing input is
# copied to <crate>/tests/fuzz-regressions/<target>/, where `cargo test` replays it (one that
# ran out of memory or time stays in fuzz/artifacts/<target>/ for a person to look at); the
# run's log is fuzz/logs/<target>.log. Exit status 1 when some target failed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

all_targets=(orders_request page_token tokens_file grpc_timeout gateway_body last_event_id)

# The crate whose entry point a target runs, where its regressions are replayed.
crate_of() {
    case $1 in
        gateway_body | last_event_id) echo status-client ;;
        *) echo order-service ;;
    esac
}

usage() {
    echo "usage: fuzz/run.sh [TARGET…] [--seconds N]   (targets: ${all_targets[*]})" >&2
    exit 2
}

seconds=600
targets=()
while (($#)); do
    case $1 in
        --seconds) [[ ${2:-} =~ ^[0-9]+$ ]] || usage; seconds=$2; shift 2 ;;
        --seconds=*) seconds=${1#--seconds=}; [[ $seconds =~ ^[0-9]+$ ]] || usage; shift ;;
        -h | --help) usage ;;
        -*) usage ;;
        *)
            [[ " ${all_targets[*]} " == *" $1 "* ]] || { echo "no fuzz target $1" >&2; usage; }
            targets+=("$1"); shift ;;
    esac
done
((${#targets[@]})) || targets=("${all_targets[@]}")

command -v cargo-fuzz >/dev/null || { echo "needs cargo-fuzz: cargo install cargo-fuzz" >&2; exit 2; }
export RUSTC_BOOTSTRAP=1

mkdir -p logs
summary=()
failed=0
for target in "${targets[@]}"; do
    regressions=../$(crate_of "$target")/tests/fuzz-regressions/$target
    mkdir -p "corpus/$target" "artifacts/$target"
    inputs=("corpus/$target" "seeds/$target")
    [[ -d $regressions ]] && inputs+=("$regressions")
    log=logs/$target.log
    echo "=== $target: ${seconds}s, log in fuzz/$log"
    # Built first, so that the time measured is the fuzzing alone.
    cargo fuzz build "$target"
    started=$SECONDS
    status=0
    # One process (one core), memory bounded; the first directory receives new corpus inputs.
    cargo fuzz run "$target" "${inputs[@]}" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -max_len=4096 \
        -print_final_stats=1 >"$log" 2>&1 || status=$?
    elapsed=$((SECONDS - started))
    executions=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    per_second=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    coverage=$(grep -oE 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -1)
    result=ok
    if ((status != 0)); then
        result="failed (exit $status)"
        failed=1
        shopt -s nullglob
        for input in "artifacts/$target"/crash-*; do
            mkdir -p "$regressions"
            cp "$input" "$regressions/"
            result+=", kept $regressions/$(basename "$input")"
        done
        # Out of memory or too slow: no assertion to replay, left for a person to look at.
        for input in "artifacts/$target"/oom-* "artifacts/$target"/timeout-*; do
            result+=", see fuzz/$input"
        done
        shopt -u nullglob
        tail -40 "$log" >&2
    fi
    summary+=("$(printf '%-15s %6ss %12s execs %8s exec/s  %-18s %s' \
        "$target" "$elapsed" "${executions:-?}" "${per_second:-?}" "${coverage:-?}" "$result")")
done
printf '\n'
printf '%s\n' "${summary[@]}"
exit "$failed"
