from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from eoseg.blend import Lattice, default_lattice
from eoseg.errors import BandMismatchError
from eoseg.inference import PredictOptions, card_lattice
from eoseg.predict import open_classmap, predict
from eoseg.store import staging_path, tile_provenance


def _grid(cube_path: Path):  # type: ignore[no-untyped-def]
    from eoseg.cube import open_cube

    return open_cube(cube_path).odc.geobox


def _tiles(cube_path: Path) -> int:
    """Tiles of the cube (96 px)."""
    shape = _grid(cube_path).shape
    return -(-shape.y // 96) * -(-shape.x // 96)


SETTINGS = PredictOptions(chip_size=64, overlap=8, precision="fp32", probabilities=True)


@pytest.fixture(scope="module")
def classmap_path(cube_path: Path, model_dir: Path, client) -> Path:  # type: ignore[no-untyped-def]
    out = cube_path.parent / "classmap.zarr"
    predict(cube_path, model_dir, out, client=client, overwrite=True, run_id="r1", options=SETTINGS)
    return out


def test_classmap_is_valid_where_cube_is(classmap_path: Path, cube_path: Path) -> None:
    from eoseg.cube import open_cube

    cmap = open_classmap(classmap_path)
    valid = open_cube(cube_path)["valid"].isel(time=0).values.astype(bool)
    cls = cmap["class"].values
    assert ((cls == 255) == ~valid).all()
    assert cls[valid].max() < 6
    assert cmap.attrs["model_version"]
    assert cmap.attrs["predict_settings"] == {
        "chip_size": 64, "overlap": 8, "precision": "fp32", "probabilities": True,
        "contexts": {"contexts": [1], "weights": [1.0], "source": "single context",
                     "view": "pooled"},
    }  # fmt: skip


def test_probabilities_beside_class_and_confidence(classmap_path: Path) -> None:
    """``probabilities`` (uint8, x 255, one per class id) agree with ``class`` and
    ``confidence``, sum to 255 within rounding, and are zero where there is no input."""
    cmap = open_classmap(classmap_path)
    probs = cmap["probabilities"]
    assert probs.dims == ("class_id", "y", "x") and probs.dtype == np.uint8
    assert list(cmap["class_id"].values) == list(range(6))
    p = probs.values.astype(int)
    cls, conf = cmap["class"].values, cmap["confidence"].values
    valid = cls != 255
    np.testing.assert_array_equal(p.max(axis=0)[valid], conf[valid])
    top = np.take_along_axis(p, np.where(valid, cls, 0)[None].astype(int), axis=0)[0]
    assert (top[valid] == conf[valid]).all()  # the class is a most probable one
    assert np.abs(p.sum(axis=0)[valid] - 255).max() <= 6  # 6 roundings of up to 0.5
    assert (p[:, ~valid] == 0).all()


def test_tiles_record_model_cube_run_version_and_settings(
    classmap_path: Path, cube_path: Path
) -> None:
    from eoseg import __version__
    from eoseg.cube import open_cube

    records = tile_provenance(classmap_path)
    assert len(records) == _tiles(cube_path)
    cube_sig = open_cube(cube_path).attrs["eoseg_signature"]
    for record in records:
        assert record["model"] == open_classmap(classmap_path).attrs["model_version"]
        assert record["cube"] == cube_sig and record["run_id"] == "r1"
        assert record["eoseg_version"] == __version__
        assert record["settings"]["chip_size"] == 64 and record["settings"]["overlap"] == 8
        assert record["device"] == "cpu fp32 channels-last"


def test_json_report_through_the_cli(
    cube_path: Path, model_dir: Path, client, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    from typer.testing import CliRunner

    from eoseg.cli import app

    args = ["predict", "--cube", str(cube_path), "--model", str(model_dir), "--out",
            str(tmp_path / "m.zarr"), "--chip-size", "48", "--overlap", "4", "--precision",
            "fp32", "--scheduler", client.scheduler.address, "--json"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    grid = _grid(cube_path)
    assert doc["megapixels"] == pytest.approx(grid.shape.y * grid.shape.x / 1e6)
    assert doc["seconds"] > 0 and doc["mpx_per_s"] == pytest.approx(
        doc["megapixels"] / doc["seconds"], rel=0.05
    )
    assert (doc["chip_size"], doc["overlap"], doc["precision"]) == (48, 4, "fp32")
    assert doc["device"] == "cpu" and doc["tiles_written"] == doc["tiles"] == _tiles(cube_path)
    assert doc["peak_memory_mib"] and all(v > 50 for v in doc["peak_memory_mib"].values())
    assert "probabilities" not in open_classmap(tmp_path / "m.zarr")


def test_other_settings_never_mix_with_resumed_tiles(
    cube_path: Path, model_dir: Path, tmp_path: Path
) -> None:
    """An interrupted run resumes only with the same settings; with another overlap (or
    chip size, precision) its staged tiles are discarded and every tile is predicted anew."""
    out = tmp_path / "m.zarr"

    def stop_after_two(done: int, total: int) -> None:
        if done == 2:
            raise KeyboardInterrupt

    first = PredictOptions(chip_size=32, overlap=8)
    with pytest.raises(KeyboardInterrupt):
        predict(cube_path, model_dir, out, options=first, progress=stop_after_two, run_id="a")
    assert len(tile_provenance(staging_path(out))) == 2
    total = _tiles(cube_path)
    with pytest.raises(KeyboardInterrupt):
        other = PredictOptions(chip_size=32, overlap=4)
        predict(cube_path, model_dir, out, options=other, progress=stop_after_two, run_id="b")
    assert {r["run_id"] for r in tile_provenance(staging_path(out))} == {"b"}
    resumed = predict(cube_path, model_dir, out, options=PredictOptions(32, 4), run_id="c")
    assert resumed.tiles_written == total - 2
    records = tile_provenance(out)
    assert sorted(r["run_id"] for r in records) == ["b", "b"] + ["c"] * (total - 2)
    assert {r["settings"]["overlap"] for r in records} == {4}


def test_card_records_the_default_lattice(model_dir: Path, tmp_path: Path) -> None:
    """A card without ``inference`` (older eoseg) gets the default; one with it keeps it."""
    import shutil

    from eoseg.models.card import read_card

    card = read_card(model_dir)
    assert card.inference == {}
    assert card_lattice(card) == default_lattice(32, 2) == Lattice(256, 16)
    shutil.copytree(model_dir, tmp_path / "m")
    doc = json.loads((tmp_path / "m" / "model.json").read_text())
    doc["inference"] = {"chip_size": 48, "overlap": 12}
    assert card_lattice(type(card).from_dict(doc)) == Lattice(48, 12)


def test_band_mismatch_is_refused(cube_path: Path, tmp_path: Path) -> None:
    from conftest import save_untrained_model

    save_untrained_model(tmp_path / "m", ("B02", "B03", "B04", "B11"))
    with pytest.raises(BandMismatchError, match="B11"):
        predict(cube_path, tmp_path / "m", tmp_path / "out.zarr")
    assert not (tmp_path / "out.zarr").exists()


def test_workers_load_the_model_the_client_read_not_its_folder(tmp_path: Path) -> None:
    """A worker in another process (on another machine, in another pod) cannot read the
    client's model folder: the plugin brings the card and weights, verified there, and
    the tasks find the model in the worker's cache under the folder's name."""
    import shutil

    from eoseg.cluster import connect
    from eoseg.inference import ModelPlugin, get_model
    from eoseg.models import load_model
    from tests.conftest import save_untrained_model

    folder = tmp_path / "model"
    save_untrained_model(folder, ("B02", "B03", "B04", "B08"))
    expected = load_model(folder)[1].version
    plugin = ModelPlugin(str(folder), "fp32")
    shutil.rmtree(folder)  # the workers never see it
    # eoseg's own local cluster: a plain LocalCluster's nanny would leave Dask's malloc
    # setting in this process for every later worker (eoseg.cluster.KEEP_MALLOC_DEFAULTS).
    with connect(None, n_workers=1, local_directory=tmp_path / "dask") as client:
        client.register_plugin(plugin)
        version = client.submit(lambda key: get_model(key, "fp32")[1].version, str(folder))
        assert version.result(timeout=120) == expected
