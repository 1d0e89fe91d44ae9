"""`codegen-mcp session list|get|delete`: look at the CodegenSessions in a cluster, for operators."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio.client.exceptions import ApiException

from codegen_mcp.api.session import ANNOTATION_MCP_SESSION, GROUP, PLURAL, VERSION

COLUMNS = ("NAME", "PHASE", "POD", "MCP SESSION", "LAST ACTIVITY", "EXPIRES", "AGE")


def _age(timestamp: str | None, now: datetime) -> str:
    if not timestamp:
        return "-"
    seconds = int((now - datetime.fromisoformat(timestamp.replace("Z", "+00:00"))).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def session_row(obj: dict[str, Any], now: datetime) -> tuple[str, ...]:
    meta, status = obj.get("metadata") or {}, obj.get("status") or {}
    return (
        meta.get("name", "?"),
        status.get("phase") or "-",
        status.get("podName") or "-",
        (meta.get("annotations") or {}).get(ANNOTATION_MCP_SESSION, "-"),
        _age(status.get("lastActivityAt"), now) + (" ago" if status.get("lastActivityAt") else ""),
        status.get("expiresAt") or "-",
        _age(meta.get("creationTimestamp"), now),
    )


def format_table(rows: list[tuple[str, ...]]) -> str:
    table = [COLUMNS, *rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(COLUMNS))]
    return "\n".join("   ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in table)


_IN_CLUSTER_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


async def _api(kubeconfig: Path | None, context: str | None, in_cluster: bool) -> k8s.ApiClient:
    configuration = k8s.Configuration()
    if kubeconfig is None and in_cluster:
        k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    else:
        await k8s_config.load_kube_config(
            config_file=str(kubeconfig) if kubeconfig else None, context=context, client_configuration=configuration
        )
    return k8s.ApiClient(configuration)


async def run(ns: argparse.Namespace, *, in_cluster: bool = False) -> int:
    async with await _api(ns.kubeconfig, ns.context, in_cluster) as api:
        custom = k8s.CustomObjectsApi(api)
        try:
            if ns.command == "list":
                found = await custom.list_namespaced_custom_object(GROUP, VERSION, ns.namespace, PLURAL)
                items = found.get("items", [])
                if ns.output == "json":
                    print(json.dumps(items, indent=2))
                elif not items:
                    print(f"No CodegenSessions in namespace {ns.namespace}.")
                else:
                    now = datetime.now(UTC)
                    print(format_table([session_row(item, now) for item in items]))
            elif ns.command == "get":
                obj = await custom.get_namespaced_custom_object(GROUP, VERSION, ns.namespace, PLURAL, ns.name)
                print(json.dumps(obj, indent=2))
            else:
                await custom.delete_namespaced_custom_object(GROUP, VERSION, ns.namespace, PLURAL, ns.name)
                print(f"codegensession {ns.name!r} deleted")
        except ApiException as exc:
            what = f"codegensession {getattr(ns, 'name', '')!r} " if exc.status == 404 else ""
            print(f"codegen-mcp session: {what}{exc.reason or exc.status}".rstrip(), file=sys.stderr)
            return 1
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="codegen-mcp session", description=__doc__)
    parser.add_argument("-n", "--namespace", default="default")
    parser.add_argument("--kubeconfig", type=Path)
    parser.add_argument("--context")
    sub = parser.add_subparsers(dest="command", required=True)
    listing = sub.add_parser("list", help="list sessions with phase, Pod, MCP session and activity")
    listing.add_argument("-o", "--output", choices=["table", "json"], default="table")
    sub.add_parser("get", help="print one session as JSON").add_argument("name")
    sub.add_parser("delete", help="delete a session (its children go with it)").add_argument("name")
    raise SystemExit(asyncio.run(run(parser.parse_args(argv), in_cluster=_IN_CLUSTER_TOKEN.exists())))


if __name__ == "__main__":
    main()
