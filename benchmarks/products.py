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
16384, 268 Mpx, about 2 minutes to generate). Other parts of issue 13 (polygons, area
queries) may add their own sections here.
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
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    rows = measure(args.workdir, 1024 if args.small else 4096)
    doc = {
        "cog": rows,
        "peak_ratio_16x_1x": ratios(rows),
        "ru_maxrss_self_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if args.json:
        sys.stdout.write(json.dumps(doc, indent=1) + "\n")
    else:
        print(format_table(rows))
        print(f"16x/1x peak memory: {doc['peak_ratio_16x_1x']} (seconds: machine shared)")


if __name__ == "__main__":
    main()
