"""Just enough S3 for a model download: endpoint and URL resolution and SigV4 signing.

Standard library only (no boto3 in the image). Credentials and endpoint come from the
usual environment variables: ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_SESSION_TOKEN``, ``AWS_REGION`` / ``AWS_DEFAULT_REGION``, and the endpoint from
``AWS_ENDPOINT_URL_S3``, ``MODELDEPLOY_S3_ENDPOINT`` or ``AWS_ENDPOINT_URL`` (MinIO,
Ceph, any S3-compatible store; path-style addressing is used for custom endpoints,
``MODELDEPLOY_S3_ADDRESSING_STYLE=path|virtual`` overrides). Without credentials the
request is anonymous (public buckets).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


@dataclass(frozen=True)
class S3Object:
    """A resolved ``s3://bucket/key``: the URL to GET and the signing parameters."""

    bucket: str
    key: str
    url: str
    host: str
    path: str
    region: str


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> (bucket, key); raises ValueError when either is missing."""
    parts = urlsplit(uri)
    bucket, key = parts.netloc, parts.path.lstrip("/")
    if parts.scheme != "s3" or not bucket or not key:
        raise ValueError(f"{uri!r} is not of the form s3://bucket/key")
    return bucket, key


def resolve(uri: str, environ: Mapping[str, str]) -> S3Object:
    """Where to send the GET for ``uri`` given the environment."""
    bucket, key = parse_s3_uri(uri)
    region = environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    endpoint = (
        environ.get("AWS_ENDPOINT_URL_S3")
        or environ.get("MODELDEPLOY_S3_ENDPOINT")
        or environ.get("AWS_ENDPOINT_URL")
    )
    style = environ.get("MODELDEPLOY_S3_ADDRESSING_STYLE", "").lower()
    if endpoint:
        base = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        scheme, host = base.scheme, base.netloc
        prefix = base.path.rstrip("/")
        virtual = style == "virtual"
    else:
        scheme, host, prefix = "https", f"s3.{region}.amazonaws.com", ""
        virtual = style != "path" and "." not in bucket
    encoded_key = quote(key, safe="/~")
    if virtual:
        host = f"{bucket}.{host}"
        path = f"{prefix}/{encoded_key}"
    else:
        path = f"{prefix}/{quote(bucket, safe='')}/{encoded_key}"
    return S3Object(bucket, key, f"{scheme}://{host}{path}", host, path, region)


def signed_headers(
    obj: S3Object, environ: Mapping[str, str], now: dt.datetime | None = None
) -> dict[str, str]:
    """Headers for an AWS Signature Version 4 GET of ``obj`` (empty when anonymous)."""
    access_key = environ.get("AWS_ACCESS_KEY_ID")
    secret_key = environ.get("AWS_SECRET_ACCESS_KEY")
    if not access_key or not secret_key:
        return {}
    now = now or dt.datetime.now(dt.UTC)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    day = amz_date[:8]
    headers = {
        "host": obj.host,
        "x-amz-content-sha256": EMPTY_SHA256,
        "x-amz-date": amz_date,
    }
    token = environ.get("AWS_SESSION_TOKEN")
    if token:
        headers["x-amz-security-token"] = token
    names = sorted(headers)
    canonical_request = "\n".join(
        [
            "GET",
            obj.path,
            "",
            *(f"{name}:{headers[name].strip()}" for name in names),
            "",
            ";".join(names),
            EMPTY_SHA256,
        ]
    )
    scope = f"{day}/{obj.region}/s3/aws4_request"
    string_to_sign = "\n".join(
        [
            "AWS4-HMAC-SHA256",
            amz_date,
            scope,
            hashlib.sha256(canonical_request.encode()).hexdigest(),
        ]
    )
    key = _hmac(("AWS4" + secret_key).encode(), day)
    for part in (obj.region, "s3", "aws4_request"):
        key = _hmac(key, part)
    signature = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, "
        f"SignedHeaders={';'.join(names)}, Signature={signature}"
    )
    del headers["host"]  # urllib sends Host itself (the same value)
    return headers


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode(), hashlib.sha256).digest()
