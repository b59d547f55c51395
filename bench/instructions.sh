#!/usr/bin/env bash
# Instructions per accepted email, counted by callgrind: nearly the same figure for the same
# build run after run (350k and 351k), where wall-clock rates swing by 15 % on a shared
# machine. Not quite whatever the machine does: the group commit's batches follow the timing,
# and smaller batches cost more per email (one build: 420k on a quiet machine, 439k with a CI
# run beside it). Compare builds one after the other on a machine otherwise idle.
#
#   bash bench/instructions.sh [herald binary] [warmup=500] [measured=2000] [ingest|deliver]
#
# Herald (SQLite) runs under `valgrind --tool=callgrind`; bench/pace.rs sends the bench's plain
# 2 KB email over 16 keep-alive connections as fast as they are answered: first `warmup`
# requests (caches, prepared statements, the pools filled), then the counters are zeroed and
# `measured` requests follow. `ingest` (the default): delivery off, the cost of accepting.
# `deliver`: Postfix's smtp-sink is the relay, and the counters run until the sink holds every
# message (it writes each to a file, so counting them costs Herald nothing): the cost of
# accepting and delivering. Prints the instructions of the whole process per email, and the
# functions that cost the most (their own instructions) per email. The profile stays in
# bench/callgrind.out for callgrind_annotate. Needs valgrind, python3 (and smtp-sink).
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
BIN=${1:-}
WARMUP=${2:-500}
MEASURED=${3:-2000}
MODE=${4:-ingest}
if [ -z "$BIN" ]; then
    cargo build --release --quiet --bin herald
    BIN=$TARGET/release/herald
fi
cargo build --release --quiet --example pace
PACE=$TARGET/release/examples/pace
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)"; exit 1; }

WORK=$(mktemp -d /tmp/herald-cg.XXXXXX)
PID="" SINK=""
cleanup() {
    for p in $PID $SINK; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_port() {
    for _ in $(seq 1 600); do
        (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}
PORT=$(free_port)
RELAY="smtp://127.0.0.1:9?tls=none" WORKERS=0
if [ "$MODE" = deliver ]; then
    SINK_PORT=$(free_port)
    mkdir -p "$WORK/sink"
    # smtp-sink writes as nobody.
    chmod 755 "$WORK"
    chmod 777 "$WORK/sink"
    smtp-sink -u nobody -d "$WORK/sink/%M." -4 "127.0.0.1:$SINK_PORT" 1024 >/dev/null 2>&1 &
    SINK=$!
    wait_port "$SINK_PORT"
    RELAY="smtp://127.0.0.1:$SINK_PORT?tls=none" WORKERS=4
fi
python3 - "$WORK/plain.json" <<'PY'
import json, sys
text = ("Thank you for your order. " * 80)[:2000]
json.dump({"from": "Acme <orders@acme.com>", "to": ["ada@example.com"], "subject": "Your order",
           "text": text, "tags": ["bench"], "metadata": {"order_id": "1042"}}, open(sys.argv[1], "w"))
PY
export HERALD_DATABASE_URL="sqlite://$WORK/herald.db" HERALD_LISTEN=127.0.0.1:$PORT \
    HERALD_OUTBOX_DIR=$WORK/outbox HERALD_RELAY_URL=$RELAY \
    HERALD_LOG__LEVEL=warn HERALD_SECRET_KEY=bench HERALD_LIMITS__RATE_PER_SECOND=0 \
    HERALD_DELIVERY__WORKERS=$WORKERS
KEY=$("$BIN" keys create --project bench 2>/dev/null)
valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.out" \
    "$BIN" serve 2>"$WORK/serve.log" &
PID=$!
wait_port "$PORT"

# Sends n emails; when delivering, returns once the sink holds `total` messages.
send() { # n total
    PACE_URL="http://127.0.0.1:$PORT/v1/emails" PACE_KEY=$KEY PACE_BODY=$WORK/plain.json \
        PACE_RATE=1000000 PACE_REQUESTS=$1 PACE_CONNECTIONS=16 "$PACE" >"$WORK/pace.out"
    grep -q ' non202=0 ' "$WORK/pace.out" || { cat "$WORK/pace.out" "$WORK/serve.log"; exit 1; }
    if [ "$MODE" = deliver ]; then
        for _ in $(seq 1 3000); do
            [ "$(find "$WORK/sink" -type f | wc -l)" -ge "$2" ] && return 0
            sleep 0.2
        done
        echo "the sink has $(find "$WORK/sink" -type f | wc -l) of $2 messages"
        exit 1
    fi
}
send "$WARMUP" "$WARMUP"
callgrind_control -z "$PID" >/dev/null 2>&1
send "$MEASURED" $((WARMUP + MEASURED))
callgrind_control -d "$PID" >/dev/null 2>&1
kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""
# The dump taken after the measured requests: the counters since they were zeroed.
DUMP=$(ls "$WORK"/callgrind.out.* | sort -t. -k3 -n | head -1)
cp "$DUMP" bench/callgrind.out
# Self cost per function (callgrind_annotate's inclusive view repeats every caller of a
# recursive future): the cost lines of each function, not those of the calls it makes.
python3 - bench/callgrind.out "$MEASURED" "${CG_TOP:-30}" "$MODE" <<'PY'
import collections, re, sys
path, n, top = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
names, own = {}, collections.Counter()
fn, after_call = None, False
def name(ref):
    m = re.match(r"\((\d+)\)(?: (.*))?", ref)
    if not m:
        return ref
    if m.group(2) is not None:
        names[m.group(1)] = m.group(2)
    return names.get(m.group(1), "?")
for line in open(path):
    if line.startswith("fn="):
        fn = name(line[3:].strip())
    elif line.startswith("cfn="):
        name(line[4:].strip())
    elif line.startswith("calls="):
        after_call = True
    elif line[:1].isdigit() or line[:1] in "+-*":
        if not after_call and len(line.split()) > 1:
            own[fn] += int(line.split()[1])
        after_call = False
total = sum(own.values())
print(f"instructions per email: {total / n / 1000:.0f}k  ({n} emails, {sys.argv[4]}, after a warm-up)")
print("the functions that cost the most (their own instructions, per email):")
for f, ir in own.most_common(top):
    print(f"  {ir / n / 1000:7.1f}k  {f[:110]}")
PY
