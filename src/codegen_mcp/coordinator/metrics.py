"""Prometheus metrics of the coordinator, in the text exposition format (no client library needed).

Only counts and durations by tool and outcome: no session ids, paths or arguments, so `/metrics` can be
scraped without the MCP bearer token.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

# Seconds; tool calls range from a millisecond (echo) to minutes (pkg.install, test.run).
BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


@dataclass
class _Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * len(BUCKETS))
    total: int = 0
    sum: float = 0.0

    def observe(self, value: float) -> None:
        index = bisect_left(BUCKETS, value)
        if index < len(BUCKETS):
            self.counts[index] += 1
        self.total += 1
        self.sum += value


def _labels(**labels: str) -> str:
    escaped = (
        f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"' for k, v in labels.items()
    )
    return "{" + ",".join(escaped) + "}"


class Metrics:
    def __init__(self, sessions: Callable[[], int]) -> None:
        self._sessions = sessions
        self._calls: dict[tuple[str, str], int] = defaultdict(int)
        self._durations: dict[str, _Histogram] = defaultdict(_Histogram)

    def observe_call(self, tool: str, outcome: str, duration_s: float) -> None:
        self._calls[(tool, outcome)] += 1
        self._durations[tool].observe(duration_s)

    def render(self) -> str:
        lines = [
            "# HELP codegen_mcp_sessions Sandboxes this coordinator currently serves.",
            "# TYPE codegen_mcp_sessions gauge",
            f"codegen_mcp_sessions {self._sessions()}",
            "# HELP codegen_mcp_tool_calls_total MCP tool calls, by tool and outcome (ok, error, cancelled).",
            "# TYPE codegen_mcp_tool_calls_total counter",
        ]
        for (tool, outcome), count in sorted(self._calls.items()):
            lines.append(f"codegen_mcp_tool_calls_total{_labels(tool=tool, outcome=outcome)} {count}")
        lines += [
            "# HELP codegen_mcp_tool_call_duration_seconds Duration of MCP tool calls, by tool.",
            "# TYPE codegen_mcp_tool_call_duration_seconds histogram",
        ]
        for tool, hist in sorted(self._durations.items()):
            cumulative = 0
            for bound, count in zip(BUCKETS, hist.counts, strict=True):
                cumulative += count
                lines.append(
                    f"codegen_mcp_tool_call_duration_seconds_bucket{_labels(tool=tool, le=f'{bound:g}')} {cumulative}"
                )
            lines.append(f"codegen_mcp_tool_call_duration_seconds_bucket{_labels(tool=tool, le='+Inf')} {hist.total}")
            lines.append(f"codegen_mcp_tool_call_duration_seconds_sum{_labels(tool=tool)} {hist.sum:.6f}")
            lines.append(f"codegen_mcp_tool_call_duration_seconds_count{_labels(tool=tool)} {hist.total}")
        return "\n".join(lines) + "\n"
