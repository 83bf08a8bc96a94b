from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
from pyproj import Geod
from shapely.geometry import LineString, Polygon

from eoseg.classes import ClassSchema, LandClass
from eoseg.errors import InvalidParameterError, OutputExistsError, UnreadableVectorError
from eoseg.osm import osm_features, write_osm_labels

SCHEMA = ClassSchema(
    (
        LandClass(0, "water", "#1f78b4", ("natural=water", "waterway=riverbank")),
        LandClass(1, "forest", "#1b7837", ("landuse=forest", "natural=wood")),
        LandClass(2, "grassland", "#a6dba0", ("landuse=meadow",)),
        LandClass(3, "cropland", "#fee08b", ("landuse=farmland",)),
        LandClass(4, "built-up", "#d73027", ("building=*",)),
        LandClass(
            5,
            "road",
            "#404040",
            ("highway=*",),
            (("highway=*", 4.0), ("highway=primary", 8.0)),
        ),
    )
)
LON0, LAT0 = 12.0, 48.0
M_LON, M_LAT = 1 / 74_600, 1 / 111_200  # degrees per metre near 48°N (roughly)


def ring(x0: float, y0: float, x1: float, y1: float) -> list[tuple[float, float]]:
    """A closed square in metres east/north of a corner, as lon/lat."""
    pts = [(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)]
    return [(LON0 + x * M_LON, LAT0 + y * M_LAT) for x, y in pts]


# (tags, coordinates in lon/lat, closed?) of each way; the forest is a relation.
WATER = ring(300, 300, 500, 500)  # a lake inside the forest, no inner ring
FOREST_OUTER, FOREST_INNER = ring(0, 0, 1000, 1000), ring(700, 700, 900, 900)
ROAD = [(LON0 + x * M_LON, LAT0 + 600 * M_LAT) for x in (-200, 400, 1200)]  # 1400 m
UNTAGGED = ring(100, 100, 150, 150)
TRACK = [(LON0 + 600 * M_LON, LAT0 + y * M_LAT) for y in (0, 300)]  # highway=* (4 m)


def osm_xml(origin: tuple[float, float] = (LON0, LAT0)) -> str:
    """OSM XML with the features above, shifted so (LON0, LAT0) lands on ``origin``."""
    dx, dy = origin[0] - LON0, origin[1] - LAT0
    nodes: list[str] = []
    ways: list[str] = []

    def way(wid: int, coords: list[tuple[float, float]], tags: dict[str, str]) -> None:
        refs = []
        for lon, lat in coords[:-1] if coords[0] == coords[-1] else coords:
            nid = len(nodes) + 1
            nodes.append(
                f'<node id="{nid}" version="1" lat="{lat + dy:.7f}" lon="{lon + dx:.7f}"/>'
            )
            refs.append(nid)
        if coords[0] == coords[-1]:
            refs.append(refs[0])
        body = "".join(f'<nd ref="{r}"/>' for r in refs)
        body += "".join(f'<tag k="{k}" v="{v}"/>' for k, v in tags.items())
        ways.append(f'<way id="{wid}" version="1">{body}</way>')

    way(10, WATER, {"natural": "water"})
    way(11, FOREST_OUTER, {})
    way(12, FOREST_INNER, {})
    way(13, ROAD, {"highway": "primary", "name": "B 15"})
    way(14, UNTAGGED, {})
    way(15, TRACK, {"highway": "track"})
    way(16, ring(0, 2000, 50, 2050), {"amenity": "parking"})  # tagged, but no rule
    relation = (
        '<relation id="100" version="1"><member type="way" ref="11" role="outer"/>'
        '<member type="way" ref="12" role="inner"/><tag k="type" v="multipolygon"/>'
        '<tag k="landuse" v="forest"/></relation>'
    )
    tree = (
        f'<node id="999" version="1" lat="{LAT0}" lon="{LON0}"><tag k="natural" v="water"/></node>'
    )
    body = "\n".join([*nodes, tree, *ways, relation])
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<osm version="0.6">\n{body}\n</osm>\n'


def write_extract(path: Path, origin: tuple[float, float] = (LON0, LAT0)) -> Path:
    xml = path.with_suffix("").with_suffix(".osm") if path.name.endswith(".pbf") else path
    xml.write_text(osm_xml(origin))
    if path.name.endswith(".pbf"):
        import osmium

        writer = osmium.SimpleWriter(str(path))
        for obj in osmium.FileProcessor(str(xml)):
            writer.add(obj)
        writer.close()
    return path


def geodesic_area(geom: object) -> float:
    # normalize() orients rings consistently, so holes are subtracted.
    return abs(Geod(ellps="WGS84").geometry_area_perimeter(shapely.normalize(geom))[0])


def check_features(frame: gpd.GeoDataFrame) -> None:
    assert frame.crs.to_epsg() == 4326
    assert list(frame.columns) == ["class_id", "geometry"]
    # Burn order: forest (largest area), lake on top of it, then the roads.
    assert frame["class_id"].tolist() == [1, 0, 5, 5]
    forest, water = frame.geometry.iloc[0], frame.geometry.iloc[1]
    assert geodesic_area(forest) == pytest.approx(1000**2 - 200**2, rel=0.02)
    assert geodesic_area(water) == pytest.approx(200**2, rel=0.02)
    areas = sorted(geodesic_area(g) for g in frame.geometry.iloc[2:])
    # Buffers are metres on each side: area ≈ length x 2 x buffer (plus round caps).
    assert areas[0] == pytest.approx(300 * 2 * 4.0, rel=0.04)
    assert areas[1] == pytest.approx(1400 * 2 * 8.0, rel=0.03)
    assert all(g.geom_type in {"Polygon", "MultiPolygon"} and g.is_valid for g in frame.geometry)


@pytest.mark.parametrize("name", ["area.osm", "area.osm.pbf"], ids=["xml", "pbf"])
def test_osm_extract_is_classified_and_buffered(tmp_path: Path, name: str) -> None:
    frame = osm_features(write_extract(tmp_path / name), SCHEMA)
    check_features(frame)


def test_tagged_geojson_gives_the_same_features(tmp_path: Path) -> None:
    rows = [
        ({"natural": "water"}, Polygon(WATER)),
        ({"landuse": "forest"}, Polygon(FOREST_OUTER, [FOREST_INNER])),
        ({"highway": "primary"}, LineString(ROAD)),
        ({"highway": "track"}, LineString(TRACK)),
        ({}, Polygon(UNTAGGED)),
        ({"natural": "water"}, LineString(WATER)),  # a line without buffer rule: dropped
        ({"landuse": "no-rule"}, Polygon(ring(0, 2000, 50, 2050))),
    ]
    frame = gpd.GeoDataFrame([r[0] for r in rows], geometry=[r[1] for r in rows], crs=4326)
    path = tmp_path / "tags.geojson"
    frame.to_crs(32632).to_file(path)  # any CRS
    got = osm_features(path, SCHEMA)
    check_features(got)
    expected = osm_features(write_extract(tmp_path / "a.osm"), SCHEMA)
    np.testing.assert_allclose(
        [geodesic_area(g) for g in got.geometry],
        [geodesic_area(g) for g in expected.geometry],
        rtol=1e-3,
    )


def test_gdal_other_tags_column_is_read(tmp_path: Path) -> None:
    frame = gpd.GeoDataFrame(
        {"other_tags": ['"natural"=>"water","name"=>"See"', None]},
        geometry=[Polygon(WATER), Polygon(UNTAGGED)],
        crs=4326,
    )
    frame.to_file(tmp_path / "gdal.gpkg")
    assert osm_features(tmp_path / "gdal.gpkg", SCHEMA)["class_id"].tolist() == [0]


def test_bbox_keeps_intersecting_features(tmp_path: Path) -> None:
    path = write_extract(tmp_path / "a.osm")
    west, south = LON0 + 350 * M_LON, LAT0 + 350 * M_LAT
    frame = osm_features(path, SCHEMA, bbox=(west, south, west + 1e-4, south + 1e-4))
    assert frame["class_id"].tolist() == [1, 0]
    with pytest.raises(InvalidParameterError, match="west < east"):
        osm_features(path, SCHEMA, bbox=(1, 1, 0, 0))


@pytest.mark.parametrize("name", ["tags.gpkg", "tags.parquet"])
def test_tagged_vector_is_read_by_bbox(tmp_path: Path, name: str) -> None:
    """A bbox read of a tagged file (in a projected CRS) reads only features near the bbox
    and only the tag columns the schema uses: a country file is never read whole."""
    from eoseg.osm import _read_tagged_vector
    from eoseg.vector_io import read_vector

    near = Polygon(WATER)
    far = Polygon(ring(50_000, 50_000, 50_100, 50_100))  # 50 km away
    frame = gpd.GeoDataFrame(
        {"natural": ["water", "water"], "note": ["a", "b"]}, geometry=[near, far], crs=4326
    ).to_crs(32632)
    path = tmp_path / name
    if name.endswith(".parquet"):
        frame.to_parquet(path, write_covering_bbox=True)
    else:
        frame.to_file(path)
    west, south = LON0 + 350 * M_LON, LAT0 + 350 * M_LAT
    read = _read_tagged_vector(path, SCHEMA, (west, south, west + 1e-3, south + 1e-3))
    assert len(read) == 1
    assert len(_read_tagged_vector(path, SCHEMA)) == 2
    assert list(read_vector(path, columns=["natural"]).columns) == ["natural", "geometry"]
    assert osm_features(path, SCHEMA, bbox=(west, south, west + 1e-3, south + 1e-3))[
        "class_id"
    ].tolist() == [0]


def test_write_labels_and_rasterize(cube_path: Path, tmp_path: Path) -> None:
    from eoseg.cube import open_cube
    from eoseg.labels import open_labels, rasterize_labels

    grid = open_cube(cube_path).odc.geobox
    b = grid.extent.to_crs("EPSG:4326").boundingbox
    source = write_extract(tmp_path / "cube.osm.pbf", origin=(b.left, b.bottom))
    out = write_osm_labels(source, SCHEMA, tmp_path / "osm.gpkg")
    with pytest.raises(OutputExistsError, match="overwrite"):
        write_osm_labels(source, SCHEMA, out)
    rasterize_labels(out, cube_path, tmp_path / "osm.zarr")
    labels = open_labels(tmp_path / "osm.zarr").values
    counts = {int(k): int(v) for k, v in zip(*np.unique(labels, return_counts=True), strict=True)}
    assert set(counts) == {0, 1, 5, 255}
    pixel = abs(grid.resolution.x * grid.resolution.y)
    assert counts[0] * pixel == pytest.approx(200**2, rel=0.1)  # the lake, on top of forest
    assert counts[5] * pixel > 1000 * 16 * 0.8  # the primary road, on top of both


def test_bad_inputs_are_explained(tmp_path: Path) -> None:
    bad = tmp_path / "bad.osm.pbf"
    bad.write_bytes(b"not a pbf")
    with pytest.raises(UnreadableVectorError, match="not an OSM file"):
        osm_features(bad, SCHEMA)
    plain = tmp_path / "plain.geojson"
    gpd.GeoDataFrame({"class_id": [1]}, geometry=[Polygon(WATER)], crs=4326).to_file(plain)
    with pytest.raises(UnreadableVectorError, match="none of the OSM tag columns"):
        osm_features(plain, SCHEMA)
    bare = ClassSchema((LandClass(0, "water", "#1f78b4"),))
    with pytest.raises(InvalidParameterError, match="no OSM tag rules"):
        osm_features(write_extract(tmp_path / "a.osm"), bare)
    empty = ClassSchema((LandClass(0, "ice", "#ffffff", ("natural=glacier",)),))
    with pytest.raises(UnreadableVectorError, match="no feature of"):
        write_osm_labels(tmp_path / "a.osm", empty, tmp_path / "x.gpkg")
    assert not (tmp_path / "x.gpkg").exists()
