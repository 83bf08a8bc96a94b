"""The harness of the bad-input table (issue 10): one way to run a case and judge it.

A case is a command line with ``{ws}`` standing for a fresh copy of the workspace (a
scene, a cube, labels, polygons, a model and a class map, all valid and small), plus an
optional ``prepare`` that spoils something in that copy first. Every case must end the
same way: exit status 2, no ``Traceback`` anywhere in the output, a message that holds
each expected fragment (what was expected, what was found, the flag to change), and every
file that existed before byte-identical afterwards with no new file left behind (no
partial product).

Commands run in-process (``typer.testing.CliRunner``) so the whole table takes seconds;
the few cases that need a real process (signals, concurrent runs, Dask worker output)
use `run_subprocess`.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from typer.testing import CliRunner

from eoseg.cli import app

Prepare = Callable[[Path], None]


@dataclass(frozen=True, slots=True)
class Case:
    """One bad input and what the user must be told.

    Attributes:
        id: Short name shown by pytest (``train-out-is-a-cube``).
        args: The command line after ``eoseg``; ``{ws}`` is replaced by the workspace path.
        expect: Fragments the message must contain (compared case-insensitively), e.g.
            the flag to change and the value found.
        prepare: Spoils the workspace copy before the command runs (its files are
            snapshotted after it, so what it writes is "pre-existing").
        new_files: Paths (relative to the workspace) the command may create, e.g. a log.
        run: Runs the expanded command line instead of `run_inprocess` (e.g.
            `run_unprivileged` for read-only outputs).
    """

    id: str
    args: Sequence[str]
    expect: Sequence[str] = ()
    prepare: Prepare | None = None
    new_files: Sequence[str] = field(default_factory=tuple)
    run: Callable[[Sequence[str]], Outcome] | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a command did: its exit status and everything it wrote for people."""

    exit_code: int
    output: str
    exception: BaseException | None = None


def snapshot(root: Path) -> dict[str, str]:
    """SHA-256 of every file under ``root`` (symlinks by target path), keyed by relative path."""
    digests: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            digests[rel] = "link:" + os.readlink(path)
        elif path.is_file():
            digests[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
        elif path.is_dir() and not any(path.iterdir()):
            digests[rel + "/"] = "empty-dir"
    return digests


def expand(args: Sequence[str], ws: Path) -> list[str]:
    return [a.replace("{ws}", str(ws)) for a in args]


def run_inprocess(args: Sequence[str]) -> Outcome:
    """The CLI in this process; an exception that escapes the command is kept, not raised."""
    result = CliRunner().invoke(app, list(args), catch_exceptions=True)
    output = result.stdout + (result.stderr or "")
    exc = result.exception
    if isinstance(exc, SystemExit):
        exc = None
    return Outcome(result.exit_code, output, exc)


def run_unprivileged(args: Sequence[str]) -> Outcome:
    """The CLI in this process, obeying file permissions even when run as root.

    Tests run as root here, and root writes into read-only folders: for the duration of
    the command this thread drops the capabilities that let it (Linux ``capset``; a
    thread's own effective set, restored after). Not root: permissions already hold.
    """
    with _without_root_powers():
        return run_inprocess(args)


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


_CAP_VERSION_3 = 0x20080522
_DAC_CAPS = (1 << 1) | (1 << 2) | (1 << 3)  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER


@contextmanager
def _without_root_powers() -> Iterator[None]:
    if os.geteuid() != 0:
        yield
        return
    libc = ctypes.CDLL(None, use_errno=True)
    header = _CapHeader(_CAP_VERSION_3, 0)
    data = (_CapData * 2)()
    if libc.capget(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capget failed")
    saved = data[0].effective
    data[0].effective = saved & ~_DAC_CAPS
    if libc.capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")
    try:
        yield
    finally:
        data[0].effective = saved
        libc.capset(ctypes.byref(header), data)


def run_subprocess(
    args: Sequence[str], *, timeout: float = 300, cwd: Path | None = None
) -> Outcome:
    """The real ``eoseg`` entry point in a child process (what users meet)."""
    proc = subprocess.run(
        [sys.executable, "-m", "eoseg", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=cwd,
    )
    return Outcome(proc.returncode, proc.stdout + proc.stderr)


def check_refusal(outcome: Outcome, expect: Sequence[str]) -> None:
    """Exit 2, no traceback, and every expected fragment in the message."""
    detail = f"exit {outcome.exit_code}; output:\n{outcome.output}"
    if outcome.exception is not None:
        detail += f"\nescaped exception: {outcome.exception!r}"
    assert outcome.exit_code == 2, detail
    assert outcome.exception is None, detail
    assert "Traceback" not in outcome.output, detail
    text = " ".join(outcome.output.split()).lower()
    for fragment in expect:
        assert " ".join(fragment.split()).lower() in text, f"missing {fragment!r}; {detail}"


def check_untouched(before: dict[str, str], after: dict[str, str], allowed: Sequence[str]) -> None:
    """Every file that existed is byte-identical, and nothing new was left behind."""
    changed = sorted(k for k in before if after.get(k) != before[k])
    assert not changed, f"pre-existing files changed or removed: {changed[:10]}"
    new = sorted(k for k in after if k not in before and not _allowed(k, allowed))
    assert not new, f"files left behind: {new[:10]}"


def _allowed(rel: str, allowed: Sequence[str]) -> bool:
    return any(rel == a or rel.startswith(a.rstrip("/") + "/") for a in allowed)


def run_case(
    case: Case,
    template: Path,
    tmp_path: Path,
    run: Callable[[Sequence[str]], Outcome] = run_inprocess,
) -> Outcome:
    """Copy the workspace, spoil it, run the command (in-process, or e.g. with
    `run_subprocess`) and judge the result."""
    ws = tmp_path / "ws"
    shutil.copytree(template, ws, symlinks=True)
    if case.prepare is not None:
        case.prepare(ws)
    before = snapshot(ws)
    try:
        outcome = (case.run or run)(expand(case.args, ws))
    finally:
        _restore_permissions(ws)
    check_refusal(outcome, [e.replace("{ws}", str(ws)) for e in case.expect])
    check_untouched(before, snapshot(ws), case.new_files)
    return outcome


def _restore_permissions(root: Path) -> None:
    """Cases that make folders read-only must not stop the snapshot or pytest's cleanup."""
    for path in [root, *root.rglob("*")]:
        if path.is_dir() and not path.is_symlink():
            path.chmod(path.stat().st_mode | 0o700)


def build_workspace(root: Path, *, demo: object, cube: Path, labels: Path, model: Path) -> Path:
    """The valid workspace every case starts from (copied per case).

    Holds ``catalog/`` (the demo's STAC catalog and scene folders), ``scene.tif`` (one
    band of a demo scene), ``cube.zarr``, ``labels.zarr``, ``polygons``
    (the demo's clean labels, as generated), ``truth.tif``, ``model/`` (untrained) and
    ``map.zarr`` (that model's class map of the cube).
    """
    from eoseg.predict import predict

    root.mkdir(parents=True, exist_ok=True)
    catalog: Path = demo.catalog  # type: ignore[attr-defined]
    shutil.copytree(catalog.parent, root / "catalog")
    shutil.copy(next(Path(demo.scenes[0]).glob("B04.tif")), root / "scene.tif")  # type: ignore[attr-defined]
    clean: Path = demo.clean_labels  # type: ignore[attr-defined]
    shutil.copy(clean, root / f"polygons{''.join(clean.suffixes)}")
    shutil.copy(demo.truth, root / "truth.tif")  # type: ignore[attr-defined]
    shutil.copytree(cube, root / "cube.zarr")
    shutil.copytree(labels, root / "labels.zarr")
    shutil.copytree(model, root / "model")
    predict(root / "cube.zarr", root / "model", root / "map.zarr")
    return root
