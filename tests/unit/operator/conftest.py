from __future__ import annotations

import pytest

from codegen_mcp.operator.settings import OperatorSettings


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch) -> OperatorSettings:
    """Defaults only: no CODEGEN_OPERATOR_* variable of the machine leaks in."""
    import os

    for key in list(os.environ):
        if key.startswith("CODEGEN_OPERATOR_"):
            monkeypatch.delenv(key)
    return OperatorSettings()
