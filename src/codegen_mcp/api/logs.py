"""Log lines written the same way by the coordinator, the agent and the operator, each naming its call and session.

`json` gives one JSON object per line (time, level, logger, message, call_id, session, exception), what a
cluster's log collector indexes; `text` gives the classic line with `call_id=… session=…` after the message, for
a terminal. The call id comes from `api.call_id`; the session from `session_scope` here. A log record may also
carry its own `call_id` / `session` attribute (the operator sets the session of kopf's per-object lines so), and
an `object` it is about (`namespace/name` of a Kubernetes object): a JSON field, a `[namespace/name]` prefix in text.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import re
import sys
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Final, Literal, TextIO, get_args

from codegen_mcp.api.call_id import current_call_id

LogFormat = Literal["json", "text"]
LOG_FORMATS: Final[tuple[str, ...]] = get_args(LogFormat)
LOG_FORMAT_ENV: Final = "CODEGEN_LOG_FORMAT"
# A terminal is the common reader without a setting (`make run`); the chart sets json for the log collector.
DEFAULT_LOG_FORMAT: Final[LogFormat] = "text"
# The coordinator's session of a call, sent to the agent with the call id so its lines name the same session.
SESSION_HEADER: Final = "X-Codegen-Session"
# A session key as the coordinator makes them (MCP session ids, `ws-<principal>-<name>`, resource names).
_VALID_SESSION: Final = re.compile(r"[A-Za-z0-9_./-]{1,128}")
TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

_session: ContextVar[str | None] = ContextVar("codegen_session", default=None)


class LogFormatError(ValueError):
    """A log format that is neither json nor text, or a level that does not exist (one sentence for the user)."""


def current_session() -> str | None:
    """The session whose work is being done here, or None."""
    return _session.get()


def valid_session(value: str | None) -> str | None:
    """`value` when it looks like a session name (one from another component is not trusted blindly), else None."""
    return value if value is not None and _VALID_SESSION.fullmatch(value) else None


@contextlib.contextmanager
def session_scope(session: str | None = None) -> Iterator[None]:
    """Work for `session` (None: not known yet, `bind_session` may name it); the previous one is back at exit."""
    token = _session.set(session)
    try:
        yield
    finally:
        _session.reset(token)


def bind_session(session: str) -> None:
    """Name the session of the enclosing `session_scope` once it is known (it ends with that scope)."""
    _session.set(session)


def _context(record: logging.LogRecord) -> tuple[str | None, str | None]:
    call_id = getattr(record, "call_id", None) or current_call_id()
    session = getattr(record, "session", None) or current_session()
    return call_id, session


class JsonFormatter(logging.Formatter):
    """One JSON object per line; `call_id` and `session` are always there (null outside any call)."""

    def format(self, record: logging.LogRecord) -> str:
        call_id, session = _context(record)
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "call_id": call_id,
            "session": session,
        }
        subject = getattr(record, "object", None)
        if subject is not None:
            line["object"] = subject
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """The classic line, followed by `call_id=… session=…` when a call or session is known."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        subject = getattr(record, "object", None)
        if subject is not None:
            record = copy.copy(record)  # other handlers see the message as it was
            record.message = f"[{subject}] {record.message}"
        text = super().formatMessage(record)
        call_id, session = _context(record)
        tags = [f"{name}={value}" for name, value in (("call_id", call_id), ("session", session)) if value]
        return f"{text} [{' '.join(tags)}]" if tags else text


def formatter(fmt: LogFormat) -> logging.Formatter:
    return JsonFormatter() if fmt == "json" else TextFormatter()


def log_format(environ: Mapping[str, str]) -> LogFormat:
    """The format `CODEGEN_LOG_FORMAT` asks for (default text). Raises LogFormatError."""
    value = environ.get(LOG_FORMAT_ENV, DEFAULT_LOG_FORMAT)
    fmt = value.strip().lower()
    if fmt == "json":
        return "json"
    if fmt == "text":
        return "text"
    raise LogFormatError(f"{LOG_FORMAT_ENV} must be one of {', '.join(LOG_FORMATS)}, not {value!r}")


def configure_logging(level: str | int, fmt: LogFormat, stream: TextIO | None = None) -> logging.Handler:
    """The root logger writes to `stream` (default stderr) in `fmt` at `level` (a name of LOG_LEVELS, any case,
    or a number); its other handlers are removed. Raises LogFormatError for a name that is no level."""
    if isinstance(level, str):
        if level.strip().upper() not in LOG_LEVELS:
            raise LogFormatError(f"the log level must be one of {', '.join(LOG_LEVELS)}, not {level!r}")
        level = level.strip().upper()
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(formatter(fmt))
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return handler
