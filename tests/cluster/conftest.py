"""Fixtures shared by the chart tests: each module installs its own release (`installed`); this runs its operator."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.chart import Installed, OperatorProcess, running_operator


@pytest.fixture(scope="module")
def operator(installed: Installed, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    """`codegen-mcp operator` on the host for the module's release, as the chart's operator ServiceAccount."""
    with running_operator(installed, tmp_path_factory.mktemp("operator")) as running:
        yield running
