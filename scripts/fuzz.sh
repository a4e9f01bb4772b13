#!/usr/bin/env bash
# Fuzzes every target for a bounded time and prints one line per target:
# executions, coverage, corpus size, and whether it found a crash.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default 120, all)
#
# Needs cargo-fuzz (installed here when missing). cargo-fuzz passes -Z flags
# that only a nightly compiler takes; with the machine's stable toolchain,
# RUSTC_BOOTSTRAP=1 lets it. New inputs go into fuzz/corpus/TARGET (kept in
# the repository; shrink it with `cargo fuzz cmin TARGET`). A crash is saved
# under fuzz/artifacts/TARGET and the script exits non-zero.
set -euo pipefail

seconds="${1:-120}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(frame_decoder hello snapshot_to_registry http_query otlp_metrics)
fi

cd "$(dirname "$0")/../fuzz"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
mkdir -p logs

# Built once, with debug assertions (overflow checks) and without a
# sanitizer: the collector's paths are safe Rust, and ASan triples the
# build of its dependencies.
cargo fuzz build --sanitizer none --debug-assertions

status=0
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target"
    log="logs/$target.log"
    if cargo fuzz run --sanitizer none --debug-assertions "$target" "corpus/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
        >"$log" 2>&1; then
        outcome="no crash"
    else
        outcome="CRASH (see fuzz/$log and fuzz/artifacts/$target)"
        status=1
    fi
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || echo '?')
    files=$(find "corpus/$target" -type f | wc -l)
    echo "$target: ${seconds}s, $runs executions, coverage $cov edges, corpus $files inputs, $outcome"
done
exit $status
