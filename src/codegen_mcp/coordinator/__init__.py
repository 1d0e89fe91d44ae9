"""The MCP coordinator: one sandbox per MCP session, every tool call proxied to that sandbox's agent."""
