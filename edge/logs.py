"""Structured logging: one JSON object per line on stderr, which journald collects.

Each line carries ``time`` (UTC ISO), ``level``, ``logger``, ``message`` and
any ``extra={...}`` fields the caller passed (``frame``, ``stage``, ``state``
...), so logs can be filtered with ``journalctl -o cat | jq``. Under systemd
(``$JOURNAL_STREAM`` names our stderr) each line starts with the syslog
priority prefix (``<3>``), which journald turns into the entry's PRIORITY, so
``journalctl -p warning`` works.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import datetime, timezone
from typing import IO, Any

# Attributes every LogRecord has; anything else came from `extra=`.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
}
_SYSLOG_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


def _priority(levelno: int) -> int:
    for level in sorted(_SYSLOG_PRIORITY, reverse=True):
        if levelno >= level:
            return _SYSLOG_PRIORITY[level]
    return 7


def _plain(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return str(value)


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of JSON; ``syslog_prefix`` adds ``<N>`` for journald."""

    def __init__(self, syslog_prefix: bool = False) -> None:
        super().__init__()
        self.syslog_prefix = syslog_prefix

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_") and key not in doc:
                doc[key] = _plain(value)
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        line = json.dumps(doc, ensure_ascii=False, allow_nan=True)
        return f"<{_priority(record.levelno)}>{line}" if self.syslog_prefix else line


def stream_is_journal(stream: IO[str], env: dict[str, str] | None = None) -> bool:
    """True when ``stream`` is the journald stream systemd connected (``$JOURNAL_STREAM``)."""
    value = (os.environ if env is None else env).get("JOURNAL_STREAM", "")
    try:
        dev, ino = (int(x) for x in value.split(":"))
        st = os.fstat(stream.fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


def configure_logging(
    log_format: str = "text",
    level: str = "info",
    stream: IO[str] | None = None,
    env: dict[str, str] | None = None,
) -> logging.Handler:
    """Replace the root logger's handlers with one writing ``log_format`` to ``stream``.

    ``log_format``: ``"json"`` or ``"text"``; ``level``: debug, info, warning
    or error (``ServiceConfig.log_format`` / ``log_level``). Returns the handler.
    """
    stream = sys.stderr if stream is None else stream
    handler = logging.StreamHandler(stream)
    if log_format == "json":
        handler.setFormatter(JsonFormatter(syslog_prefix=stream_is_journal(stream, env)))
    elif log_format == "text":
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    else:
        raise ValueError(f"log_format must be 'json' or 'text', got {log_format!r}")
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler
