"""Regeneration: recompute the tiles of a published product that a new model or new
scenes touch, publish them as a new version, and report what changed.

Per tile, the latest version's provenance record (`eoseg.versions.tile_records`) is
compared with what a prediction now would be made of (`plan_regeneration`):

- ``model``: the model's version differs (a new model: every tile);
- ``input``: the cube tile's input signature differs (`eoseg.input_signature`: new or
  changed scenes touch it; other tiles keep theirs);
- ``settings``: the prediction settings differ;
- ``new``: the version has no record of the tile (or no version exists, or its grid or
  tiling differs from the cube's: then every tile is recomputed).

Only those tiles are predicted (`eoseg.predict.predict` with ``tiles=``, which resumes an
interrupted run), and published on top of the planned version in one commit
(`eoseg.version_publish.publish_classmap` with ``partial``): the other tiles are neither
read nor written, the previous version stays readable, and storage grows with the tiles
recomputed. The change between the two versions is reported per class
(`eoseg.change_report`).
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from distributed import Client

from eoseg.change_report import change_report, write_change_quicklook, write_change_report
from eoseg.cluster import ProgressFn
from eoseg.cube import open_cube
from eoseg.dates import date_labels
from eoseg.grid import grid_of, iter_tiles
from eoseg.inference import PredictOptions, resolve_settings
from eoseg.input_signature import INPUT_KEY
from eoseg.models.card import read_card
from eoseg.predict import predict
from eoseg.storage import resolve
from eoseg.store import tile_provenance
from eoseg.version_publish import publish_classmap
from eoseg.versions import (
    is_repository,
    list_versions,
    open_repository,
    open_version,
    read_dataset,
    tile_records,
)

log = logging.getLogger(__name__)

Reason = Literal["model", "input", "settings", "new"]


@dataclass(frozen=True, slots=True)
class RegenerationPlan:
    """Which tiles of a product to recompute, and why.

    Attributes:
        base: Snapshot id of the version planned on (None: the product has none yet).
        tiles: Names of every tile of the cube's grid.
        reasons: Tile name -> why it is recomputed (tiles not in it are kept).
        full: Every tile is predicted and the whole map published (no version yet, or
            one on another grid or tiling).
        model_version: The model's version.
    """

    base: str | None
    tiles: tuple[str, ...]
    reasons: dict[str, Reason]
    full: bool
    model_version: str

    @property
    def recompute(self) -> tuple[str, ...]:
        """The tiles to recompute, in grid order."""
        return tuple(t for t in self.tiles if t in self.reasons)

    @property
    def skipped(self) -> tuple[str, ...]:
        """The tiles kept as they are."""
        return tuple(t for t in self.tiles if t not in self.reasons)


def plan_regeneration(
    repository: str | Path,
    cube: str | Path,
    model_dir: str | Path,
    *,
    options: PredictOptions | None = None,
) -> RegenerationPlan:
    """Decide per tile whether the product's latest version must be recomputed.

    Reads only records: the product's tile records, the cube's and the model card.

    Raises:
        InputNotFoundError: No cube or model.
        InvalidStoreError: A damaged cube or model card.
        InvalidParameterError: Predict options the model cannot run.
    """
    ds = open_cube(cube)
    card = read_card(model_dir)
    grid = ds.odc.geobox
    tile_size = int(ds.attrs["tile_size"])
    names = tuple(t.name for t in iter_tiles(grid, tile_size))
    resolved = resolve_settings(card, grid.shape.yx, options or PredictOptions())
    settings = _jsonable(resolved.to_dict())
    inputs = {str(r["tile"]): str(r.get(INPUT_KEY, "")) for r in tile_provenance(cube)}
    base, records = _latest(repository)
    if base is not None:
        product = read_dataset(open_repository(repository).readonly_session(snapshot_id=base))
        same_tiling = product.attrs.get("tile_size") == tile_size
        if not (same_tiling and grid_of(product, "product") == grid):
            log.info("%s: another grid or tiling than %s: every tile", repository, cube)
            records = {}
    reasons: dict[str, Reason] = {}
    for name in names:
        why = _reason(records.get(name), card.version, inputs.get(name, ""), settings)
        if why is not None:
            reasons[name] = why
    # A new model or new settings recompute every tile: the whole map is published, so
    # that a model with other classes (another layout) can follow the previous one.
    full = base is None or not records or len(reasons) == len(names)
    log.info("%s: %d of %d tiles to recompute", repository, len(reasons), len(names))
    return RegenerationPlan(base, names, reasons, full, card.version)


def _latest(repository: str | Path) -> tuple[str | None, dict[str, dict[str, Any]]]:
    """The latest version's id and tile records; (None, {}) for no repository or version."""
    if not is_repository(repository):
        return None, {}
    versions = list_versions(repo := open_repository(repository))
    if not versions:
        return None, {}
    return versions[0].id, tile_records(repo.readonly_session(snapshot_id=versions[0].id))


def _reason(
    record: dict[str, Any] | None, model: str, signature: str, settings: Any
) -> Reason | None:
    """Why a tile with this record is recomputed (None: it is kept)."""
    if record is None:
        return "new"
    if record.get("model") != model:
        return "model"
    # A tile predicted from a cube without input signatures, or from other scenes.
    if not signature or record.get(INPUT_KEY) != signature:
        return "input"
    if _jsonable(record.get("settings")) != settings:
        return "settings"
    return None


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True, default=str))


@dataclass(frozen=True, slots=True)
class RegenerateResult:
    """What a regeneration did.

    Attributes:
        repository: The product repository.
        before: The version planned on (None when the product had none).
        after: The latest version afterwards (``before`` when nothing was recomputed).
        committed: Whether a new version was published.
        tiles: Tiles of the map.
        recomputed: Names of the tiles recomputed.
        reasons: How many tiles were recomputed for each reason.
        predict: `eoseg.predict.predict`'s report (empty when nothing was recomputed).
        publish: `eoseg.version_publish.publish_classmap`'s report (idem).
        changes: The area-change report (`eoseg.change_report.ChangeReport.to_dict`),
            when there was a version before and a new one after.
        files: The report's files (``csv``, ``json``, ``md``, ``png``), when written.
        seconds: Wall time.
    """

    repository: str
    before: str | None
    after: str | None
    committed: bool
    tiles: int
    recomputed: tuple[str, ...]
    reasons: dict[str, int]
    predict: dict[str, Any] = field(default_factory=dict)
    publish: dict[str, Any] = field(default_factory=dict)
    changes: dict[str, Any] | None = None
    files: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (what ``eoseg products regenerate --json`` prints)."""
        doc = asdict(self)
        doc["recomputed"] = list(self.recomputed)
        doc["tiles_recomputed"] = len(self.recomputed)
        doc["tiles_skipped"] = self.tiles - len(self.recomputed)
        return doc


@dataclass(frozen=True, slots=True)
class RegenerateOptions:
    """How a regeneration runs (all optional).

    Attributes:
        predict: Predict options (`eoseg.inference.PredictOptions`).
        workdir: Where the recomputed tiles are predicted before the publish; a run
            killed there resumes from its tiles when run again with the same workdir.
            Default: a temporary folder, removed afterwards.
        report_dir: Folder or fsspec URL the change report goes to (``areas.csv``,
            ``areas.json``, ``areas.md``, ``change.png``; on object storage uploaded once
            written, ``areas.json`` last); default: not written.
        tag: Also name the new version so.
        message: The new version's message.
        run_id: Recorded by every recomputed tile (default: a new id).
    """

    predict: PredictOptions | None = None
    workdir: Path | None = None
    report_dir: str | Path | None = None
    tag: str | None = None
    message: str = ""
    run_id: str = ""


def regenerate(
    repository: str | Path,
    cube: str | Path,
    model_dir: str | Path,
    *,
    options: RegenerateOptions | None = None,
    client: Client | None = None,
    progress: ProgressFn | None = None,
) -> RegenerateResult:
    """Recompute the tiles of a product that a new model or new scenes touch, publish
    them as a new version and report the change (see the module's description).

    Args:
        repository: The product repository (folder or URL); created when absent.
        cube: The cube to predict from (its tiles carry input signatures).
        model_dir: The model folder.
        options: See `RegenerateOptions`.
        client: Dask client for prediction and publish; None runs in this process.
        progress: Called with ``(done, total)`` predicted tiles.

    Raises:
        EosegError: Bad cube, model or options (`plan_regeneration`, `eoseg.predict`),
            or another publish came first (`eoseg.errors.OutputExistsError`: nothing
            published; run again).
    """
    start = time.perf_counter()
    opts = options or RegenerateOptions()
    plan = plan_regeneration(repository, cube, model_dir, options=opts.predict)
    counts: dict[str, int] = {str(k): n for k, n in Counter(plan.reasons.values()).items()}
    if not plan.reasons:
        log.info("%s: every tile is up to date with %s and %s", repository, cube, model_dir)
        return RegenerateResult(
            str(repository), plan.base, plan.base, False, len(plan.tiles), (), counts,
            seconds=time.perf_counter() - start,
        )  # fmt: skip
    run_id = opts.run_id or f"regenerate-{uuid.uuid4().hex[:12]}"
    with tempfile.TemporaryDirectory(prefix="eoseg-regenerate-") as tmp:
        folder = opts.workdir or Path(tmp)
        out = folder / "regenerated.zarr"
        predicted = predict(
            cube, Path(model_dir), out, client=client, overwrite=True, run_id=run_id,
            progress=progress, options=opts.predict,
            tiles=None if plan.full else plan.recompute,
        )  # fmt: skip
        message = opts.message or (
            f"regenerate: {len(plan.reasons)} of {len(plan.tiles)} tiles recomputed "
            f"({', '.join(f'{k} {v}' for k, v in sorted(counts.items()))}), model "
            f"{plan.model_version}"
        )
        published = publish_classmap(
            out, repository, tag=opts.tag, message=message, client=client,
            partial=not plan.full, base=plan.base,
        )  # fmt: skip
    result = RegenerateResult(
        str(repository), plan.base, published.version, published.committed,
        len(plan.tiles), plan.recompute, counts, predicted.to_dict(), published.to_dict(),
    )  # fmt: skip
    if plan.base is not None and published.committed:
        changes, files = _report(repository, plan.base, published.version, opts.report_dir)
        result = replace(result, changes=changes, files=files)
    return replace(result, seconds=round(time.perf_counter() - start, 3))


def _report(
    repository: str | Path, before: str, after: str, folder: str | Path | None
) -> tuple[dict[str, Any] | None, dict[str, str]]:
    """The area-change report, and its files when ``folder`` (a path or URL) is given. A
    per-date map is compared on the last date both versions have (no report when they
    share none)."""
    old, new = (date_labels(open_version(repository, v)) for v in (before, after))
    date = None
    if old or new:
        common = sorted(set(old) & set(new))
        if not common:
            why = "%s: versions %s and %s share no date: no change report"
            log.warning(why, repository, before, after)
            return None, {}
        date = common[-1]
    report = change_report(repository, before, after, date=date)
    if folder is None:
        return report.to_dict(), {}
    png = str(resolve(folder, "--report").child("change.png"))
    files = {"png": write_change_quicklook(repository, before, after, png, date=date)}
    return report.to_dict(), {**files, **write_change_report(report, folder)}
