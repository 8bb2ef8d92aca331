"""The local cluster's object store (rclone ``serve s3`` in a pod on the real node), reached
through its Service address, as a user's upload script would (the demo, the tests)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modeldeploy_dev.cluster.addons import (
    STORE_ACCESS_KEY,
    STORE_NAMESPACE,
    STORE_PORT,
    STORE_SECRET_KEY,
    STORE_SERVICE,
    store_credentials,
)

BUCKET = "models"


@dataclass
class ObjectStore:
    """An S3 client of the store, and the Secret a ModelDeployment names to read from it."""

    cluster: Any

    def _client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=STORE_ACCESS_KEY,
            aws_secret_access_key=STORE_SECRET_KEY,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 5}),
        )

    @property
    def endpoint(self) -> str:
        """The store's S3 endpoint from this machine (the Service's cluster address)."""
        service = json.loads(
            self.cluster.kubectl(
                "get", "service", STORE_SERVICE, "-n", STORE_NAMESPACE, "-o", "json"
            ).stdout
        )
        return f"http://{service['spec']['clusterIP']}:{STORE_PORT}"

    def upload(self, path: Path, key: str) -> tuple[str, str]:
        """Put ``path`` at ``key`` in the models bucket: (s3:// URI, sha256)."""
        client = self._client()
        buckets = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
        if BUCKET not in buckets:
            client.create_bucket(Bucket=BUCKET)
        client.upload_file(str(path), BUCKET, key)
        return f"s3://{BUCKET}/{key}", hashlib.sha256(path.read_bytes()).hexdigest()

    def grant(self, namespace: str) -> str:
        """Create the credentials Secret in ``namespace``; returns its name."""
        secret = store_credentials(namespace)
        self.cluster.kubectl("apply", "-f", "-", input=json.dumps(secret))
        return str(secret["metadata"]["name"])
