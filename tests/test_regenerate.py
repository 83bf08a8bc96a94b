"""Regeneration: per-tile input signatures decide which tiles a new model or new scenes
recompute; versions are published on top of each other and the change is reported.

A 128 x 128 px grid at 10 m (4 x 4 tiles of 32 px) from real GeoTIFF scenes, a seeded
untrained U-Net (two seeds: two model versions), real icechunk repositories.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from eoseg.cube import ingest, open_cube
from eoseg.errors import OutputExistsError
from eoseg.grid import iter_tiles
from eoseg.input_signature import INPUT_KEY
from eoseg.regenerate import RegenerateOptions, plan_regeneration, regenerate
from eoseg.stats import pixel_areas
from eoseg.storage import resolve
from eoseg.store import tile_provenance
from eoseg.synthetic_scenes import BANDS, SPECTRA
from eoseg.version_publish import publish_classmap
from eoseg.versions import list_versions, open_repository, open_version, tile_records
from tests.conftest import save_untrained_model, write_geotiff
from tests.s3 import S3

SIZE, TILE = 128, 32
TOUCHED = {"r0000_c0000", "r0000_c0001", "r0001_c0000", "r0001_c0001"}
"""The tiles a 40 x 40 px scene in the grid's top-left corner touches."""


def _scene(path: Path, size: int, seed: int) -> Path:
    """A uint16 scene of 16 px blocks of the demo's class spectra (x 10000), top-left
    corner at the grid's."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, len(SPECTRA), (-(-size // 16),) * 2)
    field = np.kron(blocks, np.ones((16, 16), dtype=int))[:size, :size]
    values = SPECTRA[field].transpose(2, 0, 1) * 10000 + rng.normal(0, 50, (4, size, size))
    return write_geotiff(path, values.astype("uint16"), nodata=0, descriptions=BANDS)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Scene A over the whole grid, scene B (newer) over its top-left 40 x 40 px; cube 1
    of A, cube 2 of B then A (B first: its pixels win); models m1 and m2. Read only."""
    tmp = tmp_path_factory.mktemp("regen")
    a = _scene(tmp / "a_20240612.tif", SIZE, 1)
    b = _scene(tmp / "b_20240701.tif", 40, 2)
    ingest([a], tmp / "cube1.zarr", tile_size=TILE)
    ingest([b, a], tmp / "cube2.zarr", tile_size=TILE)
    return {
        "cube1": tmp / "cube1.zarr",
        "cube2": tmp / "cube2.zarr",
        "m1": save_untrained_model(tmp / "m1", BANDS, seed=0),
        "m2": save_untrained_model(tmp / "m2", BANDS, seed=1),
    }


@pytest.fixture(scope="module")
def published(world: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A product whose one version is cube 1 predicted by m1 (read only: copy it)."""
    repo = tmp_path_factory.mktemp("published") / "product"
    regenerate(repo, world["cube1"], world["m1"], options=RegenerateOptions(tag="v1"))
    return repo


@pytest.fixture
def repo(published: Path, tmp_path: Path) -> Path:
    """A test's own copy of the published product."""
    shutil.copytree(published, tmp_path / "product")
    return tmp_path / "product"


def du(path: Path) -> int:
    """Bytes of every file under ``path``."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _maps(repo: Path, version: str) -> dict[str, np.ndarray]:
    ds = open_version(repo, version)
    return {str(n): ds[n].values for n in ds.data_vars}


def test_ingest_records_input_signatures_that_change_only_where_new_scenes_touch(
    world: dict[str, Path],
) -> None:
    one = {r["tile"]: r[INPUT_KEY] for r in tile_provenance(world["cube1"])}
    two = {r["tile"]: r[INPUT_KEY] for r in tile_provenance(world["cube2"])}
    assert len(one) == len(two) == 16 and all(len(s) == 32 for s in one.values())
    assert {t for t in one if one[t] != two[t]} == TOUCHED
    # The same cube data where no new scene lies: equal signatures, equal pixels.
    c1, c2 = open_cube(world["cube1"]), open_cube(world["cube2"])
    np.testing.assert_array_equal(c1["data"][..., 64:, :].values, c2["data"][..., 64:, :].values)
    assert not np.array_equal(c1["data"][..., :32, :32].values, c2["data"][..., :32, :32].values)


def test_new_model_recomputes_every_tile_and_keeps_the_previous_version(
    world: dict[str, Path], tmp_path: Path, s3: S3
) -> None:
    repo = tmp_path / "product"  # a new product: its first version is the whole map
    first = regenerate(repo, world["cube1"], world["m1"])
    assert (first.before, first.committed, len(first.recomputed)) == (None, True, 16)
    assert first.reasons == {"new": 16} and first.changes is None
    v1 = _maps(repo, first.after or "")
    records = tile_records(open_repository(repo).readonly_session(snapshot_id=first.after))
    signatures = {r["tile"]: r[INPUT_KEY] for r in tile_provenance(world["cube1"])}
    assert {n: r[INPUT_KEY] for n, r in records.items()} == signatures  # predict copied them
    again = regenerate(repo, world["cube1"], world["m1"])  # nothing new: nothing to do
    assert (again.committed, again.recomputed, again.after) == (False, (), first.after)
    v1_bytes = du(repo)
    on_s3 = RegenerateOptions(report_dir=s3.url("report"))  # the report on object storage
    second = regenerate(repo, world["cube1"], world["m2"], options=on_s3)
    added = du(repo) - v1_bytes
    print(f"storage: a new model (16 of 16 tiles) added {added} B to {v1_bytes} B")
    assert second.reasons == {"model": 16} and len(second.recomputed) == 16
    assert (second.before, second.committed) == (first.after, True)
    assert second.publish["tiles_written"] + second.publish["tiles_recorded"] == 16
    assert [v.number for v in list_versions(open_repository(repo))] == [2, 1]
    for name, values in _maps(repo, "1").items():  # the previous version, unchanged
        np.testing.assert_array_equal(values, v1[name])
    assert not np.array_equal(_maps(repo, "latest")["confidence"], v1["confidence"])
    assert set(second.files) == {"csv", "json", "md", "png"}
    assert all(url.startswith(s3.url("report/")) for url in second.files.values())
    uploaded = json.loads(resolve(second.files["json"]).read_text())
    assert uploaded == json.loads(json.dumps(second.changes))
    assert resolve(second.files["png"]).read_bytes()[:4] == b"\x89PNG"


def test_new_scene_recomputes_only_the_touched_tiles(
    world: dict[str, Path], repo: Path, tmp_path: Path
) -> None:
    v1 = list_versions(open_repository(repo))[0].id
    v1_bytes, v1_chunks = du(repo), du(repo / "chunks")
    plan = plan_regeneration(repo, world["cube2"], world["m1"])
    assert (plan.base, set(plan.recompute), plan.full) == (v1, TOUCHED, False)
    report_dir = tmp_path / "report"
    result = regenerate(
        repo, world["cube2"], world["m1"], options=RegenerateOptions(report_dir=report_dir)
    )
    growth, chunks = du(repo) - v1_bytes, du(repo / "chunks") - v1_chunks
    print(
        f"storage: version 1 {v1_bytes} B ({v1_chunks} B of chunks); regenerating 4 of 16 "
        f"tiles added {growth} B ({growth / v1_bytes:.1%}), {chunks} B of chunks "
        f"({chunks / v1_chunks:.1%})"
    )
    assert result.reasons == {"input": 4} and set(result.recomputed) == TOUCHED
    assert result.to_dict()["tiles_skipped"] == 12
    assert "eoseg_partial_tiles" not in open_version(repo).attrs  # the version is whole
    assert result.predict["tiles_written"] == 4  # only those were predicted
    assert result.publish["tiles_unchanged"] == 12
    # The chunk files grow by the touched tiles' (measured 25.3%: 4 of 16 tiles; icechunk
    # keeps chunks under 512 B inside its manifests, which each version rewrites);
    # manifests, snapshot and tile records add a fixed ~9 kB, large beside 32 px tiles.
    assert 0 < chunks < 0.5 * v1_chunks
    assert 0 < growth < 0.7 * v1_bytes
    old, new = _maps(repo, "v1"), _maps(repo, "latest")
    repository = open_repository(repo)
    recs_old = tile_records(repository.readonly_session(snapshot_id=v1))
    recs_new = tile_records(repository.readonly_session(snapshot_id=result.after))
    for tile in iter_tiles(open_cube(world["cube2"]).odc.geobox, TILE):
        window = (tile.ys, tile.xs)
        if tile.name in TOUCHED:
            assert recs_new[tile.name]["run_id"] != recs_old[tile.name]["run_id"]
            continue
        assert recs_new[tile.name] == recs_old[tile.name]  # same record, same digest
        for name in old:
            np.testing.assert_array_equal(new[name][window], old[name][window])
    assert result.files and Path(result.files["png"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = pd.read_csv(result.files["csv"])
    assert json.loads(Path(result.files["json"]).read_text()) == result.changes
    assert "| **sum** |" in Path(result.files["md"]).read_text()
    _check_area_table(table, result.changes or {}, old["class"], new["class"], world)


def _check_area_table(
    table: pd.DataFrame,
    doc: dict[str, Any],
    before: np.ndarray,
    after: np.ndarray,
    world: dict[str, Path],
) -> None:
    """The changes sum to zero (within 1e-9 of the map's area) and equal a direct count."""
    areas = pixel_areas(open_cube(world["cube2"]).odc.geobox, step=1) / 1e6
    assert doc["map_km2"] == pytest.approx(areas.sum(), rel=1e-9)
    assert abs(table["km2_change"].sum()) <= 1e-9 * doc["map_km2"]
    assert table["km2_before"].sum() == pytest.approx(doc["changed_km2"], rel=1e-12)
    assert table["km2_after"].sum() == pytest.approx(doc["changed_km2"], rel=1e-12)
    assert doc["changed_km2"] == pytest.approx(areas[:64, :64].sum(), rel=1e-6)  # 4 tiles
    codes = [*range(len(table) - 1), 255]  # class ids, then nodata
    expected = [areas[after == c].sum() - areas[before == c].sum() for c in codes]
    np.testing.assert_allclose(table["km2_change"], expected, rtol=1e-6, atol=1e-12)
    assert np.abs(table["km2_change"]).sum() > 0  # the new scene changed some classes


def test_a_publish_on_top_of_another_version_than_planned_is_refused(
    world: dict[str, Path], repo: Path, tmp_path: Path
) -> None:
    """A regeneration planned on version 1 finds version 2 published meanwhile: refused,
    nothing committed; run again, it plans on version 2."""
    before = list_versions(open_repository(repo))[0].id
    work = tmp_path / "work"
    result = regenerate(repo, world["cube2"], world["m1"], options=RegenerateOptions(workdir=work))
    partial = work / "regenerated.zarr"  # the 4 tiles predicted, kept in the workdir
    with pytest.raises(OutputExistsError, match="another publish came first"):
        publish_classmap(partial, repo, partial=True, base=before)
    assert list_versions(open_repository(repo))[0].id == result.after


@pytest.mark.flow
@pytest.mark.slow
def test_regenerate_flow_runs_and_reports_the_change(
    prefect_server: None, world: dict[str, Path], repo: Path, client: Any, tmp_path: Path
) -> None:
    from prefect.client.orchestration import get_client

    from eoseg.registry import register, set_production
    from flows.regenerate import regenerate as regenerate_flow

    registry = tmp_path / "registry"
    card = register(world["m1"], registry)
    set_production(registry, card.name, card.version)
    doc = regenerate_flow(
        model=card.name,
        registry=str(registry),
        cube=str(world["cube2"]),
        product=str(repo),
        scheduler=client.scheduler.address,
        report_dir=str(tmp_path / "report"),
    )
    assert doc["tiles_recomputed"] == 4 and doc["reasons"] == {"input": 4}
    assert Path(doc["files"]["csv"]).exists()

    async def artifacts() -> list[Any]:
        async with get_client() as prefect:
            return await prefect.read_artifacts()

    import asyncio

    found = [a for a in asyncio.run(artifacts()) if getattr(a, "key", None) == "regenerate"]
    assert found and "| **sum** |" in str(found[0].data) and "4 of 16 tiles" in str(found[0].data)


def test_cli_regenerates_and_prints_json(world: dict[str, Path], repo: Path, client: Any) -> None:
    from typer.testing import CliRunner

    from eoseg.cli import app

    args = ["products", "regenerate", str(repo), "--cube", str(world["cube2"])]
    args += ["--model", str(world["m1"]), "--scheduler", client.scheduler.address]
    run = CliRunner().invoke(app, [*args, "--json"])
    assert run.exit_code == 0, run.output
    doc = json.loads(run.stdout)
    assert (doc["tiles_recomputed"], doc["tiles_skipped"], doc["reasons"]) == (4, 12, {"input": 4})
    assert doc["before"] != doc["after"] and doc["committed"]
    assert abs(sum(c["km2_change"] for c in doc["changes"]["classes"])) < 1e-9
    again = CliRunner().invoke(app, args)  # nothing new since: no version
    assert again.exit_code == 0 and "up to date" in again.stdout
    missing = CliRunner().invoke(app, [*args[:3], "--cube", str(repo / "nope.zarr"), *args[5:]])
    assert missing.exit_code == 2 and "no cube store" in missing.output


def test_per_date_map_gets_a_new_date_and_is_compared_on_the_shared_one(
    world: dict[str, Path], tmp_path: Path
) -> None:
    """A --by-date cube with scene B's date added: every tile's inputs change (the cube has
    one more date), the map gets a new layout (two dates) and is published whole; the
    change report compares the date both versions have, which is unchanged."""
    a, b = world["m1"].parent / "a_20240612.tif", world["m1"].parent / "b_20240701.tif"
    one = ingest([a], tmp_path / "one.zarr", tile_size=TILE, by_date=True).path
    two = ingest([b, a], tmp_path / "two.zarr", tile_size=TILE, by_date=True).path
    model = save_untrained_model(tmp_path / "m", BANDS, time="per-date")
    repo = tmp_path / "product"
    regenerate(repo, one, model)
    result = regenerate(repo, two, model)
    assert result.reasons == {"input": 16} and result.committed
    assert open_version(repo)["class"].sizes["time"] == 2
    assert open_version(repo, "1")["class"].sizes["time"] == 1
    changes = result.changes or {}
    assert changes["date"] == "2024-06-12"
    assert all(c["km2_change"] == 0 for c in changes["classes"])
