"""pip, run jailed as the session's uid: pkg.install, and the dev tools (pytest, ruff, mypy) from wheel folders.

pip runs in the same confinement as run code, because an sdist's build step is arbitrary code: the sandbox
uid, rlimits (a larger address space), and the jail when it is in force, but with a different view: the venv
read-write, the agent's own pip read-only at `/opt/codegen-pip/pip` (the venv has none; `<venv python>
<pip>/__pip-runner__.py install ...` is what `pip --python` does itself), a per-session home and cache, and
not the workspace. It has the network (the index) through a user-mode stack that cannot reach the host's
loopback (see `netns`), unless it is given local wheel folders: then `--no-index --find-links <folders>`,
and no network at all. Without the jail, a root agent still drops to the sandbox uid and uses a readable
copy of its pip (and of wheel folders the uid cannot reach). Only named requirements reach pip.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.metadata
import importlib.util
import os
import secrets
import shutil
import stat
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from packaging.requirements import Requirement

from codegen_mcp.api.agent_settings import AgentSettings
from codegen_mcp.api.errors import SandboxUnavailable
from codegen_mcp.api.tools import PkgInstallResult, TaskState
from codegen_mcp.sandbox_agent.isolation import CPU_SLACK_S, Limits, child_env, unreachable_parent
from codegen_mcp.sandbox_agent.jail import Bind, Jail, JailCommand, Mount
from codegen_mcp.sandbox_agent.netns import resolv_conf_mounts, user_network
from codegen_mcp.sandbox_agent.process import (
    LOG_TAIL_BYTES,
    Captured,
    ProcessOutcome,
    start_failure,
    stopped,
    supervise,
)
from codegen_mcp.sandbox_agent.requirements import PIP_NETWORK_REMEDY, network_disabled, pip_error_sentence
from codegen_mcp.sandbox_agent.tasks import Outcome, Task

if TYPE_CHECKING:
    from codegen_mcp.sandbox_agent.executor import Executor

# Where the agent's pip is shown inside the install jail; its parent holds nothing else.
PIP_IN_JAIL = Path("/opt/codegen-pip/pip")
PIP_RUNNER = "__pip-runner__.py"
# Operator-provided paths pip may need inside the jail (CA bundles, client certificates, its config file,
# local wheel folders).
PIP_PATH_VARS = (
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "PIP_CERT",
    "PIP_CLIENT_CERT",
    "PIP_CONFIG_FILE",
    "PIP_FIND_LINKS",
)


def agent_pip_dir() -> Path | None:
    """The agent's own pip package folder (run in the venv through its `__pip-runner__.py`)."""
    spec = importlib.util.find_spec("pip")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(os.path.realpath(next(iter(spec.submodule_search_locations))))


def local_find_links(pip_env: Mapping[str, str]) -> list[Path]:
    """The local wheel folders among PIP_FIND_LINKS (paths or file:// URLs): what pip can use offline."""
    folders: list[Path] = []
    for item in pip_env.get("PIP_FIND_LINKS", "").replace(os.pathsep, " ").split():
        local = item.removeprefix("file://")
        path = Path(local)
        if "://" not in local and path.is_absolute() and path.is_dir() and path not in folders:
            folders.append(path)
    return folders


def pip_path_mounts(pip_env: Mapping[str, str], jail: Jail, folders: Sequence[Path] = ()) -> list[Mount]:
    """Local files and folders named by the operator's pip/TLS variables (CA bundles, client certificates,
    pip's config, find-links wheel folders) and the wheel `folders` given to pip, shown read-only in the
    install jail where pip will look."""
    items = [item for name in PIP_PATH_VARS for item in pip_env.get(name, "").replace(os.pathsep, " ").split()]
    mounts: list[Mount] = []
    for item in [*items, *map(str, folders)]:
        item = item.removeprefix("file://")
        path = Path(item)
        if "://" in item or not path.is_absolute() or not path.exists():
            continue
        real = Path(os.path.realpath(path))
        if not (path == real and jail.shows(real)) and all(m.target != path for m in mounts):
            mounts.append(Bind(real, None if path == real else path))
    return mounts


def install_limits(settings: AgentSettings, timeout_s: float) -> Limits:
    """pip's limits: run code's, with the larger address space builds need."""
    return Limits(
        memory_bytes=max(settings.memory_bytes, settings.install_memory_bytes),
        cpu_seconds=int(timeout_s) + CPU_SLACK_S,
        file_bytes=settings.max_file_bytes,
        open_files=settings.max_open_files,
        processes=settings.max_processes,
    )


def pip_for_child(executor: Executor, pip_dir: Path) -> Path:
    """The pip folder the unjailed child can read: the agent's own, or a copy in the agent's state.

    A root agent's pip may sit under a folder the sandbox uid cannot enter (a 0700 /root with pyenv);
    then it is copied once per pip version, with its byte-code, into `<state>/pip-<version>/pip`.
    """
    identity = executor.sandbox.identity
    runner = pip_dir / PIP_RUNNER
    if identity is None or (unreachable_parent(runner, identity) is None and runner.stat().st_mode & stat.S_IROTH):
        return pip_dir
    try:
        version = importlib.metadata.version("pip")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    copy = executor.state_dir / f"pip-{version}"
    if not (copy / "pip" / PIP_RUNNER).exists():
        staging = executor.state_dir / f".pip-{version}-{secrets.token_hex(4)}"
        shutil.copytree(pip_dir, staging / "pip", symlinks=True)
        os.chmod(staging, 0o755)  # noqa: S103 - pip's own files, readable by the sandbox uid on purpose
        try:
            os.rename(staging, copy)
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)  # another install made it first
    return copy / "pip"


def wheels_for_child(executor: Executor, folder: Path) -> Path:
    """A wheel folder the unjailed child can read: `folder` itself, or a copy of its wheels in the agent's state.

    A root agent's wheel cache may sit under a folder the sandbox uid cannot enter (~/.cache under a 0700
    /root). Wheels are copied by name (a wheel's name says its version), so a later call only adds new ones.
    In the jail the agent stages the folder itself, and a non-root agent runs pip as itself: no copy.
    """
    identity = executor.sandbox.identity
    if executor.sandbox.jail is not None or identity is None or unreachable_parent(folder / "x", identity) is None:
        return folder
    copy = executor.state_dir / "wheels" / hashlib.sha256(os.fsencode(folder)).hexdigest()[:16]
    copy.mkdir(parents=True, exist_ok=True)
    for parent in (copy.parent, copy):
        os.chmod(parent, 0o755)  # noqa: S103 - wheels only, readable by the sandbox uid on purpose
    present = set(os.listdir(copy))
    for wheel in folder.glob("*.whl"):
        if wheel.name not in present and wheel.is_file():
            partial = copy / f".{wheel.name}.{secrets.token_hex(4)}"
            shutil.copyfile(wheel, partial)
            os.chmod(partial, 0o644)
            os.rename(partial, copy / wheel.name)
    return copy


def offline_install_folders(executor: Executor) -> list[Path] | None:
    """None when pip may use the package index; else the local wheel folders it must make do with.

    Raises NETWORK_DISABLED at once when pip has neither: without egress pip would otherwise spend its
    retries on the index and then blame the package ("No matching distribution found").
    """
    if executor.settings.pip_network:
        return None
    folders = local_find_links(executor.pip_env)
    if not folders:
        raise network_disabled("pkg.install", PIP_NETWORK_REMEDY)
    return folders


async def run_pip(
    executor: Executor,
    task: Task,
    specs: Sequence[str],
    *,
    find_links: Sequence[Path] | None,
    timeout_s: float,
) -> ProcessOutcome:
    """`pip install <specs>` into the session venv, jailed as the session's uid; its log is the outcome's stdout.

    With `find_links` None pip uses the package index (the network); with folders, only them (`--no-index`,
    no network at all): an index or a remote find-links URL would only cost pip its retries.
    """
    python = await executor.ensure_venv()
    executor.venv.check_untouched()
    pip_dir = agent_pip_dir()
    if pip_dir is None or not (pip_dir / PIP_RUNNER).is_file():
        raise SandboxUnavailable("pip is not available to the agent, so nothing can be installed")
    jail = executor.sandbox.jail
    if jail is not None:
        runner = PIP_IN_JAIL / PIP_RUNNER
    else:
        runner = await asyncio.to_thread(pip_for_child, executor, pip_dir) / PIP_RUNNER
    argv = [str(python), str(runner), "install", "--disable-pip-version-check", "--no-input", "--progress-bar", "off"]
    pip_env = dict(executor.pip_env)
    folders: list[Path] = []
    if find_links is not None:
        pip_env.pop("PIP_FIND_LINKS", None)
        folders = [await asyncio.to_thread(wheels_for_child, executor, f) for f in find_links]
        argv += ["--no-index", *(f"--find-links={folder}" for folder in folders)]
    elif executor.settings.pip_index_url:
        argv += ["--index-url", executor.settings.pip_index_url]
    argv += specs
    home = executor.install_home
    env = child_env(venv=executor.venv_dir, home=home, extra=pip_env)
    env["PIP_CACHE_DIR"] = str(home / "cache")  # the session's own: never shared, never the agent's
    limits = install_limits(executor.settings, timeout_s)
    network = find_links is None
    command: JailCommand | list[str] = argv
    if jail is not None:
        # The venv read-write, pip and the wheel folders read-only; not the workspace, not the state.
        binds: list[Mount] = [
            *executor.python_mounts(),
            Bind(pip_dir, PIP_IN_JAIL),
            *pip_path_mounts(executor.pip_env, jail, folders),
            Bind(executor.venv_dir, writable=True),
            Bind(home, writable=True),
            *(resolv_conf_mounts(executor.state_dir) if network else ()),
        ]
        command = executor.sandbox.jail_command(argv, binds=binds, chdir=home, network=network)

    def count(n: int) -> None:
        task.stdout_bytes += n

    try:
        # The network through a user-mode stack in the jail's own namespace: not the host's loopback.
        with executor.sandbox.spawn(command, limits) as (argv, popen_kwargs):
            async with user_network(argv, popen_kwargs, jailed=jail is not None, network=network) as (
                argv,
                popen_kwargs,
            ):
                return await supervise(
                    argv,
                    env=env,
                    cwd=home,
                    stdin=None,
                    timeout_s=timeout_s,
                    cancel=task.cancel_requested,
                    stdout=Captured(cap=LOG_TAIL_BYTES, keep_tail=True),
                    stderr=None,
                    popen_kwargs=popen_kwargs,
                    on_stdout=count,
                    quota_dir=executor.settings.tmp_dir,
                )
    except (OSError, subprocess.SubprocessError) as err:
        raise start_failure("pip", err) from None


async def pkg_install(
    executor: Executor, task: Task, *, requirements: Sequence[Requirement], timeout_s: float
) -> Outcome:
    offline = offline_install_folders(executor)
    specs = [str(r) for r in requirements]
    task.message = "pip install " + " ".join(specs)
    result = await run_pip(executor, task, specs, find_links=offline, timeout_s=timeout_s)
    installed = await asyncio.to_thread(executor.venv.installed_versions, [r.name for r in requirements])
    log_tail = result.stdout.text()
    install = PkgInstallResult(
        exit_code=result.exit_code, installed=installed, log_tail=log_tail, duration_s=result.duration_s
    )
    ended = stopped(result, "pip", timeout_s, executor.settings.tmp_dir)
    if ended is not None:
        return Outcome(ended[0], install=install, error=ended[1])
    if result.exit_code != 0:
        return Outcome(TaskState.FAILED, install=install, error=pip_error_sentence(log_tail, specs, offline or ()))
    return Outcome(TaskState.SUCCEEDED, install=install)
