"""A real Kubernetes control plane for tests: etcd, kube-apiserver, kube-controller-manager and kube-scheduler.

The binaries come from `KUBEBUILDER_ASSETS`, a folder in controller-runtime envtest's layout (`etcd`,
`kube-apiserver`, and here also `kube-controller-manager` and `kube-scheduler`). On these machines
`../shared/k8s/unpack` prints one; elsewhere `setup-envtest use 1.36 -p path` gives etcd and kube-apiserver, and the
controller-manager and scheduler come from the Kubernetes release tarballs (the plane then runs without them and
says so: garbage collection, PV binding and scheduling need them).

Everything is made fresh per start: a throwaway CA and certificates (`cryptography`), free loopback ports, an
etcd data folder, kubeconfigs for the admin (`system:masters`) and for any user a test wants to be
(`user_kubeconfig`). `stop()` ends every process it started and nothing else.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ASSETS_ENV = "KUBEBUILDER_ASSETS"
SERVICE_CIDR = "10.96.0.0/16"
SERVICE_IP = "10.96.0.1"
READY_TIMEOUT = 60.0


def assets_problem(assets: str | None = None) -> str | None:
    """Why a real control plane cannot start here, or None when it can."""
    folder = assets if assets is not None else os.environ.get(ASSETS_ENV)
    if not folder:
        return (
            f"{ASSETS_ENV} is not set: it names a folder with etcd and kube-apiserver (envtest's layout; "
            "`export KUBEBUILDER_ASSETS=$(../shared/k8s/unpack)` here, `setup-envtest use 1.36 -p path` elsewhere)"
        )
    missing = [name for name in ("etcd", "kube-apiserver") if not os.access(Path(folder) / name, os.X_OK)]
    if missing:
        return f"{ASSETS_ENV}={folder} has no executable {', '.join(missing)}"
    return None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


# --- certificates ----------------------------------------------------------------------------------------------


def _pem_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@dataclass
class CertificateAuthority:
    """A throwaway CA that signs serving and client certificates for one control plane."""

    key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    cert: x509.Certificate = field(init=False)

    def __post_init__(self) -> None:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "codegen-mcp-test-ca")])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
            )  # digital signature, cert sign, CRL sign
            .sign(self.key, hashes.SHA256())
        )

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return _pem_key(self.key)

    def issue(
        self,
        common_name: str,
        *,
        organizations: tuple[str, ...] = (),
        dns_names: tuple[str, ...] = (),
        ips: tuple[str, ...] = (),
        server: bool = False,
    ) -> tuple[bytes, bytes]:
        """A (certificate PEM, key PEM) pair for a client (CN = user, O = groups) or a server (SANs)."""
        key = ec.generate_private_key(ec.SECP256R1())
        attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attrs))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
        )
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns_names]
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


# --- processes -------------------------------------------------------------------------------------------------


@dataclass
class _Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path


class ControlPlaneError(RuntimeError):
    pass


class ControlPlane:
    """etcd + kube-apiserver (+ controller-manager, + scheduler when their binaries are there) on loopback.

    `bind_address` is where the API server listens; `extra_sans` adds addresses to its serving certificate
    (a node's bridge address, so Pods could reach it). `hostpath_provisioner` turns on the controller-manager's
    in-tree provisioner for StorageClasses with `kubernetes.io/host-path`.
    """

    def __init__(
        self,
        assets: Path,
        root: Path,
        *,
        bind_address: str = "127.0.0.1",
        extra_sans: tuple[str, ...] = (),
        hostpath_provisioner: bool = True,
        crds: tuple[Path, ...] = (),
    ) -> None:
        self.assets = Path(assets)
        self.root = Path(root)
        self.bind_address = bind_address
        self.extra_sans = extra_sans
        self.hostpath_provisioner = hostpath_provisioner
        # Installed before the controller-manager starts: its garbage collector discovers resource types only
        # every 30 s, so owner references to a CRD installed later are honoured up to 30 s late.
        self.crds = crds
        self.ca = CertificateAuthority()
        self.port = free_port()
        self.host = "127.0.0.1"
        self._processes: list[_Process] = []
        self._admin_ssl: ssl.SSLContext | None = None
        self.started_seconds: float | None = None

    # --- paths and addresses ---

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def ca_file(self) -> Path:
        return self.pki / "ca.crt"

    @property
    def kubeconfig(self) -> Path:
        """The admin's kubeconfig (a client certificate in `system:masters`)."""
        return self.root / "admin.kubeconfig"

    def has(self, binary: str) -> bool:
        return os.access(self.assets / binary, os.X_OK)

    @property
    def components(self) -> list[str]:
        return [p.name for p in self._processes]

    # --- credentials ---

    def _write(self, name: str, data: bytes, mode: int = 0o600) -> Path:
        path = self.pki / name
        path.write_bytes(data)
        path.chmod(mode)
        return path

    def _client_files(self, user: str, groups: tuple[str, ...]) -> tuple[Path, Path]:
        cert, key = self.ca.issue(user, organizations=groups)
        stem = user.replace(":", "_")
        return self._write(f"{stem}.crt", cert), self._write(f"{stem}.key", key)

    def user_kubeconfig(self, user: str, groups: tuple[str, ...] = (), *, path: Path | None = None) -> Path:
        """A kubeconfig that authenticates as `user` in `groups` with a client certificate."""
        cert, key = self._client_files(user, groups)
        return self._kubeconfig_file(path or self.root / f"{user.replace(':', '_')}.kubeconfig", user, {
            "client-certificate": str(cert), "client-key": str(key),
        })  # fmt: skip

    def token_kubeconfig(self, name: str, token: str, *, path: Path | None = None) -> Path:
        """A kubeconfig that authenticates with a bearer token (e.g. a ServiceAccount's)."""
        return self._kubeconfig_file(path or self.root / f"{name}.kubeconfig", name, {"token": token})

    def _kubeconfig_file(self, path: Path, user: str, credentials: dict[str, str]) -> Path:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "test", "cluster": {"server": self.url, "certificate-authority": str(self.ca_file)}}],
            "users": [{"name": user, "user": credentials}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": user, "namespace": "default"}}],
            "current-context": "test",
        }
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    def ssl_context(self) -> ssl.SSLContext:
        """A client TLS context that trusts this plane's CA and presents the admin's certificate."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        context.load_cert_chain(str(self._admin_files[0]), str(self._admin_files[1]))
        return context

    # --- lifecycle ---

    def start(self) -> ControlPlane:
        began = time.monotonic()
        self.root.mkdir(parents=True, exist_ok=True)
        self.pki.mkdir(exist_ok=True)
        self._write("ca.crt", self.ca.cert_pem, 0o644)
        ca_key = self._write("ca.key", self.ca.key_pem)
        serving_cert, serving_key = self.ca.issue(
            "kube-apiserver",
            server=True,
            dns_names=(
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ),
            ips=("127.0.0.1", SERVICE_IP, *self.extra_sans),
        )
        self._write("apiserver.crt", serving_cert, 0o644)
        self._write("apiserver.key", serving_key)
        sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        sa_private = self._write("sa.key", _pem_key(sa_key))
        sa_public = self._write(
            "sa.pub",
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
            0o644,
        )
        self._admin_files = self._client_files("admin", ("system:masters",))
        kubelet_client = self._client_files("kube-apiserver-kubelet-client", ("system:masters",))
        self._kubeconfig_file(self.kubeconfig, "admin", {
            "client-certificate": str(self._admin_files[0]), "client-key": str(self._admin_files[1]),
        })  # fmt: skip

        try:
            etcd_port, etcd_peer = free_port(), free_port()
            self._spawn("etcd", [
                "--data-dir", str(self.root / "etcd"),
                "--listen-client-url", f"http://127.0.0.1:{etcd_port}",
                "--listen-peer-url", f"http://127.0.0.1:{etcd_peer}",
            ])  # fmt: skip
            self._spawn("kube-apiserver", [
                f"--bind-address={self.bind_address}",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.port}",
                f"--etcd-servers=http://127.0.0.1:{etcd_port}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--endpoint-reconciler-type=none",  # the endpoints validator refuses loopback addresses
                f"--client-ca-file={self.ca_file}",
                f"--tls-cert-file={self.pki / 'apiserver.crt'}",
                f"--tls-private-key-file={self.pki / 'apiserver.key'}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={sa_public}",
                f"--service-account-signing-key-file={sa_private}",
                "--authorization-mode=Node,RBAC",
                # `kubectl logs/exec/port-forward` go through a node's kubelet: by its address (these nodes have
                # no DNS name), checked against this CA, as a client the kubelet's webhook authorizer lets in.
                "--kubelet-preferred-address-types=InternalIP,Hostname",
                f"--kubelet-certificate-authority={self.ca_file}",
                f"--kubelet-client-certificate={kubelet_client[0]}",
                f"--kubelet-client-key={kubelet_client[1]}",
                "--allow-privileged=true",
                "--shutdown-delay-duration=0s",
                "--shutdown-watch-termination-grace-period=0s",
            ])  # fmt: skip
            self._wait_ready()
            for crd in self.crds:
                self._install_crd(crd)
            if self.has("kube-controller-manager"):
                args = [
                    *self._controller_args("system:kube-controller-manager"),
                    f"--root-ca-file={self.ca_file}",
                    f"--service-account-private-key-file={sa_private}",
                    "--use-service-account-credentials=true",
                    f"--cluster-signing-cert-file={self.ca_file}",
                    f"--cluster-signing-key-file={ca_key}",
                    f"--service-cluster-ip-range={SERVICE_CIDR}",
                    # The hostPath provisioner and recycler take a few seconds less with a short sync period.
                    "--pvclaimbinder-sync-period=1s",
                ]
                if self.hostpath_provisioner:
                    args.append("--enable-hostpath-provisioner=true")
                self._spawn("kube-controller-manager", args)
            if self.has("kube-scheduler"):
                self._spawn("kube-scheduler", self._controller_args("system:kube-scheduler"))
            if self.has("kube-controller-manager"):
                self._wait_for_default_service_account()
        except BaseException:
            self.stop()
            raise
        self.started_seconds = time.monotonic() - began
        return self

    def _controller_args(self, user: str) -> list[str]:
        """What the controller-manager and the scheduler are both told: who they are, where they serve."""
        kubeconfig = self.user_kubeconfig(user)
        return [
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={free_port()}",
            "--leader-elect=false",
        ]

    def _spawn(self, name: str, args: list[str]) -> None:
        log = self.root / f"{name}.log"
        with open(log, "wb") as out:
            popen = subprocess.Popen(
                [str(self.assets / name), *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._processes.append(_Process(name, popen, log))

    def _check_alive(self) -> None:
        for process in self._processes:
            if process.popen.poll() is not None:
                raise ControlPlaneError(f"{process.name} exited with {process.popen.returncode}:\n{tail(process.log)}")

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        timeout: float = 10.0,
    ) -> tuple[int, bytes]:
        """One blocking request as the admin: (HTTP status, body). Every response is closed, errors included."""
        if self._admin_ssl is None:
            self._admin_ssl = self.ssl_context()
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310
            f"{self.url}{path}", data=data, method=method, headers={"Content-Type": content_type}
        )
        try:
            with urllib.request.urlopen(request, context=self._admin_ssl, timeout=timeout) as resp:  # noqa: S310
                return int(resp.status), resp.read()
        except urllib.error.HTTPError as exc:
            with exc:
                return int(exc.code), exc.read()

    def _get(self, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        return self.call("GET", path, timeout=timeout)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        last = ""
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                status, body = self._get("/readyz", timeout=2)
                if status == 200:
                    return
                last = body.decode(errors="replace")[-500:]
            except (OSError, ssl.SSLError) as exc:
                last = str(exc)
            time.sleep(0.1)
        raise ControlPlaneError(f"kube-apiserver was not ready within {READY_TIMEOUT:g} s: {last}")

    def _install_crd(self, path: Path) -> None:
        crds = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
        status, body = self.call("POST", crds, yaml.safe_load(path.read_text()))
        if status != 201:
            raise ControlPlaneError(f"the API server refused {path}: {body.decode(errors='replace')}")

    def _wait_for_default_service_account(self) -> None:
        """The controller-manager is working once it has made `default/default` (pytest-kubernetes' check too)."""
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            self._check_alive()
            if self._get("/api/v1/namespaces/default/serviceaccounts/default")[0] == 200:
                return
            time.sleep(0.1)
        raise ControlPlaneError(f"no default ServiceAccount within {READY_TIMEOUT:g} s: is the controller-manager up?")

    def stop(self) -> None:
        """End every process this plane started: controllers first, then the API server, etcd last."""
        for process in reversed(self._processes):
            terminate(process.popen, grace=3.0)
        self._processes.clear()

    def logs(self) -> dict[str, str]:
        return {p.name: tail(p.log) for p in self._processes}

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def describe(self) -> dict[str, Any]:
        return {"url": self.url, "kubeconfig": str(self.kubeconfig), "components": self.components}


def terminate(popen: subprocess.Popen[bytes], *, grace: float, sig: signal.Signals = signal.SIGTERM) -> None:
    """End a process started with `start_new_session=True` and everything in its group: `sig`, then SIGKILL
    after `grace` seconds."""
    if popen.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(popen.pid, sig)
        try:
            popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(popen.pid, signal.SIGKILL)
            popen.wait(timeout=10)


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
