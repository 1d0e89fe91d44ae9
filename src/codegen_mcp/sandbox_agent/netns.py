"""A jail's network: outbound through a user-mode stack in its own network namespace, never the host's loopback.

Used by every jail that has the network: pip's (a package's build step) and run code's (run.python, pytest,
ruff, mypy, git) when the agent's network is on. A jail with `--share-net` shares the host's network
namespace, so that code could reach anything listening on the host's 127.0.0.1 (the coordinator, agents,
other local services). Instead, the jail keeps bwrap's own (empty) network namespace and slirp4netns gives it
a tap device with a default route through a user-mode TCP/IP stack (10.0.2.0/24, DNS forwarded at 10.0.2.3),
started with `--disable-host-loopback` so the gateway does not lead to the host's loopback either.

The order: bwrap reports its child's pid on `--info-fd` and waits on `--block-fd`; the agent attaches
slirp4netns to `/proc/<pid>/ns/net`, waits for its ready byte, then lets bwrap go on. If slirp4netns cannot
attach, bwrap is released anyway and the child runs with loopback only: it fails, the host stays closed.

DNS: the jail shows the host's /etc/resolv.conf. Where that names only loopback servers (systemd-resolved's
127.0.0.53, a local dnsmasq), they are out of reach with the host's loopback refused, so such jails are shown
a resolv.conf naming slirp4netns's own forwarder instead (10.0.2.3, which sends the query to the host's
resolver, loopback included: `jail_resolv_conf`, `resolv_conf_mounts`).

pasta (Debian's passt) is not used: the version Debian 12 ships cannot start as the sandbox uid where
/dev/net/tun is 0600 ("Failed to open tun socket in namespace"), and as root it switches itself to nobody.
Without slirp4netns (or, for pip, without the jail) the child keeps the host's network, and a line saying so is
logged once.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import secrets
import shutil
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

from codegen_mcp.sandbox_agent.jail import Bind

log = logging.getLogger(__name__)

SHARE_NET = "--share-net"
# How long bwrap may take to report its child, and slirp4netns to configure the namespace.
ATTACH_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 5.0
# How long bwrap's child may take to set up its loopback before slirp4netns is started anyway, and how often
# that is looked at.
LOOPBACK_WAIT_S = 2.0
LOOPBACK_POLL_S = 0.002
FALLBACK = (
    "sandboxed code with the network (package builds, run code) keeps the host's network namespace, "
    "so it can reach services on the host's loopback"
)
_warned: set[str] = set()
# slirp4netns's DNS forwarder in the namespace (its default 10.0.2.0/24 network).
SLIRP_NAMESERVER = "10.0.2.3"
RESOLV_CONF = Path("/etc/resolv.conf")
HOST_RESOLV_CONF = RESOLV_CONF  # the host's, as the agent reads it (a test points it elsewhere)


def find_slirp4netns() -> str | None:
    return shutil.which("slirp4netns")


def fallback_reason(*, jailed: bool, slirp: str | None) -> str | None:
    """Why sandboxed code cannot have its own user-mode network here (None when it can)."""
    if not jailed:
        return f"no bubblewrap jail is in force: {FALLBACK}"
    if slirp is None:
        return f"slirp4netns is not installed (Debian package slirp4netns): {FALLBACK}"
    return None


def jail_resolv_conf(host: str) -> str | None:
    """The resolv.conf a jail with the user-mode network must see instead of the host's `host`, or None to keep it.

    None when the host names a server the jail can reach (any but loopback ones); else the host's file with
    its `nameserver` lines replaced by slirp4netns's forwarder (no server at all means 127.0.0.1 to the C
    library, so loopback too). `search`, `options` and comments are kept.
    """
    servers: list[str] = []
    kept: list[str] = []
    for line in host.splitlines():
        words = line.split()
        if words[:1] == ["nameserver"]:
            servers.append(words[1] if len(words) > 1 else "")
        else:
            kept.append(line)
    if any(_reachable_server(server) for server in servers):
        return None
    return "\n".join([*kept, f"nameserver {SLIRP_NAMESERVER}", ""])


def _reachable_server(server: str) -> bool:
    try:
        return not ipaddress.ip_address(server.split("%", 1)[0]).is_loopback
    except ValueError:
        return False  # not an address: the C library ignores it


def resolv_conf_mounts(state_dir: Path) -> list[Bind]:
    """The bind that shows a networked jail `jail_resolv_conf`'s file (written in `state_dir`), if one is needed.

    Nothing without slirp4netns: the jail then shares the host's network, and its loopback resolver with it.
    """
    if find_slirp4netns() is None:
        return []
    try:
        host = HOST_RESOLV_CONF.read_text(errors="replace")
    except FileNotFoundError:
        host = ""
    text = jail_resolv_conf(host)
    if text is None:
        return []
    path = state_dir / "resolv.conf"
    if not path.is_file() or path.read_text() != text:
        partial = path.with_name(f".resolv.conf.{secrets.token_hex(4)}")  # runs may start side by side
        partial.write_text(text)
        partial.chmod(0o644)  # read by the sandbox uid through the bind
        partial.replace(path)
    return [Bind(path, RESOLV_CONF)]


def _warn_once(reason: str) -> None:
    if reason not in _warned:
        _warned.add(reason)
        log.warning("sandbox network: %s", reason)


def slirp_command(slirp: str, child_pid: int, ready_fd: int, exit_fd: int, *, root: bool) -> list[str]:
    """slirp4netns attached to the network namespace of `child_pid`, with the host's loopback refused."""
    cmd = [
        slirp,
        "--configure",
        "--mtu=65520",
        "--disable-host-loopback",
        f"--ready-fd={ready_fd}",
        f"--exit-fd={exit_fd}",
    ]
    if root:
        cmd.append("--enable-sandbox")  # its own mount namespace, capabilities dropped once the tap is open
    else:
        # Without root, slirp4netns needs the jail's user namespace to configure the network namespace.
        cmd.append(f"--userns-path=/proc/{child_pid}/ns/user")
    return [*cmd, "--netns-type=path", f"/proc/{child_pid}/ns/net", "tap0"]


def own_network_argv(argv: Sequence[str], info_fd: int, block_fd: int) -> list[str]:
    """The jail's command with its `--share-net` replaced: report the child on `info_fd`, wait on `block_fd`.

    The jail's bwrap may come after prefixes (prlimit, a root agent's staging bwrap and setpriv), none of
    which shares the network, so its first `--share-net` is the jail's own option.
    """
    at = list(argv).index(SHARE_NET)
    return [*argv[:at], "--info-fd", str(info_fd), "--block-fd", str(block_fd), *argv[at + 1 :]]


@contextlib.asynccontextmanager
async def _pipe_reader(fd: int) -> AsyncIterator[asyncio.StreamReader]:
    """An asyncio reader over (a duplicate of) the read end `fd`: cancellable, unlike a read in a thread."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(os.dup(fd), "rb", buffering=0)
    )
    try:
        yield reader
    finally:
        transport.close()


async def _read_child_pid(fd: int) -> int:
    """The `child-pid` bwrap writes (as JSON) on its info fd."""
    async with _pipe_reader(fd) as reader:
        data = b""
        while True:
            chunk = await reader.read(4096)
            if not chunk:
                raise OSError("bwrap ended before it reported its child")
            data += chunk
            with contextlib.suppress(ValueError):
                return int(json.loads(data)["child-pid"])


async def _wait_for_loopback(child_pid: int) -> None:
    """Until bwrap's child has given its namespace's `lo` 127.0.0.1 (or has ended, or LOOPBACK_WAIT_S passed).

    bwrap sets up the loopback right after it reports the child, and fails ("loopback: Failed RTM_NEWADDR")
    when slirp4netns brings `lo` up first (the kernel then adds 127.0.0.1 itself): about one jailed child in
    a hundred did, for a root agent. The address shows in the namespace's local routing table once added.
    """
    deadline = asyncio.get_running_loop().time() + LOOPBACK_WAIT_S
    while asyncio.get_running_loop().time() < deadline:
        if await asyncio.to_thread(_loopback_done, child_pid):
            return
        await asyncio.sleep(LOOPBACK_POLL_S)


def _loopback_done(child_pid: int) -> bool:
    """Whether the namespace of `child_pid` has 127.0.0.1, or there is nothing left to wait for."""
    try:
        with open(f"/proc/{child_pid}/net/fib_trie", encoding="ascii", errors="replace") as table:
            return "127.0.0.1" in table.read()
    except OSError:
        return True  # the child is gone, or its table cannot be read


class _Attachment:
    def __init__(self, slirp: str) -> None:
        self.slirp = slirp
        self.info_r, self.info_w = os.pipe()
        self.block_r, self.block_w = os.pipe()
        self.exit_r, self.exit_w = os.pipe()
        self.proc: asyncio.subprocess.Process | None = None

    async def attach(self) -> None:
        """Start slirp4netns on the jail's namespace, then release bwrap (also when attaching failed)."""
        try:
            pid = await _read_child_pid(self.info_r)
            await _wait_for_loopback(pid)
            ready_r, ready_w = os.pipe()
            try:
                self.proc = await asyncio.create_subprocess_exec(
                    *slirp_command(self.slirp, pid, ready_w, self.exit_r, root=os.geteuid() == 0),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.PIPE,
                    pass_fds=(ready_w, self.exit_r),
                    start_new_session=True,
                )
                os.close(ready_w)
                ready_w = -1
                async with _pipe_reader(ready_r) as reader:
                    ready = await reader.read(1)
            finally:
                os.close(ready_r)
                if ready_w >= 0:
                    os.close(ready_w)
            if ready != b"1":
                err = b""
                if self.proc.stderr is not None:
                    with contextlib.suppress(TimeoutError):
                        err = await asyncio.wait_for(self.proc.stderr.read(2000), 1.0)
                raise OSError(f"slirp4netns did not configure the network: {err.decode(errors='replace').strip()}")
        except OSError as exc:
            log.warning("sandbox network: %s; the child runs without the network", exc)
        finally:
            self.release()

    def release(self) -> None:
        if self.block_w >= 0:
            with contextlib.suppress(OSError):
                os.write(self.block_w, b"1")
            os.close(self.block_w)
            self.block_w = -1

    async def stop(self) -> None:
        self.release()
        os.close(self.exit_w)  # slirp4netns ends when its exit fd closes
        proc = self.proc
        if proc is not None and proc.returncode is None:
            try:
                await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        for fd in (self.info_r, self.info_w, self.block_r, self.exit_r):
            with contextlib.suppress(OSError):
                os.close(fd)


@contextlib.asynccontextmanager
async def user_network(
    argv: Sequence[str], popen_kwargs: Mapping[str, object], *, jailed: bool, network: bool
) -> AsyncIterator[tuple[list[str], dict[str, object]]]:
    """argv and popen kwargs for a jailed child with outbound networking but not the host's loopback, where possible.

    For pip's jail (package builds) and run code's (run.python, pytest, ruff, mypy, git) alike: `argv` is the
    spawned jail command (with `--share-net` when `network`); start the child inside the block, outside it
    slirp4netns is gone. Without the network nothing changes; where no user-mode stack can be had (no jail,
    no slirp4netns) the host's network is kept and that is logged once.
    """
    if not network:
        yield list(argv), dict(popen_kwargs)
        return
    slirp = find_slirp4netns()
    reason = fallback_reason(jailed=jailed, slirp=slirp)
    if reason is not None or slirp is None:
        _warn_once(reason or FALLBACK)
        yield list(argv), dict(popen_kwargs)
        return
    att = _Attachment(slirp)
    kwargs = dict(popen_kwargs)
    kwargs["pass_fds"] = (*tuple(kwargs.get("pass_fds", ())), att.info_w, att.block_r)  # type: ignore[arg-type]
    task = asyncio.create_task(asyncio.wait_for(att.attach(), ATTACH_TIMEOUT_S))
    try:
        yield own_network_argv(argv, att.info_w, att.block_r), kwargs
    finally:
        if not task.done():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await task
        await att.stop()
