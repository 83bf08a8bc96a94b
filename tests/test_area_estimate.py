"""Tests of eoseg.area_estimate and eoseg.reference_areas: stratified area estimates.

The worked example is Olofsson et al. (2014), "Good practices for estimating area and
assessing accuracy of land change", Remote Sensing of Environment 148, 42-57, section 5:
the sample counts of their Table 8 (rows map class, columns reference class) over map
areas of 200,000 / 150,000 / 3,200,000 / 6,450,000 Landsat pixels (30 m, 0.09 ha), and
their results of p. 54, to the printed precision (accuracies to 2 decimals with 95%
half-widths, areas and half-widths to the hectare). The paper itself was not readable
offline here; the counts and the p. 54 figures are those the mapaccuracy R package
(Costa, `olofsson()` example) and PyMapAccuracy's tests reproduce from it.
"""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from typer.testing import CliRunner

from eoseg.area_estimate import Z95, AreaEstimate, stratified_estimate
from eoseg.cli import app
from eoseg.errors import InvalidParameterError
from eoseg.predict import open_classmap
from eoseg.reference_areas import estimate_areas
from eoseg.stats import class_areas
from tests.classmaps import schema_of, utm_grid, write_classmap

CLASSES = ("deforestation", "forest gain", "stable forest", "stable non-forest")
TABLE8 = np.array([[66, 0, 5, 4], [0, 55, 8, 12], [1, 0, 153, 11], [2, 1, 9, 313]])
PIXELS = np.array([200_000, 150_000, 3_200_000, 6_450_000])
HA_PER_PIXEL = 0.09


@pytest.fixture(scope="module")
def olofsson():  # type: ignore[no-untyped-def]
    return stratified_estimate(TABLE8, PIXELS * HA_PER_PIXEL, CLASSES)


def test_olofsson_2014_error_adjusted_areas(olofsson) -> None:  # type: ignore[no-untyped-def]
    # p. 54: 21,158 ± 6,158 / 11,686 ± 3,756 / 285,770 ± 15,510 / 581,386 ± 16,282 ha.
    expected = [(21_158, 6_158), (11_686, 3_756), (285_770, 15_510), (581_386, 16_282)]
    for k, (area, half) in enumerate(expected):
        assert olofsson.area[k] == pytest.approx(area, abs=0.5)
        assert Z95 * olofsson.area_se[k] == pytest.approx(half, abs=1.0)
        low, high = olofsson.ci(k)
        assert (low, high) == pytest.approx((area - half, area + half), abs=1.5)
    # Mapped deforestation was 18,000 ha: the map underestimates it.
    assert olofsson.mapped_area[0] == pytest.approx(18_000)
    assert sum(olofsson.area) == pytest.approx(sum(olofsson.mapped_area))


def test_olofsson_2014_accuracies(olofsson) -> None:  # type: ignore[no-untyped-def]
    # p. 54: user's 0.88 ± 0.07, 0.73 ± 0.10, 0.93 ± 0.04, 0.96 ± 0.02; producer's
    # 0.75 ± 0.21, 0.85 ± 0.25, 0.93 ± 0.03, 0.96 ± 0.02; overall 0.95 ± 0.02.
    ua = [(0.88, 0.07), (0.73, 0.10), (0.93, 0.04), (0.96, 0.02)]
    pa = [(0.75, 0.21), (0.85, 0.25), (0.93, 0.03), (0.96, 0.02)]
    for k in range(4):
        assert round(olofsson.users_accuracy[k], 2) == ua[k][0]
        assert round(Z95 * olofsson.users_accuracy_se[k], 2) == ua[k][1]
        assert round(olofsson.producers_accuracy[k], 2) == pa[k][0]
        assert round(Z95 * olofsson.producers_accuracy_se[k], 2) == pa[k][1]
    assert round(olofsson.overall_accuracy, 2) == 0.95
    assert round(Z95 * olofsson.overall_accuracy_se, 2) == 0.02


def test_olofsson_2014_proportions_table9(olofsson) -> None:  # type: ignore[no-untyped-def]
    # Estimated area proportions p_ij = W_i n_ij / n_i. (eq. 4), worked out by hand.
    p = np.array(olofsson.proportions)
    assert p[0] == pytest.approx([0.0176, 0.0, 0.0013, 0.0011], abs=5e-5)
    assert p[3] == pytest.approx([0.0040, 0.0020, 0.0179, 0.6212], abs=5e-5)
    assert p.sum() == pytest.approx(1.0)


def test_hand_computed_two_classes() -> None:
    # W = (0.6, 0.4) over 100 units, 10 points per stratum, counts [[8, 2], [1, 9]]:
    # p = [[.48, .12], [.04, .36]]; area_0 = 100 * .52; V(p_.0) = .36*.8*.2/9 + .16*.1*.9/9
    # = .008; U_0 = .8 (V = .8*.2/9); P_0 = .48/.52; OA = .84, V = .36*.16/9 + .16*.09/9.
    e = stratified_estimate(np.array([[8, 2], [1, 9]]), np.array([60.0, 40.0]), ("a", "b"))
    assert e.area == pytest.approx((52.0, 48.0))
    assert e.area_se == pytest.approx((100 * 0.008**0.5, 100 * 0.008**0.5))
    assert e.users_accuracy == pytest.approx((0.8, 0.9))
    assert e.users_accuracy_se[0] == pytest.approx((0.8 * 0.2 / 9) ** 0.5)
    assert e.producers_accuracy[0] == pytest.approx(0.48 / 0.52)
    assert e.overall_accuracy == pytest.approx(0.84)
    assert e.overall_accuracy_se == pytest.approx(0.008**0.5)
    # PA's variance (eq. 7) by hand: N_hat_.0 = 60*.8 + 40*.1 = 52.
    own = 60**2 * (1 - 0.48 / 0.52) ** 2 * 0.8 * 0.2 / 9
    other = 40**2 * 0.1 * 0.9 / 9
    expected = ((own + (0.48 / 0.52) ** 2 * other) / 52**2) ** 0.5
    assert e.producers_accuracy_se[0] == pytest.approx(expected)


def test_perfect_sample_keeps_mapped_areas() -> None:
    e = stratified_estimate(np.diag([20, 30, 25]), np.array([5.0, 3.0, 2.0]), ("a", "b", "c"))
    assert e.area == pytest.approx(e.mapped_area)
    assert e.area_se == pytest.approx((0.0, 0.0, 0.0))
    assert e.overall_accuracy == 1.0


def test_thin_stratum_is_refused() -> None:
    with pytest.raises(InvalidParameterError, match=r"b \(1\).*--min-per-class"):
        stratified_estimate(np.array([[5, 0], [0, 1]]), np.array([1.0, 1.0]), ("a", "b"))


def test_to_dict_is_json_ready(olofsson) -> None:  # type: ignore[no-untyped-def]
    d = olofsson.to_dict(unit="ha")
    assert d["classes"][0]["adjusted_ha"] == pytest.approx(21_157.76, abs=0.01)
    assert d["classes"][0]["adjusted_ha_ci95"][1] > d["classes"][0]["adjusted_ha"]
    assert d["sample_points"] == 640
    assert d["confidence"] == 0.95


# --- from paths: a class map store, a labelled sample, regions ---------------------------

NAMES = ("forest", "water", "crop")


@pytest.fixture(scope="module")
def mapped(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(7)
    classes = rng.choice(3, size=(64, 64), p=[0.6, 0.1, 0.3]).astype(np.uint8)
    classes[:3, :] = 255
    path = tmp_path_factory.mktemp("areas") / "map.zarr"
    return write_classmap(path, classes, utm_grid(64, 64), schema_of(NAMES))


def _labelled(mapped: Path, out: Path, wrong_every: int = 5) -> gpd.GeoDataFrame:
    """20 points per class at pixel centres; every ``wrong_every``-th labelled 'crop'."""
    cls = open_classmap(mapped)["class"].values
    grid = utm_grid(64, 64)
    rows, cols = [], []
    for k in range(3):
        r, c = np.nonzero(cls == k)
        rows += list(r[::7][:20])
        cols += list(c[::7][:20])
    rows_a, cols_a = np.array(rows), np.array(cols)
    x, y = grid.affine * (cols_a + 0.5, rows_a + 0.5)
    ref = np.array([NAMES[k] for k in cls[rows_a, cols_a]], dtype=object)
    ref[::wrong_every] = "crop"
    frame = gpd.GeoDataFrame(
        {"id": np.arange(len(x)), "reference": ref},
        geometry=gpd.points_from_xy(x, y),
        crs=grid.crs.proj,
    )
    frame.to_file(out)
    return frame


def test_estimate_areas_from_paths(mapped: Path, tmp_path: Path) -> None:
    frame = _labelled(mapped, tmp_path / "sample.gpkg")
    result = estimate_areas(mapped, tmp_path / "sample.gpkg")
    cls = open_classmap(mapped)["class"]
    mapped_km2 = class_areas(cls, schema_of(NAMES)).class_km2
    assert result.estimate.mapped_area == pytest.approx(mapped_km2, rel=1e-9)
    values = cls.values
    grid = utm_grid(64, 64)
    col, row = ~grid.affine * (frame.geometry.x.values, frame.geometry.y.values)
    m = values[row.astype(int), col.astype(int)]
    r = np.array([NAMES.index(v) for v in frame["reference"]])
    counts = np.zeros((3, 3), dtype=int)
    np.add.at(counts, (m, r), 1)
    expected = stratified_estimate(counts, np.array(mapped_km2), NAMES)
    _same(result.estimate, expected)
    assert result.regions == {}
    assert sum(result.estimate.area) == pytest.approx(sum(mapped_km2))


def test_estimate_areas_per_region(mapped: Path, tmp_path: Path) -> None:
    frame = _labelled(mapped, tmp_path / "sample.gpkg")
    grid = utm_grid(64, 64)
    west = shapely.box(500_000, 5_299_360, 500_320, 5_300_000)  # columns 0..31
    regions = gpd.GeoDataFrame(
        {"name": ["west", "tiny"]},
        geometry=[west, shapely.box(500_600, 5_299_360, 500_640, 5_299_400)],
        crs=grid.crs.proj,
    )
    regions.to_file(tmp_path / "regions.gpkg")
    result = estimate_areas(mapped, tmp_path / "sample.gpkg", regions=tmp_path / "regions.gpkg")
    assert set(result.regions) == {"tiny", "west"}
    assert result.regions["tiny"] is None and "fewer than 2" in result.skipped["tiny"]
    cls = open_classmap(mapped)["class"]
    inside = frame[frame.geometry.x < 500_320]
    west_km2 = class_areas(cls, schema_of(NAMES), aoi=regions.iloc[[0]]).class_km2
    col, row = ~grid.affine * (inside.geometry.x.values, inside.geometry.y.values)
    m = cls.values[row.astype(int), col.astype(int)]
    r = np.array([NAMES.index(v) for v in inside["reference"]])
    counts = np.zeros((3, 3), dtype=int)
    np.add.at(counts, (m, r), 1)
    got = result.regions["west"]
    assert got is not None
    assert got.sample_counts == tuple(tuple(int(v) for v in row_) for row_ in counts)
    assert got.mapped_area == pytest.approx(west_km2, rel=1e-9)
    _same(got, stratified_estimate(counts, np.array(got.mapped_area), NAMES))
    assert result.to_dict()["regions"]["tiny"]["skipped"].startswith("mapped classes")


def test_csv_with_lonlat_only(mapped: Path, tmp_path: Path) -> None:
    frame = _labelled(mapped, tmp_path / "sample.gpkg")
    ll = frame.to_crs(4326)
    table = pd.DataFrame(
        {"lon": ll.geometry.x, "lat": ll.geometry.y, "label": list(frame["reference"])}
    )
    table.to_csv(tmp_path / "sample.csv", index=False)
    got = estimate_areas(mapped, tmp_path / "sample.csv", field="label")
    _same(got.estimate, estimate_areas(mapped, tmp_path / "sample.gpkg").estimate)


def _same(a: AreaEstimate, b: AreaEstimate) -> None:
    """Equal estimates, to float rounding of the summed pixel areas."""
    assert a.sample_counts == b.sample_counts and a.class_names == b.class_names
    for name in ("mapped_area", "area", "area_se", "users_accuracy", "producers_accuracy"):
        assert getattr(a, name) == pytest.approx(getattr(b, name), rel=1e-9, nan_ok=True)
    assert a.overall_accuracy == pytest.approx(b.overall_accuracy, rel=1e-12)
    assert a.overall_accuracy_se == pytest.approx(b.overall_accuracy_se, rel=1e-9)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.assign(reference=[None, *list(t["reference"][1:])]), "1 of 60 .*no reference"),
        (lambda t: t.assign(reference=["shrub", *list(t["reference"][1:])]), r"\['shrub'\]"),
        (lambda t: t.assign(x=t["x"] + 1e5), "60 points .* outside the class map"),
    ],
    ids=["unlabelled", "unknown-label", "off-map"],
)
def test_bad_samples_are_refused(mapped: Path, tmp_path: Path, edit, message: str) -> None:  # type: ignore[no-untyped-def]
    frame = _labelled(mapped, tmp_path / "sample.gpkg")
    table = pd.DataFrame(
        {"x": frame.geometry.x, "y": frame.geometry.y, "reference": frame["reference"]}
    )
    edit(table).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(InvalidParameterError, match=message):
        estimate_areas(mapped, tmp_path / "bad.csv")


def test_cli_sample_then_areas(mapped: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "sample.csv"
    args = ["--n", "45", "--min-per-class", "10"]
    drawn = runner.invoke(app, ["sample", str(mapped), "--out", str(out), *args])
    assert drawn.exit_code == 0, drawn.output
    table = pd.read_csv(out)
    table["reference"] = table["map_class_name"]  # a perfect map, as a labeller would say
    table.loc[table.index[:3], "reference"] = "water"
    table.to_csv(out, index=False)
    result = runner.invoke(app, ["areas", str(mapped), "--reference", str(out), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["sample_points"] == 45
    counts = np.zeros((3, 3), dtype=int)
    for m, r in zip(table["map_class"], table["reference"], strict=True):
        counts[m, NAMES.index(r)] += 1
    assert doc["sample_counts"] == counts.tolist()
    mapped_km2 = [c["mapped_km2"] for c in doc["classes"]]
    expected = stratified_estimate(counts, np.array(mapped_km2), NAMES)
    for k, c in enumerate(doc["classes"]):
        assert c["adjusted_km2"] == pytest.approx(expected.area[k], rel=1e-12)
        assert c["adjusted_km2_ci95"] == pytest.approx(list(expected.ci(k)), rel=1e-12)
    console = runner.invoke(app, ["areas", str(mapped), "--reference", str(out)])
    assert console.exit_code == 0 and "95% CI" in console.output
    assert f"{expected.area[1]:,.4f}" in console.output
