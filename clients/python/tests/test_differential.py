"""1. Differential: each (msg, args) logged through the handler and rendered by `logfence
consume` gives CPython's `record.getMessage()` byte for byte, or both refuse."""

from __future__ import annotations

import datetime
import decimal
import enum
import logging
import os
import random
from typing import Any, Dict, List, Tuple

from conftest import fields_of, rejected, own_logger

from logfence_handler import BraceMessage, DollarMessage


class Color(enum.Enum):
    RED = 1


class Level(enum.IntEnum):
    HIGH = 3


class Loud(str):
    def __str__(self) -> str:
        return "LOUD"


class Half(float):
    def __repr__(self) -> str:
        return "half"


class Thing:
    def __repr__(self) -> str:
        return "<Thing #7>"

    def __str__(self) -> str:
        return "a thing"


class Broken:
    def __str__(self) -> str:
        raise RuntimeError("no str for you")

    __repr__ = __str__


class Number:
    """Has __index__: fine under %x, %d, %f and %c."""

    def __index__(self) -> int:
        return 66

    def __repr__(self) -> str:
        return "Number()"


D = decimal.Decimal
DT = datetime.datetime(2026, 11, 22, 10, 0, 12, 500)
BIG = 10**40
HUGE = 7**6000  # 5,071 digits: past CPython's str() limit, fine in hex

# Pitfalls, each (msg, args) as logger.info(msg, *args) gets them.
CORPUS: List[Tuple[Any, Tuple[Any, ...]]] = [
    ("%(a)s and %(b)r", ({"a": 1, "b": "x"},)),  # a single dict arg: named arguments
    ("%s", ({"a": 1},)),  # %s of a dict given as the single arg: the dict itself
    ("%s", ({"a": D("1.5"), "b": (1, 2)},)),
    ("%s %(a)s", ({"a": D("2")},)),  # the mapping itself, then a key
    ("%(a)s %s", ({"a": D("2")},)),  # a key, then no argument left
    ("%(a)s %s", ({"a": 2},)),
    ("%(a)s %(a)r %(a)d", ({"a": D("2.5")},)),  # one key, three conversions
    ("%s", ({},)),  # an empty dict stays a one-element tuple
    ("plain", ({},)),  # ... so a template without specs refuses
    ("%(1)s", ({"1": "one"},)),
    ("%(1)s", ("one",)),  # a key with a tuple: "format requires a mapping"
    ("100% sure, %d%% of %s", ()),  # no args: verbatim, whatever it holds
    ("%2400000000d", ()),
    (42, ()),  # a non-string msg
    (42, (1,)),
    (["a", "%s"], ()),
    (Thing(), ()),
    ("%s|%r|%a", (Thing(), Thing(), Thing())),
    ("%d", (Thing(),)),
    ("%s", (Broken(),)),
    ("%r", (Broken(),)),
    ("%s %r %d %i %u %f %e %g %x", (D("1.5"),) * 9),
    ("%s %r %f %.2f %e %d", (D("NaN"),) * 6),
    ("%d", (D("NaN"),)),
    ("%d", (D("Infinity"),)),
    ("%s|%r|%d|%f", (DT, DT, DT, DT)),
    ("%s|%r", (datetime.date(2026, 1, 2), datetime.timedelta(seconds=90))),
    ("%d|%s|%r|%x|%X|%o|%e", (BIG,) * 7),
    ("%x", (HUGE,)),
    ("%d", (HUGE,)),
    ("%s", (HUGE,)),
    ("%s %r %f %e %g %d", (1e-05,) * 6),
    ("%s %r %f %e %g %d", (-0.0,) * 6),
    ("%s %r %f %g", (1e16, 1e16, 1e16, 1e16)),
    ("%s %r %.3f %.0e", (0.1, 0.1, 2.5, 2.5)),
    ("%s %r %f %e %g", (float("nan"),) * 5),
    ("%d", (float("nan"),)),
    ("%d", (float("inf"),)),
    ("%s %r %f %e", (float("inf"), float("-inf"), float("inf"), float("-inf"))),
    ("%s %r %d %x %f", (True, False, True, True, False)),
    ("%s %r %d", (None, None, None)),
    ("%s %r", ((1, "a"), (1,))),
    ("%s %r", ([D("1"), 2], [datetime.date(2020, 1, 1)])),
    ("%s %r", ({1: "a", 2: None}, {(1, 2): 3})),
    ("%s %r", ([1, "a", None, 2.5], {"k": [True]})),
    ("%s %r %a", (b"by\xfftes", b"x", bytearray(b"y"))),
    ("%s %r %a", ({1, 2} - {2}, frozenset(), 3 + 4j)),
    ("%s %r %d %x %c", (Color.RED, Color.RED, Level.HIGH, Level.HIGH, Level.HIGH)),
    ("%s %r %d %f", (Loud("q"), Loud("q"), Loud("q"), Loud("q"))),
    ("%s %r %d %f", (Half(0.5), Half(0.5), Half(0.5), Half(0.5))),
    ("%x %d %f %c %s", (Number(), Number(), Number(), Number(), Number())),
    ("%c%c%c", (65, "b", D(67))),
    ("%c", (0x110000,)),
    ("%-10r|%10s|%.3r|%-8.2a", (D("1"), DT, Thing(), "é")),
    ("%*d|%-*s|%.*f", (5, 42, 6, D(1), 2, 3.14159)),
    ("%*d", (D(5), 42)),
    ("%s %s", (D(1),)),  # not enough arguments
    ("%s", (D(1), D(2))),  # not all arguments converted
    ("%(a)s %(b)s", ({"a": D(1)},)),  # a missing key
    ("%(a)s", ({"a": 1, 2: "int key"},)),
    ("%y", (D(1),)),  # an unsupported format character
    ("%", (1,)),  # incomplete format
    ("%s %", (D(1),)),
    ("%a", ("zoë → 李",)),
    ("%r", ("it's \"quoted\"\n",)),
    ("%s and %%(lit)s", (D(3),)),
    ("%(a)s", ({"a": (1, 2)},)),
    ("%(a)d", ({"a": "text"},)),
    ("%5%|%s", (D(1),)),
]

# The logging cookbook's brace / dollar message wrappers.
WRAPPED: List[Any] = [
    BraceMessage("{} joined {!r} ({:,} online)", "zoë", "#random", 12873),
    BraceMessage("{user} joined {room!r}", user="bob", room="#random"),
    BraceMessage("{0} {x} {0!r}", D("1.5"), x=DT),
    BraceMessage("{:>12} {:%Y-%m-%d} {!a}", D("2.50"), DT, "é"),
    BraceMessage("{0[1]} {m[k]}", [1, 2], m={"k": "v"}),
    BraceMessage("{{literal}} {}", D(1)),
    BraceMessage("{{only literal}}"),
    BraceMessage("{missing}"),
    BraceMessage("{} {0}", 1, 2),
    BraceMessage("{:d}", D(3)),
    DollarMessage("$who paid $$${amount}", who="bob", amount=D("9.99")),
    DollarMessage("$$ and nothing else"),
    DollarMessage("$missing"),
]

SPECS = ["s", "r", "a", "d", "i", "f", "e", "g", "x", "X", "o", "c", "u", "E", "G", "F"]
FLAGS = ["", "-", "+", " ", "#", "0", "-0", "+#"]
VALUES: List[Any] = [
    0, -7, 255, BIG, -BIG, 1.5, -0.0, 1e-05, 1e300, float("nan"), float("inf"), 0.1,
    "text", "", "é", True, None, [1, 2], {"k": 1}, D("1.25"), D("-0"), D("NaN"), DT, Thing(),
    (1, 2), Color.RED, Level.HIGH, Number(), b"x", 3j, Half(2.0), Loud("z"),
]


def generated(seed: int, n: int) -> List[Tuple[str, Tuple[Any, ...]]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        parts, args = [], []
        for _ in range(rng.randint(1, 3)):
            spec = "%" + rng.choice(FLAGS)
            if rng.random() < 0.4:
                spec += str(rng.randint(1, 12))
            if rng.random() < 0.3:
                spec += "." + str(rng.randint(0, 6))
            spec += rng.choice(SPECS)
            parts.append(rng.choice(["", "x=", " | ", "→"]) + spec)
            args.append(rng.choice(VALUES))
        if rng.random() < 0.2:  # mapping form
            keys = ["k%d" % i for i in range(len(args))]
            tmpl = "".join(p.replace("%", "%%(%s)" % k, 1) for p, k in zip(parts, keys))
            out.append((tmpl, (dict(zip(keys, args)),)))
        else:
            out.append(("".join(parts), tuple(args)))
    return out


class Oracle(logging.Handler):
    """Beside the LogfenceHandler: CPython's own getMessage() of the same record."""

    def __init__(self) -> None:
        super().__init__()
        self.expected: Dict[str, Any] = {}

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.expected[str(record.case)] = record.getMessage()  # type: ignore[attr-defined]
        except Exception as e:  # noqa: BLE001
            self.expected[str(record.case)] = e


def test_message_equals_getmessage_or_both_refuse(consumer, handlers) -> None:
    log = own_logger("differential")
    oracle = Oracle()
    log.addHandler(oracle)
    h = handlers(log, queue=consumer.queue)
    # More: LOGFENCE_DIFF_SEED / LOGFENCE_DIFF_CASES (the default run is 400 generated pairs).
    seed = int(os.environ.get("LOGFENCE_DIFF_SEED", "20261205"))
    count = int(os.environ.get("LOGFENCE_DIFF_CASES", "400"))
    cases: List[Tuple[Any, Tuple[Any, ...]]] = CORPUS + generated(seed, count)
    for i, (msg, args) in enumerate(cases):
        log.info(msg, *args, extra={"case": i})
    for j, wrapped in enumerate(WRAPPED):
        log.info(wrapped, extra={"case": len(cases) + j})
    total = len(cases) + len(WRAPPED)
    assert h.flush(30), h.stats()
    lines = consumer.wait_lines(total)
    log.removeHandler(oracle)

    by_case = {fields_of(line)["case"]: line for line in lines}
    assert len(by_case) == total == len(lines), "one line per record"
    problems = []
    refused = 0
    for case, line in sorted(by_case.items(), key=lambda kv: int(kv[0])):
        expected = oracle.expected[case]
        i = int(case)
        what = cases[i] if i < len(cases) else WRAPPED[i - len(cases)]
        if isinstance(expected, Exception):
            refused += 1
            if not rejected(line):
                problems.append(
                    "case %s %r: CPython raised %r, logfence printed %r"
                    % (case, what, expected, line["message"])
                )
        elif rejected(line) or line["message"] != expected:
            problems.append(
                "case %s %r: getMessage() %r, logfence %r (findings %s)"
                % (case, what, expected, line["message"], line.get("findings"))
            )
    assert not problems, "%d of %d differ:\n%s" % (len(problems), total, "\n".join(problems))
    # The corpus exercises both sides: plenty of records render, plenty are refused.
    assert refused > 20 and total - refused > 200, (refused, total)
    print("differential: %d records, %d rendered equal, %d refused by both" % (total, total - refused, refused))
    assert h.stats()["dropped"] == 0
