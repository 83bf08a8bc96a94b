"""A real S3-compatible server on loopback (moto's standalone server) for object-storage
tests, as s3fs's own tests do: requests go over HTTP to 127.0.0.1, nothing is mocked
in-process. Credentials reach s3fs/botocore only through the environment."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

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


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's threaded server on an ephemeral loopback port, for the whole session."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


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
