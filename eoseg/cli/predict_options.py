"""The options that say how a class map is predicted, declared once for every command
that predicts (``eoseg predict``, ``eoseg products regenerate``): the same flags, help
and defaults, turned into `eoseg.inference.PredictOptions` by `predict_options`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, cast

import typer

if TYPE_CHECKING:
    from eoseg.inference import PredictOptions
    from eoseg.models.accel import Precision

PRECISION_DEFAULT = "auto"
"""``--precision``'s default: `eoseg.inference.PredictOptions`'s (a test checks that they
agree; importing it here would load torch for ``eoseg --help``)."""

ChipSizeOpt = Annotated[
    int | None,
    typer.Option(
        "--chip-size",
        help="Side of the chips the network predicts (px), a multiple of 2**depth; "
        "default: the model card's (larger than the training chip where the network "
        "is fully convolutional).",
        show_default=False,
    ),
]
OverlapOpt = Annotated[
    int | None,
    typer.Option(
        "--overlap",
        help="Pixels neighbouring chips share and blend, 0..chip/2 (chip/2: every pixel "
        "computed four times); default: the model card's.",
        show_default=False,
    ),
]
PrecisionOpt = Annotated[
    str,
    typer.Option(
        "--precision",
        help="auto (bf16 on a GPU or a CPU that computes bf16 natively, else fp32), bf16 or fp32.",
    ),
]
ProbabilitiesOpt = Annotated[
    bool,
    typer.Option("--probabilities", help="Also write each class's probability (uint8, x 255)."),
]
ContextsOpt = Annotated[
    str | None,
    typer.Option(
        "--contexts",
        help="Contexts to fuse, as multiples of the chip's extent, e.g. 1,2,4 "
        "(default: the model card's choice; one context for a model without fusion "
        "weights).",
        show_default=False,
    ),
]


def predict_options(
    chip_size: int | None = None,
    overlap: int | None = None,
    precision: str = PRECISION_DEFAULT,
    probabilities: bool = False,
    contexts: str | None = None,
) -> PredictOptions:
    """The `PredictOptions` of the flags above (``--contexts`` parsed and checked here;
    the others are checked against the model by `eoseg.inference.resolve_settings`).

    Raises:
        InvalidParameterError: ``--contexts`` is not a list of whole numbers.
    """
    from eoseg.contexts import parse_contexts
    from eoseg.inference import PredictOptions

    return PredictOptions(
        chip_size, overlap, cast("Precision", precision), probabilities, parse_contexts(contexts)
    )
