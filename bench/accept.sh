#!/usr/bin/env bash
# Accept throughput: POST /v1/emails at a given concurrency against a release Herald on SQLite
# (no relay, no delivery workers: this measures ingest alone), with ApacheBench.
#   bash bench/accept.sh [requests] [concurrency] [rounds]
# Prints requests/s and latency percentiles per round and the median; cleans up after itself.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-20000}; C=${2:-64}; ROUNDS=${3:-3}
command -v ab >/dev/null || { echo "needs ab (apt-get install apache2-utils)"; exit 1; }
cargo build --release --quiet --bin herald
BIN=target/release/herald
WORK=$(mktemp -d)
PORT=$((20000 + RANDOM % 20000))
export HERALD_DATABASE_URL="sqlite://$WORK/herald.db" HERALD_LISTEN="127.0.0.1:$PORT" \
       HERALD_OUTBOX_DIR="$WORK/outbox" HERALD_DELIVERY__WORKERS=0 HERALD_LOG__LEVEL=warn \
       HERALD_SECRET_KEY=bench HERALD_LIMITS__RATE_PER_SECOND=0
KEY=$($BIN keys create --project bench 2>/dev/null)
$BIN serve 2>"$WORK/serve.log" &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$WORK"' EXIT
for _ in $(seq 1 50); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done
python3 - "$WORK/body.json" <<'PY'
import json, sys
body = {"from": "Acme <orders@acme.com>", "to": ["ada@example.com"], "subject": "Your order",
        "text": "x" * 1800, "tags": ["bench"], "metadata": {"order_id": "1042"}}
open(sys.argv[1], "w").write(json.dumps(body))
PY
echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); $N requests at concurrency $C"
RESULTS=()
for r in $(seq 1 "$ROUNDS"); do
  OUT=$(ab -q -k -n "$N" -c "$C" -T application/json -H "Authorization: Bearer $KEY" \
        -p "$WORK/body.json" "http://127.0.0.1:$PORT/v1/emails" 2>&1)
  RPS=$(echo "$OUT" | awk '/Requests per second/ {print $4}')
  FAILED=$(echo "$OUT" | awk '/Non-2xx responses/ {print $3}')
  P50=$(echo "$OUT" | awk '$1=="50%" {print $2}')
  P99=$(echo "$OUT" | awk '$1=="99%" {print $2}')
  MAX=$(echo "$OUT" | awk '$1=="100%" {print $2}')
  echo "round $r: ${RPS} accepted/s, p50 ${P50} ms, p99 ${P99} ms, max ${MAX} ms, non-2xx ${FAILED:-0}"
  RESULTS+=("$RPS")
done
printf '%s\n' "${RESULTS[@]}" | sort -n | awk '{a[NR]=$1} END {print "median accepted/s: " a[int((NR+1)/2)]}'
