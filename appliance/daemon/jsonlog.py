"""Structured logging: one JSON object a line on stderr (journald, container collectors).

When stderr is the journal (``$JOURNAL_STREAM`` names stderr's device and inode), each line
starts with its syslog priority, ``<3>`` for an error, so ``journalctl -p err`` finds it;
anywhere else the lines are plain JSON.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

# logging level -> syslog priority (journald reads a leading "<N>")
PRIORITIES = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


def priority(level: int) -> int:
    """The syslog priority of a logging level (levels between take the next more severe)."""
    for threshold in sorted(PRIORITIES, reverse=True):
        if level >= threshold:
            return PRIORITIES[threshold]
    return 7


def is_journal(stream: TextIO, env: Mapping[str, str] | None = None) -> bool:
    """``stream`` is connected to the journal: ``$JOURNAL_STREAM`` is its ``DEV:INODE``."""
    value = (os.environ if env is None else env).get("JOURNAL_STREAM", "")
    device, _, inode = value.partition(":")
    try:
        info = os.fstat(stream.fileno())
        return (int(device), int(inode)) == (info.st_dev, info.st_ino)
    except (ValueError, OSError, AttributeError):
        return False


_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def __init__(self, journal: bool = False) -> None:
        super().__init__()
        self.journal = journal  # prefix each line with its syslog priority

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            entry["error"] = f"{record.exc_info[0].__name__}: {record.exc_info[1]}"
        line = json.dumps(entry, default=str)
        return f"<{priority(record.levelno)}>{line}" if self.journal else line


def setup_logging(stream: TextIO | None = None, level: int = logging.INFO) -> logging.Logger:
    """The ``appliance`` logger writing JSON lines to ``stream`` (stderr)."""
    logger = logging.getLogger("appliance")
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter(journal=is_journal(stream)))
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False
    return logger
