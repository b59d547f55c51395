#!/usr/bin/env python3
"""Submits mail to Herald with Python's smtplib, as an app would, and prints one JSON line per
step: what Herald answered. Run by tests/it/submission.rs.

  smtplib_submit.py PORT CA_FILE KEY MODE   (MODE: starttls or implicit)
"""
import json
import smtplib
import ssl
import sys
from email.message import EmailMessage

port, ca, key, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
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
msg = EmailMessage()
msg["From"] = "Acme Café <orders@acme.com>"
msg["To"] = "Ada <ada@example.com>"
msg["Cc"] = "bob@example.org"
msg["Bcc"] = "audit@example.net"
msg["Subject"] = "Your receipt — №42 ✓"
msg["X-Herald-Tags"] = "receipt, smtp"
msg["X-Herald-Metadata-Order-Id"] = "o-42"
msg.set_content("Thanks for your order, Ada.\n.leading dot\n")
msg.add_alternative("<p>Thanks for your <b>order</b>, Ada.</p>", subtype="html")
msg.add_attachment(b"%PDF-1.4 fake", maintype="application", subtype="pdf", filename="receipt.pdf")
s.mail("orders@acme.com")
for r in ["ada@example.com", "bob@example.org", "audit@example.net"]:
    s.rcpt(r)
say("send", *s.data(msg.as_bytes()))
# Too big for the configured limit: refused after DATA with 552.
s.mail("orders@acme.com")
s.rcpt("ada@example.com")
big = b"From: orders@acme.com\r\nTo: ada@example.com\r\nSubject: big\r\n\r\n" + (b"x" * 900 + b"\r\n") * 400
try:
    say("too_big", *s.data(big))
except smtplib.SMTPDataError as e:
    say("too_big", e.smtp_code, e.smtp_error)
# A message the rules refuse: no subject.
s.mail("orders@acme.com")
s.rcpt("ada@example.com")
try:
    say("no_subject", *s.data(b"From: orders@acme.com\r\nTo: ada@example.com\r\n\r\nhi\r\n"))
except smtplib.SMTPDataError as e:
    say("no_subject", e.smtp_code, e.smtp_error)
s.quit()
