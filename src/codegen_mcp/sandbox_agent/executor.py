"""One session's executor: its folders, its venv and sandbox, and the jobs that run code there.

The jobs live in their own modules: `runs` (run.python), `pip` (pkg.install and the dev tools' installs),
`sandboxed` (confined code over the workspace), `venv` (the session venv), `process` (supervised children).
This class holds what they share: the settings, the workspace root, the agent's state folders (private ones,
and the homes the sandbox uid writes), the sandbox in force and the environment pip may see.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path

from codegen_mcp.api.agent_settings import AgentSettings
from codegen_mcp.api.errors import SandboxUnavailable
from codegen_mcp.api.tools import InstalledPackage
from codegen_mcp.sandbox_agent import pip, runs
from codegen_mcp.sandbox_agent.artifacts import ArtifactStore
from codegen_mcp.sandbox_agent.contexts import Contexts
from codegen_mcp.sandbox_agent.isolation import Sandbox
from codegen_mcp.sandbox_agent.jail import Mount
from codegen_mcp.sandbox_agent.venv import SessionVenv, default_base_python, hand_over, refuse_planted_link
from codegen_mcp.sandbox_agent.workspace import Owner


class Executor:
    """Runs code and installs for one workspace."""

    def __init__(
        self,
        settings: AgentSettings,
        *,
        workspace_root: Path,
        state_dir: Path,
        venv_dir: Path,
        sandbox: Sandbox,
        artifacts: ArtifactStore,
        owner: Owner | None,
        pip_env: Mapping[str, str],
    ) -> None:
        self.settings = settings
        self.root = workspace_root
        self.state_dir = state_dir
        self.venv_dir = venv_dir
        self.sandbox = sandbox
        self.artifacts = artifacts
        self.owner = owner
        self.pip_env = dict(pip_env)
        self.venv = SessionVenv(
            venv_dir,
            configured=settings.venv_path,
            workspace=settings.workspace,
            root=workspace_root,
            base_python=default_base_python(settings.python),
            owner=owner,
        )
        self.contexts = Contexts(self)  # run.python's persistent contexts

    # --- paths --------------------------------------------------------------------------------------

    @property
    def base_python(self) -> str:
        return self.venv.base_python

    @property
    def venv_python(self) -> Path:
        return self.venv.python

    @property
    def runs_dir(self) -> Path:
        return self.state_dir / "runs"

    @property
    def home_dir(self) -> Path:
        return self.state_dir / "home"

    @property
    def install_home(self) -> Path:
        """HOME of pip and, under it, its cache: the sandbox uid's, hidden from fs tools and run code."""
        return self.state_dir / "install-home"

    def prepare_dirs(self) -> None:
        """Create the state folders: the agent's private ones, and those the sandboxed code may write."""
        refuse_planted_link(
            self.settings.state_path,
            "state folder",
            workspace=self.settings.workspace,
            root=self.root,
            owner=self.owner,
        )
        self.state_dir.mkdir(parents=True, exist_ok=True)
        st = self.state_dir.lstat()
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
            # Something else put it there (a symlink made by sandboxed code?): never write through it.
            raise SandboxUnavailable(f"the state folder {self.state_dir} is not a folder owned by the agent")
        # Traversable but not listable: a run can read its own script by name, not list the others.
        os.chmod(self.state_dir, 0o711)  # noqa: S103 - traverse-only on purpose
        self.runs_dir.mkdir(exist_ok=True)
        os.chmod(self.runs_dir, 0o711)  # noqa: S103 - traverse-only on purpose
        self.install_home.mkdir(mode=0o700, exist_ok=True)
        self.home_dir.mkdir(exist_ok=True)
        if self.owner is not None:
            os.chown(self.home_dir, self.owner.uid, self.owner.gid)
            if self.install_home.lstat().st_uid != self.owner.uid:
                hand_over(self.install_home, self.owner.uid, self.owner.gid)

    # --- the venv -----------------------------------------------------------------------------------

    async def ensure_venv(self) -> Path:
        return await self.venv.ensure()

    def python_mounts(self) -> list[Mount]:
        """The base interpreter's folders the jail must show (none when it lives under /usr)."""
        return self.venv.python_mounts(self.sandbox.jail)

    def site_packages(self) -> list[Path]:
        return self.venv.site_packages()

    def installed_versions(self, names: Sequence[str]) -> list[InstalledPackage]:
        return self.venv.installed_versions(names)

    # --- the jobs, each written in its own module with the executor as its first argument ----------

    run_python = runs.run_python
    offline_install_folders = pip.offline_install_folders
    pkg_install = pip.pkg_install
