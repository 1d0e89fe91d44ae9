"""Session records (shared_sessions): kept whole, found only by their id, dropped when unused; the log level a
client set comes with its session to another replica."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx2 as httpx
import pytest
from mcp.server import Server
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp

from codegen_mcp.coordinator.__main__ import parse_settings
from codegen_mcp.coordinator.event_store import MemoryEventLog, ResumableSessionManager
from codegen_mcp.coordinator.mcp_sessions import StreamableSessions
from codegen_mcp.coordinator.sessions import Handshakes
from codegen_mcp.coordinator.settings import CoordinatorSettings
from codegen_mcp.coordinator.shared_sessions import (
    FileSessionRecords,
    RedisSessionRecords,
    SessionRecord,
    SessionRecords,
    create_session_records,
    owner_digest,
)
from tests.support.redis import redis_server  # noqa: F401  (a fixture)
from tests.support.waiting import eventually

SESSION = "0123456789abcdef0123456789abcdef"


def record(**changes: object) -> SessionRecord:
    fields: dict[str, object] = {
        "session_id": SESSION,
        "owner": owner_digest("Bearer t"),
        "protocol_version": "2025-11-25",
        "client": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "c", "version": "1"}},
    }
    return SessionRecord(**{**fields, **changes})  # type: ignore[arg-type]


@pytest.fixture(params=["files", "redis"])
async def records(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SessionRecords]:
    made: SessionRecords
    if request.param == "files":
        made = FileSessionRecords(tmp_path / "records", ttl_s=60)
    else:
        made = RedisSessionRecords(request.getfixturevalue("redis_server").url, ttl_s=60)
    async with made.opened():
        yield made


async def test_a_saved_record_is_read_back_whole_and_forgotten(records: SessionRecords) -> None:
    await records.save(record())
    assert await records.load(SESSION) == record()
    await records.set_log_level(SESSION, "error")
    assert (await records.load(SESSION)) == record(log_level="error")
    assert not await records.working(SESSION)
    await records.touch(SESSION)  # the first tool call this replica serves
    assert (await records.load(SESSION)) == record(log_level="error")
    assert await records.working(SESSION)
    await records.forget(SESSION)
    assert await records.load(SESSION) is None
    if isinstance(records, FileSessionRecords):
        assert list(records.folder.iterdir()) == []  # no temporary file left either


@pytest.mark.parametrize("session_id", ["../../etc/passwd", "ABCDEF0123456789ABCDEF0123456789", "", "0" * 33])
async def test_an_id_the_sdk_never_makes_is_never_looked_up(tmp_path: Path, session_id: str) -> None:
    assert await FileSessionRecords(tmp_path, ttl_s=60).load(session_id) is None


async def test_a_damaged_or_misfiled_record_is_no_session(tmp_path: Path) -> None:
    records = FileSessionRecords(tmp_path, ttl_s=60)
    (tmp_path / f"{SESSION}.json").write_text("{not json")
    assert await records.load(SESSION) is None
    (tmp_path / f"{SESSION}.json").write_bytes(record(session_id="f" * 32).dumps())
    assert await records.load(SESSION) is None


async def test_records_unused_for_their_ttl_are_dropped_and_used_ones_kept(tmp_path: Path) -> None:
    records = FileSessionRecords(tmp_path, ttl_s=60)
    await records.save(record())
    await records.save(record(session_id="f" * 32))
    long_ago = time.time() - 120
    for path in tmp_path.iterdir():
        os.utime(path, (long_ago, long_ago))
    await records.touch(SESSION)  # a call on the session
    assert records.prune() == 1
    assert await records.load(SESSION) is not None
    assert await records.load("f" * 32) is None


async def test_the_log_level_a_client_set_reaches_the_replica_that_adopts_its_session(tmp_path: Path) -> None:
    records = FileSessionRecords(tmp_path, ttl_s=60)
    await records.save(record(log_level="warning"))
    elsewhere = StreamableSessions(records)
    loaded = await records.load(SESSION)
    assert loaded is not None
    elsewhere.adopt(loaded)
    assert elsewhere._levels[SESSION] == "warning"
    elsewhere.forget(SESSION)
    await asyncio.sleep(0.05)  # the record is removed beside the request
    assert await records.load(SESSION) is None


def test_records_are_kept_only_with_shared_sessions_and_in_redis_on_kubernetes(tmp_path: Path) -> None:
    assert create_session_records(CoordinatorSettings(state_dir=tmp_path)) is None
    local = create_session_records(CoordinatorSettings(state_dir=tmp_path, shared_sessions=True))
    assert isinstance(local, FileSessionRecords) and local.folder == tmp_path.resolve() / "mcp-sessions"
    with pytest.raises(ValueError, match="keeps MCP sessions in Redis: set redis_url"):
        CoordinatorSettings(backend="kubernetes", shared_sessions=True)


def test_the_flag_turns_sharing_on() -> None:
    assert parse_settings(["--shared-sessions"])[0].shared_sessions is True
    assert parse_settings([])[0].shared_sessions is False


async def test_a_handshake_working_on_another_replica_is_let_go_here_not_ended(tmp_path: Path) -> None:
    records = FileSessionRecords(tmp_path, ttl_s=60)
    idle = "f" * 32
    await records.save(record())
    await records.save(record(session_id=idle))
    await records.touch(SESSION)  # another replica served one of its tool calls
    ended: list[str] = []

    def end(session_id: str) -> Callable[[], Awaitable[None]]:
        async def ending() -> None:
            ended.append(session_id)

        return ending

    handshakes = Handshakes(per_client=4, total=4, idle_timeout_s=0.2, records=records)
    handshakes.start()
    try:
        for session_id in (SESSION, idle):
            handshakes.opened(session_id, "client", end(session_id))
        await eventually(lambda: len(handshakes) == 0, what="both handshakes to idle out here")
    finally:
        await handshakes.aclose()
    assert ended == [idle]


INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": record().client}
JSON_HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


Ask = Callable[..., Awaitable[int]]  # (replica, authorization or None, method="POST") -> HTTP status


@contextlib.asynccontextmanager
async def a_session_on_two_replicas(tmp_path: Path) -> AsyncIterator[Ask]:
    """Two replicas on one records folder, and a session opened on the first with `Bearer A`: how a ping (POST)
    or DELETE of it is answered by a replica ("opener" or "adopter") for an `Authorization` header (or none)."""
    records = FileSessionRecords(tmp_path, ttl_s=60)
    events = MemoryEventLog(max_events_per_stream=10, max_bytes=1 << 20, ttl_s=60)
    managers = {
        name: ResumableSessionManager(app=Server("t"), events=events, records=records, json_response=True)
        for name in ("opener", "adopter")
    }
    async with managers["opener"].run(), managers["adopter"].run(), contextlib.AsyncExitStack() as clients:
        http = {
            name: await clients.enter_async_context(
                httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=StreamableHTTPASGIApp(manager), raise_app_exceptions=False),
                    base_url="http://c",
                )
            )
            for name, manager in managers.items()
        }
        opened = await http["opener"].post(
            "/mcp", json=INITIALIZE, headers={**JSON_HEADERS, "authorization": "Bearer A"}
        )
        session = {
            **JSON_HEADERS,
            "mcp-session-id": opened.headers["mcp-session-id"],
            "mcp-protocol-version": "2025-11-25",
        }

        request_ids = itertools.count(2)

        async def ask(replica: str, authorization: str | None, method: str = "POST") -> int:
            request = {"jsonrpc": "2.0", "id": next(request_ids), "method": "ping"}
            credential = {"authorization": authorization} if authorization is not None else {}
            response = await http[replica].request(
                method, "/mcp", json=request if method == "POST" else None, headers={**session, **credential}
            )
            return response.status_code

        yield ask


async def test_only_the_credential_that_opened_a_session_continues_it_on_any_replica(tmp_path: Path) -> None:
    async with a_session_on_two_replicas(tmp_path) as ask:
        assert await ask("adopter", "Bearer B") == 404  # not adopted for another credential
        assert await ask("adopter", "Bearer A") == 200  # adopted
        assert await ask("adopter", "Bearer B") == 404  # and once adopted, still its credential's only
        assert await ask("opener", "Bearer B") == 404  # nor on the replica that opened it
        assert await ask("opener", "Bearer A") == 200


async def test_requests_at_once_on_a_replica_new_to_the_session_are_all_served(tmp_path: Path) -> None:
    async with a_session_on_two_replicas(tmp_path) as ask:
        assert await asyncio.gather(*(ask("adopter", "Bearer A") for _ in range(3))) == [200, 200, 200]


async def test_records_are_kept_in_a_folder_only_the_coordinator_reads(tmp_path: Path) -> None:
    folder = tmp_path / "records"
    folder.mkdir(mode=0o755)  # made before, e.g. by hand
    records = FileSessionRecords(folder, ttl_s=60)
    async with records.opened():
        await records.save(record())
    assert folder.stat().st_mode & 0o777 == 0o700
    assert (folder / f"{SESSION}.json").stat().st_mode & 0o777 == 0o600


async def test_what_a_replica_keeps_of_sessions_that_ended_elsewhere_stays_bounded(tmp_path: Path) -> None:
    records = FileSessionRecords(tmp_path, ttl_s=60)
    long_ago = time.monotonic() - 3600
    for n in range(5000):  # sessions this replica served once, that then ended on another replica
        records._touched[f"{n:032x}"] = long_ago
    await records.touch(SESSION)
    assert list(records._touched) == [SESSION]


async def test_a_log_level_set_on_one_replica_while_another_serves_a_first_call_loses_neither(
    records: SessionRecords, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = FileSessionRecords(records.folder, ttl_s=60) if isinstance(records, FileSessionRecords) else records
    await records.save(record())
    save = records.save

    async def the_other_replica_serves_a_call_meanwhile(saved: SessionRecord) -> None:
        await elsewhere.touch(SESSION)  # between this replica's read of the record and its write
        await save(saved)

    monkeypatch.setattr(records, "save", the_other_replica_serves_a_call_meanwhile)
    await records.set_log_level(SESSION, "debug")
    assert await records.working(SESSION) and await elsewhere.working(SESSION)
    assert await elsewhere.load(SESSION) == record(log_level="debug")


async def test_the_coordinator_still_ends_a_handshake_it_opened(tmp_path: Path) -> None:
    # `HandshakeTracker.end_session`: a DELETE of the coordinator's own, sent behind the bearer-token check, has no
    # `Authorization` (one from outside always has, when tokens are configured).
    async with a_session_on_two_replicas(tmp_path) as ask:
        assert await ask("opener", "Bearer B", "DELETE") == 404
        assert await ask("opener", None, "DELETE") == 200  # the SDK ended it
