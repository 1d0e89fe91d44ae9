"""`codegen-mcp operator`: run the kopf operator that reconciles CodegenSessions.

Settings come from `CODEGEN_OPERATOR_*` environment variables; the flags below override them.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

import kopf

from codegen_mcp.operator.handlers import operator_kwargs
from codegen_mcp.operator.settings import OperatorSettings


def parse_args(argv: list[str] | None) -> tuple[OperatorSettings, argparse.Namespace]:
    parser = argparse.ArgumentParser(prog="codegen-mcp operator", description=__doc__.splitlines()[0])
    parser.add_argument(
        "-n", "--namespace", action="append", dest="namespaces", help="watch this namespace (repeatable)"
    )
    parser.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace")
    parser.add_argument("--standalone", action="store_true", default=None, help="run without peering")
    parser.add_argument("--peering", dest="peering_name", help="kopf peering name shared by the replicas")
    parser.add_argument("--priority", type=int, help="peering priority of this replica")
    parser.add_argument(
        "--liveness", dest="liveness_endpoint", help="liveness endpoint, e.g. http://0.0.0.0:8081/healthz"
    )
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster, then ~/.kube/config)")
    parser.add_argument("--default-image", help="sandbox image when spec.image is unset")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    parser.add_argument("--debug", action="store_true", help="log everything kopf does")
    args = parser.parse_args(argv)
    overrides: dict[str, Any] = {
        key: value
        for key in (
            "namespaces",
            "standalone",
            "peering_name",
            "priority",
            "liveness_endpoint",
            "kubeconfig",
            "default_image",
        )
        if (value := getattr(args, key)) is not None
    }
    if args.all_namespaces:
        overrides["namespaces"] = []
    return OperatorSettings(**overrides), args


def main(argv: list[str] | None = None) -> None:
    settings, args = parse_args(argv)
    kopf.configure(verbose=args.verbose, debug=args.debug, log_prefix=True)
    logging.getLogger("codegen_mcp").setLevel(logging.DEBUG if args.verbose or args.debug else logging.INFO)
    kopf.run(**operator_kwargs(settings))


if __name__ == "__main__":
    main()
