#!/usr/bin/env python3
"""An operator's bad day, by hand, at volume: what a client sees, what is lost, what goes twice.

    python3 bench/faults.py [--herald target/release/herald] [scenario ...]

Scenarios (all by default):
  pg-stop      Postgres (a throwaway cluster on its own port) stopped for 17 s while a slow
               relay takes 400 emails; posts and /readyz asked during the outage
  pg-restart   the same cluster restarted at once mid-delivery
  nul-tenant   two projects post at once on Postgres, one with NUL in every text
  idle-flood   1,050 connections that send nothing, then /healthz
  recipients   one email with 160,000 recipients (3.6 MB)
  sigterm      SIGTERM with a client stalled mid-request and the relay answering after 5 s

Each prints one JSON line. Needs aiosmtpd and Postgres's cluster tools (pg_createcluster);
run as a user that may create clusters. Outside CI: it takes a few minutes.
"""
import argparse
import asyncio
import collections
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from aiosmtpd.controller import Controller


class Relay:
    """Counts messages by recipient; answers each DATA after `delay` seconds."""

    def __init__(self, delay=0.0):
        self.delay = delay
        self.lock = threading.Lock()
        self.by_rcpt = collections.Counter()

    async def handle_DATA(self, server, session, envelope):
        if self.delay:
            await asyncio.sleep(self.delay)
        with self.lock:
            for r in envelope.rcpt_tos:
                self.by_rcpt[r.lower()] += 1
        return "250 2.0.0 OK"

    def total(self):
        with self.lock:
            return sum(self.by_rcpt.values())

    def verdict(self, accepted):
        with self.lock:
            lost = sum(1 for r in accepted if self.by_rcpt[r] < 1)
            twice = sum(1 for r, n in self.by_rcpt.items() if n > 1)
        return lost, twice


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Cluster:
    def __init__(self):
        self.version = sorted(os.listdir("/etc/postgresql"))[0]
        self.port = free_port()
        self.name = f"herald_bench_{self.port}"
        subprocess.run(["pg_createcluster", self.version, self.name, "--port", str(self.port),
                        "--", "--auth=trust"], check=True, capture_output=True)
        self.ctl("start")
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/postgres"

    def ctl(self, action):
        args = ["pg_ctlcluster", "--skip-systemctl-redirect", self.version, self.name, action]
        if action in ("stop", "restart"):
            args += ["-m", "fast"]
        subprocess.run(args, check=True, capture_output=True)

    def drop(self):
        subprocess.run(["pg_dropcluster", "--stop", self.version, self.name],
                       capture_output=True)


class Herald:
    def __init__(self, binary, db_url, relay_port=None, **settings):
        self.binary = binary
        self.port = free_port()
        self.env = dict(os.environ, HERALD_DATABASE_URL=db_url,
                        HERALD_LISTEN=f"127.0.0.1:{self.port}", HERALD_LOG__LEVEL="error",
                        HERALD_SECRET_KEY="bench", HERALD_LIMITS__RATE_PER_SECOND="0")
        if relay_port:
            self.env["HERALD_RELAY_URL"] = f"smtp://127.0.0.1:{relay_port}?tls=none"
        for k, v in settings.items():
            self.env[f"HERALD_{k.upper()}"] = str(v)
        self.proc = None

    def key(self, project):
        out = subprocess.run([self.binary, "keys", "create", "--project", project], env=self.env,
                             capture_output=True, text=True, check=True)
        return out.stdout.split()[-1]

    def start(self):
        # FAULTS_LOG=FILE keeps Herald's log (at info) for a look afterwards.
        log = os.environ.get("FAULTS_LOG")
        env = dict(self.env, HERALD_LOG__LEVEL="info", HERALD_LOG__FORMAT="json") if log else self.env
        self.proc = subprocess.Popen([self.binary, "serve"], env=env, stdout=subprocess.DEVNULL,
                                     stderr=open(log, "a") if log else subprocess.DEVNULL)
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.1)
        raise SystemExit("Herald did not start")

    def stop(self):
        started = time.time()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=120)
        return code, time.time() - started

    def request(self, method, path, key=None, body=None, timeout=60):
        """(status, seconds, JSON body or None); status 0 when there was no answer."""
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data,
                                     method=method, headers=headers)
        started = time.time()
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                status, text = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, text = e.code, e.read()
        except OSError:
            return 0, time.time() - started, None
        took = time.time() - started
        try:
            return status, took, json.loads(text)
        except ValueError:
            return status, took, None


def email(i, text="Your order has shipped."):
    return {"from": "bench@acme.test", "to": [f"u{i}@example.com"], "subject": "Your order",
            "text": text}


def post_all(herald, key, ids, workers=16):
    """Posts one email per id; returns the recipients answered 202."""
    accepted = []
    lock = threading.Lock()

    def one(i):
        status, _, _ = herald.request("POST", "/v1/emails", key, email(i))
        if status == 202:
            with lock:
                accepted.append(f"u{i}@example.com")

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, ids))
    return accepted


def wait_delivered(relay, accepted, limit=600):
    deadline = time.time() + limit
    while time.time() < deadline:
        with relay.lock:
            if all(relay.by_rcpt[r] >= 1 for r in accepted):
                return True
        time.sleep(0.1)
    return False


def summary(values):
    values = sorted(values)
    if not values:
        return None
    return {"n": len(values), "median": round(values[len(values) // 2], 3),
            "max": round(values[-1], 3)}


def postgres_outage(binary, outage):
    """400 emails to a relay answering after 0.4 s (8 connections); once 50 are there, Postgres
    stops for `outage` seconds (0: a restart)."""
    cluster = Cluster()
    relay = Relay(delay=0.4)
    smtp = Controller(relay, hostname="127.0.0.1", port=free_port())
    smtp.start()
    try:
        herald = Herald(binary, cluster.url, smtp.port, relay__concurrency=8)
        key = herald.key("p")
        herald.start()
        accepted = post_all(herald, key, range(400))
        while relay.total() < 50:
            time.sleep(0.01)
        during = collections.defaultdict(list)
        if outage:
            cluster.ctl("stop")
            stopped = time.time()
            i = 1000
            while time.time() - stopped < outage:
                status, took, _ = herald.request("POST", "/v1/emails", key, email(i))
                during[f"post {status}"].append(took)
                if status == 202:
                    accepted.append(f"u{i}@example.com")
                status, took, _ = herald.request("GET", "/readyz")
                during[f"readyz {status}"].append(took)
                i += 1
                time.sleep(0.5)
            cluster.ctl("start")
        else:
            cluster.ctl("restart")
        back = time.time()
        ready = None
        while time.time() - back < 60:
            status, _, _ = herald.request("GET", "/readyz")
            if status == 200:
                ready = time.time() - back
                break
            time.sleep(0.05)
        delivered = wait_delivered(relay, accepted)
        drained = time.time() - back
        code, _ = herald.stop()
        lost, twice = relay.verdict(accepted)
        return {"accepted": len(accepted), "all_delivered": delivered, "lost": lost,
                "delivered_twice": twice, "ready_after_s": ready and round(ready, 2),
                "drained_after_s": round(drained, 1), "exit": code,
                "during_outage": {k: summary(v) for k, v in during.items()}}
    finally:
        smtp.stop()
        cluster.drop()


def nul_tenant(binary):
    cluster = Cluster()
    try:
        herald = Herald(binary, cluster.url)
        clean, poisoned = herald.key("clean"), herald.key("poisoned")
        herald.start()
        answers = collections.Counter()
        lock = threading.Lock()

        def one(i):
            key, text, who = ((clean, "fine", "clean") if i % 2 == 0
                              else (poisoned, "a\u0000b", "poisoned"))
            status, _, _ = herald.request("POST", "/v1/emails", key, email(i, text))
            with lock:
                answers[f"{who} {status}"] += 1

        with ThreadPoolExecutor(32) as pool:
            list(pool.map(one, range(3000)))
        code, _ = herald.stop()
        return {"answers": dict(answers), "exit": code}
    finally:
        cluster.drop()


def idle_flood(binary):
    work = tempfile.mkdtemp()
    herald = Herald(binary, f"sqlite://{work}/herald.db")
    herald.start()
    idle = []
    for _ in range(1050):
        try:
            idle.append(socket.create_connection(("127.0.0.1", herald.port), 2))
        except OSError:
            break
    status, took, _ = herald.request("GET", "/healthz", timeout=30)
    # Past the header timeout (10 s) the server has closed them all.
    time.sleep(12)
    closed = 0
    for s in idle:
        s.settimeout(0.5)
        try:
            if s.recv(1) == b"":
                closed += 1
        except OSError:
            closed += 1
        s.close()
    after, took_after, _ = herald.request("GET", "/healthz", timeout=30)
    code, _ = herald.stop()
    return {"opened": len(idle), "healthz_during": [status, round(took, 3)],
            "closed_by_herald_within_12s": closed, "healthz_after": [after, round(took_after, 3)],
            "exit": code}


def many_recipients(binary):
    work = tempfile.mkdtemp()
    herald = Herald(binary, f"sqlite://{work}/herald.db")
    key = herald.key("p")
    herald.start()
    body = json.dumps({"from": "bench@acme.test",
                       "to": [f"user{i}@example{i % 97}.com" for i in range(160_000)],
                       "subject": "x", "text": "x"}).encode()
    status, took, problem = herald.request("POST", "/v1/emails", key, body, timeout=120)
    code, _ = herald.stop()
    return {"body_bytes": len(body), "status": status, "seconds": round(took, 3),
            "code": problem and problem.get("code"), "exit": code}


def sigterm(binary):
    work = tempfile.mkdtemp()
    relay = Relay(delay=5.0)
    smtp = Controller(relay, hostname="127.0.0.1", port=free_port())
    smtp.start()
    try:
        herald = Herald(binary, f"sqlite://{work}/herald.db", smtp.port, relay__concurrency=4)
        key = herald.key("p")
        herald.start()
        accepted = post_all(herald, key, range(40))
        stalled = socket.create_connection(("127.0.0.1", herald.port))
        stalled.sendall(b"POST /v1/emails HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
        time.sleep(1)  # four sends are at the relay, waiting on its 5 s
        code, took = herald.stop()
        before = relay.total()
        herald.start()
        delivered = wait_delivered(relay, accepted)
        herald.stop()
        lost, twice = relay.verdict(accepted)
        return {"exit": code, "seconds_to_exit": round(took, 1), "delivered_before_exit": before,
                "all_delivered_after_restart": delivered, "lost": lost, "delivered_twice": twice}
    finally:
        smtp.stop()


SCENARIOS = {
    "pg-stop": lambda b: postgres_outage(b, 17),
    "pg-restart": lambda b: postgres_outage(b, 0),
    "nul-tenant": nul_tenant,
    "idle-flood": idle_flood,
    "recipients": many_recipients,
    "sigterm": sigterm,
}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--herald", default="target/release/herald")
    p.add_argument("scenarios", nargs="*", default=list(SCENARIOS))
    a = p.parse_args()
    binary = os.path.abspath(a.herald)
    for name in a.scenarios:
        print(json.dumps({"scenario": name, **SCENARIOS[name](binary)}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
