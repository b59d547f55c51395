#!/usr/bin/env bash
# Does Herald slow down as its queue grows? With Q recipients already queued (10k, 100k, 1M),
# it accepts new mail over HTTP for 15 s while delivering to smtp-sink, and reports accepted/s,
# delivered/s, peak RSS and the claim statement's query plan.
#
#   bash bench/growth.sh [sizes="10000 100000 1000000"] [concurrency=64]
#   BENCH_BIN=path/to/herald measures that build instead of building this tree.
#
# The queued mail comes from the database `cargo bench --bench search` seeds
# (target/bench-search-1000000.db, copied: the original is not touched). Needs postfix
# (smtp-sink), wrk, python3.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZES=${1:-"10000 100000 1000000"}; C=${2:-64}
SOURCE=${BENCH_GROWTH_DB:-target/bench-search-1000000.db}
[ -f "$SOURCE" ] || { echo "run cargo bench --bench search first (it seeds $SOURCE)"; exit 1; }
# BENCH_BIN: measure another build instead of building this tree.
BIN=${BENCH_BIN:-}
if [ -z "$BIN" ]; then
    cargo build --release --quiet --bin herald
    BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/herald
fi
WORK=$(mktemp -d /tmp/herald-growth.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 300); do (echo > "/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }
sent_total() { curl -s "http://127.0.0.1:$1/metrics" | awk '/^herald_recipients_total\{outcome="sent"\}/ {print $2 + 0; f=1} END {if (!f) print 0}'; }

echo "copying $SOURCE"
cp "$SOURCE" "$WORK/herald.db"
python3 - "$WORK/plain.json" <<'PY'
import json, sys
text = ("Thank you for your order. " * 80)[:2000]
json.dump({"from": "Acme <orders@acme.com>", "to": ["ada@example.com"], "subject": "Your order",
           "text": text, "tags": ["bench"], "metadata": {"order_id": "1042"}}, open(sys.argv[1], "w"))
PY
export BENCH_BODY_PLAIN=$WORK/plain.json BENCH_BODY_MULTI=$WORK/plain.json BENCH_BODY_ATTACH=$WORK/plain.json
echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-10s %12s %12s %9s %9s\n' queued accepted/s delivered/s "p99 ms" "RSS MB"
for Q in $SIZES; do
    python3 - "$WORK/herald.db" "$Q" <<'PY'
import sqlite3, sys, time
db, q = sys.argv[1], int(sys.argv[2])
c = sqlite3.connect(db)
now = int(time.time() * 1000)
c.execute("UPDATE recipients SET status = 'sent', lease_owner = NULL WHERE status <> 'sent'")
c.execute("UPDATE recipients SET status = 'queued', next_attempt_at = ?, deadline_at = ? "
          "WHERE rowid IN (SELECT rowid FROM recipients ORDER BY rowid LIMIT ?)", (now - 1000, now + 3 * 86400000, q))
c.commit()
PY
    sink=$(free_port); port=$(free_port)
    smtp-sink -u nobody -4 "127.0.0.1:$sink" 1024 >/dev/null 2>&1 &
    sinkpid=$!; PIDS+=("$sinkpid")
    export HERALD_DATABASE_URL="sqlite://$WORK/herald.db" HERALD_LISTEN=127.0.0.1:$port \
        HERALD_OUTBOX_DIR=$WORK/outbox HERALD_RELAY_URL="smtp://127.0.0.1:$sink?tls=none" \
        HERALD_LOG__LEVEL=warn HERALD_SECRET_KEY=bench HERALD_LIMITS__RATE_PER_SECOND=0 \
        HERALD_RETENTION__CONTENT_RETENTION_DAYS=0 HERALD_RETENTION__EVENT_RETENTION_DAYS=0
    key=$("$BIN" keys create --project growth 2>/dev/null)
    "$BIN" serve 2>"$WORK/serve.log" &
    pid=$!; PIDS+=("$pid")
    wait_port "$port"
    s0=$(sent_total "$port"); t0=$(date +%s.%N)
    out=$(BENCH_KEY=$key BENCH_MIX=plain BENCH_PER_THREAD=100000000 \
        wrk -t1 -c"$C" -d15s -s bench/throughput.lua "http://127.0.0.1:$port" 2>&1)
    s1=$(sent_total "$port"); t1=$(date +%s.%N)
    rss=$(awk '/VmHWM/ {printf "%.1f", $2 / 1024}' "/proc/$pid/status")
    kill "$pid"; wait "$pid" 2>/dev/null || true
    kill "$sinkpid"; wait "$sinkpid" 2>/dev/null || true
    python3 - "$Q" "$out" "$s0" "$s1" "$t0" "$t1" "$rss" <<'PY'
import re, sys
q, out, s0, s1, t0, t1, rss = sys.argv[1:]
m = dict(re.findall(r"(\w+)=(\d+)", next(l for l in out.splitlines() if l.startswith("BENCH "))))
acc = int(m["requests"]) / (int(m["duration_us"]) / 1e6)
dlv = (int(s1) - int(s0)) / (float(t1) - float(t0))
print(f"{int(q):<10} {acc:>12.0f} {dlv:>12.0f} {int(m['p99_us']) / 1000:>9.1f} {float(rss):>9}")
PY
done
python3 - "$WORK/herald.db" <<'PY'
import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
claim = ("UPDATE recipients SET lease_owner = ?, lease_expires_at = ?, next_attempt_at = ? "
         "WHERE id IN (SELECT id FROM recipients WHERE (status = 'scheduled' OR status = 'queued' "
         "OR status = 'delivery_delayed') "
         "AND next_attempt_at <= ? ORDER BY next_attempt_at LIMIT ?)")
print("claim plan:", [r[3] for r in c.execute("EXPLAIN QUERY PLAN " + claim, ("o", 0, 0, 0, 32))])
done = ("UPDATE recipients SET status = 'sent' WHERE id = ? AND lease_owner = ? "
        "AND (status = 'scheduled' OR status = 'queued' OR status = 'delivery_delayed')")
print("outcome plan:", [r[3] for r in c.execute("EXPLAIN QUERY PLAN " + done, ("x", "o"))])
PY
