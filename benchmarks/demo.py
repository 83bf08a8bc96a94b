"""Time the demo pipeline stage by stage and print throughput and accuracy figures.

Usage: python benchmarks/demo.py [--workdir DIR] [--quick]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/eoseg-bench"))
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    cmd = [sys.executable, "-m", "eoseg", "demo", "--workdir", str(args.workdir), "--json"]
    if args.quick:
        cmd.append("--quick")
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(done.returncode)
    summary = json.loads(done.stdout)
    rows, cols = summary["grid"]["shape"]
    mpx = rows * cols / 1e6
    t = summary["timings"]
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    figures = {
        "grid": f"{rows} x {cols} px ({mpx:.2f} Mpx) in {summary['grid']['crs']}",
        "wall_s (incl. Prefect server start)": round(wall, 1),
        **{f"{k}_s": v for k, v in t.items()},
        "ingest_mpx_per_s": round(mpx / t["ingest"], 2),
        "predict_mpx_per_s": round(mpx / t["predict"], 3),
        "heldout_miou": round(summary["metrics"]["miou"], 4),
        "heldout_overall_accuracy": round(summary["metrics"]["overall_accuracy"], 4),
        "area_sum_relative_difference": summary["areas"]["relative_difference"],
        "peak_rss_mib (largest child process)": round(peak_mib),
    }
    for key, value in figures.items():
        sys.stdout.write(f"{key:40s} {value}\n")


if __name__ == "__main__":
    main()
