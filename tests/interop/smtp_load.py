#!/usr/bin/env python3
"""Submits messages to Herald over SMTP from several connections until N are accepted or the
server goes away, printing the Message-ID of each message the server answered 250 for, as the
answer arrives. Run by tests/it/submission.rs's crash test.

  smtp_load.py PORT KEY N CONNECTIONS
"""
import smtplib
import sys
import threading

port, key, total, conns = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
lock = threading.Lock()
counter = iter(range(total))


def worker(w):
    try:
        s = smtplib.SMTP("127.0.0.1", port, timeout=30)
        s.ehlo("load.example")
        s.login("load", key)
        while True:
            with lock:
                n = next(counter, None)
            if n is None:
                break
            mid = f"<load-{n}@acme.com>"
            msg = (f"From: orders@acme.com\r\nTo: user{n}@example.com\r\nSubject: Load {n}\r\n"
                   f"Message-ID: {mid}\r\n\r\nMessage {n}\r\n")
            s.mail("orders@acme.com")
            s.rcpt(f"user{n}@example.com")
            code, _ = s.data(msg.encode())
            if code == 250:
                with lock:
                    print(mid, flush=True)
        s.quit()
    except Exception:
        # The server was killed: what it answered 250 for is printed already.
        pass


threads = [threading.Thread(target=worker, args=(w,)) for w in range(conns)]
for t in threads:
    t.start()
for t in threads:
    t.join()
