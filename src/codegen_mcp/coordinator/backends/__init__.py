"""Where sandboxes come from. Tool code sees only `Backend` and `Sandbox`, never which backend it runs on."""

from __future__ import annotations

from codegen_mcp.coordinator.backends.base import Backend, Sandbox
from codegen_mcp.coordinator.settings import CoordinatorSettings


def create_backend(settings: CoordinatorSettings) -> Backend:
    if settings.backend == "local":
        from codegen_mcp.coordinator.backends.local import LocalBackend

        return LocalBackend(settings)
    if settings.backend == "kubernetes":
        from codegen_mcp.coordinator.backends.kubernetes import KubernetesBackend

        return KubernetesBackend(settings)
    raise ValueError(f"unknown backend {settings.backend!r}")


__all__ = ["Backend", "Sandbox", "create_backend"]
