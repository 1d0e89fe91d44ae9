"""The operator's log lines and spans name the CodegenSession they are about.

`step` wraps a reconcile step (a `SessionReconciler` method): its lines carry the session (`api.logs`) and,
when tracing is on, it is a span `reconcile <step>` with the session's namespace and name. `name_kopf_objects`
gives kopf's own per-object lines (handler started, succeeded, retried) the same session field, and names the
object they are about (the `[namespace/name]` kopf's text lines begin with).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, ParamSpec, TypeVar

from codegen_mcp.api import session as api
from codegen_mcp.api import tracing
from codegen_mcp.api.logs import session_scope

P = ParamSpec("P")
R = TypeVar("R")
S = TypeVar("S")


def _session_of(args: tuple[Any, ...]) -> tuple[str | None, str | None]:
    """(namespace, name) of the CodegenSession a step works on, from its arguments: a session body, a
    `SessionRef`, or `namespace, name` first."""
    if len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
        return args[0], args[1]
    for arg in args:
        if isinstance(arg, dict) and arg.get("kind") == api.KIND:
            meta = arg.get("metadata") or {}
            return meta.get("namespace"), meta.get("name")
        if getattr(arg, "kind", None) == api.KIND and isinstance(getattr(arg, "name", None), str):
            return arg.namespace, arg.name
    return None, None


def step(
    func: Callable[Concatenate[S, P], Coroutine[Any, Any, R]],
) -> Callable[Concatenate[S, P], Coroutine[Any, Any, R]]:
    """Run the reconcile step `func` in its session's log scope and span."""
    name = func.__name__.lstrip("_")

    @functools.wraps(func)
    async def traced(self: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
        namespace, session = _session_of(args)
        attributes = {"k8s.namespace.name": namespace, "codegen.session": session}
        with session_scope(session), tracing.span(f"reconcile {name}", attributes):
            return await func(self, *args, **kwargs)

    return traced


def name_kopf_objects(record: logging.LogRecord) -> bool:
    """A logging filter: kopf's line about an object names it (`object`: namespace/name), and a CodegenSession
    as `session` too; every line passes."""
    ref = getattr(record, "k8s_ref", None)
    if isinstance(ref, dict):
        namespace, name = ref.get("namespace"), ref.get("name")
        record.object = f"{namespace}/{name}" if namespace else name
        if ref.get("kind") == api.KIND and not getattr(record, "session", None):
            record.session = name
    return True
