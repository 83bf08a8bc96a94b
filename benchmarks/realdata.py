"""The real samples through the CLI as a new user runs them, beside a random forest.

For each sample in ``../shared/data/real`` that carries land-cover labels, runs ``eoseg
ingest``, ``rasterize``, ``train``, ``predict`` and ``evaluate`` with default options
(no size flags: chip size, blocks, chip counts and network follow from the labels and
the device). Should default training fail, it is retried with the fewest explicit options
that make it run (smaller chips and U-Net, then ``min_labelled = 0`` from a ``--config``
file; the ladder the samples needed before the defaults derived from the labels), and
each failure is recorded with its message. Then `benchmarks/baseline.py` trains a per-pixel
random forest on the same cube and labels and scores both maps on the same held-out truth.

* ``eolearn_slovenia``: three dates ingested with ``--composite median`` into one
  median composite (101x100 px on ``lulc.tif``'s grid); the forest reads the same
  median. 35 polygons; held-out truth = ``lulc.tif`` with every pixel a training
  polygon touches masked.
* ``amazon_s2_l2a``: 25 polygons on an EPSG:4326 grid, split per class (seeded) into
  ~2/3 training and ~1/3 held-out polygons.
* ``spacenet_atlanta``: buildings, west 2/3 of the image trained, east 1/3 held out (as
  ``tests/test_realdata_train.py``).

Usage (from the checkout root): python -m benchmarks.realdata [--workdir DIR] [--sample NAME]
  [--skip-defaults SAMPLE] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.realdata_samples import REAL_DATA, SAMPLES, Prepared

ROOT = Path(__file__).resolve().parents[1]

# Training attempts, in order: defaults first, then the fewest options that make it run
# ("{config}" is a TOML file setting min_labelled = 0, which has no flag of its own).
CPU_SIZES = ("--base-width", "16", "--depth", "3")
LADDER: tuple[tuple[str, ...], ...] = (
    (),
    ("--chip-size", "64", *CPU_SIZES),  # the CPU sizes 'eoseg train --help' suggests
    ("--chip-size", "64", *CPU_SIZES, "--config", "{config}"),
    ("--chip-size", "32", *CPU_SIZES),
    ("--chip-size", "32", *CPU_SIZES, "--config", "{config}"),
)


@dataclass(frozen=True, slots=True)
class Step:
    """One command run: what, how it ended, and its JSON output or last error line."""

    step: str
    attempt: str
    command: tuple[str, ...]
    rc: int
    seconds: float
    message: str
    doc: Any = None


@dataclass(slots=True)
class Run:
    """All steps of one sample and its figures."""

    sample: str
    steps: list[Step] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)


def eoseg_command(args: Sequence[str]) -> list[str]:
    """The eoseg CLI of this checkout."""
    return [sys.executable, "-m", "eoseg", *args]


def run_command(step: str, attempt: str, cmd: Sequence[str], timeout: float) -> Step:
    """Run a command with ``--json``; keep its JSON output, or its last error lines."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("MKL_NUM_THREADS", "1")
    start = time.perf_counter()
    try:
        done = subprocess.run(
            [*cmd, "--json"], capture_output=True, text=True, timeout=timeout, env=env, check=False
        )
    except subprocess.TimeoutExpired:
        return Step(step, attempt, tuple(cmd), -1, timeout, f"timed out after {timeout:.0f} s")
    seconds = time.perf_counter() - start
    if done.returncode == 0:
        return Step(step, attempt, tuple(cmd), 0, seconds, "", json.loads(done.stdout))
    return Step(step, attempt, tuple(cmd), done.returncode, seconds, _error_text(done.stderr))


def _error_text(stderr: str) -> str:
    """The error message of a failed command: from 'error:' on, else the last lines."""
    text = stderr.replace("\r", "\n")
    at = text.rfind("error:")
    tail = text[at:] if at >= 0 else "\n".join(text.strip().splitlines()[-3:])
    return " ".join(tail.split())


def train_ladder(
    cube: Path,
    labels: Path,
    model: Path,
    prepared: Prepared,
    work: Path,
    timeout: float,
    skip_defaults: bool,
) -> list[Step]:
    """``eoseg train`` with defaults, then with the fewest explicit options that run."""
    config = work / "train.toml"
    config.write_text("min_labelled = 0.0\n")
    steps: list[Step] = []
    for i, options in enumerate(LADDER):
        if skip_defaults and not options:
            continue
        label = " ".join(options).replace("{config}", "train.toml") or "defaults"
        out = model.with_name(f"{model.name}-{i}")  # a failed attempt leaves no checkpoint
        args = ["train", "--cube", str(cube), "--labels", str(labels), "--out", str(out)]
        args += ["--classes", str(prepared.classes)]
        args += [o.replace("{config}", str(config)) for o in options]
        steps.append(run_command("train", label, eoseg_command(args), timeout))
        if steps[-1].rc == 0:
            model.symlink_to(out.name)
            break
    return steps


def run_sample(name: str, prepared: Prepared, work: Path, args: argparse.Namespace) -> Run:
    """Every CLI step of one sample, then the forest; stops at a step that cannot run."""
    run = Run(name, notes=list(prepared.notes))
    cube, labels = work / "cube.zarr", work / "labels.zarr"
    model, classmap = work / "model", work / "classmap.zarr"
    codes = ["--code-map", str(prepared.code_map)] if prepared.code_map else []
    vector = prepared.train_labels.suffix in {".gpkg", ".geojson", ".shp", ".parquet"}
    plan = [
        (
            "ingest",
            ["ingest", *map(str, prepared.sources), *prepared.ingest_options, "--out", str(cube)],
        ),
        (
            "rasterize",
            [
                "rasterize",
                str(prepared.train_labels),
                "--cube",
                str(cube),
                "--out",
                str(labels),
                "--classes",
                str(prepared.classes),
                *codes,
                *(["--class-field", "class_id"] if vector else []),
            ],
        ),
    ]
    for step, cmd in plan:
        run.steps.append(run_command(step, "defaults", eoseg_command(cmd), args.timeout))
        if run.steps[-1].rc:
            return run
    for label, probe in prepared.probes:
        probe_cmd = eoseg_command([c.replace("{cube}", str(cube)) for c in probe])
        run.steps.append(run_command("probe", label, probe_cmd, args.timeout))
    trained = train_ladder(
        cube, labels, model, prepared, work, args.train_timeout, name in args.skip_defaults
    )
    run.steps += trained
    if trained[-1].rc:
        return run
    tail = [
        (
            "predict",
            eoseg_command(
                ["predict", "--cube", str(cube), "--model", str(model), "--out", str(classmap)]
            ),
        ),
        (
            "evaluate",
            eoseg_command(["evaluate", str(classmap), "--truth", str(prepared.truth), *codes]),
        ),
        (
            "baseline",
            [
                sys.executable,
                str(ROOT / "benchmarks" / "baseline.py"),
                "--cube",
                str(cube),
                "--labels",
                str(labels),
                "--truth",
                str(prepared.truth),
                "--classmap",
                str(classmap),
                *codes,
            ],
        ),
    ]
    for step, cmd in tail:
        run.steps.append(run_command(step, "defaults", cmd, args.timeout))
        if run.steps[-1].rc:
            return run
    run.figures = figures(run.steps)
    return run


def figures(steps: list[Step]) -> dict[str, Any]:
    """OA, mIoU and training time of the U-Net and the forest, from the steps' JSON."""
    by_step = {s.step: s for s in steps if s.rc == 0}
    card = by_step["train"].doc
    evaluated, baseline = by_step["evaluate"].doc, by_step["baseline"].doc
    forest = baseline["forest"]
    return {
        "unet": {
            "overall_accuracy": evaluated["overall_accuracy"],
            "miou": evaluated["miou"],
            "train_seconds": round(by_step["train"].seconds, 1),
            "options": by_step["train"].attempt,
            "card_val_miou": card.get("val_miou") if isinstance(card, dict) else None,
            "defaults": chosen_defaults(card),
            "iou": {c["name"]: c["iou"] for c in evaluated["classes"]},
        },
        "forest": {
            "overall_accuracy": forest["overall_accuracy"],
            "miou": forest["miou"],
            "train_seconds": round(forest["train_seconds"], 1),
            "train_pixels": forest["train_pixels"],
            "iou": {c["name"]: c["iou"] for c in forest["report"]["classes"]},
        },
        "heldout_pixels": evaluated["n_pixels"],
        # The same scoring twice: evaluate's figures and the baseline's eoseg row agree.
        "baseline_eoseg_miou": baseline["eoseg"]["miou"],
    }


def chosen_defaults(card: Any) -> dict[str, Any]:
    """Chip and block size, chips, epochs (derived and run) and network of a train step's
    card, from its ``sampling`` record."""
    if not isinstance(card, dict) or "sampling" not in card:
        return {}
    sampling, arch = card["sampling"], card.get("architecture", {})
    stage = sampling["stages"]["pretrain"]
    return {
        "chip_size": sampling["chip_size"],
        "block_size": sampling["block_size"],
        "train_chips": stage["train_chips"],
        "epochs": stage.get("epochs"),
        "network": f"{arch.get('base_width')}/{arch.get('depth')}",
        "members": arch.get("members", 1),
        "derived": sampling["derived"],
    }


def report(runs: list[Run]) -> str:
    """Plain-text tables: per sample, the figures and every step that failed."""
    lines = []
    for run in runs:
        lines.append(f"\n== {run.sample} ==")
        lines += [f"  note: {n}" for n in run.notes]
        for s in run.steps:
            status = "ok" if s.rc == 0 else f"FAILED (rc {s.rc})"
            lines.append(f"  {s.step:9s} [{s.attempt}] {status} {s.seconds:.1f} s")
            if s.rc:
                lines.append(f"      {s.message}")
        f = run.figures
        if not f:
            lines.append("  no figures: a step could not run")
            continue
        lines.append(f"  {'map':14s} {'OA':>6s} {'mIoU':>6s} {'train s':>8s}  options")
        for key, label in (("unet", "eoseg U-Net"), ("forest", "random forest")):
            r = f[key]
            opts = r.get("options", f"200 trees, {r.get('train_pixels')} px")
            lines.append(
                f"  {label:14s} {_f(r['overall_accuracy'])} {_f(r['miou'])} "
                f"{r['train_seconds']:8.1f}  {opts}"
            )
        lines.append(
            f"  held-out pixels {f['heldout_pixels']}, model card val_miou "
            f"{f['unet']['card_val_miou']}"
        )
        lines.append(f"  U-Net defaults: {f['unet']['defaults']}")
    return "\n".join(lines)


def _f(v: float | None) -> str:
    return "     –" if v is None else f"{v:6.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/eoseg-bench-realdata"))
    parser.add_argument("--data", type=Path, default=REAL_DATA)
    parser.add_argument("--sample", action="append", choices=sorted(SAMPLES))
    parser.add_argument("--seed", type=int, default=0, help="held-out polygon split")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per step")
    parser.add_argument("--train-timeout", type=float, default=1800, help="seconds per training")
    parser.add_argument(
        "--skip-defaults",
        action="append",
        default=[],
        metavar="SAMPLE",
        help="do not try default training on this sample (start at the ladder's explicit sizes)",
    )
    parser.add_argument("--json", action="store_true", help="also print all steps as JSON")
    args = parser.parse_args()
    runs = []
    for name in args.sample or list(SAMPLES):
        work = args.workdir / name
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True)
        run = run_sample(name, SAMPLES[name](args.data, work, args.seed), work, args)
        runs.append(run)
        (work / "run.json").write_text(json.dumps(asdict(run), indent=1, default=str))
        sys.stdout.write(report([run]) + "\n")
        sys.stdout.flush()
    if args.json:
        sys.stdout.write(json.dumps([asdict(r) for r in runs], indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
