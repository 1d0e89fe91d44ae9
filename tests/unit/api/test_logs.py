"""Log lines name their call and session, as JSON objects or text, in the format CODEGEN_LOG_FORMAT asks for."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from codegen_mcp.api.call_id import call_scope
from codegen_mcp.api.logs import (
    JsonFormatter,
    LogFormatError,
    TextFormatter,
    bind_session,
    configure_logging,
    current_session,
    log_format,
    session_scope,
    valid_session,
)

log = logging.getLogger("codegen_mcp.test_logs")


@pytest.fixture
def lines() -> Iterator[tuple[logging.Handler, io.StringIO]]:
    """A handler on `log` that formats each record as it is logged (in the context of the logging call)."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    try:
        yield handler, out
    finally:
        log.removeHandler(handler)


def test_a_json_line_names_the_call_and_session(lines: tuple[logging.Handler, io.StringIO]) -> None:
    handler, out = lines
    handler.setFormatter(JsonFormatter())
    with call_scope("call-1"), session_scope("ws-ab12cd34-demo"):
        log.info("wrote %d bytes", 5)
    log.warning("outside")
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["time"].endswith("+00:00") and first["time"][:4].isdigit()
    assert {k: first[k] for k in ("level", "logger", "message", "call_id", "session")} == {
        "level": "INFO",
        "logger": "codegen_mcp.test_logs",
        "message": "wrote 5 bytes",
        "call_id": "call-1",
        "session": "ws-ab12cd34-demo",
    }
    assert "exception" not in first
    assert (second["call_id"], second["session"], second["level"]) == (None, None, "WARNING")


def test_a_json_line_carries_the_exception_and_stays_one_line(lines: tuple[logging.Handler, io.StringIO]) -> None:
    handler, out = lines
    handler.setFormatter(JsonFormatter())
    try:
        raise RuntimeError("disk gone\nsecond line")
    except RuntimeError:
        log.exception("write failed: %s", "ünïcode")
    (line,) = out.getvalue().splitlines()
    record = json.loads(line)
    assert record["message"] == "write failed: ünïcode"
    assert "Traceback" in record["exception"] and "RuntimeError: disk gone" in record["exception"]


def test_a_record_naming_its_session_wins_over_the_scope(lines: tuple[logging.Handler, io.StringIO]) -> None:
    handler, out = lines
    handler.setFormatter(JsonFormatter())
    with session_scope("from-scope"):
        log.info("about an object", extra={"session": "from-record"})
    assert json.loads(out.getvalue())["session"] == "from-record"


def test_a_text_line_ends_with_the_call_and_session_when_known(lines: tuple[logging.Handler, io.StringIO]) -> None:
    handler, out = lines
    handler.setFormatter(TextFormatter())
    with call_scope("call-2"), session_scope("s1"):
        log.info("hello")
    log.info("plain")
    first, second = out.getvalue().splitlines()
    assert first.endswith(" INFO codegen_mcp.test_logs: hello [call_id=call-2 session=s1]")
    assert second.endswith(" INFO codegen_mcp.test_logs: plain")


def test_a_line_about_an_object_names_it(lines: tuple[logging.Handler, io.StringIO]) -> None:
    handler, out = lines
    handler.setFormatter(JsonFormatter())
    log.info("Handler succeeded.", extra={"object": "team-a/alice"})
    handler.setFormatter(TextFormatter())
    log.info("Handler succeeded.", extra={"object": "team-a/alice"})
    as_json, as_text = out.getvalue().splitlines()
    assert json.loads(as_json)["object"] == "team-a/alice" and json.loads(as_json)["message"] == "Handler succeeded."
    assert as_text.endswith(" INFO codegen_mcp.test_logs: [team-a/alice] Handler succeeded.")


def test_bind_session_names_the_session_until_its_scope_ends() -> None:
    with session_scope():
        assert current_session() is None
        bind_session("key-1")
        assert current_session() == "key-1"
    assert current_session() is None


def test_a_session_from_another_component_is_checked() -> None:
    assert valid_session("ws-ab12cd34-" + "n" * 63) is not None
    assert valid_session("a b") is None and valid_session("x" * 129) is None and valid_session(None) is None


def test_the_format_comes_from_codegen_log_format() -> None:
    assert log_format({}) == "text"
    assert log_format({"CODEGEN_LOG_FORMAT": "JSON "}) == "json"
    with pytest.raises(LogFormatError, match=r"^CODEGEN_LOG_FORMAT must be one of json, text, not 'yaml'$"):
        log_format({"CODEGEN_LOG_FORMAT": "yaml"})


def test_configure_logging_leaves_one_handler_in_the_format() -> None:
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    out = io.StringIO()
    try:
        root.addHandler(logging.StreamHandler(io.StringIO()))
        handler = configure_logging("debug", "json", out)
        assert root.handlers == [handler] and root.level == logging.DEBUG
        with call_scope("call-3"):
            logging.getLogger("codegen_mcp.other").debug("x")
    finally:
        root.handlers[:] = saved
        root.setLevel(level)
    assert json.loads(out.getvalue())["call_id"] == "call-3"


@pytest.mark.parametrize("level", ["loud", "", "15x"])
def test_a_log_level_that_does_not_exist_is_one_sentence(level: str) -> None:
    root = logging.getLogger()
    saved = root.handlers[:]
    try:
        with pytest.raises(LogFormatError, match=r"^the log level must be one of DEBUG, INFO, WARNING, ERROR"):
            configure_logging(level, "text", io.StringIO())
        assert root.handlers == saved  # nothing changed
    finally:
        root.handlers[:] = saved


def test_the_coordinator_says_so_in_one_sentence() -> None:
    from codegen_mcp.coordinator.__main__ import main

    with pytest.raises(SystemExit) as exited:
        main(["--log-level", "loud"])
    assert str(exited.value.code) == (
        "codegen-mcp serve: the log level must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, not 'loud'"
    )
