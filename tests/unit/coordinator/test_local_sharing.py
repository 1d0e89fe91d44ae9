"""What coordinators sharing a state folder keep there (`local_sharing`): a session key leads to one sandbox,
whichever coordinators link it at once."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest

from codegen_mcp.coordinator.backends.local_sharing import AgentRecord, SharedFolders


def test_two_coordinators_relinking_a_key_whose_sandbox_ended_agree_on_one_sandbox(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sessions = tmp_path / "sessions"
    for sandbox_id in ("s-ended", "s-a", "s-b"):
        (sessions / sandbox_id).mkdir(parents=True)
    first, second = SharedFolders(tmp_path, sessions), SharedFolders(tmp_path, sessions)
    first.prepare()
    assert first.link("key", "s-ended") == "s-ended"
    shutil.rmtree(sessions / "s-ended")  # its link stays, naming no sandbox any more

    linked: dict[str, str] = {}
    others: list[threading.Thread] = []
    find = SharedFolders.find

    def second_links_meanwhile(self: SharedFolders, session_key: str) -> str | None:
        found = find(self, session_key)
        if self is first and not others:  # between the first one's look and its link, the second one links
            other = threading.Thread(target=lambda: linked.setdefault("second", second.link(session_key, "s-b")))
            others.append(other)
            other.start()
            other.join(0.5)
        return found

    monkeypatch.setattr(SharedFolders, "find", second_links_meanwhile)
    linked["first"] = first.link("key", "s-a")
    others[0].join()
    assert linked["first"] == linked["second"] == find(first, "key")


def test_an_agent_record_shown_anywhere_keeps_its_token_out(tmp_path: Path) -> None:
    (tmp_path / "s-1").mkdir()
    SharedFolders.write_agent(tmp_path / "s-1", AgentRecord(pid=1, address="unix:/run/a.sock", token="t0ps3cret"))
    read = SharedFolders.read_agent(tmp_path / "s-1")
    assert read is not None and read.token == "t0ps3cret"
    assert "t0ps3cret" not in repr(read) and "t0ps3cret" not in str(read)
    assert oct((tmp_path / "s-1" / "agent.json").stat().st_mode & 0o777) == oct(0o600)


def test_the_session_keys_folder_is_the_coordinators_only(tmp_path: Path) -> None:
    (tmp_path / "session-keys").mkdir(mode=0o755)  # made before, e.g. by hand
    SharedFolders(tmp_path, tmp_path / "sessions").prepare()
    assert (tmp_path / "session-keys").stat().st_mode & 0o777 == 0o700
