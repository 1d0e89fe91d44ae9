"""A real node for tests: containerd + runc + CNI bridge + kubelet, registered with a `ControlPlane`.

Nothing is installed here: `node_problem()` checks what the machine has (root, containerd, runc, ctr, the CNI
bridge/host-local/loopback plugins, iptables, ip, the kubelet in KUBEBUILDER_ASSETS, the image tarballs) and
says exactly what is missing, so the tests marked `node` skip with that reason. `.ci/run` installs the Debian
packages; `make sandbox-image-offline` builds the sandbox image (images/sandbox/build_offline.py).

What a started `Node` owns, all of it removed again by `stop()` (/work/shared/k8s/README.md lists what a node
leaves behind otherwise):
- a Linux bridge `cgmcp<hex>` with a free 10.244.N.1/24 — the node's IP; Pods get addresses on it through a
  `bridge` + `host-local` CNI conflist (no gateway, no masquerade, no routes: nothing beyond this machine);
- containerd with its own config, socket, root, state (network namespaces too), runc root and CNI folders;
  `restrict_oom_score_adj` because these VMs lack CAP_SYS_RESOURCE (without it every Pod fails with
  `can't get final child's PID from pipe: EOF`);
- the kubelet with its own root dir, a client certificate `system:node:<name>` and a serving certificate for the
  bridge address from the plane's CA, and a cgroup root of its own (`/<name>`), so its `kubepods` never mixes
  with another node's;
- the Node object, registered with the taint `TAINT_KEY:NoSchedule` so that Pods of other tests sharing the
  control plane never land on it; `accepting_pods()` lifts the taint for a test that wants its Pods here.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import random
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.control_plane import ASSETS_ENV, ControlPlane, free_port, tail, terminate

REPO = Path(__file__).resolve().parents[2]
PAUSE_IMAGE = "localhost/pause:1.0"
PAUSE_IMAGE_ENV = "CODEGEN_TEST_PAUSE_IMAGE_TAR"
SANDBOX_IMAGE_ENV = "CODEGEN_TEST_SANDBOX_IMAGE_TAR"
# The workplace keeps the pause image beside the Kubernetes binaries (`.ci/run` finds ../shared/k8s the same way).
PAUSE_IMAGE_CANDIDATES = ("{assets}/pause-image.tar", str(REPO.parent / "shared" / "k8s" / "pause-image.tar"))
SANDBOX_IMAGE_TAR = REPO / "build" / "sandbox-image.tar"  # `make sandbox-image-offline`
CNI_DIRS = (Path("/usr/lib/cni"), Path("/opt/cni/bin"))
CNI_PLUGINS = ("bridge", "host-local", "loopback")
BINARIES = ("containerd", "containerd-shim-runc-v2", "runc", "ctr", "iptables", "ip")
TAINT_KEY = "codegen-mcp.test/real-node"
READY_TIMEOUT = 90.0
DRAIN_TIMEOUT = 60.0
# Paths a node writes outside its own folders whatever it is told; removed at stop when they were not there before.
GLOBAL_PATHS = (Path("/run/containerd"), Path("/var/lib/cni"), Path("/var/log/containers"), Path("/var/lib/kubelet"))


class NodeError(RuntimeError):
    pass


# --- what the machine must have -------------------------------------------------------------------------------


def cni_bin_dir() -> Path | None:
    for folder in CNI_DIRS:
        if all(os.access(folder / p, os.X_OK) for p in CNI_PLUGINS):
            return folder
    return None


def pause_image_tar(assets: str | None) -> Path | None:
    given = os.environ.get(PAUSE_IMAGE_ENV)
    candidates = [given] if given else [c.format(assets=assets or "/nonexistent") for c in PAUSE_IMAGE_CANDIDATES]
    return next((Path(c) for c in candidates if Path(c).is_file()), None)


def sandbox_image_tar() -> Path:
    return Path(os.environ.get(SANDBOX_IMAGE_ENV) or SANDBOX_IMAGE_TAR)


def node_problem(assets: str | None = None) -> str | None:
    """Why a real node cannot start here, or None when it can."""
    assets = assets if assets is not None else os.environ.get(ASSETS_ENV)
    if os.geteuid() != 0:
        return "a node needs root (bridges, network namespaces, mounts, cgroups)"
    missing = [b for b in BINARIES if shutil.which(b) is None]
    if missing:
        return f"missing {', '.join(missing)} (Debian: containerd runc iptables iproute2 — see .ci/run)"
    if cni_bin_dir() is None:
        dirs = " or ".join(map(str, CNI_DIRS))
        return f"no CNI plugins {', '.join(CNI_PLUGINS)} in {dirs} (Debian: containernetworking-plugins)"
    if not assets or not os.access(Path(assets) / "kubelet", os.X_OK):
        return f"no executable kubelet in {ASSETS_ENV}={assets or '<unset>'}"
    if pause_image_tar(assets) is None:
        return f"no pause image tarball ({PAUSE_IMAGE}): set {PAUSE_IMAGE_ENV} or put pause-image.tar in {assets}"
    if not sandbox_image_tar().is_file():
        return (
            f"no sandbox image at {sandbox_image_tar()}: `make sandbox-image-offline` builds it "
            f"(root + mmdebstrap), or set {SANDBOX_IMAGE_ENV}"
        )
    if not cgroup_mounts():
        return "no cgroup hierarchy is mounted under /sys/fs/cgroup"
    return bridge_problem()


def bridge_problem() -> str | None:
    """Whether this machine lets us make a Linux bridge (containers without CAP_NET_ADMIN do not)."""
    probe = f"cgmcpprobe{os.urandom(2).hex()}"
    made = run("ip", "link", "add", probe, "type", "bridge", check=False)
    if made.returncode != 0:
        return f"cannot create a Linux bridge here: {made.stderr.strip()}"
    run("ip", "link", "del", probe, check=False)
    return None


def image_tag(archive: Path) -> str:
    """The first RepoTag of a docker-archive tarball (what Pods name it by)."""
    with tarfile.open(archive) as tar:
        member = tar.extractfile("manifest.json")
        assert member is not None, f"{archive} has no manifest.json"
        manifest = json.load(member)
    return str(manifest[0]["RepoTags"][0])


# --- small helpers ------------------------------------------------------------------------------------------------


def run(*argv: str, check: bool = True, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if check and done.returncode != 0:
        raise NodeError(f"{' '.join(argv)} exited with {done.returncode}: {done.stderr.strip() or done.stdout.strip()}")
    return done


def used_networks() -> list[ipaddress.IPv4Network]:
    routes = json.loads(run("ip", "-j", "-4", "route", "show", "table", "all").stdout or "[]")
    nets: list[ipaddress.IPv4Network] = []
    for route in routes:
        dst = route.get("dst", "")
        if dst and dst != "default":
            with contextlib.suppress(ValueError):
                nets.append(ipaddress.IPv4Network(dst if "/" in dst else f"{dst}/32", strict=False))
    return nets


def free_subnet() -> ipaddress.IPv4Network:
    used = used_networks()
    for third in random.sample(range(100, 250), 150):
        candidate = ipaddress.IPv4Network(f"10.244.{third}.0/24")
        if not any(candidate.overlaps(u) for u in used):
            return candidate
    raise NodeError("no free 10.244.N.0/24 for the node's bridge")


def mounts_under(root: Path) -> list[str]:
    """Mount points below `root`, deepest first (from /proc/self/mountinfo; octal escapes decoded)."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].encode().decode("unicode_escape")
        if point == str(root) or point.startswith(f"{root}/"):
            found.append(point)
    return sorted(found, key=len, reverse=True)


def cgroup_mounts() -> list[Path]:
    """Every mounted cgroup hierarchy (v1 controllers, the named systemd one, or the v2 unified one)."""
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        if right.split()[0] in ("cgroup", "cgroup2"):
            points.append(Path(left.split()[4]))
    return points


# --- the node -----------------------------------------------------------------------------------------------------


class Node:
    """One kubelet + containerd node of `plane`, on a bridge of its own. `start()`, `stop()`, or `with`."""

    def __init__(self, plane: ControlPlane, root: Path, *, images: tuple[Path, ...] = ()) -> None:
        self.plane = plane
        self.root = Path(root)
        self.name = f"codegen-node-{os.urandom(3).hex()}"
        self.bridge = f"cgmcp{self.name[-6:]}"
        self.images = images
        self.image_tags = [image_tag(i) for i in images]
        self.subnet: ipaddress.IPv4Network | None = None
        self._processes: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
        self._preexisting = {p: p.exists() for p in GLOBAL_PATHS}
        self.timings: dict[str, float] = {}
        self._volumes: list[str] = []
        self._storage_classes: list[str] = []

    # --- paths ---

    @property
    def ip(self) -> str:
        assert self.subnet is not None, "the node is not started"
        return str(self.subnet.network_address + 1)

    @property
    def socket(self) -> Path:
        return self.root / "containerd.sock"

    @property
    def cgroup_root(self) -> str:
        return f"/{self.name}"

    @property
    def network_name(self) -> str:
        return self.name

    # --- API access (the admin's certificate) ---

    def api(self, method: str, path: str, body: Any = None, content_type: str = "application/json") -> Any:
        """One request to the control plane; None for 404, the decoded JSON otherwise."""
        code, raw = self.plane.call(method, path, body, content_type=content_type)
        if code == 404:
            return None
        if code >= 400:
            raise NodeError(f"{method} {path}: {code} {raw.decode(errors='replace')}")
        return json.loads(raw)

    def node_object(self) -> dict[str, Any] | None:
        found = self.api("GET", f"/api/v1/nodes/{self.name}")
        return dict(found) if found else None

    def is_ready(self) -> bool:
        node = self.node_object() or {}
        conditions = {c["type"]: c["status"] for c in node.get("status", {}).get("conditions", [])}
        return conditions.get("Ready") == "True"

    def pods(self) -> list[dict[str, Any]]:
        found = self.api("GET", f"/api/v1/pods?fieldSelector=spec.nodeName%3D{self.name}") or {"items": []}
        return list(found["items"])

    # --- lifecycle ---

    def start(self) -> Node:
        began = time.monotonic()
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            self._make_bridge()
            self._start_containerd()
            step = time.monotonic()
            for archive in self.images:
                self.ctr("images", "import", str(archive), timeout=300)
            self.timings["images_import_s"] = time.monotonic() - step
            self._start_kubelet()
            self._wait(self.is_ready, READY_TIMEOUT, f"Node {self.name} Ready")
        except BaseException as exc:
            try:
                self.stop()
            except NodeError as leftover:
                exc.add_note(str(leftover))
            raise
        self.timings["start_s"] = time.monotonic() - began
        return self

    def ctr(self, *argv: str, check: bool = True, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return run("ctr", "--address", str(self.socket), "--namespace", "k8s.io", *argv, check=check, timeout=timeout)

    def _make_bridge(self) -> None:
        self.subnet = free_subnet()
        run("ip", "link", "add", self.bridge, "type", "bridge")
        run("ip", "addr", "add", f"{self.ip}/{self.subnet.prefixlen}", "dev", self.bridge)
        run("ip", "link", "set", self.bridge, "up")

    def _start_containerd(self) -> None:
        cni_bin = cni_bin_dir()
        assert cni_bin is not None and self.subnet is not None
        conf_dir = self.root / "cni" / "net.d"
        conf_dir.mkdir(parents=True)
        hosts = list(self.subnet.hosts())
        conflist = {
            "cniVersion": "1.0.0",
            "name": self.network_name,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": self.bridge,
                    "isGateway": False,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [
                            [{"subnet": str(self.subnet), "rangeStart": str(hosts[9]), "rangeEnd": str(hosts[-1])}]
                        ],
                        "dataDir": str(self.root / "cni" / "ipam"),
                    },
                }
            ],
        }
        (conf_dir / "10-codegen-node.conflist").write_text(json.dumps(conflist, indent=2))
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        config = f"""\
version = 2
root = "{self.root / "containerd" / "root"}"
state = "{self.root / "containerd" / "state"}"
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp",
]

[grpc]
  address = "{self.socket}"

[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_selinux = false

[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false
  Root = "{self.root / "runc"}"

[{cri}.cni]
  bin_dir = "{cni_bin}"
  conf_dir = "{conf_dir}"
  max_conf_num = 1

[plugins."io.containerd.internal.v1.opt"]
  path = "{self.root / "containerd" / "opt"}"
"""
        (self.root / "containerd.toml").write_text(config)
        self._spawn("containerd", ["containerd", "--config", str(self.root / "containerd.toml")])
        self._wait(lambda: self.ctr("version", check=False).returncode == 0, 30, "containerd's socket")

    def _start_kubelet(self) -> None:
        pki = self.root / "pki"
        pki.mkdir()
        cert, key = self.plane.ca.issue(self.name, server=True, dns_names=(self.name,), ips=(self.ip,))
        (pki / "kubelet.crt").write_bytes(cert)
        (pki / "kubelet.key").write_bytes(key)
        (pki / "kubelet.key").chmod(0o600)
        kubeconfig = self.plane.user_kubeconfig(
            f"system:node:{self.name}", ("system:nodes",), path=self.root / "kubelet.kubeconfig"
        )
        cgroup_root = self.cgroup_root
        for hierarchy in cgroup_mounts():  # the kubelet refuses a cgroup root that does not exist
            (hierarchy / cgroup_root.lstrip("/")).mkdir(exist_ok=True)
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": self.ip,
            "port": free_port(),
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": free_port(),
            "tlsCertFile": str(pki / "kubelet.crt"),
            "tlsPrivateKeyFile": str(pki / "kubelet.key"),
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(self.plane.ca_file)},
            },
            "authorization": {"mode": "Webhook"},
            "containerRuntimeEndpoint": f"unix://{self.socket}",
            # cgroup v1 machines: 1.36 refuses v1 unless told; no systemd to drive cgroups.
            "failCgroupV1": False,
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": cgroup_root,
            "failSwapOn": False,
            "makeIPTablesUtilChains": False,
            # Local-only images must stay: image garbage collection off.
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "evictionHard": {"memory.available": "50Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
            "podLogsDir": str(self.root / "pod-logs"),
            "volumePluginDir": str(self.root / "volume-plugins"),
            "registerWithTaints": [{"key": TAINT_KEY, "value": "true", "effect": "NoSchedule"}],
            "rotateCertificates": False,
            "serverTLSBootstrap": False,
            "protectKernelDefaults": False,
            "nodeStatusUpdateFrequency": "2s",
            "nodeStatusReportFrequency": "10s",
            "syncFrequency": "10s",
        }
        (self.root / "kubelet.yaml").write_text(yaml.safe_dump(config))
        self._spawn(
            "kubelet",
            [
                str(Path(os.environ[ASSETS_ENV]) / "kubelet"),
                f"--config={self.root / 'kubelet.yaml'}",
                f"--kubeconfig={kubeconfig}",
                f"--root-dir={self.root / 'kubelet'}",
                f"--cert-dir={pki}",
                f"--hostname-override={self.name}",
                f"--node-ip={self.ip}",
                "--v=2",
            ],
            # The workplace's kubelet only logs the kernel sysctls it would otherwise rewrite on the host.
            env={"KUBELET_KERNEL_TUNABLES": "warn"},
        )

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        log = self.root / f"{name}.log"
        with open(log, "wb") as out:
            popen = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={**os.environ, **(env or {})},
            )
        self._processes[name] = (popen, log)

    def _check_alive(self) -> None:
        for name, (popen, log) in self._processes.items():
            if popen.poll() is not None:
                raise NodeError(f"{name} exited with {popen.returncode}:\n{tail(log)}")

    def _wait(self, probe: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            if probe():
                return
            time.sleep(0.2)
        logs = "\n".join(f"--- {n}\n{tail(log)}" for n, (_, log) in self._processes.items())
        raise NodeError(f"no {what} within {timeout:g} s\n{logs}")

    @contextlib.contextmanager
    def accepting_pods(self) -> Iterator[Node]:
        """Lift the node's taint for the duration (other tests' Pods stay off it otherwise)."""
        self._set_taint(False)
        try:
            yield self
        finally:
            self._set_taint(True)

    def _set_taint(self, on: bool) -> None:
        node = self.node_object()
        assert node is not None, f"Node {self.name} is gone"
        taints = [t for t in node["spec"].get("taints", []) if t["key"] != TAINT_KEY]
        if on:
            taints.append({"key": TAINT_KEY, "value": "true", "effect": "NoSchedule"})
        self.api("PATCH", f"/api/v1/nodes/{self.name}", {"spec": {"taints": taints}}, "application/merge-patch+json")

    def workspace_volumes(
        self, storage_class: str, count: int, *, size: str = "1Gi", uid: int = 10001, gid: int = 10001
    ) -> list[str]:
        """`count` static hostPath PersistentVolumes of `storage_class` (made when missing), on folders owned by uid.

        Pre-owned because a hostPath volume ignores the Pod's fsGroup: on a folder made by root (the
        controller-manager's hostPath provisioner) the sandbox, uid 10001, cannot write its workspace. Retained
        volumes are never reused; `stop()` deletes them and the class.
        """
        classes = "/apis/storage.k8s.io/v1/storageclasses"
        if self.api("GET", f"{classes}/{storage_class}") is None:
            self.api("POST", classes, {
                "apiVersion": "storage.k8s.io/v1",
                "kind": "StorageClass",
                "metadata": {"name": storage_class},
                "provisioner": "kubernetes.io/no-provisioner",
                "reclaimPolicy": "Retain",
                "volumeBindingMode": "Immediate",
            })  # fmt: skip
            self._storage_classes.append(storage_class)
        names = []
        for _ in range(count):
            name = f"{self.name}-{os.urandom(4).hex()}"
            folder = self.root / "volumes" / name
            folder.mkdir(parents=True)
            os.chown(folder, uid, gid)
            self.api("POST", "/api/v1/persistentvolumes", {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": name, "labels": {"codegen-mcp.test/node": self.name}},
                "spec": {
                    "storageClassName": storage_class,
                    "capacity": {"storage": size},
                    "accessModes": ["ReadWriteOnce"],
                    "persistentVolumeReclaimPolicy": "Retain",
                    "hostPath": {"path": str(folder), "type": "Directory"},
                },
            })  # fmt: skip
            self._volumes.append(name)
            names.append(name)
        return names

    def volume_folder(self, volume: str) -> Path:
        return self.root / "volumes" / volume

    def _remove_volumes(self) -> None:
        for name in self._volumes:
            self.api("DELETE", f"/api/v1/persistentvolumes/{name}")
        for name in self._storage_classes:
            self.api("DELETE", f"/apis/storage.k8s.io/v1/storageclasses/{name}")
        self._volumes.clear()
        self._storage_classes.clear()

    def logs(self) -> dict[str, str]:
        return {name: tail(log, 60) for name, (_, log) in self._processes.items()}

    # --- teardown ---

    def stop(self) -> None:
        """Stop everything this node started and remove what it left on the machine; raise what could not go."""
        problems: list[str] = []

        def attempt(what: str, step: Any) -> None:
            try:
                step()
            except Exception as exc:  # every step runs; the failures are reported together below
                problems.append(f"{what}: {exc}")

        if "kubelet" in self._processes and self._processes["kubelet"][0].poll() is None:
            attempt("drain the node's Pods", self._drain)
        if "kubelet" in self._processes:
            terminate(self._processes["kubelet"][0], grace=10)
        attempt("delete the Node", lambda: self.api("DELETE", f"/api/v1/nodes/{self.name}"))
        attempt("delete the volumes", self._remove_volumes)
        netns = self._sandbox_netns() if "containerd" in self._processes else []
        if "containerd" in self._processes:
            attempt("remove containers", self._remove_containers)
            terminate(self._processes["containerd"][0], grace=10)
            attempt("end the shims", self._kill_shims)
        self._processes.clear()
        attempt("unmount", self._unmount)
        for path in netns:
            with contextlib.suppress(FileNotFoundError):
                Path(path).unlink()
        attempt("remove cgroups", self._remove_cgroups)
        if self.subnet is not None:
            attempt("delete the bridge", lambda: run("ip", "link", "del", self.bridge))
        attempt("remove global state", self._remove_global_state)
        shutil.rmtree(self.root, ignore_errors=True)
        if problems:
            raise NodeError("the node did not stop cleanly:\n" + "\n".join(problems))

    def _drain(self) -> None:
        """Delete the node's Pods and wait until the kubelet has stopped them (it tears down their network)."""
        for pod in self.pods():
            meta = pod["metadata"]
            self.api("DELETE", f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}")
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while time.monotonic() < deadline:
            if not self.pods() and not self._running_tasks():
                return
            time.sleep(0.2)
        raise NodeError(
            f"Pods still on the node after {DRAIN_TIMEOUT:g} s: {[p['metadata']['name'] for p in self.pods()]}"
        )

    def _running_tasks(self) -> list[str]:
        out = self.ctr("tasks", "ls", check=False).stdout.splitlines()[1:]
        return [line.split()[0] for line in out if line.strip() and "RUNNING" in line]

    def _sandbox_netns(self) -> list[str]:
        paths = []
        ids = self.ctr("containers", "ls", "-q", check=False).stdout.split()
        for cid in ids:
            info = self.ctr("containers", "info", cid, check=False)
            if info.returncode != 0:
                continue
            spec = json.loads(info.stdout).get("Spec") or {}
            for ns in (spec.get("linux") or {}).get("namespaces") or []:
                if ns.get("type") == "network" and ns.get("path", "").startswith(str(self.root)):
                    paths.append(ns["path"])
        return sorted(set(paths))

    def _remove_containers(self) -> None:
        for cid in self.ctr("tasks", "ls", "-q", check=False).stdout.split():
            self.ctr("tasks", "kill", "--signal", "SIGKILL", cid, check=False)
            self.ctr("tasks", "delete", "--force", cid, check=False)
        for cid in self.ctr("containers", "ls", "-q", check=False).stdout.split():
            self.ctr("containers", "delete", cid, check=False)

    def _kill_shims(self) -> None:
        """Shims outlive containerd; end the ones serving this node's socket (by pid, nothing else)."""
        marker = f"-address\0{self.socket}\0"
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if "containerd-shim" in cmdline and marker in cmdline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(proc.name), signal.SIGKILL)

    def _unmount(self) -> None:
        for point in mounts_under(self.root):
            run("umount", "--lazy", point, check=False)
        left = mounts_under(self.root)
        if left:
            raise NodeError(f"still mounted: {left}")

    def _remove_cgroups(self) -> None:
        left = []
        for hierarchy in cgroup_mounts():
            top = hierarchy / self.cgroup_root.lstrip("/")
            if not top.is_dir():
                continue
            for folder in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
                with contextlib.suppress(OSError):
                    folder.rmdir()
            try:
                top.rmdir()
            except OSError as exc:
                left.append(f"{top}: {exc}")
        if left:
            raise NodeError("; ".join(left))

    def _remove_global_state(self) -> None:
        logs = Path("/var/log/containers")
        if logs.is_dir():
            for link in logs.iterdir():
                if link.is_symlink() and os.readlink(link).startswith(str(self.root)):
                    link.unlink()
        cni_cache = Path("/var/lib/cni/results")
        if cni_cache.is_dir():
            for entry in cni_cache.glob(f"{self.network_name}-*"):
                entry.unlink()
        for path, existed in self._preexisting.items():
            if not existed and path.exists():
                shutil.rmtree(path, ignore_errors=True)

    def __enter__(self) -> Node:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- pytest -------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def real_node(request: pytest.FixtureRequest) -> Iterator[Node]:
    """A kubelet + containerd node of the session's `control_plane` with the pause and sandbox images imported.

    tests/conftest.py imports it, so every suite shares one node (a second import would start a second one).
    Skips, saying why, where a node cannot start (see `node_problem`) — checked before the control plane is started
    for it.
    """
    problem = node_problem()
    if problem is not None:
        pytest.skip(reason=f"needs a real node: {problem}")
    control_plane: ControlPlane = request.getfixturevalue("control_plane")
    pause = pause_image_tar(os.environ.get(ASSETS_ENV))
    assert pause is not None
    root = Path(tempfile.mkdtemp(prefix="codegen-mcp-realnode-"))
    root.chmod(0o711)
    node = Node(control_plane, root, images=(pause, sandbox_image_tar()))
    node.start()
    try:
        yield node
    finally:
        node.stop()
