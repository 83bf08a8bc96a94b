"""``eoseg train``: pretrain on noisy labels, fine-tune on clean ones."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from eoseg.cli import console
from eoseg.cli.common import (
    JsonOpt,
    OverwriteOpt,
    guard,
    new_run_id,
    report,
)


def train(
    cube: Annotated[str, typer.Option("--cube", help="Cube to train on (path or URL).")],
    labels: Annotated[
        str, typer.Option("--labels", help="Labels store (e.g. rasterized OSM; path or URL).")
    ],
    out: Annotated[
        str,
        typer.Option(
            "--out",
            help="Model folder to write (path or URL; on object storage it is uploaded when "
            "training ends, its card last).",
        ),
    ],
    finetune_labels: Annotated[
        str | None, typer.Option(help="Clean labels store to fine-tune on (path or URL).")
    ] = None,
    classes: Annotated[
        Path | None,
        typer.Option(
            help="Class schema: TOML (with OSM tag rules) or JSON [{id,name,color}]. "
            "Default: generic names for the label ids."
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="TOML file of training options (any TrainConfig field, e.g. `epochs = 20`, "
            "`lr = 0.003`); the options below override it.",
        ),
    ] = None,
    epochs: Annotated[
        int | None,
        typer.Option(
            help="Pretraining epochs (default: derived, about 300 steps: 10 to 60 epochs)."
        ),
    ] = None,
    finetune_epochs: Annotated[int | None, typer.Option(help="Fine-tuning epochs [5].")] = None,
    finetune_lr: Annotated[
        float | None, typer.Option(help="Peak fine-tuning learning rate [0.003, as pretraining].")
    ] = None,
    freeze_encoder_epochs: Annotated[
        int | None, typer.Option(help="First fine-tuning epochs with the encoder frozen [0].")
    ] = None,
    chip_size: Annotated[
        int | None,
        typer.Option(
            help="Chip side in pixels (default: derived from the labels; 256 for dense "
            "labels, less for small polygons)."
        ),
    ] = None,
    block_size: Annotated[
        int | None,
        typer.Option(
            help="Side of the blocks of the train/validation split (default: derived; "
            "1 or 2 chips)."
        ),
    ] = None,
    val_fraction: Annotated[
        float | None,
        typer.Option(help="Share of the blocks holding labels held out for validation [0.25]."),
    ] = None,
    val_chips: Annotated[
        int | None, typer.Option(help="Validation chips per stage (default: derived; 8 to 32).")
    ] = None,
    min_labelled: Annotated[
        float | None,
        typer.Option(help="Least labelled share of a chip (default: derived; at most 0.25)."),
    ] = None,
    patience: Annotated[
        int | None,
        typer.Option(
            help="Stop a stage after this many epochs without a better validation mIoU "
            "(default: off)."
        ),
    ] = None,
    refit: Annotated[
        bool | None,
        typer.Option(
            "--refit/--no-refit",
            help="After validation, fit the last stage again on all its labels for the "
            "epochs it ran with validation, ending on the mean of its weights after the "
            "first tenth of its steps (default: derived; on for at most 1,000 labelled regions).",
            show_default=False,
        ),
    ] = None,
    members: Annotated[
        int | None,
        typer.Option(
            help="Networks trained with seeds SEED, SEED+1, ... and averaged as one model "
            "(default: derived; 3 when the last stage is refit on a few sparse polygons, "
            "else 1). Prediction costs grow with it.",
            show_default=False,
        ),
    ] = None,
    num_threads: Annotated[
        int | None,
        typer.Option(help="Torch CPU threads (default: OMP_NUM_THREADS if set, else all cores)."),
    ] = None,
    base_width: Annotated[
        int | None,
        typer.Option(help="U-Net channels at full resolution (default: 32 on a GPU, 16 on a CPU)."),
    ] = None,
    depth: Annotated[
        int | None,
        typer.Option(help="U-Net downsampling steps (default: 4 on a GPU, 3 on a CPU)."),
    ] = None,
    train_chips: Annotated[
        int | None, typer.Option(help="Training chips per stage (default: derived; 32 to 128).")
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="Chips per step [8].")] = None,
    noisy_loss: Annotated[
        str | None,
        typer.Option(help="Pretraining loss for noisy labels: ce, gce or bootstrap (default ce)."),
    ] = None,
    context: Annotated[
        str | None, typer.Option(help="Bottleneck context module: none or aspp (dilated).")
    ] = None,
    contexts: Annotated[
        str | None,
        typer.Option(
            help="Contexts to train on, as multiples of the chip's extent, 1 among them, "
            "e.g. 1,2,4: wider windows are averaged down to the chip size; the card "
            "records each context's validation mIoU and the fusion weights predict uses "
            "[1].",
            show_default=False,
        ),
    ] = None,
    balanced: Annotated[
        bool, typer.Option("--balanced", help="Weight classes by inverse frequency.")
    ] = False,
    elastic: Annotated[
        float | None, typer.Option(help="Elastic deformation in pixels (0 = off) [0].")
    ] = None,
    device: Annotated[
        str | None, typer.Option(help="Torch device: cpu, cuda, cuda:N (default: cuda if present).")
    ] = None,
    precision: Annotated[
        str | None,
        typer.Option(help="auto (bf16 + channels-last on CUDA, fp32 on CPU), bf16 or fp32."),
    ] = None,
    time: Annotated[
        str | None,
        typer.Option(
            help="Model input over the cube's dates: median (one composite; a (y, x) class "
            "map) or per-date (chips of each date; predict maps every date) [per-date for "
            "a --by-date cube, else median]."
        ),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed [0].")] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Any other training option as NAME=VALUE (a TrainConfig field, the value "
            "in TOML syntax), e.g. --set gce_q=0.5 --set finetune_norm=train. Repeatable.",
        ),
    ] = None,
    overwrite: OverwriteOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Train a U-Net: pretrain on (noisy) labels, then fine-tune on clean ones if given.

    Fine-tuning keeps pretraining's batch-norm statistics and replays half its chips from
    the noisy labels of the whole area (generalized cross-entropy on those), at the
    pretraining learning rate: on a clean set of a few percent of the area this beat the
    classic frozen-encoder, low-rate start, which stays available:

      eoseg train ... --freeze-encoder-epochs 2 --finetune-lr 0.0005

    Chip size, split blocks, labelled share and chip counts are derived from the labels
    unless given (a few small polygons get small chips; the model card's "sampling" says
    what was chosen and why). Each stage keeps its epoch of best validation mIoU; with a
    few polygons the last stage is then refit on all of them (--no-refit to keep the
    validated model), and three networks are trained and averaged (--members 1 for one).
    Training resumes from its last epoch checkpoint if interrupted. The network and the
    largest chip follow the device: a 32/4 U-Net and chips up to 256 px on a GPU, a
    16/3 U-Net and chips up to 64 px on a CPU (the card's "architecture" and "sampling"
    record them).
    """
    from eoseg.contexts import parse_contexts
    from eoseg.outputs import check_output
    from eoseg.reachability import check_reachable
    from eoseg.storage import location
    from eoseg.train import train_from_stores
    from eoseg.train.config import configure, load_train_config, parse_settings

    def body() -> None:
        options = configure(
            configure(load_train_config(config) if config else None, **parse_settings(set_)),
            epochs=epochs,
            finetune_epochs=finetune_epochs,
            finetune_lr=finetune_lr,
            freeze_encoder_epochs=freeze_encoder_epochs,
            chip_size=chip_size,
            block_size=block_size,
            val_fraction=val_fraction,
            val_chips=val_chips,
            min_labelled=min_labelled,
            patience=patience,
            refit=refit,
            members=members,
            num_threads=num_threads,
            base_width=base_width,
            depth=depth,
            train_chips=train_chips,
            batch_size=batch_size,
            noisy_loss=noisy_loss,
            context=context,
            contexts=parse_contexts(contexts),
            class_weights="balanced" if balanced else None,
            elastic=elastic,
            device=device,
            precision=precision,
            seed=seed,
            time=time,
        )
        grid, noisy = location(cube), location(labels)
        clean = location(finetune_labels) if finetune_labels else None
        stores = {"--cube": grid, "--labels": noisy, "--finetune-labels": clean}
        check_reachable({**stores, "--out": location(out)})
        inputs = {**stores, "--classes": classes, "--config": config}
        check_output(location(out), "model", overwrite=overwrite, inputs=inputs)
        # On object storage the model trains in a local folder kept per URL (a rerun
        # resumes from its checkpoint there) and is uploaded at the end.
        with console.train_progress() as bar:
            card = train_from_stores(
                grid,
                noisy,
                location(out),
                finetune_labels=clean,
                config=options,
                classes=classes,
                progress=bar,
                overwrite=overwrite,
                run_id=new_run_id(),
            )
        doc = {
            "model": str(location(out)),
            "name": card.name,
            "version": card.version,
            "bands": card.bands,
            "time": card.time,
            "parameters": card.parameters,
            "flops_per_pixel": card.flops_per_pixel,
            "chip_size": card.chip_size,
            "architecture": card.architecture,
            "sampling": card.sampling,
            "val_miou": card.metrics.get("val_miou"),
            "val_note": card.metrics.get("val_note"),
            **({"contexts": card.contexts} if card.contexts else {}),
        }
        report("train", doc, json_out)

    guard(body)
