"""Training from stores on disk: the function behind ``eoseg train`` and the train flow."""

from __future__ import annotations

from pathlib import Path

import xarray as xr

from eoseg.classes import IGNORE_ID, ClassSchema, generic_schema, load_schema
from eoseg.grid import check_same_grid, grid_of
from eoseg.locks import output_lock
from eoseg.models import ModelCard
from eoseg.models.card import CARD_FILE
from eoseg.outputs import check_output
from eoseg.storage import resolve
from eoseg.train.config import TrainConfig
from eoseg.train.run import Progress, train_model


def train_from_stores(
    cube_path: Path | str,
    labels_path: Path | str,
    out_dir: Path | str,
    *,
    finetune_labels: Path | str | None = None,
    classes: Path | None = None,
    config: TrainConfig | None = None,
    progress: Progress | None = None,
    overwrite: bool = False,
    run_id: str = "",
) -> ModelCard:
    """Train from stores: the function behind ``eoseg train`` and the train flow.

    Args:
        cube_path: Cube store (a local path or an fsspec URL, `eoseg.storage`).
        labels_path: Labels store to (pre)train on.
        out_dir: Model folder to write: a local path, or an fsspec URL. On object
            storage the model trains in a local folder kept per URL
            (`eoseg.storage.staging_dir`) and is uploaded at the end, card last; a run
            killed before then resumes from its checkpoint there when run again.
        finetune_labels: Optional clean labels store to fine-tune on.
        classes: Class schema file (TOML or JSON, see `eoseg.classes.load_schema`);
            default: generic names for the ids found in the labels.
        config: Training options; default `TrainConfig()`.
        progress: Optional ``(stage, step, total, info)`` callback.
        overwrite: Replace an existing model folder at ``out_dir`` (only a model folder:
            see `eoseg.outputs`).
        run_id: Run id recorded in the output's lock while training.

    Raises:
        OutputExistsError: ``out_dir`` holds a model and ``overwrite`` is false, or holds
            anything else; another run is writing it.
        InvalidParameterError: ``out_dir`` is, lies inside or contains an input, or
            cannot be written.
    """
    from eoseg.cube import open_cube
    from eoseg.labels import open_labels

    inputs = {"--cube": cube_path, "--labels": labels_path,
              "--finetune-labels": finetune_labels, "--classes": classes}  # fmt: skip
    check_output(out_dir, "model", overwrite=overwrite, inputs=inputs)
    cube = open_cube(cube_path)
    labels = open_labels(labels_path)
    clean = open_labels(finetune_labels) if finetune_labels else None
    grid = grid_of(cube, f"cube {cube_path}")
    for flag, path, store in (
        ("--labels", labels_path, labels),
        ("--finetune-labels", finetune_labels, clean),
    ):
        if store is not None:
            check_same_grid(
                grid,
                grid_of(store, f"labels {path}"),
                what=f"{flag} {path}",
                on=f"the cube {cube_path}",
                fix="rasterize the labels onto this cube (eoseg rasterize SOURCE --cube "
                f"{cube_path} --out ...)",
            )
    schema = load_schema(classes) if classes else _schema_from_labels(labels, clean)
    target = resolve(out_dir, "--out")
    with target.staged(CARD_FILE, resumable=True) as folder, output_lock(folder, run_id=run_id):
        card = train_model(
            cube,
            labels,
            folder,
            schema=schema,
            config=config,
            finetune_labels=clean,
            progress=progress,
        )
    return card


def _schema_from_labels(*stores: xr.DataArray | None) -> ClassSchema:
    import dask.array as da

    top = max(
        int(da.max(da.where(s.data == IGNORE_ID, 0, s.data)).compute())
        for s in stores
        if s is not None
    )
    return generic_schema(top + 1)
