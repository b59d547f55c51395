#!/usr/bin/env python3
"""Herald's reading of the corpus beside Sisimai's, message by message.

    python3 tests/bounces/compare.py [--herald target/debug/herald] [DIR ...]

Prints, per source directory, how often the two agree on the failed or delayed recipients
(as sets of addresses) and on each recipient's reason (Sisimai's reason mapped to Herald's
sub_type), then each message where they differ. A second opinion for writing expected.json
by hand; it decides nothing itself.
"""
import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

# Sisimai's reasons in Herald's vocabulary (several of Sisimai's fold into one of ours).
REASONS = {
    "userunknown": "no_email",
    "hasmoved": "no_email",
    "hostunknown": "dns_failure",
    "notaccept": "dns_failure",
    "mailboxfull": "mailbox_full",
    "mesgtoolarge": "message_too_large",
    "mesgtoobig": "message_too_large",
    "exceedlimit": "message_too_large",
    "suspend": "mailbox_disabled",
    "filtered": "policy_blocked",
    "rejected": "policy_blocked",
    "policyviolation": "policy_blocked",
    "securityerror": "policy_blocked",
    "blocked": "reputation_blocked",
    "badreputation": "reputation_blocked",
    "requireptr": "reputation_blocked",
    "spamdetected": "content_rejected",
    "contenterror": "content_rejected",
    "virusdetected": "attachment_rejected",
    "authfailure": "auth_failed",
    "ratelimited": "rate_limited",
    "speeding": "rate_limited",
    "toomanyconn": "rate_limited",
    "norelaying": "relay_denied",
    "expired": "expired",
    "networkerror": "general",
    "systemerror": "general",
    "systemfull": "general",
    "mailererror": "general",
    "syntaxerror": "general",
    "onhold": "undetermined",
    "undefined": "undetermined",
    "undefined": "undetermined",
}


def sources(dirs):
    for d in sorted(dirs):
        files = sorted(
            os.path.join(d, f) for f in os.listdir(d) if f.endswith(".eml")
        )
        if files:
            yield os.path.basename(d.rstrip("/")), files


def run(cmd):
    out = subprocess.run(cmd, capture_output=True, check=True).stdout
    return {
        os.path.abspath(v["file"]): v
        for v in (json.loads(line) for line in out.decode().splitlines() if line)
    }


def herald_view(v):
    if v["kind"] == "arf":
        return {}
    return {
        r["address"].lower(): (r["action"], r["sub_type"])
        for r in v["recipients"]
        if r["action"] in ("failed", "delayed")
    }


def sisimai_view(v):
    out = {}
    for r in v["recipients"]:
        reason = r["reason"]
        if reason in ("delivered", "vacation", "feedback", ""):
            continue
        action = "delayed" if r["status"].startswith("4") or r["action"] == "delayed" else "failed"
        out[r["address"]] = (action, REASONS.get(reason, reason))
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--herald", default=os.path.join(HERE, "../../target/debug/herald"))
    p.add_argument("dirs", nargs="*")
    a = p.parse_args()
    dirs = a.dirs or [
        os.path.join(HERE, d) for d in os.listdir(HERE) if os.path.isdir(os.path.join(HERE, d))
    ]
    for name, files in sources(dirs):
        h = run([a.herald, "bounce", "parse", *files])
        s = run(["perl", os.path.join(HERE, "sisimai.pl"), *files])
        same_rcpts = same_reason = rcpts = 0
        lines = []
        for f in files:
            f = os.path.abspath(f)
            hv, sv = herald_view(h[f]), sisimai_view(s[f])
            if set(hv) == set(sv):
                same_rcpts += 1
            else:
                lines.append(f"  {os.path.basename(f)}: recipients herald={sorted(hv)} sisimai={sorted(sv)}")
            for addr, (_, reason) in sv.items():
                rcpts += 1
                if addr in hv and hv[addr][1] == reason:
                    same_reason += 1
                elif addr in hv:
                    lines.append(f"  {os.path.basename(f)}: {addr} herald={hv[addr][1]} sisimai={reason}")
        print(
            f"{name}: {len(files)} messages, recipients agree on {same_rcpts} "
            f"({100 * same_rcpts / len(files):.0f} %), reasons on {same_reason} of {rcpts} "
            f"of Sisimai's recipients ({100 * same_reason / max(rcpts, 1):.0f} %)"
        )
        for line in lines:
            print(line)


if __name__ == "__main__":
    sys.exit(main())
