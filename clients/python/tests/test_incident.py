"""2. The incident: a chat message holding a `%2400000000d` link goes through `emit` without
being formatted (getMessage patched to raise, a tracemalloc peak under 1 MB), and logfence
renders or refuses it exactly once, leaving the queue empty."""

from __future__ import annotations

import logging
import time
import tracemalloc

from conftest import fields_of, rejected, own_logger

# `%24` is a URL-encoded `$`: as a template, `%2400000000d` is a `%d` 2.4 billion wide.
LINK = "https://www.amazon.com/dp/B0CHX1W1XY?ref=%2400000000d&tag=chat-share-20"


def never_format(self: logging.LogRecord) -> str:
    raise AssertionError("the handler formatted the message on the application thread")


def test_incident_link_is_never_formatted_in_the_app(consumer, handlers, broker, monkeypatch) -> None:
    log = own_logger("incident")
    h = handlers(log, queue=consumer.queue)
    log.info("warm-up", extra={"case": "warm-up"})  # the sender thread and pika, started
    assert h.flush(10), h.stats()

    monkeypatch.setattr(logging.LogRecord, "getMessage", never_format)
    tracemalloc.start()
    try:
        log.info("shared %s", LINK, extra={"case": "as-arg"})
        log.info("user bob shared " + LINK, extra={"case": "verbatim"})
        log.info("%s shared " + LINK, "bob", extra={"case": "as-template"})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    monkeypatch.undo()
    assert peak < 1_000_000, "emit peaked at %d bytes" % peak
    assert h.flush(10), h.stats()

    lines = consumer.wait_lines(4)
    consumer.wait_drained()
    time.sleep(1.0)  # anything more would be a second copy
    lines = consumer.lines()
    by_case = {fields_of(l)["case"]: l for l in lines}
    assert len(lines) == 4 == len(by_case), lines

    arg = by_case["as-arg"]
    assert arg["message"] == "shared " + LINK and not rejected(arg), arg

    verbatim = by_case["verbatim"]
    assert verbatim["message"] == "user bob shared " + LINK, verbatim
    assert not rejected(verbatim)
    assert [f["rule"] for f in verbatim["findings"]] == ["format-like-text"], verbatim

    template = by_case["as-template"]
    assert rejected(template)
    assert [f["rule"] for f in template["findings"]] == ["width-too-large"], template
    assert "width 2400000000 > limit 4096" in template["findings"][0]["detail"]
    assert template["message"] == (
        "[logfence rejected: width-too-large] %s shared " + LINK + " ('bob',)"
    ), template
    assert template["level"] == "INFO" and template["logger"] == log.name

    for q in (consumer.queue, consumer.queue + ".dead"):
        assert broker.depth(q) == {"messages": 0, "consumers": 1 if q == consumer.queue else 0}
