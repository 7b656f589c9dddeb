"""5. Fork: a forked child's records and the parent's both arrive, and the parent's
connection survives the child (the child never touches the parent's socket)."""

from __future__ import annotations

import os

from conftest import fields_of, own_logger


def test_child_and_parent_records_arrive_and_the_parent_connection_survives(consumer, handlers) -> None:
    log = own_logger("fork")
    h = handlers(log, queue=consumer.queue)
    log.info("parent before fork", extra={"who": "parent", "seq": -1})
    assert h.flush(10), h.stats()
    assert h.stats()["connections"] == 1

    pid = os.fork()
    if pid == 0:  # the child: log, flush through its own connection, leave without cleanup
        code = 1
        try:
            for i in range(100):
                log.info("child record %d", i, extra={"who": "child", "seq": i})
            s = h.stats()
            ok = h.flush(15)
            s = h.stats()
            code = 0 if ok and s["connections"] == 1 and s["sent"] == 100 else 3
        except BaseException:
            code = 4
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, status

    for i in range(100):
        log.info("parent record %d", i, extra={"who": "parent", "seq": i})
    assert h.flush(10), h.stats()
    stats = h.stats()
    assert stats["connections"] == 1, stats  # the same connection as before the fork
    assert stats["sent"] == 101, stats

    lines = consumer.wait_lines(201)
    got = {(fields_of(l)["who"], int(fields_of(l)["seq"])) for l in lines}
    assert got == {("parent", -1)} | {(w, i) for w in ("parent", "child") for i in range(100)}
