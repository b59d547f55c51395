#!/usr/bin/env bash
# How much of accepting an email is the HTTP stack, and how much is the rest? One release
# Herald on SQLite with delivery off, driven by wrk (keep-alive, concurrency C) for D seconds
# per kind of request, the kinds interleaved round after round:
#   healthz  GET /healthz: hyper, axum's router and Herald's middleware, nothing else;
#   reject   POST /v1/emails with the bench's 2 KB body and an invalid recipient: the API key,
#            the body read, the JSON parse and the validation, answered 422 before anything
#            is built or stored;
#   accept   the same body valid: the MIME build, the group commit, the log's flush, the 202.
# For each: requests/s, CPU microseconds per request of Herald and of the whole machine (wrk
# and the kernel's loopback included), and for accept the share of Herald's threads. Beside
# them, what the machine has per request at 20,000/s. Median of the rounds.
#
#   bash bench/ceiling.sh [seconds=5] [concurrency=64] [rounds=3]
#   BENCH_BIN=path/to/herald measures that build instead of building this tree.
# Needs wrk, curl, python3. Stops what it starts.
set -euo pipefail
cd "$(dirname "$0")/.."
D=${1:-5}; C=${2:-64}; ROUNDS=${3:-3}
for tool in wrk curl python3; do
    command -v "$tool" >/dev/null || { echo "needs $tool (apt-get install wrk curl)"; exit 1; }
done
BIN=${BENCH_BIN:-}
if [ -z "$BIN" ]; then
    cargo build --release --quiet --bin herald
    BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/herald
fi
WORK=$(mktemp -d /tmp/herald-ceiling.XXXXXX)
PID=""
cleanup() {
    if [ -n "$PID" ]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

python3 - "$WORK" <<'PY'
import json, sys
work = sys.argv[1]
text = ("Thank you for your order. " * 80)[:2000]
ok = {"from": "Acme <orders@acme.com>", "to": ["ada@example.com"], "subject": "Your order",
      "text": text, "tags": ["bench"], "metadata": {"order_id": "1042"}}
json.dump(ok, open(f"{work}/accept.json", "w"))
json.dump(dict(ok, to=["not an address"]), open(f"{work}/reject.json", "w"))
PY
cat >"$WORK/request.lua" <<'EOF'
function init(args)
  local path = os.getenv("CEILING_BODY")
  if path ~= "" then
    local f = assert(io.open(path, "rb"))
    body = f:read("*a")
    f:close()
  end
  method = path ~= "" and "POST" or "GET"
  target = os.getenv("CEILING_PATH")
  headers = {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. os.getenv("CEILING_KEY"),
  }
end
function request() return wrk.format(method, target, headers, body) end
EOF

export HERALD_DATABASE_URL="sqlite://$WORK/herald.db" HERALD_LISTEN="127.0.0.1:$PORT" \
    HERALD_OUTBOX_DIR="$WORK/outbox" HERALD_RELAY_URL="smtp://127.0.0.1:1?tls=none" \
    HERALD_DELIVERY__WORKERS=0 HERALD_LOG__LEVEL=error HERALD_SECRET_KEY=bench \
    HERALD_LIMITS__RATE_PER_SECOND=0
CEILING_KEY=$("$BIN" keys create --project bench 2>/dev/null)
export CEILING_KEY
"$BIN" serve 2>"$WORK/serve.log" &
PID=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done

# CPU ticks of Herald's threads, by thread name, and of the whole machine.
threads() {
    python3 - "$PID" <<'PY'
import collections, os, sys
pid = sys.argv[1]
ticks = collections.Counter()
for t in os.listdir(f"/proc/{pid}/task"):
    try:
        name = open(f"/proc/{pid}/task/{t}/comm").read().strip().replace(" ", "_")
        f = open(f"/proc/{pid}/task/{t}/stat").read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        continue
    ticks[name] += int(f[11]) + int(f[12])
print(" ".join(f"{k}={v}" for k, v in sorted(ticks.items())))
PY
}
machine() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }

RESULTS=$WORK/results.txt
: >"$RESULTS"
echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); ${D} s per kind, concurrency $C, $ROUNDS rounds"
for r in $(seq 1 "$ROUNDS"); do
    for kind in healthz reject accept; do
        case $kind in
            healthz) export CEILING_BODY="" CEILING_PATH=/healthz ;;
            *) export CEILING_BODY="$WORK/$kind.json" CEILING_PATH=/v1/emails ;;
        esac
        t0=$(threads); m0=$(machine)
        wrk -t2 -c"$C" -d"${D}s" --timeout 30s -s "$WORK/request.lua" \
            "http://127.0.0.1:$PORT" >"$WORK/wrk.out" 2>&1
        t1=$(threads); m1=$(machine)
        python3 - "$kind" "$WORK/wrk.out" "$t0" "$t1" "$m0" "$m1" "$(getconf CLK_TCK)" <<'PY' | tee -a "$RESULTS"
import re, sys
kind, out, t0, t1, m0, m1, hz = sys.argv[1:]
text = open(out).read()
n = int(re.search(r"(\d+) requests in", text).group(1))
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
bad = int(bad.group(1)) if bad else 0
# Every answer is the one this kind of request gets, or the figures mean nothing.
expected_bad = n if kind == "reject" else 0
if bad != expected_bad:
    sys.exit(f"{kind}: {bad} of {n} answers were not the expected status")
before = dict(kv.split("=") for kv in t0.split())
after = dict(kv.split("=") for kv in t1.split())
us = lambda ticks: ticks / int(hz) * 1e6 / n
per = {k: us(int(v) - int(before.get(k, 0))) for k, v in after.items()}
herald = sum(per.values())
machine = us(float(m1) - float(m0))
shares = " ".join(f"{k}={v:.1f}" for k, v in sorted(per.items(), key=lambda kv: -kv[1]) if v >= 0.5)
print(f"{kind} {rps:.0f} {herald:.1f} {machine:.1f} {shares}")
PY
    done
done

echo
printf '%-8s %22s %18s %18s  %s\n' kind "requests/s" "Herald µs/req" "machine µs/req" "Herald's threads, µs/req (last round)"
for kind in healthz reject accept; do
    python3 - "$kind" "$RESULTS" <<'PY'
import statistics, sys
kind, path = sys.argv[1:]
rows = [l.split() for l in open(path) if l.split()[0] == kind]
def col(i):
    v = [float(r[i]) for r in rows]
    return f"{statistics.median(v):.0f} ({min(v):.0f}–{max(v):.0f})" if i == 1 else \
        f"{statistics.median(v):.1f} ({min(v):.1f}–{max(v):.1f})"
print(f"{kind:<8} {col(1):>22} {col(2):>18} {col(3):>18}  {' '.join(rows[-1][4:])}")
PY
done
echo "at 20,000/s this machine has $(python3 -c "print(round($(nproc) * 1e6 / 20000))") µs of CPU per request, for Herald, wrk and the kernel together"
