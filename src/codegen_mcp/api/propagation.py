"""What a request from one component to another carries of the call it serves: the call id, the session and
the trace context, so the receiver's log lines and spans join the sender's."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

from codegen_mcp.api import tracing
from codegen_mcp.api.call_id import CALL_ID_HEADER, call_scope, current_call_id
from codegen_mcp.api.logs import SESSION_HEADER, current_session, session_scope, valid_session


def outgoing_headers() -> dict[str, str]:
    """Headers naming the current call, its session and its span (none of them outside a call)."""
    headers: dict[str, str] = {}
    call_id, session = current_call_id(), current_session()
    if call_id is not None:
        headers[CALL_ID_HEADER] = call_id
    if session is not None:
        headers[SESSION_HEADER] = session
    tracing.inject(headers)
    return headers


@contextlib.contextmanager
def incoming(
    headers: Mapping[str, str], span_name: str, attributes: Mapping[str, tracing.AttributeValue | None]
) -> Iterator[tracing.Span]:
    """Handle a request under the call, session and trace its headers name (a fresh call id when none, or a
    malformed one, is given); yields the server span of the request."""
    with (
        call_scope(headers.get(CALL_ID_HEADER)) as call_id,
        session_scope(valid_session(headers.get(SESSION_HEADER))),
        tracing.span(
            span_name,
            {**attributes, "codegen.call_id": call_id, "codegen.session": current_session()},
            kind="server",
            parent=headers,
        ) as span,
    ):
        yield span
