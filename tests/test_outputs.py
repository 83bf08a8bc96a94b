"""What may be written where (eoseg.outputs) and output locks (eoseg.locks).

The refusals, command by command, are in tests/test_bad_input_outputs.py; here: what each
kind of thing is recognised as, what may be replaced, and the locks' life cycle.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import psutil
import pytest
import torch

from eoseg.errors import InvalidParameterError, OutputExistsError
from eoseg.locks import LockRecord, check_unlocked, lock_path, output_lock, read_lock
from eoseg.outputs import Found, check_output, identify, mark_demo_workdir
from tests.badinput import run_inprocess, run_unprivileged, snapshot


def test_identify_products_and_other_things(bad_input_template: Path, tmp_path: Path) -> None:
    ws = bad_input_template
    kinds = {n: identify(ws / n).kind for n in ("cube.zarr", "labels.zarr", "map.zarr", "model")}
    assert kinds == {"cube.zarr": "cube", "labels.zarr": "labels", "map.zarr": "classmap",
                     "model": "model"}  # fmt: skip
    assert identify(ws / "scene.tif") == Found(None, "a GeoTIFF not written by eoseg")
    assert identify(ws / "polygons.gpkg").what == "a GeoPackage not written by eoseg"
    assert identify(ws / "catalog").what.startswith("a folder of ")
    assert identify(tmp_path / "none") == Found(None, "nothing", empty=True, exists=False)
    (tmp_path / "empty").mkdir()
    assert identify(tmp_path / "empty") == Found(None, "an empty folder", empty=True, is_dir=True)
    (tmp_path / "zero").touch()
    assert identify(tmp_path / "zero") == Found(None, "an empty file", empty=True)
    (tmp_path / "notes.txt").write_text("hello")
    assert identify(tmp_path / "notes.txt").what == "a file of 5 bytes"
    from eoseg.train.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "m.ckpt", {"w": torch.zeros(2), "epoch": 1})
    assert identify(tmp_path / "m.ckpt").kind == "checkpoint"
    mark_demo_workdir(tmp_path / "demo")
    assert identify(tmp_path / "demo").kind == "demo"


@pytest.mark.parametrize("suffix", [".parquet", ".gpkg", ".geojson"])
def test_exports_are_recognised_and_replaced(
    bad_input_template: Path, tmp_path: Path, suffix: str
) -> None:
    """Each export carries its kind, so --overwrite replaces it (and only it)."""
    out = tmp_path / "out"
    args = ["export", str(bad_input_template / "map.zarr"), "--cog", str(out / "map.tif")]
    args += ["--polygons", str(out / f"p{suffix}"), "--quicklook", str(out / "q.png")]
    first = run_inprocess(args)
    assert first.exit_code == 0, first.output
    found = {n: identify(out / n).kind for n in ("map.tif", f"p{suffix}", "q.png")}
    assert found == {"map.tif": "cog", f"p{suffix}": "polygons", "q.png": "quicklook"}
    assert run_inprocess(args).exit_code == 2  # exists: needs --overwrite
    again = run_inprocess([*args, "--overwrite"])
    assert again.exit_code == 0, again.output
    styles = ["map.qml", "p.qml"]  # QGIS styles beside the COG and the polygons
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["map.tif", f"p{suffix}", "q.png", *styles]
    )
    import geopandas as gpd

    read = gpd.read_parquet if suffix == ".parquet" else gpd.read_file
    assert len(read(out / f"p{suffix}")) > 0


def test_empty_things_are_replaced_only_by_their_like(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    (tmp_path / "file.tif").touch()
    check_output(tmp_path / "dir", "model", overwrite=True)  # an empty folder: nothing lost
    check_output(tmp_path / "file.tif", "cog", overwrite=True)  # an empty file: nothing lost
    check_output(tmp_path / "new", "cube", overwrite=False)
    with pytest.raises(OutputExistsError, match="holds an empty folder, not a class map COG"):
        check_output(tmp_path / "dir", "cog", overwrite=True)
    with pytest.raises(OutputExistsError, match="holds an empty file, not a model folder"):
        check_output(tmp_path / "file.tif", "model", overwrite=True)
    with pytest.raises(OutputExistsError, match="already holds an empty folder: pass --overwrite"):
        check_output(tmp_path / "dir", "model", overwrite=False)


def test_demo_workdir_is_reused(tmp_path: Path) -> None:
    """An earlier demo's work dir is rewritten without asking; a folder of others' files is not."""
    mark_demo_workdir(tmp_path / "demo")
    (tmp_path / "demo" / "cube.zarr").mkdir()
    check_output(tmp_path / "demo", "demo", overwrite=True, flag="--workdir", overwrite_flag=None)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("...")
    with pytest.raises(OutputExistsError, match=r"\(thesis.tex\), not a demo work dir"):
        check_output(tmp_path / "mine", "demo", overwrite=True, flag="--workdir")


def test_library_never_replaces_another_kind(bad_input_template: Path, tmp_path: Path) -> None:
    """Below the commands too: saving a model onto a cube, or a store's staging path holding
    a user's folder, is refused and nothing is touched."""
    from eoseg.models import load_model, save_model
    from eoseg.store import create_store

    shutil.copytree(bad_input_template / "cube.zarr", tmp_path / "cube.zarr")
    before = snapshot(tmp_path)
    model, card = load_model(bad_input_template / "model")
    with pytest.raises(OutputExistsError, match="holds a cube store: eoseg never replaces it"):
        save_model(model, card, tmp_path / "cube.zarr")
    assert snapshot(tmp_path) == before
    (tmp_path / "map.zarr.partial").mkdir()
    (tmp_path / "map.zarr.partial" / "notes.txt").write_text("mine")
    before = snapshot(tmp_path)
    with pytest.raises(OutputExistsError, match="holds a folder of 1 entry"):
        create_store(tmp_path / "map.zarr", None, product="classmap", signature="s", attrs={})  # type: ignore[arg-type]
    assert snapshot(tmp_path) == before
    save_model(model, replace(card, name="again"), tmp_path / "model")  # a new folder: fine
    saved = save_model(model, replace(card, name="other"), tmp_path / "model")  # its like: fine
    assert json.loads((tmp_path / "model" / "model.json").read_text())["name"] == saved.name


def test_train_overwrite_replaces_a_model(bad_input_template: Path, tmp_path: Path) -> None:
    """`train --out MODEL --overwrite` replaces a model folder (the allowed counterpart of
    train-out-existing-model)."""
    ws = tmp_path / "ws"
    shutil.copytree(bad_input_template, ws)
    old = json.loads((ws / "model" / "model.json").read_text())["version"]
    args = ["train", "--cube", str(ws / "cube.zarr"), "--labels", str(ws / "labels.zarr")]
    args += ["--out", str(ws / "model"), "--overwrite", "--json"]
    args += ["--epochs", "1", "--finetune-epochs", "0", "--chip-size", "32", "--base-width", "8"]
    args += ["--depth", "2", "--train-chips", "8", "--val-chips", "2", "--num-threads", "1"]
    result = run_inprocess(args)
    assert result.exit_code == 0, result.output
    new = json.loads((ws / "model" / "model.json").read_text())["version"]
    doc, _ = json.JSONDecoder().raw_decode(result.output)  # progress may follow on stderr
    assert new != old and new == doc["version"]
    leftovers = {p.name for p in ws.iterdir()} - {p.name for p in bad_input_template.iterdir()}
    assert not leftovers  # no lock, checkpoint or staged folder left


def test_evaluate_reads_a_read_only_map(bad_input_template: Path, tmp_path: Path) -> None:
    """evaluate writes only scratch files: beside the map if it can, else in the temp dir."""
    ws = tmp_path / "ws"
    shutil.copytree(bad_input_template, ws)
    ws.chmod(0o555)
    try:
        result = run_unprivileged(
            ["evaluate", str(ws / "map.zarr"), "--truth", str(ws / "polygons.gpkg"), "--json"]
        )
    finally:
        ws.chmod(0o755)
    assert result.exit_code == 0, result.output
    doc, _ = json.JSONDecoder().raw_decode(result.output)  # then the progress bar (stderr)
    assert 0.0 <= doc["overall_accuracy"] <= 1.0


def _record(path: Path, **changes: object) -> LockRecord:
    """A lock record of this process, with ``changes``, written as the lock of ``path``."""
    record = LockRecord(
        pid=os.getpid(),
        host=socket.gethostname(),
        run_id="r1",
        started=time.time(),
        command="eoseg predict ...",
        token="t" * 32,
    )
    record = replace(record, **changes)  # type: ignore[arg-type]
    lock_path(path).write_text(json.dumps(asdict(record)))
    return record


def test_lock_is_exclusive_and_released(tmp_path: Path) -> None:
    out = tmp_path / "map.zarr"
    with output_lock(out, run_id="abc") as held:
        assert read_lock(lock_path(out)) == held and held.pid == os.getpid()
        with pytest.raises(OutputExistsError, match=r"is being written by run abc \(pid"):
            check_unlocked(out)
        with pytest.raises(OutputExistsError, match="wait for it to finish"), output_lock(out):
            pass
        assert lock_path(out).exists()  # the refused claim left the holder's lock alone
    assert not lock_path(out).exists()
    with pytest.raises(RuntimeError), output_lock(out):
        raise RuntimeError("a failed run")
    assert not lock_path(out).exists()


def test_lock_of_a_dead_run_is_taken_over(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    dead = int(done.stdout)
    _record(tmp_path / "a", pid=dead, run_id="gone")
    assert not psutil.pid_exists(dead)
    check_unlocked(tmp_path / "a")  # free to take
    with caplog.at_level(logging.WARNING), output_lock(tmp_path / "a", run_id="new"):
        assert read_lock(lock_path(tmp_path / "a")).run_id == "new"  # type: ignore[union-attr]
    assert f"run gone (pid {dead}" in caplog.text and "no longer running" in caplog.text
    # A live pid that started after the lock was taken is another process: stale too.
    _record(tmp_path / "b", started=psutil.Process().create_time() - 100)
    with output_lock(tmp_path / "b"):
        pass


def test_lock_of_another_host_or_not_a_lock_is_kept(tmp_path: Path) -> None:
    record = _record(tmp_path / "a", host="node-7")
    with pytest.raises(OutputExistsError, match=r"on node-7.*if that run is gone, delete"):
        check_unlocked(tmp_path / "a")
    assert read_lock(lock_path(tmp_path / "a")) == record
    lock_path(tmp_path / "b").write_text("my shopping list")
    with (
        pytest.raises(OutputExistsError, match="is not a lock written by eoseg"),
        output_lock(tmp_path / "b"),
    ):
        pass
    assert lock_path(tmp_path / "b").read_text() == "my shopping list"


def test_empty_lock_file(tmp_path: Path) -> None:
    """Empty: a run between creating and filling it (refused), or killed right then (stale)."""
    lock_path(tmp_path / "a").touch()
    with pytest.raises(OutputExistsError, match="another run is taking the lock"):
        check_unlocked(tmp_path / "a")
    old = time.time() - 120
    os.utime(lock_path(tmp_path / "a"), (old, old))
    with output_lock(tmp_path / "a"):
        assert read_lock(lock_path(tmp_path / "a")) is not None


def test_unwritable_and_impossible_paths(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(InvalidParameterError, match="is a file, not a folder"):
        check_output(tmp_path / "file" / "sub" / "cube.zarr", "cube", overwrite=False)
    with pytest.raises(InvalidParameterError, match=r"--out .* is the --cube input"):
        check_output(
            tmp_path / "file", "cube", overwrite=True, inputs={"--cube": tmp_path / "file"}
        )
    os.link(tmp_path / "file", tmp_path / "same")
    with pytest.raises(InvalidParameterError, match="is the --cube input"):  # another name
        check_output(tmp_path / "same", "cog", overwrite=True, inputs={"--cube": tmp_path / "file"})
