"""A real coordinator process on 127.0.0.1 for tests: start it, find its port, read its log, stop it."""

from __future__ import annotations

import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass
class CoordinatorProcess:
    url: str
    state_dir: Path
    proc: subprocess.Popen[bytes]

    @property
    def audit_log(self) -> Path:
        return self.state_dir / "audit.jsonl"

    @property
    def log_path(self) -> Path:
        return self.state_dir.parent / f"{self.state_dir.name}.log"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 60) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def _read_listening_line(proc: subprocess.Popen[bytes], timeout_s: float) -> str:
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout_s
    buf = b""
    while time.monotonic() < deadline:
        if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
            break
        chunk = os.read(proc.stdout.fileno(), 4096)
        if not chunk:
            break
        buf += chunk
        for line in buf.decode(errors="replace").splitlines():
            if line.startswith("LISTENING "):
                return line.split(" ", 1)[1].strip()
    raise RuntimeError(f"coordinator did not report LISTENING within {timeout_s} s (exit code {proc.poll()})")


# The host's shared registry hands out 61000 and up (the default); the security bench takes 63000 and up. Private
# registries take a block of 45000-60999 chosen by this test process's pid, so two test runs on one host (say, a
# developer's beside CI's) do not share uids either.
PRIVATE_UID_SLOTS = 250
PRIVATE_UID_BASE = 45000 + (os.getpid() % 64) * PRIVATE_UID_SLOTS


def private_uid_registry(directory: Path) -> dict[str, str]:
    """A coordinator's env for a uid registry of its own, on uids the host's shared registry never hands out.

    Two registries over one range would give one uid to two live sandboxes, and ending either session kills
    every process of that uid (`kill -1` as that uid): the other's runs die with SIGKILL (exit 137 in the jail).
    """
    return {
        "CODEGEN_LOCAL_UID_REGISTRY_DIR": str(directory),
        "CODEGEN_LOCAL_SANDBOX_UID_BASE": str(PRIVATE_UID_BASE),
        "CODEGEN_LOCAL_SANDBOX_UID_SLOTS": str(PRIVATE_UID_SLOTS),
    }


def start_coordinator(state_dir: Path, *extra: str, env: dict[str, str] | None = None) -> CoordinatorProcess:
    cmd = [
        sys.executable,
        "-m",
        "codegen_mcp.coordinator",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--state-dir",
        str(state_dir),
        "--log-level",
        "WARNING",
        *extra,
    ]
    with (state_dir.parent / f"{state_dir.name}.log").open("ab") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, env={**os.environ, **(env or {})})
    try:
        base = _read_listening_line(proc, 60)
    except BaseException:
        stop_process(proc)
        raise
    return CoordinatorProcess(url=base, state_dir=state_dir, proc=proc)


def print_log_tail(cp: CoordinatorProcess, lines: int = 60) -> None:
    """Echo the end of a coordinator's log (to stderr, like any log): pytest shows it only when a test failed."""
    print(f"--- {cp.log_path} (last {lines} lines) ---\n{cp.log_tail(lines)}", file=sys.stderr)


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    if proc.stdout is not None:
        proc.stdout.close()


def state_root() -> Iterator[Path]:
    """A temp folder sandbox uids can traverse (pytest's own temp root is 0700 when run as root)."""
    root = Path(tempfile.mkdtemp(prefix="codegen-mcp-test-"))
    root.chmod(0o711)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)
