"""LogRecord -> one logfence record (a JSON object, as bytes), without formatting the message.

The record carries the template (`msg`) and the arguments (`args`) so that logfence renders
them under its limits. Arguments that JSON holds exactly (str, int, float, bool, None, and
lists / str-keyed dicts of those) are sent as they are. Any other argument is sent as the
text its conversion would print, and its specifier becomes `%s` (or the value as a number
for a numeric conversion), so logfence's message equals `record.getMessage()` byte for byte.
Where `getMessage()` would raise, the record is sent so that logfence refuses it too.

Nothing here interpolates the template: the only text produced on the application thread is
`str()` / `repr()` / `ascii()` of an individual argument, and the JSON around it.
"""

from __future__ import annotations

import json
import logging
import operator
import string
from collections.abc import Mapping
from typing import Any, Dict, List, Optional, Tuple

__all__ = ["BraceMessage", "DollarMessage", "to_record", "STANDARD_ATTRS"]

# Attributes every LogRecord has; anything else on a record came from `extra=` and is sent
# in `fields`. (`message` / `asctime` are set by Formatter.format, `taskName` by 3.12+.)
STANDARD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}

# Ints up to this many bits print in fewer than 4,300 decimal digits, so json.dumps (which
# uses int.__str__ and its digit limit) can write them; larger ones take the slow writer.
_SAFE_INT_BITS = 14_000

# A width or precision up to this is formatted on the application thread when a `{`-style
# spec has to be applied to a value JSON cannot hold; larger ones are left to logfence,
# which refuses them (its --max-width / --max-precision default).
_BRACE_SPEC_LIMIT = 4096


class BraceMessage:
    """`str.format`-style message, as in the logging cookbook: `log.info(BraceMessage("{} {x}", 1, x=2))`.

    The handler sends the template and the arguments (`style: "{"`); str() formats it, for
    other handlers."""

    __slots__ = ("fmt", "args", "kwargs")

    def __init__(self, fmt: str, /, *args: Any, **kwargs: Any) -> None:
        self.fmt = fmt
        self.args = args
        self.kwargs = kwargs

    def __str__(self) -> str:
        return self.fmt.format(*self.args, **self.kwargs)


class DollarMessage:
    """`string.Template`-style message: `log.info(DollarMessage("$user joined", user="bob"))`."""

    __slots__ = ("fmt", "kwargs")

    def __init__(self, fmt: str, /, **kwargs: Any) -> None:
        self.fmt = fmt
        self.kwargs = kwargs

    def __str__(self) -> str:
        return string.Template(self.fmt).substitute(**self.kwargs)


# --- which values JSON holds exactly ----------------------------------------------------------


def _exact(v: Any) -> bool:
    """Whether logfence, reading `json.dumps(v)`, gets a value that prints exactly as `v`."""
    t = type(v)
    if t is str or t is float or t is bool or v is None:
        return True
    if t is int:
        return bool(v.bit_length() <= _SAFE_INT_BITS)
    if t is list:
        return all(_exact(x) for x in v)
    if t is dict:
        return all(type(k) is str and _exact(x) for k, x in v.items())
    return False


def _exact_big(v: Any) -> bool:
    """Like `_exact`, ints of any size allowed (they need the slow writer)."""
    t = type(v)
    if t is int or t is str or t is float or t is bool or v is None:
        return True
    if t is list:
        return all(_exact_big(x) for x in v)
    if t is dict:
        return all(type(k) is str and _exact_big(x) for k, x in v.items())
    return False


def _int_digits(n: int) -> str:
    """Decimal digits of any int, past CPython's 4,300-digit str() limit."""
    if n < 0:
        return "-" + _int_digits(-n)
    if n.bit_length() <= _SAFE_INT_BITS:
        return str(n)
    # Split around 10**k, k about half the digits; each half is written recursively.
    k = int(n.bit_length() * 0.30102999566398120) // 2
    hi, lo = divmod(n, 10**k)
    return _int_digits(hi) + _int_digits(lo).zfill(k)


# One encoder for every record (json.dumps with options builds a new one per call).
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=True)
_ASCII_ENCODER = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), allow_nan=True)


def _dumps(obj: Any) -> str:
    """JSON text; ints of any size exactly; NaN / Infinity as the literals logfence reads."""
    try:
        return _ENCODER.encode(obj)
    except ValueError:
        pass
    # An int past the digit limit somewhere: put a unique marker in its place, then the digits.
    bigs: List[str] = []

    def swap(v: Any) -> Any:
        t = type(v)
        if t is int and v.bit_length() > _SAFE_INT_BITS:
            bigs.append(_int_digits(v))
            return "\x00logfence-int-%d\x00" % (len(bigs) - 1)
        if t is list:
            return [swap(x) for x in v]
        if t is dict:
            return {k: swap(x) for k, x in v.items()}
        return v

    text = _ENCODER.encode(swap(obj))
    for i, digits in enumerate(bigs):
        text = text.replace('"\\u0000logfence-int-%d\\u0000"' % i, digits, 1)
    return text


def _encode(obj: Dict[str, Any]) -> bytes:
    text = _dumps(obj)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate: written as a \ud800 escape, which logfence reads as U+FFFD with
        # an invalid-utf8 finding.
        return _ASCII_ENCODER.encode(obj).encode("ascii")


# --- one argument under one conversion -----------------------------------------------------

# The result of converting an argument for a `%` specifier: the value to send and the
# conversion character to put in the template.
_Conv = Tuple[Any, str]


class _Refuse(Exception):
    """getMessage() would raise here."""


def _number_check(v: Any) -> bool:
    # CPython's PyNumber_Check: __index__, __int__, __float__, or a complex.
    t = type(v)
    return (
        hasattr(t, "__index__")
        or hasattr(t, "__int__")
        or hasattr(t, "__float__")
        or isinstance(v, complex)
    )


def _convert(v: Any, conv: str) -> _Conv:
    """What to send for `v` under `%<conv>` so logfence prints what CPython would."""
    if _exact(v):
        return v, conv
    try:
        if conv == "s":
            return _text(str(v)), "s"
        if conv == "r":
            return _text(repr(v)), "s"
        if conv == "a":
            return _text(ascii(v)), "s"
        if conv in "diu":
            if type(v) is int:  # a big int: sent exactly; logfence applies the digit limit
                return v, conv
            if isinstance(v, (str, bytes, bytearray)) or not _number_check(v):
                raise _Refuse
            return int(v), conv
        if conv in "oxX":
            if isinstance(v, int):
                return int.__int__(v), conv
            return operator.index(v), conv
        if conv in "eEfFgG":
            if isinstance(v, float):
                return float.__float__(v), conv
            t = type(v)
            if hasattr(t, "__float__"):
                return float(v), conv
            if hasattr(t, "__index__"):
                return float(operator.index(v)), conv
            raise _Refuse
        if conv == "c":
            if isinstance(v, str):
                return str.__str__(v), conv
            if isinstance(v, int):
                return int.__int__(v), conv
            return operator.index(v), conv
    except Exception:
        pass
    # The conversion raises in CPython: send something logfence refuses as well (a string
    # under %d is "a real number is required").
    return _refusal(v), "d"


def _text(s: Any) -> str:
    if type(s) is not str:  # a str subclass from __str__ / __repr__
        return str.__str__(s)
    return str(s)


def _refusal(v: Any) -> str:
    try:
        return "<unformattable %s>" % type(v).__name__
    except Exception:
        return "<unformattable>"


def _loose(v: Any) -> Any:
    """An argument no specifier uses: anything JSON can hold (getMessage raises anyway)."""
    if _exact_big(v):
        return v
    try:
        return _text(repr(v))
    except Exception:
        return _refusal(v)


# --- `%` templates ---------------------------------------------------------------------------

_FLAGS = "-+ #0"


class _Spec:
    __slots__ = ("start", "end", "key", "flags", "width", "prec", "conv")

    def __init__(self) -> None:
        self.start = 0
        self.end = 0
        self.key: Optional[str] = None
        self.flags = ""
        self.width = ""
        self.prec: Optional[str] = None
        self.conv = ""

    def text(self, key: Optional[str], conv: str) -> str:
        out = "%"
        if key is not None:
            out += "(" + key + ")"
        out += self.flags + self.width
        if self.prec is not None:
            out += "." + self.prec
        return out + conv


def _percent_specs(fmt: str) -> Tuple[List[_Spec], bool]:
    """The specifiers of a `%` template, as CPython reads them; the flag says the template
    is malformed after the last one (CPython raises there)."""
    specs: List[_Spec] = []
    n = len(fmt)
    i = 0
    while True:
        i = fmt.find("%", i)
        if i < 0:
            return specs, False
        sp = _Spec()
        sp.start = i
        i += 1
        if i < n and fmt[i] == "(":
            depth = 1
            j = i + 1
            while j < n and depth:
                if fmt[j] == "(":
                    depth += 1
                elif fmt[j] == ")":
                    depth -= 1
                j += 1
            if depth:
                return specs, True
            sp.key = fmt[i + 1 : j - 1]
            i = j
        f0 = i
        while i < n and fmt[i] in _FLAGS:
            i += 1
        sp.flags = fmt[f0:i]
        w0 = i
        if i < n and fmt[i] == "*":
            i += 1
        else:
            while i < n and fmt[i].isdigit() and fmt[i] in "0123456789":
                i += 1
        sp.width = fmt[w0:i]
        if i < n and fmt[i] == ".":
            i += 1
            p0 = i
            if i < n and fmt[i] == "*":
                i += 1
            else:
                while i < n and fmt[i] in "0123456789":
                    i += 1
            sp.prec = fmt[p0:i]
        while i < n and fmt[i] in "hlL":
            i += 1
        if i >= n:
            return specs, True
        sp.conv = fmt[i]
        i += 1
        sp.end = i
        if sp.conv not in "%diouxXeEfFgGcrsa":
            return specs, True
        specs.append(sp)


def _percent(fmt: str, args: Any) -> Tuple[str, Any]:
    """(template, args) to send for `fmt % args` when some argument is not JSON-exact."""
    specs, _malformed = _percent_specs(fmt)
    out: List[str] = []
    last = 0
    mapping = isinstance(args, Mapping)

    if not mapping:
        items = list(args) if isinstance(args, tuple) else [args]
        sent: List[Any] = [None] * len(items)
        done = [False] * len(items)
        k = 0
        for sp in specs:
            if sp.conv == "%":
                continue
            if sp.key is not None:
                break  # "format requires a mapping": logfence says the same
            for star in (sp.width == "*", sp.prec == "*"):
                if star and k < len(items):
                    sent[k], done[k] = _loose(items[k]), True
                    k += 1
            if k >= len(items):
                break  # "not enough arguments": logfence says the same
            value, conv = _convert(items[k], sp.conv)
            sent[k], done[k] = value, True
            k += 1
            if conv != sp.conv:
                out.append(fmt[last : sp.start])
                out.append(sp.text(None, conv))
                last = sp.end
        for j, ok in enumerate(done):
            if not ok:
                sent[j] = _loose(items[j])
        out.append(fmt[last:])
        return "".join(out), (sent if isinstance(args, tuple) else sent[0])

    # A mapping: each `%(key)` use gets the value its conversion prints; a key used with two
    # different values gets a new key per use. A specifier without a key uses the mapping
    # itself (CPython's rule), sent as its text under a new key.
    sent_map: Dict[str, Any] = {}
    taken = set()
    for sp in specs:
        if sp.key is not None:
            taken.add(sp.key)

    def fresh(base: str) -> str:
        n = 2
        while True:
            name = "%s#%d" % (base, n)
            if name not in taken and "(" not in name and ")" not in name:
                taken.add(name)
                return name
            n += 1

    # CPython hands out the mapping itself to one specifier without a key, and only before
    # any keyed specifier; after that a keyless one is "not enough arguments".
    whole_available = True
    for sp in specs:
        if sp.conv == "%":
            continue
        if sp.width == "*" or sp.prec == "*":
            break  # "* wants int" (the mapping is the argument): logfence refuses as well
        if sp.key is None:
            if not whole_available:
                break  # "not enough arguments": left as it is, logfence says the same
            whole_available = False
            value, conv = _convert_whole(args, sp.conv)
            name = fresh("")
            sent_map[name] = value
            out.append(fmt[last : sp.start])
            out.append(sp.text(name, conv))
            last = sp.end
            continue
        whole_available = False
        try:
            original = args[sp.key]
        except Exception:
            continue  # a KeyError in CPython; the key stays absent, so logfence's too
        value, conv = _convert(original, sp.conv)
        name = sp.key
        if name in sent_map and not (
            _exact(original) and sent_map[name] is original
        ):
            name = fresh(sp.key)
        sent_map[name] = value
        if name != sp.key or conv != sp.conv:
            out.append(fmt[last : sp.start])
            out.append(sp.text(name, conv))
            last = sp.end
    out.append(fmt[last:])
    return "".join(out), sent_map


def _convert_whole(args: "Mapping[Any, Any]", conv: str) -> _Conv:
    # Always sent as its text (even a JSON-exact dict): the object sent holds other keys.
    return _convert(_Opaque(args), conv)


class _Opaque:
    """Wraps a value so `_convert` treats it as not JSON-exact but prints it unchanged."""

    __slots__ = ("v",)

    def __init__(self, v: Any) -> None:
        self.v = v

    def __str__(self) -> str:
        return str(self.v)

    def __repr__(self) -> str:
        return repr(self.v)


# `ascii()` of an _Opaque goes through its __repr__, which is what CPython's %a does too.


# --- `{` and `$` templates ---------------------------------------------------------------------


# An args key no `{`-field or `$`-placeholder can name (a `:` ends a field name and is not an
# identifier character): sent when a message has no arguments, so the template is still
# interpreted (`{{` printed as `{`, a field refused) as str.format / Template.substitute do.
NO_ARGS_KEY = "logfence:no-args"


def _brace(fmt: str, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Tuple[str, Any]:
    """(template, args) for `fmt.format(*args, **kwargs)`."""
    if not args and not kwargs:
        return fmt, {NO_ARGS_KEY: None}
    if (not args or not kwargs) and all(_exact(a) for a in args) and _exact(kwargs):
        return fmt, (list(args) if args else dict(kwargs))
    try:
        parsed = list(string.Formatter().parse(fmt))
    except Exception:
        return fmt, _brace_loose(args, kwargs)
    out: List[str] = []
    sent: Dict[str, Any] = {}
    taken = set(kwargs)
    auto = 0
    counter = [0]

    def fresh() -> str:
        while True:
            counter[0] += 1
            name = "p%d" % counter[0]
            if name not in taken:
                taken.add(name)
                return name

    numbering = set()
    for literal, field, spec, conversion in parsed:
        if field is not None:
            h = _split_field(field)[0]
            numbering.add("auto" if h == "" else "manual" if h.isdigit() else "name")
            if {"auto", "manual"} <= numbering:
                return fmt, _brace_loose(args, kwargs)  # CPython refuses; so does logfence
    for literal, field, spec, conversion in parsed:
        out.append(literal.replace("{", "{{").replace("}", "}}"))
        if field is None:
            continue
        spec = spec or ""
        if "{" in spec:
            return fmt, _brace_loose(args, kwargs)  # nested fields: left to logfence
        head, rest = _split_field(field)
        if head == "":
            value_found, value = _lookup_index(args, auto)
            auto += 1
        elif head.isdigit():
            value_found, value = _lookup_index(args, int(head))
        else:
            value_found, value = (head in kwargs), kwargs.get(head)
        if not value_found or rest or conversion not in (None, "r", "s", "a"):
            # A missing argument, or index / attribute access: logfence decides (and refuses
            # attribute access); the argument goes as it is or as its repr.
            name = fresh() if head == "" or head.isdigit() else head
            if value_found:
                sent[name] = value if _exact(value) else _loose(value)
            out.append("{" + name + rest + ("!" + conversion if conversion else "") + (":" + spec if spec else "") + "}")
            continue
        name = fresh() if head == "" or head.isdigit() or head in sent else head
        if _exact(value):
            sent[name] = value
            out.append("{" + name + ("!" + conversion if conversion else "") + (":" + spec if spec else "") + "}")
            continue
        try:
            if conversion == "r":
                text, keep_spec = _text(repr(value)), True
            elif conversion == "a":
                text, keep_spec = _text(ascii(value)), True
            elif conversion == "s":
                text, keep_spec = _text(str(value)), True
            elif not spec:
                text, keep_spec = _text(format(value, "")), False
            elif _spec_small(spec):
                text, keep_spec = _text(format(value, spec)), False
            else:
                text, keep_spec = _text(str(value)), True
        except Exception:
            # CPython raises: a `{!d}`-like impossible conversion makes logfence refuse too.
            sent[name] = _refusal(value)
            out.append("{" + name + ":d}")
            continue
        sent[name] = text
        out.append("{" + name + (":" + spec if keep_spec and spec else "") + "}")
    return "".join(out), sent


def _split_field(field: str) -> Tuple[str, str]:
    for i, c in enumerate(field):
        if c in ".[":
            return field[:i], field[i:]
    return field, ""


def _lookup_index(args: Tuple[Any, ...], i: int) -> Tuple[bool, Any]:
    if 0 <= i < len(args):
        return True, args[i]
    return False, None


def _spec_small(spec: str) -> bool:
    digits = ""
    for c in spec + "x":
        if c.isdigit():
            digits += c
        else:
            if len(digits) > 4 or (digits and int(digits) > _BRACE_SPEC_LIMIT):
                return False
            digits = ""
    return True


def _brace_loose(args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Any:
    if args and not kwargs:
        return [a if _exact(a) else _loose(a) for a in args]
    merged = {str(i): (a if _exact(a) else _loose(a)) for i, a in enumerate(args)}
    merged.update({k: (v if _exact(v) else _loose(v)) for k, v in kwargs.items()})
    return merged


def _dollar(kwargs: Dict[str, Any]) -> Dict[str, Any]:
    # Template.substitute prints str() of each value.
    out: Dict[str, Any] = {}
    for k, v in kwargs.items():
        if _exact(v):
            out[k] = v
        else:
            try:
                out[k] = _text(str(v))
            except Exception:
                out[k] = _refusal(v)
    return out


# --- the record ---------------------------------------------------------------------------------


def _field_value(v: Any) -> Any:
    if _exact(v):
        return v
    try:
        return _text(repr(v))
    except Exception:
        return _refusal(v)


_exc_formatter = logging.Formatter()


def _is_brace(msg: Any) -> bool:
    return isinstance(msg, BraceMessage) or (
        type(msg).__name__ == "BraceMessage"
        and hasattr(msg, "fmt")
        and hasattr(msg, "args")
        and hasattr(msg, "kwargs")
    )


def _is_dollar(msg: Any) -> bool:
    return isinstance(msg, DollarMessage) or (
        type(msg).__name__ == "DollarMessage" and hasattr(msg, "fmt") and hasattr(msg, "kwargs")
    )


def to_record(record: logging.LogRecord, extra: Optional[Dict[str, Any]] = None) -> bytes:
    """The logfence record for `record`, as the bytes of one JSON object (no newline)."""
    msg: Any = record.msg
    args = record.args
    out: Dict[str, Any] = {}
    if not args and (_is_brace(msg) or _is_dollar(msg)):
        if _is_brace(msg):
            template, sent = _brace(str(msg.fmt), tuple(msg.args), dict(msg.kwargs))
            out["msg"] = template
            if sent:
                out["args"] = sent
            out["style"] = "{"
        else:
            out["msg"] = str(msg.fmt)
            kw = dict(msg.kwargs)
            out["args"] = _dollar(kw) if kw else {NO_ARGS_KEY: None}
            out["style"] = "$"
    else:
        text = msg if type(msg) is str else _text(str(msg))
        out["msg"] = text
        if args:
            if isinstance(args, tuple):
                if all(_exact(a) for a in args):
                    out["args"] = list(args)
                else:
                    out["msg"], out["args"] = _percent(text, args)
            elif type(args) is dict and _exact(args):
                out["args"] = args
            else:
                out["msg"], out["args"] = _percent(text, args)
    out["level"] = record.levelname
    out["logger"] = record.name
    out["ts"] = record.created
    fields = {k: _field_value(v) for k, v in record.__dict__.items() if k not in STANDARD_ATTRS}
    if extra:
        fields.update(extra)
    if fields:
        out["fields"] = fields
    if record.exc_info:
        exc = record.exc_text
        if not exc:
            try:
                exc = _exc_formatter.formatException(record.exc_info)
            except Exception:
                exc = None
        if exc:
            out["exc"] = exc
    elif record.exc_text:
        out["exc"] = record.exc_text
    if record.stack_info:
        out["stack"] = str(record.stack_info)
    return _encode(out)


def report_record(
    message: str, args: List[Any], name: str, created: float, level: str = "WARNING"
) -> bytes:
    """A record from the handler itself (drop reports)."""
    return _encode({"msg": message, "args": args, "level": level, "logger": name, "ts": created})

