"""Fixtures of the real-node tests: the node (tests/support/node.py) and the product running on it."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.node import Node
from tests.support.node_stack import SandboxStack


@pytest.fixture(scope="module")
def stack(real_node: Node) -> Iterator[SandboxStack]:
    """The CRD, the operator and the coordinator on the host; the node takes Pods only while this lasts."""
    folder = Path(tempfile.mkdtemp(prefix="codegen-mcp-stack-"))
    try:
        with real_node.accepting_pods():
            running = SandboxStack(real_node, folder).start()
            try:
                yield running
            finally:
                print(running.logs())
                running.stop()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
