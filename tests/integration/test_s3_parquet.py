from __future__ import annotations

import dataclasses
import datetime as dt
import uuid

import pyarrow as pa
import pyarrow.parquet as pq

from vigil.objectstore import credentials, s3_client, s3_filesystem
from vigil.settings import Settings


def _local_s3(stack: Settings) -> Settings:
    return dataclasses.replace(stack, s3_endpoint_url=f"http://127.0.0.1:{stack.s3_port}",
                               s3_bucket="vigil-lake")


def _table() -> pa.Table:
    return pa.table({
        "event_id": pa.array([str(uuid.uuid4()) for _ in range(500)]),
        "timestamp": pa.array([dt.datetime(2026, 11, 24, 12, 0, i % 60, tzinfo=dt.UTC)
                               for i in range(500)], pa.timestamp("us", tz="UTC")),
        "latency_ms": pa.array([float(i) * 1.5 for i in range(500)]),
        "service": pa.array([f"svc-{i % 7}" for i in range(500)]).dictionary_encode(),
    })


def test_parquet_written_to_loopback_s3_reads_back_equal(stack: Settings) -> None:
    settings = _local_s3(stack)
    fs = s3_filesystem(settings)
    path = f"vigil-lake/test/{uuid.uuid4()}.parquet"
    table = _table()
    pq.write_table(table, path, filesystem=fs, compression="zstd")
    assert fs.get_file_info(path).size > 0
    assert pq.read_table(path, filesystem=fs).equals(table)
    keys = [o["Key"] for o in s3_client(settings).list_objects_v2(
        Bucket="vigil-lake", Prefix="test/")["Contents"]]
    assert path.removeprefix("vigil-lake/") in keys


def test_role_arn_is_assumed_for_s3_access(stack: Settings) -> None:
    role = "arn:aws:iam::123456789012:role/vigil-writer"
    settings = dataclasses.replace(_local_s3(stack), role_arn=role)
    creds = credentials(settings)
    assert creds.session_token and creds.expires_at is not None
    assert creds.access_key != credentials(_local_s3(stack)).access_key
    path = f"vigil-lake/test/assumed-{uuid.uuid4()}.parquet"
    pq.write_table(_table(), path, filesystem=s3_filesystem(settings))
    assert pq.read_table(path, filesystem=s3_filesystem(settings)).num_rows == 500
