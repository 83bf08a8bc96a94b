"""Products of a large generated class map: COG export throughput and peak memory.

A class map of 1x and 16x the area (4x wider and taller; `eoseg.synthetic_maps`, written
tile by tile, with no cube or model) is exported as the class COG and the confidence COG
(`eoseg.cog.write_cog`), each export in a fresh process so that its peak resident memory
(``ru_maxrss``) is its own. The baseline is a process that imports eoseg and opens the
map; the export's peak over it is what the COG writer itself holds. Streaming means that
this peak does not grow with the map: the 16x/1x ratio must stay near 1.

Seconds depend on what else runs on the machine: quote them as "machine shared" unless
measured alone. Peak memory does not depend on that.

Usage::

    python -m benchmarks.products --workdir /tmp/products [--small] [--json]

``--small``: 1x is 1024 x 1024 px (16x: 4096 x 4096); default 4096 x 4096 (16x: 16384 x
16384, 268 Mpx, about 2 minutes to generate).

Area queries (``--only query``): class areas inside a disc AOI over the middle of the same
maps (`eoseg.publish.query_table`: only the tiles the disc touches, border pixels by their
exact covered fraction, areas on the ellipsoid) beside exactextract's zonal statistics
on the class COG of the same map (what a user of exactextract alone runs), each in its
own process.

Polygons (``--only polygons``, or both by default): the same kind of map, exported as
partitioned GeoParquet (`eoseg.publish.export_classmap`: vectorised tile by tile with
per-polygon areas and confidence, merged across tile seams, written one file per tile
row) at 1x and 16x of a smaller base (1024 x 1024 px, ``--small``: 512 x 512), since the
generated map's 8-40 px patches make about 2,500 polygons a megapixel. Unlike the COG,
the polygons of the whole map are gathered in the exporting process (seams and the
min-area merge need them together), so its peak memory grows with the polygon count:
the table shows by how much.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from odc.geo.geobox import GeoBox

SCALES = (1, 16)
"""Area factors measured: 16x is 4x wider and 4x taller."""
TILE_SIZE = 1024
"""The generated maps' tiles (predict's default is 2048; one tile is read at a time)."""

_CHILD = """
import resource, sys, time
from pathlib import Path
from eoseg.classmap import open_classmap
from eoseg.cog import write_cog
mode, map_path, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
open_classmap(map_path)
start = time.perf_counter()
if mode != "baseline":
    write_cog(map_path, out, layer=mode, overwrite=True)
print(time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""

_POLYGON_CHILD = """
import resource, sys, time
from pathlib import Path
import dask
from eoseg.classmap import open_classmap
from eoseg.publish import export_classmap
mode, map_path, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
open_classmap(map_path)
start = time.perf_counter()
count = 0
if mode != "baseline":
    with dask.config.set(scheduler="threads", num_workers=2):
        count = export_classmap(map_path, polygons=out, overwrite=True)["polygon_count"]
print(count, time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""
POLYGON_BASE = 1024
"""1x side of the polygon benchmark (``--small``: half)."""

_QUERY_CHILD = """
import resource, sys, time
from pathlib import Path
from eoseg.classmap import open_classmap
mode, map_path, aoi = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
open_classmap(map_path)
start = time.perf_counter()
tiles, km2 = 0, 0.0
if mode == "eoseg":
    from eoseg.publish import query_table
    table = query_table(map_path, aoi=aoi)
    tiles, km2 = table.tiles, table.areas[0][0].total_km2
elif mode == "exactextract":
    import geopandas as gpd
    from exactextract import exact_extract
    cog = map_path.with_suffix(".tif")
    out = exact_extract(str(cog), gpd.read_file(aoi), ["unique", "frac"], output="pandas")
    km2 = float(len(out["unique"][0]))
print(tiles, km2, time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def grid_of_size(side: int) -> GeoBox:
    """A ``side`` x ``side`` grid of 10 m pixels in UTM 32N."""
    x0, y0 = 500_000.0, 5_300_000.0
    bbox = (x0, y0, x0 + side * 10.0, y0 + side * 10.0)
    return GeoBox.from_bbox(bbox, "EPSG:32632", resolution=10)


def generate(workdir: Path, side: int) -> tuple[Path, float]:
    """The generated class map of ``side`` px (reused when it exists) and seconds spent."""
    from eoseg.synthetic_maps import write_synthetic_classmap

    path = workdir / f"map-{side}.zarr"
    if path.exists():
        return path, 0.0
    start = time.perf_counter()
    write_synthetic_classmap(path, grid_of_size(side), tile_size=TILE_SIZE, seed=7)
    return path, time.perf_counter() - start


def run_child(mode: str, classmap: Path, out: Path) -> tuple[float, float]:
    """Seconds and peak RSS (MiB) of one export (or of the baseline) in its own process."""
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, mode, str(classmap), str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    seconds, kib = done.stdout.split()[-2:]
    return float(seconds), int(kib) / 1024  # ru_maxrss is in KiB on Linux


def measure(workdir: Path, base: int) -> list[dict[str, Any]]:
    """One row per scale and layer: size, seconds, Mpx/s, peak RSS and its rise over the
    baseline process."""
    rows = []
    for scale in SCALES:
        side = base * int(scale**0.5)
        classmap, made = generate(workdir, side)
        _, baseline = run_child("baseline", classmap, workdir / "none.tif")
        for layer in ("class", "confidence"):
            out = workdir / f"{layer}-{scale}x.tif"
            seconds, peak = run_child(layer, classmap, out)
            mpx = side * side / 1e6
            rows.append(
                {
                    "scale": f"{scale}x",
                    "layer": layer,
                    "pixels": f"{side} x {side}",
                    "mpx": round(mpx, 1),
                    "generate_s": round(made, 1),
                    "export_s": round(seconds, 2),
                    "mpx_per_s": round(mpx / seconds, 1),
                    "peak_mib": round(peak, 1),
                    "baseline_mib": round(baseline, 1),
                    "over_baseline_mib": round(peak - baseline, 1),
                    "cog_mib": round(out.stat().st_size / 2**20, 2),
                }
            )
            made = 0.0
    return rows


def run_polygon_child(mode: str, classmap: Path, out: Path) -> tuple[int, float, float]:
    """Polygons, seconds and peak RSS (MiB) of one polygon export in its own process."""
    done = subprocess.run(
        [sys.executable, "-c", _POLYGON_CHILD, mode, str(classmap), str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    count, seconds, kib = done.stdout.split()[-3:]
    return int(count), float(seconds), int(kib) / 1024


def measure_polygons(workdir: Path, base: int) -> list[dict[str, Any]]:
    """One row per scale: polygons, seconds, Mpx/s and peak RSS of a GeoParquet export."""
    rows = []
    for scale in SCALES:
        side = base * int(scale**0.5)
        classmap, made = generate(workdir, side)
        _, _, baseline = run_polygon_child("baseline", classmap, workdir / "none.parquet")
        out = workdir / f"polygons-{scale}x.parquet"
        count, seconds, peak = run_polygon_child("polygons", classmap, out)
        mpx = side * side / 1e6
        rows.append(
            {
                "scale": f"{scale}x",
                "pixels": f"{side} x {side}",
                "mpx": round(mpx, 1),
                "polygons": count,
                "generate_s": round(made, 1),
                "export_s": round(seconds, 2),
                "mpx_per_s": round(mpx / seconds, 2),
                "polygons_per_s": round(count / seconds),
                "peak_mib": round(peak, 1),
                "over_baseline_mib": round(peak - baseline, 1),
                "partitions": len(list(out.glob("tile_row=*"))),
            }
        )
    return rows


def disc_aoi(workdir: Path, side: int) -> Path:
    """A GeoJSON disc over the middle of the map (diameter 0.8 of its side), in lon/lat."""
    import geopandas as gpd
    import shapely

    grid = grid_of_size(side)
    x, y = grid.affine * (side / 2, side / 2)
    disc = shapely.Point(x, y).buffer(0.4 * side * 10.0, quad_segs=64)
    path = workdir / f"aoi-{side}.geojson"
    gpd.GeoDataFrame(geometry=[disc], crs=grid.crs.proj).to_crs(4326).to_file(path)
    return path


def run_query_child(mode: str, classmap: Path, aoi: Path) -> tuple[int, float, float, float]:
    """Tiles read, km² counted, seconds and peak RSS (MiB) of one query in its own process."""
    done = subprocess.run(
        [sys.executable, "-c", _QUERY_CHILD, mode, str(classmap), str(aoi)],
        capture_output=True,
        text=True,
        check=True,
    )
    tiles, km2, seconds, kib = done.stdout.split()[-4:]
    return int(tiles), float(km2), float(seconds), int(kib) / 1024


def measure_query(workdir: Path, base: int) -> list[dict[str, Any]]:
    """One row per scale and tool: class areas inside a disc AOI (exact border fractions).

    eoseg's query (`eoseg.publish.query_table`, tile by tile from the Zarr map, areas on
    the ellipsoid) beside exactextract's own zonal statistics (``unique`` + ``frac``) on
    the class COG of the same map, when the COG part wrote it (same fractions, planar).
    """
    from eoseg.cog import write_cog

    rows = []
    for scale in SCALES:
        side = base * int(scale**0.5)
        classmap, _ = generate(workdir, side)
        aoi = disc_aoi(workdir, side)
        cog = classmap.with_suffix(".tif")
        if not cog.exists():
            write_cog(classmap, cog, layer="class", overwrite=True)
        _, _, _, baseline = run_query_child("baseline", classmap, aoi)
        for tool in ("eoseg", "exactextract"):
            tiles, km2, seconds, peak = run_query_child(tool, classmap, aoi)
            mpx = side * side / 1e6
            rows.append(
                {
                    "scale": f"{scale}x",
                    "tool": tool,
                    "pixels": f"{side} x {side}",
                    "tiles_read": tiles if tool == "eoseg" else "",
                    "aoi_km2": round(km2, 3) if tool == "eoseg" else "",
                    "query_s": round(seconds, 2),
                    "map_mpx_per_s": round(mpx / seconds, 1),
                    "peak_mib": round(peak, 1),
                    "over_baseline_mib": round(peak - baseline, 1),
                }
            )
    return rows


def ratios(rows: list[dict[str, Any]]) -> dict[str, float]:
    """16x/1x of the export process's peak memory, per layer (streaming: near 1)."""
    out = {}
    for layer in ("class", "confidence"):
        one, big = (r for r in rows if r["layer"] == layer)
        out[layer] = round(big["peak_mib"] / one["peak_mib"], 2)
    return out


def format_table(rows: list[dict[str, Any]]) -> str:
    keys = list(rows[0])
    lines = [" | ".join(keys), " | ".join("---" for _ in keys)]
    lines += [" | ".join(str(r[k]) for k in keys) for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--small", action="store_true", help="1x = 1024 px a side")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument(
        "--only", choices=("cog", "polygons", "query"), help="measure one product only"
    )
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {}
    if args.only in (None, "cog"):
        rows = measure(args.workdir, 1024 if args.small else 4096)
        doc["cog"] = rows
        doc["peak_ratio_16x_1x"] = ratios(rows)
    if args.only in (None, "polygons"):
        base = POLYGON_BASE // 2 if args.small else POLYGON_BASE
        poly = measure_polygons(args.workdir, base)
        doc["polygons"] = poly
        doc["polygons_peak_over_baseline_ratio_16x_1x"] = round(
            poly[1]["over_baseline_mib"] / max(poly[0]["over_baseline_mib"], 1e-3), 2
        )
    if args.only in (None, "query"):
        doc["query"] = measure_query(args.workdir, 1024 if args.small else 4096)
    doc["ru_maxrss_self_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if args.json:
        sys.stdout.write(json.dumps(doc, indent=1) + "\n")
        return
    if "cog" in doc:
        print(format_table(doc["cog"]))
        print(f"16x/1x peak memory: {doc['peak_ratio_16x_1x']} (seconds: machine shared)")
    if "polygons" in doc:
        print(format_table(doc["polygons"]))
        ratio = doc["polygons_peak_over_baseline_ratio_16x_1x"]
        print(f"polygons: 16x/1x peak over baseline: {ratio} (seconds: machine shared)")
    if "query" in doc:
        print(format_table(doc["query"]))


if __name__ == "__main__":
    main()
