"""Bad-input table (issue 10): corrupted stores, broken models, worker errors (Ctrl-C
during predict: tests/test_predict_resume.py).

Every case spoils a copy of the valid workspace (tests/badinput.py) and must end with
exit status 2, one message naming what is wrong and the fix, no traceback, and every
file as it was. Most run the CLI in-process; the few that need a real process (Dask
worker output, Prefect's server) run ``python -m eoseg``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load, save_file

from eoseg.models import ModelCard, UNet, save_model
from eoseg.registry import register, set_production
from tests.badinput import Case, run_case, run_subprocess

CLASS_CHUNK = "map.zarr/class/c/0/0"
CUBE_CHUNK = "cube.zarr/data/c/0/0/0/0"
INSIDE_MAP = "11.99,47.995,12.01,48.005"
"""A lon/lat box inside the workspace's class map."""
GARBAGE = bytes(np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8))


def delete(rel: str):  # type: ignore[no-untyped-def]
    def prepare(ws: Path) -> None:
        (ws / rel).unlink()

    return prepare


def overwrite(rel: str, data: bytes = GARBAGE):  # type: ignore[no-untyped-def]
    def prepare(ws: Path) -> None:
        (ws / rel).write_bytes(data)

    return prepare


def truncate_weights(ws: Path) -> None:
    path = ws / "model" / "weights.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def edit_card(change):  # type: ignore[no-untyped-def]
    """Edit the workspace model's card: ``change(doc)`` rewrites its JSON document."""

    def prepare(ws: Path) -> None:
        path = ws / "model" / "model.json"
        doc = json.loads(path.read_text())
        change(doc)
        path.write_text(json.dumps(doc))

    return prepare


def set_std(value: float):  # type: ignore[no-untyped-def]
    def change(doc: dict) -> None:  # type: ignore[type-arg]
        norm = doc["input"]["normalisation"]
        norm["std"] = [value] * len(norm["std"])

    return edit_card(change)


def std_wrong_length(doc: dict) -> None:  # type: ignore[type-arg]
    doc["input"]["normalisation"]["std"] = doc["input"]["normalisation"]["std"][:1]


def fewer_bands(doc: dict) -> None:  # type: ignore[type-arg]
    """Two bands (still in the cube) with their statistics: only the weights disagree."""
    record = doc["input"]
    record["bands"] = record["bands"][:2]
    for key in ("mean", "std"):
        record["normalisation"][key] = record["normalisation"][key][:2]


def fewer_classes(doc: dict) -> None:  # type: ignore[type-arg]
    doc["classes"] = doc["classes"][:-1]


def shift_mean(doc: dict) -> None:  # type: ignore[type-arg]
    """A plausible edit: only the content hash can tell."""
    norm = doc["input"]["normalisation"]
    norm["mean"] = [m + 0.01 for m in norm["mean"]]


def foreign_weights(ws: Path) -> None:
    """Weights of another training of the same architecture (another seed)."""
    card = ModelCard.from_dict(json.loads((ws / "model" / "model.json").read_text()))
    torch.manual_seed(1)
    arch = card.architecture
    net = UNet(len(card.bands), len(card.classes), arch["base_width"], arch["depth"])
    save_model(net, card, ws / "other")
    (ws / "model" / "weights.safetensors").write_bytes(
        (ws / "other" / "weights.safetensors").read_bytes()
    )


def pickled_weights(ws: Path) -> None:
    """A torch pickle (``torch.save``) where safetensors belong: never unpickled."""
    path = ws / "model" / "weights.safetensors"
    torch.save(load(path.read_bytes()), path)  # read first: load_file maps the file


def damaged_registry(ws: Path) -> None:
    """The model registered and promoted, then its registry copy's weights changed."""
    card = register(ws / "model", ws / "registry")
    set_production(ws / "registry", card.name, card.version)
    path = ws / "registry" / card.name / card.version / "weights.safetensors"
    state = load(path.read_bytes())
    state = {k: v + 1 if v.is_floating_point() else v for k, v in state.items()}
    save_file(state, str(path), metadata={"version": card.version})


PREDICT = ["predict", "--cube", "{ws}/cube.zarr", "--model", "{ws}/model"]
PREDICT_OUT = [*PREDICT, "--out", "{ws}/out.zarr"]
REGISTER = ["models", "register", "{ws}/model", "--registry", "{ws}/registry"]
MISSING = ("map.zarr", "missing", "class/c/0/0", "eoseg predict --overwrite")
DAMAGED = ("chunk class/c/0/0", "map.zarr", "cannot be read or decoded", "--overwrite")
MODEL_FIX = ("--model",)

CASES = [
    # A class map with a chunk lost (e.g. an interrupted copy) is damaged, not class 0.
    Case(
        "export-missing-chunk",
        ["export", "{ws}/map.zarr", "--cog", "{ws}/out.tif"],
        MISSING,
        delete(CLASS_CHUNK),
    ),
    Case(
        "query-missing-chunk",
        ["query", "{ws}/map.zarr", "--aoi", INSIDE_MAP],
        MISSING,
        delete(CLASS_CHUNK),
    ),
    Case(
        "evaluate-missing-chunk",
        ["evaluate", "{ws}/map.zarr", "--truth", "{ws}/truth.tif"],
        MISSING,
        delete(CLASS_CHUNK),
    ),
    Case(
        "predict-cube-missing-chunk",
        PREDICT_OUT,
        ("cube.zarr", "missing", "data/c/0/0/0/0", "eoseg ingest --overwrite"),
        delete(CUBE_CHUNK),
    ),
    # Garbage bytes in a chunk: the store and the chunk are named.
    Case(
        "export-corrupted-chunk",
        ["export", "{ws}/map.zarr", "--cog", "{ws}/out.tif"],
        DAMAGED,
        overwrite(CLASS_CHUNK),
    ),
    Case(
        "export-polygons-corrupted-chunk",
        ["export", "{ws}/map.zarr", "--polygons", "{ws}/out.gpkg"],
        DAMAGED,
        overwrite(CLASS_CHUNK),
    ),
    Case(
        "query-corrupted-chunk",
        ["query", "{ws}/map.zarr", "--aoi", INSIDE_MAP],
        DAMAGED,
        overwrite(CLASS_CHUNK),
    ),
    Case(
        "evaluate-corrupted-chunk",
        ["evaluate", "{ws}/map.zarr", "--truth", "{ws}/truth.tif"],
        DAMAGED,
        overwrite(CLASS_CHUNK),
    ),
    # Weights are verified against the card's content version before registering.
    Case(
        "register-truncated-weights",
        REGISTER,
        ("not a readable safetensors file", "it is truncated"),
        truncate_weights,
    ),
    Case(
        "register-foreign-weights",
        REGISTER,
        ("claims version", "the weights are those of version", "register the model folder"),
        foreign_weights,
    ),
    Case(
        "register-pickled-weights",
        REGISTER,
        ("not a readable safetensors file", "another format"),
        pickled_weights,
    ),
    Case("register-card-std-zero", REGISTER, ("std [0.0", "not positive"), set_std(0.0)),
    Case(
        "fetch-damaged-registry-version",
        ["models", "fetch", "test-unet", "--registry", "{ws}/registry"],
        ("claims version", "delete that version from the registry", "models register"),
        damaged_registry,
    ),
    # A card edited after training is refused before any tile is computed.
    Case(
        "predict-card-std-zero", PREDICT_OUT, ("std [0.0", "not positive", *MODEL_FIX), set_std(0.0)
    ),
    Case(
        "predict-card-std-nan",
        PREDICT_OUT,
        ("std [nan", "not finite", *MODEL_FIX),
        set_std(float("nan")),
    ),
    Case(
        "predict-card-std-wrong-length",
        PREDICT_OUT,
        ("std has 1 values for 4 bands", *MODEL_FIX),
        edit_card(std_wrong_length),
    ),
    Case(
        "predict-card-wrong-bands",
        PREDICT_OUT,
        ("4 input channels", "the card lists 2 bands", *MODEL_FIX),
        edit_card(fewer_bands),
    ),
    Case(
        "predict-card-wrong-classes",
        PREDICT_OUT,
        ("output channels", "classes", *MODEL_FIX),
        edit_card(fewer_classes),
    ),
    Case(
        "predict-card-edited",
        PREDICT_OUT,
        ("claims version", "its content hashes to", *MODEL_FIX),
        edit_card(shift_mean),
    ),
    # A broken model folder fails in the client, before a cluster or a .partial exists.
    Case(
        "predict-broken-model",
        PREDICT_OUT,
        ("not a readable safetensors file", "header too large", *MODEL_FIX),
        overwrite("model/weights.safetensors", b"not weights\n"),
    ),
    Case(
        "predict-card-not-json",
        PREDICT_OUT,
        ("is not a valid model card", "JSONDecodeError", *MODEL_FIX),
        overwrite("model/model.json", b"{not json"),
    ),
    Case(
        "predict-card-is-a-folder",
        PREDICT_OUT,
        ("is a folder, expected a file of the model", "--model"),
        lambda ws: ((ws / "model" / "model.json").unlink(), (ws / "model" / "model.json").mkdir()),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, bad_input_template: Path, tmp_path: Path) -> None:
    run_case(case, bad_input_template, tmp_path)


# Cases that need a real process: Dask worker processes (their log lines would reach the
# terminal, not the CLI runner) and Prefect's server (the demo sets Prefect's environment).
WORKER_LOG = ("Compute Failed", "distributed.", "Traceback", "heartbeat")
PROCESS_CASES = [
    # An EosegError raised inside a worker task (a damaged chunk read there) comes back as
    # exit 2 with its message; tiles finished before it stay resumable in the .partial.
    Case(
        "predict-worker-error-clean",
        PREDICT_OUT,
        ("chunk data/c/0/0/0/0", "cube.zarr", "cannot be read or decoded"),
        overwrite(CUBE_CHUNK),
        new_files=("out.zarr.partial",),
    ),
    Case(
        "demo-server-cannot-start",
        ["demo", "--quick", "--workdir", "{ws}/demo", "--server-timeout", "1"],
        ("prefect server did not start within 1 s", "--server-timeout 300", "PREFECT_API_URL"),
        new_files=("demo",),
    ),
    Case(
        "demo-server-unreachable",
        ["demo", "--quick", "--workdir", "{ws}/demo"],
        ("PREFECT_API_URL=http://127.0.0.1:9/api does not answer", "prefect server start"),
        new_files=("demo",),
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize("case", PROCESS_CASES, ids=[c.id for c in PROCESS_CASES])
def test_bad_input_in_a_process(
    case: Case, bad_input_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if case.id == "demo-server-unreachable":
        monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")  # nothing listens
    outcome = run_case(case, bad_input_template, tmp_path, run=run_subprocess)
    for noise in WORKER_LOG:
        assert noise not in outcome.output, outcome.output
