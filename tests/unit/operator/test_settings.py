"""OperatorSettings from the environment: the artifact store's values and their validation."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from codegen_mcp.operator.settings import OperatorSettings

# The shared `settings` fixture clears CODEGEN_OPERATOR_* from the environment first.
pytestmark = pytest.mark.usefixtures("settings")


def test_artifact_store_defaults_to_local() -> None:
    settings = OperatorSettings()
    assert settings.artifact_store == "local"
    assert settings.s3_bucket is None and settings.s3_credentials_secret is None
    assert settings.s3_addressing_style == "auto"


def test_s3_store_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in {
        "ARTIFACT_STORE": "s3",
        "S3_BUCKET": "artifacts",
        "S3_ENDPOINT_URL": "",  # the chart may pass empty values: they mean unset
        "S3_REGION": "eu-west-1",
        "S3_PREFIX": "team/",
        "S3_ADDRESSING_STYLE": "virtual",
        "S3_CREDENTIALS_SECRET": "s3-creds",
    }.items():
        monkeypatch.setenv(f"CODEGEN_OPERATOR_{key}", value)
    settings = OperatorSettings()
    assert settings.artifact_store == "s3" and settings.s3_bucket == "artifacts"
    assert settings.s3_endpoint_url is None and settings.s3_region == "eu-west-1"
    assert settings.s3_prefix == "team/" and settings.s3_addressing_style == "virtual"
    assert settings.s3_credentials_secret == "s3-creds"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ARTIFACT_STORE": "s3"}, "artifact_store=s3 needs s3_bucket (CODEGEN_OPERATOR_S3_BUCKET)"),
        ({"ARTIFACT_STORE": "s3", "S3_BUCKET": ""}, "artifact_store=s3 needs s3_bucket"),
        ({"ARTIFACT_STORE": "gcs"}, "artifact_store"),
        ({"ARTIFACT_STORE": "s3", "S3_BUCKET": "b", "S3_ADDRESSING_STYLE": "dns"}, "s3_addressing_style"),
        ({"ARTIFACT_STORE": "s3", "S3_BUCKET": "b", "S3_CREDENTIALS_SECRET": "Not_A_Name"}, "s3_credentials_secret"),
    ],
)
def test_bad_artifact_store_settings_are_refused(
    env: dict[str, str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(f"CODEGEN_OPERATOR_{key}", value)
    with pytest.raises(ValidationError, match=re.escape(message)):
        OperatorSettings()
