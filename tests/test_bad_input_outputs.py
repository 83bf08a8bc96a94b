"""Bad input, outputs (issue 10): nothing a user has is ever destroyed or left half-written.

Every command that writes refuses, with exit status 2 and a message, an output that would
replace something (a product without --overwrite, anything but a product of the same kind
even with it), an output that is one of its inputs, a read-only or impossible output
path, a staging store or checkpoint path holding something else, and an output another
run is writing. Files are checked byte for byte afterwards (tests/badinput.py).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import pytest

from eoseg.locks import LockRecord, lock_path
from tests.badinput import Case, check_refusal, run_case, run_inprocess, run_unprivileged

Prepare = Callable[[Path], None]


def copy(src: str, dst: str) -> Prepare:
    """Copy a workspace file or folder to another name."""

    def prepare(ws: Path) -> None:
        (shutil.copytree if (ws / src).is_dir() else shutil.copy)(ws / src, ws / dst)

    return prepare


def user_folder(name: str) -> Prepare:
    """A folder of a user's own files."""

    def prepare(ws: Path) -> None:
        (ws / name / "letters").mkdir(parents=True)
        (ws / name / "notes.txt").write_text("my notes\n")
        (ws / name / "letters" / "a.txt").write_text("dear ...\n")

    return prepare


def user_file(name: str, text: str = "my notes\n") -> Prepare:
    def prepare(ws: Path) -> None:
        (ws / name).write_text(text)

    return prepare


def zarr_store(name: str) -> Prepare:
    """A Zarr store of someone else's (no eoseg attributes)."""

    def prepare(ws: Path) -> None:
        import numpy as np
        import zarr

        group = zarr.open_group(str(ws / name), mode="w")
        group.create_array("temperature", data=np.arange(12, dtype="float32").reshape(3, 4))

    return prepare


def empty_folder(name: str) -> Prepare:
    def prepare(ws: Path) -> None:
        (ws / name).mkdir()

    return prepare


def read_only(name: str = "") -> Prepare:
    """A folder (the workspace itself for "") nobody may write into."""

    def prepare(ws: Path) -> None:
        folder = ws / name
        folder.mkdir(exist_ok=True)
        folder.chmod(0o555)

    return prepare


def no_access(name: str) -> Prepare:
    """A folder of someone else's that this user may neither list nor enter."""

    def prepare(ws: Path) -> None:
        user_folder(name)(ws)
        (ws / name).chmod(0)

    return prepare


def locked(name: str, lock: str | None = None) -> Prepare:
    """The output's lock (or ``lock``) held by a live process of this host (the test
    runner's parent)."""

    def prepare(ws: Path) -> None:
        record = LockRecord(
            pid=os.getppid(),
            host=socket.gethostname(),
            run_id="a1b2c3d4e5f6",
            started=time.time(),
            command="eoseg (another run)",
            token="0" * 32,
        )
        (ws / lock if lock else lock_path(ws / name)).write_text(json.dumps(asdict(record)))

    return prepare


def earlier_demo(name: str) -> Prepare:
    """The work dir of an earlier demo (which a new demo may reuse)."""

    def prepare(ws: Path) -> None:
        from eoseg.outputs import mark_demo_workdir

        mark_demo_workdir(ws / name)

    return prepare


def registry(ws: Path) -> None:
    """The workspace's model registered and promoted in ``registry/``."""
    from eoseg.registry import register, set_production

    card = register(ws / "model", ws / "registry")
    set_production(ws / "registry", card.name, card.version)


def both(*steps: Prepare) -> Prepare:
    def prepare(ws: Path) -> None:
        for step in steps:
            step(ws)

    return prepare


def export_cog(ws: Path) -> None:
    from eoseg.cog import write_cog

    write_cog(ws / "map.zarr", ws / "map.tif")


TRAIN = ["train", "--cube", "{ws}/cube.zarr", "--labels", "{ws}/labels.zarr"]
INGEST = ["ingest", "{ws}/scene.tif"]
RASTERIZE = ["rasterize", "{ws}/polygons.gpkg", "--cube", "{ws}/cube.zarr"]
PREDICT = ["predict", "--cube", "{ws}/cube.zarr", "--model", "{ws}/model"]
EXPORT = ["export", "{ws}/map.zarr"]
FETCH = ["models", "fetch", "test-unet", "--registry", "{ws}/registry"]
OW = "--overwrite"

EXISTS = ("already holds", "--overwrite")
NEVER = ("never deletes anything else",)
READ_ONLY = ("not writable", "permission denied")
LOCKED = ("is being written by run a1b2c3d4e5f6", "pid", "wait for it to finish")

CASES = [
    # train: --out was replaced whatever it held, with exit 0
    Case(
        "train-out-is-a-cube",
        [*TRAIN, "--out", "{ws}/cube2.zarr", OW],
        ("--out", "holds a cube store, not a model folder", *NEVER),
        copy("cube.zarr", "cube2.zarr"),
    ),
    Case(
        "train-out-is-a-cube-no-overwrite",
        [*TRAIN, "--out", "{ws}/cube2.zarr"],
        ("holds a cube store, not a model folder",),
        copy("cube.zarr", "cube2.zarr"),
    ),
    Case(
        "train-out-is-a-class-map",
        [*TRAIN, "--out", "{ws}/map.zarr", OW],
        ("holds a class map store, not a model folder",),
    ),
    Case(
        "train-out-user-folder",
        [*TRAIN, "--out", "{ws}/docs", OW],
        ("--out", "holds a folder of 2 entries (letters, notes.txt)", *NEVER),
        user_folder("docs"),
    ),
    Case(
        "train-out-user-file",
        [*TRAIN, "--out", "{ws}/notes.txt", OW],
        ("holds a file of 9 bytes, not a model folder",),
        user_file("notes.txt"),
    ),
    Case(
        "train-out-existing-model",
        [*TRAIN, "--out", "{ws}/model"],
        ("--out", "already holds a model folder", "--overwrite"),
    ),
    Case(
        "train-out-empty-folder",
        [*TRAIN, "--out", "{ws}/empty"],
        ("already holds an empty folder", "--overwrite"),
        empty_folder("empty"),
    ),
    Case(
        "train-out-equals-cube",
        [*TRAIN, "--out", "{ws}/cube.zarr", OW],
        ("--out", "is the --cube input", "choose another --out"),
    ),
    Case(
        "train-out-inside-input",
        [*TRAIN, "--out", "{ws}/cube.zarr/model"],
        (
            "--out",
            "lies inside the --cube input",
        ),
    ),
    Case(
        "train-out-contains-input",
        [*TRAIN, "--out", "{ws}", OW],
        (
            "--out",
            "contains the --cube input",
        ),
    ),
    Case(
        "train-out-equals-config",
        [*TRAIN, "--config", "{ws}/train.toml", "--out", "{ws}/train.toml", OW],
        ("is the --config input",),
        user_file("train.toml", "epochs = 1\n"),
    ),
    Case(
        "train-out-parent-is-file",
        [*TRAIN, "--out", "{ws}/scene.tif/model"],
        ("--out", "is a file, not a folder"),
    ),
    Case(
        "train-ckpt-user-folder",
        [*TRAIN, "--out", "{ws}/m"],
        (
            "holds a folder of 2 entries",
            "but eoseg keeps a training checkpoint there",
            "move it away",
        ),
        user_folder("m.ckpt"),
    ),
    Case(
        "train-readonly-out",
        [*TRAIN, "--out", "{ws}/ro/model"],
        ("--out", *READ_ONLY),
        read_only("ro"),
        run=run_unprivileged,
    ),
    Case(
        "train-out-model-with-user-files",
        [*TRAIN, "--out", "{ws}/model2", OW],
        ("holds a model folder with 1 entry (notes.txt) added, not a model folder",),
        both(copy("model", "model2"), user_file("model2/notes.txt")),
    ),
    Case(
        "train-out-unreadable-folder",
        [*TRAIN, "--out", "{ws}/secret", OW],
        ("holds something this user may not read (permission denied), not a model folder",),
        no_access("secret"),
        run=run_unprivileged,
    ),
    Case("train-out-locked", [*TRAIN, "--out", "{ws}/m"], ("--out", *LOCKED), locked("m")),
    # ingest
    Case(
        "ingest-out-equals-input",
        [*INGEST, "--out", "{ws}/scene.tif", OW],
        ("--out", "is the SOURCES input"),
    ),
    Case(
        "ingest-out-inside-input-folder",
        ["ingest", "{ws}/catalog", "--out", "{ws}/catalog/cube.zarr"],
        (
            "--out",
            "lies inside the SOURCES input",
        ),
    ),
    Case(
        "ingest-out-is-a-model",
        [*INGEST, "--out", "{ws}/model", OW],
        ("holds a model folder, not a cube store", *NEVER),
    ),
    Case(
        "ingest-out-is-labels",
        [*INGEST, "--out", "{ws}/labels.zarr", OW],
        ("holds a labels store, not a cube store",),
    ),
    Case(
        "ingest-out-existing-cube",
        [*INGEST, "--out", "{ws}/cube.zarr"],
        ("already holds a cube store", "--overwrite"),
    ),
    Case(
        "ingest-out-user-zarr",
        [*INGEST, "--out", "{ws}/theirs.zarr", OW],
        ("holds a Zarr store not written by eoseg",),
        zarr_store("theirs.zarr"),
    ),
    Case(
        "ingest-partial-is-file",
        [*INGEST, "--out", "{ws}/new.zarr"],
        ("holds a file of 9 bytes, but eoseg keeps a cube store there", "move it away"),
        user_file("new.zarr.partial"),
    ),
    Case(
        "ingest-partial-user-folder",
        [*INGEST, "--out", "{ws}/new.zarr"],
        ("holds a folder of 2 entries (letters, notes.txt), but eoseg keeps a cube store",),
        user_folder("new.zarr.partial"),
    ),
    Case(
        "ingest-partial-is-labels",
        [*INGEST, "--out", "{ws}/new.zarr"],
        ("holds a labels store, but eoseg keeps a cube store there",),
        copy("labels.zarr", "new.zarr.partial"),
    ),
    Case(
        "ingest-out-parent-is-file",
        [*INGEST, "--out", "{ws}/truth.tif/cube.zarr"],
        ("is a file, not a folder",),
    ),
    Case(
        "ingest-readonly-out",
        [*INGEST, "--out", "{ws}/cube2.zarr"],
        ("--out", *READ_ONLY),
        read_only(),
        run=run_unprivileged,
    ),
    Case("ingest-out-locked", [*INGEST, "--out", "{ws}/cube2.zarr"], LOCKED, locked("cube2.zarr")),
    # rasterize
    Case(
        "rasterize-out-equals-cube",
        [*RASTERIZE, "--out", "{ws}/cube.zarr", OW],
        ("--out", "is the --cube input"),
    ),
    Case(
        "rasterize-out-equals-source",
        [*RASTERIZE, "--out", "{ws}/polygons.gpkg", OW],
        ("is the SOURCE input",),
    ),
    Case(
        "rasterize-out-is-class-map",
        [*RASTERIZE, "--out", "{ws}/map.zarr", OW],
        ("holds a class map store, not a labels store",),
    ),
    Case("rasterize-out-existing-labels", [*RASTERIZE, "--out", "{ws}/labels.zarr"], EXISTS),
    Case(
        "rasterize-partial-is-file",
        [*RASTERIZE, "--out", "{ws}/l2.zarr"],
        ("holds a file of 9 bytes, but eoseg keeps a labels store there",),
        user_file("l2.zarr.partial"),
    ),
    Case(
        "rasterize-readonly-out",
        [*RASTERIZE, "--out", "{ws}/ro/l2.zarr"],
        READ_ONLY,
        read_only("ro"),
        run=run_unprivileged,
    ),
    Case("rasterize-out-locked", [*RASTERIZE, "--out", "{ws}/l2.zarr"], LOCKED, locked("l2.zarr")),
    # predict
    Case(
        "predict-out-equals-cube",
        [*PREDICT, "--out", "{ws}/cube.zarr", OW],
        ("--out", "is the --cube input"),
    ),
    Case(
        "predict-out-inside-model",
        [*PREDICT, "--out", "{ws}/model/map.zarr"],
        ("lies inside the --model input",),
    ),
    Case(
        "predict-out-is-a-cube",
        [*PREDICT, "--out", "{ws}/cube2.zarr", OW],
        ("holds a cube store, not a class map store", *NEVER),
        copy("cube.zarr", "cube2.zarr"),
    ),
    Case(
        "predict-out-user-folder",
        [*PREDICT, "--out", "{ws}/docs", OW],
        ("holds a folder of 2 entries",),
        user_folder("docs"),
    ),
    Case(
        "predict-out-existing-map",
        [*PREDICT, "--out", "{ws}/map.zarr"],
        ("already holds a class map store", "--overwrite"),
    ),
    Case(
        "predict-partial-is-file",
        [*PREDICT, "--out", "{ws}/map2.zarr"],
        ("holds a file of 9 bytes, but eoseg keeps a class map store there",),
        user_file("map2.zarr.partial"),
    ),
    Case(
        "predict-partial-user-folder",
        [*PREDICT, "--out", "{ws}/map2.zarr"],
        ("holds a folder of 2 entries (letters, notes.txt), but eoseg keeps a class map",),
        user_folder("map2.zarr.partial"),
    ),
    Case(
        "predict-readonly-out",
        [*PREDICT, "--out", "{ws}/map2.zarr"],
        ("--out", *READ_ONLY),
        read_only(),
        run=run_unprivileged,
    ),
    Case("predict-out-locked", [*PREDICT, "--out", "{ws}/map2.zarr"], LOCKED, locked("map2.zarr")),
    Case(
        "predict-lock-path-user-file",
        [*PREDICT, "--out", "{ws}/map2.zarr"],
        ("is not a lock written by eoseg", "move it away"),
        user_file("map2.zarr.lock"),
    ),
    # export
    Case(
        "export-cog-is-folder",
        [*EXPORT, "--cog", "{ws}/catalog", OW],
        ("--cog", "holds a folder of", "not a class map COG"),
    ),
    Case(
        "export-cog-empty-folder",
        [*EXPORT, "--cog", "{ws}/empty", OW],
        ("--cog", "holds an empty folder, not a class map COG"),
        empty_folder("empty"),
    ),
    Case(
        "export-cog-is-user-geotiff",
        [*EXPORT, "--cog", "{ws}/truth.tif", OW],
        ("--cog", "holds a GeoTIFF not written by eoseg", *NEVER),
    ),
    Case(
        "export-cog-existing",
        [*EXPORT, "--cog", "{ws}/map.tif"],
        ("--cog", "already holds a class map COG", "--overwrite"),
        export_cog,
    ),
    Case(
        "export-cog-equals-input",
        [*EXPORT, "--cog", "{ws}/map.zarr", OW],
        ("--cog", "is the CLASSMAP input"),
    ),
    Case(
        "export-cog-inside-input",
        [*EXPORT, "--cog", "{ws}/map.zarr/map.tif"],
        ("lies inside the CLASSMAP input",),
    ),
    Case(
        "export-polygons-is-user-vector",
        [*EXPORT, "--polygons", "{ws}/polygons.gpkg", OW],
        (
            "--polygons",
            "holds a GeoPackage not written by eoseg",
        ),
    ),
    Case(
        "export-quicklook-is-folder",
        [*EXPORT, "--quicklook", "{ws}/docs", OW],
        (
            "--quicklook",
            "holds a folder of 2 entries",
        ),
        user_folder("docs"),
    ),
    Case(
        "export-same-file-twice",
        [*EXPORT, "--cog", "{ws}/x.tif", "--quicklook", "{ws}/x.tif"],
        ("is given to both --cog and --quicklook",),
    ),
    Case(
        "export-readonly-out",
        [*EXPORT, "--cog", "{ws}/ro/map.tif"],
        ("--cog", *READ_ONLY),
        read_only("ro"),
        run=run_unprivileged,
    ),
    # models
    Case(
        "models-fetch-out-user-folder",
        [*FETCH, "--out", "{ws}/docs", OW],
        ("holds a folder of 2 entries", "not a model folder"),
        both(registry, user_folder("docs")),
    ),
    Case(
        "models-fetch-out-is-a-cube",
        [*FETCH, "--out", "{ws}/cube.zarr", OW],
        ("holds a cube store, not a model folder",),
        registry,
    ),
    Case("models-fetch-out-existing-model", [*FETCH, "--out", "{ws}/model"], EXISTS, registry),
    Case(
        "models-fetch-out-inside-registry",
        [*FETCH, "--out", "{ws}/registry/copy"],
        ("lies inside the --registry input",),
        registry,
    ),
    Case(
        "models-fetch-readonly-out",
        [*FETCH, "--out", "{ws}/ro/m"],
        READ_ONLY,
        both(registry, read_only("ro")),
        run=run_unprivileged,
    ),
    Case(
        "models-fetch-out-locked", [*FETCH, "--out", "{ws}/m"], LOCKED, both(registry, locked("m"))
    ),
    Case(
        "models-register-readonly-registry",
        ["models", "register", "{ws}/model", "--registry", "{ws}/ro/reg"],
        ("--registry", *READ_ONLY),
        read_only("ro"),
        run=run_unprivileged,
    ),
    Case(
        "models-register-registry-is-file",
        ["models", "register", "{ws}/model", "--registry", "{ws}/scene.tif"],
        ("--registry", "is a file, not a folder"),
    ),
    Case(
        "models-promote-readonly-registry",
        ["models", "promote", "test-unet", "v", "--registry", "{ws}/registry"],
        ("--registry", *READ_ONLY),
        both(registry, read_only("registry/test-unet"), read_only("registry")),
        run=run_unprivileged,
    ),
    # demo
    Case(
        "demo-workdir-user-folder",
        ["demo", "--quick", "--workdir", "{ws}/catalog"],
        ("--workdir", "holds a folder of", "not a demo work dir", *NEVER),
    ),
    Case(
        "demo-workdir-is-file",
        ["demo", "--quick", "--workdir", "{ws}/scene.tif"],
        ("--workdir", "holds a GeoTIFF not written by eoseg", "not a demo work dir"),
    ),
    Case(
        "demo-workdir-readonly",
        ["demo", "--quick", "--workdir", "{ws}/ro/demo"],
        ("--workdir", *READ_ONLY),
        read_only("ro"),
        run=run_unprivileged,
    ),
    Case(
        "demo-workdir-locked",
        ["demo", "--quick", "--workdir", "{ws}/d"],
        ("--workdir", "is being written by"),
        both(earlier_demo("d"), locked("d", "d/eoseg-demo.lock")),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, bad_input_template: Path, tmp_path: Path) -> None:
    run_case(case, bad_input_template, tmp_path)


def _start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    """A real ``eoseg`` run in its own process group (so that it can be paused or killed whole)."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "eoseg", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _wait_for_lock(lock: Path, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 180
    while not lock.exists():
        assert proc.poll() is None, f"exited {proc.returncode} before locking:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"no lock after 180 s:\n{log.read_text()}"
        time.sleep(0.01)


TINY_TRAINING = ["--epochs", "1", "--finetune-epochs", "0", "--chip-size", "32", "--depth", "2"]
TINY_TRAINING += ["--base-width", "8", "--train-chips", "8", "--val-chips", "2"]
TINY_TRAINING += ["--num-threads", "1"]


def test_train_concurrent_and_stale_lock(
    bad_input_template: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """train-concurrent: while a run in another process trains (paused, holding the lock of
    its --out), a second run on the same --out exits 2 naming it. train-stale-lock: once
    that process is killed outright (no clean-up), the next run takes its lock over with a
    warning and publishes. The later runs are in this process: only the first must be apart.
    """
    ws = tmp_path / "ws"
    shutil.copytree(bad_input_template, ws, symlinks=True)
    out = ws / "m"
    args = [a.replace("{ws}", str(ws)) for a in TRAIN] + ["--out", str(out), *TINY_TRAINING]
    log = tmp_path / "first.log"
    first = _start(args, log)
    try:
        _wait_for_lock(lock_path(out), first, log)
        os.killpg(first.pid, signal.SIGSTOP)  # keeps the lock for as long as the test needs
        second = run_inprocess(args)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=60)
    check_refusal(second, ["--out", "is being written by run", f"pid {first.pid}", "wait for it"])
    assert lock_path(out).exists()  # left by the killed run
    third = run_inprocess(args)
    assert third.exit_code == 0, third.output
    taken = [r.getMessage() for r in caplog.records if "taking over the lock" in r.getMessage()]
    assert len(taken) == 1 and f"pid {first.pid}" in taken[0]
    from eoseg.models.card import read_card

    assert read_card(out).bands and not lock_path(out).exists()
    assert not (ws / "m.ckpt").exists()  # the checkpoint goes once the model is saved
