"""git.clone's and git.commit's arguments checked, and git's output read: pure functions, no git runs here."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from codegen_mcp.api.errors import InvalidArgument
from codegen_mcp.api.tools import GitFileChange, TaskState

# --- argument checks (pure) --------------------------------------------------------------------------


_HOSTNAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,62})(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}))*\.?$")
_SCP_LIKE = re.compile(r"^[^/:]+:")  # `git@host:org/repo` or `host:path`


def check_clone_url(url: str) -> str:
    """The URL, if git.clone may fetch it; else InvalidArgument saying what is allowed."""
    if any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in url):
        raise InvalidArgument("`url` must not contain spaces or control characters")
    lowered = url.lower()
    if "::" in url.split("/", 1)[0] or lowered.startswith("ext::"):
        raise InvalidArgument("`url` must be an https:// URL; git remote helpers (`transport::address`) are refused")
    if "://" not in url:
        if _SCP_LIKE.match(url) and not url.startswith(("/", ".", "~")):
            raise InvalidArgument("`url` must be an https:// URL; ssh (`user@host:path`) is not allowed")
        raise InvalidArgument("`url` must be an https:// URL; local paths cannot be cloned")
    scheme = lowered.split("://", 1)[0]
    if scheme != "https":
        what = {
            "file": "file:// URLs (local paths)",
            "ssh": "ssh",
            "git+ssh": "ssh",
            "ssh+git": "ssh",
            "git": "the unencrypted git:// protocol",
            "http": "plain http (use https)",
        }.get(scheme, f"{scheme}://")
        raise InvalidArgument(f"`url` must be an https:// URL; {what} is not allowed")
    parts = urlsplit(url)
    if "@" in parts.netloc or parts.username is not None or parts.password is not None:
        raise InvalidArgument("`url` must not contain credentials (user:password@ or token@); only public repositories")
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise InvalidArgument("`url` must not have a query or fragment (credentials are not accepted in URLs)")
    host = parts.hostname or ""
    try:
        port = parts.port
    except ValueError:
        raise InvalidArgument("`url` has an invalid port") from None
    if not host:
        raise InvalidArgument("`url` must name a host, e.g. https://github.com/owner/repo.git")
    if parts.netloc.startswith("["):
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise InvalidArgument("`url` has an invalid IPv6 host") from None
    elif not _HOSTNAME.match(host):
        raise InvalidArgument(f"`url` has an invalid host name `{host[:80]}`")
    if not parts.path.strip("/"):
        raise InvalidArgument("`url` must name a repository path, e.g. https://github.com/owner/repo.git")
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    return urlunsplit(("https", netloc, parts.path, "", ""))


def default_clone_dest(url: str) -> str:
    """The folder git itself would pick: the last path component without `.git`."""
    name = PurePosixPath(urlsplit(url).path.rstrip("/")).name
    if name.endswith(".git"):
        name = name[: -len(".git")]
    name = re.sub(r"[^A-Za-z0-9._-]", "_", name).strip(".")
    return name or "repo"


_BAD_REF = re.compile(r"(^[-/.])|(\.\.)|(@\{)|(//)|(/\.)|([\x00-\x20~^:?*\[\\\x7f])|(\.lock$)|([/.]$)")


def check_ref(branch: str) -> str:
    """A branch or tag name git accepts (git check-ref-format rules), never an option."""
    if branch == "@" or _BAD_REF.search(branch):
        raise InvalidArgument(f"`branch` {branch[:80]!r} is not a valid branch or tag name")
    return branch


def check_author(name: str, email: str) -> tuple[str, str]:
    if not name.strip() or any(ch in name for ch in "<>\n\r\x00"):
        raise InvalidArgument("`author_name` must be a plain name without '<', '>' or line breaks")
    if not re.fullmatch(r"[^\s<>@]+@[^\s<>@]+", email):
        raise InvalidArgument("`author_email` must be an e-mail address like 'dev@example.com'")
    return name.strip(), email


# --- git output (pure) -------------------------------------------------------------------------------


ChangeStatus = Literal["added", "modified", "deleted", "renamed", "copied", "type_changed", "other"]
_STATUS: dict[str, ChangeStatus] = {
    "A": "added",
    "M": "modified",
    "D": "deleted",
    "R": "renamed",
    "C": "copied",
    "T": "type_changed",
}


def parse_name_status(raw: str) -> list[tuple[ChangeStatus, str, str | None]]:
    """`git diff --name-status -z` as (status, path, old_path)."""
    fields = raw.split("\0")
    out: list[tuple[ChangeStatus, str, str | None]] = []
    i = 0
    while i < len(fields) and fields[i]:
        code = fields[i][:1]
        if code in ("R", "C") and i + 2 < len(fields):
            out.append((_STATUS[code], fields[i + 2], fields[i + 1]))
            i += 3
        elif i + 1 < len(fields):
            out.append((_STATUS.get(code, "other"), fields[i + 1], None))
            i += 2
        else:
            break
    return out


def parse_numstat(raw: str) -> dict[str, tuple[int | None, int | None]]:
    """`git diff --numstat -z` as path -> (insertions, deletions); None for binary files."""
    fields = raw.split("\0")
    out: dict[str, tuple[int | None, int | None]] = {}
    i = 0
    while i < len(fields) and fields[i]:
        added, _, rest = fields[i].partition("\t")
        deleted, _, path = rest.partition("\t")
        if path == "" and i + 2 < len(fields):  # a rename: "a\td\t" NUL old NUL new
            path = fields[i + 2]
            i += 3
        else:
            i += 1
        out[path] = (int(added) if added.isdigit() else None, int(deleted) if deleted.isdigit() else None)
    return out


def diffstat(files: Sequence[GitFileChange]) -> str:
    ins = sum(f.insertions or 0 for f in files)
    dels = sum(f.deletions or 0 for f in files)
    n = len(files)
    text = f"{n} file{'s' if n != 1 else ''} changed"
    if ins:
        text += f", {ins} insertion{'s' if ins != 1 else ''}(+)"
    if dels:
        text += f", {dels} deletion{'s' if dels != 1 else ''}(-)"
    return text


_PROGRESS = re.compile(
    r"(Counting objects|Compressing objects|Receiving objects|Resolving deltas|Updating files):\s+(\d{1,3})%"
)


def clone_progress(text: str) -> str | None:
    found = _PROGRESS.findall(text)
    if not found:
        return None
    phase, percent = found[-1]
    return f"git clone: {phase.lower()} {percent}%"


def git_error_sentence(output: str, action: str) -> str:
    """One sentence from git's stderr for a failed `action`."""
    text = output.strip()
    low = text.lower()
    if "could not resolve host" in low:
        return f"{action} failed: the host name could not be resolved (no DNS here, or a wrong name)"
    if any(s in low for s in ("failed to connect", "couldn't connect", "connection refused", "connection timed out")):
        return f"{action} failed: the git host could not be reached from this sandbox"
    if any(s in low for s in ("certificate", "ssl", "tls")) and "verif" in low:
        return f"{action} failed: the server's TLS certificate could not be verified"
    if any(s in low for s in ("authentication failed", "could not read username", "terminal prompts disabled")):
        return f"{action} failed: the repository needs credentials; only public repositories can be cloned"
    match = re.search(r"remote branch (\S+) not found", text, re.IGNORECASE)
    if match:
        return f"{action} failed: the repository has no branch or tag `{match.group(1)}`"
    if "not found" in low or "does not appear to be a git repository" in low or "404" in low:
        return f"{action} failed: no repository was found at that URL"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    reason = next(
        (ln for ln in reversed(lines) if ln.lower().startswith(("fatal:", "error:"))), lines[-1] if lines else ""
    )
    reason = re.sub(r"^(fatal|error):\s*", "", reason, flags=re.IGNORECASE)
    return f"{action} failed" + (f": {reason[:300]}" if reason else "")


def clean_progress(text: str) -> str:
    """git's log without the carriage-return progress redraws (only each line's final state)."""
    return "\n".join(line.rsplit("\r", 1)[-1] for line in text.splitlines()).strip()


@dataclass(frozen=True)
class GitCall:
    exit_code: int | None
    stdout: str
    stderr: str
    timed_out: bool
    cancelled: bool
    # How the call was stopped (the disk quota, a cancellation, the timeout): a task's state and sentence.
    stop: tuple[TaskState, str] | None = None


def head_of(call: GitCall) -> tuple[str | None, str | None]:
    """(commit, branch) from `git log -1 --format=%H%x00%D`; (None, None) for an empty repository."""
    if call.exit_code != 0 or "\0" not in call.stdout:
        return None, None
    sha, _, refs = call.stdout.strip().partition("\0")
    match = re.search(r"HEAD -> ([^,\s]+)", refs)
    return (sha.strip() or None), (match.group(1) if match else None)
