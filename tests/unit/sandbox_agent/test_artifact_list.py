"""artifact.list: the session's artifacts, newest first, filtered by task, limited."""

from __future__ import annotations

from typing import Any

import pytest

from codegen_mcp.api.tools import ArtifactListResult

from .conftest import AgentClient


async def listing(client: AgentClient, **query: Any) -> ArtifactListResult:
    resp = await client.get("/v1/artifacts", params={k: str(v) for k, v in query.items()})
    data = await resp.json()
    assert resp.status == 200, data
    return ArtifactListResult.model_validate(data)


async def test_empty_then_newest_first_with_producing_task(client: AgentClient) -> None:
    assert (await listing(client)).artifacts == []
    first = await (await client.post("/v1/run/python", json={"code": "open('a.csv','w').write('1,2\\n')"})).json()
    second = await (await client.post("/v1/run/python", json={"code": "open('b.txt','w').write('hi')"})).json()
    await client.post("/v1/fs/write", json={"path": "c.json", "content": "{}"})
    manual = await (await client.post("/v1/artifacts", json={"path": "c.json"})).json()

    everything = await listing(client)
    assert [a.path for a in everything.artifacts] == ["c.json", "b.txt", "a.csv"]
    assert everything.total == 3 and not everything.truncated
    newest, middle, oldest = everything.artifacts
    assert newest.artifact_id == manual["artifact_id"] and newest.task_id is None
    assert middle.task_id == second["task_id"] and oldest.task_id == first["task_id"]
    assert oldest.media_type == "text/csv" and oldest.size == 4 and len(oldest.sha256) == 64
    assert oldest.created_at <= middle.created_at <= newest.created_at

    only_first = await listing(client, task_id=first["task_id"])
    assert [a.path for a in only_first.artifacts] == ["a.csv"] and only_first.total == 1

    limited = await listing(client, limit=2)
    assert [a.path for a in limited.artifacts] == ["c.json", "b.txt"]
    assert limited.total == 3 and limited.truncated


@pytest.mark.parametrize("query", [{"limit": "0"}, {"limit": "many"}, {"limit": "5000"}, {"colour": "blue"}])
async def test_bad_list_arguments(client: AgentClient, query: dict[str, str]) -> None:
    resp = await client.get("/v1/artifacts", params=query)
    data = await resp.json()
    assert resp.status == 400 and data["error"]["code"] == "invalid_argument", data
