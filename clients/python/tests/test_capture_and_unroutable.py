"""Beyond the seven: capture mode writes the bodies the handler would publish, one JSON
record per line, which `logfence check` renders as CPython would; and a record nobody's
queue takes is counted and reported once, not lost silently."""

from __future__ import annotations

import decimal
import json
import logging
import secrets
import subprocess

from conftest import logfence_bin, own_logger


def test_capture_writes_one_record_per_line_that_check_renders(tmp_path, handlers) -> None:
    path = tmp_path / "capture.ndjson"
    log = own_logger("capture")
    h = handlers(log, capture=str(path))
    cases = [
        ("%s paid %r (%d items)", ("bob", decimal.Decimal("9.99"), 3)),
        ("line one\nline two", ()),
        ("%(user)s joined", ({"user": "zoë"},)),
    ]
    for msg, args in cases:
        log.warning(msg, *args)
    assert h.flush(5), h.stats()
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) == len(cases) + 1
    for raw, (msg, args) in zip(lines, cases):
        record = json.loads(raw)
        assert record["level"] == "WARNING" and record["logger"] == log.name
        done = subprocess.run(
            [logfence_bin(), "check", "--json", "--no-sandbox", "-"],
            input=raw, capture_output=True, timeout=30,
        )
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        expected = logging.LogRecord("x", logging.INFO, "", 0, msg, args, None).getMessage()
        assert report["verdict"] == "ok" and report["message"] == expected, report
    assert h.stats()["sent"] == len(cases)


def test_an_unroutable_record_is_counted_and_reported_once(handlers, caplog) -> None:
    log = own_logger("unroutable")
    h = handlers(log, queue="pytest-nobody-%s" % secrets.token_hex(4))
    with caplog.at_level(logging.WARNING, logger="logfence_handler"):
        for i in range(5):
            log.info("record %d", i)
        assert h.flush(10), h.stats()
    stats = h.stats()
    assert stats["unroutable"] == 5 and stats["sent"] == 0 and stats["pending"] == 0, stats
    reports = [r for r in caplog.records if r.name == "logfence_handler"]
    assert len(reports) == 1 and "unroutable" in reports[0].getMessage(), reports
