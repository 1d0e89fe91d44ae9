"""`codegen-mcp operator`: run the kopf operator that reconciles CodegenSessions.

Settings come from `CODEGEN_OPERATOR_*` environment variables; the flags below override them.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

import kopf

from codegen_mcp.api import tracing
from codegen_mcp.api.logs import LogFormatError, configure_logging, log_format
from codegen_mcp.operator.handlers import operator_kwargs
from codegen_mcp.operator.settings import OperatorSettings
from codegen_mcp.operator.tracing import name_kopf_objects


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
    parser.add_argument("--metrics-port", type=int, help="serve Prometheus /metrics on this port (0: none)")
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
            "metrics_port",
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
    # kopf's levels (and its quieting of asyncio), then one handler in CODEGEN_LOG_FORMAT for every line.
    kopf.configure(verbose=args.verbose, debug=args.debug)
    try:
        handler = configure_logging(logging.getLogger().level, log_format(os.environ))
        tracing.configure_tracing("codegen-mcp-operator")
    except (LogFormatError, tracing.TracingError) as err:
        sys.exit(f"codegen-mcp operator: {err}")
    handler.addFilter(name_kopf_objects)
    logging.getLogger("codegen_mcp").setLevel(logging.DEBUG if args.verbose or args.debug else logging.INFO)
    kopf.run(**operator_kwargs(settings))


if __name__ == "__main__":
    main()
