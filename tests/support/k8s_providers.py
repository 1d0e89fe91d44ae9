"""pytest-kubernetes cluster providers: the real control plane of tests/support/control_plane.py, and kind by name.

`LocalControlPlaneManager` is an `AClusterManager` like pytest-kubernetes' kind, k3d and minikube managers:
`create()` starts a `ControlPlane` from KUBEBUILDER_ASSETS and writes its admin kubeconfig where the manager keeps
its kubeconfig, `delete()` stops it, and `kubectl()`, `apply()`, `wait()`, `logs()` and `port_forwarding()` are
the base class's, kubectl against that kubeconfig. Given the kubeconfig of a cluster that is already up (the
session's `control_plane`), `create()` finds it ready and adopts it, and `delete()` leaves it alone: the base
class's rule for clusters it did not make. A real node (tests/support/node.py) may be attached for `load_image`.

`@pytest.mark.k8s(provider="local")` hands the plugin's `k8s` fixture a `LocalControlPlaneManager` (tests/conftest.py
adds the provider to the plugin's `k8s_manager` factory).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from pytest_kubernetes.options import ClusterOptions
from pytest_kubernetes.providers.base import AClusterManager
from pytest_kubernetes.providers.kind import KindManagerBase

from tests.support.control_plane import ASSETS_ENV, ControlPlane, assets_problem
from tests.support.node import Node

LOCAL_PROVIDER = "local"


class LocalControlPlaneManager(AClusterManager):
    """etcd, kube-apiserver, controller-manager and scheduler on loopback, from KUBEBUILDER_ASSETS (not PATH)."""

    def __init__(
        self,
        cluster_name: str | None = None,
        provider_config: str | None = None,
        kubeconfig: Path | None = None,
        *,
        assets: Path | None = None,
        crds: tuple[Path, ...] = (),
        node: Node | None = None,
    ) -> None:
        found = assets or os.environ.get(ASSETS_ENV)
        self.assets = Path(found) if found else None
        self.crds = crds
        self.node = node
        self.plane: ControlPlane | None = None
        super().__init__(cluster_name, provider_config, kubeconfig)

    @classmethod
    def get_binary_name(cls) -> str:
        return "kube-apiserver"

    @property
    def _exec_path(self) -> Path:
        return (self.assets or Path(".")) / self.get_binary_name()

    def _ensure_executable(self) -> None:
        problem = assets_problem(str(self.assets or ""))
        if problem is not None:
            raise RuntimeError(f"cannot start a local control plane: {problem}")

    def _on_create(self, cluster_options: ClusterOptions, **_: Any) -> None:
        assert self.assets is not None and cluster_options.kubeconfig_path is not None
        root = Path(tempfile.mkdtemp(prefix=f"codegen-mcp-{self.cluster_name}-"))
        try:
            self.plane = ControlPlane(self.assets, root, crds=self.crds).start()  # start() undoes itself on failure
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise
        # Paths inside point into the plane's own pki folder: the copy is valid for as long as the plane runs.
        Path(cluster_options.kubeconfig_path).write_bytes(self.plane.kubeconfig.read_bytes())

    def _on_delete(self) -> None:
        if self.plane is not None:
            self.plane.remove()
            self.plane = None

    def ready(self, timeout: int = 20) -> bool:
        """The base class's two checks (/readyz, then `default/default`), once each.

        `ControlPlane.start()` returns only when both hold, so the base class's loop (a 1 s sleep before every
        look) would only add seconds: to `create()` twice, and to adopting a running plane once.
        """
        kubeconfig = self.kubeconfig
        if kubeconfig is None or not kubeconfig.is_file() or kubeconfig.stat().st_size == 0:
            return False
        try:
            readyz = str(self.kubectl(["get", shlex.quote("--raw=/readyz?verbose")], as_dict=False, timeout=timeout))
            self.kubectl(["get", "serviceaccount", "default", "-n", "default"], as_dict=False, timeout=timeout)
        except (RuntimeError, subprocess.TimeoutExpired):
            return False
        return "readyz check passed" in readyz

    def load_image(self, image: str) -> None:
        """Import a docker-archive tarball (`docker save`, `make sandbox-image-offline`) into the node's containerd.

        kind's provider takes the name of an image in the local Docker; here there is no Docker and no registry,
        so the image is the tarball. Pods then name it by its RepoTag with `imagePullPolicy: Never`.
        """
        if self.node is None:
            raise RuntimeError(
                f"cluster {self.cluster_name} has no node to load {image} into: attach a real node "
                "(LocalControlPlaneManager(..., node=Node(...)), tests/support/node.py)"
            )
        if not Path(image).is_file():
            raise RuntimeError(f"{image} is not a file: the local provider loads docker-archive tarballs, not names")
        self.node.ctr("images", "import", image, timeout=300)


class KindClusterManager(KindManagerBase):
    """pytest-kubernetes' kind provider, under the name kind knows the cluster by.

    The base class prefixes `pytest-` to every name it is given; for a cluster made outside pytest (`make kind-up`)
    that would point `load_image` and `delete` at a cluster that does not exist.
    """

    def _set_cluster_name(self, cluster_name: str | None, provider_config: str | None) -> str:
        super()._set_cluster_name(cluster_name, provider_config)
        if cluster_name and not provider_config:
            self._cluster_options.cluster_name = cluster_name
        return self.cluster_name
