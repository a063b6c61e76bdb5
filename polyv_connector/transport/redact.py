"""Keep signed URLs out of logs: the one place that sets up logging redaction for urllib3.

A signed save URL lets anyone who reads it write to the account for 3 minutes, and urllib3
logs request URLs at DEBUG (and in its retry and redirect bookkeeping, should urllib3 retries
or redirects ever be turned on for the session). The filter rewrites ``sign=<value>`` to
``sign=***`` in every record of the urllib3 loggers that can carry a URL, whatever handler
later prints it.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

#: urllib3 loggers whose records can hold a request URL (request lines, retries, redirects).
URL_LOGGERS = ("urllib3.connectionpool", "urllib3.util.retry", "urllib3.poolmanager")

_SIGN = re.compile(r"(sign=)[^&\s'\"]+", re.IGNORECASE)
_install_lock = threading.Lock()


class RedactSignature(logging.Filter):
    """Replaces the value of every ``sign=`` in a record's message with ``***``."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "sign=" in message.lower():
            # Format once, then drop the args: the signed URL was one of them.
            record.msg, record.args = _SIGN.sub(r"\1***", message), None
        return True


_FILTER = RedactSignature()


def install_log_redaction(*, quiet: bool = True) -> None:
    """Install the signature filter on urllib3's URL loggers; safe to call any number of times.

    ``quiet`` also raises the ``urllib3`` logger to WARNING, so its DEBUG request lines are not
    even formatted, even under ``-v`` or a DEBUG task log: what the command line and the Airflow
    operator want. The library calls it with ``quiet=False`` when the client is imported, since a
    library must not change logging levels its host application chose.
    """
    with _install_lock:
        for name in URL_LOGGERS:
            logger = logging.getLogger(name)
            if not any(isinstance(f, RedactSignature) for f in logger.filters):
                logger.addFilter(_FILTER)
    if quiet:
        logging.getLogger("urllib3").setLevel(logging.WARNING)


def scrub_secret(value: Any, secret: str) -> Any:
    """``value`` (strings, lists, dicts, nested) with every occurrence of ``secret`` replaced by
    ``***``: the XCom summary, failure messages and alerts pass through it."""
    if not secret:
        return value
    if isinstance(value, str):
        return value.replace(secret, "***")
    if isinstance(value, dict):
        return {scrub_secret(k, secret): scrub_secret(v, secret) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub_secret(v, secret) for v in value]
    return value
