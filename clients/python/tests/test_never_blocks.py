"""3. Never blocks: with nothing listening where the broker should be, 100,000 emits take at
most 3x the same emits with the broker up; the buffer keeps the newest `capacity` records,
counts the rest as dropped, and sends them once the broker is reachable."""

from __future__ import annotations

import logging
import time

from conftest import (
    TcpProxy, amqp_url, fields_of, free_port, own_logger, url_port, wait_until, with_port,
)

N = 100_000
CAPACITY = 10_000


def emit_all(h, run: str) -> float:
    """N calls of emit, timed: one LogRecord whose arguments change, so the clock measures
    the handler and not the making of records."""
    record = logging.LogRecord("pytest.never-blocks", logging.INFO, __file__, 1, "record %d of %s", (0, run), None)
    record.run = run
    emit = h.emit
    start = time.perf_counter()
    for i in range(N):
        record.args = (i, run)
        emit(record)
    return time.perf_counter() - start


def test_emit_never_blocks_and_the_buffer_arrives(consumer, handlers) -> None:
    # Broker up: the handler connected before the clock starts.
    up_log = own_logger("up")
    up = handlers(up_log, queue=consumer.queue, capacity=CAPACITY)
    up_log.info("warm-up", extra={"run": "warm-up"})
    assert up.flush(10), up.stats()
    t_up = emit_all(up, "up")
    up.flush_timeout = 0.5
    up.close()

    # Broker "down": a port where nothing listens, until the proxy starts there.
    port = free_port()
    down_log = own_logger("down")
    down = handlers(
        down_log, url=with_port(amqp_url(), port), queue=consumer.queue,
        capacity=CAPACITY, backoff_max=0.5,
    )
    t_down = emit_all(down, "down")
    stats = down.stats()
    print("100,000 emits: broker up %.2fs, down %.2fs (%.2f us/emit down)" % (t_up, t_down, t_down / N * 1e6))
    assert t_down <= 3 * t_up, (t_up, t_down)
    assert stats["emitted"] == N
    assert stats["dropped"] == N - CAPACITY, stats
    assert stats["pending"] == CAPACITY, stats
    assert stats["connections"] == 0

    proxy = TcpProxy(url_port(amqp_url()), port)
    proxy.start()
    try:
        assert down.flush(60), down.stats()
        assert down.stats()["connections"] == 1
        # The newest CAPACITY records, and the handler's own report of what it dropped.
        def arrived():
            got = [l for l in consumer.lines() if fields_of(l).get("run") == "down"]
            return got if len({l["message"] for l in got}) >= CAPACITY else None
        got = wait_until("the buffered records", arrived, 120, every=0.5)
        seqs = {int(l["message"].split()[1]) for l in got}
        assert seqs == set(range(N - CAPACITY, N))
        reports = [
            l for l in consumer.lines()
            if l["logger"] == "logfence_handler" and "dropped" in l["message"]
        ]
        want = "logfence-handler dropped %d records: its buffer of %d was full" % (N - CAPACITY, CAPACITY)
        assert any(r["message"] == want and r["level"] == "WARNING" for r in reports), reports
    finally:
        down.close()
        proxy.stop()
