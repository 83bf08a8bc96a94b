"""OSM sources rasterized straight onto a grid, checked pixel by pixel against hand masks.

The grid is 40 x 32 pixels of 10 m in UTM 33N with 16 px tiles (partial tiles on the east
edge). Features are drawn in metres east (``e``) and south (``s``) of the grid's top-left
corner, so pixel centres lie at ``e, s = 5, 15, 25, ...``; polygon edges sit 3 m from the
nearest centres and every centre is at least 25 cm away from a road buffer's edge.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pytest
import shapely
import zarr
from odc.geo.geobox import GeoBox
from pyproj import Transformer
from typer.testing import CliRunner

from eoseg.classes import ClassSchema, LandClass
from eoseg.cli import app
from eoseg.errors import (
    InvalidParameterError,
    NoOverlapError,
    UnreadableRasterError,
    UnreadableVectorError,
)
from eoseg.label_sources import OSM_FEATURES
from eoseg.labels import labels_template, open_labels, rasterize_labels
from eoseg.store import create_store, publish, staging_path, tile_provenance

X0, Y0, W, H, TILE = 500_000.0, 5_300_000.0, 40, 32, 16
WATER, FOREST, BUILT, ROAD = 0, 1, 2, 3
SCHEMA = ClassSchema(
    (
        LandClass(WATER, "water", "#1f78b4", ("natural=water",)),
        LandClass(FOREST, "forest", "#1b7837", ("landuse=forest", "natural=wood")),
        LandClass(BUILT, "built-up", "#d73027", ("building=*",)),
        LandClass(
            ROAD,
            "road",
            "#404040",
            ("highway=*",),
            (("highway=*", 1.0), ("highway=residential", 4.0), ("highway=primary", 8.0)),
        ),
    )
)
# (tags, ``(e, s)`` vertices, is an area). The lake has no inner ring in the forest: it is
# burnt on top because it is smaller. The primary road runs 2 m north of the grid: only
# its 8 m buffer reaches the first row of pixel centres.
RECTS = {"forest": (22, 22, 318, 288), "lake": (102, 112, 188, 198), "house": (342, 52, 378, 98)}
RESIDENTIAL, PRIMARY = ((-30.0, 247.0), (430.0, 131.0)), ((-50.0, -2.0), (450.0, -2.0))
FEATURES: list[tuple[dict[str, str], Any, bool]] = [
    ({"landuse": "forest"}, RECTS["forest"], True),
    ({"natural": "water"}, RECTS["lake"], True),
    ({"building": "yes"}, RECTS["house"], True),
    ({"highway": "residential"}, RESIDENTIAL, False),
    ({"highway": "primary"}, PRIMARY, False),
    ({"amenity": "parking"}, (202, 232, 248, 278), True),  # no rule: not burnt
    ({"landuse": "forest"}, (3000, 0, 3500, 300), True),  # 2.6 km east of the grid
]
TO_LONLAT = Transformer.from_crs(32633, 4326, always_xy=True)
runner = CliRunner()


def corners(rect: Sequence[float]) -> list[tuple[float, float]]:
    e0, s0, e1, s1 = rect
    return [(e0, s0), (e1, s0), (e1, s1), (e0, s1), (e0, s0)]


def to_utm(points: Sequence[Sequence[float]]) -> np.ndarray:
    return np.array([(X0 + e, Y0 - s) for e, s in points])


def hand_mask() -> np.ndarray:
    """The expected labels, from pixel-centre coordinates only."""
    s, e = np.mgrid[0:H, 0:W] * 10.0 + 5.0
    mask = np.full((H, W), 255, dtype="uint8")
    for name, cid in (("forest", FOREST), ("lake", WATER), ("house", BUILT)):
        e0, s0, e1, s1 = RECTS[name]
        mask[(e > e0) & (e < e1) & (s > s0) & (s < s1)] = cid
    for (a, b), metres in ((RESIDENTIAL, 4.0), (PRIMARY, 8.0)):
        (ae, as_), (be, bs) = a, b
        t = ((e - ae) * (be - ae) + (s - as_) * (bs - as_)) / ((be - ae) ** 2 + (bs - as_) ** 2)
        t = np.clip(t, 0.0, 1.0)
        dist = np.hypot(e - (ae + t * (be - ae)), s - (as_ + t * (bs - as_)))
        assert np.abs(dist - metres).min() > 0.25  # the test's own geometry: no near-ties
        mask[dist < metres] = ROAD
    return mask


def osm_xml() -> str:
    nodes: list[str] = []
    ways: list[str] = []
    for wid, (tags, shape, area) in enumerate(FEATURES, start=10):
        points = to_utm(corners(shape) if area else shape)
        lon, lat = TO_LONLAT.transform(points[:, 0], points[:, 1])
        refs = []
        for x, y in list(zip(lon, lat, strict=True))[: -1 if area else None]:
            nodes.append(f'<node id="{len(nodes) + 1}" version="1" lat="{y:.7f}" lon="{x:.7f}"/>')
            refs.append(len(nodes))
        refs += refs[:1] if area else []
        body = "".join(f'<nd ref="{r}"/>' for r in refs)
        body += "".join(f'<tag k="{k}" v="{v}"/>' for k, v in tags.items())
        ways.append(f'<way id="{wid}" version="1">{body}</way>')
    return '<?xml version="1.0"?>\n<osm version="0.6">\n' + "\n".join(nodes + ways) + "\n</osm>\n"


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The features as an OSM XML extract, a .osm.pbf and a tagged GeoParquet (UTM)."""
    import osmium

    folder = tmp_path_factory.mktemp("osm")
    xml, pbf = folder / "area.osm", folder / "area.osm.pbf"
    xml.write_text(osm_xml())
    writer = osmium.SimpleWriter(str(pbf))
    for obj in osmium.FileProcessor(str(xml)):
        writer.add(obj)
    writer.close()
    geoms = [
        shapely.Polygon(to_utm(corners(shape))) if area else shapely.LineString(to_utm(shape))
        for _, shape, area in FEATURES
    ]
    tagged = folder / "tags.parquet"
    gpd.GeoDataFrame([t for t, _, _ in FEATURES], geometry=geoms, crs=32633).to_parquet(tagged)
    return {"xml": xml, "pbf": pbf, "tagged": tagged}


@pytest.fixture(scope="module")
def grid_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny published grid store (6 tiles, the east ones 8 px wide)."""
    grid = GeoBox.from_bbox((X0, Y0 - 10 * H, X0 + 10 * W, Y0), "EPSG:32633", resolution=10)
    out = tmp_path_factory.mktemp("grid") / "grid.zarr"
    attrs = {"tile_size": TILE}
    create_store(out, labels_template(grid, TILE), product="labels", signature="tiny", attrs=attrs)
    return publish(out, overwrite=False)


@pytest.mark.parametrize("kind", ["pbf", "xml", "tagged"], ids=["pbf", "xml", "tagged-parquet"])
def test_osm_source_matches_hand_mask(
    sources: dict[str, Path], grid_path: Path, tmp_path: Path, kind: str
) -> None:
    out = tmp_path / "labels.zarr"
    result = rasterize_labels(sources[kind], grid_path, out, classes=SCHEMA)
    expected = hand_mask()
    assert np.array_equal(open_labels(out).values, expected)
    assert result.class_counts == {c: int((expected == c).sum()) for c in range(4)}
    attrs = zarr.open_group(str(out), mode="r").attrs
    assert attrs["source_kind"] == "osm" and attrs["classes"] == SCHEMA.to_dict()
    assert {r["source"] for r in tile_provenance(out)} == {str(sources[kind])}
    assert not (out / OSM_FEATURES).exists()


def test_cli_rasterizes_pbf_with_schema(
    sources: dict[str, Path], grid_path: Path, tmp_path: Path, client: object
) -> None:
    schema = tmp_path / "schema.toml"
    schema.write_text(SCHEMA.to_toml())
    out = tmp_path / "cli.zarr"
    args = ["rasterize", str(sources["pbf"]), "--classes", str(schema), "--cube", str(grid_path)]
    address = client.scheduler.address  # type: ignore[attr-defined]
    result = runner.invoke(app, [*args, "--out", str(out), "--scheduler", address, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["labels"] == str(out)
    assert np.array_equal(open_labels(out).values, hand_mask())


def test_interrupted_run_resumes_with_the_stored_features(
    sources: dict[str, Path], grid_path: Path, tmp_path: Path
) -> None:
    out, calls = tmp_path / "resume.zarr", list[int]()

    class KilledError(Exception):
        pass

    def stop_after_two(done: int, total: int) -> None:
        if done == 2:
            raise KilledError

    with pytest.raises(KilledError):
        rasterize_labels(sources["pbf"], grid_path, out, classes=SCHEMA, progress=stop_after_two)
    assert (staging_path(out) / OSM_FEATURES).exists() and not out.exists()
    calls.clear()
    result = rasterize_labels(
        sources["pbf"], grid_path, out, classes=SCHEMA, progress=lambda d, t: calls.append(t)
    )
    assert set(calls) == {4}  # the 6 tiles less the 2 written before the interruption
    expected = hand_mask()
    assert np.array_equal(open_labels(out).values, expected)
    assert result.labelled_fraction == pytest.approx((expected != 255).mean())


@pytest.mark.parametrize(
    ("schema", "source", "options", "error", "match"),
    [
        (SCHEMA, "far", {}, NoOverlapError, "none within the cube"),
        (
            ClassSchema((LandClass(0, "ice", "#ffffff", ("natural=glacier",)),)),
            "pbf",
            {},
            UnreadableVectorError,
            "no feature of .* matches",
        ),
        (
            ClassSchema((LandClass(0, "water", "#1f78b4"),)),
            "pbf",
            {},
            InvalidParameterError,
            "no OSM tag rules",
        ),
        (None, "pbf", {}, InvalidParameterError, "pass --classes"),
        (SCHEMA, "pbf", {"osm": False}, InvalidParameterError, "drop --no-osm"),
        (SCHEMA, "plain", {}, UnreadableVectorError, "neither the class-id field"),
        (SCHEMA, "ids", {}, UnreadableVectorError, r"class ids 0\.\.3"),
    ],
    ids=["outside", "no-match", "no-rules", "no-schema", "no-osm", "no-tags", "id-range"],
)
def test_bad_osm_input_is_explained(
    sources: dict[str, Path],
    grid_path: Path,
    tmp_path: Path,
    schema: ClassSchema | None,
    source: str,
    options: dict[str, bool],
    error: type[Exception],
    match: str,
) -> None:
    utm = shapely.box(X0 + 100, Y0 - 100, X0 + 200, Y0)
    if source == "far":  # the extract moved 1° north: it matches, but elsewhere
        path = tmp_path / "far.osm"
        path.write_text(osm_xml().replace('lat="47.', 'lat="48.'))
    elif source in {"plain", "ids"}:
        path = tmp_path / f"{source}.geojson"
        columns = {"name": ["x"]} if source == "plain" else {"class_id": [7]}
        gpd.GeoDataFrame(columns, geometry=[utm], crs=32633).to_file(path)
    else:
        path = sources[source]
    out = tmp_path / "bad.zarr"
    with pytest.raises(error, match=match):
        rasterize_labels(path, grid_path, out, classes=schema, **options)  # type: ignore[arg-type]
    assert not out.exists() and not staging_path(out).exists()


def test_class_ids_outside_the_schema_are_refused_in_rasters(
    grid_path: Path, tmp_path: Path
) -> None:
    import rasterio
    from rasterio.transform import from_origin

    path = tmp_path / "ids.tif"
    profile = {"driver": "GTiff", "width": W, "height": H, "count": 1, "dtype": "uint8"}
    transform = from_origin(X0, Y0, 10, 10)
    with rasterio.open(path, "w", crs="EPSG:32633", transform=transform, **profile) as dst:
        dst.write(np.full((1, H, W), 9, dtype="uint8"))
    with pytest.raises(
        UnreadableRasterError, match=r"holds 9 \(no class id\); expected whole class ids 0..3"
    ):
        rasterize_labels(path, grid_path, tmp_path / "r.zarr", classes=SCHEMA)


def test_cli_explains_an_extract_without_schema(
    sources: dict[str, Path], grid_path: Path, tmp_path: Path, client: object
) -> None:
    out = tmp_path / "x.zarr"
    args = ["rasterize", str(sources["pbf"]), "--cube", str(grid_path), "--out", str(out)]
    address = client.scheduler.address  # type: ignore[attr-defined]
    result = runner.invoke(app, [*args, "--scheduler", address])
    assert result.exit_code == 2
    assert "--classes" in result.stderr and "Traceback" not in result.output
