"""Refusing storage that cannot be reached, at a command's boundary, before any work.

A wrong bucket name or missing credentials would otherwise surface deep inside a run,
after a cluster started and partial outputs were written. Each command checks the
locations it was given (`check_reachable`), naming the option to fix; the message never
shows a secret of the environment, even when a library's own message echoes one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from eoseg.errors import InvalidParameterError
from eoseg.storage import Location, is_url, resolve

_BUCKET_PROTOCOLS = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss"})
"""Filesystems whose first path component is a bucket (container) that must exist."""
_SECRET_VARIABLES = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AZURE_STORAGE_KEY")


def reachable(where: str | Path | Location, flag: str) -> Location:
    """`resolve` ``where`` and, on object storage, check that its bucket can be read.

    Called once per location at a command's boundary, before any work, so that a wrong
    bucket or missing credentials are reported naming the option, not deep inside a run.

    Raises:
        InvalidParameterError: The bucket does not exist, or cannot be listed with the
            credentials of the environment (none, wrong, or not allowed).
    """
    loc = resolve(where, flag)
    protocols = loc.fs.protocol if isinstance(loc.fs.protocol, tuple) else (loc.fs.protocol,)
    if loc.is_local or not _BUCKET_PROTOCOLS.intersection(protocols):
        return loc
    bucket = loc.path.split("/", 1)[0]
    try:
        loc.fs.ls(bucket, detail=False)
    except FileNotFoundError:
        raise InvalidParameterError(
            f"{flag} {loc.url}: bucket {bucket!r} does not exist (or is not visible to these "
            f"credentials): create it, or fix the bucket name in {flag}"
        ) from None
    except Exception as exc:  # no credentials, denied, unreachable endpoint: all the same fix
        raise InvalidParameterError(
            f"{flag} {loc.url} cannot be reached ({type(exc).__name__}: {_scrub(str(exc))}): "
            "expected credentials in the environment (AWS_ACCESS_KEY_ID, "
            "AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL for S3-compatible servers, or "
            f"AWS_PROFILE) that may read bucket {bucket!r}; set them, or choose another {flag}"
        ) from None
    return loc


def _scrub(text: str) -> str:
    """``text`` without any secret of the environment (a library's message might echo one)."""
    for name in _SECRET_VARIABLES:
        secret = os.environ.get(name)
        if secret:
            text = text.replace(secret, "***")
    return text


def check_reachable(locations: Mapping[str, str | Path | None]) -> None:
    """`reachable` for each location a command was given, by the option naming it (None
    and local paths cost nothing)."""
    for flag, where in locations.items():
        if where is not None and is_url(where):
            reachable(where, flag)
