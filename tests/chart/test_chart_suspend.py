"""sessions.suspendAfterSeconds reaches both components: the coordinator suspends its idle sessions (and writes
the field into those it creates), the operator suspends any other session that does not say."""

from __future__ import annotations

from typing import Any

from .conftest import Renderer, plain_env
from .test_chart_render import coordinator, operator


def test_suspension_reaches_the_coordinator_and_the_operator(render: Renderer) -> None:
    op, co = plain_env(operator(render())), plain_env(coordinator(render()))
    assert co["CODEGEN_SUSPEND_AFTER_S"] == op["CODEGEN_OPERATOR_DEFAULT_SUSPEND_AFTER_SECONDS"] == "300"
    shorter: dict[str, Any] = {"sessions": {"suspendAfterSeconds": 60}}
    assert plain_env(operator(render(shorter)))["CODEGEN_OPERATOR_DEFAULT_SUSPEND_AFTER_SECONDS"] == "60"
    off: dict[str, Any] = {"sessions": {"suspendAfterSeconds": 0}}
    assert plain_env(coordinator(render(off)))["CODEGEN_SUSPEND_AFTER_S"] == "0"
    assert "CODEGEN_OPERATOR_DEFAULT_SUSPEND_AFTER_SECONDS" not in plain_env(operator(render(off)))
