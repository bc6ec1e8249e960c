#!/usr/bin/env bash
# Side by side with the tools a user would run instead, on the same bytes,
# warm page cache. Builds the crate's comparison harness (`examples/compare.rs`,
# release), makes the data, and prints one table:
#
#   - a PostgreSQL cluster with data checksums (`initdb -k`, `pgbench -i -s $SCALE`,
#     about 15 MiB per scale unit): selfheal adopts its relation files into
#     sidecar tables, then scrubs them; against `pg_checksums --check` on the
#     stopped cluster (same files: base/ and global/);
#   - a SQLite database made with the `sqlite3` CLI: selfheal scrub of the
#     file against `PRAGMA quick_check`;
#   - the cluster's largest relation file: a selfheal full snapshot against
#     `lz4 -1` and `tar | lz4 -1` of the same file, and the restore against
#     `lz4 -d`.
#
# Each timing is the best of $RUNS runs. A tool that is missing is skipped
# with a line saying so. Not run by CI.
#
#   benches/compare.sh                 # about 1 GB of cluster, a few minutes
#   SCALE=16 THREADS=1 benches/compare.sh
#
# Environment: SCALE (pgbench scale, default 64), THREADS (default nproc),
# SCAN (mmap or pread, default mmap), RUNS (default 3), SQLITE_ROWS
# (default 400000, ~250 MB), PG_BIN (PostgreSQL's bin directory),
# WORK (where the data goes, default a new directory under /tmp).
set -euo pipefail

cd "$(dirname "$0")/.."
SCALE=${SCALE:-64}
THREADS=${THREADS:-$(nproc)}
SCAN=${SCAN:-mmap}
RUNS=${RUNS:-3}
SQLITE_ROWS=${SQLITE_ROWS:-400000}
PORT=${PORT:-54329}

WORK=${WORK:-$(mktemp -d /tmp/selfheal-compare.XXXXXX)}
mkdir -p "$WORK"
PGDATA="$WORK/pgdata"
PG_STARTED=""
cleanup() {
    if [ -n "$PG_STARTED" ]; then
        as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

note() { echo "# $*" >&2; }

# Best wall time in seconds of RUNS runs of a command (its output discarded).
best_of() {
    local best="" t
    for _ in $(seq "$RUNS"); do
        local s e
        s=$(date +%s.%N)
        "$@" >/dev/null 2>&1 || { echo "FAILED"; return; }
        e=$(date +%s.%N)
        t=$(echo "$e - $s" | bc -l)
        if [ -z "$best" ] || [ "$(echo "$t < $best" | bc -l)" = 1 ]; then best=$t; fi
    done
    printf '%.4f' "$best"
}

# Best value of KEY=… over RUNS runs of the harness.
best_field() {
    local key=$1 best="" v
    shift
    for _ in $(seq "$RUNS"); do
        v=$("$@" | tr ' ' '\n' | sed -n "s/^$key=//p")
        if [ -z "$best" ] || [ "$(echo "$v < $best" | bc -l)" = 1 ]; then best=$v; fi
    done
    echo "$best"
}

ROWS=()
row() { ROWS+=("$(printf '| %-44s | %12s | %-34s | %12s | %8s |' "$@")"); }
# MB/s of BYTES in SECONDS.
mbs() { echo "$1 / $2 / 1000000" | bc -l | xargs printf '%.0f'; }
ratio() { echo "$1 / $2" | bc -l | xargs printf '%.2f×'; }

for tool in cargo bc; do
    command -v "$tool" >/dev/null || { echo "compare.sh needs $tool" >&2; exit 1; }
done

note "building the harness (cargo build --release --example compare)"
cargo build --release --example compare >&2
HARNESS=$(cargo metadata --format-version 1 --no-deps 2>/dev/null |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/release/examples/compare
[ -x "$HARNESS" ] || { echo "harness not found at $HARNESS" >&2; exit 1; }

# ---- PostgreSQL -----------------------------------------------------------
if [ -z "${PG_BIN:-}" ]; then
    if command -v pg_config >/dev/null; then PG_BIN=$(pg_config --bindir); fi
    for d in "${PG_BIN:-}" /usr/lib/postgresql/*/bin; do
        if [ -n "$d" ] && [ -x "$d/pg_checksums" ]; then PG_BIN=$d; break; fi
    done
fi
as_pg() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
BIGGEST=""
if [ -z "${PG_BIN:-}" ] || [ ! -x "$PG_BIN/pg_checksums" ] || [ ! -x "$PG_BIN/pgbench" ]; then
    note "skipped PostgreSQL: no initdb/pgbench/pg_checksums found (set PG_BIN)"
elif [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
    note "skipped PostgreSQL: running as root and there is no postgres user to run the server as"
else
    note "making a PostgreSQL cluster: initdb -k, pgbench -i -s $SCALE"
    if [ "$(id -u)" = 0 ]; then chown postgres "$WORK"; fi
    as_pg "$PG_BIN/initdb" -k -D "$PGDATA" -A trust -U postgres >/dev/null
    as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$WORK/pg.log" -w \
        -o "-p $PORT -k $WORK -c listen_addresses=''" start >/dev/null
    PG_STARTED=1
    as_pg "$PG_BIN/pgbench" -h "$WORK" -p "$PORT" -U postgres -i -s "$SCALE" -q postgres >/dev/null 2>&1
    as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null
    PG_STARTED=""
    # Warm the page cache for both sides.
    find "$PGDATA/base" "$PGDATA/global" -type f -exec cat {} + >/dev/null
    BIGGEST=$(find "$PGDATA/base" -type f -printf '%s %p\n' | sort -n | tail -1 | cut -d' ' -f2)

    pg_s=$(best_of as_pg "$PG_BIN/pg_checksums" --check -D "$PGDATA")
    line=$("$HARNESS" scrub 8192 "$THREADS" "$SCAN" "$PGDATA/base" "$PGDATA/global")
    files=$(echo "$line" | tr ' ' '\n' | sed -n 's/^files=//p')
    bytes=$(echo "$line" | tr ' ' '\n' | sed -n 's/^bytes=//p')
    scrub_s=$(best_field scrub_s "$HARNESS" scrub 8192 "$THREADS" "$SCAN" "$PGDATA/base" "$PGDATA/global")
    adopt_s=$(best_field adopt_s "$HARNESS" scrub 8192 "$THREADS" "$SCAN" "$PGDATA/base" "$PGDATA/global")
    label="scrub, PG cluster ($files files, $((bytes >> 20)) MiB)"
    row "$label" "$(mbs "$bytes" "$scrub_s") MB/s" "pg_checksums --check" "$(mbs "$bytes" "$pg_s") MB/s" "$(ratio "$pg_s" "$scrub_s")"
    row "adopt (seal), same files" "$(mbs "$bytes" "$adopt_s") MB/s" "selfheal scrub, same files" "$(mbs "$bytes" "$scrub_s") MB/s" "$(ratio "$scrub_s" "$adopt_s")"
fi

# ---- SQLite ----------------------------------------------------------------
if ! command -v sqlite3 >/dev/null; then
    note "skipped SQLite: no sqlite3 CLI"
else
    note "making a SQLite database: $SQLITE_ROWS rows"
    DB="$WORK/test.db"
    sqlite3 "$DB" "PRAGMA page_size=4096; CREATE TABLE t(id INTEGER PRIMARY KEY, a BLOB, b TEXT);
        WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < $SQLITE_ROWS)
        INSERT INTO t SELECT x, randomblob(300), hex(randomblob(100)) FROM c;
        CREATE INDEX tb ON t(b);" >/dev/null
    cat "$DB" >/dev/null
    bytes=$(stat -c %s "$DB")
    qc_s=$(best_of sqlite3 "$DB" "PRAGMA quick_check")
    scrub_s=$(best_field scrub_s "$HARNESS" scrub 4096 "$THREADS" "$SCAN" "$DB")
    row "scrub, SQLite file ($((bytes >> 20)) MiB)" "$(mbs "$bytes" "$scrub_s") MB/s" "PRAGMA quick_check" "$(mbs "$bytes" "$qc_s") MB/s" "$(ratio "$qc_s" "$scrub_s")"
fi

# ---- Snapshot and restore ---------------------------------------------------
if [ -z "$BIGGEST" ]; then
    note "skipped snapshot: no PostgreSQL relation file to snapshot"
elif ! command -v lz4 >/dev/null; then
    note "skipped snapshot: no lz4 CLI (apt-get install lz4)"
else
    bytes=$(stat -c %s "$BIGGEST")
    snap_s=$(best_field snapshot_s "$HARNESS" snapshot 8192 "$BIGGEST" "$WORK/snap")
    restore_s=$(best_field restore_s "$HARNESS" snapshot 8192 "$BIGGEST" "$WORK/snap2")
    rm -rf "$WORK/snap" "$WORK/snap2"
    lz4_s=$(best_of lz4 -1 -f -q "$BIGGEST" "$WORK/big.lz4")
    tar_s=$(best_of sh -c "tar -cf - -C '$(dirname "$BIGGEST")' '$(basename "$BIGGEST")' | lz4 -1 -q > '$WORK/big.tar.lz4'")
    unlz4_s=$(best_of lz4 -d -f -q "$WORK/big.lz4" "$WORK/big.out")
    rm -f "$WORK/big.lz4" "$WORK/big.tar.lz4" "$WORK/big.out"
    label="full snapshot, largest file ($((bytes >> 20)) MiB)"
    row "$label" "$(mbs "$bytes" "$snap_s") MB/s" "lz4 -1 (file to file)" "$(mbs "$bytes" "$lz4_s") MB/s" "$(ratio "$lz4_s" "$snap_s")"
    row "$label" "$(mbs "$bytes" "$snap_s") MB/s" "tar | lz4 -1" "$(mbs "$bytes" "$tar_s") MB/s" "$(ratio "$tar_s" "$snap_s")"
    row "restore, same file" "$(mbs "$bytes" "$restore_s") MB/s" "lz4 -d (file to file)" "$(mbs "$bytes" "$unlz4_s") MB/s" "$(ratio "$unlz4_s" "$restore_s")"
fi

echo
echo "selfheal vs other tools: $(nproc) cores, $THREADS selfheal threads, $SCAN scan, best of $RUNS, warm page cache"
echo "(ratio = the other tool's time / selfheal's time; above 1 means selfheal is faster)"
echo
printf '| %-44s | %12s | %-34s | %12s | %8s |\n' "what" "selfheal" "other tool" "other" "ratio"
printf '|%s|%s|%s|%s|%s|\n' "$(printf -- '-%.0s' {1..46})" "$(printf -- '-%.0s' {1..14})" "$(printf -- '-%.0s' {1..36})" "$(printf -- '-%.0s' {1..14})" "$(printf -- '-%.0s' {1..10})"
for r in ${ROWS[@]+"${ROWS[@]}"}; do echo "$r"; done
