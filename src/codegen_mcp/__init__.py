"""CodeGen-MCP: isolated per-session Python workspaces for LLM clients over the Model Context Protocol."""

__version__ = "0.1.0"
