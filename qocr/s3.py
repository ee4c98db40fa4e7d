"""One way to make an S3 client (AWS, MinIO, moto) and to read ``s3://`` URIs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


@dataclass(frozen=True)
class S3Location:
    bucket: str
    key: str  # empty or ending in "/" for a prefix

    @property
    def is_prefix(self) -> bool:
        return self.key == "" or self.key.endswith("/")

    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def parse_s3_uri(uri: str) -> S3Location:
    """``s3://bucket/key`` or ``s3://bucket/prefix/``; a ValueError names what is wrong."""
    if not uri.startswith("s3://"):
        raise ValueError(f"not an s3:// URI: {uri}")
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket:
        raise ValueError(f"no bucket in {uri}")
    return S3Location(bucket=bucket, key=key)


def make_s3_client(endpoint_url: str | None) -> S3Client:
    """A client with retries suited to bulk reads; credentials come from boto3's usual chain."""
    import boto3
    from botocore.config import Config

    config = Config(retries={"max_attempts": 5, "mode": "adaptive"}, max_pool_connections=50)
    client: Any = boto3.client("s3", endpoint_url=endpoint_url, config=config)
    return client  # type: ignore[no-any-return]
