"""What the agent zygote does once before it forks, so its agents need not: the base interpreter asked once
(where it lives and its version), the settings (one parser) and app built once, and the process single-threaded
again."""

from __future__ import annotations

import asyncio
import glob
import tempfile
import threading
from pathlib import Path
from typing import Any

import pytest

from codegen_mcp.sandbox_agent import venv, zygote
from codegen_mcp.sandbox_agent.__main__ import build_parser, parse_settings
from codegen_mcp.sandbox_agent.venv import BasePython, default_base_python, inspect_base_python, parse_base_python


@pytest.fixture
def no_known_bases(monkeypatch: pytest.MonkeyPatch) -> dict[str, BasePython]:
    known: dict[str, BasePython] = {}
    monkeypatch.setattr(venv, "_KNOWN_BASES", known)
    return known


def test_the_base_interpreters_answer_carries_its_version() -> None:
    said = "/usr\n/usr\n/usr/bin/python3.11\n3.11.2\n"
    assert parse_base_python(said, "/x") == BasePython(
        prefixes=(Path("/usr"), Path("/usr")), executable=Path("/usr/bin/python3.11"), version="3.11.2"
    )


async def test_the_base_interpreter_is_asked_once_per_process(
    monkeypatch: pytest.MonkeyPatch, no_known_bases: dict[str, BasePython]
) -> None:
    asked: list[list[str]] = []
    run_quiet = venv.run_quiet

    async def counted(argv: Any, **kwargs: Any) -> tuple[int | None, bytes]:
        asked.append(list(argv))
        return await run_quiet(argv, **kwargs)

    monkeypatch.setattr(venv, "run_quiet", counted)
    python = default_base_python(None)
    first = await inspect_base_python(python)
    again = await inspect_base_python(python)
    assert first is again and first.version[:1].isdigit() and len(asked) == 1


async def test_an_interpreter_that_cannot_say_is_asked_again(no_known_bases: dict[str, BasePython]) -> None:
    missing = "/nonexistent/bin/python3"
    assert (await inspect_base_python(missing)).version == ""
    assert missing not in no_known_bases


def test_the_rehearsal_asks_the_base_interpreter_and_leaves_one_thread_and_no_folder(
    no_known_bases: dict[str, BasePython],
) -> None:
    before = set(glob.glob(f"{tempfile.gettempdir()}/codegen-zygote-*"))
    zygote.rehearse()
    assert default_base_python(None) in no_known_bases
    assert threading.active_count() == 1, "fork needs a single-threaded zygote"
    assert set(glob.glob(f"{tempfile.gettempdir()}/codegen-zygote-*")) == before
    with pytest.raises(RuntimeError):  # the rehearsal ran its own loop and left none running
        asyncio.get_running_loop()


def test_the_agents_parser_is_built_once_and_parsing_leaves_it_as_it_was(tmp_path: Path) -> None:
    assert build_parser() is build_parser(), "a forked agent would build its own parser"
    first, _ = parse_settings(["--workspace", str(tmp_path / "a"), "--port", "0", "--network"])
    second, _ = parse_settings(["--workspace", str(tmp_path / "b")])
    assert (first.workspace, first.port, first.network) == (tmp_path / "a", 0, True)
    assert (second.workspace, second.port, second.network) == (tmp_path / "b", 8080, False)
