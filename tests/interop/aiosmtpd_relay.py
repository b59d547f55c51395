#!/usr/bin/env python3
"""An aiosmtpd relay for Herald's interoperability test: STARTTLS required, AUTH PLAIN/LOGIN
(user "herald", password "s3cret"), and each accepted transaction written to --maildir as a
file with the envelope in X- headers. Prints its port on stdout once listening."""

import argparse
import asyncio
import os
import socket
import ssl
import sys
import uuid

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and auth_data.login == b"herald" and auth_data.password == b"s3cret"
    return AuthResult(success=ok, auth_data=auth_data if ok else None)


class Handler:
    def __init__(self, maildir):
        self.maildir = maildir

    async def handle_DATA(self, server, session, envelope):
        head = (
            f"X-Mail-From: {envelope.mail_from}\r\n"
            f"X-Rcpt-To: {','.join(envelope.rcpt_tos)}\r\n"
            f"X-Peer-TLS: {'yes' if session.ssl else 'no'}\r\n"
            f"X-Auth-User: {session.auth_data.login.decode() if session.auth_data else ''}\r\n"
        )
        path = os.path.join(self.maildir, f"{uuid.uuid4()}.eml")
        with open(path, "wb") as f:
            f.write(head.encode() + envelope.original_content)
        return "250 2.0.0 OK queued"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--maildir", required=True)
    args = p.parse_args()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(args.cert, args.key)
    # aiosmtpd's Controller cannot listen on port 0 (it connects to its own port to check that
    # it started), so take a free port from the kernel first.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(
        Handler(args.maildir),
        hostname="127.0.0.1",
        port=port,
        tls_context=context,
        require_starttls=True,
        authenticator=authenticator,
        auth_required=True,
        auth_require_tls=True,
    )
    controller.start()
    print(port, flush=True)
    try:
        asyncio.get_event_loop().run_until_complete(asyncio.Event().wait())
    except KeyboardInterrupt:
        pass
    finally:
        controller.stop()


if __name__ == "__main__":
    sys.exit(main())
