"""An S3 API server on loopback (moto's server) standing in for S3 or MinIO.

Its objects live in memory: a restart empties the bucket. It exists for S3-mode runs and
tests of the S3 code paths, not to keep data.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request

from vigil.objectstore import create_bucket, s3_client
from vigil.services.process import (
    ProcessRecord,
    ProcessRegistry,
    record_for,
    require_free_port,
    spawn,
    wait_until,
)
from vigil.settings import Settings

NAME = "s3"
DEFAULT_BUCKET = "vigil-lake"


class S3Server:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.log = settings.state_dir / "logs" / "s3.log"
        self.registry = ProcessRegistry(settings.state_dir)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.settings.s3_port}"

    @property
    def address(self) -> str:
        return self.endpoint

    @property
    def bucket(self) -> str:
        return self.settings.s3_bucket or DEFAULT_BUCKET

    def running(self) -> ProcessRecord | None:
        return self.registry.live(NAME)

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.endpoint + "/", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def start(self, progress: list[str]) -> ProcessRecord:
        require_free_port("127.0.0.1", self.settings.s3_port, "VIGIL_S3_PORT")
        proc = spawn([sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                      "-p", str(self.settings.s3_port)], self.log)
        record = record_for(NAME, proc.pid, self.address, self.log)
        self.registry.put(record)
        wait_until(self.healthy, what="the S3 server", timeout=30,
                   still_starting=lambda: proc.poll() is None, log=self.log)
        self.ensure_bucket()
        progress.append(f"s3: bucket {self.bucket} ready at {self.endpoint}")
        return record

    def ensure_bucket(self) -> None:
        client = s3_client(self.settings, endpoint_url=self.endpoint)
        create_bucket(client, self.bucket, self.settings.aws_region)
