"""The chart's Grafana dashboard and Prometheus alerts, checked offline with real checkers.

- the dashboard JSON is read by Grafana's own generated models (grafana-foundation-sdk): every key must be one
  the dashboard schema knows (a round trip keeps it), every panel type a known panel plugin, every query a
  Prometheus query;
- the PrometheusRule's rules pass `promtool check rules` (Prometheus's own checker, Debian package `prometheus`);
- every PromQL expression of both parses (promql-parser) and names only metrics that a real coordinator's and a
  real operator's /metrics expose, or Prometheus's own `up`.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
import yaml

from codegen_mcp.operator.metrics import OperatorMetrics
from tests.support.coordinator import start_coordinator, state_root, stop_process

from .conftest import CHART_DIR, NAMESPACE, VALUE_SETS, Renderer, find, find_all

DASHBOARD_FILE = CHART_DIR / "dashboards" / "codegen-mcp.json"
# Grafana's own variables, as Grafana substitutes them before a query reaches Prometheus.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$namespace": NAMESPACE}
# Alerts the chart promises (README: Metrics, dashboards and alerts).
ALERTS = {
    "CodegenMcpCoordinatorDown",
    "CodegenMcpToolErrorRatioHigh",
    "CodegenMcpAuditEventsDropped",
    "CodegenMcpAuditSinkUnhealthy",
    "CodegenMcpSandboxStartSlow",
    "CodegenMcpOperatorReconcileErrors",
    "CodegenMcpOperatorDown",
}


@pytest.fixture(scope="module")
def monitored(render: Renderer) -> list[dict[str, Any]]:
    return render(VALUE_SETS["monitoring"])


def dashboard_of(docs: list[dict[str, Any]]) -> dict[str, Any]:
    config_map = find(docs, "ConfigMap", "codegen-mcp-dashboard")
    (text,) = config_map["data"].values()
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def rules_of(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [rule for group in find(docs, "PrometheusRule")["spec"]["groups"] for rule in group["rules"]]


def dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [v["query"]["query"] for v in dashboard["templating"]["list"] if isinstance(v.get("query"), dict)]
    return exprs


# --- what the chart renders --------------------------------------------------------------------------------------


def test_monitoring_is_off_by_default(render: Renderer) -> None:
    docs = render()
    assert not find_all(docs, "PrometheusRule") and not find_all(docs, "ServiceMonitor")
    assert not [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-dashboard")]


def test_the_dashboard_configmap_is_found_by_the_grafana_sidecar(monitored: list[dict[str, Any]]) -> None:
    config_map = find(monitored, "ConfigMap", "codegen-mcp-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "CodeGen-MCP"}
    assert dashboard_of(monitored) == json.loads(DASHBOARD_FILE.read_text())  # shipped as is


def test_the_operator_is_scraped_through_a_service_of_its_own(monitored: list[dict[str, Any]]) -> None:
    service = find(monitored, "Service", "codegen-mcp-operator")
    operator = find(monitored, "Deployment", "codegen-mcp-operator")
    (container,) = operator["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert service["spec"]["ports"][0]["targetPort"] == "metrics" and ports["metrics"] == 8082
    assert env["CODEGEN_OPERATOR_METRICS_PORT"] == "8082"
    assert service["spec"]["selector"].items() <= operator["spec"]["template"]["metadata"]["labels"].items()
    monitor = find(monitored, "ServiceMonitor", "codegen-mcp-operator")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"


def test_the_rule_has_every_alert_with_the_values_thresholds(render: Renderer, monitored: list[dict[str, Any]]) -> None:
    rules = {r["alert"]: r for r in rules_of(monitored)}
    assert set(rules) == ALERTS
    assert all(r["labels"]["team"] == "ml" and r["labels"]["severity"] for r in rules.values())
    assert find(monitored, "PrometheusRule")["metadata"]["labels"]["release"] == "prometheus"
    assert 'job="codegen-mcp"' in rules["CodegenMcpCoordinatorDown"]["expr"]  # the coordinator Service's name
    assert 'job="codegen-mcp-operator"' in rules["CodegenMcpOperatorDown"]["expr"]
    stricter = VALUE_SETS["monitoring"] | {
        "monitoring": {"prometheusRule": {"enabled": True, "toolErrorRatio": 0.05, "sandboxStartP95Seconds": 20}}
    }
    tuned = {r["alert"]: r["expr"] for r in rules_of(render(stricter))}
    assert tuned["CodegenMcpToolErrorRatioHigh"].rstrip().endswith("> 0.05")
    assert tuned["CodegenMcpSandboxStartSlow"].rstrip().endswith("> 20")
    without_operator = render(stricter | {"operator": {"metrics": {"enabled": False}}})
    assert not {r["alert"] for r in rules_of(without_operator)} & {
        "CodegenMcpOperatorDown",
        "CodegenMcpOperatorReconcileErrors",
    }
    services = find_all(without_operator, "Service")
    assert [
        s["metadata"]["name"] for s in services if s["metadata"]["labels"]["app.kubernetes.io/component"] != "redis"
    ] == ["codegen-mcp"]


def test_without_the_charts_service_monitors_no_alert_waits_on_their_jobs(render: Renderer) -> None:
    """Scraped some other way (annotations, a static config), the jobs the `up` alerts name never exist: those
    alerts would fire for good, so the rule leaves them out."""
    values = VALUE_SETS["monitoring"] | {"serviceMonitor": {"enabled": False}}
    alerts = {r["alert"] for r in rules_of(render(values))}
    assert alerts == ALERTS - {"CodegenMcpCoordinatorDown", "CodegenMcpOperatorDown"}


# --- the dashboard against Grafana's dashboard schema ------------------------------------------------------------


def schema_problems(dashboard: dict[str, Any]) -> list[str]:
    """What Grafana's generated dashboard models do not know in `dashboard` (empty: it is a valid dashboard)."""
    from grafana_foundation_sdk.cog import plugins
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models import prometheus
    from grafana_foundation_sdk.models.dashboard import Dashboard, Panel, RowPanel

    plugins.register_default_plugins()
    model = Dashboard.from_json(dashboard)
    problems = lost_in_round_trip(dashboard, json.loads(json.dumps(model, cls=JSONEncoder)), "dashboard")
    for index, panel in enumerate(model.panels or []):
        if isinstance(panel, RowPanel):
            continue
        assert isinstance(panel, Panel)
        if type(panel.options).__module__ == "builtins":  # no panel plugin claimed its options
            problems.append(f"panels[{index}]: unknown panel type {panel.type_val!r}")
        for target in panel.targets or []:
            if not isinstance(target, prometheus.Dataquery):
                problems.append(f"panels[{index}]: a target that is not a Prometheus query: {target!r}")
    return problems


def lost_in_round_trip(original: Any, read: Any, path: str) -> list[str]:
    """Keys the models dropped (unknown to the schema) and values they changed; defaults they add are fine."""
    if isinstance(original, dict) and isinstance(read, dict):
        problems = [f"{path}.{key}: not in the schema" for key in original if key not in read]
        return problems + [
            p for key in original if key in read for p in lost_in_round_trip(original[key], read[key], f"{path}.{key}")
        ]
    if isinstance(original, list) and isinstance(read, list) and len(original) == len(read):
        return [
            p
            for i, (a, b) in enumerate(zip(original, read, strict=True))
            for p in lost_in_round_trip(a, b, f"{path}[{i}]")
        ]
    return [] if original == read else [f"{path}: {original!r} read as {read!r}"]


@pytest.fixture(scope="module")
def grafana_models() -> None:
    pytest.importorskip(
        "grafana_foundation_sdk",
        reason="grafana-foundation-sdk (Grafana's dashboard models) is not installed: pip install -e '.[test]'",
    )


@pytest.mark.usefixtures("grafana_models")
def test_the_dashboard_is_valid_for_grafanas_schema(monitored: list[dict[str, Any]]) -> None:
    dashboard = dashboard_of(monitored)
    assert schema_problems(dashboard) == []
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    titles = {p["title"] for p in dashboard["panels"]}
    assert {"Tool calls per second", "Tool call latency p95", "Sandbox start latency", "Warm pool sandboxes",
            "Agent restarts", "Audit backlog", "Reconcile errors", "Sessions by phase"} <= titles  # fmt: skip


@pytest.mark.usefixtures("grafana_models")
def test_the_schema_check_catches_a_bad_dashboard() -> None:
    dashboard = json.loads(DASHBOARD_FILE.read_text())
    dashboard["panels"][1]["gridPoss"] = dashboard["panels"][1].pop("gridPos")  # misspelt
    dashboard["panels"][2]["type"] = "timeseriez"
    problems = schema_problems(dashboard)
    assert "dashboard.panels[1].gridPoss: not in the schema" in problems
    assert "panels[2]: unknown panel type 'timeseriez'" in problems


# --- the rules against promtool ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip(reason="promtool is not installed (Debian: apt-get install prometheus; .ci/run installs it)")
    return found


def check_rules(promtool: str, groups: list[dict[str, Any]], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": groups}))
    return subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)


def test_promtool_accepts_the_rules(promtool: str, monitored: list[dict[str, Any]], tmp_path: Path) -> None:
    checked = check_rules(promtool, find(monitored, "PrometheusRule")["spec"]["groups"], tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in checked.stdout


def test_promtool_refuses_a_broken_rule(promtool: str, tmp_path: Path) -> None:
    broken = [{"name": "x", "rules": [{"alert": "Broken", "expr": "sum(rate(codegen_mcp_tool_calls_total[5m]) by"}]}]
    checked = check_rules(promtool, broken, tmp_path)
    assert checked.returncode != 0 and "FAILED" in checked.stdout + checked.stderr


# --- every expression names metrics that exist -----------------------------------------------------------------


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (Grafana variables substituted first)."""
    import promql_parser

    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"an unknown Grafana variable in {expr!r}"
    if expr.startswith("label_values("):  # a Grafana variable query: label_values(metric, label)
        return {re.match(r"label_values\(([a-zA-Z_:][a-zA-Z0-9_:]*)", expr).group(1)}  # type: ignore[union-attr]
    names: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


def exposed_names(exposition: str) -> set[str]:
    """Every series name a /metrics text exposes or will expose: a labelled counter or histogram shows only its
    HELP and TYPE before its first observation, and those name its series (`_total`; `_bucket`, `_sum`, `_count`)."""
    from prometheus_client.parser import text_string_to_metric_families

    names: set[str] = set()
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "gauge": [""]}
    for family in text_string_to_metric_families(exposition):
        names |= {family.name + suffix for suffix in suffixes.get(family.type, [""])}
        names |= {sample.name for sample in family.samples}
    return names


@pytest.fixture(scope="module")
def coordinator_metrics() -> Iterator[str]:
    """The /metrics text of a real coordinator process (local backend: it has no cluster here)."""
    for root in state_root():
        state = root / "state"
        state.mkdir()
        process = start_coordinator(state)
        try:
            yield httpx.get(f"{process.url}/metrics", timeout=10).text
        finally:
            stop_process(process.proc)


@pytest.fixture
async def operator_metrics() -> AsyncIterator[str]:
    """The /metrics text the operator serves (the same server its startup handler starts, here with no cluster)."""
    metrics = OperatorMetrics()
    metrics.watch({}, {})
    await metrics.serve("127.0.0.1", 0)
    try:
        async with httpx.AsyncClient() as http:
            yield (await http.get(f"http://127.0.0.1:{metrics.port}/metrics")).text
    finally:
        await metrics.close()


async def test_expressions_name_only_metrics_that_exist(
    monitored: list[dict[str, Any]], coordinator_metrics: str, operator_metrics: str
) -> None:
    pytest.importorskip("promql_parser", reason="promql-parser is not installed: pip install -e '.[test]'")
    exposed = exposed_names(coordinator_metrics) | exposed_names(operator_metrics) | {"up"}
    exprs = dashboard_exprs(dashboard_of(monitored)) + [r["expr"] for r in rules_of(monitored)]
    used = {name: expr for expr in exprs for name in metric_names(expr)}
    assert set(used) - exposed == set(), {name: used[name] for name in set(used) - exposed}
    # What the dashboard and alerts promise to show: the new metrics are among them.
    assert {
        "codegen_mcp_tool_calls_total",
        "codegen_mcp_tool_call_duration_seconds_bucket",
        "codegen_mcp_sandbox_start_seconds_bucket",
        "codegen_mcp_agent_restarts_total",
        "codegen_mcp_audit_backlog",
        "codegen_mcp_audit_dropped_total",
        "codegen_mcp_audit_healthy",
        "codegen_operator_reconciles_total",
        "codegen_operator_sessions",
        "codegen_operator_pool_sandboxes",
    } <= set(used)


def test_the_name_check_catches_a_metric_that_does_not_exist() -> None:
    pytest.importorskip("promql_parser", reason="promql-parser is not installed: pip install -e '.[test]'")
    names = metric_names('sum by (tool) (rate(codegen_mcp_tool_cals_total{namespace="$namespace"}[$__rate_interval]))')
    assert names == {"codegen_mcp_tool_cals_total"}
    assert "codegen_mcp_tool_cals_total" not in exposed_names("# TYPE codegen_mcp_tool_calls counter\n")
