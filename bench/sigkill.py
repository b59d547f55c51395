#!/usr/bin/env python3
"""Kill -9 mid-delivery, at volume: nothing accepted is lost, and only the crash window
duplicates.

    python3 bench/sigkill.py [--emails 20000] [--kill-after 5000] [--herald target/release/herald]

A release Herald on SQLite relays to an in-process counting SMTP relay (aiosmtpd, plain, no
auth). The script posts the emails (each to its own recipient), SIGKILLs Herald once the relay
has taken `--kill-after` of them, starts it again on the same database and waits until the
relay has every accepted email. It prints how many were accepted (202), delivered, lost
(accepted and never delivered) and delivered twice; the promise is 0 lost and duplicates only
from the milliseconds between a relay's 250 and its commit. Outside CI: it takes minutes.
"""
import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from aiosmtpd.controller import Controller

from faults import Relay, free_port  # bench/faults.py, beside this script


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--emails", type=int, default=20000)
    p.add_argument("--kill-after", type=int, default=5000)
    p.add_argument("--herald", default="target/release/herald")
    a = p.parse_args()
    herald = os.path.abspath(a.herald)
    counter = Relay()
    relay = Controller(counter, hostname="127.0.0.1", port=free_port())
    relay.start()
    work = tempfile.mkdtemp()
    http_port = free_port()
    env = dict(
        os.environ,
        HERALD_DATABASE_URL=f"sqlite://{work}/herald.db",
        HERALD_LISTEN=f"127.0.0.1:{http_port}",
        HERALD_RELAY_URL=f"smtp://127.0.0.1:{relay.port}?tls=none",
        HERALD_LOG__LEVEL="error",
        HERALD_SECRET_KEY="bench",
        HERALD_LIMITS__RATE_PER_SECOND="0",
    )
    key = subprocess.run([herald, "keys", "create", "--project", "p"], env=env,
                         capture_output=True, text=True, check=True).stdout.split()[-1]

    def start():
        proc = subprocess.Popen([herald, "serve"], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", http_port), 0.2).close()
                return proc
            except OSError:
                time.sleep(0.1)
        raise SystemExit("Herald did not start")

    proc = start()
    accepted = []
    accepted_lock = threading.Lock()

    def send(i):
        body = json.dumps({"from": "bench@acme.test", "to": [f"u{i}@example.com"],
                           "subject": "Your order", "text": "x" * 2000}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{http_port}/v1/emails", data=body,
                                     method="POST", headers={"Authorization": f"Bearer {key}",
                                                             "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                if r.status == 202:
                    with accepted_lock:
                        accepted.append(f"u{i}@example.com")
        except Exception:
            pass  # refused or cut by the kill: not accepted, so not owed

    killed = threading.Event()

    def killer():
        while counter.total() < a.kill_after:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed.set()

    threading.Thread(target=killer, daemon=True).start()
    started = time.time()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(send, range(a.emails)))
    killed.wait()
    proc = start()
    # Posts cut by the kill were not accepted; what was must all arrive.
    deadline = time.time() + 600
    while time.time() < deadline:
        with accepted_lock:
            owed = set(accepted)
        with counter.lock:
            if all(counter.by_rcpt[r] >= 1 for r in owed):
                break
        time.sleep(0.5)
    took = time.time() - started
    proc.send_signal(signal.SIGTERM)
    proc.wait()
    relay.stop()
    with counter.lock:
        delivered = sum(1 for r in accepted if counter.by_rcpt[r] >= 1)
        lost = len(accepted) - delivered
        twice = sum(1 for r, n in counter.by_rcpt.items() if n > 1)
    print(json.dumps({"posted": a.emails, "accepted": len(accepted), "delivered": delivered,
                      "lost": lost, "delivered_twice": twice, "killed_after": a.kill_after,
                      "seconds": round(took, 1)}))
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
