"""4. Broker restart mid-stream: with the connection cut and the broker unreachable for a
while, every record is either received (duplicates allowed) or counted as dropped."""

from __future__ import annotations

import time

from conftest import (
    TcpProxy, amqp_url, fields_of, free_port, own_logger, url_port, wait_until, with_port,
)

N = 6_000


def test_every_record_arrives_or_is_counted_across_a_restart(consumer, handlers) -> None:
    proxy = TcpProxy(url_port(amqp_url()))
    proxy.start()
    log = own_logger("restart")
    h = handlers(log, url=with_port(amqp_url(), proxy.port), queue=consumer.queue, backoff_max=0.5)
    try:
        for i in range(N):
            log.info("record %d", i, extra={"seq": i})
            if i % 200 == 199:
                time.sleep(0.01)  # a stream, not a burst
            if i == N // 3:
                wait_until("the first records confirmed", lambda: h.stats()["sent"] > 0, 10)
                proxy.stop()  # the "broker" goes away: connections cut, nothing listens
            if i == 2 * N // 3:
                proxy.start()  # and comes back
        assert h.flush(60), h.stats()
    finally:
        proxy.stop()
    stats = h.stats()
    assert stats["connections"] >= 2, stats  # it reconnected

    def all_seen():
        seen = {int(fields_of(l)["seq"]) for l in consumer.lines() if "seq" in (l.get("fields") or {})}
        return seen if len(seen) + stats["dropped"] >= N else None

    seen = wait_until("every record or its drop", all_seen, 60, every=0.25)
    missing = set(range(N)) - seen
    assert len(missing) == stats["dropped"], (len(missing), stats)
    assert stats["dropped"] == 0, stats  # the buffer (10,000) held the outage
    print("restart: %d records, %d lines (%d duplicates), %s" % (
        N, len(consumer.lines()), len(consumer.lines()) - N, stats))


def test_a_dead_node_in_the_url_list_costs_one_attempt(consumer, handlers) -> None:
    dead = with_port(amqp_url(), free_port())
    log = own_logger("cluster")
    h = handlers(log, urls=[dead, amqp_url()], queue=consumer.queue, backoff_max=0.5)
    for i in range(20):
        log.info("record %d", i, extra={"seq": i})
    assert h.flush(15), h.stats()
    assert h.stats()["connections"] == 1
    lines = consumer.wait_lines(20)
    assert sorted(int(fields_of(l)["seq"]) for l in lines) == list(range(20))
