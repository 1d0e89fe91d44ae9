"""The official MCP conformance suite's server scenarios, run against a real coordinator process.

Each scenario is one test. The verdict is the suite's own: every check it writes to `checks.json` with
status FAILURE fails the test; WARNINGs (SHOULD-level advice) are printed but pass, as in the suite, except
in the scenarios `MUST_SUCCEED` names.
Install the suite first with `bash tests/conformance/install.sh`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:  # fixtures come from conftest.py; never import it at run time
    from tests.conformance.conftest import ConformanceSuite
    from tests.support.coordinator import CoordinatorProcess

pytestmark = pytest.mark.conformance

# Scenarios whose SHOULD-level advice the coordinator follows in full: a WARNING fails them too, and these
# checks must have run and succeeded.
MUST_SUCCEED = {
    # Resumable streams: an event store, a session's negotiated version for requests that send an older one,
    # and `test_reconnection` (CODEGEN_CONFORMANCE_TOOLS), which closes its stream mid-call.
    "server-sse-polling": {"server-sse-priming-event", "server-sse-retry-field", "server-sse-disconnect-resume"},
}

SCENARIOS = [
    "server-initialize",
    "ping",
    "tools-list",
    "logging-set-level",
    "dns-rebinding-protection",
    "server-sse-polling",
]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario_passes_against_coordinator(
    scenario: str, conformance_suite: ConformanceSuite, coordinator: CoordinatorProcess, tmp_path: Path
) -> None:
    assert coordinator.alive(), f"the coordinator exited before {scenario}:\n{coordinator.log_tail()}"

    result = conformance_suite.run_server_scenario(f"{coordinator.url}/mcp", scenario, tmp_path)
    print(result.report())  # shown with -rA, and with the failure below

    context = f"{result.report()}\n\nsuite output:\n{result.output}\n\ncoordinator log:\n{coordinator.log_tail()}"
    if not result.checks:
        pytest.fail(f"{scenario} recorded no checks\n{context}", pytrace=False)
    if result.failures:
        failed = "\n".join(f"  {c.line()}" for c in result.failures)
        pytest.fail(f"{scenario}: {len(result.failures)} failed check(s):\n{failed}\n\n{context}", pytrace=False)
    must = MUST_SUCCEED.get(scenario)
    short = [c for c in result.checks if must and (c.status == "WARNING" or (c.id in must and c.status != "SUCCESS"))]
    missing = (must or set()) - {c.id for c in result.checks}
    if short or missing:
        lines = [f"  {c.line()}" for c in short] + [f"  {check}: not run" for check in sorted(missing)]
        pytest.fail(
            f"{scenario}: checks that must succeed (without warnings) did not:\n" + "\n".join(lines) + f"\n\n{context}",
            pytrace=False,
        )
    # The suite exits non-zero on failed checks; a non-zero exit without one means it broke by itself.
    if result.returncode != 0:
        pytest.fail(f"{scenario}: the suite exited {result.returncode} with no failed check\n{context}", pytrace=False)
    assert coordinator.alive(), f"the coordinator exited during {scenario}:\n{coordinator.log_tail()}"
