#!/usr/bin/env python3
"""The CPython oracle for logfence's differential and fixture tests.

Reads one JSON object per line on stdin:

    {"style": "%" | "{" | "$", "msg": "...", "args": "<JSON text>"}

and writes one JSON object per line on stdout, in the same order:

    {"ok": "<rendered>", "len": <UTF-8 bytes>}
    {"err": "TypeError: message"}            (type name + ": " + str(exc))
    {"err": "ValueError: Exceeds the limit (4300 digits)...", "unlimited_len": N}
    {"skip": "why"}                          (a result JSON cannot carry, e.g. a lone surrogate)

`args` is JSON text, decoded with `json.loads` exactly as docs/record.md says a record's args
are: an array is a tuple for `%` and `*args` for `{`, an object a dict / `**args`, a
scalar itself; `$` passes `args` as-is to `Template.substitute`. Huge ints must parse,
so the int-digit limit is lifted only while decoding and restored to CPython's default
(4300) for rendering. When rendering trips that digit limit, the case is rendered again
without it and `unlimited_len` tells the caller how long the message would have been,
because logfence's `output-too-large` wins over the digit rule (docs/record.md "Fine points").

Also importable: `render(style, msg, args)` and `answer(style, msg, args_text)` are used
by scripts/gen_format_fixtures.py.
"""

import json
import string
import sys

DEFAULT_DIGITS = 4300
DIGIT_LIMIT_TEXT = "Exceeds the limit"


def render(style, msg, args):
    """CPython's rendering of `msg` with decoded `args`; raises what CPython raises."""
    if style == "%":
        if isinstance(args, list):
            args = tuple(args)
        return msg % args
    if style == "{":
        if isinstance(args, list):
            return msg.format(*args)
        if isinstance(args, dict):
            return msg.format(**args)
        return msg.format(args)
    if style == "$":
        return string.Template(msg).substitute(args)
    raise ValueError("unknown style %r" % (style,))


def decode_args(args_text):
    sys.set_int_max_str_digits(0)
    try:
        return json.loads(args_text)
    finally:
        sys.set_int_max_str_digits(DEFAULT_DIGITS)


def has_surrogate(s):
    return any(0xD800 <= ord(c) <= 0xDFFF for c in s)


def answer(style, msg, args_text):
    """The oracle's answer object for one case."""
    if has_surrogate(msg):
        return {"skip": "lone surrogate in msg"}
    try:
        args = decode_args(args_text)
    except Exception as exc:  # the harness generated bad JSON: say so loudly
        return {"skip": "bad args JSON: %s: %s" % (type(exc).__name__, exc)}
    try:
        out = render(style, msg, args)
    except Exception as exc:
        res = {"err": "%s: %s" % (type(exc).__name__, exc)}
        if isinstance(exc, ValueError) and DIGIT_LIMIT_TEXT in str(exc):
            sys.set_int_max_str_digits(0)
            try:
                res["unlimited_len"] = len(render(style, msg, args).encode("utf-8"))
            except Exception:
                pass
            finally:
                sys.set_int_max_str_digits(DEFAULT_DIGITS)
        return res
    if has_surrogate(out):
        return {"skip": "lone surrogate in output"}
    return {"ok": out, "len": len(out.encode("utf-8"))}


def main():
    sys.set_int_max_str_digits(DEFAULT_DIGITS)
    out = sys.stdout
    for line in sys.stdin:
        if not line.strip():
            continue
        case = json.loads(line)
        res = answer(case["style"], case["msg"], case["args"])
        out.write(json.dumps(res, ensure_ascii=True))
        out.write("\n")
    out.flush()


if __name__ == "__main__":
    main()
