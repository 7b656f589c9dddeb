"""7. No feedback loop: with the root logger at DEBUG, the handler on it, and pika's own
logging on, only the application's records are published."""

from __future__ import annotations

import logging
import time

from conftest import own_logger


def test_pika_and_handler_records_are_never_published(consumer, handlers) -> None:
    root = logging.getLogger()
    saved = (root.level, logging.getLogger("pika").level)
    root.setLevel(logging.DEBUG)
    logging.getLogger("pika").setLevel(logging.DEBUG)
    try:
        h = handlers(root, queue=consumer.queue)
        app = logging.getLogger("app.feedback")
        for i in range(100):
            app.debug("record %d", i)
        assert h.flush(10), h.stats()
        # pika logs on every connection event; a second handler's connection, opened and
        # closed while ours is on the root logger, logs plenty more.
        other = handlers(queue=consumer.queue)
        other.handle(logging.makeLogRecord({"msg": "from the other handler", "name": "app.other"}))
        assert other.flush(10)
        other.close()
        assert h.flush(10), h.stats()
        consumer.wait_lines(101)
        time.sleep(1.0)  # a loop would keep publishing
        lines = consumer.lines()
    finally:
        root.setLevel(saved[0])
        logging.getLogger("pika").setLevel(saved[1])
    assert sorted(l["logger"] for l in lines) == ["app.feedback"] * 100 + ["app.other"], [
        (l["logger"], l["message"]) for l in lines if not l["logger"].startswith("app.")
    ][:10]
    stats = h.stats()
    assert stats["emitted"] == 100 and stats["sent"] == 100, stats
