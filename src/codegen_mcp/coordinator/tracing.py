"""A tool call as the coordinator's logs and traces see it: one call id (`api.call_id`), one session, one span.

The span `tools/call <tool>` is a child of the MCP SDK's own request span, when the SDK makes one, and the parent
of the agent's spans for the requests the call sends (their headers carry its trace context).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from codegen_mcp.api import tracing
from codegen_mcp.api.call_id import call_scope
from codegen_mcp.api.logs import current_session, session_scope

log = logging.getLogger(__name__)


@dataclass
class ToolCall:
    """What the call's span and log line say once it ended: `outcome` is ok, error or cancelled."""

    tool: str
    call_id: str
    outcome: str = "ok"
    started: float = field(default_factory=time.monotonic)

    def answered(self, is_error: bool) -> None:
        self.outcome = "error" if is_error else "ok"


@contextlib.contextmanager
def tool_call(tool: str) -> Iterator[ToolCall]:
    """Handle one tool call under a fresh call id, in a session scope the call names with `bind_session`."""
    with call_scope() as call_id, session_scope(), tracing.span(f"tools/call {tool}", {"codegen.tool": tool}) as span:
        call = ToolCall(tool, call_id)
        span.set("codegen.call_id", call_id)
        try:
            yield call
        except asyncio.CancelledError:
            call.outcome = "cancelled"
            raise
        except BaseException:
            call.outcome = "error"
            raise
        finally:
            span.set("codegen.session", current_session())
            span.set("codegen.outcome", call.outcome)
            if call.outcome == "error":
                span.failed(f"{tool} failed")
            log.debug("tools/call %s: %s in %.3f s", tool, call.outcome, time.monotonic() - call.started)
