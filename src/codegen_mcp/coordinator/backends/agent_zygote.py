"""The coordinator's side of the agent zygote (`codegen_mcp.sandbox_agent.zygote`): agents by fork, not by exec.

The zygote imports the agent once; each local agent is then a fork of it (milliseconds, and the imported
code's pages shared) instead of a new interpreter (about 0.6 s and 30 MB). A forked agent is not the
coordinator's child: `ForkedAgent` follows it by a pidfd (its end, signals that cannot hit a reused pid) and
offers what the backend uses of an asyncio subprocess. If the zygote is gone, `fork` says so at once (the
backend then starts that agent directly) and a new zygote is started in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_START_TIMEOUT_S = 60.0
_REPLY_TIMEOUT_S = 10.0
# An argument of spaces, over which each forked agent writes its own command line (so `ps` and
# /proc/<pid>/cmdline show it as the agent of its session): room for the longest Unix socket path and more.
_CMDLINE_ROOM = " " * 600


class ZygoteUnavailable(Exception):
    """The zygote cannot fork an agent now (not started, died, or refused)."""


class ForkedAgent:
    """An agent forked by the zygote, followed by a pidfd: the subset of `asyncio.subprocess.Process` we use.

    Its exit status is the zygote's to reap and is not known here: `returncode` becomes -1 once it ended.
    Also an agent another coordinator started (shared sessions): followed the same way, with no stdout or
    channel (it serves already).
    """

    def __init__(
        self,
        pid: int,
        pidfd: int,
        stdout: asyncio.StreamReader | None = None,
        channel: asyncio.StreamWriter | None = None,
    ) -> None:
        self.pid = pid
        self.stdout = stdout
        self.returncode: int | None = None
        self._pidfd: int | None = pidfd
        self._channel = channel
        self._ended: asyncio.Future[int] | None = None

    def go(self) -> None:
        """Let the agent start serving (it is in its cgroups now)."""
        assert self._channel is not None, "only a forked agent waits for its go"
        self._channel.write(b"g")

    def send_signal(self, sig: int) -> None:
        if self._pidfd is None:
            raise ProcessLookupError(self.pid)
        signal.pidfd_send_signal(self._pidfd, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    async def wait(self) -> int:
        if self._ended is None:
            loop = asyncio.get_running_loop()
            self._ended = loop.create_future()
            assert self._pidfd is not None
            loop.add_reader(self._pidfd, self._on_end)
        return await asyncio.shield(self._ended)

    def _on_end(self) -> None:
        assert self._pidfd is not None and self._ended is not None
        asyncio.get_running_loop().remove_reader(self._pidfd)
        os.close(self._pidfd)
        self._pidfd = None
        self.returncode = -1
        if self._channel is not None:
            self._channel.close()
        self._ended.set_result(-1)


class AgentZygote:
    def __init__(self, log_path: Path, env: dict[str, str], argv_prefix: list[str]) -> None:
        self._log_path = log_path
        self._env = env
        self._argv = [*argv_prefix, sys.executable, "-m", "codegen_mcp.sandbox_agent.zygote", _CMDLINE_ROOM]
        self._proc: asyncio.subprocess.Process | None = None
        self._control: socket.socket | None = None
        self._lock = asyncio.Lock()  # one request at a time on the control socket
        self._restart: asyncio.Task[None] | None = None
        self.starts = 0  # zygote processes started, for tests

    @property
    def pid(self) -> int | None:
        """The zygote's pid once it is ready to fork, while it runs; else None."""
        proc = self._proc
        return proc.pid if self._control is not None and proc is not None and proc.returncode is None else None

    async def start(self) -> None:
        """Start the zygote and wait until it has imported the agent; raise ZygoteUnavailable if it cannot."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            with self._log_path.open("ab") as log_file:
                proc = await asyncio.create_subprocess_exec(
                    *self._argv,
                    stdin=theirs.fileno(),
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=log_file,
                    env=self._env,
                )
        except OSError as err:
            ours.close()
            raise ZygoteUnavailable(f"the agent zygote could not start ({err})") from None
        finally:
            theirs.close()
        self.starts += 1
        ours.setblocking(False)
        try:
            reply = await self._receive(ours, _START_TIMEOUT_S)
            if not reply.get("ready"):
                raise ZygoteUnavailable(f"the agent zygote said {reply!r} instead of ready")
        except BaseException:
            ours.close()
            await _end(proc)
            raise
        # Only now may requests be sent: the ready message is never taken for a fork's reply.
        self._proc, self._control = proc, ours
        log.info("agent zygote %d ready: local agents are forked from it", proc.pid)

    async def fork(self, *, env: dict[str, str], argv: list[str], log_path: Path, cwd: Path) -> ForkedAgent:
        """A new agent, forked and waiting for its `go`; ZygoteUnavailable when there is no zygote to ask."""
        request = json.dumps({"env": env, "argv": argv, "log": str(log_path), "cwd": str(cwd)}).encode()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            async with self._lock:
                if self._control is None:
                    self._restart_later()
                    raise ZygoteUnavailable("the agent zygote is not running")
                try:
                    socket.send_fds(self._control, [request], [theirs.fileno()])
                    reply = await self._receive(self._control, _REPLY_TIMEOUT_S)
                except (OSError, ZygoteUnavailable) as err:
                    log.warning("agent zygote lost (%s); starting a new one", err)
                    await self.aclose()
                    self._restart_later()
                    raise ZygoteUnavailable(f"the agent zygote is gone ({err})") from None
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        if "pid" not in reply:
            ours.close()
            raise ZygoteUnavailable(f"the agent zygote could not fork: {reply.get('error', reply)}")
        pid = int(reply["pid"])
        try:
            pidfd = os.pidfd_open(pid)
        except OSError as err:  # it ended already
            ours.close()
            raise ZygoteUnavailable(f"the forked agent {pid} ended at once ({err})") from None
        stdout, channel = await asyncio.open_unix_connection(sock=ours)
        return ForkedAgent(pid, pidfd, stdout, channel)

    @staticmethod
    async def _receive(control: socket.socket, timeout_s: float) -> dict[str, Any]:
        try:
            async with asyncio.timeout(timeout_s):
                data = await asyncio.get_running_loop().sock_recv(control, 65536)
        except TimeoutError:
            raise ZygoteUnavailable(f"the agent zygote did not answer within {timeout_s:g} s") from None
        if not data:
            raise ZygoteUnavailable("the agent zygote ended")
        reply = json.loads(data)
        if not isinstance(reply, dict):
            raise ZygoteUnavailable(f"the agent zygote said {reply!r}")
        return reply

    def _restart_later(self) -> None:
        if self._restart is None or self._restart.done():
            self._restart = asyncio.create_task(self._start_again(), name="agent-zygote-restart")

    async def _start_again(self) -> None:
        try:
            await self.start()
        except ZygoteUnavailable as err:
            log.warning("agent zygote not restarted (%s): agents are started directly", err)

    async def aclose(self) -> None:
        """Stop the zygote (its forked agents get SIGTERM as it ends: stop them first to stop them cleanly)."""
        control, self._control = self._control, None
        if control is not None:
            control.close()
        if self._proc is not None:
            await _end(self._proc)

    async def aclose_all(self) -> None:
        """Stop the zygote and any restart of it under way (the backend is closing)."""
        if self._restart is not None:
            self._restart.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._restart
        await self.aclose()


async def _end(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        await proc.wait()
