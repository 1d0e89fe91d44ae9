"""Moved to `codegen_mcp.api.agent_settings` (shared with the operator and the coordinator); kept while imports move."""

from codegen_mcp.api.agent_settings import AgentSettings, GiB, MiB

__all__ = ["AgentSettings", "GiB", "MiB"]
