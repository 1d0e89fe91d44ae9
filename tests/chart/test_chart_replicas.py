"""Two coordinator replicas by default, without Service affinity: they share MCP sessions through Redis (the
chart's own unless one is named), and a chart that would split sessions between replicas refuses to render."""

from __future__ import annotations

import pytest

from .conftest import Renderer, find, plain_env
from .test_chart_event_store import coordinator_policy
from .test_chart_render import coordinator


def test_two_replicas_share_sessions_through_the_charts_own_redis(render: Renderer) -> None:
    docs = render()
    deployment = coordinator(docs)
    assert deployment["spec"]["replicas"] == 2
    service = next(d for d in docs if d["kind"] == "Service" and d["spec"]["ports"][0]["name"] == "mcp")
    assert "sessionAffinity" not in service["spec"]
    env = plain_env(deployment)
    namespace = deployment["metadata"]["namespace"]
    redis = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-redis"))
    name = redis["metadata"]["name"]
    assert env["CODEGEN_EVENT_STORE"] == "redis" and env["CODEGEN_SHARED_SESSIONS"] == "true"
    assert env["CODEGEN_REDIS_URL"] == f"redis://{name}.{namespace}.svc:6379/0"
    assert {"ports": [{"port": 6379, "protocol": "TCP"}]} in coordinator_policy(docs)["spec"]["egress"]

    served = find(docs, "Service", name)
    assert served["spec"]["selector"] == redis["spec"]["selector"]["matchLabels"]
    args = redis["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--save") + 1] == "" and args[args.index("--maxmemory-policy") + 1] == "volatile-ttl"
    policy = find(docs, "NetworkPolicy", name)
    assert policy["spec"]["egress"] == []
    [rule] = policy["spec"]["ingress"]
    assert rule["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "coordinator"


@pytest.mark.parametrize(
    "store", [{"redisUrl": "redis://redis.cache:6379/0"}, {"redisUrlSecret": {"name": "redis-auth", "key": "url"}}]
)
def test_a_redis_of_ones_own_replaces_the_charts(render: Renderer, store: dict[str, object]) -> None:
    docs = render({"coordinator": {"eventStore": store}})
    assert not [d for d in docs if d["metadata"]["name"].endswith("-redis")]
    assert plain_env(coordinator(docs))["CODEGEN_SHARED_SESSIONS"] == "true"


def test_replicas_that_cannot_share_sessions_need_affinity(render: Renderer) -> None:
    with pytest.raises(Exception, match="coordinator.replicas above 1 needs coordinator.eventStore.type redis"):
        render({"coordinator": {"eventStore": {"type": "memory"}}})
    docs = render({"coordinator": {"eventStore": {"type": "memory"}, "service": {"sessionAffinity": "ClientIP"}}})
    service = next(d for d in docs if d["kind"] == "Service" and d["spec"]["ports"][0]["name"] == "mcp")
    assert service["spec"]["sessionAffinity"] == "ClientIP"
    assert coordinator(docs)["spec"]["replicas"] == 2
