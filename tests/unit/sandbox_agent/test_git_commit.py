"""git.commit: output parsers, and commits made by a real agent (git run as sandboxed code)."""

from __future__ import annotations

import shutil
from typing import Any

import pytest

from codegen_mcp.api.errors import InvalidArgument
from codegen_mcp.api.tools import OUTPUT_FOLDER, GitCommitResult, GitFileChange
from codegen_mcp.sandbox_agent.gitcheck import check_author, diffstat, parse_name_status, parse_numstat

from .conftest import AgentClient, MakeClient

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed on this machine")


def test_name_status_with_renames() -> None:
    raw = "A\0new.py\0M\0mod.py\0D\0gone.py\0R087\0old name.py\0new name.py\0"
    assert parse_name_status(raw) == [
        ("added", "new.py", None),
        ("modified", "mod.py", None),
        ("deleted", "gone.py", None),
        ("renamed", "new name.py", "old name.py"),
    ]


def test_numstat_with_binary_files_and_renames() -> None:
    raw = "3\t1\tmod.py\0-\t-\timage.png\0" + "2\t0\t\0old.py\0new.py\0"
    assert parse_numstat(raw) == {"mod.py": (3, 1), "image.png": (None, None), "new.py": (2, 0)}


def test_diffstat_wording() -> None:
    one = GitFileChange(path="a", status="added", insertions=1, deletions=0)
    two = GitFileChange(path="b", status="modified", insertions=2, deletions=3)
    assert diffstat([one]) == "1 file changed, 1 insertion(+)"
    assert diffstat([one, two]) == "2 files changed, 3 insertions(+), 3 deletions(-)"


@pytest.mark.parametrize(
    ("name", "email"),
    [("", "a@b.c"), ("Eve <evil>", "a@b.c"), ("Line\nbreak", "a@b.c"), ("Ok", "not-an-email"), ("Ok", "a b@c.d")],
)
def test_bad_authors(name: str, email: str) -> None:
    with pytest.raises(InvalidArgument):
        check_author(name, email)


async def commit(client: AgentClient, **body: Any) -> tuple[int, dict[str, Any]]:
    resp = await client.post("/v1/git/commit", json=body)
    return resp.status, await resp.json()


async def write(client: AgentClient, path: str, content: str) -> None:
    resp = await client.post("/v1/fs/write", json={"path": path, "content": content})
    assert resp.status == 200


async def test_init_commit_and_nothing_to_commit(make_client: MakeClient, sandbox_mode: str) -> None:
    client = await make_client(sandbox=sandbox_mode)
    await write(client, "src/app.py", "print('hi')\n")
    await write(client, "README.md", "# demo\n\nhello\n")
    # Where the coordinator saves a cut run's whole output: never committed either.
    await write(client, f"{OUTPUT_FOLDER}/task_0123456789abcdef.stdout", "y" * 1000)

    status, data = await commit(client, message="first")
    assert status == 404 and data["error"]["code"] == "not_found"
    assert "init=true" in data["error"]["message"]

    status, data = await commit(client, message="first commit", init=True)
    assert status == 200, data
    first = GitCommitResult.model_validate(data)
    assert first.initialized and first.branch == "main" and len(first.commit) == 40
    assert first.author == "CodeGen-MCP <codegen-mcp@localhost>"
    assert {(f.path, f.status, f.insertions) for f in first.files} == {
        ("README.md", "added", 3),
        ("src/app.py", "added", 1),
    }
    assert first.diffstat == "2 files changed, 4 insertions(+)"
    # The agent's own folders never end up in the repository.
    assert not [f.path for f in first.files if f.path.startswith((".codegen", ".venv"))]

    status, data = await commit(client, message="again")
    assert status == 409 and data["error"]["code"] == "conflict"
    assert data["error"]["message"].startswith("nothing to commit")


async def test_paths_author_renames_and_deletions(make_client: MakeClient) -> None:
    client = await make_client()
    await write(client, "a.txt", "a\n")
    await write(client, "b.txt", "b\n")
    await write(client, "keep/c.txt", "c\n")
    assert (await commit(client, message="base", init=True))[0] == 200

    await write(client, "a.txt", "a\nmore\n")
    await write(client, "b.txt", "b changed\n")
    status, data = await commit(
        client, message="only a", paths=["a.txt"], author_name="Ada Lovelace", author_email="ada@example.com"
    )
    assert status == 200, data
    only_a = GitCommitResult.model_validate(data)
    assert [(f.path, f.status, f.insertions, f.deletions) for f in only_a.files] == [("a.txt", "modified", 1, 0)]
    assert only_a.author == "Ada Lovelace <ada@example.com>" and not only_a.initialized

    code = "import os; os.rename('keep/c.txt', 'keep/d.txt'); os.remove('a.txt')"
    await client.post("/v1/run/python", json={"code": code})
    status, data = await commit(client, message="the rest")
    assert status == 200, data
    rest = {f.path: f for f in GitCommitResult.model_validate(data).files}
    assert rest["a.txt"].status == "deleted" and rest["b.txt"].status == "modified"
    assert rest["keep/d.txt"].status == "renamed" and rest["keep/d.txt"].old_path == "keep/c.txt"

    code = (
        "import subprocess\n"
        "print(subprocess.run(['git', '-c', 'safe.directory=*', 'log', '--format=%an|%s'],"
        " capture_output=True, text=True).stdout)"
    )
    log = await (await client.post("/v1/run/python", json={"code": code})).json()
    assert log["run"]["stdout"].splitlines()[:3] == ["CodeGen-MCP|the rest", "Ada Lovelace|only a", "CodeGen-MCP|base"]


async def test_a_repository_in_a_subfolder_and_paths_outside_it(make_client: MakeClient) -> None:
    client = await make_client()
    await write(client, "proj/main.py", "x = 1\n")
    await write(client, "other.txt", "not in the repo\n")
    status, data = await commit(client, message="proj", repo="proj", init=True)
    assert status == 200 and data["repo"] == "proj" and [f["path"] for f in data["files"]] == ["main.py"]
    status, data = await commit(client, message="x", repo="proj", paths=["other.txt"])
    assert status == 400 and "outside the repository" in data["error"]["message"]
    status, data = await commit(client, message="x", repo="proj", paths=["../../etc/passwd"])
    assert status == 403 and data["error"]["code"] == "path_outside_workspace"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({}, 400, "invalid_argument"),
        ({"message": "   "}, 400, "invalid_argument"),
        ({"message": "m", "repo": "missing", "init": True}, 404, "not_found"),
        ({"message": "m", "init": True, "author_email": "nope"}, 400, "invalid_argument"),
        ({"message": "m", "repo": ".codegen", "init": True}, 400, "invalid_argument"),
        ({"message": "m", "init": True, "paths": [".codegen/artifacts.json"]}, 400, "invalid_argument"),
    ],
)
async def test_bad_commit_arguments(client: AgentClient, body: dict[str, Any], status: int, code: str) -> None:
    got, data = await commit(client, **body)
    assert got == status and data["error"]["code"] == code, data


async def test_a_failing_hook_is_reported_in_one_sentence(make_client: MakeClient, sandbox_mode: str) -> None:
    client = await make_client(sandbox=sandbox_mode)
    await write(client, "f.txt", "x\n")
    assert (await commit(client, message="base", init=True))[0] == 200
    hook = (
        "import os\n"
        "open('.git/hooks/pre-commit', 'w').write('#!/bin/sh\\necho rejected by policy >&2\\nexit 1\\n')\n"
        "os.chmod('.git/hooks/pre-commit', 0o755)\n"
    )
    await client.post("/v1/run/python", json={"code": hook})
    await write(client, "f.txt", "y\n")
    status, data = await commit(client, message="blocked")
    assert status == 422 and data["error"]["code"] == "git_failed"
    assert "git commit failed" in data["error"]["message"] and "\n" not in data["error"]["message"]
