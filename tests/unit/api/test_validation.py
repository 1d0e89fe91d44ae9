"""The one ValidationError formatter: what each edge says when pydantic refuses its input."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from codegen_mcp.api.errors import MAX_PROBLEMS, CodegenError, ErrorCode, validation_sentence
from codegen_mcp.api.session import SessionSpec
from codegen_mcp.api.tools import TOOLS, FsReadArgs, RunPythonArgs, TaskIdArgs
from codegen_mcp.coordinator.tools import parse_arguments


def _error(model: type[BaseModel], body: Any) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        model.model_validate(body)
    return info.value


@pytest.mark.parametrize(
    ("model", "body", "expected"),
    [
        (RunPythonArgs, {"code": "1", "timeout_s": 0}, "`timeout_s` must be greater than 0"),
        (RunPythonArgs, {}, "give exactly one of `code` or `file`"),
        (RunPythonArgs, {"code": 1, "args": [1]}, "`code` must be a valid string; `args[0]` must be a valid string"),
        (FsReadArgs, {}, "`path` is required"),
        (FsReadArgs, {"path": "a", "x": 1}, "`x` is unknown (accepted: `path`, `offset`, `limit`)"),
        (
            FsReadArgs,
            {"path": "a", "x": 1, "y": 2},
            "`x` is unknown (accepted: `path`, `offset`, `limit`); `y` is unknown",
        ),
        (FsReadArgs, {"path": "a", "a\nb": 1}, "`a\\nb` is unknown"),
        (TaskIdArgs, {"task_id": "../../healthz"}, "`task_id` must be a task id as a tool returned it"),
    ],
)
def test_tool_arguments(model: type[BaseModel], body: dict[str, Any], expected: str) -> None:
    assert validation_sentence(_error(model, body), model=model).startswith(expected)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"network": {"allowPorts": [70000]}}, "`spec.network.allowPorts[0]` must be less than or equal to 65535"),
        ({"colour": "blue"}, "`spec.colour` is unknown"),
        ({"resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}}, "`spec.resources`: requests.cpu (2)"),
    ],
)
def test_a_prefix_names_where_a_nested_field_is(spec: dict[str, Any], expected: str) -> None:
    assert validation_sentence(_error(SessionSpec, spec), prefix="spec").startswith(expected)


def test_a_thousand_unknown_keys_still_make_one_short_sentence() -> None:
    body = {"path": "a", **{f"k{i}": i for i in range(1000)}}
    sentence = validation_sentence(_error(FsReadArgs, body), model=FsReadArgs)
    assert sentence.count("is unknown") == MAX_PROBLEMS
    assert sentence.endswith(f"; and {1000 - MAX_PROBLEMS} more")


def test_a_long_key_is_cut() -> None:
    sentence = validation_sentence(_error(FsReadArgs, {"path": "a", "k" * 10_000: 1}))
    assert sentence == f"`{'k' * 60}…` is unknown"


# Any JSON a client might send as one argument's value.
_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)


def _names(model: type[BaseModel]) -> list[str]:
    """The arguments a tool knows, aliases included: a fuzzer that only invents names rarely hits a real one."""
    names: list[str] = []
    for name, field in model.model_fields.items():
        names.append(name)
        choices = getattr(field.validation_alias, "choices", [])
        names += [c for c in choices if isinstance(c, str)]
    return names


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(data=st.data())
def test_any_invalid_arguments_get_one_line_naming_the_field(data: st.DataObject) -> None:
    spec = data.draw(st.sampled_from(TOOLS), label="tool")
    names = _names(spec.args)  # run.contexts takes none
    keys = (st.sampled_from(names) | st.text(max_size=30)) if names else st.text(max_size=30)
    body = data.draw(st.dictionaries(keys, _VALUES, max_size=6), label="arguments")
    try:
        spec.args.model_validate(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
    else:
        assume(False)  # valid arguments say nothing
    with pytest.raises(CodegenError) as info:
        parse_arguments(spec, body)
    message = info.value.message
    assert info.value.code is ErrorCode.INVALID_ARGUMENT
    assert message.startswith(f"invalid arguments for {spec.name}: ")
    assert len(message.splitlines()) == 1 and "Traceback" not in message
    assert len(message) < 2000
    named = list(dict.fromkeys(str(e["loc"][0]) for e in errors if e["loc"]))[:MAX_PROBLEMS]  # those it can show
    shown = [n for n in named if n.isprintable() and len(n) <= 60 and "`" not in n]
    if shown:
        assert any(re.search(re.escape(f"`{n}") + r"[`.[]", message) for n in shown), message
    else:
        assert "`" in message, message  # a check of the whole call names its fields itself
