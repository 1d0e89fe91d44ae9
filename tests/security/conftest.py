"""Fixtures the security suite shares with the agent's unit tests (one implementation each)."""

from tests.unit.sandbox_agent.conftest import base_dir, workspace  # noqa: F401 - fixtures
