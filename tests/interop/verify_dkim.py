#!/usr/bin/env python3
"""Verifies DKIM signatures with dkimpy (PyPI), which nobody here wrote.

Input: a JSON file with {"records": {"<selector>._domainkey.<domain>": "<TXT value>"},
"messages": [{"name", "raw"}]}. DNS answers come from "records" (dkimpy's dnsfunc hook), so the
check needs no network. Prints one verdict per message; exits non-zero if any fails."""

import json
import sys

import dkim


def main(path):
    data = json.load(open(path))
    records = {k.lower().rstrip(".") + ".": v for k, v in data["records"].items()}

    def dnsfunc(name, timeout=5):
        if isinstance(name, bytes):
            name = name.decode()
        value = records.get(name.lower().rstrip(".") + ".")
        return value.encode() if value else None

    failures = 0
    for m in data["messages"]:
        ok = dkim.verify(m["raw"].encode(), dnsfunc=dnsfunc)
        print(f"dkimpy {m['name']}: {'pass' if ok else 'FAIL'}")
        if ok != m.get("expect", True):
            failures += 1
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main(sys.argv[1])
