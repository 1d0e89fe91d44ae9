"""The backend interface: open a sandbox for an MCP session, keep it alive, close it."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from codegen_mcp.coordinator.agent_client import AgentClient

NAMED_WORKSPACE_PREFIX = "ws-"


def is_named_workspace(session_key: str) -> bool:
    """Keys of workspaces a client named (they outlive MCP sessions), as opposed to per-session ones."""
    return session_key.startswith(NAMED_WORKSPACE_PREFIX)


@dataclass(eq=False)
class Sandbox:
    """A running agent serving one session's workspace."""

    sandbox_id: str
    client: AgentClient
    where: str  # human-readable location: a workspace folder, or namespace/name of a resource
    alive: bool = True
    exit_reason: str | None = None  # why it stopped, once it did
    meta: dict[str, str] = field(default_factory=dict)


class Backend(ABC):
    name: str
    suspends = False  # whether `suspend` works: only then are idle sessions suspended rather than kept whole
    # `shared_sessions`: other coordinators serve the same sessions, so a stopping one only lets go of its
    # sandboxes, a session's idleness counts its calls on all of them, and one it never served may end here.
    shared = False

    @abstractmethod
    async def start(self) -> None:
        """Prepare the backend (probe isolation, connect to the cluster)."""

    @abstractmethod
    async def aclose(self) -> None:
        """Stop every sandbox this process started and release resources."""

    @abstractmethod
    async def open(self, session_key: str) -> Sandbox:
        """Create (or find again) the sandbox of an MCP session and return it once its agent is ready."""

    @abstractmethod
    async def revive(self, sandbox: Sandbox) -> Sandbox:
        """Return a working sandbox on the same workspace after `sandbox` stopped (restart or reconnect)."""

    @abstractmethod
    async def close(self, sandbox: Sandbox) -> None:
        """End a session's sandbox (its workspace is kept or removed as configured)."""

    async def suspend(self, sandbox: Sandbox) -> None:
        """Stop an idle session's sandbox (every process of it) but keep its workspace; `revive` resumes it.

        A suspended sandbox no longer counts as running. Only for backends with `suspends` set.
        """
        raise NotImplementedError(f"the {self.name} backend does not suspend sandboxes")

    async def close_unopened(self, session_key: str) -> None:  # noqa: B027 - optional hook
        """End a session whose `open` failed: delete whatever that open made for it (idempotent).

        By default nothing: a backend whose `open` cleans up after its own failure (local) has nothing left.
        """

    async def detach(self, sandbox: Sandbox) -> None:
        """This coordinator stops serving the sandbox (shutdown); by default that ends it like `close`.

        Backends whose sandboxes live outside this process (kubernetes) only let go, so a restarted
        coordinator, or another replica, finds them again.
        """
        await self.close(sandbox)

    @abstractmethod
    def describe(self) -> str:
        """One line for logs: the backend and the isolation in force."""

    def warm_pool_size(self) -> tuple[int, int] | None:
        """(ready, wanted) sandboxes started ahead for sessions to come (for /metrics); None: keeps none."""
        return None

    async def touch(self, sandbox: Sandbox) -> None:  # noqa: B027 - optional hook, default does nothing
        """Note activity on a sandbox (the kubernetes backend records it for idle expiry)."""

    async def idle_for(self, sandbox: Sandbox) -> float | None:
        """With `shared`: seconds since any coordinator last noted activity on the sandbox (None: not known)."""
        return None
