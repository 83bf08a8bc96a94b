"""What every ``eoseg`` command shares: option types, the error guard, reporting."""

from __future__ import annotations

import inspect
import logging
import os
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from eoseg.cli import console
from eoseg.errors import EosegError, InvalidParameterError
from eoseg.store import RunInterrupted

T = TypeVar("T")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
OverwriteOpt = Annotated[
    bool, typer.Option("--overwrite", help="Replace an existing output instead of refusing.")
]
SchedulerOpt = Annotated[
    str | None,
    typer.Option(
        "--scheduler",
        help="Dask scheduler address (tcp://host:8786), or 'cuda' for a local dask-cuda "
        "cluster of one worker per GPU. Default: a local CPU cluster.",
        show_default=False,
    ),
]

ClassMapAliasOpt = Annotated[
    str | None,
    # The old name of --code-map, hidden from --help; kept for one release (issue 13).
    typer.Option("--class-map", hidden=True, show_default=False),
]


def code_map_option(code_map: str | None, class_map: str | None) -> str | None:
    """The code map given as ``--code-map`` or by its old name ``--class-map``.

    Raises:
        InvalidParameterError: Both names given, with different values.
    """
    if class_map is None:
        return code_map
    if code_map is not None and code_map != class_map:
        raise InvalidParameterError(
            f"--code-map {code_map!r} and --class-map {class_map!r} are the same option "
            "(--class-map is its old name) with different values: give --code-map once"
        )
    logging.getLogger("eoseg").warning("--class-map is now --code-map; the old name will go")
    return class_map


INTERRUPTED = 130
"""Exit status after Ctrl-C: 128 + SIGINT, what shells report for an interrupted command."""


def guard(fn: Callable[[], T]) -> T:
    """Run a command body; bad input becomes a message and exit status 2, Ctrl-C one line
    (what was kept, how to resume) and exit status 130."""
    try:
        return fn()
    except EosegError as exc:
        console.print_error(str(exc))
        raise typer.Exit(2) from None
    except KeyboardInterrupt as exc:
        message = str(exc) if isinstance(exc, RunInterrupted) else "interrupted"
        console.stderr.print(message, highlight=False, markup=False)
        raise typer.Exit(INTERRUPTED) from None


@contextmanager
def dask_client(
    scheduler: str | None,
    workdir: Path | None = None,
    tasks: int | None = None,
    *,
    model: bool = False,
) -> Iterator[Any]:
    """A Dask client that connects (or starts the local cluster) only when first used.

    Commands validate their input and plan their work before they submit a tile, so a
    refused input fails in a moment, with no cluster started and nothing written.
    ``tasks``: the run's tiles, when known (a local cluster computes no more at once);
    ``model``: the tiles run a model (one worker process shares it): `eoseg.cluster.local_shape`.
    """
    with ExitStack() as stack:
        yield _LazyClient(stack, scheduler, workdir, tasks, model)


class _LazyClient:
    """Stands for a `distributed.Client`; the first attribute asked for connects it."""

    def __init__(
        self,
        stack: ExitStack,
        scheduler: str | None,
        workdir: Path | None,
        tasks: int | None,
        model: bool,
    ) -> None:
        self._stack = stack
        self._scheduler = scheduler
        self._workdir = workdir
        self._tasks = tasks
        self._model = model
        self._client: Any = None

    def __getattr__(self, name: str) -> Any:
        if self._client is None:
            from eoseg.cluster import connect

            quiet_dask()
            self._client = self._stack.enter_context(
                connect(
                    self._scheduler,
                    local_directory=self._workdir,
                    tasks=self._tasks,
                    model=self._model,
                )
            )
        return getattr(self._client, name)


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


def quiet_dask() -> None:
    """Dask sets its loggers to INFO when imported; keep them quiet unless --verbose.

    Errors only: a task's error reaches the user as eoseg's message, and the warnings of a
    cluster shutting down after it ("Worker process still alive ..., killing") are noise.
    """
    if logging.getLogger("eoseg").level > logging.INFO:
        for name in ("distributed", "dask"):
            logging.getLogger(name).setLevel(logging.ERROR)


SERVER_TIMEOUT_VAR = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
SERVER_TIMEOUT_S = 120
"""Seconds the temporary Prefect server gets to start (``eoseg demo --server-timeout``)."""


def confine_to(workdir: Path) -> None:
    """Keep Prefect's home, temp files and caches inside the work dir."""
    for var, sub in (
        ("PREFECT_HOME", "prefect"),
        ("MPLCONFIGDIR", "cache/matplotlib"),
        ("TMPDIR", "tmp"),
        ("XDG_CACHE_HOME", "cache"),
    ):
        path = workdir / sub
        path.mkdir(parents=True, exist_ok=True)
        os.environ[var] = str(path)
    # The temporary server's telemetry heartbeat races its own SQLite writes ("database is
    # locked" tracebacks on stderr) and would try the network: off for offline demos.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # The temporary server takes ~15 s to start on 2 idle cores; Prefect waits 20 s, which
    # a loaded laptop misses ("Timed out while attempting to connect to ephemeral ...").
    os.environ.setdefault(SERVER_TIMEOUT_VAR, str(SERVER_TIMEOUT_S))
    tempfile.tempdir = None  # re-read TMPDIR


def report(title: str, doc: dict[str, Any], json_out: bool) -> None:
    if json_out:
        console.emit_json(doc)
    else:
        console.stdout.print(console.key_value_table(title, flatten(doc)))


def flatten(doc: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in doc.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def reflow_help(doc: str | None) -> str | None:
    """A command's docstring as help text: prose paragraphs joined into one line each, so the
    terminal wraps them at its width; indented paragraphs (examples) stay as written."""
    if doc is None:
        return None
    paragraphs = inspect.cleandoc(doc).split("\n\n")
    return "\n\n".join(
        p if p.startswith(" ") else " ".join(line.strip() for line in p.splitlines())
        for p in paragraphs
    )
