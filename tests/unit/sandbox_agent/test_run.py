"""run.python, tasks, artifacts and pkg.install against a real agent, in the bwrap jail and without it."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from codegen_mcp.api.errors import InvalidArgument, SandboxUnavailable
from codegen_mcp.api.tools import ArtifactContent, ArtifactInfo, TaskView
from codegen_mcp.sandbox_agent import lifecycle
from codegen_mcp.sandbox_agent.agent import AGENT
from codegen_mcp.sandbox_agent.app import create_app

from .conftest import AUTH, AgentClient, MakeClient, make_settings, pypi_reachable


async def run(client: AgentClient, **body: Any) -> TaskView:
    resp = await client.post("/v1/run/python", json=body)
    data = await resp.json()
    assert resp.status == 200, data
    return TaskView.model_validate(data)


async def get_task(client: AgentClient, task_id: str, wait_s: float = 0) -> TaskView:
    resp = await client.get(f"/v1/tasks/{task_id}", params={"wait_s": str(wait_s)})
    data = await resp.json()
    assert resp.status == 200, data
    return TaskView.model_validate(data)


async def test_prints(runner: AgentClient) -> None:
    view = await run(runner, code="import sys; print('hello'); print('oops', file=sys.stderr)")
    assert view.state == "succeeded" and view.run is not None
    assert (view.run.exit_code, view.run.stdout, view.run.stderr) == (0, "hello\n", "oops\n")
    assert view.run.duration_s > 0 and not view.run.timed_out
    assert view.progress.stdout_bytes == 6


async def test_runs_in_the_workspace_venv_as_the_sandbox_user(runner: AgentClient, workspace: Path) -> None:
    code = "import os, sys; print(os.getcwd()); print(sys.prefix != sys.base_prefix); print(os.getuid())"
    view = await run(runner, code=code)
    assert view.run is not None
    cwd, in_venv, uid = view.run.stdout.split()
    assert Path(cwd) == Path(os.path.realpath(workspace))
    assert in_venv == "True"
    assert int(uid) == (65534 if os.geteuid() == 0 else os.geteuid())


async def test_environment_is_clean(runner: AgentClient) -> None:
    view = await run(runner, code="import os, json; print(json.dumps(dict(os.environ)))")
    assert view.run is not None
    env = __import__("json").loads(view.run.stdout)
    assert env["LANG"] == "C.UTF-8" and env["PYTHONUNBUFFERED"] == "1"
    assert env["PATH"].startswith(env["VIRTUAL_ENV"] + "/bin:")
    assert not [k for k in env if "TOKEN" in k or k.startswith(("CODEGEN", "PYTEST"))]


async def test_session_env_reaches_run_code(make_client: MakeClient, sandbox_mode: str) -> None:
    client = await make_client(sandbox=sandbox_mode, run_env={"GREETING": "hi", "VIRTUAL_ENV": "/elsewhere"})
    view = await run(
        client, code="import os, sys; print(os.environ['GREETING'], os.environ['VIRTUAL_ENV'] == sys.prefix)"
    )
    assert view.run is not None and view.run.stdout == "hi True\n", view


async def test_failure_gives_exit_1_and_a_traceback(runner: AgentClient) -> None:
    view = await run(runner, code="def f():\n    raise ValueError('bad input')\nf()\n")
    assert view.state == "failed" and view.run is not None
    assert view.run.exit_code == 1
    assert "Traceback (most recent call last)" in view.run.stderr
    assert "ValueError: bad input" in view.run.stderr
    assert view.error is None  # the program failed, not the agent


async def test_stdin_and_args(runner: AgentClient) -> None:
    code = "import sys; print(sys.argv[1:]); print(sys.stdin.read().upper())"
    view = await run(runner, code=code, args=["--flag", "two words"], stdin="some input")
    assert view.run is not None
    assert view.run.stdout == "['--flag', 'two words']\nSOME INPUT\n"


async def test_a_file_from_the_workspace(runner: AgentClient) -> None:
    resp = await runner.post("/v1/fs/write", json={"path": "pkg/main.py", "content": "import sys\nprint(sys.argv)\n"})
    assert resp.status == 200
    view = await run(runner, file="pkg/main.py", args=["a"])
    assert view.state == "succeeded" and view.run is not None
    assert view.run.stdout.strip().endswith("main.py', 'a']")


async def test_output_is_capped_and_counted(make_client: MakeClient) -> None:
    client = await make_client(output_cap_bytes=4096)
    view = await run(client, code="import sys; sys.stdout.write('x' * 100_000); sys.stderr.write('e' * 10)")
    assert view.run is not None
    assert len(view.run.stdout) == 4096 and view.run.stdout_truncated
    assert view.run.stderr == "e" * 10 and not view.run.stderr_truncated
    assert view.progress.stdout_bytes == 100_000


def processes_with(marker: str) -> list[int]:
    """Live host processes whose command line contains `marker` (zombies have none)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if marker.encode() in cmdline:
                found.append(int(entry))
    return found


async def wait_until(predicate: Any, timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.02)


async def test_timeout_kills_the_whole_process_group(runner: AgentClient) -> None:
    marker = f"grandchild-{uuid.uuid4().hex}"
    code = (
        "import subprocess, sys, time\n"
        f"subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)', '{marker}'])\n"
        "print('started', flush=True)\n"
        "while True: time.sleep(0.05)\n"
    )
    view = await run(runner, code=code, timeout_s=1.0)
    assert view.state == "timed_out" and view.run is not None
    assert view.run.timed_out and view.run.exit_code is not None and view.run.exit_code < 0
    assert view.run.stdout == "started\n"
    assert 1.0 <= view.run.duration_s < 10
    assert "killed after 1 s" in (view.error or "")
    # The grandchild was in the same process group (or pid namespace) and died with it.
    await wait_until(lambda: not processes_with(marker))


async def test_memory_blow_up_is_a_memory_error(runner: AgentClient) -> None:
    # The agent under test is limited to 256 MiB (conftest).
    view = await run(runner, code="block = bytearray(512 * 1024 * 1024)\nprint('allocated')")
    assert view.state == "failed" and view.run is not None
    assert view.run.exit_code not in (0, None)
    assert "MemoryError" in view.run.stderr
    assert "allocated" not in view.run.stdout


FORK_BOMB = """
import errno, os, sys
r, w = os.pipe()
children = 0
error = None
for _ in range(500):
    try:
        pid = os.fork()
    except OSError as e:
        error = errno.errorcode.get(e.errno)
        break
    if pid == 0:
        os.close(w)
        os.read(r, 1)  # wait until the parent lets go
        os._exit(0)
    children += 1
os.close(w)
for _ in range(children):
    os.wait()
print(children, error)
"""


async def test_fork_bomb_is_stopped_and_the_agent_stays_healthy(make_client: MakeClient, sandbox_mode: str) -> None:
    client = await make_client(sandbox=sandbox_mode, max_processes=20)
    view = await run(client, code=FORK_BOMB, timeout_s=30)
    assert view.state == "succeeded" and view.run is not None, view
    children, error = view.run.stdout.split()
    assert error == "EAGAIN"
    assert int(children) < 20
    assert (await client.get("/healthz")).status == 200
    again = await run(client, code="print('still fine')")
    assert again.run is not None and again.run.stdout == "still fine\n"


async def test_network_is_blocked_in_the_jail(make_client: MakeClient) -> None:
    if not __import__("shutil").which("bwrap"):
        pytest.skip(reason="bubblewrap (bwrap) is not installed on this machine")
    client = await make_client(sandbox="bwrap")
    code = (
        "import socket\n"
        "print(sorted(n for _, n in socket.if_nameindex()))\n"
        "try:\n    socket.create_connection(('1.1.1.1', 80), timeout=2)\nexcept OSError as e:\n    print('blocked')\n"
    )
    view = await run(client, code=code)
    assert view.run is not None
    assert view.run.stdout == "['lo']\nblocked\n"


async def test_the_jail_hides_the_agent_state_and_keeps_the_venv_read_only(
    make_client: MakeClient, workspace: Path
) -> None:
    if not __import__("shutil").which("bwrap"):
        pytest.skip(reason="bubblewrap (bwrap) is not installed on this machine")
    client = await make_client(sandbox="bwrap", venv_dir=None)  # venv inside the workspace
    code = (
        "import os, sys\n"
        "print(os.listdir('.codegen'), os.listdir('.codegen/runs'))\n"
        "try:\n    open(os.path.join(sys.prefix, 'pyvenv.cfg'), 'a')\nexcept OSError as e:\n    print(e.errno)\n"
    )
    view = await run(client, code=code)
    assert view.run is not None, view
    listing, err = view.run.stdout.splitlines()
    # Only the script being run is bound back into the (otherwise empty) state folder.
    assert listing == f"['runs'] ['{view.task_id}.py']"
    assert err in ("30", "13")  # EROFS, or EACCES when not root


async def test_hidden_paths_and_the_token_file_are_invisible_in_the_jail(
    make_client: MakeClient, base_dir: Path, workspace: Path
) -> None:
    if not __import__("shutil").which("bwrap"):
        pytest.skip(reason="bubblewrap (bwrap) is not installed on this machine")
    other = base_dir / f"other-session-{uuid.uuid4().hex}"
    other.mkdir(mode=0o755)
    (other / "secret.txt").write_text("other session's data")
    (other / "secret.txt").chmod(0o644)
    inner = workspace / "hidden-inside"  # hide_paths still applies to what the jail shows
    inner.mkdir(mode=0o755)
    (inner / "secret.txt").write_text("hidden")
    token_file = base_dir / f"token-{uuid.uuid4().hex}"
    token_file.write_text("from-a-file")
    token_file.chmod(0o644)  # readable on purpose: the jail must hide it anyway
    client = await make_client(sandbox="bwrap", hide_paths=[other, inner], token=None, token_file=token_file)
    client.session.headers["Authorization"] = "Bearer from-a-file"
    code = (
        "import os\n"
        f"for folder in ({str(other)!r}, {str(inner)!r}):\n"
        "    try:\n"
        "        print(os.listdir(folder))\n"
        "    except FileNotFoundError:\n"
        "        print('absent')\n"
        "try:\n"
        f"    print(repr(open({str(token_file)!r}).read()))\n"
        "except OSError:\n"
        "    print('unreadable')\n"
    )
    view = await run(client, code=code)
    assert view.run is not None, view
    listing, inside, token = view.run.stdout.splitlines()
    assert listing == "absent"  # outside the workspace: not in the jail's minimal root at all
    assert inside == "[]"
    assert token in ("''", "unreadable")  # absent, or /dev/null bound over it (nodev makes it unreadable)


# --- tasks ----------------------------------------------------------------------------------------------

WAIT_FOR_GO = (
    "import os, sys, time\n"
    "print('waiting', flush=True)\n"
    "while not os.path.exists('go'):\n    time.sleep(0.01)\n"
    "print('done')\n"
)


async def test_long_run_returns_a_task_then_the_result(runner: AgentClient) -> None:
    view = await run(runner, code=WAIT_FOR_GO, wait_s=0, timeout_s=60)
    assert view.state in ("queued", "running") and view.run is None
    assert view.task_id.startswith("task_")
    still = await get_task(runner, view.task_id, wait_s=0.2)
    assert still.state == "running" and still.run is None
    assert (await runner.post("/v1/fs/write", json={"path": "go", "content": ""})).status == 200
    done = await get_task(runner, view.task_id, wait_s=30)
    assert done.state == "succeeded" and done.run is not None
    assert done.run.stdout == "waiting\ndone\n"
    assert done.progress.elapsed_s > 0 and done.finished_at is not None


async def test_cancel(runner: AgentClient) -> None:
    view = await run(runner, code=WAIT_FOR_GO, wait_s=0, timeout_s=60)
    cancelled = TaskView.model_validate(await (await runner.post(f"/v1/tasks/{view.task_id}/cancel")).json())
    assert cancelled.state == "cancelled"
    assert cancelled.run is not None and cancelled.run.exit_code is not None and cancelled.run.exit_code < 0
    again = await get_task(runner, view.task_id)
    assert again.state == "cancelled"
    # Cancelling a finished task changes nothing.
    resp = await runner.post(f"/v1/tasks/{view.task_id}/cancel")
    assert (await resp.json())["state"] == "cancelled"


async def test_unknown_task_and_bad_wait(client: AgentClient) -> None:
    resp = await client.get("/v1/tasks/task_0000000000000000")
    assert resp.status == 404
    assert (await resp.json())["error"]["code"] == "task_not_found"
    resp = await client.post("/v1/tasks/task_0000000000000000/cancel")
    assert resp.status == 404
    for bad in ("soon", "-1", "nan"):
        resp = await client.get("/v1/tasks/task_0000000000000000", params={"wait_s": bad})
        assert resp.status == 400
        assert "`wait_s`" in (await resp.json())["error"]["message"]
    resp = await client.get("/v1/tasks/" + "t" * 65)
    assert resp.status == 400


async def test_per_agent_timeout_ceiling(make_client: MakeClient) -> None:
    client = await make_client(max_timeout_s=5)
    resp = await client.post("/v1/run/python", json={"code": "pass", "timeout_s": 6})
    assert resp.status == 400
    assert (await resp.json())["error"]["message"] == "`timeout_s` must be at most 5 on this sandbox"
    # Without an explicit timeout the default (60 s) is lowered to the ceiling instead of refused.
    view = await run(client, code="print('fine')")
    assert view.state == "succeeded"


async def test_agent_shutdown_kills_running_children(runner: AgentClient) -> None:
    marker = f"shutdown-{uuid.uuid4().hex}"
    code = (
        f"import subprocess, sys\nsubprocess.run([sys.executable, '-c', 'import time; time.sleep(60)', '{marker}'])\n"
    )
    view = await run(runner, code=code, wait_s=0, timeout_s=120)
    await wait_until(lambda: bool(processes_with(marker)))
    await runner.close()  # runs the app's cleanup
    await wait_until(lambda: not processes_with(marker))
    assert view.state in ("queued", "running")


async def test_auto_falls_back_to_rlimits_when_bwrap_is_missing(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lifecycle, "find_bwrap", lambda: None)
    client = await make_client(sandbox="auto")
    health = await (await client.get("/healthz")).json()
    assert "bwrap" not in health["isolation"] and "rlimits" in health["isolation"]
    view = await run(client, code="print('still runs')")
    assert view.run is not None and view.run.stdout == "still runs\n"


async def test_bwrap_asked_for_but_missing_refuses_to_start(
    workspace: Path, shared_venv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lifecycle, "find_bwrap", lambda: None)
    app_runner = web.AppRunner(create_app(make_settings(workspace, shared_venv, sandbox="bwrap")))
    try:
        with pytest.raises(SandboxUnavailable, match="sandbox=bwrap was asked for"):
            await app_runner.setup()
    finally:
        await app_runner.cleanup()


# --- artifacts ------------------------------------------------------------------------------------------


async def test_artifacts_are_produced_fetchable_and_survive_a_restart(
    make_client: MakeClient, sandbox_mode: str, aiohttp_client: Any, workspace: Path, shared_venv: Path
) -> None:
    client = await make_client(sandbox=sandbox_mode)
    await client.post("/v1/fs/write", json={"path": "untouched.txt", "content": "old"})
    code = (
        "import os\n"
        "os.makedirs('out', exist_ok=True)\n"
        "open('out/report.txt', 'w').write('the answer is 42')\n"
        "open('image.png', 'wb').write(bytes([137, 80, 78, 71, 0, 255]))\n"
    )
    view = await run(client, code=code)
    assert view.run is not None
    arts = {a.path: a for a in view.run.artifacts}
    assert set(arts) == {"out/report.txt", "image.png"}
    report = arts["out/report.txt"]
    assert report.artifact_id.startswith("art_") and report.name == "report.txt"
    assert report.media_type == "text/plain" and report.size == 16 and report.task_id == view.task_id
    assert report.sha256 == hashlib.sha256(b"the answer is 42").hexdigest()
    assert arts["image.png"].media_type == "image/png"

    got = ArtifactContent.model_validate(await (await client.get(f"/v1/artifacts/{report.artifact_id}")).json())
    assert (got.content, got.encoding, got.truncated) == ("the answer is 42", "utf-8", False)
    png = ArtifactContent.model_validate(
        await (await client.get(f"/v1/artifacts/{arts['image.png'].artifact_id}")).json()
    )
    assert png.encoding == "base64" and base64.b64decode(png.content) == bytes([137, 80, 78, 71, 0, 255])

    # A second run that changes nothing produces no artifact.
    assert (await run(client, code="print(1)")).run.artifacts == []  # type: ignore[union-attr]

    # Register a file by hand.
    resp = await client.post("/v1/artifacts", json={"path": "untouched.txt"})
    assert resp.status == 201
    manual = ArtifactInfo.model_validate(await resp.json())
    assert manual.task_id is None and manual.size == 3

    # A fresh agent over the same workspace still knows them.
    settings = make_settings(workspace, shared_venv, sandbox=sandbox_mode)
    fresh = await aiohttp_client(create_app(settings), headers=AUTH)
    listed = (await (await fresh.get("/v1/artifacts")).json())["artifacts"]
    assert {a["artifact_id"] for a in listed} >= {report.artifact_id, manual.artifact_id}
    again = await fresh.get(f"/v1/artifacts/{report.artifact_id}")
    assert (await again.json())["content"] == "the answer is 42"


async def test_artifact_errors(client: AgentClient, workspace: Path) -> None:
    resp = await client.get("/v1/artifacts/art_0000000000000000")
    assert resp.status == 404 and (await resp.json())["error"]["code"] == "artifact_not_found"
    resp = await client.post("/v1/artifacts", json={"path": "../etc/passwd"})
    assert resp.status == 403
    await client.post("/v1/fs/write", json={"path": "gone.txt", "content": "x"})
    info = await (await client.post("/v1/artifacts", json={"path": "gone.txt"})).json()
    (workspace / "gone.txt").unlink()
    resp = await client.get(f"/v1/artifacts/{info['artifact_id']}")
    assert resp.status == 404 and "no longer exists" in (await resp.json())["error"]["message"]


# --- confinement against code the agent itself ran -----------------------------------------------------


async def test_symlinks_made_by_run_code_are_refused_by_fs_ops(runner: AgentClient) -> None:
    view = await run(runner, code="import os\nos.symlink('/etc', 'etc')\nos.symlink('..', 'up')\nprint('ok')")
    assert view.run is not None and view.run.stdout == "ok\n", view
    for path, body in [
        ("/v1/fs/read", {"path": "etc/passwd"}),
        ("/v1/fs/read", {"path": "/etc/passwd"}),
        ("/v1/fs/write", {"path": "etc/x", "content": "pwned"}),
        ("/v1/fs/write", {"path": "up/x", "content": "pwned"}),
        ("/v1/fs/list", {"path": "etc"}),
        ("/v1/fs/list", {"path": "up"}),
        ("/v1/artifacts", {"path": "etc/passwd"}),
    ]:
        resp = await runner.post(path, json=body)
        assert resp.status == 403, (path, body, await resp.text())
        assert (await resp.json())["error"]["code"] == "path_outside_workspace"
    assert not Path("/etc/x").exists()
    listing = await (await runner.post("/v1/fs/list", json={"recursive": True})).json()
    types = {e["name"]: e["type"] for e in listing["entries"]}
    assert types["etc"] == "symlink" and types["up"] == "symlink"
    assert not [n for n in types if n.startswith(("etc/", "up/"))]
    # and the artifact scan did not follow them either
    assert view.run.artifacts == []


async def test_run_code_cannot_swap_the_agents_folders(make_client: MakeClient, sandbox_mode: str) -> None:
    """`.codegen` replaced by a symlink to /etc would make the agent write there: the root is sticky."""
    if sandbox_mode == "none" and os.geteuid() != 0:
        pytest.skip(reason="without the jail, code runs as the agent's own uid unless the agent is root")
    client = await make_client(sandbox=sandbox_mode, venv_dir=None)
    code = (
        "import os\n"
        "for name in ('.codegen', '.venv'):\n"
        "    try:\n"
        "        os.rename(name, name + '-moved')\n"
        "        print(name, 'moved')\n"
        "    except OSError as e:\n"
        "        print(name, 'refused')\n"
    )
    view = await run(client, code=code)
    assert view.run is not None
    assert view.run.stdout == ".codegen refused\n.venv refused\n"
    again = await run(client, code="print('ok')")
    assert again.state == "succeeded"


# --- pkg.install ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("packages", ["--index-url x", "-e .", "/etc/passwd", "https://x", "six -r req.txt"])
async def test_pkg_install_refuses_option_injection(client: AgentClient, packages: str) -> None:
    resp = await client.post("/v1/pkg/install", json={"packages": packages})
    assert resp.status == 400
    message = (await resp.json())["error"]["message"]
    assert "is not allowed" in message


@pytest.mark.network
async def test_pkg_install_from_the_index(make_client: MakeClient, base_dir: Path, sandbox_mode: str) -> None:
    if not pypi_reachable():
        pytest.skip(reason="no route to the package index (PyPI)")
    venv = base_dir / f"install-venv-{sandbox_mode}"
    client = await make_client(sandbox=sandbox_mode, venv_dir=venv)
    resp = await client.post("/v1/pkg/install", json={"packages": "iniconfig, six>=1.0 ,<2", "wait_s": 300})
    view = TaskView.model_validate(await resp.json())
    assert view.state == "succeeded", view
    assert view.install is not None and view.install.exit_code == 0
    assert {p.name.lower() for p in view.install.installed} == {"iniconfig", "six"}
    assert "Successfully installed" in view.install.log_tail
    used = await run(client, code="import iniconfig, six; print(six.__name__)")
    assert used.run is not None and used.run.stdout == "six\n", used

    resp = await client.post("/v1/pkg/install", json={"packages": "nonexistent-pkg-xyz-codegen", "wait_s": 300})
    failed = TaskView.model_validate(await resp.json())
    assert failed.state == "failed" and failed.install is not None and failed.install.exit_code not in (0, None)
    assert failed.error == "pip could not install 'nonexistent-pkg-xyz-codegen': No matching distribution found"


async def test_pip_refuses_a_venv_that_sandboxed_code_could_have_changed(
    make_client: MakeClient, workspace: Path
) -> None:
    if os.geteuid() != 0:
        pytest.skip(reason="only a root agent runs pip with more rights than the sandboxed code")
    client = await make_client(venv_dir=None)
    assert (await run(client, code="pass")).state == "succeeded"  # the venv exists now
    os.lchown(workspace / ".venv" / "pyvenv.cfg", 65534, 65534)
    resp = await client.post("/v1/pkg/install", json={"packages": "six"})
    view = TaskView.model_validate(await resp.json())
    assert view.state == "failed"
    assert "changed outside the agent" in (view.error or "")


async def test_invalid_start_up_packages_refuse_to_start(workspace: Path, shared_venv: Path) -> None:
    app_runner = web.AppRunner(create_app(make_settings(workspace, shared_venv, packages="six --pre")))
    try:
        with pytest.raises(InvalidArgument, match="`--pre` is not allowed"):
            await app_runner.setup()
    finally:
        await app_runner.cleanup()


@pytest.mark.network
async def test_start_up_packages_are_installed_as_a_task(make_client: MakeClient, base_dir: Path) -> None:
    if not pypi_reachable():
        pytest.skip(reason="no route to the package index (PyPI)")
    venv = base_dir / f"startup-venv-{uuid.uuid4().hex}"
    client = await make_client(venv_dir=venv, packages="iniconfig")
    tasks = client.app[AGENT].tasks
    await wait_until(lambda: bool(tasks._tasks), timeout_s=60)  # submitted once the venv exists
    (install,) = tasks._tasks.values()
    await tasks.wait(install, 300)
    assert install.view().state == "succeeded", install.view()
    used = await run(client, code="import iniconfig; print('ok')")
    assert used.run is not None and used.run.stdout == "ok\n"
