"""Run a test under the project's real LOGGING (JSON, DEBUG everywhere) and keep every line it ships.

`shipped_logs()` applies `logging_config(log_format="json", level="DEBUG")` with dictConfig, sets every
known logger (google.*, urllib3, django.*, ours) to DEBUG, points the console handler at a buffer and
puts a raw recorder in front of it, so a test sees both what the code emitted (before any masking) and
what would be shipped (after). Everything is put back afterwards.
"""

from __future__ import annotations

import io
import json
import logging
import logging.config
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from convergence.log_config import PAYLOAD_LOGGERS, logging_config

# Loggers that may not exist yet when the test starts, set to DEBUG by name so they log from birth.
EXTRA_DEBUG_LOGGERS = (
    "urllib3",
    "google",
    "google.auth",
    "google.api_core",
    "google.cloud.bigquery",
    "django",
    "django.request",
    "django.db.backends",
    "django.security",
    "rest_framework",
    "tenants_app",
    "bigquery_backend",
    "convergence",
    *PAYLOAD_LOGGERS,
)


@dataclass(frozen=True)
class RawLine:
    """What a record said before any filter touched it: message with arguments, exception, stack."""

    logger: str
    level: str
    text: str
    thread: int


class RawRecorder(logging.Handler):
    """Keeps each record's own text: message with arguments, exception and stack, unmasked."""

    def __init__(self) -> None:
        super().__init__(level=logging.NOTSET)
        self.lines: list[RawLine] = []
        self._formatter = logging.Formatter()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:
            text = f"{record.msg!s} {record.args!r}"
        if record.exc_info:
            text += "\n" + self._formatter.formatException(record.exc_info)
        elif record.exc_text:
            text += "\n" + record.exc_text
        if record.stack_info:
            text += "\n" + record.stack_info
        self.lines.append(RawLine(record.name, record.levelname, text, record.thread))


@dataclass
class ShippedLogs:
    """The console handler's output and the raw records, for one test."""

    stream: io.StringIO
    raw: RawRecorder
    main_thread: int = field(default_factory=threading.get_ident)

    def lines(self) -> list[str]:
        # "\n" only, as a log shipper splits: JSON leaves U+2028 and friends unescaped inside a line.
        return [line for line in self.stream.getvalue().split("\n") if line]

    def entries(self) -> list[dict[str, Any]]:
        """Every shipped line parsed as JSON (a line that is not JSON fails the test here)."""
        return [json.loads(line) for line in self.lines()]

    def position(self) -> tuple[int, int]:
        """Where both captures stand now: slice `entries()` and `raw.lines` with it later."""
        return len(self.lines()), len(self.raw.lines)

    def text(self) -> str:
        return self.stream.getvalue()

    def raw_text(self) -> str:
        return "\n".join(line.text for line in self.raw.lines)


@contextmanager
def shipped_logs() -> Iterator[ShippedLogs]:
    """The real LOGGING in JSON at DEBUG for every logger, captured; restored on exit."""
    root = logging.getLogger()
    saved_handlers, saved_root_level = list(root.handlers), root.level
    loggers = [logging.getLogger(name) for name in EXTRA_DEBUG_LOGGERS] + [
        item for item in logging.Logger.manager.loggerDict.values() if isinstance(item, logging.Logger)
    ]
    saved = {logger: (logger.level, logger.disabled, logger.propagate) for logger in loggers}
    try:
        logging.config.dictConfig(logging_config(log_format="json", level="DEBUG"))
        console = next(handler for handler in root.handlers if handler.name == "console")
        stream = io.StringIO()
        console.setStream(stream)  # type: ignore[attr-defined]
        raw = RawRecorder()
        # The raw recorder, then the console handler (what would be shipped), then what was there before
        # (pytest's caplog): the filters leave records as logged, so every handler sees the same record.
        root.handlers[:] = [raw, console, *(h for h in saved_handlers if h not in (raw, console))]
        for logger in loggers:
            logger.setLevel(logging.DEBUG)
            logger.disabled = False
        # tenants_app/kms.py raises its payload loggers to INFO again when it builds a client: product
        # behaviour, left alone; the JSON formatter never ships `extra` bodies in any case.
        yield ShippedLogs(stream=stream, raw=raw)
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_root_level)
        for logger, (level, disabled, propagate) in saved.items():
            logger.setLevel(level)
            logger.disabled = disabled
            logger.propagate = propagate
