"""logfence-handler: a `logging.Handler` that ships each record's template and arguments to
RabbitMQ for `logfence consume`, and never formats the message in the application.

    import logging
    from logfence_handler import LogfenceHandler

    logging.getLogger().addHandler(LogfenceHandler(url="amqp://guest:guest@127.0.0.1:5672/%2f", queue="logs"))
    logging.getLogger("chat").warning("user %s shared %s", "bob", link)

`emit` never formats, never blocks and never raises: it serializes the record into a bounded
buffer (oldest dropped and counted when full); one background thread publishes with
publisher confirms and republishes what was not confirmed (at least once).
"""

from ._handler import LogfenceHandler
from ._record import BraceMessage, DollarMessage, to_record

__all__ = ["LogfenceHandler", "BraceMessage", "DollarMessage", "to_record"]
__version__ = "0.1.0"
