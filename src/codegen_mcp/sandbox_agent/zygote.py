"""`python -m codegen_mcp.sandbox_agent.zygote`: one agent process, imported once, that forks the local agents.

A new interpreter importing aiohttp, pydantic and the agent's modules costs about 0.6 s and 30 MB per agent.
The local backend starts this process once and asks it for a fork per sandbox; the child becomes that
sandbox's agent exactly as `python -m codegen_mcp.sandbox_agent` would: its settings parsed from its own
environment and flags by the agent's own `main` (unknown names refused), its own log, socket, uid for run
code, cgroup and disk. Children share with each other and with this process only the imported code's pages,
copy-on-write.

Protocol, over the SOCK_SEQPACKET Unix socket on fd 0 (the coordinator holds the other end): after the
imports, one message `{"ready": true}`; then per request one JSON message `{"env": {...}, "argv": [...],
"log": path, "cwd": path}` carrying one file descriptor (a socket that becomes the child's stdout, where it
prints LISTENING), answered by `{"pid": N}` or `{"error": "..."}`. The child waits for one byte on that
socket before anything of its session runs: the coordinator first puts it in the session's cgroups.

This process is single-threaded, so `os.fork()` is safe; its children are reaped by the kernel (SIGCHLD
ignored) and the coordinator learns of their end by a pidfd. Parent death chains: this process gets SIGTERM
when the coordinator dies (setpriv), each child when this process dies (its own parent-death signal).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import json
import os
import signal
import socket
import sys
import tempfile
import threading
import traceback
from pathlib import Path
from typing import Any, NoReturn

from pydantic import SecretStr

from codegen_mcp.sandbox_agent.__main__ import main as agent_main
from codegen_mcp.sandbox_agent.__main__ import parse_settings
from codegen_mcp.sandbox_agent.app import create_app
from codegen_mcp.sandbox_agent.venv import default_base_python, inspect_base_python

_PR_SET_PDEATHSIG = 1
_MAX_REQUEST = 1 << 20


def _set_parent_death_signal() -> None:
    """SIGTERM when the zygote dies (and with it, the coordinator): what setpriv does for a started agent."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, ctypes.c_ulong(signal.SIGTERM), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _show_cmdline(args: list[str]) -> None:
    """Make /proc/<pid>/cmdline (ps, operators, tests) read as the agent's own command line.

    Written over this process's own argument strings (the child's copy of them), which the backend pads with
    an argument of spaces when it starts the zygote; a command line that does not fit keeps the zygote's.
    """
    fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    start, end = int(fields[45]), int(fields[46])  # arg_start and arg_end, fields 48 and 49 of stat(5)
    raw = b"\0".join(a.encode() for a in args) + b"\0"
    if len(raw) > end - start:
        print(f"codegen-mcp agent: keeping the zygote's command line ({len(raw)} bytes do not fit)", file=sys.stderr)
        return
    ctypes.memmove(start, raw.ljust(end - start, b"\0"), end - start)


def _child(request: dict[str, Any], conn: socket.socket, zygote: int) -> NoReturn:
    """Become one sandbox's agent; never returns."""
    code = 1
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the agent waits for its own children
        _set_parent_death_signal()
        if os.getppid() != zygote:  # the zygote died before the signal was set
            os._exit(1)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)  # also closes the zygote's control socket in this child
        os.close(null)
        os.dup2(conn.fileno(), 1)
        log = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        os.dup2(log, 2)
        os.close(log)
        if conn.recv(1) != b"g":  # the coordinator gave this start up before the go
            os._exit(1)
        conn.close()
        os.chdir(request["cwd"])  # how the leftover-agent sweep tells a forked agent's folder
        argv = [str(a) for a in request["argv"]]
        _show_cmdline([sys.executable, "-m", "codegen_mcp.sandbox_agent", *argv])
        os.environ.clear()
        os.environ.update({str(k): str(v) for k, v in request["env"].items()})
        agent_main(argv)
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        os._exit(code)


def rehearse() -> None:
    """Build, once, what every child builds before it serves: its settings and its app, then throw them away.

    The first use of pydantic-settings, argparse and aiohttp's router fills caches and builds validators (about
    10 ms of a child's start, and memory each child would hold privately); done here, children find them ready
    in pages they share. The default base interpreter is asked here too, once, where it lives and its version.
    Nothing session-specific is kept: a throwaway folder, no token of anyone's, nothing started (the app's
    start-up, which probes the jail and makes the venv, runs only in a child).

    Runs before SIGCHLD is ignored (asyncio waits for the interpreter it asks) and ends with this process
    single-threaded again (the child watcher's thread joined), as `fork` needs.
    """
    with tempfile.TemporaryDirectory(prefix="codegen-zygote-") as folder:
        settings, _ = parse_settings(["--workspace", f"{folder}/workspace", "--unix-socket", f"{folder}/agent.sock"])
        create_app(settings.model_copy(update={"token": SecretStr("rehearsal")}))
    asyncio.run(inspect_base_python(default_base_python(None)))
    for thread in threading.enumerate():
        if thread is not threading.main_thread():
            thread.join()


def _answer(control: socket.socket, message: dict[str, Any]) -> None:
    control.send(json.dumps(message).encode())


def serve(control: socket.socket) -> None:
    """Answer fork requests until the coordinator closes its end."""
    zygote = os.getpid()
    _answer(control, {"ready": True})
    while True:
        data, fds, _, _ = socket.recv_fds(control, _MAX_REQUEST, 1)
        if not data:
            return
        conns = [socket.socket(fileno=fd) for fd in fds]
        try:
            request = json.loads(data)
            if len(conns) != 1 or not isinstance(request, dict):
                _answer(control, {"error": "a request is one JSON object with one socket attached"})
                continue
            pid = os.fork()
            if pid == 0:
                _child(request, conns[0], zygote)
            _answer(control, {"pid": pid})
        except (ValueError, OSError) as err:
            _answer(control, {"error": str(err)})
        finally:
            for conn in conns:
                conn.close()


def main() -> None:
    rehearse()  # first: it waits for an interpreter it starts, which SIG_IGN would have the kernel reap
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    gc.collect()  # the rehearsal's garbage goes now, not in each child
    # What the children will not change stays out of the collector's sight, so their pages stay shared.
    gc.freeze()
    serve(socket.socket(fileno=0))


if __name__ == "__main__":
    main()
