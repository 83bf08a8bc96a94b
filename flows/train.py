"""Training flow: rasterize noisy (and clean) labels, train, register, optionally promote.

Deployments pass training options as a JSON-able mapping (``options``, any `TrainConfig`
field) or a TOML file (``config_file``); a model registry (a folder or an object-store
URL) receives the trained model, and ``promote`` makes it the production version that
mapping runs pick up.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.events import emit_event

from eoseg.cluster import connect
from eoseg.labels import rasterize_labels
from eoseg.registry import register, set_production
from eoseg.storage import location
from eoseg.train import TrainConfig, train_from_stores
from eoseg.train.config import configure, load_train_config

MODEL_PROMOTED = "eoseg.model.promoted"
"""The Prefect event a promotion emits; deploy/triggers/model-promoted.yaml reacts to it."""


def promotion_event(name: str, version: str) -> dict[str, Any]:
    """`emit_event` arguments announcing that ``name`` ``version`` is now production."""
    resource = {
        "prefect.resource.id": f"eoseg.model.{name}",
        "eoseg.model.name": name,
        "eoseg.model.version": version,
    }
    return {"event": MODEL_PROMOTED, "resource": resource}


@task(name="rasterize")
def rasterize_task(
    vector: str,
    cube: str,
    out: str,
    *,
    scheduler: str | None,
    class_field: str = "class_id",
    classes: str | None = None,
    code_map: str | dict[str, int | str] | None = None,
    osm: bool | None = None,
    overwrite: bool = False,
    run_id: str = "",
) -> dict[str, Any]:
    """Rasterize labels (class ids, codes translated by ``code_map``, or OSM tags
    classified by ``classes``) onto the cube."""
    with connect(scheduler) as client:
        result = rasterize_labels(
            location(vector),
            location(cube),
            location(out),
            class_field=class_field,
            classes=classes,
            code_map=code_map,
            osm=osm,
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
    overwrite: bool = False,
) -> dict[str, Any]:
    """Train (and fine-tune) a U-Net; returns the model card as a dict."""
    card = train_from_stores(
        location(cube),
        location(labels),
        location(out),  # a URL trains in a local folder kept per URL, then uploads
        finetune_labels=location(finetune_labels) if finetune_labels else None,
        classes=Path(classes) if classes else None,
        config=config,
        overwrite=overwrite,
    )
    return card.to_dict()


@task(name="register")
def register_task(model: str, registry: str, *, promote: bool = False) -> dict[str, Any]:
    """Copy the model folder into the registry; make it production if ``promote``."""
    card = register(model, registry)
    if promote:
        set_production(registry, card.name, card.version)
        emit_event(**promotion_event(card.name, card.version))
    return {"name": card.name, "version": card.version, "production": promote}


@flow(name="eoseg-train")
def train_flow(
    cube: str,
    labels_vector: str,
    out: str,
    finetune_vector: str | None = None,
    scheduler: str | None = None,
    class_field: str = "class_id",
    classes: str | None = None,
    osm: bool | None = None,
    options: dict[str, Any] | None = None,
    config_file: str | None = None,
    registry: str | None = None,
    promote: bool = False,
    code_map: str | dict[str, int | str] | None = None,
    finetune_code_map: str | dict[str, int | str] | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Rasterize noisy (and clean) labels and train a model on the cube.

    Args:
        cube: Cube store to train on.
        labels_vector: Noisy labels: an OSM extract (``.osm.pbf``) or tagged vector
            classified by ``classes``, a vector with ``class_field``, or a class-id GeoTIFF.
        out: Model folder to write; label stores go beside it.
        finetune_vector: Optional clean labels to fine-tune on.
        scheduler: Dask scheduler address for rasterizing; default a local cluster.
        class_field: Vector field holding class ids.
        classes: Class schema file (TOML with OSM tag rules, or JSON); default generic
            names. Also classifies OSM sources.
        osm: Read ``labels_vector`` as OSM tags (default: guessed, see `eoseg.labels`).
        options: Training options (`TrainConfig` fields), over ``config_file``.
        config_file: TOML file of training options.
        registry: Model registry (folder or fsspec URL) to register the model in.
        promote: Make the new model the registry's production version of its name.
        code_map: Translates the values of ``labels_vector``'s class field (or raster
            codes) to classes: a TOML/JSON file, ``{"311": "forest"}``, or
            ``"311=forest,511=water"`` (see `eoseg.code_map`).
        finetune_code_map: The same for ``finetune_vector``.
        overwrite: Replace an existing model folder at ``out`` (the label stores beside
            it are always rewritten).

    Returns:
        ``{"labels": ..., "model": card dict, "registered": ...}``.
    """
    config = configure(load_train_config(config_file) if config_file else None, **(options or {}))
    workdir = Path(out).parent
    noisy = rasterize_task(
        labels_vector,
        cube,
        str(workdir / "labels-noisy.zarr"),
        scheduler=scheduler,
        class_field=class_field,
        classes=classes,
        code_map=code_map,
        osm=osm,
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
            classes=classes,
            code_map=finetune_code_map,
            overwrite=True,
        )
    card = train_task(
        cube,
        noisy["labels"],
        out,
        finetune_labels=clean["labels"] if clean else None,
        classes=classes,
        config=config,
        overwrite=overwrite,
    )
    registered = register_task(out, registry, promote=promote) if registry else None
    metrics = card.get("metrics", {})
    create_markdown_artifact(
        key="train-report",
        markdown=(
            f"# Model {card['name']} {card['version']}\n\n"
            f"- validation mIoU: {metrics.get('val_miou')} ({metrics.get('val_note')})\n"
            f"- sampling: {_describe_sampling(card.get('sampling') or {})}\n"
            f"- chips (train, val) per stage: {metrics.get('chips')}\n"
            f"- parameters: {card['parameters']}, GFLOP/Mpx: "
            f"{card['flops_per_pixel'] / 1e3:.1f}\n"
            f"- registered: {registered or 'no'}\n"
        ),
    )
    return {
        "labels": {"noisy": noisy, "clean": clean},
        "model": card,
        "registered": registered,
    }


def _describe_sampling(sampling: dict[str, Any]) -> str:
    """One line of the sampling plan a run chose (chip and block size, labelled share)."""
    keys = ("chip_size", "block_size", "split")
    return ", ".join(f"{k.replace('_', ' ')} {sampling[k]}" for k in keys if k in sampling)
