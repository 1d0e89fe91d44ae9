"""Does the jail work here? One run of `true` in it over a workspace, confined and staged like real runs.

The agent asks at start-up; the local backend, which must not import the agent, asks the same question
before it starts any agent by running `python -m codegen_mcp.sandbox_agent.jailprobe [--uid N]`: exit 0
when the jail works, else exit 1 with the reason on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
from pathlib import Path

from codegen_mcp.sandbox_agent.isolation import Identity, Limits, Sandbox, choose_identity, find_bwrap
from codegen_mcp.sandbox_agent.jail import Bind, Jail

NO_LIMITS = Limits(None, None, None, None, None)


async def probe_bwrap(jail: Jail, identity: Identity | None, workspace: Path, timeout_s: float = 10.0) -> str | None:
    """Try the jail once with `true` over the workspace, staged like real runs; None if it works, else why not."""
    sandbox = Sandbox(identity=identity, jail=jail)
    command = sandbox.jail_command(["true"], binds=[Bind(workspace, writable=True)], chdir=workspace)
    try:
        with sandbox.spawn(command, NO_LIMITS) as (argv, kwargs):
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                env={"PATH": "/usr/bin:/bin"},
                cwd="/",
                **kwargs,  # type: ignore[arg-type]
            )
    except OSError as err:
        return f"bwrap could not start: {err.strerror or err}"
    try:
        async with asyncio.timeout(timeout_s):
            _, stderr = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return f"bwrap did not finish within {timeout_s:g} s"
    if proc.returncode != 0:
        first = stderr.decode(errors="replace").strip().splitlines()
        return f"bwrap failed ({first[0] if first else f'exit {proc.returncode}'})"
    return None


def probe_here(sandbox_uid: int | None, sandbox_gid: int | None) -> str | None:
    """The probe as the agent would run it with these settings, over a fresh temporary workspace."""
    bwrap = find_bwrap()
    if bwrap is None:
        return "bwrap is not installed"
    identity = choose_identity(os.geteuid(), sandbox_uid, sandbox_gid)
    with tempfile.TemporaryDirectory(prefix="codegen-jailprobe-") as folder:
        os.chmod(folder, 0o755)  # noqa: S103 - empty; the sandbox uid starts in it, as in its own workspace
        return asyncio.run(probe_bwrap(Jail(bwrap=bwrap), identity, Path(folder)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m codegen_mcp.sandbox_agent.jailprobe",
        description="Exit 0 when the agent's bubblewrap jail works here, else print why not and exit 1.",
    )
    parser.add_argument("--uid", type=int, help="the sandbox uid code would run as (only as root)")
    parser.add_argument("--gid", type=int, help="its gid (default: the uid)")
    args = parser.parse_args(argv)
    reason = probe_here(args.uid, args.gid)
    if reason is not None:
        print(reason)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
