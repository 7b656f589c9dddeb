"""LogfenceHandler: emit appends to a bounded buffer; one sender thread owns the connection."""

from __future__ import annotations

import collections
import logging
import os
import random
import sys
import threading
import time
import traceback
import weakref
from typing import Any, Deque, Dict, List, Optional, Sequence, Union

from ._record import report_record, to_record

__all__ = ["LogfenceHandler"]

# The handler's own logger: its records (connection trouble, unroutable records) go to the
# application's other handlers, never through a LogfenceHandler.
_log = logging.getLogger("logfence_handler")

# Records from these loggers are never published: pika logs while the sender publishes, and
# publishing those would log again.
_IGNORED_PREFIXES = ("pika.", "logfence_handler.")
_IGNORED_NAMES = ("pika", "logfence_handler")

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/%2f"


class LogfenceHandler(logging.Handler):
    """A `logging.Handler` that publishes each record's template and arguments to RabbitMQ
    for `logfence consume`, and never formats the message on the application thread.

    Keywords (all optional, so `logging.config.dictConfig` can build it):

    - `url` / `urls`: the broker (a cluster: several URLs, a list or a comma-separated
      string; the first connection goes to a random one, each reconnect to the next).
      Default `AMQP_URL` from the environment, else `amqp://guest:guest@127.0.0.1:5672/%2f`.
    - `queue` (default `logs`, through the default exchange), or `exchange` + `routing_key`.
      The handler declares nothing: `logfence consume` declares its queue.
    - `capacity` (default 10,000 records): the buffer between `emit` and the sender; when it
      is full the oldest record is dropped and counted.
    - `confirm` (default true): publisher confirms; a record counts as sent when the broker
      confirms it, and is republished when the connection is lost before that.
    - `flush_timeout` (default 5 s): the deadline of `flush()` and `close()`.
    - `capture`: a file path; records are appended to it as NDJSON (one JSON record per
      line, for `logfence check --ndjson`) instead of being published.
    - `report_interval` (default 60 s): how often a record from the handler itself reports
      the records dropped since the last report.
    - `backoff_max` (default 10 s): the longest wait between two connection attempts
      (jittered exponential backoff from 0.1 s).
    - `window` (default 1,000): records published and not yet confirmed, at most.
    """

    def __init__(
        self,
        url: Optional[str] = None,
        urls: Union[str, Sequence[str], None] = None,
        queue: str = "logs",
        exchange: str = "",
        routing_key: Optional[str] = None,
        capacity: int = 10_000,
        confirm: bool = True,
        flush_timeout: float = 5.0,
        capture: Optional[str] = None,
        report_interval: float = 60.0,
        backoff_max: float = 10.0,
        window: int = 1_000,
        level: Union[int, str] = logging.NOTSET,
    ) -> None:
        super().__init__(level)
        self._urls = _url_list(url, urls)
        self._exchange = exchange
        self._routing_key = routing_key if routing_key is not None else queue
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = int(capacity)
        self._confirm = bool(confirm)
        self.flush_timeout = float(flush_timeout)
        self._capture = capture
        self._report_interval = float(report_interval)
        self._backoff_max = float(backoff_max)
        self._window = max(1, int(window))
        self._init_state()
        _live.add(self)

    # --- state (also rebuilt in a forked child) ------------------------------------------

    def _init_state(self) -> None:
        # Serialized records waiting for the sender, oldest first (bounded by `capacity`).
        self._buffer: Deque[bytes] = collections.deque()
        # The handler's own drop reports, sent before the buffer.
        self._reports: List[bytes] = []
        # Guards _buffer and the counters below; never held across I/O.
        self._lock = threading.Lock()
        self._emitted = 0  # records accepted by emit
        self._dropped = 0  # records dropped because the buffer was full
        self._reported = 0  # of _dropped, how many a report record has announced
        self._confirmed = 0  # records the broker confirmed (or written, without confirms)
        self._unroutable = 0  # of _confirmed, returned by the broker: no queue bound
        self._errors = 0  # records that could not be serialized
        self._inflight: Dict[int, bytes] = {}  # delivery tag -> record, published, unconfirmed
        self._connections = 0  # connections opened
        self._thread: Optional[threading.Thread] = None
        self._sender_ident: Optional[int] = None
        self._stopping = False
        self._closed = False
        self._wake_event = threading.Event()  # the sender's sleep between attempts / polls
        self._idle = False  # the sender waits for records: emit must wake it
        self._conn: Any = None  # the pika connection, owned by the sender thread
        self._channel: Any = None
        self._orphans: List[Any] = []  # a parent's connection objects, kept but never used
        self._pid = os.getpid()
        self._next_url = random.randrange(len(self._urls))
        self._warned_unroutable = False

    def _after_fork_in_child(self) -> None:
        # The parent's socket is shared with us: keep its objects referenced (so nothing is
        # closed or garbage-collected into a Close frame) and never use them. Records the
        # parent had buffered are the parent's to send.
        orphans = [self._conn, self._channel, self._thread]
        self._init_state()
        self._orphans = orphans

    # --- the application side --------------------------------------------------------------

    def handle(self, record: logging.LogRecord) -> Any:
        """Filter and emit, without the handler's lock: `emit` is thread-safe by itself, and
        `logging.shutdown` holds that lock while `flush` waits for the sender, whose
        connection (pika) logs meanwhile."""
        name = record.name
        if (
            record.thread == self._sender_ident
            or name in _IGNORED_NAMES
            or name.startswith(_IGNORED_PREFIXES)
        ):
            return False
        rv = self.filter(record)
        if isinstance(rv, logging.LogRecord):  # 3.12+: a filter may return a new record
            record = rv
        if rv:
            self.emit(record)
        return rv

    def emit(self, record: logging.LogRecord) -> None:
        """Serialize the record and append it to the buffer. Never formats the message,
        never blocks on the network, never raises."""
        try:
            name = record.name
            if (
                record.thread == self._sender_ident
                or name in _IGNORED_NAMES
                or name.startswith(_IGNORED_PREFIXES)
            ):
                return
            body = to_record(record)
        except Exception:
            self._errors += 1
            return
        try:
            self._append(body)
        except Exception:  # e.g. no thread can be started: the record is lost, and counted
            self._errors += 1

    def _append(self, body: bytes) -> None:
        if self._closed:
            return
        with self._lock:
            if len(self._buffer) >= self.capacity:
                self._buffer.popleft()
                self._dropped += 1
            self._buffer.append(body)
            self._emitted += 1
        if self._thread is None:
            self._start()
        elif self._idle:
            self._wake()

    def stats(self) -> Dict[str, int]:
        """Counters: `emitted`, `sent` (confirmed, less the unroutable), `dropped`,
        `pending` (buffered or unconfirmed), `unroutable`, `errors`, `connections`."""
        with self._lock:
            return {
                "emitted": self._emitted,
                "sent": self._confirmed - self._unroutable,
                "dropped": self._dropped,
                "pending": len(self._buffer) + len(self._reports) + len(self._inflight),
                "unroutable": self._unroutable,
                "errors": self._errors,
                "connections": self._connections,
            }

    def flush(self, timeout: Optional[float] = None) -> bool:  # type: ignore[override]
        """Wait until everything buffered is sent (confirmed), at most `timeout` seconds
        (default `flush_timeout`). True when nothing is pending."""
        deadline = time.monotonic() + (self.flush_timeout if timeout is None else timeout)
        if self._thread is None:
            return not self._buffer
        self._report_drops(force=True)
        self._wake()  # once: a missed wake-up costs the sender's 0.2 s tick, no more
        while True:
            with self._lock:
                if not self._buffer and not self._reports and not self._inflight:
                    return True
            if time.monotonic() >= deadline or not self._thread.is_alive():
                return False
            time.sleep(0.005)

    def close(self) -> None:
        """Flush within `flush_timeout`, then stop the sender and close the connection.
        `logging.shutdown` calls it at exit."""
        if self._closed:
            super().close()
            return
        try:
            self.flush()
        finally:
            self._closed = True
            self._stopping = True
            thread = self._thread
            self._wake()
            self._wake_event.set()
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout=2.0)
            super().close()

    # --- the sender thread -----------------------------------------------------------------

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            t = threading.Thread(target=self._run, name="logfence-handler", daemon=True)
            self._thread = t
        t.start()

    def _wake(self) -> None:
        """Tell the sender there is work. Never cuts a backoff wait short (only close()
        does), so a flush or a burst of records cannot make it hammer a dead broker."""
        self._idle = False
        if self._capture is not None:
            self._wake_event.set()
            return
        conn = self._conn
        if conn is not None:
            try:
                conn.ioloop.add_callback_threadsafe(self._pump)
            except Exception:
                pass

    def _run(self) -> None:
        self._sender_ident = threading.get_ident()
        self._last_report = time.monotonic()
        try:
            if self._capture is not None:
                self._run_capture(self._capture)
            else:
                self._run_amqp()
        except Exception:
            _report(logging.ERROR, "logfence-handler: the sender stopped: %s", traceback.format_exc())

    def _take(self, n: int) -> List[bytes]:
        with self._lock:
            out, self._reports = self._reports, []
            buf = self._buffer
            while buf and len(out) < n:
                out.append(buf.popleft())
            return out

    def _requeue(self, bodies: List[bytes]) -> None:
        """Put records back at the front (oldest first), dropping the oldest past capacity."""
        with self._lock:
            self._buffer.extendleft(reversed(bodies))
            while len(self._buffer) > self.capacity:
                self._buffer.popleft()
                self._dropped += 1

    def _report_drops(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - getattr(self, "_last_report", now) < self._report_interval:
            return
        self._last_report = now
        with self._lock:
            n = self._dropped - self._reported
            if n <= 0:
                return
            self._reported = self._dropped
            body = report_record(
                "logfence-handler dropped %d records: its buffer of %d was full",
                [n, self.capacity],
                "logfence_handler",
                time.time(),
            )
            # Beside the buffer, so it is the next thing sent and never pushes out a record.
            self._reports.append(body)

    # capture mode: NDJSON lines appended to a file

    def _run_capture(self, path: str) -> None:
        with open(path, "ab") as f:
            while not (self._stopping and not self._buffer):
                self._report_drops()
                batch = self._take(1000)
                if batch:
                    f.write(b"\n".join(batch) + b"\n")
                    f.flush()
                    with self._lock:
                        self._confirmed += len(batch)
                    continue
                self._idle = True
                self._wake_event.wait(0.2)
                self._wake_event.clear()

    # AMQP mode

    def _run_amqp(self) -> None:
        import pika  # imported here: capture mode works without a broker client at all

        self._pika = pika
        attempt = 0
        while not self._stopping:
            url = self._urls[self._next_url % len(self._urls)]
            self._next_url += 1
            opened = self._connect_and_serve(url)
            if self._stopping:
                break
            attempt = 0 if opened else attempt + 1
            delay = min(self._backoff_max, 0.1 * (2 ** min(attempt, 20)))
            delay *= random.uniform(0.5, 1.0)
            self._wake_event.wait(delay)
            self._wake_event.clear()

    def _connect_and_serve(self, url: str) -> bool:
        """One connection, served until it closes. True when it was open at some point."""
        pika = self._pika
        params = pika.URLParameters(url)
        params.connection_attempts = 1
        params.socket_timeout = 5
        params.blocked_connection_timeout = None
        state = {"opened": False}

        def on_open(conn: Any) -> None:
            state["opened"] = True
            with self._lock:
                self._connections += 1
            conn.channel(on_open_callback=on_channel)

        def on_channel(ch: Any) -> None:
            self._channel = ch
            self._tag = 0
            ch.add_on_close_callback(lambda *_: self._close_conn())
            ch.add_on_return_callback(self._on_return)
            if self._confirm:
                ch.confirm_delivery(self._on_confirm, callback=lambda *_: self._on_ready())
            else:
                self._on_ready()

        def on_fail(conn: Any, *_: Any) -> None:
            conn.ioloop.stop()

        conn = pika.SelectConnection(
            params,
            on_open_callback=on_open,
            on_open_error_callback=on_fail,
            on_close_callback=on_fail,
        )
        self._conn = conn
        try:
            conn.ioloop.start()
        finally:
            self._conn = None
            self._channel = None
            self._idle = False
            # What was published and not confirmed goes out again on the next connection.
            with self._lock:
                lost = list(self._inflight.values())
                self._inflight.clear()
            if lost:
                self._requeue(lost)
        return state["opened"]

    def _close_conn(self) -> None:
        conn = self._conn
        if conn is None:
            return
        try:
            if conn.is_open:
                conn.close()
            elif conn.is_closed:
                conn.ioloop.stop()
        except Exception:
            conn.ioloop.stop()

    def _on_ready(self) -> None:
        self._tick()
        self._pump()

    def _tick(self) -> None:
        # A periodic safety net: a missed wake-up costs at most this long; drop reports and
        # a close requested from another thread are noticed here too.
        conn = self._conn
        if conn is None:
            return
        if self._stopping:
            self._close_conn()
            return
        self._report_drops()
        self._pump()
        conn.ioloop.call_later(0.2, self._tick)

    def _pump(self) -> None:
        if self._stopping:
            # close() has flushed (within its deadline) before it asked for this.
            self._close_conn()
            return
        ch = self._channel
        if ch is None or not ch.is_open:
            return
        pika = self._pika
        room = self._window - len(self._inflight)
        if room <= 0:
            return
        batch = self._take(min(room, 200))
        if not batch:
            self._idle = True
            if self._buffer:  # an emit between the take and the flag
                self._idle = False
                self._conn.ioloop.call_later(0, self._pump)
            return
        props = pika.BasicProperties(content_type="application/json", delivery_mode=2)
        for i, body in enumerate(batch):
            try:
                ch.basic_publish(
                    self._exchange, self._routing_key, body, properties=props, mandatory=True
                )
            except Exception:
                self._requeue(batch[i:])
                self._close_conn()
                return
            if self._confirm:
                self._tag += 1
                self._inflight[self._tag] = body
        if not self._confirm:
            with self._lock:
                self._confirmed += len(batch)
        # Let the loop write and read before the next batch.
        self._conn.ioloop.call_later(0, self._pump)

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        tag = method.delivery_tag
        acked = type(method).__name__ == "Ack"
        with self._lock:
            if method.multiple:
                done = [t for t in self._inflight if t <= tag]
            else:
                done = [tag] if tag in self._inflight else []
            bodies = [self._inflight.pop(t) for t in done]
            if acked:
                self._confirmed += len(bodies)
        if not acked and bodies:
            self._requeue(bodies)  # nacked: the broker could not take them; again
        self._pump()

    def _on_return(self, ch: Any, method: Any, props: Any, body: bytes) -> None:
        with self._lock:
            self._unroutable += 1
            first = not self._warned_unroutable
            self._warned_unroutable = True
        if first:
            _report(
                logging.WARNING,
                "logfence-handler: a record was returned unroutable (exchange %r, routing key "
                "%r): no queue is bound; start `logfence consume`, which declares its queue. "
                "Unroutable records are counted in stats()['unroutable'].",
                self._exchange,
                self._routing_key,
            )


def _report(level: int, msg: str, *args: Any) -> None:
    """The handler's own news, through the application's other handlers (the handler's
    logger propagates as usual; LogfenceHandlers skip it), or on stderr when no other
    handler would show it."""
    _log.log(level, msg, *args)
    logger: Optional[logging.Logger] = _log
    while logger is not None:
        if any(
            not isinstance(h, LogfenceHandler) and level >= h.level for h in logger.handlers
        ):
            return
        if not logger.propagate:
            break
        logger = logger.parent
    try:
        sys.stderr.write((msg % args) + "\n")
    except Exception:
        pass


def _url_list(url: Optional[str], urls: Union[str, Sequence[str], None]) -> List[str]:
    out: List[str] = []
    for item in ([url] if url else []) + (
        [urls] if isinstance(urls, str) else list(urls or [])
    ):
        out.extend(u.strip() for u in item.replace("\n", ",").split(",") if u.strip())
    if not out:
        env = os.environ.get("AMQP_URL", "")
        out = [u.strip() for u in env.replace("\n", ",").split(",") if u.strip()]
    return out or [DEFAULT_URL]


# Every handler alive, so a forked child can reset each one (weakly held: a handler that is
# gone is gone).
_live: "weakref.WeakSet[LogfenceHandler]" = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for h in list(_live):
        try:
            h._after_fork_in_child()
        except Exception:
            pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
