"""Regeneration flow: after a model promotion or new scenes, recompute the tiles of a
published product that changed, publish a new version and report the area changes.

Thin over `eoseg.regenerate`: per-tile input signatures and model versions decide which
tiles are recomputed (a new model: every tile; new scenes: the tiles they touch). The
run leaves a Markdown artifact with the tiles recomputed and the per-class change table.
Deployed by hand or on the ``eoseg.model.promoted`` event that flows/train.py emits
(deploy/triggers/model-promoted.yaml passes the model's name as ``model``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from eoseg.change_report import markdown_of
from eoseg.cluster import connect
from eoseg.models.accel import Precision
from eoseg.regenerate import RegenerateOptions
from eoseg.regenerate import regenerate as regenerate_product
from eoseg.registry import fetch_model
from eoseg.storage import location
from flows.mapping import predict_options


@task(name="fetch-model", retries=2)
def model_task(model: str, registry: str | None, version: str | None) -> str:
    """The model folder: ``model`` itself, or the production (or ``version``) of the
    model named ``model`` in ``registry``."""
    return str(fetch_model(registry, model, version)) if registry else model


@task(name="regenerate", retries=1)
def regenerate_task(
    product: str,
    cube: str,
    model_dir: str,
    *,
    scheduler: str | None,
    options: RegenerateOptions,
) -> dict[str, Any]:
    """Plan, predict the tiles that changed on the cluster, publish, report; a retry
    resumes the predicted tiles when ``options.workdir`` is set."""
    with connect(scheduler, model=True) as client:
        result = regenerate_product(
            location(product), location(cube), model_dir, options=options, client=client
        )
    return result.to_dict()


@flow(name="eoseg-regenerate")
def regenerate(
    model: str,
    cube: str,
    product: str,
    registry: str | None = None,
    version: str | None = None,
    scheduler: str | None = None,
    workdir: str | None = None,
    report_dir: str | None = None,
    tag: str | None = None,
    chip_size: int | None = None,
    overlap: int | None = None,
    precision: Precision | None = None,
    probabilities: bool | None = None,
    contexts: list[int] | None = None,
) -> dict[str, Any]:
    """Recompute what a new model or new scenes change in ``product`` and publish it.

    Args:
        model: A model folder, or with ``registry`` a model name (its production version,
            or ``version``): a promotion then regenerates with the new model.
        cube: The cube the product is predicted from (re-ingested with the new scenes).
        product: The product repository (``eoseg products``); created when absent.
        registry: The model registry (folder or URL).
        version: The model version in ``registry`` (default: production).
        scheduler: Dask scheduler address (default: a local cluster).
        workdir: Where recomputed tiles are predicted before the publish (a rerun with
            the same one resumes); default: a temporary folder.
        report_dir: Where the change report (CSV, JSON, Markdown, PNG) is written.
        tag: Also name the new version so.
        chip_size: ``eoseg predict``'s options, as the mapping flow takes them
            (`flows.mapping.predict_options`; None keeps the default, the model card's
            choice where it has one); settings other than those a tile was predicted
            with recompute it.
        overlap: See ``chip_size``.
        precision: See ``chip_size``.
        probabilities: See ``chip_size``.
        contexts: See ``chip_size``.

    Returns:
        `eoseg.regenerate.RegenerateResult.to_dict`: tiles recomputed and skipped, the
        versions before and after, the area changes.
    """
    model_dir = model_task(model, registry, version)
    options = RegenerateOptions(
        predict=predict_options(
            chip_size=chip_size,
            overlap=overlap,
            precision=precision,
            probabilities=probabilities,
            contexts=contexts,
        ),
        workdir=Path(workdir) if workdir else None,
        report_dir=report_dir or None,
        tag=tag,
        run_id=str(flow_run.get_id() or ""),
    )
    doc = regenerate_task(product, cube, model_dir, scheduler=scheduler, options=options)
    create_markdown_artifact(
        summary(doc), key="regenerate", description=f"regeneration of {product}"
    )
    return doc


def summary(doc: dict[str, Any]) -> str:
    """The run's Markdown: tiles recomputed and why, versions, and the change table."""
    reasons = ", ".join(f"{k}: {v}" for k, v in sorted(doc["reasons"].items())) or "none"
    lines = [
        f"# Regeneration of {doc['repository']}",
        "",
        f"- tiles recomputed: {doc['tiles_recomputed']} of {doc['tiles']} ({reasons}); "
        f"skipped: {doc['tiles_skipped']}",
        f"- version before: `{doc['before']}`; after: `{doc['after']}`"
        + ("" if doc["committed"] else " (nothing changed: no new version)"),
    ]
    changes = doc.get("changes")
    if changes:
        lines += ["", "## Area changes (km²)", "", markdown_of(changes)]
    return "\n".join(lines) + "\n"
