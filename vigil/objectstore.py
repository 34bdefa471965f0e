"""How to reach the object store: credentials, boto3 clients and pyarrow filesystems.

With ROLE_ARN set, every client works on temporary credentials from STS AssumeRole, asked of
the same endpoint as S3 when one is overridden (MinIO and the loopback server answer STS too).
Credentials are refreshed a few minutes before they expire.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import boto3
import pyarrow.fs as pafs

from vigil.settings import Settings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

# Credentials for a loopback S3 server when the environment has none: it accepts any.
_LOOPBACK_KEYS = ("vigil", "vigil-local-secret")
_REFRESH_MARGIN_S = 300


@dataclass(frozen=True)
class Credentials:
    access_key: str | None
    secret_key: str | None
    session_token: str | None = None
    expires_at: float | None = None  # epoch seconds; None for long-lived keys

    def fresh(self) -> bool:
        return self.expires_at is None or self.expires_at - time.time() > _REFRESH_MARGIN_S


_cache: dict[tuple[str | None, str | None], Credentials] = {}
_lock = threading.Lock()


def _is_loopback(endpoint: str | None) -> bool:
    host = urlsplit(endpoint).hostname if endpoint else None
    return host in {"127.0.0.1", "localhost", "::1"}


def base_credentials(endpoint: str | None) -> Credentials:
    key, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
    if not key and _is_loopback(endpoint):
        key, secret = _LOOPBACK_KEYS
    return Credentials(key or None, secret or None, os.environ.get("AWS_SESSION_TOKEN") or None)


def credentials(settings: Settings, endpoint_url: str | None = None) -> Credentials:
    endpoint = endpoint_url or settings.s3_endpoint_url
    base = base_credentials(endpoint)
    if settings.role_arn is None:
        return base
    with _lock:
        cached = _cache.get((settings.role_arn, endpoint))
        if cached is not None and cached.fresh():
            return cached
        sts = boto3.client(
            "sts", endpoint_url=endpoint, region_name=settings.aws_region,
            aws_access_key_id=base.access_key, aws_secret_access_key=base.secret_key,
            aws_session_token=base.session_token,
        )
        answer = sts.assume_role(RoleArn=settings.role_arn,
                                 RoleSessionName=f"vigil-{settings.deployment}")["Credentials"]
        assumed = Credentials(answer["AccessKeyId"], answer["SecretAccessKey"],
                              answer["SessionToken"], answer["Expiration"].timestamp())
        _cache[(settings.role_arn, endpoint)] = assumed
        return assumed


def s3_client(settings: Settings, endpoint_url: str | None = None) -> S3Client:
    endpoint = endpoint_url or settings.s3_endpoint_url
    creds = credentials(settings, endpoint)
    kwargs: dict[str, Any] = {
        "endpoint_url": endpoint, "region_name": settings.aws_region,
        "aws_access_key_id": creds.access_key, "aws_secret_access_key": creds.secret_key,
        "aws_session_token": creds.session_token,
    }
    return boto3.client("s3", **kwargs)


def s3_filesystem(settings: Settings, endpoint_url: str | None = None) -> pafs.S3FileSystem:
    endpoint = endpoint_url or settings.s3_endpoint_url
    creds = credentials(settings, endpoint)
    kwargs: dict[str, Any] = {
        "access_key": creds.access_key, "secret_key": creds.secret_key,
        "session_token": creds.session_token, "region": settings.aws_region,
        "connect_timeout": 5, "request_timeout": 30,
    }
    if endpoint is not None:
        parts = urlsplit(endpoint)
        kwargs["endpoint_override"] = parts.netloc + parts.path.rstrip("/")
        kwargs["scheme"] = parts.scheme
    return pafs.S3FileSystem(**kwargs)


def create_bucket(client: S3Client, bucket: str, region: str) -> None:
    """Create a bucket unless it exists (us-east-1 refuses an explicit location)."""
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    if bucket in existing:
        return
    if region == "us-east-1":
        client.create_bucket(Bucket=bucket)
    else:
        client.create_bucket(Bucket=bucket,
                             CreateBucketConfiguration={"LocationConstraint": region})  # type: ignore[typeddict-item]
