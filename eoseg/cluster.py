"""Dask clusters and running per-tile functions on them.

On one machine eoseg starts a `dask.distributed.LocalCluster` (`local_shape`: for a model,
one worker process with a thread per tile in flight; else a process per tile), or with
``scheduler="cuda"`` a ``dask_cuda.LocalCUDACluster`` (one worker per visible GPU, each
pinned to its GPU by ``CUDA_VISIBLE_DEVICES``). At scale it connects to any scheduler
address (``tcp://...``): GPU nodes run ``dask cuda worker`` (one worker per GPU),
Kubernetes the Dask operator, HPC dask-jobqueue (see ``deploy/``).
Tile functions are plain functions of a `Tile`; this module only schedules them.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import dask
from distributed import Client, Future, LocalCluster, as_completed

from eoseg.errors import EosegError, InvalidParameterError

log = logging.getLogger(__name__)

T = TypeVar("T")
GPU_THREADS = 4
"""Default threads (tiles in flight) of a local dask-cuda worker."""
CUDA = "cuda"
"""The ``scheduler`` value that starts a local dask-cuda cluster."""
ProgressFn = Callable[[int, int], None]
"""Called as ``progress(done, total)`` after each finished tile."""
IN_FLIGHT_PER_THREAD = 4
"""Tiles `run_tiles` keeps submitted per worker thread (queued in the scheduler)."""
MIN_IN_FLIGHT = 64
"""Fewest tiles `run_tiles` keeps submitted, whatever the cluster's size."""
KEEP_MALLOC_DEFAULTS = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}
"""Local workers keep glibc's malloc defaults. Dask's nanny sets ``MALLOC_TRIM_THRESHOLD_``
(65536) to return freed memory to the system sooner; any value set also turns off glibc's
dynamic mmap threshold, so every buffer over 128 KiB (each activation of a network) is
mapped and unmapped again, its pages faulted in afresh: a U-Net 32/4 on 256 px chips ran
1.4-1.6x slower in a worker than in the main process, both threads busy (session 9)."""
MAX_LOCAL_THREADS = 4
"""Most tiles a local cluster computes at once; torch threads share the cores among them."""


@dataclass(frozen=True, slots=True)
class ClusterShape:
    """Workers (processes) of a local cluster and the Dask threads of each."""

    workers: int
    threads: int


@contextmanager
def connect(
    scheduler: str | None = None,
    *,
    n_workers: int | None = None,
    tasks: int | None = None,
    model: bool = False,
    processes: bool = True,
    local_directory: Path | None = None,
    gpu_threads: int = GPU_THREADS,
) -> Iterator[Client]:
    """Yield a client: to ``scheduler`` if given, else to a new local cluster.

    Args:
        scheduler: Address of a running scheduler (``tcp://host:8786``); ``None`` starts a
            `LocalCluster` that is closed on exit; ``"cuda"`` starts a local dask-cuda
            cluster of one worker per visible GPU (needs ``pip install eoseg[gpu]``).
        n_workers: Local workers of one thread each (benchmarks, tests); by default the
            cluster is `local_shape` ``(tasks, model=model)``. Torch parallelism inside a
            task is set by the worker plugin (`torch_threads`).
        tasks: Tiles the run has, when known: a local cluster computes no more at once.
        model: The tiles run a model (predict): tasks share one worker process.
        processes: Process workers (default) or threads in this process (tests).
        local_directory: Where local workers spill; keep it inside the work dir.
        gpu_threads: Threads of each dask-cuda worker: tiles in flight per GPU, so one
            tile's reading and writing overlaps another's inference.
    """
    if scheduler == CUDA:
        with _cuda_cluster(local_directory, gpu_threads) as client:
            yield client
        return
    if scheduler:
        try:
            client = Client(scheduler, timeout="30s")
        except OSError as exc:
            raise InvalidParameterError(
                f"could not reach the Dask scheduler at {scheduler} ({exc}): check the "
                "address, or leave --scheduler out to run on a local cluster"
            ) from exc
        try:
            yield client
        finally:
            client.close()
        return
    shape = ClusterShape(n_workers, 1) if n_workers else local_shape(tasks, model=model)
    with _workers_ignore_sigint(), dask.config.set(KEEP_MALLOC_DEFAULTS):
        cluster = LocalCluster(
            n_workers=shape.workers,
            threads_per_worker=shape.threads,
            processes=processes,
            dashboard_address=":0",  # any free port: several clusters may share a host
            local_directory=str(local_directory) if local_directory else None,
            silence_logs=_worker_log_level(),
        )
    with cluster, Client(cluster) as client:
        log.info(
            "local Dask cluster: %d worker(s) x %d thread(s) (%s)",
            shape.workers, shape.threads, cluster.scheduler_address,
        )  # fmt: skip
        yield client


def available_cores() -> int:
    """CPU cores this process may run on (its affinity, e.g. a container's share)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def local_shape(tasks: int | None = None, *, model: bool = False) -> ClusterShape:
    """The local cluster for a run of ``tasks`` tiles: as many tiles at once as cores, at
    most `MAX_LOCAL_THREADS` and no more than ``tasks`` (one tile alone gets every core
    through torch's threads, `torch_threads`).

    Tiles that run a model (``model``: predict) share one worker process, a thread each:
    the process holds torch and the model once (~0.4-0.5 GB) and torch computes outside
    the GIL, so a run's memory does not grow with the tiles in flight. Measured on 2
    cores, 16 tiles of 512 px, U-Net 32/4 (session 9): 0.0895 Mpx/s and a 1.93 GB process
    tree with 1 process x 2 threads, 0.0912 Mpx/s and 2.31 GB with 2 processes x 1 thread.
    Other work (ingest, rasterize, mosaic: GDAL and numpy holding the GIL in part) gets a
    process per tile, one thread each: ingesting a 4096 px scene into 512 px tiles took
    6.5 s with 2 processes against 7.9 s with 2 threads of one process.
    """
    parallel = max(1, min(MAX_LOCAL_THREADS, available_cores()))
    if tasks is not None:
        parallel = max(1, min(parallel, tasks))
    return ClusterShape(1, parallel) if model else ClusterShape(parallel, 1)


def torch_threads(cores: int, tasks: int) -> int:
    """Torch threads of each of ``tasks`` tasks running at once on ``cores`` cores."""
    return max(1, cores // max(tasks, 1))


def host_tasks(client: Client) -> dict[str, int]:
    """Tasks that run at once on each host of a cluster: its workers' threads, summed."""
    counts: dict[str, int] = {}
    for info in client.scheduler_info(n_workers=-1)["workers"].values():
        host = str(info["host"])
        counts[host] = counts.get(host, 0) + int(info["nthreads"])
    return counts


def _worker_log_level() -> int:
    """What local workers print on this process's stderr.

    A task's error reaches the caller (`run_tiles`), so the workers' own report of it
    ("Compute Failed" with a traceback), and their complaints while the cluster shuts
    down after it, are noise unless eoseg logs at INFO (``--verbose``).
    """
    return logging.WARNING if log.isEnabledFor(logging.INFO) else logging.CRITICAL


@contextmanager
def _workers_ignore_sigint() -> Iterator[None]:
    """Worker processes started inside ignore SIGINT.

    A terminal's Ctrl-C goes to the whole foreground process group. The client handles it
    (stops the run, closes the cluster, says what was kept); workers would each print a
    KeyboardInterrupt traceback. An ignored signal stays ignored across fork and exec, and
    Python then installs no KeyboardInterrupt handler, so workers spawned meanwhile never
    see it. Ctrl-C waits while the workers start (a few seconds). Only the main thread may
    change signal handlers: elsewhere (a Prefect task's thread) nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextmanager
def _cuda_cluster(local_directory: Path | None, threads: int) -> Iterator[Client]:
    try:
        from dask_cuda import LocalCUDACluster
    except ImportError as exc:
        raise InvalidParameterError(
            f"--scheduler cuda needs dask-cuda, which is not installed ({exc}): run "
            "`pip install 'eoseg[gpu]'` with a CUDA build of torch, or leave --scheduler out "
            "to run on the CPU"
        ) from exc
    import torch

    if not torch.cuda.is_available():
        raise InvalidParameterError(
            "--scheduler cuda found no CUDA device (torch.cuda.is_available() is False): "
            "check the driver and that torch is a CUDA build, or leave --scheduler out"
        )
    with _workers_ignore_sigint(), dask.config.set(KEEP_MALLOC_DEFAULTS):
        cluster = LocalCUDACluster(
            threads_per_worker=threads,
            dashboard_address=":0",
            local_directory=str(local_directory) if local_directory else None,
            silence_logs=_worker_log_level(),
        )
    with cluster, Client(cluster) as client:
        log.info("local dask-cuda cluster: %d GPU workers", len(cluster.workers))
        yield client


def in_flight_limit(client: Client) -> int:
    """Tiles submitted at a time by `run_tiles`: `IN_FLIGHT_PER_THREAD` per worker thread
    of the cluster now, at least `MIN_IN_FLIGHT` (workers that join later find work)."""
    threads = sum(client.nthreads().values())
    return max(MIN_IN_FLIGHT, IN_FLIGHT_PER_THREAD * threads)


def run_tiles(
    client: Client | None,
    fn: Callable[..., T],
    tiles: Sequence[Any],
    *,
    progress: ProgressFn | None = None,
    max_in_flight: int | None = None,
    **kwargs: Any,
) -> list[T]:
    """Run ``fn(tile, **kwargs)`` for every tile (or tile job) and return the results in order.

    With ``client=None`` the tiles run one after another in this process (handy for
    debugging and tiny inputs). On a cluster at most ``max_in_flight`` tiles (default
    `in_flight_limit`) are submitted at a time, topped up whenever half of them have
    finished: the client and the scheduler hold a bounded number of tasks whatever the
    grid's size (a country is tens of thousands of tiles), and a failed run stops
    submitting. Finished results are fetched in batches (one round trip per batch, not
    per tile). An `EosegError` raised in a task reaches the caller as itself, so bad
    input still gets its clear message.
    """
    total = len(tiles)
    if client is None:
        results = []
        for i, tile in enumerate(tiles, 1):
            results.append(fn(tile, **kwargs))
            if progress:
                progress(i, total)
        return results
    limit = max_in_flight or in_flight_limit(client)
    out: list[Any] = [None] * total
    live: dict[Any, tuple[int, Future]] = {}  # task key -> (tile position, future)

    def submit(count: int) -> list[Future]:
        start = len(live) + done
        chunk = tiles[start : start + count]
        futures = client.map(fn, chunk, pure=False, **kwargs) if chunk else []
        live.update((f.key, (start + i, f)) for i, f in enumerate(futures))
        return futures

    done = 0
    running = as_completed(submit(limit))
    try:
        for batch in running.batches():
            for future, result in zip(batch, client.gather(batch), strict=True):
                out[live.pop(future.key)[0]] = result
                done += 1
                if progress:
                    progress(done, total)
            if len(live) <= limit // 2:  # refill in large batches: fewer round trips
                running.update(submit(limit - len(live)))
    except EosegError:
        client.cancel([f for _, f in live.values()])
        raise
    return out
