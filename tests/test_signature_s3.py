"""Input signatures of scenes on object storage (eoseg.input_signature through
eoseg.storage): an object replaced at the same URL changes the signature of the tiles
its scene touches, and each file costs one HEAD request per run, not one per tile."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from eoseg.grid import iter_tiles
from eoseg.ingest_plan import choose_encoding, plan_grid, plan_jobs, time_steps
from eoseg.input_signature import input_signatures
from eoseg.scene import Scene, scene_from_files
from eoseg.scene_files import BandFile
from eoseg.storage import resolve
from tests.conftest import write_geotiff
from tests.s3 import S3, S3Server

ORIGINS = {"west": (500000.0, 5300000.0), "east": (501280.0, 5300000.0)}
"""Two scenes 64 px wide and 128 px tall, 64 px apart: on 64 px tiles the west one
touches the first two tile columns, the east one the last two (the middle one only at
its edges)."""


def _scene_on_s3(name: str, s3: S3, folder: Path, seed: int) -> Scene:
    """A two-band scene whose files are uploaded to the bucket, its hrefs their URLs."""
    rng = np.random.default_rng(seed)
    files = []
    for band in ("B02", "B03"):
        local = write_geotiff(
            folder / f"{name}_{band}.tif",
            rng.integers(0, 10000, (128, 64), dtype=np.uint16),
            origin=ORIGINS[name],
        )
        files.append(BandFile(band, str(local)))
    scene = scene_from_files(name, files)  # headers read from the local copies
    bands = []
    for b in scene.bands:
        url = s3.url(f"scenes/{Path(b.href).name}")
        resolve(url).write_bytes(Path(b.href).read_bytes())
        bands.append(dataclasses.replace(b, href=url))
    return dataclasses.replace(scene, bands=tuple(bands))


def _signatures(scenes: list[Scene]) -> tuple[dict[str, str], dict[str, set[str]]]:
    """The signature of every 64 px tile, and the tiles each scene touches."""
    grid = plan_grid(scenes, tile_size=64)
    jobs, _ = plan_jobs(scenes, time_steps(scenes, False), grid, list(iter_tiles(grid, 64)))
    touched: dict[str, set[str]] = {}
    for job in jobs:
        for scene in (s for step in job.steps for s in step):
            touched.setdefault(scene.id, set()).add(job.tile.name)
    sigs = input_signatures(
        jobs, grid, encoding=choose_encoding(scenes), composite="median", dates=None
    )
    return sigs, touched


def test_replaced_object_changes_only_the_tiles_its_scene_touches(
    s3: S3, s3_server: S3Server, tmp_path: Path
) -> None:
    scenes = [_scene_on_s3(name, s3, tmp_path, seed) for seed, name in enumerate(ORIGINS)]
    since = s3_server.mark()
    before, touched = _signatures(scenes)
    assert len(before) == 6 and len(touched["west"]) == len(touched["east"]) == 4
    heads = [line for line in s3_server.requests(since) if '"HEAD /' in line]
    for band in ("B02", "B03"):  # each file once, though each scene touches two tiles
        for name in ORIGINS:
            assert sum(f"/scenes/{name}_{band}.tif " in h for h in heads) == 1

    assert _signatures(scenes)[0] == before  # nothing replaced: the same signatures
    # Other pixels at the same URL: same size, maybe the same second; another ETag.
    other = write_geotiff(
        tmp_path / "other.tif",
        np.random.default_rng(7).integers(0, 10000, (128, 64), dtype=np.uint16),
        origin=ORIGINS["west"],
    )
    replaced = resolve(s3.url("scenes/west_B03.tif"))
    size = replaced.fs.info(replaced.path)["size"]
    replaced.write_bytes(other.read_bytes())
    assert replaced.fs.info(replaced.path)["size"] == size

    after, _ = _signatures(scenes)
    assert {t for t in before if before[t] != after[t]} == touched["west"]  # 4 of the 6
