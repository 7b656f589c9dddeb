"""The Python peer of the e2e bench: what a consumer in the incident's world does.

pika's BlockingConnection, prefetch 1000, and for each message: json.loads, the
message rendered with ``msg % tuple(args)``, one line written to a file and flushed
(as logging's FileHandler does after each record), then a per-message ack. It exits
after acking N messages and prints its own CPU seconds and peak RSS as JSON.

Usage: pika_peer.py URL QUEUE OUT_PATH N PREFETCH
"""

import json
import resource
import sys

import pika


def render(record):
    msg = record.get("msg", "")
    args = record.get("args")
    try:
        if isinstance(args, list):
            message = msg % tuple(args)
        elif args is not None:
            message = msg % args
        else:
            message = msg
    except (TypeError, ValueError, KeyError) as e:
        message = "%s [format error: %s]" % (msg, e)
    return "%s %-5s %s: %s" % (
        record.get("ts", ""),
        record.get("level", ""),
        record.get("logger", ""),
        message,
    )


def main():
    url, queue, out_path, n, prefetch = sys.argv[1:6]
    n = int(n)
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=int(prefetch))
    out = open(out_path, "a", encoding="utf-8")
    done = [0]

    def on_message(ch, method, _properties, body):
        line = render(json.loads(body))
        out.write(line.replace("\n", "\\n") + "\n")
        out.flush()
        ch.basic_ack(delivery_tag=method.delivery_tag)
        done[0] += 1
        if done[0] >= n:
            ch.stop_consuming()

    channel.basic_consume(queue=queue, on_message_callback=on_message)
    channel.start_consuming()
    connection.close()
    out.close()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(
        json.dumps(
            {
                "cpu_s": usage.ru_utime + usage.ru_stime,
                "hwm_kib": usage.ru_maxrss,
                "acked": done[0],
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
