"""The agent's HTTP API: auth, file operations, argument errors (a real app over a real workspace)."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import pytest

from codegen_mcp.api.errors import SandboxUnavailable
from codegen_mcp.api.routes import AGENT_ROUTES
from codegen_mcp.api.tools import TOOLS, FsListResult, FsReadResult, FsWriteResult, HealthView
from codegen_mcp.sandbox_agent import app as app_module
from codegen_mcp.sandbox_agent.app import create_app
from codegen_mcp.sandbox_agent.handlers import HANDLERS

from .conftest import AgentClient, MakeClient, make_settings


async def post(client: AgentClient, path: str, body: Any, status: int = 200) -> Any:
    resp = await client.post(path, json=body)
    data = await resp.json()
    assert resp.status == status, data
    return data


def assert_one_sentence(data: Any, code: str) -> str:
    assert set(data) == {"error"}
    assert data["error"]["code"] == code
    message = data["error"]["message"]
    assert isinstance(message, str) and message
    assert "\n" not in message
    assert "Traceback" not in message and "validation error" not in message.lower()
    return str(message)


# --- the one route table ------------------------------------------------------------------------------


def test_the_agent_serves_exactly_the_route_table(workspace: Path, shared_venv: Path) -> None:
    assert len(set(AGENT_ROUTES)) == len(AGENT_ROUTES)
    assert {spec.route for spec in TOOLS} <= set(AGENT_ROUTES)  # every tool calls a route the agent has
    assert set(HANDLERS) == set(AGENT_ROUTES)  # every route has its view, and no view is off the table
    app = create_app(make_settings(workspace, shared_venv))
    served = {(r.method, r.resource.canonical) for r in app.router.routes() if r.method != "HEAD" and r.resource}
    assert served == {(route.method, route.path) for route in AGENT_ROUTES}


# --- auth and health ------------------------------------------------------------------------------------


async def test_healthz_is_open_and_says_what_isolation_is_in_force(make_client: MakeClient) -> None:
    client = await make_client(sandbox="none")
    resp = await client.get("/healthz", headers={"Authorization": ""})
    assert resp.status == 200
    health = HealthView.model_validate(await resp.json())
    assert "rlimits" in health.isolation and "bwrap" not in health.isolation
    if os.geteuid() == 0:
        assert "uid65534" in health.isolation
    assert health.python


async def test_healthz_in_bwrap_mode(make_client: MakeClient, sandbox_mode: str) -> None:
    client = await make_client(sandbox=sandbox_mode)
    health = HealthView.model_validate(await (await client.get("/healthz")).json())
    assert ("bwrap" in health.isolation) is (sandbox_mode == "bwrap")


@pytest.mark.parametrize(
    "header", [None, "Bearer wrong-token", "Basic dGVzdA==", "Bearer", "Token test-token-0123456789"]
)
async def test_every_v1_route_needs_the_token(client: AgentClient, header: str | None) -> None:
    headers = {"Authorization": header} if header is not None else {"Authorization": ""}
    for method, path in [
        ("POST", "/v1/echo"),
        ("POST", "/v1/fs/read"),
        ("GET", "/v1/tasks/task_x"),
        ("GET", "/v1/artifacts"),
        ("POST", "/v1/run/python"),
    ]:
        resp = await client.request(method, path, json={"message": "hi"}, headers=headers)
        assert resp.status == 401, path
        assert_one_sentence(await resp.json(), "unauthorized")
        assert resp.headers["WWW-Authenticate"] == "Bearer"


async def test_echo_with_the_token(client: AgentClient) -> None:
    assert await post(client, "/v1/echo", {"message": "héllo"}) == {"message": "héllo"}


def test_no_token_refused_on_a_public_address(workspace: Path, shared_venv: Path) -> None:
    settings = make_settings(workspace, shared_venv, token=None, host="0.0.0.0")  # noqa: S104
    with pytest.raises(SandboxUnavailable, match="without a token"):
        create_app(settings)


async def test_no_token_allowed_on_loopback(aiohttp_client: Any, workspace: Path, shared_venv: Path) -> None:
    client = await aiohttp_client(create_app(make_settings(workspace, shared_venv, token=None, host="127.0.0.1")))
    resp = await client.post("/v1/echo", json={"message": "x"})
    assert resp.status == 200


async def test_token_file(aiohttp_client: Any, workspace: Path, shared_venv: Path, tmp_path: Path) -> None:
    (tmp_path / "token").write_text("from-a-file\n")
    settings = make_settings(workspace, shared_venv, token=None, token_file=tmp_path / "token")
    client = await aiohttp_client(create_app(settings))
    assert (await client.post("/v1/echo", json={"message": "x"})).status == 401
    ok = await client.post("/v1/echo", json={"message": "x"}, headers={"Authorization": "Bearer from-a-file"})
    assert ok.status == 200


# --- fs.* ------------------------------------------------------------------------------------------------


async def test_write_then_read_text(client: AgentClient, workspace: Path) -> None:
    written = FsWriteResult.model_validate(await post(client, "/v1/fs/write", {"path": "a/b.txt", "content": "hi ✓"}))
    assert (written.path, written.bytes_written, written.size) == ("a/b.txt", 6, 6)
    assert (workspace / "a" / "b.txt").read_text() == "hi ✓"
    if os.geteuid() == 0:
        assert (workspace / "a" / "b.txt").stat().st_uid == 65534  # the sandboxed code may change it
    got = FsReadResult.model_validate(await post(client, "/v1/fs/read", {"path": "/a/b.txt"}))
    assert (got.content, got.encoding, got.size, got.bytes_read, got.truncated) == ("hi ✓", "utf-8", 6, 6, False)


async def test_binary_round_trip_via_base64(client: AgentClient) -> None:
    blob = bytes(range(256)) * 4
    b64 = base64.b64encode(blob).decode()
    await post(client, "/v1/fs/write", {"path": "bin.dat", "content": b64, "encoding": "base64"})
    got = FsReadResult.model_validate(await post(client, "/v1/fs/read", {"path": "bin.dat"}))
    assert got.encoding == "base64"
    assert base64.b64decode(got.content) == blob


async def test_offset_limit_and_truncation(client: AgentClient) -> None:
    await post(client, "/v1/fs/write", {"path": "n.txt", "content": "0123456789"})
    got = FsReadResult.model_validate(await post(client, "/v1/fs/read", {"path": "n.txt", "offset": 3, "limit": 4}))
    assert (got.content, got.offset, got.bytes_read, got.size, got.truncated) == ("3456", 3, 4, 10, True)
    tail = FsReadResult.model_validate(await post(client, "/v1/fs/read", {"path": "n.txt", "offset": 8}))
    assert (tail.content, tail.truncated) == ("89", False)
    past = FsReadResult.model_validate(await post(client, "/v1/fs/read", {"path": "n.txt", "offset": 50}))
    assert (past.content, past.bytes_read, past.truncated) == ("", 0, False)


async def test_a_slice_that_cuts_a_utf8_character_comes_back_as_base64(client: AgentClient) -> None:
    await post(client, "/v1/fs/write", {"path": "u.txt", "content": "é"})
    got = FsReadResult.model_validate(await post(client, "/v1/fs/read", {"path": "u.txt", "limit": 1}))
    assert got.encoding == "base64" and base64.b64decode(got.content) == "é".encode()[:1]


async def test_append_and_contents_alias(client: AgentClient) -> None:
    await post(client, "/v1/fs/write", {"path": "log.txt", "contents": "one\n"})
    appended = await post(client, "/v1/fs/write", {"path": "log.txt", "contents": "two\n", "append": True})
    assert appended["size"] == 8 and appended["bytes_written"] == 4
    got = await post(client, "/v1/fs/read", {"path": "log.txt"})
    assert got["content"] == "one\ntwo\n"
    replaced = await post(client, "/v1/fs/write", {"path": "log.txt", "content": "three"})
    assert replaced["size"] == 5


async def test_list_sorted_recursive_and_skipping_agent_folders(client: AgentClient, workspace: Path) -> None:
    for path in ("b.txt", "a/z.txt", "a/c/d.txt"):
        await post(client, "/v1/fs/write", {"path": path, "content": "x"})
    (workspace / ".codegen" / "inner").mkdir(parents=True, exist_ok=True)
    (workspace / ".venv").mkdir(exist_ok=True)
    (workspace / ".venv" / "x").write_text("x")
    os.symlink("/etc", workspace / "etc")
    flat = FsListResult.model_validate(await post(client, "/v1/fs/list", {}))
    assert [e.name for e in flat.entries] == [".codegen", ".venv", "a", "b.txt", "etc"]
    deep = FsListResult.model_validate(await post(client, "/v1/fs/list", {"recursive": True}))
    names = [e.name for e in deep.entries]
    assert names == sorted(names)
    assert {"a/c", "a/c/d.txt", "a/z.txt", "b.txt"} <= set(names)
    assert not [n for n in names if n.startswith((".venv/", ".codegen/", "etc/"))]
    types = {e.name: e.type for e in deep.entries}
    assert types["etc"] == "symlink" and types["a"] == "directory" and types["b.txt"] == "file"
    sub = FsListResult.model_validate(await post(client, "/v1/fs/list", {"path": "a"}))
    assert (sub.path, [e.name for e in sub.entries]) == ("a", ["c", "z.txt"])


# --- errors: one sentence, the right code -----------------------------------------------------------------

BAD_ARGUMENTS: list[tuple[str, Any, str]] = [
    ("/v1/run/python", {}, "give exactly one of `code` or `file`"),
    ("/v1/run/python", {"code": "1", "file": "a.py"}, "give exactly one of `code` or `file`"),
    ("/v1/run/python", {"code": "1", "timeout_s": 0}, "`timeout_s` must be greater than 0"),
    ("/v1/run/python", {"code": "1", "timeout_s": 99999}, "`timeout_s` must be less than or equal to 3600"),
    ("/v1/run/python", {"code": "1", "wait_s": -1}, "`wait_s` must be greater than or equal to 0"),
    ("/v1/run/python", {"code": "1", "args": "x"}, "`args` must be a valid list"),
    ("/v1/run/python", {"code": "1", "args": [1]}, "`args[0]` must be a valid string"),
    ("/v1/fs/read", {}, "`path` is required"),
    ("/v1/fs/read", {"path": ""}, "`path` must have at least 1 character"),
    ("/v1/fs/read", {"path": "a", "limit": 0}, "`limit` must be greater than or equal to 1"),
    ("/v1/fs/read", {"path": "a", "offset": -1}, "`offset` must be greater than or equal to 0"),
    ("/v1/fs/read", {"path": "a", "bogus": 1}, "`bogus` is unknown (accepted: `path`, `offset`, `limit`)"),
    ("/v1/fs/read", {"path": "a\x00b"}, "NUL"),
    ("/v1/fs/read", {"path": "x" * 300}, "longer than 255 bytes"),
    ("/v1/fs/write", {"path": "a"}, "`content` is required"),
    ("/v1/fs/write", {"path": "a", "content": "%%%", "encoding": "base64"}, "not valid base64"),
    ("/v1/fs/write", {"path": "a", "content": "x", "encoding": "latin-1"}, "`encoding` must be 'utf-8' or 'base64'"),
    ("/v1/fs/write", {"path": ".codegen/artifacts.json", "content": "x"}, "which the agent manages"),
    ("/v1/fs/list", {"recursive": "maybe"}, "`recursive` must be a valid boolean"),
    ("/v1/pkg/install", {"packages": ""}, "`packages` must have at least 1 character"),
    ("/v1/pkg/install", {"packages": "--index-url x"}, "`--index-url` is not allowed"),
    ("/v1/pkg/install", {"packages": "-e ."}, "`-e` is not allowed"),
    ("/v1/pkg/install", {"packages": "/etc/passwd"}, "`/etc/passwd` is not allowed"),
    ("/v1/pkg/install", {"packages": "https://x"}, "`https://x` is not allowed"),
    ("/v1/pkg/install", {"packages": "six git+https://github.com/x/y"}, "not allowed"),
    ("/v1/pkg/install", {"packages": "six @ file:six.whl"}, "not allowed"),
    ("/v1/pkg/install", {"packages": "six=>1"}, "`six=>1` is not a valid requirement specifier"),
    ("/v1/pkg/install", {"packages": "ün"}, "`ün` is not a valid requirement specifier"),
    ("/v1/echo", {"message": 1}, "`message` must be a valid string"),
]


@pytest.mark.parametrize(("path", "body", "expected"), BAD_ARGUMENTS)
async def test_bad_arguments_give_400_and_one_sentence(
    client: AgentClient, path: str, body: Any, expected: str
) -> None:
    data = await post(client, path, body, status=400)
    assert expected in assert_one_sentence(data, "invalid_argument")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("{not json", "not valid JSON"),
        (b'{"path": "\xff"}', "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('"text"', "must be a JSON object"),
    ],
)
async def test_bodies_that_are_not_json_objects(client: AgentClient, raw: str | bytes, expected: str) -> None:
    resp = await client.post("/v1/fs/read", data=raw, headers={"Content-Type": "application/json"})
    assert resp.status == 400
    assert expected in assert_one_sentence(await resp.json(), "invalid_argument")


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        ("/v1/fs/read", {"path": "../etc/passwd"}, 403, "path_outside_workspace"),
        ("/v1/fs/write", {"path": "../../x", "content": "x"}, 403, "path_outside_workspace"),
        ("/v1/fs/list", {"path": ".."}, 403, "path_outside_workspace"),
        ("/v1/fs/read", {"path": "missing.txt"}, 404, "not_found"),
        ("/v1/fs/list", {"path": "missing"}, 404, "not_found"),
        ("/v1/fs/read", {"path": "."}, 400, "is_a_directory"),
        ("/v1/run/python", {"file": "missing.py"}, 404, "not_found"),
        ("/v1/run/python", {"file": "../x.py"}, 403, "path_outside_workspace"),
    ],
)
async def test_path_errors(client: AgentClient, path: str, body: Any, status: int, code: str) -> None:
    assert_one_sentence(await post(client, path, body, status=status), code)


async def test_unknown_route_and_wrong_method_are_json_errors(client: AgentClient) -> None:
    resp = await client.get("/v1/nope")
    assert resp.status == 404
    assert_one_sentence(await resp.json(), "not_found")
    resp = await client.get("/v1/fs/read")
    assert resp.status == 400
    assert_one_sentence(await resp.json(), "invalid_argument")


async def test_unexpected_exceptions_become_a_generic_500(client: AgentClient, monkeypatch: Any) -> None:
    from codegen_mcp.sandbox_agent.workspace import Workspace

    def boom(*args: Any) -> None:
        raise RuntimeError("secret internals /root/x")

    monkeypatch.setattr(Workspace, "read", boom)
    resp = await client.post("/v1/fs/read", json={"path": "a"})
    assert resp.status == 500
    message = assert_one_sentence(await resp.json(), "internal")
    assert "secret" not in message and "RuntimeError" not in message


async def test_an_oversized_body_is_refused(make_client: MakeClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(app_module, "CLIENT_MAX_SIZE", 1024)
    client = await make_client()
    resp = await client.post("/v1/echo", json={"message": "x" * 2048})
    assert resp.status == 413
    assert "larger than 1024 bytes" in assert_one_sentence(await resp.json(), "too_large")
