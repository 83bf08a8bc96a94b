"""A real S3-compatible server on loopback (moto's standalone server, its own process) for
object-storage tests, as s3fs's own tests do: requests go over HTTP to 127.0.0.1, nothing
is mocked in-process. Credentials reach s3fs/botocore only through the environment."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SECRET = "eoseg-test-secret-4f1c2a"
"""The secret key the tests give; it must never appear in a product or a log."""


@dataclass(frozen=True, slots=True)
class S3:
    """A fresh bucket on the loopback server, with the environment that reaches it."""

    endpoint: str
    bucket: str
    env: dict[str, str]

    def url(self, key: str) -> str:
        """The s3:// URL of ``key`` in the bucket."""
        return f"s3://{self.bucket}/{key}"


@dataclass(frozen=True, slots=True)
class S3Server:
    """The loopback server: its endpoint and the log of the requests it answered."""

    endpoint: str
    log: Path

    def requests(self, since: int = 0) -> list[str]:
        """The request lines of the log from byte ``since`` on (``"HEAD /bucket/key"``...)."""
        with self.log.open("rb") as f:
            f.seek(since)
            text = f.read().decode(errors="replace")
        return [line for line in text.splitlines() if '"' in line and " HTTP/" in line]

    def mark(self) -> int:
        """Where the log ends now (for `requests`)."""
        return self.log.stat().st_size


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """moto's standalone server in its own process on a loopback port, for the whole
    session. Its own process, not moto's in-process threaded server: request handling
    there takes the tests' GIL, and on 2 cores made object-storage runs 2-3x slower."""
    from tests.loopback import BIN, Services, free_port, wait_for

    port = free_port()
    folder = tmp_path_factory.mktemp("moto")
    services = Services(folder, {**os.environ})
    services.start("moto", [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)])
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_for("moto server", lambda: _answers(endpoint), 60, services.tail)
        yield S3Server(endpoint, folder / "moto.log")
    finally:
        services.stop()


@pytest.fixture(scope="session")
def s3_endpoint(s3_server: S3Server) -> str:
    """The loopback server's endpoint URL."""
    return s3_server.endpoint


def _answers(endpoint: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{endpoint}/moto-api/", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@contextlib.contextmanager
def fresh_bucket(s3_endpoint: str) -> Iterator[S3]:
    """A new bucket, credentials and endpoint in the environment (as s3fs/botocore read
    them; restored afterwards), and s3fs's instance cache cleared before and after."""
    import s3fs

    env = {
        "AWS_ACCESS_KEY_ID": "eoseg-test-key",
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        mp.delenv("AWS_PROFILE", raising=False)
        s3fs.S3FileSystem.clear_instance_cache()
        bucket = f"eoseg-{uuid.uuid4().hex[:12]}"
        s3fs.S3FileSystem().mkdir(bucket)
        yield S3(s3_endpoint, bucket, env)
        s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture
def s3(s3_endpoint: str) -> Iterator[S3]:
    """A new bucket for the test (`fresh_bucket`)."""
    with fresh_bucket(s3_endpoint) as bucket:
        yield bucket
