"""Labels: class ids rasterized onto a cube's grid, tile by tile.

Sources (see `eoseg.label_sources`):

* vectors (GeoJSON, GeoPackage, GeoParquet, Shapefile; any CRS) with a class field, read
  per tile with a bounding-box filter, reprojected to the grid CRS and burnt with the
  pixel-centre rule; later features win where polygons overlap;
* a single-band GeoTIFF of class ids, resampled with nearest neighbour;
* OSM features (an ``.osm.pbf`` extract, or a vector file of OSM tag columns) classified
  by a class schema's tag rules (`eoseg.osm`): read once over the grid's footprint into
  the staging store, then burnt per tile like vectors, in `eoseg.osm`'s burn order.

A class field or raster may hold other codes or names: a code map
(`eoseg.code_map`) translates them per tile, and a text field without one maps by the
schema's class names. Values the map does not list become 255 and are reported.

Unlabelled pixels are 255 (ignore). Memory per task is one tile's raster and the
features overlapping it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import dask.array as da
import numpy as np
import pandas as pd
import rasterio
import xarray as xr
from distributed import Client
from odc.geo.geobox import GeoBox
from rasterio.enums import Resampling
from rasterio.features import rasterize
from rasterio.warp import reproject

from eoseg.classes import IGNORE_ID, ClassSchema, load_schema
from eoseg.cluster import ProgressFn, run_tiles
from eoseg.code_map import (
    CodeMap,
    CodeMapSpec,
    apply_ids,
    index_values,
    load_code_map,
    map_codes,
)
from eoseg.errors import EosegError, UnreadableRasterError, UnreadableVectorError
from eoseg.grid import Tile, crs_of, grid_coords, iter_tiles
from eoseg.label_sources import (
    OSM_FEATURES,
    LabelSource,
    check_label_source,
    prepare_osm_source,
    source_kind,
)
from eoseg.locks import output_lock
from eoseg.outputs import check_output
from eoseg.storage import Location, is_url, resolve
from eoseg.store import (
    create_store,
    done_tiles,
    open_grid_store,
    open_product,
    publish,
    staging_path,
    tile_provenance,
    write_tile,
)
from eoseg.vector_io import read_vector

__all__ = [
    "LabelSource",
    "LabelsResult",
    "labels_template",
    "open_labels",
    "open_truth",
    "rasterize_labels",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LabelsResult:
    """What a rasterize run wrote.

    Attributes:
        path: The labels store.
        labelled_fraction: Share of the grid's pixels with a class id.
        class_counts: Pixels per class id.
        seconds: Run time.
        unmapped: Pixels per source value the code map does not list (burnt as 255).
    """

    path: Path | str
    labelled_fraction: float
    class_counts: dict[int, int]
    seconds: float
    unmapped: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (what ``eoseg rasterize --json`` prints)."""
        return {
            "labels": str(self.path),
            "labelled_fraction": self.labelled_fraction,
            "class_pixels": self.class_counts,
            "unmapped_pixels": self.unmapped,
            "seconds": round(self.seconds, 2),
        }


def rasterize_labels(
    source_path: Path | str,
    grid_path: Path | str,
    out: Path | str,
    *,
    class_field: str = "class_id",
    classes: ClassSchema | Path | str | None = None,
    code_map: CodeMapSpec | CodeMap | None = None,
    osm: bool | None = None,
    client: Client | None = None,
    overwrite: bool = False,
    run_id: str = "",
    progress: ProgressFn | None = None,
    origin: str | None = None,
) -> LabelsResult:
    """Rasterize labels onto the grid of a store (a cube or a class map) and publish them.

    Every location may be a local path or an fsspec URL (`eoseg.storage`): a source on
    object storage is downloaded to a temporary file (GDAL and pyogrio read local files),
    the grid store is read and the labels store written through fsspec.

    Args:
        source_path: Vector file (any CRS) with ``class_field``, GeoTIFF of class ids or
            codes, or OSM source (``.osm.pbf``/``.osm`` extract, or a vector file of OSM
            tag columns) classified by ``classes``.
        grid_path: The cube (or class map) whose grid and tiles the labels take.
        out: Path of the labels store to publish.
        class_field: Vector field holding class ids 0..254, or the codes or names that
            ``code_map`` (or, for text, the class names of ``classes``) translates.
        classes: Class schema (or its TOML/JSON file). Required for OSM sources, whose
            class ids come from its tag rules; with class ids, ids must lie in it.
        code_map: Source value to class id (or class name of ``classes``): pairs, a
            TOML/JSON file, or ``"311=forest,511=water"`` (see `eoseg.code_map`).
            Values it does not list become 255 and are reported in ``unmapped``.
        osm: Read ``source_path`` as OSM tags (``True``) or class ids (``False``);
            ``None`` guesses: OSM for extracts, and, given ``classes``, for vector files
            without ``class_field``.
        client: Dask client; ``None`` runs the tiles in this process.
        overwrite: Replace an existing store at ``out``.
        run_id: Run id recorded in the store.
        progress: Called after each tile.
        origin: Where a downloaded ``source_path`` came from (its URL): recorded instead
            of the temporary copy (set by this function itself).

    Raises:
        InputNotFoundError: No such source, grid store or schema file.
        InvalidParameterError: An OSM source without a schema with OSM rules, a code map
            for OSM features, or an invalid code map (a target no class of the schema).
        UnreadableVectorError: Unreadable source, no class field or OSM tags, no feature
            matching the schema, class ids outside the schema, or a text field without
            schema or code map (or holding values that are no class name).
        NoOverlapError: The labels do not overlap the grid.
        OutputExistsError: ``out`` exists and ``overwrite`` is false.
    """
    remote = resolve(source_path, "SOURCE")
    if not remote.is_local:
        with remote.reading() as local:
            return rasterize_labels(
                local, grid_path, out, class_field=class_field, classes=classes,
                code_map=code_map, osm=osm, client=client, overwrite=overwrite,
                run_id=run_id, progress=progress, origin=f"{remote.url}@{_etag(remote)}",
            )  # fmt: skip
    source_path = Path(source_path)
    shown = origin or str(source_path)
    start = time.perf_counter()
    inputs = {"SOURCE": source_path, "--cube": grid_path,
              "--classes": classes if isinstance(classes, str | Path) else None}  # fmt: skip
    check_output(out, "labels", overwrite=overwrite, inputs=inputs)
    schema = load_schema(classes) if isinstance(classes, str | Path) else classes
    cube = open_grid_store(grid_path)
    grid: GeoBox = cube.odc.geobox
    tile_size = int(cube.attrs["tile_size"])
    mapping = load_code_map(code_map, schema) if code_map is not None else None
    kind = source_kind(source_path, class_field, schema, osm, mapping)
    source = (
        None
        if kind == "osm"
        else check_label_source(source_path, class_field, grid, schema=schema, code_map=mapping)
    )
    schema_doc = schema.to_dict() if schema is not None else None
    map_doc = source.code_map.to_dict() if source and source.code_map else None
    signature = hashlib.sha256(
        json.dumps(
            [
                kind,
                shown,
                source_path.stat().st_mtime if origin is None else None,
                class_field if kind != "osm" else None,
                schema_doc,
                map_doc,
                cube.attrs["eoseg_signature"],
                tile_size,
            ]
        ).encode()
    ).hexdigest()[:16]
    attrs = {
        "run_id": run_id,
        "tile_size": tile_size,
        "source": shown.rsplit("@", 1)[0] if origin else shown,
        "source_kind": kind,
        "class_field": class_field if kind != "osm" else None,
        "classes": schema_doc,
        "code_map": map_doc,
        "grid_store": str(grid_path),
    }
    template = labels_template(grid, tile_size)
    with (
        output_lock(out, run_id=run_id),
        tempfile.TemporaryDirectory(prefix="eoseg-osm-") as aside,
    ):
        staging = create_store(out, template, product="labels", signature=signature, attrs=attrs)
        # GDAL reads the classified OSM features from a local file: kept in a local staging
        # store (reused on resume), else aside for this run.
        features = Path(aside) if is_url(staging) else Path(staging)
        try:
            if source is None:  # OSM: source_kind refused it without a schema
                osm_schema = cast(ClassSchema, schema)
                source = prepare_osm_source(source_path, osm_schema, grid, features)
            todo = [t for t in iter_tiles(grid, tile_size) if t.name not in done_tiles(staging)]
            counts_per_tile = run_tiles(
                client,
                rasterize_tile,
                todo,
                progress=progress,
                source=source,
                grid=grid,
                staging=staging,
            )
        except EosegError:
            # Bad input (no matching feature, ids outside the schema): fixing it changes the
            # signature anyway, so nothing worth resuming is lost.
            resolve(staging).remove()
            raise
        resolve(staging_path(out)).child(OSM_FEATURES).remove()
        publish(out, overwrite=overwrite)
    counts, unmapped = _read_counts(out)
    total = grid.shape.y * grid.shape.x
    labelled = int(counts[:IGNORE_ID].sum())
    if not labelled:
        log.warning("%s labels no pixel of the grid of %s", shown, grid_path)
    if unmapped:
        log.warning(
            "%s: %d pixels hold values the code map does not list, burnt as %d (ignore): "
            "%s; add them to --code-map (or map them to 'ignore')",
            shown,
            sum(unmapped.values()),
            IGNORE_ID,
            unmapped,
        )
    log.info("rasterized %d tiles of %s into %s", len(counts_per_tile), shown, out)
    return LabelsResult(
        path=out,
        labelled_fraction=labelled / total if total else 0.0,
        class_counts={i: int(n) for i, n in enumerate(counts[:IGNORE_ID]) if n},
        seconds=time.perf_counter() - start,
        unmapped=unmapped,
    )


def _etag(source: Location) -> str:
    """What identifies the content of an object (its ETag, else size and time): a resumed
    run over the same source keeps its tiles, a changed source starts again."""
    info = source.fs.info(source.path)
    stamp = info.get("ETag") or f"{info.get('size')}-{info.get('LastModified', '')}"
    return str(stamp).strip('"')


def labels_template(grid: GeoBox, tile_size: int) -> xr.Dataset:
    """The lazy labels dataset (one chunk per tile) whose metadata `create_store` writes."""
    coords = grid_coords(grid)
    template = xr.Dataset(
        {"labels": (("y", "x"), da.zeros(grid.shape.yx, chunks=tile_size, dtype="uint8"))},
        coords=coords,
    )
    template["labels"].attrs.update(long_name="class id, 255 = ignore", grid_mapping="spatial_ref")
    template["labels"].encoding["fill_value"] = IGNORE_ID  # a chunk not there is no label
    return template


def _read_counts(path: Path | str) -> tuple[np.ndarray, dict[str, int]]:
    """The class histogram and unmapped-value pixels of a published store, from its tiles'
    provenance records (all tiles, also those written by an earlier, interrupted run)."""
    counts = np.zeros(256, dtype="int64")
    unmapped: dict[str, int] = {}
    for record in tile_provenance(path):
        for cid, n in record.get("class_pixels", {}).items():
            counts[int(cid)] += int(n)
        for value, n in record.get("unmapped_pixels", {}).items():
            unmapped[value] = unmapped.get(value, 0) + int(n)
    return counts, dict(sorted(unmapped.items(), key=lambda kv: -kv[1]))


def rasterize_tile(tile: Tile, *, source: LabelSource, grid: GeoBox, staging: Path) -> list[int]:
    """Burn the labels of one tile and write it; returns the tile's class histogram."""
    box = tile.geobox(grid)
    burn = _burn_vector if source.kind == "vector" else _resample_raster
    out, unmapped = burn(source, box)
    hist = np.bincount(out.ravel(), minlength=256)
    record: dict[str, Any] = {
        "source": source.origin,
        "class_pixels": {str(i): int(n) for i, n in enumerate(hist) if n},
    }
    if source.code_map is not None:
        record["unmapped_pixels"] = unmapped
    write_tile(staging, tile, {"labels": out}, record)
    return hist.tolist()


def _burn_vector(source: LabelSource, box: GeoBox) -> tuple[np.ndarray, dict[str, int]]:
    bbox = box.extent.to_crs(source.crs).boundingbox
    frame = read_vector(Path(source.path), tuple(bbox))
    out = np.full(box.shape.yx, IGNORE_ID, dtype="uint8")
    if frame.empty:
        return out, {}
    frame = frame.to_crs(crs_of(box).wkt)
    values = frame[source.class_field]
    ok = values.notna() & frame.geometry.notna() & ~frame.geometry.is_empty
    if source.code_map is not None:
        return _burn_mapped(source, source.code_map, frame.geometry[ok], values[ok], box)
    raw = values[ok]
    if raw.dtype.kind == "f" and (raw % 1 != 0).any():  # astype would truncate 1.5 to 1
        raise UnreadableVectorError(
            f"{source.origin}: field {source.class_field!r} must hold whole class ids; found "
            f"{sorted(set(raw[raw % 1 != 0].tolist()))[:5]}: round them in the file, or "
            "translate them with --code-map 'value=class,...'"
        )
    ids = raw.astype("int64")
    bad = ids[(ids < 0) | (ids >= source.num_classes)]
    if len(bad):
        raise UnreadableVectorError(
            f"{source.origin}: field {source.class_field!r} must hold class ids "
            f"0..{source.num_classes - 1}{_of_schema(source)}; found "
            f"{sorted(set(bad.tolist()))[:5]}: translate them with --code-map 'code=class,...'"
        )
    shapes = zip(frame.geometry[ok], ids, strict=True)
    burnt = rasterize(
        shapes, out_shape=box.shape.yx, transform=box.affine, fill=IGNORE_ID, dtype="uint8"
    )
    return burnt, {}


def _burn_mapped(
    source: LabelSource, mapping: CodeMap, geoms: Any, values: pd.Series, box: GeoBox
) -> tuple[np.ndarray, dict[str, int]]:
    """Burn each feature's index among the distinct values, then map those to class ids
    (later features still win; unmapped pixels are counted per value)."""
    where = f"{source.origin}: field {source.class_field!r}"
    index, ids, keys = index_values(values, mapping, where=where)
    if not len(index):
        return np.full(box.shape.yx, IGNORE_ID, dtype="uint8"), {}
    shapes = zip(geoms, index.tolist(), strict=True)
    burnt = rasterize(shapes, out_shape=box.shape.yx, transform=box.affine, fill=-1, dtype="int32")
    out, missing = apply_ids(burnt, ids)
    unmapped: dict[str, int] = {}
    for i, n in missing.items():
        unmapped[keys[i]] = unmapped.get(keys[i], 0) + n
    return out, unmapped


def _of_schema(source: LabelSource) -> str:
    return " (the classes of the schema)" if source.num_classes < IGNORE_ID else ""


def _resample_raster(source: LabelSource, box: GeoBox) -> tuple[np.ndarray, dict[str, int]]:
    if source.code_map is not None:
        return map_codes(_resample_codes(source, box), source.code_map)
    out = np.full(box.shape.yx, IGNORE_ID, dtype="uint8")
    with rasterio.open(source.path) as src:
        # Values were checked (eoseg.label_values): NaN in a float raster is no label.
        floats = np.dtype(src.dtypes[0]).kind == "f"
        reproject(
            source=rasterio.band(src, 1),
            destination=out,
            src_nodata=src.nodata if src.nodata is not None else np.nan if floats else IGNORE_ID,
            dst_transform=box.affine,
            dst_crs=crs_of(box).wkt,
            dst_nodata=IGNORE_ID,
            resampling=Resampling.nearest,
        )
    bad = np.unique(out[(out >= source.num_classes) & (out != IGNORE_ID)])
    if bad.size:
        raise UnreadableRasterError(
            f"{source.origin} holds class ids {bad[:5].tolist()}; expected "
            f"0..{source.num_classes - 1}{_of_schema(source)} or {IGNORE_ID} (ignore): map "
            "them to class ids of the schema, e.g. with --code-map '10=forest,80=water'"
        )
    return out, {}


def _resample_codes(source: LabelSource, box: GeoBox) -> np.ndarray:
    """The raster's codes on the tile's grid as floats (any integer type fits), NaN where
    the raster has nodata or does not reach."""
    codes = np.full(box.shape.yx, np.nan, dtype="float64")
    with rasterio.open(source.path) as src:
        reproject(
            source=rasterio.band(src, 1),
            destination=codes,
            src_nodata=src.nodata,
            dst_transform=box.affine,
            dst_crs=crs_of(box).wkt,
            dst_nodata=np.nan,
            resampling=Resampling.nearest,
        )
    return codes


def open_labels(path: Path | str) -> xr.DataArray:
    """Open a labels store lazily as a ``(y, x)`` uint8 DataArray (255 = ignore)."""
    ds = open_product(path, "labels")
    labels: xr.DataArray = ds["labels"]
    labels.attrs.update({k: v for k, v in ds.attrs.items() if k.startswith("eoseg_")})
    return labels


def open_truth(
    source: Path | str,
    grid_path: Path | str,
    *,
    class_field: str = "class_id",
    schema: ClassSchema | None = None,
    code_map: CodeMapSpec | CodeMap | None = None,
    workdir: Path,
) -> xr.DataArray:
    """Reference labels on the grid of ``grid_path``.

    ``source`` may be a labels store, a class-id GeoTIFF or a vector file; the latter two
    are rasterized into a store inside ``workdir``. With ``schema`` (the class map's), a
    text class field holds class names; ``code_map`` translates codes or names to classes
    as in `rasterize_labels`.
    """
    if resolve(source, "--truth").child("zarr.json").exists():
        return open_labels(source)
    out = workdir / f"truth-{hashlib.sha1(str(source).encode()).hexdigest()[:8]}.zarr"
    rasterize_labels(
        source,
        grid_path,
        out,
        class_field=class_field,
        classes=schema,
        code_map=code_map,
        osm=False,  # reference labels are never classified by OSM tag rules
        overwrite=True,
    )
    return open_labels(out)
