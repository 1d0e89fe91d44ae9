"""The driver of a persistent Python context: run by the session venv's python inside the jail, never imported.

The agent copies this file into its state folder, shows it read-only in the jail and starts it like any run
(`interpreter`). Its stdin is one end of a socket pair: the agent sends length-prefixed JSON requests there
and reads the replies back. The user's code runs with `exec` in one namespace that lives as long as this
process, so its globals, imports and loaded data survive between cells. Its stdout and stderr stay the
process's own pipes (subprocesses and C code write there too); at the end of each cell a marker the agent
chose for that cell is written to both, so the agent knows which output belongs to which cell.

A reader thread takes the agent's frames: a cell to run goes to the main thread; an interrupt is a real
SIGINT sent to the main thread (so a blocking call returns with EINTR), raised as KeyboardInterrupt only while
a cell runs. Like IPython, the last statement of a cell, when it is an expression, is evaluated on its own and
its repr returned (bounded), and also kept as `_`.

Only the standard library, imported before the workspace goes onto sys.path: a workspace file named like a
module this driver uses must not replace it.
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import linecache
import os
import queue
import signal
import socket
import struct
import sys
import threading
import traceback
import types
from typing import Any

HEADER = struct.Struct(">I")


def read_frame(sock: socket.socket) -> dict[str, Any] | None:
    """The next request, or None when the agent closed the socket."""
    head = _read_exact(sock, HEADER.size)
    if head is None:
        return None
    body = _read_exact(sock, HEADER.unpack(head)[0])
    if body is None:
        return None
    message: dict[str, Any] = json.loads(body)
    return message


def _read_exact(sock: socket.socket, n: int) -> bytes | None:
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return bytes(data)


def send_frame(sock: socket.socket, lock: threading.Lock, message: dict[str, Any]) -> None:
    body = json.dumps(message).encode("utf-8")
    with lock:
        sock.sendall(HEADER.pack(len(body)) + body)


class Cells:
    """The persistent namespace and the cell in progress (for the interrupt)."""

    def __init__(self) -> None:
        self.namespace: dict[str, Any] = {"__name__": "__main__", "__builtins__": __builtins__}
        self.running = False
        self.count = 0

    def on_sigint(self, signum: int, frame: types.FrameType | None) -> None:
        # Between cells (an interrupt that came late) the driver goes on; in a cell it stops the user's code.
        if self.running:
            raise KeyboardInterrupt

    def run(self, request: dict[str, Any]) -> dict[str, Any]:
        self.count += 1
        filename = request.get("file") or f"<cell {self.count}>"
        source = request.get("code")
        value_cap = int(request["value_cap"])
        reply: dict[str, Any] = {"status": "ok", "exit_code": 0, "value": None, "value_truncated": False}
        sys.argv = [request.get("file") or "-c", *request.get("args", [])]
        sys.stdin = io.StringIO(request.get("stdin") or "")
        self.running = True
        try:
            if source is None:
                with open(filename, encoding="utf-8") as f:
                    source = f.read()
            linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
            body, last = compile_cell(source, filename)
            exec(body, self.namespace)  # noqa: S102 - running the user's code is this process's job
            if last is not None:
                value = eval(last, self.namespace)  # noqa: S307 - the cell's own last expression
                if value is not None:
                    self.namespace["_"] = value
                    shown = repr(value)
                    reply["value"] = shown[:value_cap]
                    reply["value_truncated"] = len(shown) > value_cap
        except SystemExit as exc:
            code = exc.code
            reply["exit_code"] = code if isinstance(code, int) else (0 if code is None else 1)
            if code is not None and not isinstance(code, int):
                print(code, file=sys.stderr)
            reply["status"] = "exit"
        except KeyboardInterrupt as exc:
            self.running = False
            _print_user_traceback(exc)
            reply.update(status="interrupted", exit_code=1)
        except BaseException as exc:  # the user's error, shown as Python would show it
            self.running = False
            _print_user_traceback(exc)
            reply.update(status="error", exit_code=1)
        finally:
            self.running = False
        return reply


def compile_cell(source: str, filename: str) -> tuple[types.CodeType, types.CodeType | None]:
    """The cell's code, and its last statement compiled apart in 'eval' mode when it is an expression."""
    tree = ast.parse(source, filename, "exec")
    last: types.CodeType | None = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        expr = ast.Expression(tree.body[-1].value)
        del tree.body[-1]
        last = compile(expr, filename, "eval")
    return compile(tree, filename, "exec"), last


def _print_user_traceback(exc: BaseException) -> None:
    """The traceback without this driver's own frames (its exec call, its SIGINT handler): the user's code only."""
    shown = traceback.TracebackException(type(exc), exc, exc.__traceback__)
    shown.stack = traceback.StackSummary.from_list([f for f in shown.stack if f.filename != __file__])
    sys.stderr.write("".join(shown.format()))


def resident_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def end_streams(marker: bytes) -> None:
    """Flush the cell's output and mark its end on both streams (the agent waits for both marks)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    for fd in (1, 2):
        with contextlib.suppress(OSError):
            os.write(fd, marker)


def main() -> None:
    sock = socket.socket(fileno=os.dup(0))  # the dup is close-on-exec: the user's subprocesses never see it
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    sys.path[0] = os.getcwd()  # the workspace, as in a notebook (the driver's folder is the agent's)
    cells = Cells()
    signal.signal(signal.SIGINT, cells.on_sigint)
    lock = threading.Lock()
    requests: queue.Queue[dict[str, Any] | None] = queue.Queue()
    main_thread = threading.main_thread().ident
    assert main_thread is not None

    def read_requests() -> None:
        while (message := read_frame(sock)) is not None:
            if message.get("op") == "interrupt":
                if cells.running:
                    signal.pthread_kill(main_thread, signal.SIGINT)
            else:
                requests.put(message)
        requests.put(None)

    threading.Thread(target=read_requests, name="agent-requests", daemon=True).start()
    send_frame(sock, lock, {"ready": True, "python": sys.version.split()[0]})
    while True:
        try:
            request = requests.get()
            if request is None:
                return
            reply = cells.run(request)
            end_streams(bytes.fromhex(request["marker"]))
            reply.update(id=request["id"], cells=cells.count, rss_bytes=resident_bytes())
            send_frame(sock, lock, reply)
        except KeyboardInterrupt:
            continue  # an interrupt that arrived as a cell ended: the agent has its reply, or gets it next


if __name__ == "__main__":
    main()
