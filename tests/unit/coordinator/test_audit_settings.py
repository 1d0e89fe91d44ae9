"""Choosing the audit sink: flags and CODEGEN_AUDIT_* variables, and the sentences a wrong choice gets."""

from __future__ import annotations

from pathlib import Path

import pytest

from codegen_mcp.coordinator.__main__ import main, parse_settings
from codegen_mcp.coordinator.audit import AuditLog, FileSink, StdoutSink, create_audit_log
from codegen_mcp.coordinator.audit.postgres import PostgresSink

BAD_DSN = "host=db password=s3cret oops"


def test_the_file_is_the_default_sink(tmp_path: Path) -> None:
    settings, _ = parse_settings(["--state-dir", str(tmp_path)])
    audit = create_audit_log(settings)
    assert isinstance(audit.sink, FileSink) and audit.sink.path == tmp_path / "audit.jsonl"
    assert audit.queue_limit == 10_000


def test_stdout_and_postgres_from_flags_and_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    settings, _ = parse_settings(["--audit-sink", "stdout"])
    assert isinstance(create_audit_log(settings).sink, StdoutSink)

    monkeypatch.setenv("CODEGEN_AUDIT_SINK", "postgres")
    monkeypatch.setenv("CODEGEN_AUDIT_POSTGRES_DSN", "postgresql://audit:s3cret@db.example:6543/trail")
    monkeypatch.setenv("CODEGEN_AUDIT_BUFFER_EVENTS", "50")
    settings, _ = parse_settings([])
    audit = create_audit_log(settings)
    assert isinstance(audit.sink, PostgresSink) and audit.queue_limit == 50
    assert audit.describe() == "postgresql audit@db.example:6543/trail table codegen_mcp_audit"
    assert "s3cret" not in repr(settings)


@pytest.mark.parametrize(
    ("argv", "sentence"),
    [
        (["--audit-sink", "postgres"], "audit_sink postgres needs audit_postgres_dsn (CODEGEN_AUDIT_POSTGRES_DSN"),
        (["--audit-sink", "postgres", "--audit-postgres-dsn", ""], "audit_sink postgres needs audit_postgres_dsn"),
        (["--audit-sink", "stdout", "--transport", "stdio"], "cannot share standard output with the stdio transport"),
        (["--audit-sink", "postgres", "--audit-postgres-dsn", BAD_DSN], "the audit DSN (CODEGEN_AUDIT_POSTGRES_DSN)"),
    ],
)
def test_a_sink_that_cannot_work_is_refused_in_one_sentence(argv: list[str], sentence: str) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    message = str(exited.value.code)
    assert message.startswith("codegen-mcp serve: ") and sentence in message and "Traceback" not in message
    assert "s3cret" not in message  # a DSN is never echoed: it may hold a password


def test_a_dsn_that_does_not_parse_is_a_problem_that_does_not_quote_it() -> None:
    audit = AuditLog(PostgresSink(BAD_DSN))
    audit.open()
    try:
        assert "does not parse" in str(audit.problem) and "s3cret" not in str(audit.problem)
        assert audit.describe() == "postgresql (a DSN that does not parse)"
    finally:
        audit.close(timeout_s=1)
