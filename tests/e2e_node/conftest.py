"""Fixtures of the real-node tests: the node (tests/support/node.py) and the product running on it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.node import Node
from tests.support.node_stack import SandboxStack, running_stack


@pytest.fixture(scope="module")
def stack(real_node: Node) -> Iterator[SandboxStack]:
    """The chart installed for the node, its operator and coordinator on the host with the chart's identities."""
    with running_stack(real_node) as running:
        yield running
