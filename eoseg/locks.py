"""Output locks: one run at a time writes a product.

A run claims its output with a lock file beside it, ``<out>.lock``, created exclusively
(``O_EXCL``, atomic on local and network file systems) and holding a JSON record of the
run: pid, host, run id, start time and command line. A second run on the same output is
refused with a message naming the run that holds it; it does not wait, because the
holder may run for hours and an interrupted run resumes its tiles anyway.

A lock left behind by a run that died (its pid is gone from this host, or now belongs to
a process started after the lock was taken) is taken over with a warning. A lock of
another host cannot be checked from here: the message says how to remove it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import psutil

from eoseg.errors import OutputExistsError
from eoseg.storage import is_url

log = logging.getLogger(__name__)

LOCK_SUFFIX = ".lock"
_UNWRITTEN_GRACE_S = 30.0
"""An empty lock file younger than this is a run between creating and filling it."""


@dataclass(frozen=True, slots=True)
class LockRecord:
    """Who holds an output: written into the lock file as JSON."""

    pid: int
    host: str
    run_id: str
    started: float
    """Seconds since the epoch when the lock was taken."""
    command: str
    token: str
    """Unique per claim, so a run only ever removes its own lock."""

    def describe(self) -> str:
        when = datetime.fromtimestamp(self.started, UTC).isoformat(timespec="seconds")
        run = f"run {self.run_id}" if self.run_id else "a run"
        return f"{run} (pid {self.pid} on {self.host}, started {when}: {self.command})"


def lock_path(path: Path) -> Path:
    """The lock file of an output: ``<out>.lock`` beside it."""
    return path.with_name(path.name + LOCK_SUFFIX)


def read_lock(lock: Path) -> LockRecord | None:
    """The record in a lock file; None if there is none or it is not one eoseg wrote."""
    try:
        doc = json.loads(lock.read_text())
        return LockRecord(**doc)
    except (OSError, ValueError, TypeError):
        return None


def live_holder(path: Path, lock: Path | None = None) -> LockRecord | None:
    """The run holding ``path``'s lock, or None if it is free or held by a dead run.

    Raises:
        OutputExistsError: The lock file is not one eoseg wrote (it is never removed).
    """
    lock = lock or lock_path(path)
    if not lock.exists():
        return None
    record = read_lock(lock)
    if record is not None:
        return record if _alive(record) else None
    try:
        stat = lock.stat()
    except FileNotFoundError:
        return None
    if stat.st_size:
        raise OutputExistsError(
            f"{lock} is not a lock written by eoseg, but eoseg needs that path to lock the "
            f"output {path}: move it away or choose another output path"
        )
    if time.time() - stat.st_mtime < _UNWRITTEN_GRACE_S:
        raise OutputExistsError(f"another run is taking the lock {lock} of {path}: try again")
    return None  # left empty by a run killed right after creating it


def _alive(record: LockRecord) -> bool:
    """Whether the holder may still run; a lock of another host is assumed alive."""
    if record.host != socket.gethostname():
        return True
    try:
        created = psutil.Process(record.pid).create_time()
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return True  # exists, but cannot be inspected (another user's process)
    return created <= record.started + 1.0  # a later process reusing the pid is not it


def check_unlocked(path: Path, flag: str = "--out", lock: Path | None = None) -> None:
    """Refuse an output another live run is writing.

    Raises:
        OutputExistsError: Naming the run that holds the lock and what to do.
    """
    holder = live_holder(path, lock)
    if holder is not None:
        raise OutputExistsError(_held_message(path, holder, flag, lock or lock_path(path)))


def _held_message(path: Path, holder: LockRecord, flag: str, lock: Path) -> str:
    if holder.host != socket.gethostname():
        fix = f"if that run is gone, delete {lock} and run again"
    else:
        fix = "wait for it to finish (or stop it) and run again: an interrupted run resumes"
    return f"{flag} {path} is being written by {holder.describe()}: {fix}"


@contextmanager
def output_lock(
    path: Path | str, *, run_id: str = "", flag: str = "--out", lock: Path | None = None
) -> Iterator[LockRecord]:
    """Hold the lock of output ``path`` while the block runs (see the module docstring).

    ``lock`` is the lock file, `lock_path` by default (the demo keeps its inside its work
    dir, which it promises not to write outside of).

    Raises:
        OutputExistsError: Another live run holds it, or the lock path holds a foreign file.
    """
    record = LockRecord(
        pid=os.getpid(),
        host=socket.gethostname(),
        run_id=run_id,
        started=time.time(),
        command=" ".join(["eoseg", *sys.argv[1:]]) if sys.argv else "eoseg",
        token=uuid.uuid4().hex,
    )
    if is_url(path):
        # Object storage has no exclusive create that every S3-compatible server honours:
        # one run at a time per output is the scheduler's job there (one flow run per map).
        log.debug("no lock for %s on object storage", path)
        yield record
        return
    path = Path(path)
    lock = lock or lock_path(path)
    lock.parent.mkdir(parents=True, exist_ok=True)
    _acquire(lock, path, record, flag)
    try:
        yield record
    finally:
        if (held := read_lock(lock)) is not None and held.token == record.token:
            lock.unlink(missing_ok=True)


def _acquire(lock: Path, path: Path, record: LockRecord, flag: str) -> None:
    for _ in range(3):
        if _create(lock, record):
            return
        holder = live_holder(path, lock)
        if holder is not None:
            raise OutputExistsError(_held_message(path, holder, flag, lock))
        stale = read_lock(lock)
        log.warning(
            "taking over the lock %s of %s, which is no longer running",
            lock,
            stale.describe() if stale else "a run killed while taking it",
        )
        _remove_stale(lock, stale)
    raise OutputExistsError(
        f"{flag} {path}: could not take the lock {lock}, other runs keep taking it: "
        "run one at a time on an output"
    )


def _create(lock: Path, record: LockRecord) -> bool:
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        json.dump(asdict(record), f)
    return True


def _remove_stale(lock: Path, stale: LockRecord | None) -> None:
    """Remove a stale lock, unless another run replaced it meanwhile (then it is put back)."""
    aside = lock.with_name(f"{lock.name}.{uuid.uuid4().hex[:8]}.stale")
    try:
        os.rename(lock, aside)
    except FileNotFoundError:
        return  # another run took it over first
    if read_lock(aside) != stale:
        with contextlib.suppress(FileExistsError):
            os.link(aside, lock)  # a fresh lock: give it back, unless yet another exists
    aside.unlink(missing_ok=True)
