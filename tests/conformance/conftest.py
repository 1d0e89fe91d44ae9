"""Harness for the official MCP conformance suite (npm `@modelcontextprotocol/conformance`).

The suite is installed next to this file by `tests/conformance/install.sh` (`npm ci` from the pinned
`package.json` + `package-lock.json`); these fixtures find it, make it loadable on node 20, start one
coordinator process for the module and run one scenario at a time against it.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.coordinator import CoordinatorProcess, start_coordinator, state_root, stop_process

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
PACKAGE_JSON = HERE / "package.json"
SUITE_PACKAGE = "@modelcontextprotocol/conformance"
SUITE_DIR = HERE / "node_modules" / SUITE_PACKAGE
SUITE_BUNDLE = SUITE_DIR / "dist" / "index.js"
INSTALL_HINT = "run `bash tests/conformance/install.sh` (npm ci into tests/conformance/node_modules)"

COORDINATOR_START_TIMEOUT_S = 60.0
COORDINATOR_STOP_TIMEOUT_S = 10.0
SCENARIO_TIMEOUT_S = 90.0  # the slowest scenario (server-sse-polling) bounds its own reads at 10 s + 5 s

# --- node 20 compatibility ------------------------------------------------------------------------
#
# The suite's single-file bundle starts with `import{existsSync as a,globSync as o,…}from"fs"`, and
# `fs.globSync` exists only from node 22 on, so on node 20 the module fails to link before any scenario
# runs. Only the `tier-check` command calls it; the server scenarios never do. So we drop that one
# name from the import and bind the same local name to a stub that throws if it is ever called.
# The rewrite is idempotent (a marker comment records it) and touches only the installed copy.

GLOBSYNC_MARKER = "/* codegen-mcp: fs.globSync import removed for node < 22, see tests/conformance */"
_FS_IMPORT_WITH_GLOBSYNC = re.compile(
    r'import\{(?P<before>[^}]*?)\bglobSync as (?P<local>[\w$]+),?(?P<after>[^}]*)\}from"fs";'
)


def patch_out_fs_globsync(bundle: Path) -> bool:
    """Remove `globSync` from the bundle's `fs` import; True if the file was changed now."""
    text = bundle.read_text(encoding="utf-8")
    if GLOBSYNC_MARKER in text:
        return False
    match = _FS_IMPORT_WITH_GLOBSYNC.search(text)
    if match is None:
        return False  # a release without the import: nothing to do
    names = ",".join(part for part in (match["before"].rstrip(","), match["after"]) if part)
    stub = f'const {match["local"]}=()=>{{throw Error("fs.globSync needs node >= 22")}};'
    replacement = f'import{{{names}}}from"fs";{GLOBSYNC_MARKER}{stub}'
    bundle.write_text(text[: match.start()] + replacement + text[match.end() :], encoding="utf-8")
    return True


# --- the suite --------------------------------------------------------------------------------------


_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


@dataclasses.dataclass(frozen=True)
class Check:
    id: str
    status: str  # SUCCESS, FAILURE, WARNING, INFO (SKIPPED in some releases)
    description: str
    error: str | None

    def line(self) -> str:
        text = f"{self.status:<8} {self.id}: {self.description}"
        return f"{text} — {self.error}" if self.error else text


@dataclasses.dataclass(frozen=True)
class ScenarioResult:
    scenario: str
    returncode: int
    checks: list[Check]
    output: str

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.status == "FAILURE"]

    def report(self) -> str:
        lines = [f"scenario {self.scenario}: exit {self.returncode}, {len(self.checks)} checks"]
        lines += [f"  {c.line()}" for c in self.checks]
        return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class ConformanceSuite:
    node: str
    bundle: Path
    version: str

    def run_server_scenario(self, url: str, scenario: str, output_dir: Path) -> ScenarioResult:
        """Run one server scenario; its verdict is the `checks.json` it writes, not only its exit code."""
        cmd = [self.node, str(self.bundle), "server", "--url", url, "--scenario", scenario, "-o", str(output_dir)]
        proc = subprocess.run(cmd, cwd=output_dir, capture_output=True, text=True, timeout=SCENARIO_TIMEOUT_S)
        output = _ANSI_ESCAPE.sub("", proc.stdout + proc.stderr)  # the suite colours its report regardless
        found = sorted(output_dir.glob(f"server-{scenario}-*/checks.json"))
        if len(found) != 1:
            raise AssertionError(f"expected one checks.json for {scenario}, found {found}; suite said:\n{output}")
        raw: list[dict[str, Any]] = json.loads(found[0].read_text(encoding="utf-8"))
        checks = [
            Check(id=c["id"], status=c["status"], description=c.get("description", ""), error=c.get("errorMessage"))
            for c in raw
        ]
        return ScenarioResult(scenario=scenario, returncode=proc.returncode, checks=checks, output=output)


@pytest.fixture(scope="session")
def conformance_suite() -> ConformanceSuite:
    node = shutil.which("node")
    if node is None:
        pytest.skip(reason="conformance: `node` is not on PATH (install Node.js >= 20 and npm)")
    if not SUITE_BUNDLE.is_file():
        pytest.skip(reason=f"conformance: {SUITE_PACKAGE} is not installed in {HERE / 'node_modules'}; {INSTALL_HINT}")
    pinned = json.loads(PACKAGE_JSON.read_text(encoding="utf-8"))["dependencies"][SUITE_PACKAGE]
    installed = json.loads((SUITE_DIR / "package.json").read_text(encoding="utf-8"))["version"]
    if installed != pinned:
        pytest.fail(f"conformance: {SUITE_PACKAGE} {installed} is installed but {pinned} is pinned; {INSTALL_HINT}")
    patch_out_fs_globsync(SUITE_BUNDLE)
    return ConformanceSuite(node=node, bundle=SUITE_BUNDLE, version=installed)


# --- the server under test ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def coordinator() -> Iterator[CoordinatorProcess]:
    """One coordinator on 127.0.0.1 with a random port and a temporary state dir for the module."""
    for root in state_root():
        state = root / "state"
        state.mkdir()
        # `test_reconnection`, which server-sse-polling calls, is served only when asked for.
        server = start_coordinator(state, env={"CODEGEN_CONFORMANCE_TOOLS": "true"})
        try:
            yield server
        finally:
            stop_process(server.proc)


@pytest.fixture
def fs_globsync_patcher() -> Callable[[Path], bool]:
    """`patch_out_fs_globsync`, for the tests of the patch itself (test modules never import conftest)."""
    return patch_out_fs_globsync
