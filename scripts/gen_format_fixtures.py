#!/usr/bin/env python3
"""Fills in the expected results of fixtures/format/*.json from CPython.

Each fixture file is a JSON array of cases, one per line:

    {"msg": "%r", "args": ["it's"], "expect": "\"it's\""}
    {"msg": "%c", "args": [1114112], "error": "OverflowError: %c arg not in range(0x110000)"}
    {"msg": "%2400000000d", "args": ["x"], "reject": "width-too-large"}

A person writes `msg`, `args` (and an optional `note`); this script asks CPython 3.11
(through tests/oracle.py, the same oracle the differential test uses) and writes `expect`
(the rendered message) or `error` (`Type: message`). Nobody hand-types an expected string.

`reject` cases (a logfence limit wins) are labelled by hand and left alone: CPython is
never run on them, since it would try to allocate what the limit exists to refuse. A case
CPython renders to more than 64 KiB must be labelled `"reject": "output-too-large"` by
hand; the script stops and says so.

Usage: python3 scripts/gen_format_fixtures.py [--check] [FILE...]
  --check   change nothing; exit 1 if a file is stale (tests/it/fixtures.rs re-verifies
            the same thing on every test run).
"""

import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))

import oracle  # noqa: E402

STYLES = {"percent.json": "%", "brace.json": "{", "dollar.json": "$"}
MAX_OUTPUT = 64 << 10
KEY_ORDER = ["msg", "args", "expect", "error", "reject", "note"]

# Characters JSON may carry raw but a reader cannot see: written as \uXXXX.
INVISIBLE = re.compile("[\u007f-\u009f\u00ad\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff]")


def dump(case):
    ordered = {k: case[k] for k in KEY_ORDER if k in case}
    ordered.update({k: v for k, v in case.items() if k not in ordered})
    oracle.sys.set_int_max_str_digits(0)
    try:
        text = json.dumps(ordered, ensure_ascii=False)
    finally:
        oracle.sys.set_int_max_str_digits(oracle.DEFAULT_DIGITS)
    return INVISIBLE.sub(lambda m: "\\u%04x" % ord(m.group(0)), text)


def load(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    oracle.sys.set_int_max_str_digits(0)
    try:
        return json.loads(text)
    finally:
        oracle.sys.set_int_max_str_digits(oracle.DEFAULT_DIGITS)


def fill(path, style):
    cases = load(path)
    out = []
    for i, case in enumerate(cases):
        case = dict(case)
        if "reject" in case:
            case.pop("expect", None)
            case.pop("error", None)
            out.append(case)
            continue
        oracle.sys.set_int_max_str_digits(0)
        try:
            args_text = json.dumps(case["args"])
        finally:
            oracle.sys.set_int_max_str_digits(oracle.DEFAULT_DIGITS)
        ans = oracle.answer(style, case["msg"], args_text)
        case.pop("expect", None)
        case.pop("error", None)
        if "ok" in ans:
            if ans["len"] > MAX_OUTPUT:
                sys.exit("%s case %d renders %d bytes: label it \"reject\": \"output-too-large\""
                         % (path, i, ans["len"]))
            case["expect"] = ans["ok"]
        elif "err" in ans:
            if ans.get("unlimited_len", 0) > MAX_OUTPUT:
                sys.exit("%s case %d: label it \"reject\": \"output-too-large\"" % (path, i))
            case["error"] = ans["err"]
        else:
            sys.exit("%s case %d: oracle cannot answer: %s" % (path, i, ans["skip"]))
        out.append(case)
    return "[\n" + ",\n".join(dump(c) for c in out) + "\n]\n"


def main(argv):
    check = "--check" in argv
    files = [a for a in argv if not a.startswith("--")]
    if not files:
        d = os.path.join(ROOT, "fixtures", "format")
        files = [os.path.join(d, n) for n in sorted(STYLES)]
    stale = []
    for path in files:
        style = STYLES[os.path.basename(path)]
        new = fill(path, style)
        with open(path, encoding="utf-8") as f:
            old = f.read()
        if new != old:
            stale.append(path)
            if not check:
                with open(path, "w", encoding="utf-8") as f:
                    f.write(new)
    for p in stale:
        print(("stale: " if check else "updated: ") + p)
    return 1 if (check and stale) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
