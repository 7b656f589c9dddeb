"""Shared pieces of the handler's tests: the real `logfence` binary, the real broker, a
uniquely named queue per test (declared by `logfence consume`, deleted afterwards), and a
small TCP proxy to stop and restart "the broker" without touching the shared one.

Environment: LOGFENCE_BIN (the binary; default target/release or target/debug of this
repository), LOGFENCE_TEST_AMQP_URL (default amqp://guest:guest@127.0.0.1:5672/%2f).
Nothing here skips: without the binary or the broker a test fails and says why.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

import pika
import pytest

from logfence_handler import LogfenceHandler

REPO = Path(__file__).resolve().parents[3]
DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/%2f"


def amqp_url() -> str:
    return os.environ.get("LOGFENCE_TEST_AMQP_URL") or DEFAULT_URL


def logfence_bin() -> str:
    env = os.environ.get("LOGFENCE_BIN")
    candidates = [env] if env else [
        str(REPO / "target" / "release" / "logfence"),
        str(REPO / "target" / "debug" / "logfence"),
    ]
    for c in candidates:
        if c and os.access(c, os.X_OK):
            return c
    pytest.fail(
        "no logfence binary (looked at %s): run `cargo build --release` or set LOGFENCE_BIN"
        % ", ".join(candidates)
    )


def url_port(url: str) -> int:
    return urllib.parse.urlsplit(url).port or 5672


def with_port(url: str, port: int) -> str:
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    userinfo = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    return urllib.parse.urlunsplit(parts._replace(netloc="%s%s:%d" % (userinfo, host, port)))


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_until(what: str, pred: Callable[[], Any], timeout: float, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.0fs waiting for %s" % (timeout, what))
        time.sleep(every)


class Broker:
    """The tests' own connection to the broker: inspect and delete queues."""

    def __init__(self) -> None:
        try:
            self.conn = pika.BlockingConnection(pika.URLParameters(amqp_url()))
        except Exception as e:  # noqa: BLE001
            pytest.fail("no RabbitMQ at %s (%s): run scripts/broker.sh" % (amqp_url(), e))

    def depth(self, queue: str) -> Optional[Dict[str, int]]:
        """{"messages": ready, "consumers": n}, or None when the queue does not exist."""
        ch = self.conn.channel()
        try:
            ok = ch.queue_declare(queue, passive=True)
        except pika.exceptions.ChannelClosedByBroker:
            return None
        out = {"messages": ok.method.message_count, "consumers": ok.method.consumer_count}
        ch.close()
        return out

    def delete(self, queue: str) -> None:
        ch = self.conn.channel()
        ch.queue_delete(queue)
        ch.close()

    def close(self) -> None:
        try:
            self.conn.close()
        except Exception:  # noqa: BLE001
            pass


class Consumer:
    """`logfence consume` on its own queue, writing `--output json` lines to a file."""

    def __init__(self, tmp: Path, name: str, broker: Broker) -> None:
        safe = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40]
        self.queue = "pytest-%s-%d-%s" % (safe, os.getpid(), secrets.token_hex(3))
        self.broker = broker
        self.sink = tmp / "sink.ndjson"
        self.log = tmp / "consumer.log"
        (tmp / "state").mkdir()
        env = {
            k: v for k, v in os.environ.items() if not (k.startswith("LOGFENCE_") or k == "RUST_LOG")
        }
        self.proc = subprocess.Popen(
            [
                logfence_bin(), "consume",
                "--queue", self.queue,
                "--queue-type", "classic",
                "--sink", "file:%s" % self.sink,
                "--output", "json",
                "--on-reject", "fallback",
                "--metrics-addr", "127.0.0.1:0",
                "--state-dir", str(tmp / "state"),
                "--amqp-url", amqp_url(),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(self.log, "wb"),
            env=env,
        )

        def consuming() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(
                    "logfence consume exited %s:\n%s" % (self.proc.returncode, self.log.read_text())
                )
            d = broker.depth(self.queue)
            return bool(d and d["consumers"] >= 1)

        wait_until("logfence consume to consume from %s" % self.queue, consuming, 30)

    def lines(self) -> List[Dict[str, Any]]:
        if not self.sink.exists():
            return []
        out = []
        with open(self.sink, "rb") as f:
            for raw in f.read().split(b"\n"):
                if raw.strip():
                    out.append(json.loads(raw))
        return out

    def wait_lines(self, n: int, timeout: float = 60) -> List[Dict[str, Any]]:
        """The sink's lines once it holds at least n."""
        got: List[Dict[str, Any]] = []

        def enough() -> bool:
            nonlocal got
            if self.proc.poll() is not None:
                raise AssertionError("logfence consume exited:\n%s" % self.log.read_text())
            got = self.lines()
            return len(got) >= n

        try:
            wait_until("%d lines in the sink" % n, enough, timeout, every=0.1)
        except AssertionError as e:
            raise AssertionError("%s (have %d)" % (e, len(got))) from None
        return got

    def wait_drained(self, timeout: float = 30) -> None:
        """The queue has no ready message (every one delivered and settled)."""
        wait_until(
            "queue %s drained" % self.queue,
            lambda: (self.broker.depth(self.queue) or {"messages": 1})["messages"] == 0,
            timeout,
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for q in (self.queue, self.queue + ".dead"):
            try:
                self.broker.delete(q)
            except Exception:  # noqa: BLE001
                pass


def fields_of(line: Dict[str, Any]) -> Dict[str, str]:
    return {k: str(v) for k, v in (line.get("fields") or {}).items()}


def rejected(line: Dict[str, Any]) -> bool:
    return any(f.get("severity") == "reject" for f in line.get("findings") or [])


@pytest.fixture
def broker() -> Iterator[Broker]:
    b = Broker()
    yield b
    b.close()


@pytest.fixture
def consumer(tmp_path: Path, request: pytest.FixtureRequest, broker: Broker) -> Iterator[Consumer]:
    c = Consumer(tmp_path, request.node.name, broker)
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def handlers() -> Iterator[Callable[..., LogfenceHandler]]:
    """Makes handlers that are closed (and detached from their loggers) after the test."""
    made: List[LogfenceHandler] = []
    loggers: List[logging.Logger] = []

    def make(logger: Optional[logging.Logger] = None, **kw: Any) -> LogfenceHandler:
        kw.setdefault("url", amqp_url())
        h = LogfenceHandler(**kw)
        made.append(h)
        if logger is not None:
            logger.addHandler(h)
            loggers.append(logger)
        return h

    yield make
    for lg in loggers:
        for h in made:
            lg.removeHandler(h)
    for h in made:
        h.flush_timeout = min(h.flush_timeout, 2.0)
        h.close()


def own_logger(name: str) -> logging.Logger:
    """A logger of the test's own, not propagating to the root."""
    lg = logging.getLogger("pytest.%s.%s" % (name, secrets.token_hex(3)))
    lg.setLevel(logging.DEBUG)
    lg.propagate = False
    return lg


class TcpProxy:
    """A TCP proxy from 127.0.0.1:port to the broker, that can be stopped (listener closed,
    every connection cut) and started again on the same port."""

    def __init__(self, upstream_port: int, port: Optional[int] = None) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self.port = port or free_port()
        self._listener: Optional[socket.socket] = None
        self._socks: List[socket.socket] = []
        self._lock = threading.Lock()
        self.accepted = 0

    def start(self) -> None:
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", self.port))
        ls.listen(16)
        self._listener = ls
        threading.Thread(target=self._accept, args=(ls,), daemon=True).start()

    def stop(self) -> None:
        ls, self._listener = self._listener, None
        if ls is not None:
            try:
                ls.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            ls.close()
        with self._lock:
            socks, self._socks = self._socks, []
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def _accept(self, ls: socket.socket) -> None:
        while True:
            try:
                client, _ = ls.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._socks += [client, upstream]
                self.accepted += 1
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
