"""`codegen-mcp` command line: one entry point, one sub-command per component.

Each sub-command's module is imported only when it runs, so `codegen-mcp agent` works in the small
sandbox image that has neither mcp nor kopf installed.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("codegen_mcp.coordinator.__main__", "run the MCP coordinator (local or kubernetes backend)"),
    "agent": ("codegen_mcp.sandbox_agent.__main__", "run one sandbox agent over a workspace folder"),
    "operator": ("codegen_mcp.operator.__main__", "run the kopf operator that reconciles CodegenSessions"),
    "crd": (
        "codegen_mcp.operator.crd",
        "print the CodegenSession (--pool: CodegenSandboxPool) CRD from the models",
    ),
    "render": ("codegen_mcp.operator.render", "print the children the operator would create for a session"),
    "session": ("codegen_mcp.coordinator.session_cli", "list, get or delete CodegenSessions in a cluster"),
}


def _usage() -> str:
    lines = ["usage: codegen-mcp COMMAND [options]", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run `codegen-mcp COMMAND --help` for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(_usage())
        return
    if args[0] in ("-V", "--version"):
        from codegen_mcp import __version__

        print(__version__)
        return
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        print(f"codegen-mcp: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        raise SystemExit(2)
    module = importlib.import_module(COMMANDS[command][0])
    module.main(rest)


if __name__ == "__main__":
    main()
