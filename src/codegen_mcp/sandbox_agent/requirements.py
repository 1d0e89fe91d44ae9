"""pkg.install's argument, and the sentences for pip's failures and for work that needs the network.

Only named requirements reach pip: options, URLs, local paths and archive files are refused with a sentence
saying what to give instead. A failed pip is read back into one sentence from its log.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement

from codegen_mcp.api.errors import CodegenError, ErrorCode, InvalidArgument

_OPERATOR_CHARS = "<>=!~"
_ARCHIVE_SUFFIXES = (".whl", ".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz", ".tar.xz", ".txz", ".tlz")


def split_requirements(text: str) -> list[str]:
    """Split on whitespace and commas (not inside `[extras]`), keeping `pkg>=1,<2` together."""
    raw: list[str] = []
    current = ""
    depth = 0
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth = max(0, depth - 1)
        if depth == 0 and (ch.isspace() or ch == ","):
            if current:
                raw.append(current)
            current = ""
            continue
        current += ch
    if current:
        raw.append(current)
    for token in raw:
        _refuse_non_requirement(token)
    merged: list[str] = []
    for token in raw:
        if merged and merged[-1][-1] in _OPERATOR_CHARS:
            merged[-1] += token  # `pkg >= 1`
        elif merged and token[0] in _OPERATOR_CHARS:
            prev = merged[-1]
            merged[-1] = prev + ("," if any(c in _OPERATOR_CHARS for c in prev) else "") + token
        else:
            merged.append(token)
    return merged


def _refuse_non_requirement(token: str) -> None:
    if token.startswith("-"):
        raise InvalidArgument(
            f"`{token}` is not allowed: give package requirements like 'requests==2.32.3', not pip options"
        )
    if "://" in token:
        raise InvalidArgument(f"`{token}` is not allowed: install packages by name from the index, not from URLs")
    if "/" in token or "\\" in token:
        raise InvalidArgument(f"`{token}` is not allowed: install packages by name, not from local paths")
    if token.lower().endswith(_ARCHIVE_SUFFIXES):
        raise InvalidArgument(f"`{token}` is not allowed: install packages by name, not from archive files")


def parse_requirements(text: str) -> list[Requirement]:
    """Requirement specifiers from `packages`, refusing pip options, URLs, paths and invalid ones."""
    tokens = split_requirements(text)
    if not tokens:
        raise InvalidArgument("`packages` must name at least one package, e.g. 'requests==2.32.3'")
    reqs: list[Requirement] = []
    for token in tokens:
        _refuse_non_requirement(token)
        try:
            req = Requirement(token)
        except InvalidRequirement:
            raise InvalidArgument(
                f"`{token}` is not a valid requirement specifier (PEP 508), e.g. 'requests==2.32.3'"
            ) from None
        if req.url:
            raise InvalidArgument(f"`{token}` is not allowed: install packages by name, not from URLs")
        reqs.append(req)
    return reqs


_NO_MATCH = re.compile(r"No matching distribution found for (\S+)")
_ERROR_LINE = re.compile(r"^ERROR: (.+)$", re.MULTILINE)

# What to do about a sandbox without egress, per tool (pip always has the network on the local backend).
GIT_NETWORK_REMEDY = (
    "start the session with egress enabled (local backend: CODEGEN_LOCAL_NETWORK=true; Kubernetes: spec.network.egress)"
)
PIP_NETWORK_REMEDY = (
    "start the session with egress 'packages' or 'open' (Kubernetes: spec.network.egress), or have the "
    "agent's PIP_FIND_LINKS name a local wheel folder that holds the packages"
)


def network_disabled(what: str, remedy: str, *, detail: str = "") -> CodegenError:
    """The one sentence for work that needs the network in a sandbox without egress (NETWORK_DISABLED)."""
    return CodegenError(
        f"{what} needs network access but this sandbox has no network egress{detail}; {remedy}",
        code=ErrorCode.NETWORK_DISABLED,
    )


def unmatched_requirement(log_text: str) -> str | None:
    """The requirement pip found no distribution for, as its log names it (None when that was not the failure)."""
    match = _NO_MATCH.search(log_text)
    return match.group(1) if match else None


def pip_error_sentence(log_text: str, specs: Sequence[str], offline_folders: Sequence[Path] = ()) -> str:
    unmatched = unmatched_requirement(log_text)
    if unmatched and offline_folders:
        folders = ", ".join(str(f) for f in offline_folders)
        detail = f", and '{unmatched}' is not in its local wheel folders ({folders})"
        return network_disabled("pkg.install", PIP_NETWORK_REMEDY, detail=detail).message
    if unmatched:
        return f"pip could not install '{unmatched}': No matching distribution found"
    errors = _ERROR_LINE.findall(log_text)
    reason = errors[-1].strip() if errors else "see log_tail"
    return f"pip could not install {' '.join(repr(s) for s in specs)}: {reason}"
