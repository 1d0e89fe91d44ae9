"""The coordinator's Prometheus text output."""

from __future__ import annotations

from codegen_mcp.coordinator.metrics import Metrics


def test_counts_and_cumulative_histogram() -> None:
    metrics = Metrics(sessions=lambda: 3)
    metrics.observe_call("echo", "ok", 0.002)
    metrics.observe_call("echo", "ok", 0.03)
    metrics.observe_call("run.python", "error", 400.0)  # beyond the last bucket: only +Inf counts it
    text = metrics.render()
    lines = set(text.splitlines())
    assert "codegen_mcp_sessions 3" in lines
    assert 'codegen_mcp_tool_calls_total{tool="echo",outcome="ok"} 2' in lines
    assert 'codegen_mcp_tool_calls_total{tool="run.python",outcome="error"} 1' in lines
    assert 'codegen_mcp_tool_call_duration_seconds_bucket{tool="echo",le="0.005"} 1' in lines
    assert 'codegen_mcp_tool_call_duration_seconds_bucket{tool="echo",le="0.05"} 2' in lines
    assert 'codegen_mcp_tool_call_duration_seconds_bucket{tool="echo",le="+Inf"} 2' in lines
    assert 'codegen_mcp_tool_call_duration_seconds_bucket{tool="run.python",le="300"} 0' in lines
    assert 'codegen_mcp_tool_call_duration_seconds_bucket{tool="run.python",le="+Inf"} 1' in lines
    assert 'codegen_mcp_tool_call_duration_seconds_count{tool="run.python"} 1' in lines
    assert text.endswith("\n")


def test_label_values_are_escaped() -> None:
    metrics = Metrics(sessions=lambda: 0)
    metrics.observe_call('we"ird\\tool', "ok", 0.1)
    assert 'codegen_mcp_tool_calls_total{tool="we\\"ird\\\\tool",outcome="ok"} 1' in metrics.render()
