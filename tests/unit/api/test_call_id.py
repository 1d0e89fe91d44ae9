"""The call id: one per call, inherited by tasks started in it, and never taken raw from outside."""

import asyncio

from codegen_mcp.api.call_id import call_scope, current_call_id, valid_call_id


def test_outside_any_call_there_is_no_id() -> None:
    assert current_call_id() is None


def test_a_scope_sets_the_id_and_restores_the_previous_one() -> None:
    with call_scope("abc-1") as outer:
        assert outer == "abc-1" == current_call_id()
        with call_scope() as inner:
            assert inner != outer and current_call_id() == inner
        assert current_call_id() == "abc-1"
    assert current_call_id() is None


def test_a_malformed_id_from_outside_is_replaced() -> None:
    assert valid_call_id("a b") is None
    assert valid_call_id("x" * 65) is None
    assert valid_call_id("") is None
    with call_scope("bad\nid") as effective:
        assert effective != "bad\nid" and valid_call_id(effective) == effective


def test_tasks_started_in_a_call_inherit_its_id() -> None:
    async def main() -> str | None:
        with call_scope("call-7"):
            return await asyncio.create_task(_read())

    async def _read() -> str | None:
        return current_call_id()

    assert asyncio.run(main()) == "call-7"
