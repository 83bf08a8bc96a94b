"""Ingest throughput and peak memory per worker for a 1x and a 16x (4x wider, 4x taller) area.

Shows that the memory of a Dask worker does not depend on the area mapped: the tiles have
the same size in both runs, so the 16x area should need less than 1.5x the peak worker
memory of the 1x area. For each area the script generates the synthetic demo scenes (two
UTM zones, COG bands + cloud mask, static STAC catalog; cached under ``--workdir``), then runs
the real `eoseg.cube.ingest` on a fresh `dask.distributed.LocalCluster` of processes. Every
generation and every ingest runs in its own child process, so no run inherits the memory of
another and the client figures are the ingest's own.

Memory is measured three ways: each worker's RSS sampled from outside every
``--interval`` seconds (peak, and its increase over the idle baseline taken after the
workers imported eoseg), each worker's ``ru_maxrss`` read after the run, and the client
process's sampled RSS and ``ru_maxrss``.

Usage::

    .venv/bin/python benchmarks/ingest.py [--workdir /tmp/eoseg-bench-ingest] \\
        [--side-m 10240] [--scale 16] [--tile-size 512] [--workers 2] [--interval 0.2]

``--side-m`` is the side of the square 1x area in metres (10 m pixels); the large area is
``sqrt(--scale)`` times wider and taller.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

MIB = 1024 * 1024


def _generate(side_m: float, out: Path) -> dict[str, Any]:
    """Generate the demo scenes of a ``side_m`` x ``side_m`` area (child process)."""
    from eoseg.synthetic import DemoSpec, make_demo_data

    start = time.perf_counter()
    data = make_demo_data(out, DemoSpec(width_m=side_m, height_m=side_m))
    return {
        "catalog": str(data.catalog),
        "seconds": time.perf_counter() - start,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _warm_worker() -> int:
    """Import what an ingest task imports, so the baseline RSS includes the libraries."""
    importlib.import_module("eoseg.cube")  # and through it warp, zarr, rasterio, odc-geo
    return os.getpid()


def _worker_maxrss() -> int:
    """``ru_maxrss`` of a worker process, in bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class _Sampler(threading.Thread):
    """Samples the RSS of a set of processes (by pid) every ``interval`` seconds."""

    def __init__(self, pids: dict[str, int], interval: float) -> None:
        super().__init__(daemon=True)
        import psutil

        self.procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.interval = interval
        self.peak: dict[str, int] = dict.fromkeys(pids, 0)
        self.series: list[tuple[float, dict[str, int]]] = []
        self._stop_event = threading.Event()

    def sample(self) -> dict[str, int]:
        now = {name: p.memory_info().rss for name, p in self.procs.items()}
        for name, rss in now.items():
            self.peak[name] = max(self.peak[name], rss)
        self.series.append((time.perf_counter(), now))
        return now

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.sample()
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()
        self.sample()


def _ingest(
    catalog: Path, out: Path, tile_size: int, workers: int, interval: float
) -> dict[str, Any]:
    """Ingest ``catalog`` on a fresh local cluster and measure it (child process)."""
    from eoseg.cluster import connect
    from eoseg.cube import ingest

    with connect(None, n_workers=workers, local_directory=out.parent / "dask") as client:
        pids = {f"w{i}": pid for i, pid in enumerate(client.run(_warm_worker).values())}
        pids["client"] = os.getpid()
        sampler = _Sampler(pids, interval)
        baseline = sampler.sample()
        finished: list[float] = []
        sampler.start()
        start = time.perf_counter()
        result = ingest(
            [catalog],
            out,
            tile_size=tile_size,
            client=client,
            overwrite=True,
            progress=lambda done, total: finished.append(time.perf_counter()),
        )
        wall = time.perf_counter() - start
        sampler.stop()
        maxrss = list(client.run(_worker_maxrss).values())
    last_tile = finished[-1] if finished else start
    # Client RSS while the tiles ran, and after the last tile (publish + _valid_fraction).
    during = [s["client"] for t, s in sampler.series if t <= last_tile]
    after = [s["client"] for t, s in sampler.series if t > last_tile]
    names = [n for n in pids if n != "client"]
    return {
        "grid_shape": result.grid["shape"],
        "bands": len(result.bands),
        "tiles": result.tiles,
        "seconds": wall,
        "tile_phase_seconds": last_tile - start,
        "worker_baseline_mib": [baseline[n] / MIB for n in names],
        "worker_peak_mib": [sampler.peak[n] / MIB for n in names],
        "worker_maxrss_mib": [m / MIB for m in maxrss],
        "client_baseline_mib": baseline["client"] / MIB,
        "client_peak_tiles_mib": max(during, default=0) / MIB,
        "client_peak_after_tiles_mib": max(after, default=0) / MIB,
        "client_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "samples": len(sampler.series),
    }


def _child(args: list[str]) -> dict[str, Any]:
    """Run this script in a fresh interpreter with ``args``; return its JSON output."""
    cmd = [sys.executable, str(Path(__file__).resolve()), *args]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(f"child failed ({done.returncode}): {' '.join(cmd)}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _scenes(workdir: Path, side_m: float) -> tuple[Path, float | None]:
    """The catalog of a ``side_m`` area, generated unless cached; generation seconds."""
    folder = workdir / f"scenes_{side_m:.0f}m"
    marker = folder / "done.json"
    if marker.exists():
        return Path(json.loads(marker.read_text())["catalog"]), None
    shutil.rmtree(folder, ignore_errors=True)
    info = _child(["--child-generate", str(side_m), str(folder)])
    marker.write_text(json.dumps(info))
    return Path(info["catalog"]), info["seconds"]


def _growth(r: dict[str, Any]) -> float:
    """Largest increase of a worker's sampled RSS over its idle baseline, in MiB."""
    pairs = zip(r["worker_peak_mib"], r["worker_baseline_mib"], strict=True)
    return max(peak - base for peak, base in pairs)


def _row(label: str, side_km: float, r: dict[str, Any], cores: int) -> list[str]:
    ny, nx = r["grid_shape"]
    mpx = ny * nx / 1e6
    rate = mpx / r["seconds"]
    return [
        label,
        f"{side_km:.2f}x{side_km:.2f} km",
        f"{ny}x{nx}",
        str(r["tiles"]),
        f"{r['seconds']:.1f}",
        f"{rate:.2f}",
        f"{rate / cores:.2f}",
        f"{rate * r['bands']:.1f}",
        f"{max(r['worker_peak_mib']):.0f}",
        f"{_growth(r):.0f}",
        f"{max(r['worker_maxrss_mib']):.0f}",
        f"{r['client_peak_tiles_mib']:.0f}/{r['client_peak_after_tiles_mib']:.0f}",
    ]


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(x) for x in col) for col in zip(header, *rows, strict=True)]
    lines = [header, ["-" * w for w in widths], *rows]
    cells = (zip(line, widths, strict=True) for line in lines)
    return "\n".join("  ".join(c.rjust(w) for c, w in row) for row in cells)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/eoseg-bench-ingest"))
    parser.add_argument("--side-m", type=float, default=10240.0, help="side of the 1x area (m)")
    parser.add_argument("--scale", type=float, default=16.0, help="area ratio large/small")
    parser.add_argument("--tile-size", type=int, default=512)
    parser.add_argument("--workers", type=int, default=2, help="local worker processes")
    parser.add_argument("--interval", type=float, default=0.2, help="RSS sampling period (s)")
    parser.add_argument("--json", action="store_true", help="also print the raw figures")
    parser.add_argument("--child-generate", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--child-ingest", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child_generate:
        side, out = args.child_generate
        print(json.dumps(_generate(float(side), Path(out))))
        return
    if args.child_ingest:
        catalog, out = args.child_ingest
        figures = _ingest(Path(catalog), Path(out), args.tile_size, args.workers, args.interval)
        print(json.dumps(figures))
        return

    workdir: Path = args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    factor = math.sqrt(args.scale)
    areas = [("1x", args.side_m), (f"{args.scale:g}x", args.side_m * factor)]
    results: list[tuple[str, float, dict[str, Any]]] = []
    for label, side in areas:
        catalog, gen_s = _scenes(workdir, side)
        if gen_s is not None:
            print(f"generated {label} scenes ({side / 1000:.2f} km a side) in {gen_s:.1f} s")
        out = workdir / f"cube_{side:.0f}m.zarr"
        figures = _child(
            [
                "--child-ingest",
                str(catalog),
                str(out),
                "--tile-size",
                str(args.tile_size),
                "--workers",
                str(args.workers),
                "--interval",
                str(args.interval),
            ]
        )
        shutil.rmtree(out, ignore_errors=True)
        results.append((label, side, figures))

    cores = args.workers  # one thread per worker
    header = [
        "area",
        "extent",
        "grid px",
        "tiles",
        "s",
        "Mpx/s",
        "Mpx/s/core",
        "band-Mpx/s",
        "worker peak MiB",
        "over idle",
        "ru_maxrss",
        "client MiB tiles/after",
    ]
    rows = [_row(label, side / 1000, r, cores) for label, side, r in results]
    print(
        f"ingest, tile {args.tile_size} px, {args.workers} worker processes x 1 thread, "
        f"RSS sampled every {args.interval} s"
    )
    print(_table(rows, header))
    print(
        "Mpx/s: output grid pixels per second of the whole ingest call (planning, store, tiles,\n"
        "publish); band-Mpx/s counts each band. worker peak: largest sampled RSS of a worker;\n"
        "over idle: its increase over the worker's idle RSS after importing eoseg; client MiB:\n"
        "peak sampled RSS of the client while the tiles ran / after the last tile finished."
    )
    small, large = results[0][2], results[-1][2]
    peak_ratio = max(large["worker_peak_mib"]) / max(small["worker_peak_mib"])
    over = [_growth(small), _growth(large)]
    maxrss_ratio = max(large["worker_maxrss_mib"]) / max(small["worker_maxrss_mib"])
    verdict = "OK" if peak_ratio < 1.5 else "GROWS WITH AREA"
    print(
        f"ratio {results[-1][0]}/1x of peak worker memory: {peak_ratio:.2f} (sampled RSS), "
        f"{maxrss_ratio:.2f} (ru_maxrss), {over[1] / max(over[0], 1e-9):.2f} (increase over "
        f"idle: {over[0]:.0f} -> {over[1]:.0f} MiB); target < 1.5: {verdict}"
    )
    client_ratio = large["client_maxrss_mib"] / small["client_maxrss_mib"]
    print(
        f"client process ru_maxrss: {small['client_maxrss_mib']:.0f} -> "
        f"{large['client_maxrss_mib']:.0f} MiB (ratio {client_ratio:.2f})"
    )
    if args.json:
        print(json.dumps({label: r for label, _, r in results}, indent=1))


if __name__ == "__main__":
    main()
