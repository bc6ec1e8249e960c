#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each, one after the other, on nightly,
# and prints per target the executions, the coverage (libFuzzer's final
# `cov:` and `ft:`) and whether it crashed. Exits non-zero when any target
# crashed (its input is in fuzz/artifacts/<target>/). Not run by CI.
#
#   fuzz/run.sh SECONDS [TARGET...]
#
# Limits: -malloc_limit_mb=256 makes any single allocation above 256 MiB a
# crash. The largest allocation a decoder may justify is about 256 times its
# input (a snapshot chunk's lz4 expansion); inputs are capped at 64 KiB
# (-max_len=65536), so a valid decode allocates at most ~16 MiB per buffer,
# and nothing legitimate comes near 256 MiB: an allocation that large is a
# length field trusted before it was checked. -rss_limit_mb=1024 bounds the
# whole process (libFuzzer's default is 2048) with room for the journal and
# snapshot managers the open targets build.
set -uo pipefail

if [ $# -lt 1 ] || ! [[ "$1" =~ ^[0-9]+$ ]]; then
    echo "usage: $0 SECONDS [TARGET...]" >&2
    exit 2
fi
seconds=$1
shift
cd "$(dirname "$0")"
if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo +nightly fuzz list)
fi

cargo +nightly fuzz build -O --debug-assertions || exit 2

logs=$(mktemp -d)
failed=0
printf '%-16s %12s %8s %8s  %s\n' target executions cov ft result
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    # A scratch copy of the committed corpus: new inputs the run finds stay
    # out of the tree unless copied in on purpose.
    work="$logs/corpus-$t"
    mkdir -p "$work"
    cp "corpus/$t/"* "$work/" 2>/dev/null
    cargo +nightly fuzz run -O --debug-assertions "$t" "$work" -- \
        -max_total_time="$seconds" -max_len=65536 \
        -malloc_limit_mb=256 -rss_limit_mb=1024 \
        -print_final_stats=1 >"$logs/$t.log" 2>&1
    rc=$?
    stats=$(grep -E '^#[0-9]+.*(DONE|cov:)' "$logs/$t.log" | tail -n 1)
    execs=$(grep -E '^stat::number_of_executed_units' "$logs/$t.log" | awk '{print $2}')
    cov=$(sed -nE 's/.* cov: ([0-9]+).*/\1/p' <<<"$stats")
    ft=$(sed -nE 's/.* ft: ([0-9]+).*/\1/p' <<<"$stats")
    if [ $rc -ne 0 ] || grep -qE '^==[0-9]+== ?ERROR|panicked at|deadly signal' "$logs/$t.log"; then
        result="CRASH (log: $logs/$t.log; input in fuzz/artifacts/$t/)"
        failed=1
    else
        result=ok
    fi
    printf '%-16s %12s %8s %8s  %s\n' "$t" "${execs:-?}" "${cov:-?}" "${ft:-?}" "$result"
done
exit $failed
