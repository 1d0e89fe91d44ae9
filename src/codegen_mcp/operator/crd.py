"""Generate the CodegenSession and CodegenSandboxPool CRDs from the pydantic models (`codegen-mcp crd`).

The models' JSON schema is rewritten into a *structural* openAPIV3Schema: `$ref`s inlined, `Optional`
unions collapsed, titles and `additionalProperties: false` dropped (the API server prunes unknown fields
instead), and the Kubernetes extensions added: CEL rules for immutable fields, list types, printer columns.
`crds/codegensession.yaml` is this output checked in; a test fails when they drift apart.
"""

from __future__ import annotations

import argparse
import copy
import sys
from typing import Any

import yaml
from pydantic import BaseModel

from codegen_mcp.api import pool
from codegen_mcp.api import session as api

_DROP_KEYS = {"title", "additionalProperties"}


def _immutable_rule(field: str, path: str) -> dict[str, str]:
    # `self.x == oldSelf.x` alone is skipped when the field is added or removed, hence the has() checks.
    return {
        "rule": f"has(self.{field}) == has(oldSelf.{field}) && (!has(self.{field}) || self.{field} == oldSelf.{field})",
        "message": f"{path}.{field} is immutable: create a new session instead",
    }


def to_structural(schema: dict[str, Any], defs: dict[str, Any] | None = None) -> dict[str, Any]:
    """Rewrite one pydantic JSON schema node (and its children) into structural-schema form."""
    defs = defs if defs is not None else schema.get("$defs", {})
    node = {k: v for k, v in schema.items() if k != "$defs"}

    if "$ref" in node:
        target = copy.deepcopy(defs[node.pop("$ref").split("/")[-1]])
        node = {**target, **node}
    if "anyOf" in node and not node.get("x-kubernetes-int-or-string"):
        variants = [v for v in node.pop("anyOf") if v.get("type") != "null"]
        if len(variants) != 1:
            raise ValueError(f"cannot express a union in a structural schema: {variants}")
        inner = to_structural(variants[0], defs)
        node = {**inner, **{k: v for k, v in node.items() if k not in inner or k == "description"}}
        if node.get("default", "") is None:
            del node["default"]
        return to_structural(node, defs)

    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP_KEYS or (key == "default" and value is None):
            continue
        if key == "properties":
            out[key] = {name: to_structural(sub, defs) for name, sub in value.items()}
        elif key == "items":
            out[key] = to_structural(value, defs)
        else:
            out[key] = value
    if "properties" in out:
        out.setdefault("type", "object")
    if "enum" in out:
        out.setdefault("type", "string")
    return out


def sandbox_schema(model: dict[str, Any]) -> dict[str, Any]:
    """A session spec's structural schema with the rules that hold wherever one is written (session or pool)."""
    schema = to_structural(model)
    props = schema["properties"]
    schema["x-kubernetes-validations"] = [
        {
            # Every field read under has(): the API server also evaluates this rule against the schema's
            # defaults (`spec: {}`) when the CRD is created, where nested defaults are not applied yet.
            "rule": (
                "!has(self.packages) || size(self.packages) == 0"
                " || !has(self.network) || !has(self.network.egress) || self.network.egress != 'none'"
                " || (has(self.network.allowCIDRs) && size(self.network.allowCIDRs) > 0)"
            ),
            "message": "spec.packages need network.egress 'packages' or 'open' to be installed",
        }
    ]
    # Defaults must exist for the rules above to read them (the API server applies defaults first).
    props["packages"]["default"] = []
    props["network"]["properties"]["allowCIDRs"]["default"] = []
    env = props["env"]
    env["x-kubernetes-list-type"] = "map"
    env["x-kubernetes-list-map-keys"] = ["name"]
    env["x-kubernetes-validations"] = [
        {
            "rule": f"self.all(e, !e.name.startsWith('{api.RESERVED_ENV_PREFIX}'))",
            "message": f"env names starting with {api.RESERVED_ENV_PREFIX} are reserved for the agent",
        }
    ]
    return schema


def spec_schema() -> dict[str, Any]:
    schema = sandbox_schema(api.SessionSpec.model_json_schema(by_alias=True))
    schema["x-kubernetes-validations"] = [_immutable_rule(f, "spec") for f in api.IMMUTABLE_SPEC_FIELDS] + schema[
        "x-kubernetes-validations"
    ]
    schema["properties"]["workspace"]["x-kubernetes-validations"] = [
        _immutable_rule(f, "spec.workspace") for f in api.IMMUTABLE_WORKSPACE_FIELDS
    ]
    return schema


def _status(model: type[BaseModel]) -> dict[str, Any]:
    """A status model's schema: nothing required, conditions a list keyed by type (as Kubernetes does)."""
    schema = to_structural(model.model_json_schema(by_alias=True, mode="serialization"))
    schema.pop("required", None)
    conditions = schema["properties"]["conditions"]
    conditions["x-kubernetes-list-type"] = "map"
    conditions["x-kubernetes-list-map-keys"] = ["type"]
    conditions["items"]["required"] = ["type", "status"]
    return schema


def status_schema() -> dict[str, Any]:
    schema = _status(api.SessionStatus)
    schema["properties"]["phase"]["description"] = "Pending, Starting, Ready, Suspended, Failed or Terminating."
    return schema


def _name_rule(limit: int, why: str) -> dict[str, str]:
    return {
        "rule": f"size(self.metadata.name) <= {limit}",
        "message": f"metadata.name must be at most {limit} characters ({why})",
    }


def _definition(
    *,
    kind: str,
    plural: str,
    singular: str,
    short_names: tuple[str, ...],
    description: str,
    spec: dict[str, Any],
    status: dict[str, Any],
    name_rule: dict[str, str],
    columns: list[dict[str, Any]],
) -> dict[str, Any]:
    """One namespaced CustomResourceDefinition of ours: served and stored at api.VERSION, with /status."""
    root: dict[str, Any] = {
        "type": "object",
        "description": description,
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": {**spec, "default": {}},
            "status": status,
        },
        "x-kubernetes-validations": [name_rule],
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{api.GROUP}",
            "labels": {"app.kubernetes.io/name": "codegen-mcp", "app.kubernetes.io/part-of": "codegen-mcp"},
        },
        "spec": {
            "group": api.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": singular,
                "shortNames": list(short_names),
                "categories": list(api.CATEGORIES),
            },
            "versions": [
                {
                    "name": api.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


def build_crd() -> dict[str, Any]:
    """The CustomResourceDefinition of CodegenSession, as a manifest dict."""
    return _definition(
        kind=api.KIND,
        plural=api.PLURAL,
        singular=api.SINGULAR,
        short_names=api.SHORT_NAMES,
        description="A sandboxed Python workspace for one LLM session: a locked-down Pod with a persistent volume.",
        spec=spec_schema(),
        status=status_schema(),
        name_rule=_name_rule(api.MAX_SESSION_NAME_LENGTH, "it is a label value"),
        columns=[
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            {"name": "Pod", "type": "string", "jsonPath": ".status.podName"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
            # Not `date`: kubectl shows a date as the time since it, and `<invalid>` for a future one
            # (it has no time-until); the timestamp itself is what is true.
            {"name": "Expires", "type": "string", "format": "date-time", "jsonPath": ".status.expiresAt"},
            {"name": "Endpoint", "type": "string", "jsonPath": ".status.endpoint", "priority": 1},
            {"name": "Owner", "type": "string", "jsonPath": ".spec.owner", "priority": 1},
        ],
    )


def pool_spec_schema() -> dict[str, Any]:
    model = pool.PoolSpec.model_json_schema(by_alias=True)
    schema = to_structural(model)
    # The template is a session spec with the rules of one, less those that only concern a running session.
    template = sandbox_schema({**model["$defs"]["SessionSpec"], "$defs": model["$defs"]})
    template["description"] = schema["properties"]["template"]["description"]
    template["default"] = {}
    template["x-kubernetes-validations"] += [
        {"rule": f"!has(self.{field})", "message": f"template.{field} belongs on the session, not on a pool"}
        for field in pool.SESSION_ONLY_FIELDS
    ] + [
        {
            "rule": "!has(self.suspend) || !self.suspend",
            "message": "template.suspend belongs on the session, not on a pool (a pooled sandbox never suspends)",
        },
        {
            "rule": "!has(self.workspace) || !has(self.workspace.retain) || !self.workspace.retain",
            "message": "template.workspace.retain belongs on the session, not on a pool",
        },
    ]
    schema["properties"]["template"] = template
    return schema


def build_pool_crd() -> dict[str, Any]:
    """The CustomResourceDefinition of CodegenSandboxPool, as a manifest dict."""
    return _definition(
        kind=pool.POOL_KIND,
        plural=pool.POOL_PLURAL,
        singular=pool.POOL_SINGULAR,
        short_names=pool.POOL_SHORT_NAMES,
        description="Sandboxes started ahead of time from a session template, for CodegenSessions to adopt.",
        spec=pool_spec_schema(),
        status=_status(pool.PoolStatus),
        name_rule=_name_rule(pool.MAX_POOL_NAME_LENGTH, "its sandboxes' names are label values"),
        columns=[
            {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
            {"name": "Ready", "type": "integer", "jsonPath": ".status.ready"},
            {"name": "Claimed", "type": "integer", "jsonPath": ".status.claimed"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
            {"name": "Message", "type": "string", "jsonPath": ".status.message", "priority": 1},
        ],
    )


def build_peering_crds() -> list[dict[str, Any]]:
    """kopf's peering CRDs (KopfPeering, ClusterKopfPeering): replicas elect the active operator through them."""
    crds = []
    for kind, scope in (("KopfPeering", "Namespaced"), ("ClusterKopfPeering", "Cluster")):
        plural = kind.lower() + "s"
        crds.append(
            {
                "apiVersion": "apiextensions.k8s.io/v1",
                "kind": "CustomResourceDefinition",
                "metadata": {"name": f"{plural}.kopf.dev"},
                "spec": {
                    "group": "kopf.dev",
                    "scope": scope,
                    "names": {"kind": kind, "plural": plural, "singular": kind.lower()},
                    "versions": [
                        {
                            "name": "v1",
                            "served": True,
                            "storage": True,
                            "schema": {
                                "openAPIV3Schema": {
                                    "type": "object",
                                    "properties": {
                                        # kopf's own free-form peer records: the one place unknown fields are kept.
                                        "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                                    },
                                }
                            },
                        }
                    ],
                },
            }
        )
    return crds


def render_crd() -> str:
    header = "# Generated by `codegen-mcp crd` from codegen_mcp.api.session; do not edit by hand.\n"
    return header + yaml.safe_dump(build_crd(), sort_keys=False, width=120)


def render_pool_crd() -> str:
    header = "# Generated by `codegen-mcp crd --pool` from codegen_mcp.api.pool; do not edit by hand.\n"
    return header + yaml.safe_dump(build_pool_crd(), sort_keys=False, width=120)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="codegen-mcp crd", description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", help="write to this file instead of standard output")
    parser.add_argument("--peering", action="store_true", help="also print kopf's peering CRDs (for replicas)")
    parser.add_argument("--pool", action="store_true", help="the CodegenSandboxPool CRD instead of CodegenSession's")
    args = parser.parse_args(argv)
    text = render_pool_crd() if args.pool else render_crd()
    if args.peering:
        text += "---\n" + yaml.safe_dump_all(build_peering_crds(), sort_keys=False, width=120)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
