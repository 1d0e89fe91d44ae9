"""Tool wheels for test.run and lint.check: a wheelhouse the agent keeps, and a small wheel installer.

The tools (pytest, ruff, mypy and their dependencies) are installed into the session venv on first use by
unpacking wheels, not by running pip: pip starts the venv's interpreter, which imports the venv's
site-packages (and runs any `.pth` file a pkg.install brought in), and it is slow to start. Unpacking a
wheel runs no code at all, needs no network and takes a fraction of a second.

Wheels are looked up in read-only folders first (e.g. a wheelhouse baked into the sandbox image), then in
a writable cache shared by the agents of one machine. A missing wheel is added to that cache by repacking
the agent's own installed copy of the distribution when it is compatible (this works offline), else by
`pip download` on the agent's own interpreter (never the venv's). Writes to the cache are atomic renames,
so agents can share it without locks.

The venv's contents may belong to the sandbox uid (pip runs as that uid), so a root agent must not trust
what it finds there: `VenvWriter` walks from the venv folder with directory fds and `O_NOFOLLOW` on every
component, creates files under fresh names and renames them into place, and hands what it creates to
the sandbox uid. A symlink planted by sandboxed code makes the install fail instead of redirecting it.
"""

from __future__ import annotations

import base64
import configparser
import contextlib
import csv
import hashlib
import importlib.metadata
import importlib.util
import io
import json
import logging
import marshal
import os
import re
import secrets
import shutil
import stat
import sys
import sysconfig
import zipfile
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from email.parser import HeaderParser
from pathlib import Path, PurePosixPath
from typing import IO

from packaging.markers import default_environment
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.tags import Tag, compatible_tags, cpython_tags, parse_tag, platform_tags
from packaging.utils import (
    InvalidWheelFilename,
    NormalizedName,
    canonicalize_name,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

log = logging.getLogger(__name__)

INSTALLER_NAME = "codegen-mcp"
_SKIPPED_DIST_INFO = frozenset({"RECORD", "INSTALLER", "REQUESTED", "direct_url.json", "RECORD.jws", "RECORD.p7s"})
_CHUNK = 1024 * 1024
MAX_COMPILED_SOURCE = 4 * 1024 * 1024


class WheelError(Exception):
    """A wheel could not be planned or installed (the message says why, for a person)."""


class MissingWheel(WheelError):
    """No wheel in the wheelhouse satisfies `requirement` for the target venv."""

    def __init__(self, requirement: Requirement) -> None:
        super().__init__(f"no wheel for {requirement}")
        self.requirement = requirement


# --- the target venv ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class VenvTarget:
    """What a wheel must be compatible with, and where its files go."""

    venv_dir: Path
    python_version: tuple[int, int]
    full_version: str
    tags: tuple[Tag, ...]  # most specific first

    @property
    def site_packages(self) -> Path:
        major, minor = self.python_version
        return self.venv_dir / "lib" / f"python{major}.{minor}" / "site-packages"

    @property
    def scripts(self) -> Path:
        return self.venv_dir / "bin"

    @property
    def python(self) -> Path:
        return self.venv_dir / "bin" / "python"

    @classmethod
    def inspect(cls, venv_dir: Path) -> VenvTarget:
        """Read the venv's Python version from its pyvenv.cfg (no interpreter is started)."""
        cfg: dict[str, str] = {}
        try:
            text = (venv_dir / "pyvenv.cfg").read_text(encoding="utf-8")
        except OSError as err:
            raise WheelError(f"the session venv has no readable pyvenv.cfg ({err.strerror})") from None
        for line in text.splitlines():
            key, sep, value = line.partition("=")
            if sep:
                cfg[key.strip().lower()] = value.strip()
        raw = cfg.get("version_info") or cfg.get("version") or ""
        match = re.match(r"^(\d+)\.(\d+)(?:\.(\d+))?", raw)
        if match is None:
            raise WheelError("the session venv's pyvenv.cfg does not say which Python it uses")
        major, minor = int(match.group(1)), int(match.group(2))
        full = f"{major}.{minor}.{match.group(3) or 0}"
        platforms = list(platform_tags())
        interpreter = f"cp{major}{minor}"
        tags = (
            *cpython_tags((major, minor), platforms=platforms),
            *compatible_tags((major, minor), interpreter, platforms),
        )
        return cls(venv_dir=venv_dir, python_version=(major, minor), full_version=full, tags=tuple(tags))

    def marker_environment(self) -> dict[str, str]:
        env = {k: str(v) for k, v in default_environment().items()}
        env.update(
            python_version="{}.{}".format(*self.python_version),
            python_full_version=self.full_version,
            implementation_name="cpython",
            implementation_version=self.full_version,
            platform_python_implementation="CPython",
        )
        return env


# --- the wheelhouse ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class WheelFile:
    path: Path
    name: NormalizedName
    version: Version
    rank: int  # position of its best tag in the target's tags: lower is more specific


def scan_wheels(folders: Iterable[Path], target: VenvTarget) -> dict[NormalizedName, list[WheelFile]]:
    """Every wheel in `folders` that the target venv can use, by project name."""
    rank = {tag: i for i, tag in enumerate(target.tags)}
    found: dict[NormalizedName, list[WheelFile]] = {}
    for folder in folders:
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            if not entry.name.endswith(".whl") or entry.name.startswith(".") or not entry.is_file():
                continue
            try:
                name, version, _, tags = parse_wheel_filename(entry.name)
            except (InvalidWheelFilename, InvalidVersion):
                continue
            best = min((rank[t] for t in tags if t in rank), default=None)
            if best is not None:
                found.setdefault(name, []).append(WheelFile(Path(entry.path), name, version, best))
    return found


@dataclass(frozen=True)
class WheelMetadata:
    requires: tuple[Requirement, ...]
    requires_python: SpecifierSet | None


def read_wheel_metadata(path: Path) -> WheelMetadata:
    with zipfile.ZipFile(path) as zf:
        dist_info = _dist_info_dir(zf.namelist(), path)
        meta = HeaderParser().parsestr(zf.read(f"{dist_info}/METADATA").decode("utf-8", errors="replace"))
    requires: list[Requirement] = []
    for line in meta.get_all("Requires-Dist") or []:
        with contextlib.suppress(InvalidRequirement):
            requires.append(Requirement(line))
    requires_python: SpecifierSet | None = None
    if meta.get("Requires-Python"):
        with contextlib.suppress(InvalidSpecifier):
            requires_python = SpecifierSet(str(meta["Requires-Python"]))
    return WheelMetadata(tuple(requires), requires_python)


def _dist_info_dir(names: Sequence[str], path: Path) -> str:
    candidates = {n.split("/", 1)[0] for n in names if n.count("/") == 1 and n.endswith("/WHEEL")}
    candidates = {c for c in candidates if c.endswith(".dist-info")}
    if len(candidates) != 1:
        raise WheelError(f"{path.name} is not a valid wheel (no single .dist-info folder)")
    return candidates.pop()


def plan_install(
    requirements: Sequence[Requirement],
    target: VenvTarget,
    available: Mapping[NormalizedName, Sequence[WheelFile]],
    installed: Mapping[NormalizedName, Version],
) -> list[WheelFile]:
    """The wheels to unpack for `requirements` and their dependencies (highest fitting version, no backtracking).

    Raises MissingWheel for the first requirement no available wheel satisfies, WheelError for a conflict
    with what the venv already has (the user's own installs are never replaced).
    """
    env = target.marker_environment()
    chosen: dict[NormalizedName, WheelFile] = {}
    queue: deque[Requirement] = deque(requirements)
    while queue:
        req = queue.popleft()
        name = canonicalize_name(req.name)
        if name in chosen:
            if not req.specifier.contains(chosen[name].version, prereleases=True):
                raise WheelError(f"{req} conflicts with {name} {chosen[name].version} needed by another tool")
            continue
        if name in installed:
            if req.specifier.contains(installed[name], prereleases=True):
                continue
            raise WheelError(
                f"the tools need {req} but the session venv has {name} {installed[name]}; "
                f"pkg.install a version that fits '{req.specifier}'"
            )
        candidates = list(available.get(name, ()))
        allowed = set(req.specifier.filter([w.version for w in candidates]))
        fitting = sorted(
            (w for w in candidates if w.version in allowed), key=lambda w: (w.version, -w.rank), reverse=True
        )
        picked: WheelFile | None = None
        meta: WheelMetadata | None = None
        for wheel in fitting:
            try:
                meta = read_wheel_metadata(wheel.path)
            except (OSError, zipfile.BadZipFile, KeyError, WheelError):
                continue
            if meta.requires_python is None or meta.requires_python.contains(target.full_version, prereleases=True):
                picked = wheel
                break
        if picked is None or meta is None:
            raise MissingWheel(req)
        chosen[name] = picked
        extras = ("", *sorted(req.extras))
        for dep in meta.requires:
            if dep.marker is None or any(dep.marker.evaluate({**env, "extra": e}) for e in extras):
                queue.append(dep)
    return list(chosen.values())


# --- installing a wheel ------------------------------------------------------------------------------

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_MAX_METADATA_BYTES = 256 * 1024


def _record_hash(digest: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _safe_member(name: str) -> PurePosixPath:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or "\\" in name or "\x00" in name or not path.parts:
        raise WheelError(f"the wheel has an unsafe file name {name!r}")
    return path


class VenvWriter:
    """Reads and writes below the venv folder without following symlinks (see the module docstring).

    Paths are relative to the venv folder. Folders are opened once and kept (a wheel has thousands of
    files); `close()` releases them. `owner` (uid, gid) receives every file and folder created.
    """

    def __init__(self, venv_dir: Path, owner: tuple[int, int] | None) -> None:
        self.venv_dir = venv_dir
        self.owner = owner
        self._fds: dict[tuple[str, ...], int] = {}

    def __enter__(self) -> VenvWriter:
        try:
            self._fds[()] = os.open(self.venv_dir, _DIR_FLAGS)
        except OSError as err:
            raise WheelError(f"the session venv cannot be opened ({err.strerror})") from None
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def folder(self, parts: tuple[str, ...], *, create: bool) -> int:
        """An fd of the folder `parts` below the venv, each component opened with O_NOFOLLOW."""
        if parts in self._fds:
            return self._fds[parts]
        parent = self.folder(parts[:-1], create=create)
        name = parts[-1]
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            if not create:
                raise
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, 0o755, dir_fd=parent)
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
            os.fchmod(fd, 0o755)  # whatever the agent's umask: sandboxed code must read the venv
            if self.owner is not None:
                os.fchown(fd, *self.owner)
        self._fds[parts] = fd
        return fd

    def write(self, rel: PurePosixPath, chunks: Iterable[bytes], mode: int) -> tuple[str, int]:
        """Create or replace the file `rel`; returns its RECORD hash and size."""
        folder = self.folder(rel.parent.parts, create=True)
        tmp = f".{rel.name}.{secrets.token_hex(4)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=folder)
        digest = hashlib.sha256()
        size = 0
        try:
            with os.fdopen(fd, "wb", closefd=False) as out:
                for chunk in chunks:
                    digest.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
            os.fchmod(fd, mode)
            if self.owner is not None:
                os.fchown(fd, *self.owner)
            os.close(fd)
            fd = -1
            os.replace(tmp, rel.name, src_dir_fd=folder, dst_dir_fd=folder)
        except BaseException:
            if fd >= 0:
                os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=folder)
            raise
        return _record_hash(digest.digest()), size

    def read_regular(self, rel: PurePosixPath, limit: int) -> tuple[bytes, os.stat_result] | None:
        """A regular file's first `limit` bytes (never a FIFO, a device or a symlink), or None."""
        try:
            folder = self.folder(rel.parent.parts, create=False)
            fd = os.open(rel.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=folder)
        except OSError:
            return None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return None
            chunks: list[bytes] = []
            left = limit
            while left > 0 and (chunk := os.read(fd, min(left, _CHUNK))):
                chunks.append(chunk)
                left -= len(chunk)
            return b"".join(chunks), st
        finally:
            os.close(fd)

    def listdir(self, parts: tuple[str, ...]) -> list[str]:
        try:
            return os.listdir(self.folder(parts, create=False))
        except OSError:
            return []


def site_parts(target: VenvTarget) -> tuple[str, ...]:
    return tuple(target.site_packages.relative_to(target.venv_dir).parts)


def installed_distributions(writer: VenvWriter, target: VenvTarget) -> dict[NormalizedName, Version]:
    """Name and version of every distribution in the venv, read from METADATA headers (no code runs)."""
    site = site_parts(target)
    found: dict[NormalizedName, Version] = {}
    for name in sorted(writer.listdir(site)):
        if not name.endswith(".dist-info"):
            continue
        read = writer.read_regular(PurePosixPath(*site, name, "METADATA"), 64 * 1024)
        if read is None:
            continue
        meta = HeaderParser().parsestr(read[0].decode("utf-8", errors="replace"))
        with contextlib.suppress(InvalidVersion, TypeError):
            if meta["Name"]:
                found.setdefault(canonicalize_name(str(meta["Name"])), Version(str(meta["Version"])))
    return found


def _script_chunks(stream: IO[bytes], python: Path) -> Iterable[bytes]:
    """A script's bytes, with a `#!python` shebang pointed at the venv's interpreter (as pip does)."""
    first = stream.readline()
    if first.startswith(b"#!python"):
        first = b"#!" + os.fsencode(python) + first[len(b"#!python") :]
    yield first
    while chunk := stream.read(_CHUNK):
        yield chunk


def _console_script(module: str, attr: str, python: Path) -> bytes:
    head = attr.split(".", 1)[0]
    return (
        f"#!{python}\n"
        "# -*- coding: utf-8 -*-\n"
        "import re\n"
        "import sys\n"
        f"from {module} import {head}\n"
        "if __name__ == '__main__':\n"
        "    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])\n"
        f"    sys.exit({attr}())\n"
    ).encode()


def _entry_point_scripts(text: str) -> dict[str, tuple[str, str]]:
    parser = configparser.RawConfigParser(delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # script names are case-sensitive
    try:
        parser.read_string(text)
    except configparser.Error:
        return {}
    scripts: dict[str, tuple[str, str]] = {}
    for section in ("console_scripts", "gui_scripts"):
        if not parser.has_section(section):
            continue
        for name, value in parser.items(section):
            target = value.split("[", 1)[0].strip()  # drop `[extras]`
            module, _, attr = target.partition(":")
            if module and attr and re.fullmatch(r"[\w.-]+", name):
                scripts[name] = (module.strip(), attr.strip())
    return scripts


def install_wheel(wheel: Path, target: VenvTarget, writer: VenvWriter) -> list[PurePosixPath]:
    """Unpack `wheel` into the venv (files, console scripts, INSTALLER, RECORD); returns venv-relative paths.

    Byte-compiling is left to `compile_modules`, which callers may run later (it is the slow part).
    """
    site = PurePosixPath(*site_parts(target))
    scripts = PurePosixPath("bin")
    written: list[PurePosixPath] = []
    records: list[tuple[str, str, str]] = []

    def record(rel: PurePosixPath, digest: str, size: int) -> None:
        written.append(rel)
        records.append((os.path.relpath(rel, site), digest, str(size)))

    with zipfile.ZipFile(wheel) as zf:
        dist_info = _dist_info_dir(zf.namelist(), wheel)
        data_dir = dist_info[: -len(".dist-info")] + ".data"
        dist_name = dist_info.split("-", 1)[0]
        script_names: set[str] = set()
        for info in zf.infolist():
            if info.is_dir():
                continue
            member = _safe_member(info.filename)
            top = member.parts[0]
            if top == dist_info and member.name in _SKIPPED_DIST_INFO and len(member.parts) == 2:
                continue
            is_script = False
            if top == data_dir:
                if len(member.parts) < 3:
                    continue
                scheme, rest = member.parts[1], PurePosixPath(*member.parts[2:])
                if scheme in ("purelib", "platlib"):
                    rel = site / rest
                elif scheme == "scripts":
                    rel, is_script = scripts / rest, True
                    script_names.add(rest.name)
                elif scheme == "data":
                    rel = rest
                elif scheme == "headers":
                    major, minor = target.python_version
                    rel = PurePosixPath("include", "site", f"python{major}.{minor}", dist_name) / rest
                else:
                    raise WheelError(f"{wheel.name} has an unknown data folder {scheme!r}")
            else:
                rel = site / member
            executable = is_script or bool((info.external_attr >> 16) & 0o111)
            with zf.open(info) as stream:
                chunks = _script_chunks(stream, target.python) if is_script else iter(lambda: stream.read(_CHUNK), b"")
                digest, size = writer.write(rel, chunks, 0o755 if executable else 0o644)
            record(rel, digest, size)
        try:
            entry_points = zf.read(f"{dist_info}/entry_points.txt").decode("utf-8", errors="replace")
        except KeyError:
            entry_points = ""
    for name, (module, attr) in _entry_point_scripts(entry_points).items():
        if name not in script_names:
            rel = scripts / name
            digest, size = writer.write(rel, [_console_script(module, attr, target.python)], 0o755)
            record(rel, digest, size)
    digest, size = writer.write(site / dist_info / "INSTALLER", [f"{INSTALLER_NAME}\n".encode()], 0o644)
    records.append((f"{dist_info}/INSTALLER", digest, str(size)))
    records.append((f"{dist_info}/RECORD", "", ""))
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(records)
    writer.write(site / dist_info / "RECORD", [out.getvalue().encode()], 0o644)
    return written


def compile_modules(files: Sequence[PurePosixPath], target: VenvTarget, writer: VenvWriter) -> int:
    """Byte-compile newly installed modules, so sandboxed runs (venv read-only) do not parse them each time.

    Only when the agent's interpreter is the venv's CPython minor version (the .pyc format and cache tag are
    per minor version); modules shadowed by a compiled extension next to them (mypyc) are skipped. Sources
    are read back through the writer (never through a symlink) and the .pyc written the same way.
    """
    if sys.implementation.name != "cpython" or sys.version_info[:2] != target.python_version:
        return 0
    tag = sys.implementation.cache_tag
    site = PurePosixPath(*site_parts(target))
    extensions = {(p.parent, p.name.split(".", 1)[0]) for p in files if p.suffix in (".so", ".pyd")}
    count = 0
    for rel in files:
        if rel.suffix != ".py" or site not in rel.parents or (rel.parent, rel.stem) in extensions:
            continue
        read = writer.read_regular(rel, MAX_COMPILED_SOURCE)
        if read is None or len(read[0]) >= MAX_COMPILED_SOURCE:
            continue
        source, st = read
        try:
            code = compile(source, str(target.venv_dir / rel), "exec", dont_inherit=True)
        except (SyntaxError, ValueError):
            continue  # a module this Python cannot compile is simply used from source
        header = (
            importlib.util.MAGIC_NUMBER
            + (0).to_bytes(4, "little")
            + (int(st.st_mtime) & 0xFFFFFFFF).to_bytes(4, "little")
            + (st.st_size & 0xFFFFFFFF).to_bytes(4, "little")
        )
        try:
            writer.write(rel.parent / "__pycache__" / f"{rel.stem}.{tag}.pyc", [header, marshal.dumps(code)], 0o644)
        except OSError:
            continue
        count += 1
    return count


# --- filling the wheelhouse --------------------------------------------------------------------------


def _escape(component: str) -> str:
    return re.sub(r"[^\w\d.]+", "_", component, flags=re.UNICODE)


def _tag_component(tags: Sequence[str]) -> str | None:
    """The compressed tag triple of a wheel file name for these `Tag:` lines (WHEEL metadata)."""
    parsed: set[Tag] = set()
    for tag in tags:
        parsed |= parse_tag(tag)
    if not parsed:
        return None
    interpreters = sorted({t.interpreter for t in parsed})
    abis = sorted({t.abi for t in parsed})
    platforms = sorted({t.platform for t in parsed})
    if len(parsed) == len(interpreters) * len(abis) * len(platforms):
        return f"{'.'.join(interpreters)}-{'.'.join(abis)}-{'.'.join(platforms)}"
    first = next(iter(parse_tag(tags[0])))
    same = sorted(t.platform for t in parsed if (t.interpreter, t.abi) == (first.interpreter, first.abi))
    return f"{first.interpreter}-{first.abi}-{'.'.join(same)}"


def _is_editable(dist: importlib.metadata.Distribution) -> bool:
    raw = dist.read_text("direct_url.json")
    if not raw:
        return False
    try:
        data = json.loads(raw)
    except ValueError:
        return True
    return bool(isinstance(data, dict) and data.get("dir_info", {}).get("editable"))


def repack_installed(name: str, version_spec: SpecifierSet, out_dir: Path) -> Path | None:
    """Rebuild a wheel of the agent's own installed copy of `name` into `out_dir`, if it fits.

    Works from the distribution's RECORD: its importable files and dist-info metadata, plus non-generated
    scripts (ruff's binary) as `.data/scripts`. Generated console scripts are left out (the installer makes
    them again), so are byte-code caches and install-time files. Editable installs are never repacked.
    """
    try:
        dist = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return None
    try:
        version = Version(dist.version)
    except InvalidVersion:
        return None
    if not version_spec.contains(version, prereleases=True) or _is_editable(dist):
        return None
    wheel_meta = dist.read_text("WHEEL")
    files = dist.files
    if not wheel_meta or not files:
        return None
    tag = _tag_component([ln.split(":", 1)[1].strip() for ln in wheel_meta.splitlines() if ln.startswith("Tag:")])
    metadata_files = [f for f in files if len(f.parts) == 2 and f.parts[0].endswith(".dist-info")]
    dist_infos = {f.parts[0] for f in metadata_files if f.name == "METADATA"}
    if tag is None or len(dist_infos) != 1:
        return None
    dist_info = dist_infos.pop()
    data_dir = dist_info[: -len(".dist-info")] + ".data"
    base = Path(str(dist.locate_file("")))
    scripts_dir = Path(os.path.normpath(sysconfig.get_path("scripts")))
    generated = set(_entry_point_scripts(dist.read_text("entry_points.txt") or ""))
    members: list[tuple[str, Path]] = []
    for f in files:
        rel = PurePosixPath(str(f))
        if "__pycache__" in rel.parts or rel.suffix == ".pyc":
            continue
        if rel.parts[0] == dist_info and rel.name in _SKIPPED_DIST_INFO and len(rel.parts) == 2:
            continue
        source = Path(os.path.normpath(base / rel))
        if rel.parts[0] == "..":
            if source.parent != scripts_dir or rel.name in generated:
                continue  # generated scripts, or data files outside site-packages
            arcname = f"{data_dir}/scripts/{rel.name}"
        else:
            arcname = str(rel)
        if not source.is_file():
            return None  # an incomplete installation: better download a real wheel
        members.append((arcname, source))
    filename = f"{_escape(dist.metadata['Name'] or name)}-{_escape(str(version))}-{tag}.whl"
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".{filename}.{secrets.token_hex(4)}.tmp"
    records: list[tuple[str, str, str]] = []
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
            for arcname, source in members:
                data = source.read_bytes()
                info = zipfile.ZipInfo(arcname, date_time=(1980, 1, 1, 0, 0, 0))
                info.external_attr = ((0o755 if os.access(source, os.X_OK) else 0o644) | 0o100000) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, data, compresslevel=1)
                records.append((arcname, _record_hash(hashlib.sha256(data).digest()), str(len(data))))
            records.append((f"{dist_info}/RECORD", "", ""))
            out = io.StringIO()
            csv.writer(out, lineterminator="\n").writerows(records)
            zf.writestr(f"{dist_info}/RECORD", out.getvalue())
        os.chmod(tmp, 0o644)
        final = out_dir / filename
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    log.info("repacked the agent's %s %s into %s", name, version, final)
    return final


def adopt_downloads(download_dir: Path, cache: Path) -> list[Path]:
    """Move the wheels pip downloaded into the cache (atomic renames), then drop the download folder."""
    moved: list[Path] = []
    try:
        for entry in os.scandir(download_dir):
            if entry.name.endswith(".whl") and entry.is_file():
                dest = cache / entry.name
                os.replace(entry.path, dest)
                os.chmod(dest, 0o644)
                moved.append(dest)
    finally:
        shutil.rmtree(download_dir, ignore_errors=True)
    return moved
