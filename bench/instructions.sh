#!/usr/bin/env bash
# Instructions per accepted email, counted by callgrind: the same figure for the same build
# whatever else the machine is doing, so two builds compare to about 1 % on a noisy machine
# where wall-clock rates swing by 15 %.
#
#   bash bench/instructions.sh [herald binary] [warmup=500] [measured=2000]
#
# Herald (delivery off, SQLite) runs under `valgrind --tool=callgrind`; bench/pace.rs sends the
# bench's plain 2 KB email over 16 keep-alive connections as fast as they are answered: first
# `warmup` requests (caches, prepared statements, the pools filled), then the counters are
# zeroed and `measured` requests follow. Prints the instructions of the whole process per
# accepted email, and the functions that cost the most (inclusive) per email. The profile
# stays in bench/callgrind.out for callgrind_annotate. Needs valgrind, curl, python3.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
BIN=${1:-}
WARMUP=${2:-500}
MEASURED=${3:-2000}
if [ -z "$BIN" ]; then
    cargo build --release --quiet --bin herald
    BIN=$TARGET/release/herald
fi
cargo build --release --quiet --example pace
PACE=$TARGET/release/examples/pace
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)"; exit 1; }

WORK=$(mktemp -d /tmp/herald-cg.XXXXXX)
PID=""
cleanup() {
    if [ -n "$PID" ]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
python3 - "$WORK/plain.json" <<'PY'
import json, sys
text = ("Thank you for your order. " * 80)[:2000]
json.dump({"from": "Acme <orders@acme.com>", "to": ["ada@example.com"], "subject": "Your order",
           "text": text, "tags": ["bench"], "metadata": {"order_id": "1042"}}, open(sys.argv[1], "w"))
PY
export HERALD_DATABASE_URL="sqlite://$WORK/herald.db" HERALD_LISTEN=127.0.0.1:$PORT \
    HERALD_OUTBOX_DIR=$WORK/outbox HERALD_RELAY_URL="smtp://127.0.0.1:9?tls=none" \
    HERALD_LOG__LEVEL=warn HERALD_SECRET_KEY=bench HERALD_LIMITS__RATE_PER_SECOND=0 \
    HERALD_DELIVERY__WORKERS=0
KEY=$("$BIN" keys create --project bench 2>/dev/null)
valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.out" \
    "$BIN" serve 2>"$WORK/serve.log" &
PID=$!
for _ in $(seq 1 600); do
    (echo >"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
    sleep 0.1
done

send() {
    PACE_URL="http://127.0.0.1:$PORT/v1/emails" PACE_KEY=$KEY PACE_BODY=$WORK/plain.json \
        PACE_RATE=1000000 PACE_REQUESTS=$1 PACE_CONNECTIONS=16 "$PACE" >"$WORK/pace.out"
    grep -q ' non202=0 ' "$WORK/pace.out" || { cat "$WORK/pace.out" "$WORK/serve.log"; exit 1; }
}
send "$WARMUP"
callgrind_control -z "$PID" >/dev/null 2>&1
send "$MEASURED"
callgrind_control -d "$PID" >/dev/null 2>&1
kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""
# The dump taken after the measured requests: the counters since they were zeroed.
DUMP=$(ls "$WORK"/callgrind.out.* | sort -t. -k3 -n | head -1)
cp "$DUMP" bench/callgrind.out
callgrind_annotate --inclusive=yes bench/callgrind.out 2>/dev/null | python3 -c '
import re, sys
n = int(sys.argv[1])
lines = sys.stdin.read().splitlines()
total = next(int(l.split()[0].replace(",", "")) for l in lines if "PROGRAM TOTALS" in l)
print(f"instructions per accepted email: {total / n / 1000:.0f}k  ({n} emails, after a warm-up)")
print("top functions, inclusive, per email:")
shown = 0
for l in lines:
    m = re.match(r"\s*([\d,]+) \([^)]*\)\s+(\S.*)", l)
    if not m or "PROGRAM TOTALS" in l:
        continue
    ir = int(m.group(1).replace(",", ""))
    name = re.sub(r"^\S*:", "", m.group(2))[:110]
    print(f"  {ir / n / 1000:8.1f}k  {name}")
    shown += 1
    if shown == int(sys.argv[2]):
        break
' "$MEASURED" "${CG_TOP:-40}"
