"""coordinator.eventStore reaches the coordinator's env, and with Redis its NetworkPolicy lets it reach Redis
(the chart's own, by default: tests/chart/test_chart_replicas.py)."""

from __future__ import annotations

from typing import Any

from .conftest import Renderer, env_entry, plain_env
from .test_chart_render import coordinator


def coordinator_policy(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == "NetworkPolicy" and d["metadata"]["name"].endswith("-coordinator"))


def test_the_memory_store_keeps_streams_in_each_replica(render: Renderer) -> None:
    docs = render({"coordinator": {"replicas": 1, "eventStore": {"type": "memory"}}})
    env = plain_env(coordinator(docs))
    assert env["CODEGEN_EVENT_STORE"] == "memory" and "CODEGEN_REDIS_URL" not in env
    assert env["CODEGEN_SHARED_SESSIONS"] == "false"
    assert env["CODEGEN_STREAM_RETRY_MS"] == "1000"
    assert env["CODEGEN_EVENT_STORE_MAX_EVENTS_PER_STREAM"] == "1000"
    assert env["CODEGEN_EVENT_STORE_TTL_S"] == "3600"
    ports = [p.get("port") for rule in coordinator_policy(docs)["spec"]["egress"] for p in rule.get("ports", [])]
    assert 6379 not in ports
    assert not [d for d in docs if d["metadata"]["name"].endswith("-redis")]


def test_a_redis_store_gets_its_url_and_a_way_out(render: Renderer) -> None:
    store = {"type": "redis", "redisUrl": "redis://redis.cache:6379/0", "retryMs": 500}
    docs = render({"coordinator": {"eventStore": store}})
    env = plain_env(coordinator(docs))
    assert env["CODEGEN_EVENT_STORE"] == "redis" and env["CODEGEN_REDIS_URL"] == "redis://redis.cache:6379/0"
    assert env["CODEGEN_STREAM_RETRY_MS"] == "500"
    assert {"ports": [{"port": 6379, "protocol": "TCP"}]} in coordinator_policy(docs)["spec"]["egress"]


def test_a_redis_url_with_a_password_comes_from_a_secret(render: Renderer) -> None:
    secret = {"name": "redis-auth", "key": "url"}
    store = {"type": "redis", "redisUrl": "redis://ignored", "redisUrlSecret": secret}
    entry = env_entry(coordinator(render({"coordinator": {"eventStore": store}})), "CODEGEN_REDIS_URL")
    assert entry == {"name": "CODEGEN_REDIS_URL", "valueFrom": {"secretKeyRef": secret}}
