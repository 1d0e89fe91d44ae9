"""Any replica serves any session: what an MCP session is, kept where every coordinator replica can read it.

The SDK keeps a streamable-HTTP session (its id, the negotiated protocol version, the client's capabilities)
in the memory of the process that answered `initialize`, and answers any other process's request for it with
404. With `shared_sessions` on, each session also gets a `SessionRecord` — written when `initialize` is
answered, updated when the client sets its log level, refreshed while it is used, removed when it ends — in a
store every replica reads: files in the state folder (the local backend; replicas on one host) or Redis (the
kubernetes backend, beside the event store). A replica that gets a request for a session it does not know
reads the record and serves the session as already initialized (`event_store.ResumableSessionManager`). The
sandbox behind the session is found by the backend from the session id, as after a restart.

Only the credential that opened a session continues it: the record keeps a digest of its `Authorization`
header, and a request with another one is answered as if the session did not exist (404), as the SDK does.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from mcp_types import LoggingLevel

if TYPE_CHECKING:
    from codegen_mcp.coordinator.settings import CoordinatorSettings

log = logging.getLogger(__name__)

# The SDK's session ids are uuid4().hex; anything else is never looked up (no path or key is built from it).
SESSION_ID: Final = re.compile(r"^[0-9a-f]{32}$")
REDIS_KEY_PREFIX: Final = "codegen-mcp:session:"
TOUCH_EVERY_S: Final = 10.0  # a used session's record is refreshed at most this often
TOUCHED_PRUNE_MIN: Final = 1024


def owner_digest(authorization: str | None) -> str:
    """Who may continue a session: a digest of the `Authorization` header that opened it."""
    return hashlib.sha256((authorization or "").encode()).hexdigest()


def same_owner(owner: str, authorization: str | None) -> bool:
    """Whether `authorization` is the credential whose `owner_digest` is `owner` (in constant time)."""
    return hmac.compare_digest(owner.encode(), owner_digest(authorization).encode())


@dataclass(frozen=True)
class SessionRecord:
    session_id: str
    owner: str  # `owner_digest` of the credential that opened it
    protocol_version: str  # the version `initialize` negotiated
    client: dict[str, Any]  # the client's `initialize` params (capabilities, clientInfo), as it sent them
    log_level: LoggingLevel | None = None  # what the client set with logging/setLevel, if it did

    def dumps(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @staticmethod
    def loads(data: bytes) -> SessionRecord | None:
        try:
            fields = json.loads(data)
            return SessionRecord(**fields) if isinstance(fields, dict) else None
        except (ValueError, TypeError):
            return None


class SessionRecords(ABC):
    """Where records are kept. Never raises: a record that cannot be kept makes its session this replica's only.

    That a tool call of a session was served (on any replica: it is no handshake any more) is a mark of its
    own beside the record, never a field rewritten in it: a replica setting the session's log level at the same
    time would write the record back without it.
    """

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s  # a record unused this long is dropped (the session's sandbox idled out by then)
        # When this replica last refreshed each session's record. A session that ends on another replica is
        # never forgotten here: entries older than `ttl_s` go whenever the map doubled since it was last pruned.
        self._touched: dict[str, float] = {}
        self._prune_touched_at = TOUCHED_PRUNE_MIN

    @abstractmethod
    async def save(self, record: SessionRecord) -> None: ...

    @abstractmethod
    async def _read(self, session_id: str) -> bytes | None: ...

    @abstractmethod
    async def _delete(self, session_id: str) -> None: ...

    @abstractmethod
    async def _refresh(self, session_id: str) -> None:
        """Keep the record, and its working mark, from expiring."""

    @abstractmethod
    async def _mark_working(self, session_id: str) -> None: ...

    @abstractmethod
    async def _marked_working(self, session_id: str) -> bool: ...

    async def load(self, session_id: str) -> SessionRecord | None:
        if not SESSION_ID.match(session_id):
            return None
        data = await self._read(session_id)
        record = SessionRecord.loads(data) if data is not None else None
        return record if record is not None and record.session_id == session_id else None

    async def set_log_level(self, session_id: str, level: LoggingLevel) -> None:
        record = await self.load(session_id)
        if record is not None:
            await self.save(replace(record, log_level=level))

    async def touch(self, session_id: str) -> None:
        """A tool call of the session: its record stays (refreshed at most every TOUCH_EVERY_S), and the session
        is marked working (the first time this replica serves one), so that no replica ends it as a handshake."""
        now = time.monotonic()
        last = self._touched.get(session_id)
        if last is not None and now - last < TOUCH_EVERY_S:
            return
        self._touched[session_id] = now
        if len(self._touched) >= self._prune_touched_at:
            self._touched = {sid: at for sid, at in self._touched.items() if now - at < self.ttl_s}
            self._prune_touched_at = max(TOUCHED_PRUNE_MIN, 2 * len(self._touched))
        if last is None and SESSION_ID.match(session_id):
            await self._mark_working(session_id)
        await self._refresh(session_id)

    async def negotiated(self, session_id: str) -> str | None:
        """The protocol version the session negotiated, if it has a record."""
        record = await self.load(session_id)
        return record.protocol_version if record is not None else None

    async def working(self, session_id: str) -> bool:
        """Whether a tool call of the session was served, here or on another replica."""
        return await self.load(session_id) is not None and await self._marked_working(session_id)

    async def forget(self, session_id: str) -> None:
        self._touched.pop(session_id, None)
        if SESSION_ID.match(session_id):
            await self._delete(session_id)

    @contextlib.asynccontextmanager
    async def opened(self) -> AsyncIterator[None]:
        """For the app's lifetime: connect, and drop records nobody used for `ttl_s`."""
        yield


class FileSessionRecords(SessionRecords):
    """One JSON file per session in a folder of the state folder, replaced atomically (write, then rename).

    A record's modification time is when it was last used; every replica drops the ones older than `ttl_s`.
    """

    def __init__(self, folder: Path, ttl_s: float) -> None:
        super().__init__(ttl_s)
        self.folder = folder

    def _path(self, session_id: str) -> Path:
        return self.folder / f"{session_id}.json"

    def _mark(self, session_id: str) -> Path:
        return self.folder / f"{session_id}.working"

    async def save(self, record: SessionRecord) -> None:
        tmp = self.folder / f".{record.session_id}.{secrets.token_hex(4)}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(record.dumps())
            tmp.replace(self._path(record.session_id))
        except OSError as err:
            tmp.unlink(missing_ok=True)
            log.warning("MCP session %s is not shared with other replicas: %s", record.session_id, err)

    async def _read(self, session_id: str) -> bytes | None:
        try:
            return self._path(session_id).read_bytes()
        except OSError:
            return None

    async def _delete(self, session_id: str) -> None:
        self._path(session_id).unlink(missing_ok=True)
        self._mark(session_id).unlink(missing_ok=True)

    async def _refresh(self, session_id: str) -> None:
        for path in (self._path(session_id), self._mark(session_id)):
            with contextlib.suppress(OSError):
                os.utime(path)

    async def _mark_working(self, session_id: str) -> None:
        with contextlib.suppress(OSError):
            os.close(os.open(self._mark(session_id), os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600))

    async def _marked_working(self, session_id: str) -> bool:
        return self._mark(session_id).exists()

    def prune(self) -> int:
        """Drop the records unused for `ttl_s` (and temporary files a killed writer left); how many."""
        cutoff = time.time() - self.ttl_s
        dropped = 0
        for path in self.folder.iterdir():
            with contextlib.suppress(OSError):
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    dropped += 1
        return dropped

    @contextlib.asynccontextmanager
    async def opened(self) -> AsyncIterator[None]:
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.folder, 0o700)  # also a folder made before (records tell whose credential opened a session)
        pruner = asyncio.create_task(self._prune_every(max(1.0, min(600.0, self.ttl_s / 4))), name="record-pruner")
        try:
            yield
        finally:
            pruner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pruner

    async def _prune_every(self, interval_s: float) -> None:
        while True:
            dropped = await asyncio.to_thread(self.prune)
            if dropped:
                log.info("dropped %d MCP session records unused for %.0f s", dropped, self.ttl_s)
            await asyncio.sleep(interval_s)


class RedisSessionRecords(SessionRecords):
    """One Redis string per session, expiring `ttl_s` after it was last used."""

    def __init__(self, url: str, ttl_s: float, prefix: str = REDIS_KEY_PREFIX) -> None:
        super().__init__(ttl_s)
        from redis.asyncio import Redis  # the `redis` extra

        self._redis = Redis.from_url(url, socket_connect_timeout=2.0, socket_timeout=5.0)
        self.prefix = prefix
        self._ttl_ms = max(1, int(ttl_s * 1000))

    async def save(self, record: SessionRecord) -> None:
        from redis.exceptions import RedisError

        try:
            await self._redis.set(self.prefix + record.session_id, record.dumps(), px=self._ttl_ms)
        except RedisError as err:
            log.warning("MCP session %s is not shared with other replicas: %s", record.session_id, err)

    async def _read(self, session_id: str) -> bytes | None:
        from redis.exceptions import RedisError

        try:
            data = await self._redis.get(self.prefix + session_id)
        except RedisError as err:
            log.warning("could not read MCP session %s from Redis: %s", session_id, err)
            return None
        return data.encode() if isinstance(data, str) else data

    def _mark(self, session_id: str) -> str:
        return f"{self.prefix}{session_id}:working"

    async def _delete(self, session_id: str) -> None:
        from redis.exceptions import RedisError

        with contextlib.suppress(RedisError):
            await self._redis.delete(self.prefix + session_id, self._mark(session_id))

    async def _refresh(self, session_id: str) -> None:
        from redis.exceptions import RedisError

        with contextlib.suppress(RedisError):
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.pexpire(self.prefix + session_id, self._ttl_ms)
                pipe.pexpire(self._mark(session_id), self._ttl_ms)
                await pipe.execute()

    async def _mark_working(self, session_id: str) -> None:
        from redis.exceptions import RedisError

        with contextlib.suppress(RedisError):
            await self._redis.set(self._mark(session_id), b"1", px=self._ttl_ms)

    async def _marked_working(self, session_id: str) -> bool:
        from redis.exceptions import RedisError

        try:
            return bool(await self._redis.exists(self._mark(session_id)))
        except RedisError:
            return False

    @contextlib.asynccontextmanager
    async def opened(self) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await self._redis.aclose()


def create_session_records(settings: CoordinatorSettings) -> SessionRecords | None:
    """The store `shared_sessions` uses, or None when sessions stay in this process."""
    if not settings.shared_sessions:
        return None
    ttl_s = max(settings.session_idle_timeout_s, settings.handshake_idle_timeout_s)
    if settings.backend == "kubernetes":
        assert settings.redis_url is not None  # the settings say so when it is missing
        return RedisSessionRecords(settings.redis_url.get_secret_value(), ttl_s)
    return FileSessionRecords(settings.state_dir.resolve() / "mcp-sessions", ttl_s)
