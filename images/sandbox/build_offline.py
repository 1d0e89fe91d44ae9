#!/usr/bin/env python3
"""Build the sandbox image without Docker: a Debian root filesystem plus the agent's venv, as a docker-archive.

Shared with images/sandbox/Dockerfile, so the two images agree (one place for each fact):
- `debian-packages.txt`: the Debian packages both install;
- the Dockerfile's final stage: its ENV, USER, WORKDIR, EXPOSE, ENTRYPOINT, CMD and LABELs are read from there,
  and its USER is also the uid/gid of the `sandbox` user and the owner of /workspace made here;
- the layout: /opt/codegen-mcp (the agent's venv: `pip install .`, byte-compiled, pip upgraded and kept),
  /opt/codegen-mcp-wheels (pytest, ruff and mypy wheels for test.run / lint.check), and the same checks (the
  agent imports; no mcp, kopf or kubernetes in the venv).
What differs: Python is Debian's python3 (/usr/bin/python3, 3.11 on bookworm) where the Dockerfile starts from
python:3.12-slim (/usr/local/bin/python3), so CODEGEN_AGENT_PYTHON is overridden below; and Debian's minbase
replaces the slim image's base.

Two layers: (1) `mmdebstrap --variant=minbase` of the suite from the host's own apt sources, cached under
--cache-dir by everything that makes it (package list, hooks, sources) — a second build skips it; (2) the venv,
installed offline in a chroot of (1) from wheels the host downloads (`pip wheel --no-deps .` + the runtime
dependencies for the rootfs's Python and glibc). Needs root (mmdebstrap's root mode, chroot).

Import it with `ctr --address SOCK -n k8s.io images import OUTPUT` and run Pods with `imagePullPolicy: Never`.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import io
import json
import os
import re
import shlex
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DOCKERFILE = HERE / "Dockerfile"
PACKAGES_FILE = HERE / "debian-packages.txt"
# What the Dockerfile's base image (python:slim) brings and Debian's minbase lacks.
PYTHON_PACKAGES = ["python3", "python3-venv"]
DEBIAN_PYTHON = "/usr/bin/python3"
ENV_OVERRIDES = {"CODEGEN_AGENT_PYTHON": DEBIAN_PYTHON}
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
VENV = "/opt/codegen-mcp"
DEVTOOL_WHEELS = "/opt/codegen-mcp-wheels"
DEVTOOLS = ["pytest", "ruff", "mypy"]
WHEEL_STAGE = "/root/wheels"  # the agent's wheels during the build; outside both /opt folders, so not in the layer
FORBIDDEN = ("mcp", "kopf", "kubernetes", "kubernetes_asyncio", "uvicorn")
# Smaller rootfs: no documentation (copyright files stay), manual pages, translations.
DPKG_OPTIONS = [
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
]
RECIPE_VERSION = 1  # bump when the base recipe changes in a way the cache key does not see


def log(message: str) -> None:
    print(f"build_offline: {message}", file=sys.stderr, flush=True)


# --- what the Dockerfile says -----------------------------------------------------------------------------------


@dataclass
class ImageConfig:
    env: dict[str, str] = field(default_factory=lambda: {"PATH": BASE_PATH})
    labels: dict[str, str] = field(default_factory=dict)
    user: str = "0:0"
    workdir: str = "/"
    exposed: list[str] = field(default_factory=list)
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)

    @property
    def uid_gid(self) -> tuple[int, int]:
        uid, _, gid = self.user.partition(":")
        return int(uid), int(gid or uid)


def dockerfile_lines(text: str) -> list[str]:
    """Logical lines: continuations joined, comments and blank lines dropped."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        lines.append(pending + line)
        pending = ""
    return lines


def _expand(value: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: env.get(m.group(1) or m.group(2), ""), value)


def final_stage_config(text: str) -> ImageConfig:
    """The runtime config of the Dockerfile's last stage (Docker's semantics for the instructions used there)."""
    config = ImageConfig()
    for line in dockerfile_lines(text):
        keyword, _, arg = line.partition(" ")
        keyword, arg = keyword.upper(), arg.strip()
        if keyword == "FROM":
            config = ImageConfig()
        elif keyword in ("ENV", "LABEL"):
            before = dict(config.env)  # one ENV instruction sees only what was set before it
            target = config.env if keyword == "ENV" else config.labels
            for word in shlex.split(arg):
                key, sep, value = word.partition("=")
                assert sep, f"only the KEY=VALUE form is supported: {line}"
                target[key] = _expand(value, before)
        elif keyword == "USER":
            config.user = arg
        elif keyword == "WORKDIR":
            config.workdir = arg
        elif keyword == "EXPOSE":
            config.exposed += arg.split()
        elif keyword == "ENTRYPOINT":
            config.entrypoint = json.loads(arg)
        elif keyword == "CMD":
            config.cmd = json.loads(arg)
    config.env.update(ENV_OVERRIDES)
    return config


def read_packages(path: Path) -> list[str]:
    return [word for line in path.read_text().splitlines() for word in line.partition("#")[0].split()]


# --- layer 1: the Debian root filesystem ----------------------------------------------------------------------


def host_apt_sources() -> list[Path]:
    """The host's Debian sources (deb822 first): mmdebstrap pastes them into the rootfs as they are."""
    for candidate in (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list")):
        if candidate.is_file() and candidate.stat().st_size:
            return [candidate]
    raise SystemExit("no Debian apt sources on this host: pass --apt-sources")


def mmdebstrap_command(suite: str, packages: list[str], uid: int, gid: int, workspace: str) -> list[str]:
    hooks = [
        # The Dockerfile's `groupadd`/`useradd` (passwd is not in minbase): same names, ids, home and shell.
        f"echo 'sandbox:x:{gid}:' >> \"$1/etc/group\"",
        f"echo 'sandbox:x:{uid}:{gid}::/tmp:/usr/sbin/nologin' >> \"$1/etc/passwd\"",
        f'install -d -o {uid} -g {gid} "$1{workspace}"',
    ]
    return [
        "mmdebstrap",
        "--variant=minbase",
        "--format=tar",
        "--skip=output/dev",  # runc makes /dev; device nodes do not belong in an image layer
        f"--include={','.join(packages)}",
        *(f"--dpkgopt={o}" for o in DPKG_OPTIONS),
        *(f"--customize-hook={h}" for h in hooks),
        suite,
    ]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def base_rootfs(command: list[str], sources: list[Path], cache_dir: Path) -> Path:
    """The cached rootfs tarball for this exact recipe, made with mmdebstrap when missing."""
    recipe = {"command": command, "sources": [p.read_text() for p in sources], "version": RECIPE_VERSION}
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:20]
    cached = cache_dir / f"rootfs-{key}.tar"
    if cached.is_file():
        log(f"base rootfs from the cache: {cached}")
        return cached
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = cached.with_suffix(".tar.partial")
    began = time.monotonic()
    log(f"mmdebstrap → {cached} (cache miss)")
    subprocess.run([*command, str(partial), *map(str, sources)], check=True)
    partial.rename(cached)
    log(f"base rootfs built in {time.monotonic() - began:.0f} s")
    return cached


# --- layer 2: the agent's venv ------------------------------------------------------------------------------------


def in_chroot(root: Path, *argv: str, capture: bool = False) -> str:
    env = {
        "PATH": BASE_PATH,
        "HOME": "/root",
        "LANG": "C.UTF-8",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PIP_NO_CACHE_DIR": "1",
        "PIP_ROOT_USER_ACTION": "ignore",
    }
    done = subprocess.run(["chroot", str(root), *argv], check=True, env=env, capture_output=capture, text=True)
    return done.stdout if capture else ""


def target_tags(root: Path) -> list[str]:
    """pip's --python-version/--abi/--platform for the rootfs's Python and glibc, asked from that Python."""
    probe = (
        "import os, platform, sys; print(*sys.version_info[:2], os.confstr('CS_GNU_LIBC_VERSION'), platform.machine())"
    )
    major, minor, _, glibc, machine = in_chroot(root, DEBIAN_PYTHON, "-c", probe, capture=True).split()
    glibc_major, glibc_minor = (int(part) for part in glibc.split(".")[:2])
    # pip matches --platform tags exactly: list every manylinux tag this glibc runs (PEP 600), newest first.
    platforms = [f"--platform=manylinux_{glibc_major}_{m}_{machine}" for m in range(glibc_minor, 4, -1)]
    return [
        "--only-binary=:all:",
        f"--python-version={major}.{minor}",
        "--implementation=cp",
        f"--abi=cp{major}{minor}",
        *platforms,
    ]


def download_wheels(tags: list[str], app: Path, devtools: Path) -> None:
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    subprocess.run([*pip, "wheel", "--no-deps", "--wheel-dir", str(app), str(REPO)], check=True)
    (project,) = app.glob("codegen_mcp-*.whl")
    subprocess.run([*pip, "download", *tags, "--dest", str(app), str(project), "pip"], check=True)
    subprocess.run([*pip, "download", *tags, "--dest", str(devtools), *DEVTOOLS], check=True)


def install_venv(root: Path) -> None:
    """The Dockerfile's build stage, offline, inside the rootfs (so the venv points at the rootfs's Python)."""
    pip = [f"{VENV}/bin/pip", "install", "--quiet", "--no-index", "--find-links", WHEEL_STAGE]
    in_chroot(root, DEBIAN_PYTHON, "-m", "venv", VENV)
    in_chroot(root, *pip, "--upgrade", "pip")
    in_chroot(root, *pip, "codegen-mcp")
    in_chroot(root, f"{VENV}/bin/python", "-m", "compileall", "-q", VENV)
    in_chroot(root, f"{VENV}/bin/python", "-c", "import codegen_mcp.sandbox_agent.app")
    check = (
        "import importlib.util as u, sys; "
        f"extra = [m for m in {FORBIDDEN!r} if u.find_spec(m)]; "
        "sys.exit(f'the sandbox image must not contain {extra}' if extra else 0)"
    )
    in_chroot(root, f"{VENV}/bin/python", "-c", check)


def _as_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def app_layer(base: Path, work: Path, config: ImageConfig) -> Path:
    root = work / "rootfs"
    root.mkdir()
    subprocess.run(["tar", "-C", str(root), "-xf", str(base)], check=True)
    for path in (config.env["CODEGEN_AGENT_PYTHON"], config.workdir):
        assert (root / path.lstrip("/")).exists(), f"{path} (from the image config) is not in the rootfs"
    wheels = root / WHEEL_STAGE.lstrip("/")
    devtools = root / DEVTOOL_WHEELS.lstrip("/")
    wheels.mkdir(parents=True)
    devtools.mkdir(parents=True)
    download_wheels(target_tags(root), wheels, devtools)
    install_venv(root)
    layer = work / "app.tar"
    with tarfile.open(layer, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in (VENV, DEVTOOL_WHEELS):
            tar.add(root / path.lstrip("/"), arcname=path.lstrip("/"), filter=_as_root)
    return layer


# --- the docker-archive ---------------------------------------------------------------------------------------


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(time.time())
    tar.addfile(info, io.BytesIO(data))


def write_docker_archive(output: Path, tag: str, layers: list[tuple[Path, str]], config: ImageConfig) -> None:
    """`docker save`'s format: one folder per layer with its uncompressed tar, the config JSON, manifest.json."""
    created = datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z")
    image_config = {
        "architecture": "amd64",
        "os": "linux",
        "created": created,
        "config": {
            "User": config.user,
            "Env": [f"{k}={v}" for k, v in config.env.items()],
            "Entrypoint": config.entrypoint,
            "Cmd": config.cmd,
            "WorkingDir": config.workdir,
            "ExposedPorts": {(p if "/" in p else f"{p}/tcp"): {} for p in config.exposed},
            "Labels": config.labels,
        },
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{digest}" for _, digest in layers]},
        "history": [
            {"created": created, "created_by": "mmdebstrap --variant=minbase (images/sandbox/build_offline.py)"},
            {"created": created, "created_by": "the agent's venv and devtool wheels (images/sandbox/build_offline.py)"},
        ],
    }
    config_bytes = json.dumps(image_config, indent=None, separators=(",", ":")).encode()
    config_name = f"{hashlib.sha256(config_bytes).hexdigest()}.json"
    manifest = [{"Config": config_name, "RepoTags": [tag], "Layers": [f"{d}/layer.tar" for _, d in layers]}]
    partial = output.with_name(output.name + ".partial")
    output.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(partial, "w") as tar:
        for path, digest in layers:
            tar.add(path, arcname=f"{digest}/layer.tar", filter=_as_root)
        _add_bytes(tar, config_name, config_bytes)
        _add_bytes(tar, "manifest.json", json.dumps(manifest).encode())
    partial.rename(output)


# --- main -------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--tag", default="localhost/codegen-mcp/sandbox:dev", help="the image's name")
    parser.add_argument("--output", type=Path, default=REPO / "build" / "sandbox-image.tar")
    parser.add_argument("--suite", default="bookworm", help="Debian suite (the Dockerfile's base is bookworm)")
    cache_home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    parser.add_argument("--cache-dir", type=Path, default=cache_home / "codegen-mcp" / "sandbox-rootfs")
    parser.add_argument(
        "--apt-sources", type=Path, action="append", help="sources file(s) for mmdebstrap (default: the host's)"
    )
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("build_offline.py needs root (mmdebstrap's root mode and chroot)")
    began = time.monotonic()
    config = final_stage_config(DOCKERFILE.read_text())
    uid, gid = config.uid_gid
    packages = PYTHON_PACKAGES + read_packages(PACKAGES_FILE)
    workspace = config.env.get("CODEGEN_AGENT_WORKSPACE", "/workspace")
    command = mmdebstrap_command(args.suite, packages, uid, gid, workspace)
    base = base_rootfs(command, args.apt_sources or host_apt_sources(), args.cache_dir)
    base_digest_file = base.with_suffix(".sha256")
    if not base_digest_file.is_file():
        base_digest_file.write_text(sha256_file(base))
    with tempfile.TemporaryDirectory(prefix="codegen-mcp-image-") as tmp:
        layer = app_layer(base, Path(tmp), config)
        layers = [(base, base_digest_file.read_text().strip()), (layer, sha256_file(layer))]
        write_docker_archive(args.output, args.tag, layers, config)
    size = args.output.stat().st_size / 1e6
    log(f"{args.tag} → {args.output} ({size:.0f} MB) in {time.monotonic() - began:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
