"""values.schema.json: the defaults and every value set pass it; bad values are refused by the schema itself
(jsonschema) and by Helm at install time; every value is documented in the chart README."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
import yaml

from .conftest import CHART_DIR, NAMESPACE, RELEASE, VALUE_SETS, ci_value_files, merge

SCHEMA = json.loads((CHART_DIR / "values.schema.json").read_text())
DEFAULTS = yaml.safe_load((CHART_DIR / "values.yaml").read_text())

# Each of these must be refused before anything reaches a cluster.
BAD_VALUES: dict[str, dict[str, Any]] = {
    "unknown egress mode": {"sessions": {"network": {"egress": "everything"}}},
    "root sandbox": {"sessions": {"uid": 0}},
    "TTL above 30 days": {"sessions": {"ttlSeconds": 2592001}},
    "zero idle timeout": {"sessions": {"idleTimeoutSeconds": 0}},
    "misspelt key": {"sessions": {"ttlSecond": 60}},
    "unknown top-level key": {"replicaCount": 3},
    "bad quantity": {"sessions": {"workspace": {"size": "lots"}}},
    "bad pull policy": {"image": {"pullPolicy": "Sometimes"}},
    "two operators without peering": {"operator": {"replicas": 2}},
    "public ingress without auth": {"ingress": {"enabled": True}, "auth": {"enabled": False}},
    "short auth token": {"auth": {"tokens": ["secret"]}},
    "token with a comma": {"auth": {"tokens": ["aaaaaaaaaaaaaaaa,bbbbbbbbbbbbbbbb"]}},
    "pip option as a package": {"sessions": {"packages": ["--index-url=http://evil.example"]}},
    "namespace not a DNS label": {"operator": {"watchNamespaces": ["Team_A"]}},
    "bad CIDR": {"sessions": {"network": {"packageIndexCIDRs": ["pypi.org"]}}},
    "port out of range": {"coordinator": {"port": 70000}},
    "string where a number belongs": {"coordinator": {"replicas": "two"}},
    "s3 artifact store without a bucket": {"sessions": {"artifacts": {"store": "s3"}}},
    "unknown artifact store": {"sessions": {"artifacts": {"store": "gcs", "s3": {"bucket": "b"}}}},
    "bad S3 addressing style": {
        "sessions": {"artifacts": {"store": "s3", "s3": {"bucket": "b", "addressingStyle": "dns"}}}
    },
}


def validator() -> jsonschema.Draft7Validator:
    jsonschema.Draft7Validator.check_schema(SCHEMA)
    return jsonschema.Draft7Validator(SCHEMA)


def test_schema_is_a_valid_draft7_schema() -> None:
    assert SCHEMA["$schema"] == "http://json-schema.org/draft-07/schema#"
    validator()


def test_default_values_pass_the_schema() -> None:
    validator().validate(DEFAULTS)


@pytest.mark.parametrize("name", list(VALUE_SETS) + [f"ci/{p.name}" for p in ci_value_files()])
def test_value_sets_pass_the_schema(name: str) -> None:
    override = yaml.safe_load((CHART_DIR / name).read_text()) if name.startswith("ci/") else VALUE_SETS[name]
    validator().validate(merge(DEFAULTS, override))


@pytest.mark.parametrize("case", list(BAD_VALUES))
def test_bad_values_are_refused_by_the_schema(case: str) -> None:
    errors = list(validator().iter_errors(merge(DEFAULTS, BAD_VALUES[case])))
    assert errors, f"{case}: accepted"


@pytest.mark.parametrize("case", list(BAD_VALUES))
def test_bad_values_fail_helm_install(chart: Any, helm: Any, case: str) -> None:
    """Helm validates the merged values against values.schema.json before rendering (install, upgrade, template)."""
    with pytest.raises(helm.HelmValuesError) as refused:
        chart.render(values=BAD_VALUES[case], name=RELEASE, namespace=NAMESPACE, is_install=True)
    assert "codegen-mcp" in str(refused.value)


# Maps whose inner keys are free-form (or documented as one value), not values of the chart itself.
OPAQUE = {"podSecurityContext", "securityContext", "resources", "podLabels"}


def documented_keys(values: dict[str, Any], prefix: str = "") -> Iterator[str]:
    for key, value in values.items():
        path = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict) and value and key not in OPAQUE:
            yield from documented_keys(value, path)
        else:
            yield path


def test_every_value_is_in_the_chart_readme() -> None:
    readme = (CHART_DIR / "README.md").read_text().split("\n## Values\n", 1)[1]
    table_keys = set(re.findall(r"^\| `([^`]+)` \|", readme, flags=re.MULTILINE))
    expected = set(documented_keys(DEFAULTS))
    assert expected - table_keys == set(), "values missing from the README table"
    assert table_keys - expected == set(), "README documents values that do not exist"


def test_every_value_has_a_schema() -> None:
    def walk(values: dict[str, Any], schema: dict[str, Any], path: str) -> Iterator[str]:
        props = schema.get("properties", {})
        for key, value in values.items():
            if key not in props and schema.get("additionalProperties") is False:
                yield f"{path}{key}"
            elif isinstance(value, dict) and key in props and "properties" in props[key]:
                yield from walk(value, props[key], f"{path}{key}.")

    assert list(walk(DEFAULTS, SCHEMA, "")) == []
