"""The sandbox agent: a small aiohttp server owning one workspace (imports nothing from mcp, kopf, kubernetes)."""
