"""The node-20 patch of the conformance bundle: drops only `globSync`, binds a stub, runs once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

HEAD = 'import{Command as e}from"commander";'
TAIL = 'import u,{dirname as d}from"path";let x=o;'


@pytest.mark.parametrize(
    ("fs_import", "expected_names"),
    [
        ("existsSync as a,globSync as o,mkdtempSync as s", "existsSync as a,mkdtempSync as s"),
        ("globSync as o,mkdtempSync as s", "mkdtempSync as s"),
        ("existsSync as a,globSync as o", "existsSync as a"),
    ],
)
def test_patch_removes_globsync_and_binds_a_stub(
    fs_globsync_patcher: Callable[[Path], bool], tmp_path: Path, fs_import: str, expected_names: str
) -> None:
    bundle = tmp_path / "index.js"
    bundle.write_text(f'#!/usr/bin/env node\n{HEAD}import{{{fs_import}}}from"fs";{TAIL}', encoding="utf-8")

    assert fs_globsync_patcher(bundle) is True
    patched = bundle.read_text(encoding="utf-8")

    assert "globSync as" not in patched
    assert f'import{{{expected_names}}}from"fs";' in patched
    assert 'const o=()=>{throw Error("fs.globSync needs node >= 22")};' in patched
    assert patched.startswith(f"#!/usr/bin/env node\n{HEAD}") and patched.endswith(TAIL)

    assert fs_globsync_patcher(bundle) is False  # idempotent: the second run changes nothing
    assert bundle.read_text(encoding="utf-8") == patched


def test_patch_leaves_a_bundle_without_globsync_alone(
    fs_globsync_patcher: Callable[[Path], bool], tmp_path: Path
) -> None:
    bundle = tmp_path / "index.js"
    original = f'{HEAD}import{{existsSync as a}}from"fs";{TAIL}'
    bundle.write_text(original, encoding="utf-8")

    assert fs_globsync_patcher(bundle) is False
    assert bundle.read_text(encoding="utf-8") == original
