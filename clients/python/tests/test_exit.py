"""6. Exit: a short script configured with dictConfig logs and ends; `logging.shutdown`
flushes, so its last records arrive."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

from conftest import amqp_url


def test_a_short_scripts_last_records_arrive(consumer) -> None:
    script = textwrap.dedent(
        """
        import logging, logging.config, sys
        url, queue = sys.argv[1], sys.argv[2]
        logging.config.dictConfig({
            "version": 1,
            "handlers": {
                "logfence": {
                    "class": "logfence_handler.LogfenceHandler",
                    "url": url,
                    "queue": queue,
                    "capacity": 5000,
                    "flush_timeout": 10,
                },
            },
            "root": {"level": "INFO", "handlers": ["logfence"]},
        })
        log = logging.getLogger("exit-script")
        for i in range(1000):
            log.info("record %d", i)
        log.warning("last words of %s", "the script")
        """
    )
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", script, amqp_url(), consumer.queue],
        capture_output=True, text=True, timeout=60,
    )
    took = time.monotonic() - start
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", done.stderr
    lines = consumer.wait_lines(1001, timeout=30)
    assert len(lines) == 1001
    assert {l["message"] for l in lines} == {"record %d" % i for i in range(1000)} | {
        "last words of the script"
    }
    assert all(l["logger"] == "exit-script" for l in lines)
    print("script with 1,001 records ran %.2fs" % took)
