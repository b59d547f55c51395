#!/usr/bin/env python3
"""Submits mail to Herald with Python's smtplib, as an app would, and prints one JSON line per
step: what Herald answered. Run by tests/it/submission.rs, which checks every client the same
way (see `check_client` there).

  smtplib_submit.py PORT CA_FILE KEY RATE_KEY MODE   (MODE: starttls or implicit)

RATE_KEY is a key whose rate is used up: its message must be refused with 451 4.7.1.
"""
import json
import smtplib
import ssl
import sys
from email.message import EmailMessage

port, ca, key, rate_key, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
ctx = ssl.create_default_context(cafile=ca)


def connect():
    if mode == "implicit":
        s = smtplib.SMTP_SSL("localhost", port, context=ctx, timeout=20)
        s.ehlo("app.example")
    else:
        s = smtplib.SMTP("localhost", port, timeout=20)
        s.ehlo("app.example")
        s.starttls(context=ctx)
        s.ehlo("app.example")
    return s


def say(step, code, text):
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    print(json.dumps({"step": step, "code": code, "text": text}), flush=True)


def send(step, s, sender, rcpts, data):
    """One message; what Herald answered at whichever step it refused or accepted it."""
    try:
        code, text = s.mail(sender)
        if code != 250:
            s.rset()
            return say(step, code, text)
        for r in rcpts:
            code, text = s.rcpt(r)
            if code >= 400:
                s.rset()
                return say(step, code, text)
        say(step, *s.data(data))
    except smtplib.SMTPResponseException as e:
        say(step, e.smtp_code, e.smtp_error)
        s.rset()


if mode == "starttls":
    # AUTH before TLS is refused: the key would travel in the clear.
    s = smtplib.SMTP("localhost", port, timeout=20)
    s.ehlo("app.example")
    say("auth_before_tls", *s.docmd("AUTH", "PLAIN AGFueQBoa18="))
    s.quit()

s = connect()
try:
    s.login("anything", "hk_wrongwrong_00000000000000000000000000000000")
    say("wrong_key", 235, "accepted?!")
except smtplib.SMTPAuthenticationError as e:
    say("wrong_key", e.smtp_code, e.smtp_error)
s.close()

s = connect()
s.login("anything", key)

plain = EmailMessage()
plain["From"] = "orders@acme.com"
plain["To"] = "ada@example.com"
plain["Subject"] = "Plain from smtplib"
plain.set_content("Your order has shipped.\n.a line that starts with a dot\n")
send("plain", s, "orders@acme.com", ["ada@example.com"], plain.as_bytes())

rich = EmailMessage()
rich["From"] = "Acme Café <orders@acme.com>"
rich["To"] = "Ada <ada@example.com>"
rich["Cc"] = "bob@example.org"
rich["Bcc"] = "audit@example.net"
rich["Subject"] = "Your receipt — №42 ✓"
rich["X-Herald-Tags"] = "receipt, smtplib"
rich["X-Herald-Metadata-Order-Id"] = "o-42"
rich.set_content("Thanks for your order, Ada.\n")
rich.add_alternative("<p>Thanks for your <b>order</b>, Ada.</p>", subtype="html")
rich.add_attachment(b"%PDF-1.4 receipt", maintype="application", subtype="pdf", filename="receipt.pdf")
send("rich", s, "orders@acme.com", ["ada@example.com", "bob@example.org", "audit@example.net"], rich.as_bytes())

# Over the test's 64 KiB limit: refused with 552 5.3.4.
big = b"From: orders@acme.com\r\nTo: ada@example.com\r\nSubject: big\r\n\r\n" + (b"x" * 900 + b"\r\n") * 100
send("too_big", s, "orders@acme.com", ["ada@example.com"], big)

# Sent twice under one Idempotency-Key (a client that lost the first 250): queued once.
again = EmailMessage()
again["From"] = "orders@acme.com"
again["To"] = "ada@example.com"
again["Subject"] = "Once only"
again["Idempotency-Key"] = "order-42-" + mode
again.set_content("Sent once.\n")
send("idempotent_first", s, "orders@acme.com", ["ada@example.com"], again.as_bytes())
send("idempotent_again", s, "orders@acme.com", ["ada@example.com"], again.as_bytes())
again.set_content("Something else.\n")
send("idempotent_reused", s, "orders@acme.com", ["ada@example.com"], again.as_bytes())

# A message the rules refuse: no subject.
send("no_subject", s, "orders@acme.com", ["ada@example.com"], b"From: orders@acme.com\r\nTo: ada@example.com\r\n\r\nhi\r\n")
s.quit()

s = connect()
s.login("anything", rate_key)
send("rate", s, "orders@acme.com", ["ada@example.com"], plain.as_bytes())
s.quit()
