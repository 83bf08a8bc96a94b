"""Inference speed and memory: eoseg's model alone, eoseg end to end, and TorchGeo's loop.

One run, one scene, one set of weights (an untrained, seeded U-Net: weights do not
change the work), three measurements. The scene (`benchmarks/predict_setup.py`) is one
GeoTIFF of ``--scene-size`` px (default 2048: one default tile) that eoseg ingests into
its cube and TorchGeo reads as it is. Figures (keys of ``--json``):

``model_only_mpx_s``
    `eoseg.tile_prediction.predict_window` over every tile of the scene, with each tile's window
    (tile plus halo, eoseg's model input) already read into memory: the chips, batches,
    blending and device of eoseg's prediction, and nothing else. In this process with
    ``--threads`` torch threads, on eoseg's accelerator (``--precision``).
``end_to_end_mpx_s``
    `eoseg.predict.predict`: Zarr cube read to published Zarr class map, on eoseg's own
    local cluster (`eoseg.cluster.connect`: its workers and threads), in a child process.
    A first run on the scene loads the model on the workers and warms them up
    (``end_to_end_first_mpx_s``); the figure is the next run's (`PredictResult.seconds`:
    checks, tiles, publishing).
``torchgeo_mpx_s``
    The loop of TorchGeo's documentation (`benchmarks/torchgeo_loop.py`): `RasterDataset`
    over the scene's GeoTIFF, `GridGeoSampler` (stride = chip), `DataLoader` with
    `stack_samples`, the same U-Net class and weights in fp32 with ``--threads`` threads,
    each chip's argmax written into the output array. In its own virtual environment
    (`benchmarks/predict_torchgeo.py` installs it on first use; never an eoseg dependency).
``ratio``
    ``end_to_end_mpx_s / torchgeo_mpx_s``: eoseg against the loop users write (target
    >= 3 on 2 CPU cores). ``end_to_end_over_model_only``: the share of the model's speed
    that survives reading, scheduling and writing (target >= 0.8).
``memory_1x_mb``, ``memory_big_mb``, ``memory_big_over_1x``
    Peak resident memory of the whole process tree (the child holding client and local
    scheduler, nannies, workers; summed RSS) during the timed run on the scene, and on a
    scene of ``--scale`` times its area (default 16: 4x wider and taller) with the same
    tiles, each on a cluster sized as the CLI sizes it (the same one, right after the
    scene, where both get the same size) (target: big / 1x <= 1.2).
    The local cluster is one worker process; a one-tile scene gets one thread (all cores to
    its torch threads), a larger one a thread per core: the worker then holds a tile per
    core, whatever the area. Where the memory is: ``memory_worker_1x_mb`` /
    ``memory_worker_big_mb`` (the busiest worker's peak, ``ru_maxrss``) and
    ``memory_client_1x_mb`` / ``memory_client_big_mb`` (the process of client and local
    scheduler, which holds the plan).
    ``memory_worker_big_over_1x``: the busiest worker's peak at ``--scale`` over its peak
    at 1x (flat: nothing a worker holds grows with the area).
    ``torchgeo_memory_mb``: the same for the TorchGeo loop's process on the scene (its
    output array grows with the area).
``agreement``
    Share of pixels where TorchGeo's class equals eoseg's: a check that both run the
    same network (they differ near chip edges, where eoseg blends overlapping chips).

``--small`` (a quick run): a 512 px scene in one 512 px tile, big area x4 (16 tiles of
512 px would take minutes on 2 cores). Speed figures at that size are dominated by the
halo and by fixed costs; quote the full size.

``--plan-only`` measures scale instead (`benchmarks/predict_scale.py`): a Brazil-sized
plan (``--tiles``, default 20,000 of ``--tile-size`` px) through
`eoseg.cluster.run_tiles` with pixels skipped, against the compute of one tile measured
here (model only, or ``--tile-seconds``; ``--small``: 2,000 tiles, and the tile's compute
measured on 512 px and scaled by area).

Predict settings pass through: ``--chip-size``, ``--overlap`` and ``--precision`` go to
`eoseg.predict.predict` (and to the model-only run's `tile_input`/`predict_window`, and
its accelerator) as keyword options when given; a setting this eoseg does not have is
refused before anything runs. Without them each run uses eoseg's defaults.

On a machine shared with other jobs, pass ``--threads 1``: torch's threads wait for each
other, and two threads on two busy cores ran 8x slower than one here.

Usage (from the checkout root)::

    python -m benchmarks.predict [--small] [--json] [--chip-size 512 --overlap 32]
    python -m benchmarks.predict --plan-only [--tiles 20000] [--small]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from benchmarks import predict_scale, predict_setup, predict_torchgeo
from benchmarks.predict_eoseg import (
    SETTINGS,
    cube_tiles,
    end_to_end_child,
    model_only,
    predict_kwargs,
)
from eoseg.cluster import ClusterShape, local_shape
from eoseg.grid import DEFAULT_TILE_SIZE
from eoseg.predict import open_classmap


def predict_options(args: argparse.Namespace) -> dict[str, Any]:
    """The predict settings given on the command line (the others stay eoseg's defaults)."""
    return {k: getattr(args, k) for k in SETTINGS if getattr(args, k) is not None}


def end_to_end(base: dict[str, Any], runs: dict[str, dict[str, str]]) -> dict[str, Any]:
    """`benchmarks.predict_eoseg.end_to_end_child` in fresh processes (no memory inherited
    from this one): one per cluster size, so cubes that get the same cluster share one
    (and its warm-up); the figures of each run, by name."""
    root = Path(__file__).resolve().parents[1]
    path = os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path}
    groups: dict[ClusterShape | None, dict[str, dict[str, str]]] = {}
    for name, run in runs.items():
        tiles = 0 if base["scheduler"] else cube_tiles(Path(run["cube"]), base["tile_size"])
        size = local_shape(tiles, model=True) if tiles else None
        groups.setdefault(size, {})[name] = run
    figures: dict[str, Any] = {}
    for group in groups.values():
        spec = json.dumps({**base, "runs": list(group.values())})
        cmd = [sys.executable, "-m", "benchmarks.predict", "--end-to-end-child", spec]
        done = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"end-to-end run failed ({done.returncode}):\n{done.stderr[-3000:]}")
        docs = json.loads(done.stdout.strip().splitlines()[-1])
        figures.update(zip(group, docs, strict=True))
    return figures


def prepare(args: argparse.Namespace, side: int) -> tuple[Path, Path]:
    """Scene GeoTIFF and cube of ``side`` px under the work dir (reused when there)."""
    scene = predict_setup.write_scene(args.workdir / f"scene-{side}", side)
    cube = predict_setup.make_cube(
        scene, args.workdir / f"cube-{side}-{args.tile_size}.zarr", args.tile_size
    )
    return scene, cube


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every figure of the module docstring, as one document."""
    options = predict_options(args)
    predict_kwargs(options)  # refuses settings this eoseg does not have, before any work
    if not args.no_torchgeo and args.scene_size % args.card_chip:
        # TorchGeo's grid would overhang the scene's edge: chips padded with zeros.
        raise SystemExit(f"--scene-size {args.scene_size}: a multiple of the chip, please")
    work: Path = args.workdir
    start = time.perf_counter()
    scene, cube = prepare(args, args.scene_size)
    model_dir, card, spec = predict_setup.make_model(
        cube, work / "model", base_width=args.base_width, depth=args.depth, chip=args.card_chip
    )
    big_side = round(args.scene_size * args.scale**0.5)
    big_cube = prepare(args, big_side)[1] if args.scale > 1 else None
    doc: dict[str, Any] = {
        "scene_px": [args.scene_size, args.scene_size],
        "scale": args.scale,
        "scale_px": [big_side, big_side],
        "tile_size": args.tile_size,
        "model": {
            **card.architecture,
            "chip_size": card.chip_size,
            "gflop_per_mpx": (card.flops_per_pixel or 0.0) / 1e3,
        },
        "predict_options": options,
        "threads": args.threads,
        "torch": torch.__version__,
        "prepare_seconds": time.perf_counter() - start,
    }
    doc["model_only"] = model_only(cube, model_dir, threads=args.threads, options=options)
    base = {
        "model": str(model_dir),
        "options": options,
        "scheduler": args.scheduler,
        "gpu_threads": args.gpu_threads,
        "tile_size": args.tile_size,
        "dask_dir": str(work / "dask"),
        "warm_cube": str(cube),
        "warm_out": str(work / "warm-up.zarr"),
    }
    runs = {"end_to_end": {"cube": str(cube), "out": str(work / "map-1x.zarr")}}
    if big_cube is not None:
        runs["end_to_end_big"] = {"cube": str(big_cube), "out": str(work / "map-big.zarr")}
    doc.update(end_to_end(base, runs))
    if not args.no_torchgeo:
        doc["torchgeo"] = _torchgeo(args, scene, spec, card.chip_size)
    return summarize(doc)


def _torchgeo(
    args: argparse.Namespace, scene: Path, spec: dict[str, Any], chip: int
) -> dict[str, Any]:
    python = predict_torchgeo.ensure_venv(args.torchgeo_venv)
    out = args.workdir / "torchgeo-classes.npy"
    doc = predict_torchgeo.run_loop(
        python,
        scene,
        spec,
        chip=chip,
        batch_size=args.torchgeo_batch,
        workers=args.torchgeo_workers,
        threads=args.threads,
        out=out,
    )
    eoseg_classes = open_classmap(args.workdir / "map-1x.zarr")["class"].values
    doc["agreement"] = float(np.mean(np.load(out) == eoseg_classes))
    return doc


def summarize(doc: dict[str, Any]) -> dict[str, Any]:
    """Adds the headline figures and ratios of the module docstring to ``doc``."""
    e2e, model, tg = doc["end_to_end"], doc["model_only"], doc.get("torchgeo")
    big = doc.get("end_to_end_big")
    doc.update(
        model_only_mpx_s=model["mpx_s"],
        end_to_end_mpx_s=e2e["mpx_s"],
        end_to_end_first_mpx_s=e2e["first_mpx_s"],
        end_to_end_over_model_only=e2e["mpx_s"] / model["mpx_s"],
        memory_1x_mb=e2e["peak_tree_mb"],
        memory_big_mb=big["peak_tree_mb"] if big else None,
        memory_big_over_1x=big["peak_tree_mb"] / e2e["peak_tree_mb"] if big else None,
        memory_worker_1x_mb=max(e2e["peak_worker_mb"]),
        memory_worker_big_mb=max(big["peak_worker_mb"]) if big else None,
        # A worker's own peak: the tree also counts the workers a larger grid keeps busy.
        memory_worker_big_over_1x=max(big["peak_worker_mb"]) / max(e2e["peak_worker_mb"])
        if big
        else None,
        memory_client_1x_mb=e2e["peak_client_mb"],
        memory_client_big_mb=big["peak_client_mb"] if big else None,
        torchgeo_mpx_s=tg["mpx_s"] if tg else None,
        ratio=e2e["mpx_s"] / tg["mpx_s"] if tg else None,
        torchgeo_memory_mb=tg["peak_tree_mb"] if tg else None,
        agreement=tg["agreement"] if tg else None,
    )
    return doc


def format_report(doc: dict[str, Any]) -> str:
    """The figures as lines of text."""
    m, e2e, tg = doc["model"], doc["end_to_end"], doc.get("torchgeo")
    side, big = doc["scene_px"][0], doc["scale_px"][0]
    lines = [
        f"scene {side} x {side} px ({side * side / 1e6:.2f} Mpx) in {e2e['tiles']} "
        f"tile(s) of {doc['tile_size']} px; x{doc['scale']:g}: {big} x {big} px; U-Net "
        f"{m['base_width']}/{m['depth']}, card chip {m['chip_size']}, "
        f"{m['gflop_per_mpx']:.0f} GFLOP/Mpx per pass; torch {doc['torch']}; predict options "
        f"{doc['predict_options'] or 'eoseg defaults'}",
        f"model only   {doc['model_only_mpx_s']:8.3f} Mpx/s  (predict_window, windows in memory, "
        f"{doc['model_only']['accelerator']}, {doc['model_only']['threads']} threads)",
        f"end to end   {doc['end_to_end_mpx_s']:8.3f} Mpx/s  (predict, Zarr to Zarr, "
        f"{e2e['workers']} workers x {e2e['threads_per_worker']} threads, torch threads "
        f"{e2e['torch_threads_per_worker']}; first run with model "
        f"loading {doc['end_to_end_first_mpx_s']:.3f})",
    ]
    if tg:
        lines.append(
            f"TorchGeo     {tg['mpx_s']:8.3f} Mpx/s  (torchgeo {tg['torchgeo']}, batch "
            f"{tg['batch_size']}, {tg['loader_workers']} loader workers, fp32, {tg['threads']} "
            f"threads; classes agree with eoseg's on {100 * tg['agreement']:.1f} %)"
        )
        lines.append(f"ratio eoseg / TorchGeo {doc['ratio']:.2f} (target >= 3)")
    lines.append(f"end to end / model only {doc['end_to_end_over_model_only']:.2f} (target >= 0.8)")
    memory = f"peak memory, process tree: 1x {doc['memory_1x_mb']:.0f} MB"
    if doc["memory_big_mb"]:
        memory += (
            f", x{doc['scale']:g} {doc['memory_big_mb']:.0f} MB "
            f"({doc['memory_big_over_1x']:.2f}x, target <= 1.2)"
        )
    if tg:
        memory += f"; TorchGeo loop 1x {doc['torchgeo_memory_mb']:.0f} MB"
    lines.append(memory)
    parts = f"  of which the busiest worker 1x {doc['memory_worker_1x_mb']:.0f} MB"
    parts += f" ({e2e['workers']} workers)"
    if doc["memory_big_mb"]:
        parts += (
            f", x{doc['scale']:g} {doc['memory_worker_big_mb']:.0f} MB "
            f"({doc['end_to_end_big']['workers']} workers; "
            f"{doc['memory_worker_big_over_1x']:.2f}x)"
        )
    parts += f"; client and scheduler 1x {doc['memory_client_1x_mb']:.0f} MB"
    if doc["memory_big_mb"]:
        parts += f", x{doc['scale']:g} {doc['memory_client_big_mb']:.0f} MB"
    lines.append(parts)
    return "\n".join(lines)


def run_plan_only(args: argparse.Namespace) -> dict[str, Any]:
    """The scale figures (`benchmarks/predict_scale.py`), then the compute of one tile."""
    doc: dict[str, Any] = {"runs": []}
    for unbounded in [False] + ([True] if args.compare_unbounded else []):
        # Before the tile's compute: the client process has not computed pixels yet.
        run = predict_scale.run_plan(
            args.tiles,
            args.tile_size,
            workers=args.workers,
            max_in_flight=args.max_in_flight,
            dask_dir=args.workdir / "dask",
            unbounded=unbounded,
        )
        doc["runs"].append(run)
    keys = ("tiles", "tile_size", "gigapixels", "plan_seconds", "task_bytes", "graph_mb")
    doc.update({k: doc["runs"][0][k] for k in keys})
    doc["per_task_ms"] = doc["runs"][0]["per_task_ms"]
    if args.tile_seconds:
        doc["tile_seconds"], doc["tile_seconds_from"] = args.tile_seconds, "--tile-seconds"
    else:
        doc["tile_seconds"], doc["tile_seconds_from"] = _tile_seconds(args)
    doc["overhead_fraction"] = doc["per_task_ms"] / 1e3 / doc["tile_seconds"]
    return doc


def _tile_seconds(args: argparse.Namespace) -> tuple[float, str]:
    """Model-only seconds of one ``--tile-size`` tile (``--small``: of a 512 px tile,
    scaled by area), and how it was measured."""
    side = min(args.tile_size, 512) if args.small else args.tile_size
    cube = prepare(argparse.Namespace(**{**vars(args), "tile_size": side}), side)[1]
    model_dir = predict_setup.make_model(
        cube,
        args.workdir / "model",
        base_width=args.base_width,
        depth=args.depth,
        chip=args.card_chip,
    )[0]
    tile = model_only(cube, model_dir, threads=args.threads, options=predict_options(args))
    how = f"model only, {tile['accelerator']}, {tile['threads']} threads"
    if side != args.tile_size:
        how += f", measured on {side} px and scaled by area"
    return tile["seconds"] * (args.tile_size / side) ** 2, how


def _number(text: str) -> int | float:
    return float(text) if any(c in text for c in ".eE") else int(text)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/eoseg-bench-predict"))
    p.add_argument(
        "--small", action="store_true", help="512 px scene and tiles, area x4; plan: 2,000 tiles"
    )
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.add_argument("--scene-size", type=int, default=None, help="scene side, px (2048)")
    p.add_argument("--tile-size", type=int, default=None, help=f"({DEFAULT_TILE_SIZE})")
    p.add_argument("--scale", type=float, default=None, help="area of the large scene (16)")
    p.add_argument("--base-width", type=int, default=32)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--card-chip", type=int, default=256, help="the model card's chip size")
    p.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count() or 1,
        help="torch threads of the model-only and TorchGeo runs",
    )
    p.add_argument("--scheduler", default=None, help="end to end: 'cuda', an address, or local")
    p.add_argument("--gpu-threads", type=int, default=4, help="with --scheduler cuda")
    group = p.add_argument_group("predict settings (passed through when given)")
    group.add_argument("--chip-size", type=int, default=None)
    group.add_argument("--overlap", type=_number, default=None)
    group.add_argument("--precision", choices=("auto", "bf16", "fp32"), default=None)
    tg = p.add_argument_group("TorchGeo")
    tg.add_argument("--torchgeo-venv", type=Path, default=predict_torchgeo.DEFAULT_VENV)
    tg.add_argument("--torchgeo-batch", type=int, default=16)
    tg.add_argument("--torchgeo-workers", type=int, default=0, help="DataLoader num_workers")
    tg.add_argument("--no-torchgeo", action="store_true", help="skip the TorchGeo loop")
    plan = p.add_argument_group("scale (--plan-only)")
    plan.add_argument("--plan-only", action="store_true")
    plan.add_argument("--tiles", type=int, default=None, help="(20000; --small 2000)")
    plan.add_argument("--workers", type=int, default=None, help="(eoseg's default)")
    plan.add_argument("--max-in-flight", type=int, default=None, help="(eoseg's default)")
    plan.add_argument(
        "--compare-unbounded", action="store_true", help="also submit every tile at once"
    )
    plan.add_argument(
        "--tile-seconds", type=float, default=None, help="compute of one tile (measured)"
    )
    p.add_argument("--end-to-end-child", type=json.loads, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.scene_size is None:
        args.scene_size = 512 if args.small else 2048
    if args.scale is None:
        args.scale = 4.0 if args.small else 16.0
    if args.tile_size is None:
        args.tile_size = 512 if args.small and not args.plan_only else DEFAULT_TILE_SIZE
    if args.tiles is None:
        args.tiles = 2000 if args.small else predict_scale.BRAZIL_TILES
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.end_to_end_child is not None:
        end_to_end_child(args.end_to_end_child)
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.plan_only:
        doc = run_plan_only(args)
        text = predict_scale.format_plan(doc)
    else:
        doc = run(args)
        text = format_report(doc)
    sys.stdout.write((json.dumps(doc, indent=1, default=str) if args.json else text) + "\n")


if __name__ == "__main__":
    main()
