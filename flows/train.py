"""Training flow: rasterize labels, pretrain on noisy labels, fine-tune on clean ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, task

from eoseg.cluster import connect
from eoseg.labels import rasterize_labels
from eoseg.train import TrainConfig, train_from_stores


@task(name="rasterize")
def rasterize_task(
    vector: str,
    cube: str,
    out: str,
    *,
    scheduler: str | None,
    class_field: str = "class_id",
    overwrite: bool = False,
    run_id: str = "",
) -> dict[str, Any]:
    """Rasterize labels onto the cube's grid."""
    with connect(scheduler) as client:
        result = rasterize_labels(
            Path(vector),
            Path(cube),
            Path(out),
            class_field=class_field,
            client=client,
            overwrite=overwrite,
            run_id=run_id,
        )
    return result.to_dict()


@task(name="train")
def train_task(
    cube: str,
    labels: str,
    out: str,
    *,
    finetune_labels: str | None = None,
    classes: str | None = None,
    config: TrainConfig | None = None,
) -> dict[str, Any]:
    """Train (and fine-tune) a U-Net; returns the model card as a dict."""
    card = train_from_stores(
        Path(cube),
        Path(labels),
        Path(out),
        finetune_labels=Path(finetune_labels) if finetune_labels else None,
        classes=Path(classes) if classes else None,
        config=config,
    )
    return card.to_dict()


@flow(name="eoseg-train")
def train_flow(
    cube: str,
    labels_vector: str,
    out: str,
    finetune_vector: str | None = None,
    scheduler: str | None = None,
    class_field: str = "class_id",
) -> dict[str, Any]:
    """Rasterize noisy (and clean) labels and train a model on the cube."""
    workdir = Path(out).parent
    noisy = rasterize_task(
        labels_vector,
        cube,
        str(workdir / "labels-noisy.zarr"),
        scheduler=scheduler,
        class_field=class_field,
        overwrite=True,
    )
    clean = None
    if finetune_vector:
        clean = rasterize_task(
            finetune_vector,
            cube,
            str(workdir / "labels-clean.zarr"),
            scheduler=scheduler,
            class_field=class_field,
            overwrite=True,
        )
    return train_task(
        cube, noisy["labels"], out, finetune_labels=clean["labels"] if clean else None
    )
