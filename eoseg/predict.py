"""Tiled inference with seamless overlap blending, on a Dask cluster.

Chips lie on one chip lattice of the whole grid (`eoseg.blend.Lattice`): ``--chip-size``
px every ``chip - overlap`` px, each weighted by a window that is flat in its middle and
tapers over the ``--overlap`` px it shares with its neighbours, so that the weights add up
to one and every pixel's probabilities are a smooth blend. Because the lattice is the
grid's, a pixel gets the same prediction whichever tile computes it: tiles (and
therefore the mosaic) have no seams. Each tile reads its own window of chips straight from
the cube's Zarr store, mirrored beyond the grid's edge (`eoseg.tile_prediction`, the task
each worker runs per tile).

The input is the model card's (`eoseg.model_input`): a median model maps the composite of
the cube's dates into a ``(y, x)`` class map; a per-date model maps every date, into a
``(time, y, x)`` class map on the cube's dates, each date masked by its own validity.

The model is loaded once per worker (`eoseg.inference.ModelPlugin`); tasks carry only
the model path and the run's settings (`eoseg.inference.PredictSettings`), which every
tile records with the model, cube and run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import xarray as xr
from distributed import Client
from odc.geo.geobox import GeoBox

from eoseg import __version__
from eoseg.classmap import PARTIAL_KEY, class_map_dims, classmap_template, open_classmap
from eoseg.cluster import ProgressFn, host_tasks, run_tiles
from eoseg.cube import open_cube
from eoseg.errors import InvalidParameterError
from eoseg.grid import Tile, iter_tiles
from eoseg.inference import (
    ModelPlugin,
    PredictOptions,
    PredictResult,
    PredictSettings,
    by_worker,
    get_model,
    resolve_settings,
)
from eoseg.locks import output_lock
from eoseg.models.card import ModelCard, check_bands
from eoseg.models.weights import load_model
from eoseg.outputs import check_output
from eoseg.storage import location
from eoseg.store import (
    create_store,
    done_tiles,
    publish,
    resumable,
)
from eoseg.tile_prediction import predict_tile

__all__ = [
    "ModelPlugin",
    "PredictOptions",
    "PredictResult",
    "get_model",
    "open_classmap",
    "predict",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PredictJob:
    """A predict run whose inputs are checked, ready to start (see `prepare_predict`)."""

    cube_path: Path | str
    model_dir: Path
    out: Path | str
    overwrite: bool
    card: ModelCard
    settings: PredictSettings
    tiles: tuple[Tile, ...]
    template: xr.Dataset
    attrs: dict[str, Any]
    signature: str
    megapixels: float
    dates: tuple[str, ...]
    started: float


def prepare_predict(
    cube_path: Path | str,
    model_dir: Path,
    out: Path | str,
    *,
    overwrite: bool = False,
    run_id: str = "",
    options: PredictOptions | None = None,
    tiles: Collection[str] | None = None,
) -> PredictJob:
    """Check everything a predict run needs, before any cluster starts or file is written.

    The model is loaded here, on the CPU, and verified against its card
    (`eoseg.models.load_model`): a damaged model fails with a message, not on a worker.

    ``tiles`` (tile names, e.g. ``"r0000_c0003"``) predicts only those: the published
    store is then a partial class map (attribute `PARTIAL_KEY` lists its tiles, the others
    are missing), which only `eoseg.version_publish.publish_classmap` with ``partial``
    reads, as `eoseg.regenerate` does.

    Raises:
        InvalidParameterError: Options the model cannot run (`resolve_settings`).
        OutputExistsError: ``out`` exists and ``overwrite`` is false.
        BandMismatchError: The cube lacks bands the model needs.
        InputNotFoundError: Cube or model missing.
        InvalidStoreError: Cube or model damaged.
        InvalidParameterError: ``tiles`` names tiles the grid does not have.
    """
    start = time.perf_counter()
    inputs = {"--cube": cube_path, "--model": model_dir}
    check_output(out, "classmap", overwrite=overwrite, inputs=inputs)
    cube = open_cube(cube_path)
    # On the CPU: the client never touches CUDA (dask-cuda pins workers to their GPUs).
    card = load_model(model_dir, device="cpu")[1]
    check_bands(card, tuple(str(b) for b in cube["band"].values))
    grid: GeoBox = cube.odc.geobox
    settings = resolve_settings(card, grid.shape.yx, options or PredictOptions())
    tile_size = int(cube.attrs["tile_size"])
    grid_tiles = tuple(iter_tiles(grid, tile_size))
    subset = _subset(grid_tiles, tiles)
    # Everything the pixels depend on: a staging store of other settings is not resumed.
    signature = hashlib.sha256(
        json.dumps(
            [cube.attrs["eoseg_signature"], card.version, tile_size, settings.to_dict()]
            + ([sorted(t.name for t in subset)] if tiles is not None else [])
        ).encode()
    ).hexdigest()[:16]
    dims, dates = class_map_dims(card.time, cube)
    attrs = {
        "run_id": run_id,
        "tile_size": tile_size,
        "classes": card.classes.to_dict(),
        "model": card.name,
        "model_version": card.version,
        "cube": str(cube_path),
        "cube_signature": cube.attrs["eoseg_signature"],
        "input_time": card.time,
        "predict_settings": settings.to_dict(),
    }
    if tiles is not None:
        attrs[PARTIAL_KEY] = sorted(t.name for t in subset)
    template = classmap_template(
        cube, dims, tile_size, card.classes, probabilities=settings.probabilities
    )
    return PredictJob(
        cube_path=location(cube_path),
        model_dir=Path(model_dir).resolve(),
        out=location(out),
        overwrite=overwrite,
        card=card,
        settings=settings,
        tiles=subset,
        template=template,
        attrs=attrs,
        signature=signature,
        megapixels=grid.shape.y * grid.shape.x * max(len(dates), 1) / 1e6,
        dates=dates,
        started=start,
    )


def _subset(grid_tiles: tuple[Tile, ...], names: Collection[str] | None) -> tuple[Tile, ...]:
    """The tiles named (all when ``names`` is None), in grid order.

    Raises:
        InvalidParameterError: A name that is no tile of the grid.
    """
    if names is None:
        return grid_tiles
    unknown = sorted(set(names) - {t.name for t in grid_tiles})
    if unknown:
        raise InvalidParameterError(
            f"tiles {unknown[:3]} are not tiles of the cube's grid (it has "
            f"{grid_tiles[0].name}..{grid_tiles[-1].name}): give names of its tiles"
        )
    return tuple(t for t in grid_tiles if t.name in set(names))


def run_predict(
    job: PredictJob, *, client: Client | None = None, progress: ProgressFn | None = None
) -> PredictResult:
    """Predict the tiles of a prepared run (those not written yet) and publish the map.

    An error or Ctrl-C keeps the tiles written in the staging store, which the same run
    resumes (`eoseg.store.resumable`).
    """
    run_id = str(job.attrs.get("run_id", ""))
    with output_lock(job.out, run_id=run_id):
        staging = create_store(
            job.out, job.template, product="classmap", signature=job.signature, attrs=job.attrs
        )
        todo = [t for t in job.tiles if t.name not in done_tiles(staging)]
        model_key = str(job.model_dir)
        tasks = 1
        with resumable(staging, len(job.tiles)):
            if client is not None:
                hosts = host_tasks(client)
                tasks = max(hosts.values(), default=1)
                client.register_plugin(ModelPlugin(model_key, job.settings.precision, hosts))
            reports = run_tiles(
                client,
                predict_tile,
                todo,
                progress=progress,
                cube_path=str(job.cube_path),
                model_dir=model_key,
                staging=staging,
                settings=job.settings,
                provenance=_provenance(job),
                tasks=tasks,
            )
        publish(job.out, overwrite=job.overwrite)
    return PredictResult(
        path=job.out,
        model=f"{job.card.name}@{job.card.version}",
        tiles=len(job.tiles),
        megapixels=job.megapixels,
        seconds=time.perf_counter() - job.started,
        dates=job.dates,
        tiles_written=len(reports),
        computed_megapixels=sum(r["pixels"] for r in reports) / 1e6,
        settings=job.settings.to_dict(),
        workers=by_worker(reports),
    )


def _provenance(job: PredictJob) -> dict[str, Any]:
    """What every tile records besides its place (`eoseg.store.write_tile`)."""
    return {
        "model": job.card.version,
        "cube": job.attrs["cube_signature"],
        "run_id": job.attrs.get("run_id", ""),
        "eoseg_version": __version__,
        "settings": job.settings.to_dict(),
    }


def predict(
    cube_path: Path | str,
    model_dir: Path,
    out: Path | str,
    *,
    client: Client | None = None,
    overwrite: bool = False,
    run_id: str = "",
    progress: ProgressFn | None = None,
    options: PredictOptions | None = None,
    tiles: Collection[str] | None = None,
) -> PredictResult:
    """Predict a class map for a whole cube (or its ``tiles``) and publish it:
    `prepare_predict` (which says what bad input raises and what ``tiles`` makes), then
    `run_predict`."""
    job = prepare_predict(
        cube_path, model_dir, out, overwrite=overwrite, run_id=run_id, options=options,
        tiles=tiles,
    )  # fmt: skip
    return run_predict(job, client=client, progress=progress)
