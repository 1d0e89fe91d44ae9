"""git.clone and git.commit: git run as sandboxed code over the workspace.

git runs where run.python code runs (the jail, the sandbox uid, rlimits, a timeout), because a repository
in the workspace is the user's to shape: its config, hooks and attributes can make git run programs. Every
call gets a clean configuration (no system or global config, no credential helpers, no prompts) and
`safe.directory=*` (the workspace root belongs to the agent, not to the uid git runs as).

git.clone takes public https URLs only: `file://`, ssh (also scp-like `host:path`), `git://`, plain
http, remote helpers (`ext::`), local paths and URLs carrying credentials are refused before anything
runs, and `protocol.allow=never` / `protocol.https.allow=always` keep git itself (redirects, submodules)
on https. It needs network egress: a sandbox without it refuses with NETWORK_DISABLED rather than
timing out. git.commit never pushes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import ssl
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from codegen_mcp.api.agent_settings import AgentSettings
from codegen_mcp.api.errors import CodegenError, ErrorCode, InvalidArgument, NotFound
from codegen_mcp.api.tools import (
    OUTPUT_FOLDER,
    GitCloneArgs,
    GitCloneResult,
    GitCommitArgs,
    GitCommitResult,
    GitFileChange,
    TaskState,
)
from codegen_mcp.sandbox_agent.executor import Executor
from codegen_mcp.sandbox_agent.gitcheck import (
    GitCall,
    check_author,
    check_clone_url,
    check_ref,
    clean_progress,
    clone_progress,
    default_clone_dest,
    diffstat,
    git_error_sentence,
    head_of,
    parse_name_status,
    parse_numstat,
)
from codegen_mcp.sandbox_agent.process import Captured, ProcessOutcome, ProgressCaptured, stopped
from codegen_mcp.sandbox_agent.requirements import GIT_NETWORK_REMEDY, network_disabled
from codegen_mcp.sandbox_agent.sandboxed import run_sandboxed
from codegen_mcp.sandbox_agent.tasks import Outcome, Task
from codegen_mcp.sandbox_agent.workspace import Workspace, is_inside

log = logging.getLogger(__name__)

LOG_TAIL_BYTES = 4096
GIT_OUTPUT_CAP = 8 * 1024 * 1024
# Variables of the agent's environment git may inherit: proxies and TLS trust, never anything else.
GIT_ENV_NAMES = frozenset(
    {
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "no_proxy",
        "all_proxy",
        "GIT_SSL_CAINFO",
        "GIT_SSL_CAPATH",
    }
)
_FILE_VARS = ("GIT_SSL_CAINFO", "GIT_SSL_CAPATH")
GIT_BASE_ENV = {
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_ASKPASS": "",
    "GCM_INTERACTIVE": "never",
}
GIT_BASE_CONFIG = (
    "safe.directory=*",
    "credential.helper=",
    "core.fsmonitor=false",
    "commit.gpgsign=false",
    "tag.gpgsign=false",
    "init.defaultBranch=main",
    "advice.detachedHead=false",
    "http.sslVerify=true",
)
CLONE_CONFIG = ("protocol.allow=never", "protocol.https.allow=always", "submodule.recurse=false")


# --- running git -------------------------------------------------------------------------------------


class GitOps:
    """git.clone and git.commit for one workspace."""

    def __init__(
        self,
        settings: AgentSettings,
        *,
        executor: Executor,
        workspace: Workspace,
        environ: Mapping[str, str],
    ) -> None:
        self.settings = settings
        self.executor = executor
        self.workspace = workspace
        self.git = shutil.which("git", path=environ.get("PATH") or "/usr/local/bin:/usr/bin:/bin")
        self.env = {k: v for k, v in environ.items() if k in GIT_ENV_NAMES}
        self._ca_bundle: Path | None = None

    def _require_git(self) -> str:
        if self.git is None:
            raise CodegenError("git is not installed in this sandbox", code=ErrorCode.SANDBOX_UNAVAILABLE)
        return self.git

    def _ca_files(self) -> tuple[dict[str, str], list[Path]]:
        """Environment and files for TLS trust: the extra CA bundle setting, or the agent's GIT_SSL_* vars."""
        env: dict[str, str] = {}
        files: list[Path] = []
        extra = self.settings.git_extra_ca_bundle
        if extra is not None:
            bundle = self._combined_bundle(extra)
            env["GIT_SSL_CAINFO"] = str(bundle)
            files.append(bundle)
            return env, files
        for name in _FILE_VARS:
            value = self.env.get(name)
            if value and os.path.isabs(value) and os.path.exists(value):
                files.append(Path(value))
        return env, files

    def _combined_bundle(self, extra: Path) -> Path:
        """The system's CA certificates plus `extra`, in the agent's state (shown to git read-only)."""
        if self._ca_bundle is not None and self._ca_bundle.exists():
            return self._ca_bundle
        paths = ssl.get_default_verify_paths()
        system = b""
        for candidate in (paths.cafile, paths.openssl_cafile):
            if candidate and os.path.isfile(candidate):
                system = Path(candidate).read_bytes()
                break
        try:
            added = extra.read_bytes()
        except OSError as err:
            raise CodegenError(
                f"the CA bundle {extra} (git_extra_ca_bundle) cannot be read: {err.strerror}",
                code=ErrorCode.SANDBOX_UNAVAILABLE,
            ) from None
        bundle = self.executor.state_dir / "git-ca-bundle.pem"
        tmp = bundle.with_name(f".{bundle.name}.{secrets.token_hex(4)}")
        tmp.write_bytes(system.rstrip(b"\n") + b"\n" + added)
        os.chmod(tmp, 0o644)
        os.replace(tmp, bundle)
        self._ca_bundle = bundle
        return bundle

    async def run(
        self,
        task: Task | None,
        args: Sequence[str],
        *,
        timeout_s: float,
        config: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        bind_files: Sequence[Path] = (),
        stderr: Captured | None = None,
    ) -> GitCall:
        argv = [self._require_git()]
        for item in (*GIT_BASE_CONFIG, *config):
            argv += ["-c", item]
        argv += list(args)
        out = Captured(cap=GIT_OUTPUT_CAP)
        err = stderr if stderr is not None else Captured(cap=LOG_TAIL_BYTES, keep_tail=True)
        result: ProcessOutcome = await run_sandboxed(
            self.executor,
            task,
            argv,
            timeout_s=max(0.1, timeout_s),
            stdout=out,
            stderr=err,
            env={**self.env, **GIT_BASE_ENV, **(env or {})},
            bind_files=bind_files,
            what="git",
        )
        stop = stopped(result, "git", timeout_s, self.executor.settings.tmp_dir)
        return GitCall(result.exit_code, out.text(), err.text(), result.timed_out, result.cancelled, stop)

    # --- git.clone ------------------------------------------------------------------------------------

    def prepare_clone(self, args: GitCloneArgs) -> tuple[str, Path]:
        """Check a clone before it becomes a task: the URL, egress, git itself, and the destination."""
        url = check_clone_url(args.url)
        if args.branch is not None:
            check_ref(args.branch)
        if not self.settings.network:
            raise network_disabled("git.clone", GIT_NETWORK_REMEDY)
        self._require_git()
        dest_name = args.dest if args.dest is not None else default_clone_dest(url)
        dest = self.workspace.resolve(dest_name)
        if dest == self.workspace.root:
            raise InvalidArgument("`dest` must be a folder inside the workspace, not the workspace itself")
        for folder in self.workspace.protected:
            if is_inside(folder, dest) or is_inside(dest, folder):
                raise InvalidArgument(f"`dest` may not be or contain `{folder.name}`, which the agent manages")
        if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
            raise CodegenError(f"`{dest_name}` exists and is not a folder", code=ErrorCode.CONFLICT)
        if dest.is_dir() and any(dest.iterdir()):
            raise CodegenError(
                f"`{dest_name}` already exists and is not empty; choose another `dest`", code=ErrorCode.CONFLICT
            )
        return url, dest

    async def clone(self, task: Task, args: GitCloneArgs, url: str, dest: Path, timeout_s: float) -> Outcome:
        started = time.monotonic()
        rel = self.workspace.relative(dest)
        ca_env, ca_files = await asyncio.to_thread(self._ca_files)

        def on_text(text: str) -> None:
            message = clone_progress(text)
            if message is not None:
                task.message = message

        task.message = f"git clone {url}"
        clone_args = ["clone", "--progress", "--no-recurse-submodules"]
        if args.branch is not None:
            clone_args += ["--branch", args.branch]
        if args.depth is not None:
            clone_args += ["--depth", str(args.depth)]
        clone_args += ["--", url, str(dest)]
        log_capture = ProgressCaptured(cap=LOG_TAIL_BYTES, keep_tail=True, on_text=on_text)
        call = await self.run(
            task,
            clone_args,
            timeout_s=timeout_s,
            config=CLONE_CONFIG,
            env=ca_env,
            bind_files=ca_files,
            stderr=log_capture,
        )
        log_tail = clean_progress(call.stderr)
        result = GitCloneResult(
            url=url,
            dest=rel,
            depth=args.depth,
            duration_s=round(time.monotonic() - started, 3),
            timed_out=call.timed_out,
            log_tail=log_tail,
        )
        if call.stop is not None:
            return Outcome(call.stop[0], clone=result, error=call.stop[1])
        if call.exit_code != 0:
            return Outcome(TaskState.FAILED, clone=result, error=git_error_sentence(call.stderr, "git clone"))
        head = await self.run(task, ["-C", str(dest), "log", "-1", "--format=%H%x00%D"], timeout_s=30)
        commit, branch = head_of(head)
        result = result.model_copy(
            update={"commit": commit, "branch": branch, "duration_s": round(time.monotonic() - started, 3)}
        )
        return Outcome(TaskState.SUCCEEDED, clone=result)

    # --- git.commit -----------------------------------------------------------------------------------

    def _repository(self, args: GitCommitArgs) -> tuple[Path, bool]:
        repo = self.workspace.resolve(args.repo)
        if not repo.exists():
            raise NotFound(f"`{args.repo}` does not exist in the workspace")
        if not repo.is_dir():
            raise CodegenError(f"`{args.repo}` is a file, not a folder", code=ErrorCode.NOT_A_DIRECTORY)
        for folder in self.workspace.protected:
            if is_inside(folder, repo):
                raise InvalidArgument(f"`repo` may not be inside `{folder.name}`, which the agent manages")
        is_repo = os.path.lexists(repo / ".git")
        if not is_repo and not args.init:
            raise CodegenError(
                f"`{args.repo}` is not a git repository (it has no .git); pass init=true to create one there",
                code=ErrorCode.NOT_FOUND,
            )
        return repo, is_repo

    def _pathspecs(self, repo: Path, paths: Sequence[str] | None) -> list[str]:
        if not paths:
            return ["."]
        specs: list[str] = []
        for raw in paths:
            resolved = self.workspace.resolve(raw)
            if not is_inside(repo, resolved):
                raise InvalidArgument(f"`{raw[:120]}` is outside the repository")
            for folder in self.workspace.protected:
                if is_inside(folder, resolved):
                    raise InvalidArgument(f"`{raw[:120]}` is inside `{folder.name}`, which the agent manages")
            specs.append(resolved.relative_to(repo).as_posix() if resolved != repo else ".")
        return specs

    def _exclude_file(self, repo: Path) -> Path | None:
        """An excludes file keeping the agent's folders (venv, state) out of `git add -A` at the root."""
        patterns = [
            "/" + folder.relative_to(repo).as_posix() + "/"
            for folder in self.workspace.protected
            if folder != repo and is_inside(repo, folder)
        ]
        patterns.append(f"/{_JUNIT_GLOB}")
        if repo == self.workspace.root:
            patterns.append(f"/{OUTPUT_FOLDER}/")  # cut run output the coordinator saved for fs.read
        path = self.executor.state_dir / f"git-exclude-{secrets.token_hex(4)}"
        path.write_text("\n".join(patterns) + "\n", encoding="utf-8")
        os.chmod(path, 0o644)
        return path

    async def commit(self, args: GitCommitArgs, timeout_s: float) -> GitCommitResult:
        self._require_git()
        if not args.message.strip():
            raise InvalidArgument("`message` must not be blank")
        name, email = check_author(
            args.author_name or self.settings.git_author_name, args.author_email or self.settings.git_author_email
        )
        repo, is_repo = await asyncio.to_thread(self._repository, args)
        specs = self._pathspecs(repo, args.paths)
        deadline = time.monotonic() + timeout_s
        rel = self.workspace.relative(repo) if repo != self.workspace.root else "."
        exclude = await asyncio.to_thread(self._exclude_file, repo)
        try:
            config = (f"core.excludesFile={exclude}",)
            binds = [exclude] if exclude is not None else []

            async def git(*argv: str, env: Mapping[str, str] | None = None) -> GitCall:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise CodegenError(f"git.commit took longer than {timeout_s:g} s", code=ErrorCode.TIMEOUT)
                call = await self.run(
                    None, ["-C", str(repo), *argv], timeout_s=remaining, config=config, env=env, bind_files=binds
                )
                if call.timed_out:
                    raise CodegenError(f"git.commit took longer than {timeout_s:g} s", code=ErrorCode.TIMEOUT)
                return call

            initialized = False
            if not is_repo:
                call = await git("init", "-q")
                if call.exit_code != 0:
                    raise CodegenError(git_error_sentence(call.stderr, "git init"), code=ErrorCode.GIT_FAILED)
                initialized = True
            literal = {"GIT_LITERAL_PATHSPECS": "1"}
            call = await git("add", "-A", "--", *specs, env=literal)
            if call.exit_code != 0:
                raise CodegenError(git_error_sentence(call.stderr, "git add"), code=ErrorCode.GIT_FAILED)
            status = await git("diff", "--cached", "--name-status", "-z", "-M")
            if status.exit_code != 0:
                raise CodegenError(git_error_sentence(status.stderr, "git diff"), code=ErrorCode.GIT_FAILED)
            changes = parse_name_status(status.stdout)
            if not changes:
                where = "the given paths have" if args.paths else f"the repository `{rel}` has"
                raise CodegenError(
                    f"nothing to commit: {where} no changes since the last commit", code=ErrorCode.CONFLICT
                )
            numstat = await git("diff", "--cached", "--numstat", "-z", "-M")
            counts = parse_numstat(numstat.stdout) if numstat.exit_code == 0 else {}
            author = {
                "GIT_AUTHOR_NAME": name,
                "GIT_AUTHOR_EMAIL": email,
                "GIT_COMMITTER_NAME": name,
                "GIT_COMMITTER_EMAIL": email,
            }
            call = await git("commit", "-q", "--cleanup=verbatim", "-m", args.message, env=author)
            if call.exit_code != 0:
                raise CodegenError(
                    git_error_sentence(call.stderr or call.stdout, "git commit"), code=ErrorCode.GIT_FAILED
                )
            head = await git("log", "-1", "--format=%H%x00%D")
        finally:
            if exclude is not None:
                with contextlib.suppress(OSError):
                    exclude.unlink()
        commit, branch = head_of(head)
        if commit is None:
            raise CodegenError("git committed but the new commit could not be read back", code=ErrorCode.GIT_FAILED)
        files = [
            GitFileChange(
                path=path,
                status=status_name,
                old_path=old,
                insertions=counts.get(path, (None, None))[0],
                deletions=counts.get(path, (None, None))[1],
            )
            for status_name, path, old in changes
        ]
        return GitCommitResult(
            commit=commit,
            branch=branch,
            repo=rel,
            initialized=initialized,
            author=f"{name} <{email}>",
            files=files,
            files_changed=len(files),
            insertions=sum(f.insertions or 0 for f in files),
            deletions=sum(f.deletions or 0 for f in files),
            diffstat=diffstat(files),
        )


_JUNIT_GLOB = ".codegen-junit-*.xml"
