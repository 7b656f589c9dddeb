"""The handler's figures for the README: emit cost on the application thread, the sender's
throughput with publisher confirms, and memory at capacity.

    python clients/python/bench/measure.py [--url AMQP_URL] [--records N]

It declares a classic queue of its own (`logfence-handler-bench-<pid>`, no consumer) so the
confirms come from a real broker, and deletes it at the end. Figures are medians of three.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import statistics
import time
import tracemalloc

import pika

from logfence_handler import LogfenceHandler

RECORD_ARGS = ("m-8f3a2c", "general", 4211, 1337, 3.25)
TEMPLATE = "message %s sent to room %s by user %d (%d bytes, %.1f ms)"


def a_record() -> logging.LogRecord:
    r = logging.LogRecord("chat.delivery", logging.INFO, __file__, 1, TEMPLATE, RECORD_ARGS, None)
    r.request_id = "7d1f0c9e-4b7a-4f0e-9a51-2c3d4e5f6a7b"
    r.shard = 3
    return r


def emit_us(h: LogfenceHandler, n: int) -> float:
    """CPU time of the calling thread per emit (wall time counts other processes' turns on
    a busy machine; this does not)."""
    r = a_record()
    emit = h.emit
    start = time.thread_time()
    for _ in range(n):
        emit(r)
    return (time.thread_time() - start) / n * 1e6


def logger_us(h: LogfenceHandler, n: int) -> float:
    log = logging.getLogger("bench.logger")
    log.propagate = False
    log.setLevel(logging.INFO)
    log.addHandler(h)
    start = time.thread_time()
    for i in range(n):
        log.info(TEMPLATE, "m-%d" % i, "general", 4211, 1337, 3.25)
    took = time.thread_time() - start
    log.removeHandler(h)
    return took / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default=os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"))
    ap.add_argument("--records", type=int, default=20_000)
    opts = ap.parse_args()
    n = opts.records
    queue = "logfence-handler-bench-%d" % os.getpid()
    admin = pika.BlockingConnection(pika.URLParameters(opts.url))
    ch = admin.channel()
    ch.queue_declare(queue, durable=True)
    try:
        # 1. emit on the application thread, the sender idle (nothing listens: it only retries).
        down = LogfenceHandler(url="amqp://guest:guest@127.0.0.1:1/%2f", capacity=n, backoff_max=5)
        emit_us(down, 1000)
        e = statistics.median(emit_us(down, n) for _ in range(3))
        down.close()
        # The baseline, in the same run: the stdlib's StreamHandler to /dev/null, which
        # formats the message and writes it (what most apps do today).
        with open(os.devnull, "w") as devnull:
            stream = logging.StreamHandler(devnull)
            stream.emit(a_record())
            b = statistics.median(emit_us(stream, n) for _ in range(3))  # type: ignore[arg-type]
        # ... and through logger.info (record creation included), the sender idle.
        down2 = LogfenceHandler(url="amqp://guest:guest@127.0.0.1:1/%2f", capacity=n, backoff_max=5)
        l = statistics.median(logger_us(down2, n) for _ in range(3))
        down2.close()

        # 2. the sender with confirms: n records emitted at once, until the last is confirmed.
        rates: list = []
        cpu: list = []
        up = LogfenceHandler(url=opts.url, queue=queue, capacity=n)
        up.emit(a_record())
        assert up.flush(10)
        for _ in range(3):
            r = a_record()
            base = up.stats()["sent"]
            start, cpu0 = time.perf_counter(), time.process_time()
            for _ in range(n):
                up.emit(r)
            assert up.flush(120), up.stats()
            rates.append((up.stats()["sent"] - base) / (time.perf_counter() - start))
            cpu.append((time.process_time() - cpu0) / n * 1e6)
        emit_while_sending = emit_us(up, n)
        assert up.flush(120)
        up.close()
        ch.queue_purge(queue)

        # 3. memory at capacity: the buffer full of typical records (10,000 by default).
        gc.collect()
        tracemalloc.start()
        full = LogfenceHandler(url="amqp://guest:guest@127.0.0.1:1/%2f", backoff_max=5)
        before = tracemalloc.get_traced_memory()[0]
        r = a_record()
        for _ in range(full.capacity):
            full.emit(r)
        held = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        body = len(full._buffer[0])  # noqa: SLF001
        full.flush_timeout = 0.1
        full.close()

        print("load average: %.1f (figures below are CPU time where it says so)" % os.getloadavg()[0])
        print("emit on the app thread, sender idle:      %.2f us CPU/record (median of 3 x %d)" % (e, n))
        print("baseline: StreamHandler(/dev/null).emit:  %.2f us CPU/record (ratio %.2f)" % (b, e / b))
        print("logger.info -> emit, sender idle:         %.2f us CPU/record" % l)
        print("emit while the sender publishes:          %.2f us CPU/record" % emit_while_sending)
        print("sender with confirms:                     %.0f records/s (median of 3 x %d; %s)" % (
            statistics.median(rates), n, ", ".join("%.0f" % x for x in rates)))
        print("  process CPU per record (emit + sender):  %.1f us" % statistics.median(cpu))
        print("memory at capacity (%d records of %d B): %.1f MiB (%.0f B/record)" % (
            full.capacity, body, held / 2**20, held / full.capacity))
    finally:
        ch.queue_delete(queue)
        admin.close()


if __name__ == "__main__":
    main()
