"""`codegen-mcp render -f session.yaml`: print the children the operator would create (like `helm template`).

For review, debugging and offline validation (`codegen-mcp render -f s.yaml | kubernetes-validate -`).
Operator settings come from `CODEGEN_OPERATOR_*` variables, as in the operator. The token is a placeholder.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import yaml
from pydantic import ValidationError

from codegen_mcp.api import session as api
from codegen_mcp.api.errors import validation_sentence
from codegen_mcp.operator.builders import SessionRef, build_children
from codegen_mcp.operator.settings import OperatorSettings

PLACEHOLDER_TOKEN = "generated-by-the-operator"  # noqa: S105 - not a secret: a visible placeholder
PLACEHOLDER_UID = "00000000-0000-0000-0000-000000000000"


class RenderError(Exception):
    pass


def render_documents(documents: list[Any], settings: OperatorSettings) -> list[dict[str, Any]]:
    """The children of every CodegenSession among `documents` (other kinds are skipped)."""
    out: list[dict[str, Any]] = []
    sessions = [d for d in documents if isinstance(d, dict) and d.get("kind") == api.KIND]
    if not sessions:
        raise RenderError(f"no {api.KIND} found in the input")
    for doc in sessions:
        meta = doc.get("metadata") or {}
        name = str(meta.get("name") or "")
        problem = api.check_session_name(name)
        if problem:
            raise RenderError(problem)
        try:
            spec = api.SessionSpec.model_validate(doc.get("spec") or {})
        except ValidationError as exc:
            raise RenderError(f"{name}: {validation_sentence(exc, prefix='spec')}") from exc
        ref = SessionRef(
            name=name,
            namespace=str(meta.get("namespace") or "default"),
            uid=str(meta.get("uid") or PLACEHOLDER_UID),
            spec=spec,
        )
        out += build_children(ref, settings, PLACEHOLDER_TOKEN)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="codegen-mcp render", description=__doc__.splitlines()[0])
    parser.add_argument("-f", "--filename", required=True, help="a CodegenSession manifest ('-' for stdin)")
    parser.add_argument("-n", "--namespace", help="namespace for sessions that name none")
    args = parser.parse_args(argv)
    try:
        if args.filename == "-":
            documents = list(yaml.safe_load_all(sys.stdin))
        else:
            with open(args.filename, encoding="utf-8") as f:
                documents = list(yaml.safe_load_all(f))
        if args.namespace:
            for doc in documents:
                if isinstance(doc, dict):
                    doc.setdefault("metadata", {}).setdefault("namespace", args.namespace)
        children = render_documents(documents, OperatorSettings())
    except (OSError, yaml.YAMLError, RenderError, ValidationError) as exc:
        print(f"codegen-mcp render: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
    sys.stdout.write(yaml.safe_dump_all(children, sort_keys=False, width=120))


if __name__ == "__main__":
    main()
