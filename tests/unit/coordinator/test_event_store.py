"""The event stores behind resumable streams: replay after an id, isolation, bounds, ids that replay nothing.

Every scenario runs on the memory log and on a real `redis-server` (skipped, saying how to install it, when the
binary is missing).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import mcp_types as types
import pytest
from mcp.server.streamable_http import EventMessage
from pydantic import ValidationError

from codegen_mcp.api.errors import validation_sentence
from codegen_mcp.coordinator.__main__ import parse_settings
from codegen_mcp.coordinator.event_store import (
    EventLog,
    MemoryEventLog,
    RedisEventLog,
    ResumableSessionManager,
    SessionEvents,
    StreamKey,
)
from codegen_mcp.coordinator.settings import CoordinatorSettings
from tests.support.control_plane import free_port
from tests.support.redis import redis_server  # noqa: F401  (a fixture)


def progress(n: int) -> types.JSONRPCNotification:
    return types.JSONRPCNotification(jsonrpc="2.0", method="notifications/progress", params={"progress": n})


def result(request_id: int, text: str) -> types.JSONRPCResponse:
    return types.JSONRPCResponse(jsonrpc="2.0", id=request_id, result={"content": [{"type": "text", "text": text}]})


class Received:
    def __init__(self) -> None:
        self.events: list[EventMessage] = []

    async def __call__(self, event: EventMessage) -> None:
        self.events.append(event)

    @property
    def messages(self) -> list[Any]:
        return [e.message for e in self.events]


def make_log(kind: str, request: pytest.FixtureRequest, **bounds: Any) -> EventLog:
    per_stream = bounds.get("max_events_per_stream", 100)
    ttl_s = bounds.get("ttl_s", 60.0)
    if kind == "memory":
        return MemoryEventLog(max_events_per_stream=per_stream, max_bytes=bounds.get("max_bytes", 1 << 20), ttl_s=ttl_s)
    server = request.getfixturevalue("redis_server")
    return RedisEventLog(server.url, max_events_per_stream=per_stream, ttl_s=ttl_s)


@pytest.fixture(params=["memory", "redis"])
async def log(request: pytest.FixtureRequest) -> AsyncIterator[EventLog]:
    made = make_log(request.param, request)
    async with made.opened():
        yield made


async def test_replays_what_the_stream_sent_after_an_id(log: EventLog) -> None:
    store = SessionEvents(log)
    priming = await store.store_event("1", None)
    first = await store.store_event("1", progress(1))
    later = [await store.store_event("1", progress(2)), await store.store_event("1", result(1, "done"))]

    got = Received()  # answered: the replay is all the stream still sends
    assert await store.replay_events_after(first, got) is None
    assert got.messages == [progress(2), result(1, "done")]
    assert [e.event_id for e in got.events] == later

    from_start = Received()  # the priming event is a cursor only: nothing to send for it
    assert await store.replay_events_after(priming, from_start) is None
    assert from_start.messages == [progress(1), progress(2), result(1, "done")]


async def test_streams_are_replayed_apart(log: EventLog) -> None:
    store = SessionEvents(log)
    one = await store.store_event("1", progress(1))
    await store.store_event("2", progress(20))
    await store.store_event("1", result(1, "one"))
    await store.store_event("2", result(2, "two"))

    got = Received()
    assert await store.replay_events_after(one, got) is None
    assert got.messages == [result(1, "one")]


async def test_a_session_never_replays_another_sessions_stream_of_the_same_request_id(log: EventLog) -> None:
    alice, bob = SessionEvents(log), SessionEvents(log)
    alice_id = await alice.store_event("1", None)
    bob_id = await bob.store_event("1", None)
    await alice.store_event("1", result(1, "alice's"))
    await bob.store_event("1", result(1, "bob's"))

    mine, theirs = Received(), Received()
    assert await alice.replay_events_after(alice_id, mine) is None
    assert mine.messages == [result(1, "alice's")]
    assert await alice.replay_events_after(bob_id, theirs) is None
    assert theirs.events == []


async def test_only_a_stream_live_here_stays_open_after_its_replay(log: EventLog) -> None:
    here = SessionEvents(log, scope="session")
    elsewhere = SessionEvents(log, scope="session")  # the same session, served by another replica too
    priming = await here.store_event("1", None)
    await here.store_event("1", progress(1))

    assert await here.replay_events_after(priming, Received()) == "1"  # its request runs here: the live tail follows
    got = Received()  # another replica has no live tail to give: the stream ends, and the client polls again
    assert await elsewhere.replay_events_after(priming, got) is None
    assert got.messages == [progress(1)]

    await here.store_event("1", result(1, "done"))
    answered = Received()
    assert await elsewhere.replay_events_after(priming, answered) is None
    assert answered.messages == [progress(1), result(1, "done")]
    assert await here.replay_events_after(priming, Received()) is None


@pytest.mark.parametrize(
    "event_id", ["", "nope", "a.b.c", "a..1", "x.MQ.1", "scope.%%%.1", "scope.MQ.not-a-position", "scope.MQ.unstored"]
)
async def test_ids_that_name_no_kept_stream_replay_nothing(log: EventLog, event_id: str) -> None:
    store = SessionEvents(log, scope="scope")
    await store.store_event("1", result(1, "kept"))
    got = Received()
    assert await store.replay_events_after(event_id, got) is None
    assert got.events == []


@pytest.mark.parametrize("kind", ["memory", "redis"])
async def test_each_stream_keeps_its_newest_events(kind: str, request: pytest.FixtureRequest) -> None:
    log = make_log(kind, request, max_events_per_stream=3)
    async with log.opened():
        store = SessionEvents(log)
        dropped = await store.store_event("1", None)
        for n in range(1, 5):
            await store.store_event("1", progress(n))
        await store.store_event("1", result(1, "done"))

        got = Received()  # the id itself was dropped: the client gets every event still kept, the result last
        assert await store.replay_events_after(dropped, got) is None
        assert got.messages == [progress(3), progress(4), result(1, "done")]


@pytest.mark.parametrize("kind", ["memory", "redis"])
async def test_events_older_than_the_ttl_are_not_replayed(kind: str, request: pytest.FixtureRequest) -> None:
    log = make_log(kind, request, ttl_s=0.2)
    async with log.opened():
        store = SessionEvents(log)
        first = await store.store_event("1", None)
        await store.store_event("1", result(1, "done"))
        await asyncio.sleep(0.4)
        got = Received()
        assert await store.replay_events_after(first, got) is None
        assert got.events == []


async def test_the_memory_log_drops_the_oldest_events_past_its_total_bytes() -> None:
    log = MemoryEventLog(max_events_per_stream=100, max_bytes=1000, ttl_s=60)
    store = SessionEvents(log)
    old = await store.store_event("1", None)
    await store.store_event("1", result(1, "x" * 300))  # about 360 bytes each
    new = await store.store_event("2", None)
    for n in range(3):
        await store.store_event("2", result(2, f"{n}" * 300))
    assert log.bytes <= 1000

    gone, kept = Received(), Received()
    assert await store.replay_events_after(old, gone) is None
    assert gone.events == []
    assert await store.replay_events_after(new, kept) is None
    assert kept.messages == [result(2, "1" * 300), result(2, "2" * 300)]


async def test_the_memory_log_stays_bounded_however_many_events_pass() -> None:
    log = MemoryEventLog(max_events_per_stream=2, max_bytes=1 << 20, ttl_s=60)
    store = SessionEvents(log)
    for n in range(20_000):
        await store.store_event(str(n % 10), progress(n))
    assert log.events == 20
    assert len(log._order) <= 2 * log.events + 1024  # the write order forgets what its streams dropped


async def test_an_unreachable_redis_loses_resumability_not_the_call() -> None:
    log = RedisEventLog(f"redis://127.0.0.1:{free_port()}/0", max_events_per_stream=10, ttl_s=60)
    async with log.opened():
        store = SessionEvents(log)
        event_id = await store.store_event("1", result(1, "sent anyway"))
        assert StreamKey.parse(event_id) == (StreamKey(store.scope, "1"), "unstored")
        got = Received()
        assert await store.replay_events_after(event_id, got) is None
        assert got.events == []


def test_each_session_gets_its_own_view_of_the_log_the_same_on_every_replica() -> None:
    log = MemoryEventLog(max_events_per_stream=10, max_bytes=1 << 20, ttl_s=60)
    manager = ResumableSessionManager(app=object(), events=log)
    replica = ResumableSessionManager(app=object(), events=log)
    views = [
        m._transport(sid)._event_store for m, sid in ((manager, "a" * 32), (manager, "b" * 32), (replica, "a" * 32))
    ]
    first, second, elsewhere = views
    assert isinstance(first, SessionEvents) and isinstance(second, SessionEvents)
    assert isinstance(elsewhere, SessionEvents)
    assert first.events is second.events is log
    assert first.scope != second.scope
    assert first.scope == elsewhere.scope  # another replica serving the session reads the same streams
    assert "a" * 32 not in first.scope
    with pytest.raises(TypeError, match="pass no event_store"):
        manager.event_store = SessionEvents(log)


def test_a_request_id_of_any_characters_makes_a_usable_event_id() -> None:
    stream = StreamKey("scope", 'a.b\nc:"d"')
    event_id = stream.event_id("7")
    assert "\n" not in event_id and event_id.count(".") == 2
    assert StreamKey.parse(event_id) == (stream, "7")


def test_the_redis_store_needs_a_url_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CODEGEN_REDIS_URL", raising=False)
    with pytest.raises(ValidationError) as err:
        CoordinatorSettings(event_store="redis")
    assert validation_sentence(err.value) == "event_store redis needs redis_url (CODEGEN_REDIS_URL or --redis-url)"


def test_flags_choose_the_store_and_the_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    settings, _ = parse_settings(
        ["--event-store", "redis", "--redis-url", "redis://r:6379/1", "--stream-retry-ms", "250"]
    )
    assert settings.event_store == "redis" and settings.stream_retry_ms == 250
    assert settings.redis_url is not None and settings.redis_url.get_secret_value() == "redis://r:6379/1"
    monkeypatch.setenv("CODEGEN_EVENT_STORE", "memory")
    assert parse_settings([])[0].event_store == "memory"
