"""Terminal output of the CLI: progress bars, tables, JSON, and error messages.

Everything for people goes to stderr (progress) or to stdout as rich tables; with
``--json`` stdout holds exactly one JSON document and nothing else.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

stdout = Console(soft_wrap=True)
stderr = Console(stderr=True)


@contextmanager
def progress_bar(description: str) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar on stderr; yields a ``progress(done, total)`` callback.

    The bar appears with the first finished tile: a command refused for bad input before
    any work shows its message alone.
    """
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=stderr,
        transient=False,
    )
    task = bar.add_task(description, total=None)

    def update(done: int, total: int) -> None:
        if not bar.live.is_started:
            bar.start()
        bar.update(task, completed=done, total=total)

    try:
        yield update
    finally:
        if bar.live.is_started:
            bar.stop()


@contextmanager
def dask_progress(update: Callable[[int, int], None]) -> Iterator[None]:
    """Report the tasks of every Dask computation run on the local scheduler inside the
    block to ``update(done, total)`` (a `progress_bar` callback).

    Computations sent to a distributed cluster are not seen (its dashboard shows them).
    """
    from dask.callbacks import Callback

    state = {"done": 0, "total": 0}

    def start_state(dsk: Mapping[Any, Any], graph_state: Mapping[str, Any]) -> None:
        state["total"] += sum(len(graph_state.get(k, ())) for k in ("ready", "waiting"))

    def posttask(*_: Any) -> None:
        state["done"] += 1
        update(state["done"], max(state["total"], state["done"]))

    with Callback(start_state=start_state, posttask=posttask):
        yield


@contextmanager
def train_progress() -> Iterator[Callable[[str, int, int, Mapping[str, Any]], None]]:
    """A progress bar for training, showing the stage, loss and validation mIoU."""
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        console=stderr,
    ) as bar:
        tasks: dict[str, Any] = {}

        def update(stage: str, step: int, total: int, info: Mapping[str, Any]) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(f"train: {stage}", total=total, info="")
            text = "  ".join(
                f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in info.items()
            )
            bar.update(tasks[stage], completed=step, total=total, info=text)

        yield update


def to_jsonable(value: Any) -> Any:
    """Paths to strings, NaN to None, tuples to lists, recursively."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return value.item()
    return value


def emit_json(document: Mapping[str, Any]) -> None:
    """Write one JSON document to stdout."""
    sys.stdout.write(json.dumps(to_jsonable(document), indent=2) + "\n")
    sys.stdout.flush()


def key_value_table(title: str, rows: Mapping[str, Any]) -> Table:
    """A two-column table of names and values."""
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows.items():
        table.add_row(key, _fmt(value))
    return table


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def print_error(message: str) -> None:
    """The one-paragraph message of a bad-input error, on stderr."""
    # Messages quote user input and Python values ("[255]", "eoseg[gpu]"): never markup.
    # No hard wrapping: a path or a flag broken across lines cannot be copied (the terminal
    # still wraps long lines for the eye).
    stderr.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def print_demo_summary(summary: Mapping[str, Any]) -> None:
    """Tables of the demo's accuracy, class areas, timings and output paths."""
    metrics = summary["metrics"]
    acc = Table(title="accuracy on the held-out area", title_justify="left")
    for col in ("class", "precision", "recall", "F1", "IoU", "area km²"):
        acc.add_column(col, justify="right" if col != "class" else "left")
    areas = {c["name"]: c["km2"] for c in summary["areas"]["classes"]}
    for row in metrics["classes"]:
        acc.add_row(
            row["name"],
            *(_fmt_opt(row.get(k)) for k in ("precision", "recall", "f1", "iou")),
            _fmt_opt(areas.get(row["name"])),
        )
    stdout.print(acc)
    stdout.print(
        f"[bold]mIoU {metrics['miou']:.3f}[/]   overall accuracy "
        f"{metrics['overall_accuracy']:.3f}   class areas sum "
        f"{summary['areas']['classes_sum_km2']:.3f} km² vs valid grid area "
        f"{summary['areas']['grid_valid_km2']:.3f} km² "
        f"({summary['areas']['relative_difference']:.2e} relative); grid "
        f"{summary['areas']['grid_km2']:.3f} km² by pixels vs "
        f"{summary['areas']['grid_geodesic_km2']:.3f} km² geodesic"
    )
    stdout.print(key_value_table("timings (s)", summary["timings"]))
    stdout.print(key_value_table("outputs", summary["paths"]))


def _fmt_opt(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}"
