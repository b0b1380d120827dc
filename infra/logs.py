"""Log lines as JSON (LOG_FORMAT=json, the default) or text, each carrying the context it was written in: the
request id of the HTTP request or task, and the saga, order, step and attempt a step runs for.

The context lives in contextvars, set where a request starts or a step is claimed (`log_context`) and restored when
it ends, so every thread of a worker's pool carries its own. The LogRecord factory copies it onto each record.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

FIELDS = ("request_id", "saga_id", "order_id", "step", "attempt")
REQUEST_ID_HEADER = "X-Request-ID"
MAX_REQUEST_ID = 128
_context: ContextVar[Mapping[str, Any]] = ContextVar("bookmarket_log_context", default=MappingProxyType({}))
_HANDLER_NAME = "bookmarket"
# Secrets a log line must never carry, whatever wrote it (a library's exception message, a URL in a traceback): a
# URL's password, a bearer token, a libpq `password=` keyword. Each is replaced by *** where the line is formatted.
_SECRETS = (
    (re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^:/@\s'\"]*):[^@\s'\"/]+@"), r"\1:***@"),
    (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]+"), r"\1***"),
    (re.compile(r"(?i)\b(password\s*=\s*)(?:'[^']*'|[^\s'\",;&]+)"), r"\1***"),
)
_HINTS = ("@", "earer", "assword")
# The attributes every LogRecord has: anything else on a record was passed in `extra` and is written as a field.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


def redact(text: str) -> str:
    """`text` with every password of a URL, bearer token and `password=` value replaced by ***."""
    if not any(hint in text for hint in _HINTS):  # the common line: no regular expression run
        return text
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Add `fields` to every log line written inside the block (in this thread or task), then restore."""
    token = _context.set({**_context.get(), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


def current(name: str) -> Any:
    """A field of the current log context (None when unset)."""
    return _context.get().get(name)


def request_id_from(given: str | None) -> str:
    """The caller's request id when it is a sensible one (printable, short), else a new one."""
    if given and len(given) <= MAX_REQUEST_ID and given.isprintable() and not any(c in given for c in '"\\'):
        return given
    return uuid.uuid4().hex


def _with_context(make: Callable[..., logging.LogRecord]) -> Callable[..., logging.LogRecord]:
    """A LogRecord factory that puts the log context on every record as it is made, whichever handler (ours,
    Celery's, a test's) writes it. Give a line such fields with `log_context`, not `extra` (logging refuses an
    `extra` key the record already has)."""
    if getattr(make, "_bookmarket_context", False):
        return make

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        made = make(*args, **kwargs)
        made.__dict__.update(_context.get())
        return made

    factory._bookmarket_context = True  # type: ignore[attr-defined]
    return factory


logging.setLogRecordFactory(_with_context(logging.getLogRecordFactory()))


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ts, level, logger, message, the context fields, any `extra`, and exc."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname, "logger": record.name, "message": record.getMessage(),
            "process": record.process, "thread": record.threadName,
        }
        line.update((k, v) for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_"))
        data = line.get("data")
        if isinstance(data, dict) and "traceback" in data and not record.exc_info:
            # Celery hands every task error's traceback to its log call in `extra`, and prints it only when its
            # policy says so: an expected error (a task's `throws`) is logged without one, here too.
            line["data"] = {k: v for k, v in data.items() if k != "traceback"}
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return redact(json.dumps(line, default=str))


class TextFormatter(logging.Formatter):
    """The usual text line, followed by the context fields as key=value."""

    def __init__(self) -> None:
        super().__init__("[%(asctime)s: %(levelname)s/%(processName)s] %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = " ".join(f"{k}={getattr(record, k)}" for k in FIELDS if getattr(record, k, None) is not None)
        return redact(f"{text} [{fields}]" if fields else text)


def formatter(fmt: str) -> logging.Formatter:
    if fmt not in ("json", "text"):
        raise ValueError(f"LOG_FORMAT must be json or text, got {fmt!r}")
    return JsonFormatter() if fmt == "json" else TextFormatter()


def handler(fmt: str, stream: Any = None) -> logging.Handler:
    """A stream handler (stderr) writing `fmt` lines with the log context."""
    made = logging.StreamHandler(stream or sys.stderr)
    made.set_name(_HANDLER_NAME)
    made.setFormatter(formatter(fmt))
    return made


def signal_safe_say(fmt: str, logger: str) -> Callable[..., None]:
    """A replacement for a print done in a signal handler (Celery's `safe_say`): the line formatted as `fmt` and
    written with one os.write, taking no lock (a logging handler's lock could be held by the interrupted code)."""
    line_format = formatter(fmt)

    def say(msg: str, f: Any = sys.__stderr__) -> None:
        record = logging.LogRecord(logger, logging.WARNING, __file__, 0, msg, None, None)
        with contextlib.suppress(OSError, ValueError, AttributeError):
            os.write(f.fileno(), (line_format.format(record) + "\n").encode())

    return say


def configure_logging(fmt: str, level: int | str = logging.INFO) -> None:
    """Send the root logger's lines, and warnings, to stderr as `fmt`; a second call replaces the handler it
    installed (and no other)."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler(fmt))
    root.setLevel(level)
    logging.captureWarnings(True)  # Python's warnings too become log lines (logger py.warnings)
