#!/usr/bin/env python3
"""Verifies Herald's webhook deliveries with the `standardwebhooks` package from PyPI.

Input: a JSON file with a list of {"secret", "body", "headers"}. Also checks that a tampered
body fails verification, so the check cannot pass by accident."""

import json
import sys

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def main(path):
    cases = json.load(open(path))
    ok = 0
    for c in cases:
        wh = Webhook(c["secret"])
        payload = wh.verify(c["body"], c["headers"])
        assert payload["type"], payload
        ok += 1
        try:
            wh.verify(c["body"] + " ", c["headers"])
        except WebhookVerificationError:
            pass
        else:
            raise SystemExit("a tampered body verified")
    print(f"standardwebhooks: verified {ok} of {len(cases)} deliveries; tampered bodies refused")


if __name__ == "__main__":
    main(sys.argv[1])
