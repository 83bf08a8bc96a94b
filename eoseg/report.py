"""The accuracy report of a class map: Markdown and self-contained HTML, from one outline.

``eoseg evaluate --report DIR`` writes ``DIR/report.md`` (figures beside it under
``DIR/figures/``), ``DIR/report.html`` (figures embedded as base64 PNG, no external
reference: it opens offline and can be mailed as one file) and ``DIR/report.json`` (the
figures of ``eoseg evaluate --json`` plus the mapped areas). Both documents are rendered
from the same outline of headings, tables and images, so they hold the same numbers.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eoseg import plots
from eoseg.errors import OutputExistsError
from eoseg.evaluation import Evaluation
from eoseg.metrics import COLUMNS, AccuracyReport
from eoseg.stats import ClassAreas, class_areas
from eoseg.storage import resolve

log = logging.getLogger(__name__)

DIGITS = 4
"""Decimals of the scores in the report's tables."""


@dataclass(frozen=True, slots=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True, slots=True)
class TableBlock:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True, slots=True)
class Image:
    name: str
    alt: str
    png: bytes


@dataclass(frozen=True, slots=True)
class Paragraph:
    text: str


Block = Heading | TableBlock | Image | Paragraph


def write_report(
    out: Path, evaluation: Evaluation, *, title: str, sources: dict[str, str]
) -> dict[str, Path]:
    """Write the report of an evaluation into folder ``out`` (created if needed).

    Args:
        out: The report folder; its ``report.*`` files and ``figures/`` are replaced.
        evaluation: The scores (and lazy map and truth, for the quicklook).
        title: The report's title (e.g. the class map's name).
        sources: What was compared (``{"class map": path, "truth": path, ...}``).

    Returns:
        The paths written: ``markdown``, ``html``, ``json``.

    Raises:
        OutputExistsError: ``out`` is a file.
    """
    check_report_dir(out)
    areas = class_areas(evaluation.prediction, evaluation.schema)
    blocks = _outline(evaluation, areas, title, sources)
    figures = out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    for block in blocks:
        if isinstance(block, Image):
            (figures / block.name).write_bytes(block.png)
    paths = {
        "markdown": out / "report.md",
        "html": out / "report.html",
        "json": out / "report.json",
    }
    paths["markdown"].write_text(to_markdown(blocks))
    paths["html"].write_text(to_html(blocks, title))
    doc = {**evaluation.to_dict(), "mapped_areas": areas.to_dict(), "model": evaluation.model}
    paths["json"].write_text(json.dumps(doc, indent=1, default=str))
    log.info("wrote the accuracy report to %s", out)
    return paths


def write_report_to(
    out: Path | str, evaluation: Evaluation, *, sources: dict[str, str]
) -> dict[str, Path | str]:
    """`write_report` into a local folder or an object-storage prefix (URL), titled by the
    class map's name.

    On object storage the report is written to a local temporary folder and its files
    uploaded over what the prefix held (other objects there are kept), ``report.json``
    last.
    """
    dest = resolve(out, "--report")
    title = resolve(sources["class map"]).name
    if dest.is_local:
        return dict(write_report(Path(out), evaluation, title=title, sources=sources))
    with dest.staged("report.json", replace=False) as local:
        paths = write_report(local, evaluation, title=title, sources=sources)
    return {k: dest.child(p.relative_to(local).as_posix()).url for k, p in paths.items()}


def check_report_dir(out: Path) -> None:
    """The report may be written into ``out`` (checked before any work).

    Raises:
        OutputExistsError: ``out`` is a file, or its parent folder is missing.
    """
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"--report {out} is a file: give a folder for the report")
    if not out.parent.is_dir():
        raise OutputExistsError(
            f"--report {out}: folder {out.parent} does not exist; create it or choose another"
        )


def _outline(ev: Evaluation, areas: ClassAreas, title: str, sources: dict[str, str]) -> list[Block]:
    acc = ev.accuracy
    blocks: list[Block] = [Heading(f"Accuracy report: {title}", 1)]
    blocks.append(Paragraph(" · ".join(f"{k}: {v}" for k, v in sources.items())))
    blocks += [Heading("Summary"), summary_table(acc)]
    blocks += [Heading("Per class"), class_table(acc)]
    blocks += [
        Heading("Confusion matrix"),
        Paragraph("Rows are the reference (truth), columns the map; cells count pixels."),
        confusion_table(acc),
        Image("confusion.png", "confusion matrix heatmap", plots.confusion_heatmap(acc)),
        Heading("Per-class scores"),
        Image("class_scores.png", "user's, producer's accuracy and F1 per class",
              plots.class_scores_chart(acc)),
        Heading("Class map and truth"),
        Image("quicklook.png", "class map beside the truth",
              plots.quicklook_pair(ev.prediction, ev.truth, ev.schema)),
        Heading("Mapped areas"),
        Paragraph("Areas on the WGS84 ellipsoid, from the whole class map."),
        areas_table(areas),
    ]  # fmt: skip
    if ev.region_field is not None:
        blocks.append(Heading(f"Regions (field {ev.region_field!r})"))
        for name, report in ev.regions.items():
            blocks.append(Heading(name, 3))
            if report is None:
                blocks.append(Paragraph("No pixel valid in both map and truth."))
            else:
                blocks += [summary_table(report), class_table(report)]
    if ev.model:
        blocks += [Heading("Model"), _model_table(ev.model)]
    return blocks


def summary_table(acc: AccuracyReport) -> TableBlock:
    """Overall figures, one per row."""
    rows = (
        ("overall accuracy", _num(acc.overall_accuracy)),
        ("mIoU (classes in reference or map)", _num(acc.miou)),
        ("mIoU (classes in the reference)", _num(acc.miou_reference)),
        ("mIoU (all classes)", _num(acc.miou_all)),
        ("macro F1", _num(acc.macro_f1)),
        ("quantity disagreement", _num(acc.quantity_disagreement)),
        ("allocation disagreement", _num(acc.allocation_disagreement)),
        ("pixels", str(acc.n_pixels)),
    )
    return TableBlock(("measure", "value"), rows)


def class_table(acc: AccuracyReport) -> TableBlock:
    """Per-class scores (columns as on the console)."""
    rows = tuple(
        (name, _num(acc.precision[i]), _num(acc.recall[i]), _num(acc.f1[i]),
         _num(acc.iou[i]), str(acc.support[i]))
        for i, name in enumerate(acc.class_names)
    )  # fmt: skip
    return TableBlock(COLUMNS, rows)


def confusion_table(acc: AccuracyReport) -> TableBlock:
    """The confusion matrix in pixels, rows reference, columns map."""
    rows = tuple(
        (name, *(str(v) for v in acc.confusion[i])) for i, name in enumerate(acc.class_names)
    )
    return TableBlock(("reference \\ map", *acc.class_names), rows)


def areas_table(areas: ClassAreas) -> TableBlock:
    """Mapped area (km²) and share of the valid area of each class."""
    rows = tuple(
        (c["name"], f"{c['km2']:.6f}", _num(c["fraction"])) for c in areas.to_dict()["classes"]
    )
    return TableBlock(("class", "area (km²)", "share"), rows)


def to_markdown(blocks: list[Block]) -> str:
    """The outline as Markdown (images link to ``figures/``)."""
    lines: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            lines += ["#" * b.level + " " + b.text, ""]
        elif isinstance(b, Paragraph):
            lines += [b.text, ""]
        elif isinstance(b, Image):
            lines += [f"![{b.alt}](figures/{b.name})", ""]
        else:
            lines.append("| " + " | ".join(_md_cell(h) for h in b.header) + " |")
            lines.append("|" + "|".join("---" for _ in b.header) + "|")
            lines += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in b.rows]
            lines.append("")
    return "\n".join(lines)


def to_html(blocks: list[Block], title: str) -> str:
    """The outline as one HTML page with the figures inlined (no external reference)."""
    body: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            body.append(f"<h{b.level}>{html.escape(b.text)}</h{b.level}>")
        elif isinstance(b, Paragraph):
            body.append(f"<p>{html.escape(b.text)}</p>")
        elif isinstance(b, Image):
            data = base64.b64encode(b.png).decode("ascii")
            body.append(f'<img alt="{html.escape(b.alt)}" src="data:image/png;base64,{data}">')
        else:
            head = "".join(f"<th>{html.escape(h)}</th>" for h in b.header)
            rows = "".join(
                "<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>"
                for row in b.rows
            )
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
    style = (
        "body{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;"
        "padding:.2em .6em;text-align:right}td:first-child,th:first-child{text-align:left}"
        "img{max-width:100%}"
    )
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{style}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def _model_table(model: dict[str, Any]) -> TableBlock:
    rows = tuple(
        (k, v if isinstance(v, str) else json.dumps(v, default=str)) for k, v in model.items()
    )
    return TableBlock(("model card", "value"), rows)


def _num(v: float | None) -> str:
    return "–" if v is None or math.isnan(v) else f"{v:.{DIGITS}f}"


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")
