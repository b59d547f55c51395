#!/usr/bin/env bash
# End-to-end throughput, Herald beside Postfix, on this machine, in one run.
#
#   bash bench/throughput.sh [N=100000] [concurrency=64] [runs=3]
#   BENCH_BACKENDS="sqlite postgres" (default both), BENCH_POSTFIX=0 to skip Postfix,
#   BENCH_RELAY_CONCURRENCY (32), BENCH_OUT (bench/results.json),
#   BENCH_WORKLOADS ("plain mix ingest half"; "half" and "webhooks-half" need "plain" before
#   them, unless BENCH_HALF_RATE sets the rate they send at, the same for every system).
#   BENCH_PROFILE=FILE: perf records Herald in a webhook workload (perf report -i FILE): while
#   "webhooks-backlog" drains, in the others from the first email to the last event.
#   BENCH_BINS="a=/path/herald b=/other/herald": compare builds side by side instead of building
#   this tree (each run goes through every binary in turn; systems are named herald-<backend>-<label>).
#
# For each run: Postfix's smtp-sink is the relay (it answers 250 and keeps nothing). Herald
# (release build) accepts N emails over HTTP keep-alive from wrk, every 202 durably committed
# (SQLite synchronous=FULL with group commit, or Postgres), and delivers them to the sink.
# Workloads: "plain" (2 KB text, one recipient) and "mix" (every 20th email has three
# recipients, every 20th a 24 KB attachment), "ingest" (the plain bodies with delivery off:
# what accepting alone reaches; nothing is delivered), and "half" (the plain emails, N/2 of
# them, sent open-loop by bench/pace.rs at half the rate the same system's plain workload
# reached in the same run: the accept latency at half the peak, measured from when each
# request was due, so a stall counts against every request it held up), "webhooks" (the plain
# workload with one webhook endpoint subscribed to email.sent, served by
# bench/webhook_receiver.js on loopback, which verifies every signature and times each event
# from its `timestamp` to its arrival: events/s, lag p50/p99/max, and Herald's webhook
# backlog sampled every second), "webhooks-all" (the same with every event type subscribed,
# email.queued included: two events per email at the mail's full rate), "webhooks-half" (every
# event type subscribed, and the mail sent open-loop at half the plain rate, as "half" does:
# the lag at a steady half of the peak), "webhooks-backlog" (the endpoint capped at 100 events
# a second while the mail flows, "capped/s" being what it got meanwhile, the cap lifted once
# every recipient is settled: how fast a lane sends a backlog, "drain/s"), "webhooks-many" (100 endpoints of one project, each
# subscribed to everything, one answering after 5 s and one down with 503s; the mail paced at
# BENCH_MANY_RATE emails/s, 20 by default, BENCH_MANY_EMAILS of them, 600: the healthy
# endpoints' events/s and lag, and what the slow and the down one were sent), and
# "submission" (the plain message
# over SMTP instead of HTTP: bench/submit.rs keeps $C connections authenticated with the API
# key and sends message after message on each, MAIL/RCPT/DATA pipelined; every 250 after the
# commit, as every 202 is; set beside Postfix's smtpd taking the same messages from
# smtp-source into its queue, the "postfix plain" row). The same N plain 2 KB messages go through a
# throwaway Postfix instance configured as a relay (smtp-source -> Postfix -> smtp-sink; its
# queue files are fsynced, as Herald's commits are). Runs are interleaved system by system and
# the table shows the median and the spread (min-max) of the runs; the JSON file has every run.
# Each system's run starts after a `sync` (no system waits behind another's writeback), and
# bench/flush_probe.py times a 4 KB fdatasync every 100 ms beside it: the disk's own flush
# latency during that run ("disk max ms"), to read a latency tail against.
# Requires: postfix (smtp-sink, smtp-source), wrk, curl, python3. Cleans up what it starts.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-100000}; C=${2:-64}; RUNS=${3:-3}
BACKENDS=${BENCH_BACKENDS:-"sqlite postgres"}
POSTFIX=${BENCH_POSTFIX:-1}
WORKLOADS=${BENCH_WORKLOADS:-"plain mix ingest half"}
RELAY_CONCURRENCY=${BENCH_RELAY_CONCURRENCY:-32}
OUT=${BENCH_OUT:-bench/results.json}
PG_ADMIN=${BENCH_PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/test}
# Herald reaches Postgres through its Unix socket, as the README advises for a local server
# (over TCP, sqlx's sockets keep Nagle's algorithm on: see src/store/postgres.rs).
PG_SOCKET=${BENCH_PG_SOCKET:-/var/run/postgresql}
DEADLINE=$((SECONDS + ${BENCH_TIMEOUT:-3000}))
for tool in smtp-sink smtp-source postfix wrk curl python3; do
    command -v "$tool" >/dev/null || {
        echo "needs $tool (apt-get install postfix wrk curl)"
        exit 1
    }
done

BINS=${BENCH_BINS:-}
if [ -z "$BINS" ]; then
    cargo build --release --quiet --bin herald
    BINS="=${CARGO_TARGET_DIR:-$PWD/target}/release/herald"
fi
SUBMIT=""
if [[ " $WORKLOADS " == *" submission "* ]]; then
    cargo build --release --quiet --example submit
    SUBMIT=${CARGO_TARGET_DIR:-$PWD/target}/release/examples/submit
fi
PACE=""
if [[ " $WORKLOADS " == *" half "* || " $WORKLOADS " == *" webhooks-half "* || " $WORKLOADS " == *" webhooks-many "* ]]; then
    cargo build --release --quiet --example pace
    PACE=${CARGO_TARGET_DIR:-$PWD/target}/release/examples/pace
fi
WORK=$(mktemp -d /tmp/herald-bench.XXXXXX)
chmod 755 "$WORK"
PIDS=()
PF_STARTED=0
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    if [ "$PF_STARTED" = 1 ]; then postfix -c "$WORK/pf" stop >/dev/null 2>&1 || true; fi
    if [ -f "$WORK/main.cf.orig" ]; then cp "$WORK/main.cf.orig" /etc/postfix/main.cf; fi
    psql "$PG_ADMIN" -qc "DROP DATABASE IF EXISTS herald_bench_tp WITH (FORCE)" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }
# Polls a count (the output of the command given) every $POLL s until it reaches the target,
# then prints the moment it got there, interpolated between the last two polls: polls are
# sparse (each is a process and, for Herald, a /metrics scrape that counts the queue, all on
# the measured machine) without the interval rounding the figures.
POLL=${BENCH_POLL:-0.5}
reach() { # target command...
    local target=$1 t_prev c_prev t c
    shift
    t_prev=$(now); c_prev=$("$@")
    while [ "$c_prev" -lt "$target" ] && [ $SECONDS -lt $DEADLINE ]; do
        sleep "$POLL"
        t=$(now); c=$("$@")
        if [ "$c" -ge "$target" ]; then
            python3 -c "print($t_prev + ($t - $t_prev) * ($target - $c_prev) / max($c - $c_prev, 1))"
            return
        fi
        t_prev=$t; c_prev=$c
    done
    echo "$t_prev"
}
wait_port() { for _ in $(seq 1 100); do (echo > "/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }

python3 - "$WORK" <<'PY'
import base64, json, os, sys
work = sys.argv[1]
text = ("Thank you for your order. " * 80)[:2000]
plain = {"from": "Acme <orders@acme.com>", "to": ["ada@example.com"], "subject": "Your order",
         "text": text, "tags": ["bench"], "metadata": {"order_id": "1042"}}
multi = dict(plain, to=["ada@example.com", "bob@example.org", "cy@example.net"])
attach = dict(plain, attachments=[{"filename": "invoice.pdf", "content_type": "application/pdf",
                                   "content": base64.b64encode(os.urandom(18000)).decode()}])
for name, body in [("plain", plain), ("multi", multi), ("attach", attach)]:
    open(f"{work}/{name}.json", "w").write(json.dumps(body))
PY
export BENCH_BODY_PLAIN=$WORK/plain.json BENCH_BODY_MULTI=$WORK/multi.json BENCH_BODY_ATTACH=$WORK/attach.json

# A process's CPU seconds (user + system) and peak RSS in MB.
proc_stats() {
    python3 - "$1" <<'PY'
import os, sys
pid = sys.argv[1]
fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
hwm = next(l for l in open(f"/proc/{pid}/status") if l.startswith("VmHWM")).split()[1]
print(f"{cpu:.2f} {int(hwm) / 1024:.1f}")
PY
}

# Busy CPU seconds of the whole machine so far (every process: load generator, sink, system).
machine_cpu() {
    awk -v t="$(getconf CLK_TCK)" '/^cpu / {print ($2 + $3 + $4 + $7 + $8 + $9) / t}' /proc/stat
}

accepted_emails() {
    curl -s "http://127.0.0.1:$1/metrics" | awk '/^herald_emails_accepted_total/ {print $2 + 0; f=1} END {if (!f) print 0}'
}

# Prometheus counter sum for a metric name prefix from Herald's /metrics.
settled_recipients() {
    curl -s "http://127.0.0.1:$1/metrics" |
        awk '/^herald_recipients_total\{outcome="(sent|bounced|failed)"\}/ {s += $2} END {print s + 0}'
}

RESULTS=$WORK/results.jsonl
: >"$RESULTS"

# Before each system's run, what the previous one left for the kernel to write back
# (Postfix's queue files, Postgres's pages, SQLite's log) goes to the disk, so that no
# system's flushes wait behind another's writeback.
settle_disk() { sync; }
# The disk's flush latency during a system's run (bench/flush_probe.py), beside its figures.
start_probe() { python3 bench/flush_probe.py "$WORK/flush-probe" >"$WORK/probe.out" & PROBE=$!; PIDS+=("$PROBE"); }
stop_probe() { kill -TERM "$PROBE"; wait "$PROBE" || true; PROBE_OUT=$(cat "$WORK/probe.out"); }

run_herald() { # backend workload label binary
    local backend=$1 mix=$2 label=$3 BIN=$4 sink port db key pid sinkpid
    settle_disk
    sink=$(free_port); port=$(free_port)
    smtp-sink -u nobody -4 "127.0.0.1:$sink" 1024 >/dev/null 2>&1 &
    sinkpid=$!; PIDS+=("$sinkpid")
    wait_port "$sink"
    if [ "$backend" = sqlite ]; then
        rm -f "$WORK"/herald.db*
        db="sqlite://$WORK/herald.db"
    else
        psql "$PG_ADMIN" -qc "DROP DATABASE IF EXISTS herald_bench_tp WITH (FORCE)" -c "CREATE DATABASE herald_bench_tp" >/dev/null
        db="postgres://postgres@localhost/herald_bench_tp?host=$PG_SOCKET"
    fi
    export HERALD_DATABASE_URL=$db HERALD_LISTEN=127.0.0.1:$port HERALD_OUTBOX_DIR=$WORK/outbox \
        HERALD_RELAY_URL="smtp://127.0.0.1:$sink?tls=none" HERALD_RELAY__CONCURRENCY=$RELAY_CONCURRENCY \
        HERALD_LOG__LEVEL=warn HERALD_SECRET_KEY=bench HERALD_LIMITS__RATE_PER_SECOND=0
    # "ingest": the plain bodies with delivery off, to see what accepting alone costs and reaches.
    # wrk's threads each send an equal share: N rounded down to a multiple of them.
    local threads=2 body=$mix rate=""
    local total=$((N / threads * threads))
    unset HERALD_DELIVERY__WORKERS HERALD_SUBMISSION__LISTEN HERALD_SUBMISSION__ALLOW_INSECURE_AUTH
    local sport=""
    case $mix in
        ingest) export HERALD_DELIVERY__WORKERS=0; body=plain ;;
        submission)
            # Plain SMTP on loopback, as smtp-source speaks to Postfix: AUTH in the clear.
            sport=$(free_port) body=plain
            export HERALD_SUBMISSION__LISTEN=127.0.0.1:$sport HERALD_SUBMISSION__ALLOW_INSECURE_AUTH=true
            ;;
        webhooks|webhooks-all|webhooks-backlog) body=plain ;;
        webhooks-many)
            # 100 endpoints: the mail is paced so that the healthy ones' events are a steady
            # load the dispatcher can carry (each email is 2 events for each endpoint).
            body=plain total=${BENCH_MANY_EMAILS:-600} rate=${BENCH_MANY_RATE:-20}
            ;;
        half|webhooks-half)
            body=plain total=$((N / 2))
            # Half of what this system's plain workload reached in this run, or the rate
            # BENCH_HALF_RATE sets for every system (builds compared at one rate).
            rate=${BENCH_HALF_RATE:-}
            [ -n "$rate" ] || rate=$(python3 - "$RESULTS" "herald-$backend${label:+-$label}" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
plain = [r for r in rows if r["system"] == sys.argv[2] and r["workload"] == "plain"]
print(round(plain[-1]["accepted_per_s"] / 2) if plain else "")
PY
)
            if [ -z "$rate" ]; then
                echo "  half: no plain run of herald-$backend${label:+-$label} to halve; skipped"
                kill "$sinkpid"; wait "$sinkpid" 2>/dev/null || true
                return
            fi
            ;;
    esac
    key=$("$BIN" keys create --project bench 2>/dev/null)
    export HERALD_WEBHOOKS__ALLOW_PRIVATE_TARGETS=true
    "$BIN" serve 2>"$WORK/serve.log" &
    pid=$!; PIDS+=("$pid")
    wait_port "$port"
    # The webhook workloads: a receiver, an endpoint for it, the backlog sampled each second.
    local rport="" rpid="" bpid="" per_recipient=0
    if [[ $mix == webhooks* ]]; then
        rport=$(free_port)
        : >"$WORK/whsec"
        local endpoints=1 slow="" down=""
        if [ "$mix" = webhooks-many ]; then
            endpoints=100 slow=/hook/98:5000 down=/hook/99
        fi
        node bench/webhook_receiver.js "$rport" "$WORK/whsec" $slow $down >"$WORK/receiver.out" &
        rpid=$!; PIDS+=("$rpid")
        wait_port "$rport"
        local events='["email.sent"]' cap="" path
        per_recipient=1
        if [ "$mix" = webhooks-half ] || [ "$mix" = webhooks-many ] || [ "$mix" = webhooks-all ]; then
            events='["*", "email.queued"]'; per_recipient=2
        fi
        [ "$mix" = webhooks-backlog ] && cap=', "rate_limit": 100'
        # The healthy endpoints' events are what /count counts (all but the slow and the down).
        [ "$endpoints" -gt 1 ] && per_recipient=$((per_recipient * (endpoints - 2)))
        : >"$WORK/whsec.new"
        for i in $(seq 0 $((endpoints - 1))); do
            path=/hook; [ "$endpoints" -gt 1 ] && path=/hook/$i
            curl -s -H "Authorization: Bearer $key" -H 'content-type: application/json' \
                -d "{\"url\": \"http://127.0.0.1:$rport$path\", \"events\": $events$cap}" \
                "http://127.0.0.1:$port/v1/webhooks" >"$WORK/endpoint.json"
            python3 -c 'import json, sys; print(sys.argv[2], json.load(open(sys.argv[1]))["secret"])' \
                "$WORK/endpoint.json" "$path" >>"$WORK/whsec.new"
        done
        mv "$WORK/whsec.new" "$WORK/whsec"
        (while sleep 1; do
            curl -s "http://127.0.0.1:$port/metrics" | awk '/^herald_webhook_backlog / {print $2}'
        done) >"$WORK/backlog" &
        bpid=$!; PIDS+=("$bpid")
    fi
    local t0 t1 t2 wrk_out expected settled
    export BENCH_KEY=$key BENCH_MIX=$body BENCH_PER_THREAD=$((N / threads))
    local mcpu0 mcpu
    start_probe
    mcpu0=$(machine_cpu)
    local perfpid=""
    if [ -n "${BENCH_PROFILE:-}" ] && [ -n "$rport" ] && [ "$mix" != webhooks-backlog ]; then
        perf record -F 499 --call-graph dwarf,32768 -p "$pid" -o "$BENCH_PROFILE" 2>/dev/null &
        perfpid=$!
    fi
    t0=$(now)
    if [ -n "$sport" ]; then
        wait_port "$sport"
        SUBMIT_ADDR=127.0.0.1:$sport SUBMIT_KEY=$key SUBMIT_MESSAGES=$total SUBMIT_CONNECTIONS=$C \
            "$SUBMIT" >"$WORK/wrk.out" 2>&1 &
    elif [ -n "$rate" ]; then
        PACE_URL="http://127.0.0.1:$port/v1/emails" PACE_KEY=$key PACE_BODY=$BENCH_BODY_PLAIN \
            PACE_RATE=$rate PACE_REQUESTS=$total PACE_CONNECTIONS=$C "$PACE" >"$WORK/wrk.out" 2>&1 &
    else
        # wrk runs for its whole -d even after every thread stopped at its share: stop it
        # (SIGINT makes it print its summary) once Herald has accepted them all.
        wrk -t"$threads" -c"$C" -d3600s --timeout 30s -s bench/throughput.lua \
            "http://127.0.0.1:$port" >"$WORK/wrk.out" 2>&1 &
    fi
    local wrkpid=$!
    t1=$(reach "$total" accepted_emails "$port")
    # The peers' own CPU (they share the machine): read before they exit.
    local wcpu scpu
    if [ -n "$rate" ] || [ -n "$sport" ]; then
        # The pacer and the SMTP client end after their last answer and report their own CPU.
        wait "$wrkpid" || true
        wcpu=$(grep -o 'cpu_ms=[0-9]*' "$WORK/wrk.out" | awk -F= '{print $2 / 1000}')
    else
        read -r wcpu _ < <(proc_stats "$wrkpid")
        kill -INT "$wrkpid"; wait "$wrkpid" || true
    fi
    wrk_out=$(cat "$WORK/wrk.out")
    # Recipients accepted, from Herald's own stats.
    expected=$(curl -s -H "Authorization: Bearer $key" "http://127.0.0.1:$port/v1/stats?granularity=month&metrics=accepted" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["totals"]["accepted"])')
    settled=0 t2=$t1
    if [ "$mix" != ingest ]; then
        t2=$(reach "$expected" settled_recipients "$port")
        settled=$(settled_recipients "$port")
    fi
    local t3=$t2 hooks='{}' tp="" c0=""
    if [ -n "$rport" ]; then
        if [ "$mix" = webhooks-backlog ]; then
            # Lift the cap: the lane sends the backlog as fast as it can.
            c0=$(curl -s "http://127.0.0.1:$rport/count")
            tp=$(now)
            curl -s -X PATCH -H "Authorization: Bearer $key" -H 'content-type: application/json' \
                -d '{"rate_limit": null}' \
                "http://127.0.0.1:$port/v1/webhooks/$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["id"])' "$WORK/endpoint.json")" >/dev/null
        fi
        if [ -n "${BENCH_PROFILE:-}" ] && [ -n "$tp" ]; then
            perf record -F 499 --call-graph dwarf,32768 -p "$pid" -o "$BENCH_PROFILE" 2>/dev/null &
            perfpid=$!
        fi
        t3=$(reach $((expected * per_recipient)) curl -s "http://127.0.0.1:$rport/count")
        if [ -n "$perfpid" ]; then kill -INT "$perfpid"; wait "$perfpid" || true; fi
        kill -TERM "$rpid"; wait "$rpid" 2>/dev/null || true
        kill "$bpid"; wait "$bpid" 2>/dev/null || true
        hooks=$(python3 - "$WORK/receiver.out" "$WORK/backlog" "$t0" "$t3" "$tp" "$c0" <<'PY'
import json, sys
r = json.loads(open(sys.argv[1]).read() or "{}")
backlog = [int(float(l)) for l in open(sys.argv[2]) if l.strip()]
t0, t3 = float(sys.argv[3]), float(sys.argv[4])
tp, c0 = sys.argv[5], sys.argv[6]
drain = round((r["events"] - int(c0)) / (t3 - float(tp))) if tp and r.get("events") else None
# Under the cap: the events that arrived before it was lifted, over the time since the first.
capped = round(int(c0) / (float(tp) - r["first_s"]), 1) if tp and r.get("first_s") else None
print(json.dumps({"webhook_events": r.get("events"), "webhook_bad_signatures": r.get("bad_signatures"),
                  "webhook_events_per_s": r.get("events_per_s"), "webhook_drain_per_s": drain,
                  "webhook_capped_per_s": capped,
                  "webhook_done_s": round(t3 - t0, 2),
                  "receiver_cpu_s_per_1000": round(r["cpu_ms"] / r["events"], 3) if r.get("events") else None,
                  "webhook_slow": r.get("slow"), "webhook_down": r.get("down"),
                  "webhook_lag_p50_ms": r.get("lag_p50_ms"), "webhook_lag_p99_ms": r.get("lag_p99_ms"),
                  "webhook_lag_max_ms": r.get("lag_max_ms"),
                  "webhook_backlog_max": max(backlog, default=0), "webhook_backlog": backlog}))
PY
)
    fi
    mcpu=$(python3 -c "print(f'{$(machine_cpu) - $mcpu0:.2f}')")
    stop_probe
    read -r cpu rss < <(proc_stats "$pid")
    read -r scpu _ < <(proc_stats "$sinkpid")
    kill "$pid"; wait "$pid" 2>/dev/null || true
    kill "$sinkpid"; wait "$sinkpid" 2>/dev/null || true
    python3 - "$RESULTS" "$backend${label:+-$label}" "$mix" "$t0" "$t1" "$t2" "$expected" "$settled" "$cpu" "$rss" "$mcpu" "$wcpu" "$scpu" "$wrk_out" "$PROBE_OUT" "$hooks" <<'PY'
import json, re, sys
out, backend, mix, t0, t1, t2, expected, settled, cpu, rss, mcpu, wcpu, scpu, wrk, probe, hooks = sys.argv[1:]
m = dict(re.findall(r"(\w+)=(\d+)", next(l for l in wrk.splitlines() if l.startswith("BENCH "))))
t0, t1, t2 = float(t0), float(t1), float(t2)
emails = int(m["requests"])
row = {"system": f"herald-{backend}", "workload": mix, "emails": emails,
       "recipients": int(expected), "delivered": int(settled), "non_202": int(m["non202"]),
       "accepted_per_s": round(emails / (t1 - t0), 1),
       "delivered_per_s": None if mix == "ingest" else round(int(settled) / (t2 - t0), 1),
       "accept_p50_ms": int(m["p50_us"]) / 1000, "accept_p99_ms": int(m["p99_us"]) / 1000,
       "accept_max_ms": int(m["max_us"]) / 1000,
       "paced_rate": int(m["rate"]) if "rate" in m else None,
       "accept_p999_ms": int(m["p999_us"]) / 1000 if "p999_us" in m else None,
       "drain_s": None if mix == "ingest" else round(t2 - t0, 2),
       "drain_after_accept_s": None if mix == "ingest" else round(t2 - t1, 2), "peak_rss_mb": float(rss),
       "cpu_s_per_1000": round(float(cpu) / emails * 1000, 3),
       "machine_cpu_s_per_1000": round(float(mcpu) / emails * 1000, 3),
       "wrk_cpu_s_per_1000": round(float(wcpu) / emails * 1000, 3),
       "sink_cpu_s_per_1000": round(float(scpu) / emails * 1000, 3), **json.loads(probe),
       **json.loads(hooks)}
open(out, "a").write(json.dumps(row) + "\n")
print(f"  {row['system']:<24} {mix:<6} accepted {row['accepted_per_s']:>8}/s  delivered {str(row['delivered_per_s'] or '-'):>8}/s  "
      f"p99 {row['accept_p99_ms']} ms  rss {rss} MB  cpu {row['cpu_s_per_1000']} s/1000  disk flush max {row['disk_flush_max_ms']} ms")
if "webhook_events" in row:
    b = row["webhook_backlog"]
    print(f"  {'':<24} {'':<6} webhooks {row['webhook_events']} events, {row['webhook_events_per_s']}/s, "
          f"drain {row['webhook_drain_per_s'] or '-'}/s, capped {row.get('webhook_capped_per_s') or '-'}/s, "
          f"lag p50 {row['webhook_lag_p50_ms']} p99 {row['webhook_lag_p99_ms']} max {row['webhook_lag_max_ms']} ms, "
          f"bad signatures {row['webhook_bad_signatures']}, receiver cpu {row['receiver_cpu_s_per_1000']} s/1k, backlog max {row['webhook_backlog_max']} "
          f"(every 5 s: {b[::5]})")
    if row.get("webhook_slow"):
        print(f"  {'':<24} {'':<6} the slow endpoint: {row['webhook_slow']}, the down one: {row['webhook_down']}")
PY
}

setup_postfix() {
    local pf=$WORK/pf
    mkdir -p "$pf"
    cp /etc/postfix/main.cf "$WORK/main.cf.orig"
    postconf -e "alternate_config_directories = $pf"
    PF_PORT=$(free_port); PF_SINK=$(free_port)
    cp /etc/postfix/master.cf "$pf/master.cf"
    sed -i "s/^smtp      inet/127.0.0.1:$PF_PORT inet/" "$pf/master.cf"
    cat >"$pf/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $pf/queue
data_directory = $pf/data
myhostname = bench.localhost
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mydestination =
mynetworks = 127.0.0.0/8
relayhost = [127.0.0.1]:$PF_SINK
smtpd_relay_restrictions = permit_mynetworks, reject
smtp_tls_security_level = none
smtpd_tls_security_level = none
maillog_file = $pf/maillog
maillog_file_prefixes = /var, /tmp
meta_directory = /etc/postfix
default_process_limit = 200
smtp_destination_concurrency_limit = $RELAY_CONCURRENCY
default_destination_concurrency_limit = $RELAY_CONCURRENCY
EOF
}

sent_count() {
    local n
    n=$(grep -c 'status=sent' "$1" 2>/dev/null)
    echo "${n:-0}"
}

run_postfix() {
    local pf=$WORK/pf sinkpid t0 t1 t2 sent=0 cpu
    settle_disk
    rm -rf "$pf/queue" "$pf/data" "$pf/maillog"
    mkdir -p "$pf/queue" "$pf/data"
    chown postfix "$pf/data"
    smtp-sink -u nobody -4 "127.0.0.1:$PF_SINK" 1024 >/dev/null 2>&1 &
    sinkpid=$!; PIDS+=("$sinkpid")
    wait_port "$PF_SINK"
    postfix -c "$pf" check >/dev/null 2>&1 || true
    postfix -c "$pf" start >/dev/null 2>&1
    PF_STARTED=1
    wait_port "$PF_PORT"
    local cpu0
    start_probe
    cpu0=$(machine_cpu)
    t0=$(now)
    smtp-source -c -l 2048 -m "$N" -s "$C" -f orders@acme.com -t ada@example.com "127.0.0.1:$PF_PORT" >/dev/null
    t1=$(now)
    t2=$(reach "$N" sent_count "$pf/maillog")
    sent=$(sent_count "$pf/maillog")
    cpu=$(python3 -c "print(f'{$(machine_cpu) - $cpu0:.2f}')")
    stop_probe
    postfix -c "$pf" stop >/dev/null 2>&1 || true
    PF_STARTED=0
    kill "$sinkpid"; wait "$sinkpid" 2>/dev/null || true
    python3 - "$RESULTS" "$t0" "$t1" "$t2" "$N" "$sent" "$cpu" "$PROBE_OUT" <<'PY'
import json, sys
out, t0, t1, t2, n, sent, cpu, probe = sys.argv[1:]
t0, t1, t2, n, sent = float(t0), float(t1), float(t2), int(n), int(sent)
row = {"system": "postfix", "workload": "plain", "emails": n, "recipients": n, "delivered": sent,
       "accepted_per_s": round(n / (t1 - t0), 1), "delivered_per_s": round(sent / (t2 - t0), 1),
       "drain_s": round(t2 - t0, 2), "drain_after_accept_s": round(t2 - t1, 2),
       "machine_cpu_s_per_1000": round(float(cpu) / n * 1000, 3), **json.loads(probe)}
open(out, "a").write(json.dumps(row) + "\n")
print(f"  {'postfix':<16} plain  accepted {row['accepted_per_s']:>8}/s  delivered {row['delivered_per_s']:>8}/s  disk flush max {row['disk_flush_max_ms']} ms")
PY
}

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "N=$N emails per run, concurrency $C, relay connections $RELAY_CONCURRENCY, $RUNS runs"
[ "$POSTFIX" = 1 ] && setup_postfix
for r in $(seq 1 "$RUNS"); do
    echo "run $r (load $(cut -d' ' -f1 /proc/loadavg))"
    for backend in $BACKENDS; do
        for mix in $WORKLOADS; do
            for bin in $BINS; do
                run_herald "$backend" "$mix" "${bin%%=*}" "${bin#*=}"
            done
        done
    done
    [ "$POSTFIX" = 1 ] && run_postfix
done

python3 - "$RESULTS" "$OUT" "$N" "$C" "$RUNS" <<'PY'
import json, os, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
out, n, c, runs = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
groups = {}
for r in rows:
    groups.setdefault((r["system"], r["workload"]), []).append(r)
def med(vals):
    return statistics.median(vals) if vals else None
summary = []
print()
print(f"{'system':<24} {'workload':<8} {'accepted/s':>18} {'delivered/s':>18} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'drain s':>8} {'RSS MB':>7} {'CPU s/1k':>8} {'machine CPU s/1k':>16} {'wrk s/1k':>8} {'sink s/1k':>9} {'disk max ms':>11}")
for (system, workload), rs in groups.items():
    def col(k):
        v = [r[k] for r in rs if r.get(k) is not None]
        return (med(v), min(v), max(v)) if v else (None, None, None)
    s = {"system": system, "workload": workload, "runs": len(rs)}
    for k in ["accepted_per_s", "delivered_per_s", "accept_p50_ms", "accept_p99_ms", "accept_max_ms",
              "drain_s", "peak_rss_mb", "cpu_s_per_1000", "machine_cpu_s_per_1000", "wrk_cpu_s_per_1000", "sink_cpu_s_per_1000", "disk_flush_max_ms",
              "webhook_events_per_s", "webhook_drain_per_s", "webhook_capped_per_s", "webhook_lag_p50_ms", "webhook_lag_p99_ms", "webhook_lag_max_ms", "webhook_backlog_max"]:
        s[k] = dict(zip(["median", "min", "max"], col(k)))
    summary.append(s)
    f = lambda k: "-" if s[k]["median"] is None else f"{s[k]['median']:.0f} ({s[k]['min']:.0f}-{s[k]['max']:.0f})"
    g = lambda k: "-" if s[k]["median"] is None else f"{s[k]['median']:.3g}"
    print(f"{system:<24} {workload:<8} {f('accepted_per_s'):>18} {f('delivered_per_s'):>18} {g('accept_p50_ms'):>7} {g('accept_p99_ms'):>7} {g('accept_max_ms'):>7} {g('drain_s'):>8} {g('peak_rss_mb'):>7} {g('cpu_s_per_1000'):>8} {g('machine_cpu_s_per_1000'):>16} {g('wrk_cpu_s_per_1000'):>8} {g('sink_cpu_s_per_1000'):>9} {g('disk_flush_max_ms'):>11}")
hooked = [s for s in summary if s["webhook_events_per_s"]["median"] is not None]
if hooked:
    print()
    print(f"{'system':<24} {'workload':<16} {'webhook events/s':>18} {'drain/s':>18} {'capped/s':>10} {'lag p50 ms':>18} {'lag p99 ms':>18} {'lag max ms':>18} {'backlog max':>18}")
    for s in hooked:
        m = lambda k: "-" if s[k]["median"] is None else f"{s[k]['median']:.0f} ({s[k]['min']:.0f}-{s[k]['max']:.0f})"
        c = "-" if s["webhook_capped_per_s"]["median"] is None else f"{s['webhook_capped_per_s']['median']:.1f}"
        print(f"{s['system']:<24} {s['workload']:<16} {m('webhook_events_per_s'):>18} {m('webhook_drain_per_s'):>18} {c:>10} {m('webhook_lag_p50_ms'):>18} {m('webhook_lag_p99_ms'):>18} {m('webhook_lag_max_ms'):>18} {m('webhook_backlog_max'):>18}")
pf = next((s for s in summary if s["system"] == "postfix"), None)
ratios = {}
if pf:
    for s in summary:
        if s["system"] != "postfix" and s["workload"] == "plain":
            ratios[s["system"]] = {k: round(s[k]["median"] / pf[k]["median"], 2)
                                   for k in ["accepted_per_s", "delivered_per_s"]}
            print(f"{s['system']} / postfix (plain): accepted x{ratios[s['system']]['accepted_per_s']}, delivered x{ratios[s['system']]['delivered_per_s']}")
machine = {"cores": os.cpu_count(), "loadavg_end": open("/proc/loadavg").read().split()[:3]}
json.dump({"n": n, "concurrency": c, "runs": runs, "machine": machine, "summary": summary,
           "ratios_vs_postfix": ratios, "all_runs": rows}, open(out, "w"), indent=2)
print(f"\nwritten: {out}")
PY
