"""S3 URL resolution and SigV4 signing (checked against botocore's own signer)."""

from __future__ import annotations

import datetime as dt

import pytest

from modeldeploy_server import s3

NOW = dt.datetime(2026, 3, 4, 5, 6, 7, tzinfo=dt.UTC)
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG"}


def test_custom_endpoints_use_path_style() -> None:
    env = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9000", "AWS_REGION": "eu-west-3"}
    obj = s3.resolve("s3://models/team a/rf v2.onnx", env)
    assert obj.url == "http://127.0.0.1:9000/models/team%20a/rf%20v2.onnx"
    assert obj.host == "127.0.0.1:9000" and obj.region == "eu-west-3"


def test_endpoint_precedence_and_aws_default() -> None:
    env = {"AWS_ENDPOINT_URL": "http://a", "MODELDEPLOY_S3_ENDPOINT": "http://b"}
    assert s3.resolve("s3://m/k", env).host == "b"
    env["AWS_ENDPOINT_URL_S3"] = "http://c"
    assert s3.resolve("s3://m/k", env).host == "c"
    aws = s3.resolve("s3://models/k.onnx", {"AWS_DEFAULT_REGION": "us-west-2"})
    assert aws.url == "https://models.s3.us-west-2.amazonaws.com/k.onnx"
    dotted = s3.resolve("s3://my.models/k.onnx", {})
    assert dotted.url == "https://s3.us-east-1.amazonaws.com/my.models/k.onnx"


@pytest.mark.parametrize("uri", ["s3://bucket", "s3:///key", "http://x/y"])
def test_bad_s3_uris(uri: str) -> None:
    with pytest.raises(ValueError, match="not of the form s3://bucket/key"):
        s3.parse_s3_uri(uri)


def test_anonymous_without_credentials() -> None:
    assert s3.signed_headers(s3.resolve("s3://b/k", {}), {}) == {}


@pytest.mark.parametrize("token", [None, "session-token"])
@pytest.mark.parametrize("key", ["model.onnx", "dir/sub dir/m+1.onnx"])
def test_signature_matches_botocore(
    monkeypatch: pytest.MonkeyPatch, token: str | None, key: str
) -> None:
    botocore_auth = pytest.importorskip("botocore.auth")
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    env = {**CREDENTIALS, "AWS_ENDPOINT_URL": "http://127.0.0.1:9000", "AWS_REGION": "eu-west-1"}
    if token:
        env["AWS_SESSION_TOKEN"] = token
    obj = s3.resolve(f"s3://models/{key}", env)
    ours = s3.signed_headers(obj, env, now=NOW)

    monkeypatch.setattr(botocore_auth, "get_current_datetime", lambda: NOW.replace(tzinfo=None))
    request = AWSRequest(method="GET", url=obj.url)
    signer = botocore_auth.S3SigV4Auth(
        Credentials(env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"], token),
        "s3",
        "eu-west-1",
    )
    signer.add_auth(request)
    assert ours["authorization"] == request.headers["Authorization"]
    assert ours["x-amz-date"] == request.headers["X-Amz-Date"]
    assert ours.get("x-amz-security-token") == request.headers.get("X-Amz-Security-Token")
