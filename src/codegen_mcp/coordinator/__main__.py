"""`codegen-mcp serve`: run the coordinator over HTTP (/mcp and /sse) or stdio."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from codegen_mcp.api import tracing
from codegen_mcp.api.agent_settings import AgentSettingsError
from codegen_mcp.api.errors import validation_sentence
from codegen_mcp.api.logs import LogFormatError, configure_logging, log_format
from codegen_mcp.coordinator.settings import CoordinatorSettings, LocalBackendSettings


def parse_settings(argv: list[str] | None) -> tuple[CoordinatorSettings, str]:
    parser = argparse.ArgumentParser(
        prog="codegen-mcp serve",
        description="Serve per-session Python sandboxes to MCP clients. Flags override CODEGEN_* variables.",
    )
    parser.add_argument("--backend", choices=["local", "kubernetes"], help="where sandboxes run (default: local)")
    parser.add_argument("--transport", choices=["http", "stdio"], help="http serves /mcp and /sse (default: http)")
    parser.add_argument("--host", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on; 0 picks a free one (default: 8765)")
    parser.add_argument("--state-dir", type=Path, help="local backend: workspaces and logs (default: ./.codegen-mcp)")
    parser.add_argument(
        "--audit-sink",
        choices=["file", "stdout", "postgres"],
        help="where audit events go: file (default), stdout (JSON lines for a log collector) or postgres",
    )
    parser.add_argument("--audit-log", type=Path, help="file audit sink: its path (default: <state-dir>/audit.jsonl)")
    parser.add_argument(
        "--audit-postgres-dsn",
        help="postgres audit sink: e.g. postgresql://audit@db/codegen (give a password in "
        "CODEGEN_AUDIT_POSTGRES_DSN instead: flags show in the process list)",
    )
    parser.add_argument("--sandbox", choices=["auto", "bwrap", "none"], help="local backend: how code is confined")
    parser.add_argument(
        "--warm-pool", type=int, help="local backend: sandboxes started ahead for new sessions (default: 2; 0: none)"
    )
    parser.add_argument("--idle-timeout", type=float, help="close sessions idle this many seconds (default: 1800)")
    parser.add_argument(
        "--suspend-after",
        type=float,
        help="suspend sessions idle this long (s); their next call resumes them (default: 300; 0: off)",
    )
    parser.add_argument("--allowed-host", action="append", default=None, help="extra accepted Host header (repeat)")
    parser.add_argument(
        "--event-store",
        choices=["memory", "redis"],
        help="where streams are kept for clients to resume them: memory (default) or redis (shared by replicas)",
    )
    parser.add_argument("--redis-url", help="the Redis of --event-store redis, e.g. redis://127.0.0.1:6379/0")
    parser.add_argument("--stream-retry-ms", type=int, help="SSE `retry` sent to clients, in ms (default: 1000)")
    parser.add_argument(
        "--shared-sessions",
        action="store_const",
        const=True,
        help="replicas: any coordinator sharing this backend (and state folder or Redis) serves any MCP session",
    )
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING… (default: INFO)")
    ns = parser.parse_args(argv)

    overrides: dict[str, Any] = {
        k: v
        for k, v in {
            "backend": ns.backend,
            "transport": ns.transport,
            "host": ns.host,
            "port": ns.port,
            "state_dir": ns.state_dir,
            "audit_sink": ns.audit_sink,
            "audit_log": ns.audit_log,
            "audit_postgres_dsn": ns.audit_postgres_dsn,
            "session_idle_timeout_s": ns.idle_timeout,
            "suspend_after_s": ns.suspend_after,
            "allowed_hosts": ns.allowed_host,
            "event_store": ns.event_store,
            "redis_url": ns.redis_url,
            "stream_retry_ms": ns.stream_retry_ms,
            "shared_sessions": ns.shared_sessions,
        }.items()
        if v is not None
    }
    settings = CoordinatorSettings(**overrides)
    local = {k: v for k, v in {"sandbox": ns.sandbox, "warm_pool": ns.warm_pool}.items() if v is not None}
    if local:
        settings.local = LocalBackendSettings(**local)
    return settings, ns.log_level


async def serve_http(settings: CoordinatorSettings, log_level: str) -> None:
    import uvicorn

    from codegen_mcp.coordinator.server import create_app
    from codegen_mcp.coordinator.stopping import StoppingServer

    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((settings.host, settings.port))
    port = sock.getsockname()[1]
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        log_level=log_level.lower(),
        log_config=None,  # uvicorn's lines go through the root logger's handler, in CODEGEN_LOG_FORMAT
        lifespan="on",
        access_log=False,
        timeout_graceful_shutdown=5,
    )
    server = StoppingServer(config, app.state.session_manager)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    async with asyncio.timeout(60):
        while not server.started:
            if serving.done():
                await serving
                return
            await asyncio.sleep(0.02)
    host = f"[{settings.host}]" if family == socket.AF_INET6 else settings.host
    print(f"LISTENING http://{host}:{port}", flush=True)
    logging.getLogger("codegen_mcp").info(
        "MCP endpoints: http://%s:%d/mcp (streamable HTTP), http://%s:%d/sse (SSE)", host, port, host, port
    )
    await serving


def main(argv: list[str] | None = None) -> None:
    try:
        settings, log_level = parse_settings(argv)
    except ValidationError as err:  # a flag or CODEGEN_* variable out of range
        sys.exit(f"codegen-mcp serve: {validation_sentence(err)}")
    try:
        configure_logging(log_level, log_format(os.environ))
        tracing.configure_tracing("codegen-mcp-coordinator")
    except (LogFormatError, tracing.TracingError) as err:
        sys.exit(f"codegen-mcp serve: {err}")
    if settings.backend == "kubernetes":
        try:
            import kubernetes_asyncio  # noqa: F401
        except ImportError:
            sys.exit("the kubernetes backend needs the operator extra: pip install 'codegen-mcp[all]'")
    if settings.audit_sink == "postgres" and settings.audit_postgres_dsn is not None:
        try:
            from codegen_mcp.coordinator.audit.postgres import dsn_problem
        except ImportError:
            sys.exit("the postgres audit sink needs psycopg: pip install 'codegen-mcp[postgres]'")
        if problem := dsn_problem(settings.audit_postgres_dsn.get_secret_value()):
            sys.exit(f"codegen-mcp serve: {problem}")
    try:
        if settings.transport == "stdio":
            from codegen_mcp.coordinator.server import serve_stdio

            asyncio.run(serve_stdio(settings))
        else:
            asyncio.run(serve_http(settings, log_level))
    except AgentSettingsError as err:  # the CODEGEN_AGENT_* variables it would give every local agent
        sys.exit(f"codegen-mcp serve: {err}")
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
