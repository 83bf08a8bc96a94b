"""The TorchGeo side of `benchmarks/predict.py`: its own virtual environment, and the run.

TorchGeo is never a dependency of eoseg. The benchmark installs it into a plain virtual
environment of its own (default ``benchmarks/.venv-torchgeo``, ignored by git) from the
package index, with the same torch release as eoseg's environment so the comparison is
of the loops, not of torch builds, and runs `benchmarks/torchgeo_loop.py` there as a
subprocess.

Pins: ``torchgeo==0.8.1`` is the newest release for Python 3.11 (0.9 and later need
3.12); it imports ``requests`` without declaring it. torchvision is pinned to the release
made for that torch (minor = torch minor + 15).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.predict_setup import TreeMemory

HERE = Path(__file__).resolve().parent
DEFAULT_VENV = HERE / ".venv-torchgeo"
LOOP = HERE / "torchgeo_loop.py"
TORCHGEO = "torchgeo==0.8.1"


def requirements() -> list[str]:
    """What the TorchGeo environment installs: torch as eoseg's, its torchvision, TorchGeo."""
    release = torch.__version__.split("+")[0]
    minor = int(release.split(".")[1])
    return [f"torch=={release}", f"torchvision==0.{minor + 15}.*", TORCHGEO, "requests"]


def _python(venv: Path) -> Path:
    return venv / "bin" / "python"


def has_torchgeo(venv: Path) -> bool:
    """Whether ``venv`` has a Python that finds torchgeo (checked without importing it)."""
    python = _python(venv)
    if not python.exists():
        return False
    probe = "import importlib.util,sys; sys.exit(importlib.util.find_spec('torchgeo') is None)"
    return subprocess.run([str(python), "-c", probe], check=False).returncode == 0


def ensure_venv(venv: Path, log: Any = sys.stderr) -> Path:
    """The environment's Python, creating the environment first when needed (minutes)."""
    if has_torchgeo(venv):
        return _python(venv)
    log.write(f"installing {' '.join(requirements())} into {venv} (once; a few minutes)\n")
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    pip = [str(_python(venv)), "-m", "pip", "install", "--quiet", *requirements()]
    subprocess.run(pip, check=True)
    return _python(venv)


def run_loop(
    python: Path,
    scene: Path,
    spec: dict[str, Any],
    *,
    chip: int,
    batch_size: int,
    workers: int,
    threads: int,
    out: Path | None,
) -> dict[str, Any]:
    """Run the TorchGeo loop in its environment; its figures plus the process tree's peak
    memory (``peak_tree_mb``) and ``mpx_s``."""
    import eoseg.models.unet as unet

    cmd = [
        str(python),
        str(LOOP),
        "--scene", str(scene),
        "--weights", spec["weights"],
        "--unet-source", str(Path(unet.__file__).resolve()),
        "--model", json.dumps({k: spec[k] for k in ("arch", "mean", "std")}),
        "--chip", str(chip),
        "--batch-size", str(batch_size),
        "--workers", str(workers),
        "--threads", str(threads),
    ]  # fmt: skip
    if out is not None:
        cmd += ["--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    env.pop("PYTHONPATH", None)  # nothing of eoseg's environment leaks in
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    with TreeMemory(proc.pid) as memory:
        stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"the TorchGeo loop failed ({proc.returncode}):\n{stderr[-3000:]}")
    doc: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    doc["mpx_s"] = doc["megapixels"] / doc["seconds"]
    doc["peak_tree_mb"] = memory.peak / 2**20
    doc["wall_seconds"] = time.perf_counter() - start  # with the imports (not timed)
    return doc
