"""The Dockerfiles, read as text (no Docker engine here to build them): multi-stage, non-root uid 10001 to
match the Pods' securityContext, the sandbox image free of mcp/kopf/kubernetes, the right entrypoints."""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from codegen_mcp.operator.settings import OperatorSettings

from .conftest import CHART_DIR, REPO

SANDBOX = REPO / "images" / "sandbox" / "Dockerfile"
CONTROL_PLANE = REPO / "images" / "control-plane" / "Dockerfile"
UID = 10001


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [arg for kw, arg in self.instructions if kw == keyword]


def parse(path: Path) -> list[Stage]:
    """Stages of a Dockerfile with their instructions (continuation lines joined, comments dropped)."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    stages: list[Stage] = []
    for line in logical:
        keyword, _, arg = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            match = re.match(r"^(\S+)(?:\s+AS\s+(\S+))?$", arg.strip(), flags=re.IGNORECASE)
            assert match, line
            stages.append(Stage(base=match.group(1), name=match.group(2)))
        elif stages:
            stages[-1].instructions.append((keyword, arg.strip()))
    return stages


def env_of(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for arg in stage.all("ENV"):
        for key, value in re.findall(r"(\w+)=(\S+)", arg):
            env[key] = value
    return env


@pytest.mark.parametrize("dockerfile", [SANDBOX, CONTROL_PLANE], ids=["sandbox", "control-plane"])
def test_images_are_multi_stage_and_run_as_uid_10001(dockerfile: Path) -> None:
    stages = parse(dockerfile)
    assert len(stages) >= 2, "build tools stay in the build stage"
    build, final = stages[0], stages[-1]
    assert build.name, "the build stage is named so the final stage can copy from it"
    assert any(f"--from={build.name}" in c for c in final.all("COPY")), "the final stage copies the built venv"
    assert final.all("USER")[-1] == f"{UID}:{UID}", "numeric non-root user (runAsNonRoot can check it)"
    keywords = [kw for kw, _ in final.instructions]
    last_run = max(i for i, kw in enumerate(keywords) if kw == "RUN")
    assert keywords.index("USER") > last_run, "nothing runs as root after the user is set"
    assert json.loads(final.all("ENTRYPOINT")[-1]) == ["codegen-mcp"]
    assert all("useradd" not in r or f"--uid {UID}" in r for r in final.all("RUN"))


def test_sandbox_image_holds_only_the_agent() -> None:
    build, final = parse(SANDBOX)[0], parse(SANDBOX)[-1]
    installs = [r for r in build.all("RUN") if "pip install" in r]
    assert installs and all(re.search(r"pip install (--upgrade pip|\.)(\s|$)", r) for r in installs), installs
    assert not any("[" in r.split("pip install", 1)[1].split("&&")[0] for r in installs), "no extras in the sandbox"
    # The build refuses to produce an image that contains what the agent must not need.
    checks = " ".join(build.all("RUN"))
    for module in ("mcp", "kopf", "kubernetes"):
        assert f"'{module}'" in checks
    assert "pip uninstall" not in checks, "pkg.install runs the agent's own pip: it must stay"
    assert json.loads(final.all("CMD")[-1]) == ["agent"]
    assert final.all("EXPOSE") == ["8080"]
    assert final.all("WORKDIR")[-1] == "/workspace"
    env = env_of(final)
    assert env["HOME"] == "/tmp" and env["CODEGEN_AGENT_WORKSPACE"] == "/workspace"
    assert env["CODEGEN_AGENT_PYTHON"].startswith("/usr/local/bin/python3")
    assert env["PYTHONDONTWRITEBYTECODE"] == "1", "the root filesystem is read-only in the Pod"


def test_control_plane_image_has_both_entrypoints() -> None:
    build, final = parse(CONTROL_PLANE)[0], parse(CONTROL_PLANE)[-1]
    assert any('pip install ".[all]"' in r for r in build.all("RUN"))
    serve = ["serve", "--backend", "kubernetes", "--host", "0.0.0.0", "--port", "8765"]
    assert json.loads(final.all("CMD")[-1]) == serve
    assert set(final.all("EXPOSE")[-1].split()) == {"8765", "8081"}


def test_uids_agree_across_images_chart_and_operator() -> None:
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    assert values["sessions"]["uid"] == values["sessions"]["gid"] == UID
    assert values["podSecurityContext"]["runAsUser"] == values["podSecurityContext"]["runAsGroup"] == UID
    defaults = OperatorSettings()
    assert defaults.sandbox_uid == defaults.sandbox_gid == UID


def test_build_context_sends_what_the_dockerfiles_copy() -> None:
    ignore = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()]
    rules = [line for line in ignore if line and not line.startswith("#")]
    assert rules[0] == "*", "an allowlist: nothing reaches the build context unless listed"
    allowed = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
    readme = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["readme"]
    for dockerfile in (SANDBOX, CONTROL_PLANE):
        for stage in parse(dockerfile):
            for copy in stage.all("COPY"):
                if copy.startswith("--from"):
                    continue
                sources = copy.split()[:-1]
                for source in sources:
                    assert source.rstrip("/") in allowed, f"{dockerfile.name}: {source} is excluded by .dockerignore"
                    if source != readme:  # pyproject's readme: written with the README, needed by `pip install .`
                        assert (REPO / source).exists(), source
                assert readme in sources or "src" in sources
