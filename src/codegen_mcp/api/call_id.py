"""One id per tool call, shared by every component that handles the call.

The coordinator opens a call with `call_scope()`; its logs, its audit event, its trace span and the request it
sends to the agent (header `CALL_ID_HEADER`) all carry the same id, so one grep finds the call everywhere.
The id lives in a context variable: asyncio tasks started during the call inherit it, except those started
with `detached_task`, which outlive the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
from collections.abc import Coroutine, Iterator
from contextvars import Context, ContextVar
from typing import Any, Final, TypeVar

CALL_ID_HEADER: Final = "X-Codegen-Call-Id"
# What an id sent by another component may look like (anything else is replaced, never logged raw).
_VALID: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")

_current: ContextVar[str | None] = ContextVar("codegen_call_id", default=None)
_T = TypeVar("_T")


def current_call_id() -> str | None:
    """The id of the call being handled here, or None outside any call."""
    return _current.get()


def valid_call_id(value: str | None) -> str | None:
    """`value` when it is a well-formed call id, else None (a header from outside is not trusted blindly)."""
    return value if value is not None and _VALID.fullmatch(value) else None


@contextlib.contextmanager
def call_scope(call_id: str | None = None) -> Iterator[str]:
    """Handle one call under `call_id` (a fresh one when None or malformed); yields the id in effect."""
    effective = valid_call_id(call_id) or secrets.token_hex(8)
    token = _current.set(effective)
    try:
        yield effective
    finally:
        _current.reset(token)


def join_call(call_id: str) -> None:
    """Make the rest of the enclosing `call_scope` part of the call `call_id` (a request about a task that names
    no call of its own joins the call that started the task); the previous id is back when that scope ends."""
    _current.set(call_id)


def detached_task(coro: Coroutine[Any, Any, _T], *, name: str) -> asyncio.Task[_T]:
    """A task that outlives the call starting it (an agent's watcher, a pool's discard): run in an empty context,
    so its later log lines name no call, session or trace (a copy of the caller's would name that call)."""
    return asyncio.create_task(coro, name=name, context=Context())
